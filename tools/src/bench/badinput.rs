//! The e2e bad-input run (`veto-bench e2e --garbage 0.10`): on the same broker in the same run,
//! Veto's saturation throughput on a clean stream and on a stream of the same size in which a
//! fraction of the events is garbage; then the dead-letter topic is read back to check that every
//! garbage event is there with its reason, and the decision topic that every good event got
//! exactly one decision.
//!
//! Each stream has its own topics and a fresh `veto run` process; all its events are queued
//! before Veto starts, and throughput is input events per second from Veto's first output record
//! (decision or dead letter) to its last.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use veto::proto;

use super::e2e::{event_id, start_veto, E2eArgs, Receiver, Sender, SystemTopics, Tracker};
use super::garbage::{is_garbage, DeadLetterLedger, GarbageKind, GarbageMaker};
use super::BenchError;
use crate::wire;

/// One stream's run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamResult {
    pub stream: String,
    pub events: u64,
    pub good_events: u64,
    pub garbage_events: u64,
    /// Bytes of all payloads produced (oversized garbage makes the garbage stream larger).
    pub payload_bytes: u64,
    /// Good events with a decision.
    pub decided: u64,
    pub duplicate_decisions: u64,
    /// Decisions for garbage events (must be 0).
    pub garbage_decided: u64,
    /// Other records on the decision topic.
    pub foreign_decisions: u64,
    pub dead_letters: u64,
    /// Dead-letter records that did not decode.
    pub undecodable_dead_letters: u64,
    pub injected_by_kind: BTreeMap<GarbageKind, u64>,
    pub injected_by_reason: BTreeMap<String, u64>,
    pub dead_letters_by_reason: BTreeMap<String, u64>,
    pub dead_letters_matched: u64,
    pub dead_letters_wrong_reason: u64,
    pub dead_letters_unexpected: u64,
    /// From Veto's first output record to its last.
    pub seconds: f64,
    /// Input events (good and garbage) per second.
    pub events_per_sec: f64,
    pub good_events_per_sec: f64,
    /// Every garbage event is on the dead-letter topic once, with its reason, and nothing else is.
    pub every_garbage_event_dead_lettered: bool,
    /// Every good event got exactly one decision and no garbage event got one.
    pub every_good_event_decided_once: bool,
}

/// Clean vs garbage.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BadInputResult {
    pub garbage_fraction: f64,
    pub clean: StreamResult,
    pub garbage: StreamResult,
    /// Input events/s with garbage / input events/s clean.
    pub throughput_ratio: Option<f64>,
    pub verified: bool,
}

/// Earliest and latest receive times, ns since the tracker's base.
#[derive(Default)]
struct Span {
    first: AtomicU64,
    last: AtomicU64,
}

impl Span {
    fn new() -> Span {
        Span {
            first: AtomicU64::new(u64::MAX),
            last: AtomicU64::new(0),
        }
    }

    fn record(&self, ns: u64) {
        self.first.fetch_min(ns, Ordering::Relaxed);
        self.last.fetch_max(ns, Ordering::Relaxed);
    }
}

fn run_stream(
    args: &E2eArgs,
    brokers: &str,
    runtime: &tokio::runtime::Runtime,
    name: &str,
    fraction: f64,
) -> Result<StreamResult, BenchError> {
    let topics = SystemTopics::named(&format!("veto-{name}"));
    topics.create(brokers, args.partitions, runtime)?;
    let n = args.garbage_events as usize;
    let tracker = Arc::new(Tracker::new(n));
    let span = Arc::new(Span::new());
    let garbage_decided = Arc::new(AtomicU64::new(0));
    let decisions = {
        let (tracker, span, garbage_decided) = (
            Arc::clone(&tracker),
            Arc::clone(&span),
            Arc::clone(&garbage_decided),
        );
        Receiver::start_with(brokers, &topics.output, args.partitions, move |value, _| {
            let decision = value.and_then(|v| wire::decode_decision(v).ok());
            match decision {
                Some(d) if d.trigger == proto::Trigger::Timeout as i32 || d.shadow => {}
                Some(d) => {
                    span.record(tracker.now_ns());
                    if d.event_id.starts_with("garbage-") {
                        garbage_decided.fetch_add(1, Ordering::Relaxed);
                    } else {
                        tracker.record_decision(&d.event_id, None);
                    }
                }
                None => {
                    tracker.foreign.fetch_add(1, Ordering::Relaxed);
                }
            }
        })?
    };
    let ledger = Arc::new(Mutex::new(DeadLetterLedger::default()));
    let undecodable_dead_letters = Arc::new(AtomicU64::new(0));
    let dead_letters = {
        let (tracker, span, ledger, undecodable) = (
            Arc::clone(&tracker),
            Arc::clone(&span),
            Arc::clone(&ledger),
            Arc::clone(&undecodable_dead_letters),
        );
        Receiver::start_with(
            brokers,
            &topics.dead_letters,
            args.partitions,
            move |value, _| {
                span.record(tracker.now_ns());
                match value.map(veto::event::decode_dead_letter) {
                    Some(Ok(dl)) => {
                        if let Ok(mut ledger) = ledger.lock() {
                            ledger.receive(&dl.raw, &dl.reason_code);
                        }
                    }
                    _ => {
                        undecodable.fetch_add(1, Ordering::Relaxed);
                    }
                }
            },
        )?
    };

    let mut sender = Sender::new(brokers, args, &topics.input)?;
    let mut maker = GarbageMaker::new(
        args.seed ^ 0x6a72_6261_6765,
        args.format,
        &args.garbage_kinds,
    );
    let mut good = 0u64;
    let mut payload_bytes = 0u64;
    eprintln!(
        "[veto {name}] queueing {n} events ({:.1} % garbage)",
        fraction * 100.0
    );
    for i in 0..n {
        let mut event = sender
            .synth
            .next()
            .ok_or_else(|| BenchError::Invalid("synthetic stream ended".into()))?;
        if is_garbage(i as u64, fraction) {
            let id = format!("garbage-{i}");
            let (kind, payload) = maker.next(&event, &id);
            if let Ok(mut ledger) = ledger.lock() {
                ledger.inject(kind, &payload);
            }
            payload_bytes += payload.len() as u64;
            sender.send_payload(&id, &payload)?;
        } else {
            event.event_id = event_id(i);
            let payload = wire::encode_event(&event, args.format);
            payload_bytes += payload.len() as u64;
            sender.send_payload(wire::event_key(&event), &payload)?;
            good += 1;
        }
    }
    sender.producer_flush()?;
    let garbage = n as u64 - good;

    eprintln!("[veto {name}] starting");
    let mut veto = start_veto(args, brokers, &topics, &format!("-{name}"))?;
    let deadline = Instant::now() + args.drain_timeout + Duration::from_secs(30);
    loop {
        let decided = tracker.received_in(0..n) as u64;
        let dead = ledger.lock().map(|l| l.received()).unwrap_or(0);
        if (decided >= good && dead >= garbage) || Instant::now() >= deadline {
            break;
        }
        veto.check_alive()?;
        std::thread::sleep(Duration::from_millis(50));
    }
    // a moment for late duplicates to show up before counting
    std::thread::sleep(Duration::from_millis(500));
    veto.stop()?;
    decisions.stop()?;
    dead_letters.stop()?;

    let ledger = ledger
        .lock()
        .map_err(|_| BenchError::Invalid("dead-letter ledger poisoned".into()))?;
    let decided = tracker.received_in(0..n) as u64;
    let first = span.first.load(Ordering::Relaxed);
    let last = span.last.load(Ordering::Relaxed);
    let seconds = last.saturating_sub(first) as f64 / 1e9;
    let per_sec = |count: u64| {
        if seconds > 0.0 {
            count.saturating_sub(1) as f64 / seconds
        } else {
            0.0
        }
    };
    let duplicate_decisions = tracker.duplicates.load(Ordering::Relaxed);
    let garbage_decided = garbage_decided.load(Ordering::Relaxed);
    let undecodable_dead_letters = undecodable_dead_letters.load(Ordering::Relaxed);
    Ok(StreamResult {
        stream: name.to_string(),
        events: n as u64,
        good_events: good,
        garbage_events: garbage,
        payload_bytes,
        decided,
        duplicate_decisions,
        garbage_decided,
        foreign_decisions: tracker.foreign.load(Ordering::Relaxed),
        dead_letters: ledger.received(),
        undecodable_dead_letters,
        injected_by_kind: ledger.injected_by_kind.clone(),
        injected_by_reason: ledger.injected_by_reason.clone(),
        dead_letters_by_reason: ledger.received_by_reason.clone(),
        dead_letters_matched: ledger.matched,
        dead_letters_wrong_reason: ledger.wrong_reason,
        dead_letters_unexpected: ledger.unexpected,
        seconds,
        events_per_sec: per_sec(n as u64),
        good_events_per_sec: per_sec(good),
        every_garbage_event_dead_lettered: ledger.complete() && undecodable_dead_letters == 0,
        every_good_event_decided_once: decided == good
            && duplicate_decisions == 0
            && garbage_decided == 0,
    })
}

fn print_stream(r: &StreamResult) {
    eprintln!(
        "[veto {}] {} events ({} good, {} garbage, {:.1} MB) in {:.2} s: {:.0} events/s; decisions {}/{} (duplicates {}, for garbage {}); dead letters {}/{} matched (wrong reason {}, unexpected {})",
        r.stream,
        r.events,
        r.good_events,
        r.garbage_events,
        r.payload_bytes as f64 / 1e6,
        r.seconds,
        r.events_per_sec,
        r.decided,
        r.good_events,
        r.duplicate_decisions,
        r.garbage_decided,
        r.dead_letters_matched,
        r.garbage_events,
        r.dead_letters_wrong_reason,
        r.dead_letters_unexpected,
    );
}

/// Runs the clean stream, then the garbage stream, on `brokers`.
pub fn run(
    args: &E2eArgs,
    fraction: f64,
    brokers: &str,
    runtime: &tokio::runtime::Runtime,
) -> Result<BadInputResult, BenchError> {
    if !(0.0..=1.0).contains(&fraction) || args.garbage_events == 0 {
        return Err(BenchError::Invalid(
            "--garbage must be within 0..=1 and --garbage-events positive".into(),
        ));
    }
    let clean = run_stream(args, brokers, runtime, "clean", 0.0)?;
    print_stream(&clean);
    let garbage = run_stream(args, brokers, runtime, "garbage", fraction)?;
    print_stream(&garbage);
    eprintln!(
        "[veto garbage] dead letters by reason: {:?}",
        garbage.dead_letters_by_reason
    );
    let throughput_ratio =
        (clean.events_per_sec > 0.0).then(|| garbage.events_per_sec / clean.events_per_sec);
    let verified = clean.every_good_event_decided_once
        && garbage.every_good_event_decided_once
        && garbage.every_garbage_event_dead_lettered
        && clean.dead_letters == 0;
    eprintln!(
        "bad input: clean {:.0} events/s, {:.0} % garbage {:.0} events/s, ratio {}; every garbage event dead-lettered with its reason: {}; every good event decided once: {}",
        clean.events_per_sec,
        fraction * 100.0,
        garbage.events_per_sec,
        throughput_ratio.map_or("n/a".into(), |r| format!("{r:.3}")),
        garbage.every_garbage_event_dead_lettered,
        clean.every_good_event_decided_once && garbage.every_good_event_decided_once,
    );
    Ok(BadInputResult {
        garbage_fraction: fraction,
        clean,
        garbage,
        throughput_ratio,
        verified,
    })
}
