//! Heap allocations per decided event on the service's per-event path, in process: decode the
//! payload (protobuf or JSON) into a reused event, decide into reused decisions (arming the
//! service's timer service, as `veto run` does), encode the decision into a reused buffer (as
//! the pipeline's workers do). Counted by the counting allocator (`heap`), on one thread; the
//! timer service's clock stands still, so its thread fires nothing and allocates nothing.

use std::path::Path;

use veto::decider::Decided;
use veto::event::{
    decode_event_into, encode_decision_into, encode_event, InputFormat, OutputFormat, PaymentEvent,
    DEFAULT_MAX_EVENT_BYTES,
};
use veto::synth::{Synth, SynthConfig};

use super::core::engine_with_timers;
use super::{heap, BenchError};

/// Allocations per event of one wire format's path, by step.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct PathAllocations {
    pub decode: f64,
    pub decide: f64,
    pub encode: f64,
    pub total: f64,
}

/// Both formats' paths over the same events.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Allocations {
    pub events: u64,
    pub protobuf: PathAllocations,
    pub json: PathAllocations,
}

/// Measures `events` events after `warmup` (state built, buffers grown) for each format, each
/// on a fresh engine for `rules`.
pub fn measure(
    rules: &Path,
    seed: u64,
    users: u64,
    warmup: usize,
    events: usize,
) -> Result<Allocations, BenchError> {
    let stream: Vec<PaymentEvent> = Synth::new(SynthConfig {
        seed,
        users,
        ..SynthConfig::default()
    })
    .take(warmup + events)
    .collect();
    let path = |input: InputFormat, output: OutputFormat| {
        let payloads: Vec<Vec<u8>> = stream.iter().map(|e| encode_event(e, output)).collect();
        one_path(rules, &payloads, input, output, warmup)
    };
    Ok(Allocations {
        events: events as u64,
        protobuf: path(InputFormat::Protobuf, OutputFormat::Protobuf)?,
        json: path(InputFormat::Json, OutputFormat::Json)?,
    })
}

fn one_path(
    rules: &Path,
    payloads: &[Vec<u8>],
    input: InputFormat,
    output: OutputFormat,
    warmup: usize,
) -> Result<PathAllocations, BenchError> {
    let clock = veto::timer::ManualClock::new(0);
    let (timers, _fired) =
        veto::timer::TimerService::start_with_clock(veto::timer::TimerConfig::default(), clock)
            .map_err(|e| BenchError::Invalid(format!("timer service: {e}")))?;
    let (engine, _store_dir) = engine_with_timers(rules, std::sync::Arc::new(timers))?;
    // what a pipeline worker keeps from message to message
    let mut event = PaymentEvent::default();
    let mut decided = Decided::default();
    let mut buf = Vec::new();
    let (mut decode, mut decide, mut encode) = (0u64, 0u64, 0u64);
    for (i, payload) in payloads.iter().enumerate() {
        let measured = i >= warmup;
        let start = heap::allocations();
        decode_event_into(payload, input, DEFAULT_MAX_EVENT_BYTES, &mut event)
            .map_err(|e| BenchError::Invalid(format!("synthetic event {i} rejected: {e}")))?;
        let decoded = heap::allocations();
        let before_decide = heap::allocations();
        engine.decide_reusing(&event, event.event_time_ms, &mut decided);
        let after_decide = heap::allocations();
        encode_decision_into(&decided.decision, output, &mut buf);
        let encoded = heap::allocations();
        if measured {
            decode += decoded - start;
            decide += after_decide - before_decide;
            encode += encoded - after_decide;
        }
    }
    let n = payloads.len().saturating_sub(warmup).max(1) as f64;
    Ok(PathAllocations {
        decode: decode as f64 / n,
        decide: decide as f64 / n,
        encode: encode as f64 / n,
        total: (decode + decide + encode) as f64 / n,
    })
}
