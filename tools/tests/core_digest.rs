//! Differential check of the engine core: 1,000,000 synthetic payments through
//! `veto::decider::Engine` with `rules/payments.veto`, every decision, trace and timeout folded
//! into one digest that must equal the one the reference engine recorded.
//!
//! A changed digest means the engine decides differently: some outcome, score, hit list, tag,
//! timer request, feature value (compared bit for bit) or timeout decision moved. The totals
//! below are checked first so a failure names what moved.
//!
//! Regenerate only when a change of decisions is intended (a rule file, the synthetic stream or
//! the semantics changed), never to make an optimisation pass:
//! `cargo test -p veto-tools --test core_digest -- --nocapture` prints the new digest and
//! totals; copy them into the constants.

use std::collections::BTreeMap;
use std::path::PathBuf;

use veto_tools::bench::digest::{run_timed, DigestConfig};

const EVENTS: usize = 1_000_000;
const USERS: u64 = 100_000;
const SEED: u64 = 42;

/// Recorded by the engine core at fb1a34a.
const DIGEST: u64 = 0x9122_b658_6009_ba8c;
const OUTCOMES: [(&str, u64); 4] = [
    ("allow", 673_233),
    ("block", 281_260),
    ("challenge", 4_225),
    ("review", 41_282),
];
const TIMEOUTS: [(&str, u64); 4] = [
    ("allow", 0),
    ("block", 0),
    ("challenge", 0),
    ("review", 39_927),
];

#[test]
fn engine_decides_exactly_as_the_reference_engine() {
    let cfg = DigestConfig {
        rules: PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../rules/payments.veto"
        )),
        events: EVENTS,
        users: USERS,
        seed: SEED,
    };
    let (summary, events_per_sec) = run_timed(&cfg).expect("digest run");
    eprintln!("{summary}\n  {events_per_sec:.0} events/s (this build's profile)");

    // The stream exercises what the digest is meant to guard: velocity and state features,
    // tags, sequence timers and their timeouts.
    for rule in [
        "card_velocity",
        "card_testing",
        "sanctioned_geo",
        "new_device_big_amount",
        "auth_without_capture",
    ] {
        assert!(
            summary.rule_hits.get(rule).copied().unwrap_or(0) > 0,
            "{rule} never fired: the stream no longer covers it\n{summary}"
        );
    }
    assert!(
        summary.tags > 0 && summary.arms > 0 && summary.cancels > 0,
        "{summary}"
    );

    let expected = |pairs: [(&'static str, u64); 4]| pairs.into_iter().collect::<BTreeMap<_, _>>();
    assert_eq!(summary.events, EVENTS as u64);
    assert_eq!(
        summary.outcomes,
        expected(OUTCOMES),
        "event outcomes moved\n{summary}"
    );
    assert_eq!(
        summary.timeouts,
        expected(TIMEOUTS),
        "timeout outcomes moved\n{summary}"
    );
    assert_eq!(
        summary.digest, DIGEST,
        "decisions changed (digest {:#018x}, recorded {DIGEST:#018x})\n{summary}",
        summary.digest
    );
}
