//! The hot-swap workload: a rule set of the shipped rules plus generated ones up to N rules, and
//! a loop that decides synthetic events and timestamps each one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use veto::decider::Engine;
use veto::synth::{Synth, SynthConfig};

/// Rules in a rule file: lines starting with `rule `.
pub fn count_rules(text: &str) -> usize {
    text.lines().filter(|l| l.starts_with("rule ")).count()
}

/// The generated rules that bring a set of `shipped_rules` up to `total_rules`.
///
/// Realistic shapes on the shipped features, with thresholds no test event reaches, so the
/// set's own tests still pass. `variant` shifts the thresholds: each variant is a different
/// file (a new rule set version) of the same size.
pub fn generated_rules(shipped_rules: usize, total_rules: usize, variant: usize) -> String {
    let mut generated = String::new();
    for i in 0..total_rules.saturating_sub(shipped_rules) {
        let (kind, feature) = match i % 4 {
            0 => ("authorization", "card_auths_10m"),
            1 => ("authorization", "card_amount_1h"),
            2 => ("login", "user_devices_24h"),
            _ => ("authorization", "user_devices_24h"),
        };
        generated.push_str(&format!(
            "rule generated_{i} \"generated rule {i}\"\n  when type == \"{kind}\" and amount > {} and {feature} >= {}\n  then review, score 1\n\n",
            1_000_000 + i + variant,
            100 + (i + variant) % 50
        ));
    }
    generated
}

/// Writes `generated.veto` into `dir` so that with `shipped` the set has `total_rules` rules;
/// returns the paths of the whole set (shipped first).
pub fn write_rule_files(
    dir: &Path,
    shipped: &Path,
    total_rules: usize,
    variant: usize,
) -> std::io::Result<Vec<PathBuf>> {
    let shipped_rules = count_rules(&std::fs::read_to_string(shipped)?);
    let file = dir.join("generated.veto");
    std::fs::write(&file, generated_rules(shipped_rules, total_rules, variant))?;
    Ok(vec![shipped.to_path_buf(), file])
}

/// One decided event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecideSample {
    /// When the decision started, nanoseconds after the loop's `base`.
    pub at_ns: u64,
    pub latency_ns: u64,
    /// Whether a swap was running (the flag was set) when the decision started.
    pub swapping: bool,
}

/// Decides synthetic events (seed `seed`) on `engine` until `until()` says stop; timestamps
/// every event relative to `base`.
pub fn decide_until(
    engine: &Engine,
    seed: u64,
    base: Instant,
    swapping: &AtomicBool,
    mut until: impl FnMut() -> bool,
) -> Vec<DecideSample> {
    let mut synth = Synth::new(SynthConfig {
        seed,
        ..SynthConfig::default()
    });
    let mut samples = Vec::with_capacity(1 << 20);
    while !until() {
        let Some(event) = synth.next() else { break };
        let during = swapping.load(Ordering::Relaxed);
        let started = Instant::now();
        let decided = engine.decide(&event, event.event_time_ms);
        std::hint::black_box(decided.decision.outcome);
        samples.push(DecideSample {
            at_ns: started.duration_since(base).as_nanos() as u64,
            latency_ns: started.elapsed().as_nanos() as u64,
            swapping: during,
        });
    }
    samples
}

/// [`decide_until`] for a fixed `span`.
pub fn decide_for(engine: &Engine, span: Duration, swapping: &AtomicBool) -> Vec<DecideSample> {
    let base = Instant::now();
    let end = base + span;
    decide_until(engine, 3, base, swapping, || Instant::now() >= end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn generated_set_has_the_requested_size_and_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rules/payments.veto");
        let paths = write_rule_files(dir.path(), &shipped, 200, 0).expect("write");
        let rules = veto::reload::load_rules_blocking(&paths).expect("loads and its tests pass");
        assert_eq!(rules.rules().len() + rules.sequences().len(), 200);
        let paths = write_rule_files(dir.path(), &shipped, 200, 1).expect("write");
        let other = veto::reload::load_rules_blocking(&paths).expect("variant loads");
        assert_eq!(other.rules().len(), rules.rules().len());
        assert_ne!(generated_rules(51, 60, 0), generated_rules(51, 60, 1));

        let store_dir = tempfile::tempdir().expect("tempdir");
        let store = veto::store::TagStore::open(veto::store::StoreConfig {
            data_dir: store_dir.path().to_path_buf(),
            ..Default::default()
        })
        .expect("store");
        let engine = Engine::new(
            rules,
            Arc::new(store),
            Arc::new(veto::decider::EventTimeTimers::default()),
        );
        let flag = AtomicBool::new(true);
        let samples = decide_for(&engine, Duration::from_millis(50), &flag);
        assert!(!samples.is_empty());
        assert!(samples.iter().all(|s| s.swapping));
        assert!(samples.windows(2).all(|w| w[0].at_ns <= w[1].at_ns));
    }
}
