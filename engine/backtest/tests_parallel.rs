//! Tests that the parallel replay (features counted per entity partition on several threads,
//! shared by the two sets) decides exactly like one engine deciding the events one by one.

use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::decider::{Engine, EventTimeTimers};
use crate::event::{decode_decision, encode_event, InputFormat, OutputFormat, PaymentEvent};
use crate::store::{StoreConfig, TagStore};
use crate::synth::{Synth, SynthConfig};

/// A set that shares some features with the shipped rules and defines others.
const OTHER: &str = r#"version "other-1"
feature card_auths_10m = count() by card_id over 10m where type == "authorization"
feature user_devices_24h = distinct(device_id) by user_id over 24h
feature ip_users_1h = distinct(user_id) by ip over 1h
feature merchant_sum_1h = sum(amount) by merchant_id over 1h
rule velocity when card_auths_10m > 3 then review, score 20, tag card_id "fast" for 1h
rule fast_again when card_id has tag "fast" and type == "authorization" then challenge
rule shared_ip when ip_users_1h >= 2 or amount > 500 then block, tag user_id "shared_ip" for 1d
rule tagged_user when user_id has tag "shared_ip" then review
rule devices when user_devices_24h >= 3 then review, score 30
rule busy_merchant when merchant_sum_1h > 20000 then review
rule no_capture after type == "authorization" expect type == "capture" with same txn_id within 5m then review
decide review when score >= 40
"#;

/// Every decision of one engine deciding `events` in order, with timers in event time (as the
/// replay fires them: before the first event at or after their deadline, the rest at the end).
fn sequential(rules: &Path, events: &[PaymentEvent]) -> Vec<Decision> {
    let set = load_set("--rules", &[rules.to_path_buf()]).expect("rules");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = TagStore::open(StoreConfig {
        data_dir: dir.path().to_path_buf(),
        ..StoreConfig::default()
    })
    .expect("store");
    let timers = Arc::new(EventTimeTimers::default());
    let engine = Engine::new(set, Arc::new(store), timers.clone());
    let mut out = Vec::new();
    let fire = |now_ms: i64, out: &mut Vec<Decision>| {
        for t in timers.due(now_ms) {
            out.extend(engine.timeout_decision(&t.rule, t.event_id, t.txn_id, t.deadline_ms));
        }
    };
    for event in events {
        fire(event.event_time_ms, &mut out);
        out.push(engine.decide(event, event.event_time_ms).decision);
    }
    fire(i64::MAX, &mut out);
    out
}

fn read_decisions(path: &Path) -> Vec<Decision> {
    std::fs::read_to_string(path)
        .expect("decisions")
        .lines()
        .map(|l| decode_decision(l.as_bytes(), InputFormat::Json).expect("decision"))
        .collect()
}

/// Decisions without the per-event evaluation time (a replay times nothing).
fn untimed(mut decisions: Vec<Decision>) -> Vec<Decision> {
    decisions.iter_mut().for_each(|d| d.eval_latency_us = 0);
    decisions
}

fn totals(decisions: &[Decision]) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let mut outcomes = BTreeMap::new();
    let mut hits = BTreeMap::new();
    for d in decisions {
        *outcomes
            .entry(format!("{:?}/{}", d.trigger, d.outcome.name()))
            .or_insert(0) += 1;
        for h in &d.hits {
            *hits.entry(h.rule.to_string()).or_insert(0) += 1;
        }
    }
    (outcomes, hits)
}

fn report_totals(set: &SetReport) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let mut outcomes = BTreeMap::new();
    for (o, n) in &set.decisions {
        if *n > 0 {
            outcomes.insert(format!("Event/{o}"), *n);
        }
    }
    for (o, n) in &set.timeout_decisions {
        if *n > 0 {
            outcomes.insert(format!("Timeout/{o}"), *n);
        }
    }
    (outcomes, set.rule_hits.clone())
}

#[test]
fn a_parallel_replay_decides_exactly_like_one_engine_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut synth = Synth::new(SynthConfig {
        seed: 5,
        users: 1_500,
        merchants: 100,
        fraud_rate: 0.1,
        flows_per_sec: 30.0,
        ..SynthConfig::default()
    });
    let events: Vec<PaymentEvent> = (0..15_000).map(|_| synth.next_labelled().0).collect();
    let mut jsonl = Vec::new();
    for ev in &events {
        jsonl.extend(encode_event(ev, OutputFormat::Json));
        jsonl.push(b'\n');
    }
    std::fs::write(dir.path().join("events.jsonl"), jsonl).expect("write");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/payments.veto");
    let other = dir.path().join("other.veto");
    std::fs::write(&other, OTHER).expect("write");

    let expected_shipped = untimed(sequential(&shipped, &events));
    let expected_other = untimed(sequential(&other, &events));
    // The stream exercises what could go wrong: tags written and read, timeouts, every outcome.
    let (outcomes, hits) = totals(&expected_shipped);
    assert!(
        outcomes.keys().any(|k| k.starts_with("Timeout/")),
        "{outcomes:?}"
    );
    assert!(outcomes.len() >= 4, "{outcomes:?}");
    assert!(hits.len() >= 6, "{hits:?}");
    let (other_outcomes, other_hits) = totals(&expected_other);
    assert!(other_hits.contains_key("fast_again"), "{other_hits:?}");
    assert!(other_hits.contains_key("tagged_user"), "{other_hits:?}");

    for (partitions, baseline) in [(1, None), (2, None), (3, Some(&other)), (2, Some(&shipped))] {
        let out = dir.path().join(format!("decisions-{partitions}.jsonl"));
        let report = backtest(&BacktestOptions {
            rules: vec![shipped.clone()],
            baseline: baseline.into_iter().cloned().collect(),
            events: dir.path().join("events.jsonl"),
            decisions_out: Some(out.clone()),
            partitions,
            ..BacktestOptions::default()
        })
        .expect("backtest");
        let case = format!("{partitions} partitions, baseline {baseline:?}");
        assert_eq!(report.events, events.len() as u64, "{case}");
        let got = untimed(read_decisions(&out));
        assert_eq!(got.len(), expected_shipped.len(), "{case}");
        for (i, (g, e)) in got.iter().zip(&expected_shipped).enumerate() {
            assert_eq!(g, e, "{case}: decision {i}");
        }
        assert_eq!(report_totals(&report.new), (outcomes.clone(), hits.clone()));
        if let Some(base) = &report.baseline {
            let want = if baseline == Some(&other) {
                (other_outcomes.clone(), other_hits.clone())
            } else {
                (outcomes.clone(), hits.clone())
            };
            assert_eq!(report_totals(base), want, "{case}");
        }
    }
}
