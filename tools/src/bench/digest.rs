//! Decision digest: one 64-bit fingerprint of everything the engine decided over a synthetic
//! stream — per event the outcome, score, hits in order, the tags and timer arm/cancel requests
//! of the evaluation and every feature value computed, plus every timeout decision — so a
//! changed engine core can be proven to decide exactly as the one that recorded the digest.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use veto::decider::{DecideTrace, DueTimer, Engine};
use veto::event::{Decision, Outcome};
use veto::synth::{Synth, SynthConfig};

use super::core::scratch_engine;
use super::BenchError;

/// What stream the digest is taken over.
#[derive(Debug, Clone)]
pub struct DigestConfig {
    /// Rule file the engine runs.
    pub rules: PathBuf,
    /// Events decided (timeout decisions come on top).
    pub events: usize,
    /// Distinct users of the synthetic stream.
    pub users: u64,
    /// Seed of the synthetic stream.
    pub seed: u64,
}

/// The digest with readable totals, so a mismatch says what moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestSummary {
    /// FNV-1a 64 over every decision, trace and timeout in stream order.
    pub digest: u64,
    pub events: u64,
    /// Event decisions by outcome name.
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Timeout decisions of sequence rules by outcome name.
    pub timeouts: BTreeMap<&'static str, u64>,
    /// Hits per rule, timeout decisions included.
    pub rule_hits: BTreeMap<String, u64>,
    /// Tags, timer arms and timer cancels the evaluations asked for.
    pub tags: u64,
    pub arms: u64,
    pub cancels: u64,
    /// Feature values computed (`Some`) over all events.
    pub feature_values: u64,
}

impl DigestSummary {
    fn new() -> DigestSummary {
        let zero = || Outcome::ALL.iter().map(|o| (o.name(), 0)).collect();
        DigestSummary {
            digest: 0,
            events: 0,
            outcomes: zero(),
            timeouts: zero(),
            rule_hits: BTreeMap::new(),
            tags: 0,
            arms: 0,
            cancels: 0,
            feature_values: 0,
        }
    }

    fn count_hits(&mut self, decision: &Decision) {
        for hit in &decision.hits {
            *self.rule_hits.entry(hit.rule.to_string()).or_default() += 1;
        }
    }
}

impl fmt::Display for DigestSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "digest {:#018x} over {} events",
            self.digest, self.events
        )?;
        writeln!(f, "  outcomes: {:?}", self.outcomes)?;
        writeln!(f, "  timeouts: {:?}", self.timeouts)?;
        writeln!(
            f,
            "  tags {}, timer arms {}, cancels {}, feature values {}",
            self.tags, self.arms, self.cancels, self.feature_values
        )?;
        write!(f, "  hits per rule:")?;
        for (rule, n) in &self.rule_hits {
            write!(f, "\n    {rule:<28} {n}")?;
        }
        Ok(())
    }
}

/// FNV-1a, 64 bit: stable across Rust releases and platforms (the std hasher is not).
struct Fnv(u64);

impl Fnv {
    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }

    fn i64(&mut self, v: i64) {
        self.bytes(&v.to_le_bytes());
    }

    /// Length-prefixed, so adjacent strings cannot run into each other.
    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.bytes(s.as_bytes());
    }

    fn decision(&mut self, d: &Decision) {
        self.str(&d.event_id);
        self.str(d.outcome.name());
        self.i64(i64::from(d.score));
        self.u64(d.hits.len() as u64);
        for hit in &d.hits {
            self.str(&hit.rule);
            self.str(hit.outcome.name());
            self.i64(i64::from(hit.score));
        }
    }
}

/// Decides `cfg.events` synthetic events on a fresh engine and folds everything it decided.
/// Timers due at an event's time fire before it (as in `veto backtest`); the end of the stream
/// fires the rest.
pub fn run(cfg: &DigestConfig) -> Result<DigestSummary, BenchError> {
    let scratch = scratch_engine(&cfg.rules)?;
    let engine = &scratch.engine;
    let mut sum = DigestSummary::new();
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    let mut trace = DecideTrace::default();
    let synth = Synth::new(SynthConfig {
        seed: cfg.seed,
        users: cfg.users,
        ..SynthConfig::default()
    });
    for event in synth.take(cfg.events) {
        for timer in scratch.timers.due(event.event_time_ms) {
            fold_timeout(engine, &timer, &mut h, &mut sum);
        }
        let decided = engine.decide_traced(&event, event.event_time_ms, &mut trace);
        let d = &decided.decision;
        h.bytes(b"E");
        h.decision(d);
        *sum.outcomes.entry(d.outcome.name()).or_default() += 1;
        sum.count_hits(d);
        sum.events += 1;
        h.u64(trace.values.len() as u64);
        for v in &trace.values {
            match v {
                Some(x) => {
                    h.bytes(&[1]);
                    h.u64(x.to_bits());
                    sum.feature_values += 1;
                }
                None => h.bytes(&[0]),
            }
        }
        for tag in &trace.eval.tags {
            h.bytes(b"T");
            h.str(tag.entity.name());
            h.str(&tag.value);
            h.str(&tag.tag);
            h.i64(tag.expires_at_ms.unwrap_or(i64::MIN));
            h.bytes(&[u8::from(tag.remove)]);
        }
        for arm in &trace.eval.arm {
            h.bytes(b"A");
            h.u64(arm.sequence as u64);
            h.str(arm.key(&event));
            h.u64(arm.within_ms);
        }
        for cancel in &trace.eval.cancel {
            h.bytes(b"C");
            h.u64(cancel.sequence as u64);
            h.str(cancel.key(&event));
        }
        sum.tags += trace.eval.tags.len() as u64;
        sum.arms += trace.eval.arm.len() as u64;
        sum.cancels += trace.eval.cancel.len() as u64;
    }
    for timer in scratch.timers.due(i64::MAX) {
        fold_timeout(engine, &timer, &mut h, &mut sum);
    }
    sum.digest = h.0;
    Ok(sum)
}

fn fold_timeout(engine: &Engine, timer: &DueTimer, h: &mut Fnv, sum: &mut DigestSummary) {
    h.bytes(b"O");
    h.str(&timer.rule);
    h.str(&timer.key);
    h.i64(timer.deadline_ms);
    let decision = engine.timeout_decision(
        &timer.rule,
        timer.event_id.clone(),
        timer.txn_id.clone(),
        timer.deadline_ms,
    );
    match decision {
        Some(d) => {
            h.decision(&d);
            *sum.timeouts.entry(d.outcome.name()).or_default() += 1;
            sum.count_hits(&d);
        }
        None => h.bytes(b"-"),
    }
}

/// Runs [`run`] and times it: the summary and events/s (timeouts not counted).
pub fn run_timed(cfg: &DigestConfig) -> Result<(DigestSummary, f64), BenchError> {
    let started = Instant::now();
    let summary = run(cfg)?;
    let secs = started.elapsed().as_secs_f64();
    let rate = if secs > 0.0 {
        summary.events as f64 / secs
    } else {
        0.0
    };
    Ok((summary, rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(events: usize, seed: u64) -> DigestConfig {
        DigestConfig {
            rules: PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../rules/payments.veto"
            )),
            events,
            users: 1_000,
            seed,
        }
    }

    #[test]
    fn fnv_matches_the_reference_vectors() {
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        h.bytes(b"a");
        assert_eq!(h.0, 0xaf63_dc4c_8601_ec8c);
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        h.bytes(b"foobar");
        assert_eq!(h.0, 0x8594_4171_f739_67e8);
    }

    #[test]
    fn same_stream_same_digest_other_stream_other_digest() {
        let a = run(&cfg(3_000, 7)).expect("digest");
        let b = run(&cfg(3_000, 7)).expect("digest");
        assert_eq!(a, b);
        assert_eq!(a.events, 3_000);
        assert_eq!(a.outcomes.values().sum::<u64>(), 3_000);
        assert!(a.feature_values > 0 && a.arms > 0, "{a}");
        let c = run(&cfg(3_000, 8)).expect("digest");
        assert_ne!(a.digest, c.digest);
        let shorter = run(&cfg(2_999, 7)).expect("digest");
        assert_ne!(a.digest, shorter.digest);
    }

    #[test]
    fn rejected_rules_are_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bad = dir.path().join("bad.veto");
        std::fs::write(&bad, "rule r when nope > 1 then block\n").expect("write");
        let mut c = cfg(10, 1);
        c.rules = bad;
        let err = run(&c).expect_err("bad rules");
        assert!(err.to_string().contains("bad.veto"), "{err}");
    }
}
