//! Differential check of the engine core against a naive reference (`bench::reference`):
//! 1,000,000 synthetic payments through `veto::decider::Engine` with `rules/payments.veto` and
//! through a reference that keeps every counted event one by one and evaluates the rules on
//! their condition trees. Every feature value (bit for bit), outcome, score, hit list, tag and
//! timer request must agree, event by event.
//!
//! The stream is the synthetic one varied so it reaches every rule of the set (other event
//! types, listed and unusual field values, late events, tags from the `entity-tags` topic:
//! `bench::reference`), at 4 payment flows per second of event time, so its ~1.5 days see the
//! 10-minute, 1-hour and 1-day windows expire events (a denser stream fits inside the shortest
//! window and would never test expiry).

use std::path::PathBuf;

use veto_tools::bench::reference::{differential, DifferentialStream};

const STREAM: DifferentialStream = DifferentialStream {
    events: 1_000_000,
    users: 100_000,
    seed: 42,
    flows_per_sec: 4.0,
};

#[test]
fn engine_decides_as_the_naive_reference() {
    let rules = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../rules/payments.veto"
    ));
    let sum = match differential(&rules, STREAM) {
        Ok(sum) => sum,
        Err(e) => panic!("the engine and the reference differ: {e}"),
    };
    eprintln!("{sum:?}");
    assert_eq!(sum.events, STREAM.events as u64);
    // the stream exercises what is compared: values, expiry, hits, tags and timers
    assert!(sum.present_values > 10 * STREAM.events as u64, "{sum:?}");
    assert!(sum.expired > STREAM.events as u64, "{sum:?}");
    assert!(sum.hits > 0 && sum.flagged > 0, "{sum:?}");
    assert!(sum.tags > 0 && sum.timer_requests > 0, "{sum:?}");
    assert!(sum.never_fired.is_empty(), "{sum:?}");
}
