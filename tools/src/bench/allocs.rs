//! Heap allocations per decided event on the service's per-event path, in process: decode the
//! payload (protobuf or JSON) into a reused event, decide into reused decisions, encode the
//! decision into a reused buffer (as the pipeline's workers do). Counted by the counting
//! allocator (`heap`), on one thread.

use std::path::Path;

use veto::decider::Decided;
use veto::event::{
    decode_event_into, encode_decision_into, encode_event, InputFormat, OutputFormat, PaymentEvent,
    DEFAULT_MAX_EVENT_BYTES,
};
use veto::synth::{Synth, SynthConfig};

use super::core::scratch_engine;
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
    let engine = scratch_engine(rules)?;
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
        // event-time timers stand in for the service's timer wheel: not counted
        engine.timers.due(event.event_time_ms);
        let before_decide = heap::allocations();
        engine
            .engine
            .decide_reusing(&event, event.event_time_ms, &mut decided);
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
