//! Tests of `veto backtest --labels`: a labelled synthetic stream whose report must equal counts
//! made here from the written decisions, sweeps against real replays with moved thresholds,
//! transaction labels and timeouts on a crafted stream, and bad labels files.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::*;
use crate::event::{
    decode_decision, encode_event, InputFormat, Outcome, OutputFormat, PaymentEvent,
};
use crate::synth::{Pattern, Synth, SynthConfig};

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").expect("write");
}

/// Every decision of a `--decisions-out` file, by event id (event and timeout decisions).
fn decisions_by_event(path: &Path) -> HashMap<String, Vec<Decision>> {
    let mut by_event: HashMap<String, Vec<Decision>> = HashMap::new();
    for line in std::fs::read_to_string(path).expect("decisions").lines() {
        let d = decode_decision(line.as_bytes(), InputFormat::Json).expect("decision");
        by_event.entry(d.event_id.clone()).or_default().push(d);
    }
    by_event
}

/// Counts made from the decisions and the labels, without the report code.
#[derive(Debug, Default, PartialEq)]
struct Independent {
    fraud: u64,
    legit: u64,
    unknown: u64,
    fraud_caught: u64,
    fraud_caught_minor: i64,
    /// Legit hurt by outcome: [review, challenge, block].
    legit_hurt: [u64; 3],
    unknown_flagged: u64,
    /// rule -> (fraud matched, legit matched, legit matched and hurt, unknown matched)
    rules: BTreeMap<String, (u64, u64, u64, u64)>,
    /// event id -> flagged
    flagged: HashMap<String, bool>,
}

/// `events` in file order with their label (`None`: no label line).
fn count(decisions: &Path, events: &[(PaymentEvent, Option<Label>)]) -> Independent {
    let by_event = decisions_by_event(decisions);
    let mut c = Independent::default();
    for (ev, label) in events {
        let ds = &by_event[&ev.event_id];
        let outcome = ds.iter().map(|d| d.outcome).max().expect("a decision");
        let flagged = outcome != Outcome::Allow;
        c.flagged.insert(ev.event_id.clone(), flagged);
        let mut rules: Vec<&str> = ds
            .iter()
            .flat_map(|d| d.hits.iter().map(|h| &*h.rule))
            .collect();
        rules.sort_unstable();
        rules.dedup();
        for rule in rules {
            let r = c.rules.entry(rule.to_string()).or_default();
            match label {
                Some(Label::Fraud) => r.0 += 1,
                Some(Label::Legit) => {
                    r.1 += 1;
                    r.2 += u64::from(flagged);
                }
                None => r.3 += 1,
            }
        }
        match label {
            Some(Label::Fraud) => {
                c.fraud += 1;
                if flagged {
                    c.fraud_caught += 1;
                    c.fraud_caught_minor += ev.amount_minor.unwrap_or(0);
                }
            }
            Some(Label::Legit) => {
                c.legit += 1;
                match outcome {
                    Outcome::Allow => {}
                    Outcome::Review => c.legit_hurt[0] += 1,
                    Outcome::Challenge => c.legit_hurt[1] += 1,
                    Outcome::Block => c.legit_hurt[2] += 1,
                }
            }
            None => {
                c.unknown += 1;
                c.unknown_flagged += u64::from(flagged);
            }
        }
    }
    c
}

fn assert_report_matches(set: &LabelledSet, c: &Independent) {
    assert_eq!(set.fraud.count, c.fraud);
    assert_eq!(set.legit.count, c.legit);
    assert_eq!(set.unknown_events, c.unknown);
    assert_eq!(set.fraud_caught.count, c.fraud_caught);
    assert_eq!(
        set.fraud_caught.amount.get("EUR").copied().unwrap_or(0),
        c.fraud_caught_minor
    );
    let hurt = &set.legit_hurt;
    assert_eq!([hurt.review, hurt.challenge, hurt.block], c.legit_hurt);
    assert_eq!(hurt.count, c.legit_hurt.iter().sum::<u64>());
    assert_eq!(set.unknown_flagged.count, c.unknown_flagged);
    assert_eq!(
        set.flagged.count,
        c.fraud_caught + hurt.count + c.unknown_flagged
    );
    let precision = c.fraud_caught as f64 / (c.fraud_caught + hurt.count) as f64;
    assert!((set.precision.expect("precision") - precision).abs() < 1e-12);
    let recall = c.fraud_caught as f64 / c.fraud as f64;
    assert!((set.recall.expect("recall") - recall).abs() < 1e-12);
    for q in &set.rules {
        let (fraud, legit, hurt, unknown) = c.rules.get(&q.rule).copied().unwrap_or_default();
        assert_eq!(
            (q.fraud.count, q.legit, q.legit_hurt.count, q.unknown),
            (fraud, legit, hurt, unknown),
            "rule {}",
            q.rule
        );
        assert_eq!(q.matched.count, fraud + legit + unknown, "rule {}", q.rule);
        if fraud + legit > 0 {
            let p = fraud as f64 / (fraud + legit) as f64;
            assert!((q.precision.expect("precision") - p).abs() < 1e-12);
        }
        let r = fraud as f64 / c.fraud as f64;
        assert!((q.recall.expect("recall") - r).abs() < 1e-12);
    }
    let named: Vec<&str> = set.rules.iter().map(|q| q.rule.as_str()).collect();
    assert!(c.rules.keys().all(|r| named.contains(&r.as_str())));
}

/// A simpler baseline: velocity, amount and the capture sequence only.
const LITE: &str = r#"version "lite-1"
feature card_auths_10m = count() by card_id over 10m where type == "authorization"
rule card_velocity when type == "authorization" and card_auths_10m > 3 then review, score 30
rule big_amount when type == "authorization" and amount >= 5000 then challenge, score 50
rule auth_without_capture after type == "authorization" and amount >= 1 expect type == "capture" with same txn_id within 2s then review, score 20
decide block when score >= 80
decide review when score >= 40
"#;

/// Rules whose outcomes come from scores alone, so every `decide` line matters.
const SCORED: &str = r#"version "scored-1"
list high_risk_countries = ["KP", "IR", "SY"]
feature card_auths_10m = count() by card_id over 10m where type == "authorization"
feature card_small_auths_1h = count() by card_id over 1h where type == "authorization" and amount < 2
feature user_devices_24h = distinct(device_id) by user_id over 24h
rule velocity when type == "authorization" and card_auths_10m > 3 then score 30
rule small_auths when type == "authorization" and card_small_auths_1h >= 3 then score 40
rule sanctioned when ip_country in high_risk_countries then score 90
rule devices when user_devices_24h >= 3 then score 25
rule big when type == "authorization" and amount >= 500 then score 20
rule auth_without_capture after type == "authorization" and amount >= 1 expect type == "capture" with same txn_id within 2s then score 35
decide block when score >= 80
decide challenge when score >= 50
decide review when score >= 30
"#;

#[test]
fn a_labelled_synthetic_stream_reports_what_an_independent_count_finds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut synth = Synth::new(SynthConfig {
        seed: 11,
        users: 2_000,
        merchants: 200,
        fraud_rate: 0.08,
        flows_per_sec: 20.0,
        ..SynthConfig::default()
    });
    // Every 9th event has no label (unknown); fraud labels arrive as chargebacks 30 days on.
    let mut events = Vec::new();
    let mut label_lines = Vec::new();
    for i in 0..12_000 {
        let (ev, pattern) = synth.next_labelled();
        let truth = match pattern {
            Some(_) => Label::Fraud,
            None => Label::Legit,
        };
        let label = (i % 9 != 4).then_some(truth);
        if let Some(label) = label {
            let reported = ev.event_time_ms + 30 * 86_400_000;
            label_lines.push(match label {
                Label::Fraud => format!(
                    r#"{{"event_id":"{}","label":"fraud","reported_at_ms":{reported},"pattern":"{}"}}"#,
                    ev.event_id,
                    pattern.map_or("", Pattern::name)
                ),
                Label::Legit => format!(r#"{{"event_id":"{}","label":"legit"}}"#, ev.event_id),
            });
        }
        events.push((ev, label));
    }
    let event_lines: Vec<String> = events
        .iter()
        .map(|(ev, _)| String::from_utf8(encode_event(ev, OutputFormat::Json)).expect("utf-8"))
        .collect();
    write_lines(&dir.path().join("events.jsonl"), &event_lines);
    write_lines(&dir.path().join("labels.jsonl"), &label_lines);
    std::fs::write(dir.path().join("lite.veto"), LITE).expect("write");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/payments.veto");
    let run = |rules: PathBuf, baseline: Option<PathBuf>, out: &str| {
        backtest(&BacktestOptions {
            rules: vec![rules],
            baseline: baseline.into_iter().collect(),
            events: dir.path().join("events.jsonl"),
            decisions_out: Some(dir.path().join(out)),
            labels: Some(dir.path().join("labels.jsonl")),
            sweep_step: 10,
            ..BacktestOptions::default()
        })
        .expect("backtest")
    };

    let report = run(shipped, Some(dir.path().join("lite.veto")), "new.jsonl");
    let new_counts = count(&dir.path().join("new.jsonl"), &events);
    let new = report.new.labels.as_ref().expect("labels of the new set");
    assert_report_matches(new, &new_counts);
    // The stream is meant to exercise every column, not only the happy path.
    assert!(new_counts.fraud_caught > 50 && new_counts.fraud_caught < new_counts.fraud);
    assert!(new_counts.legit_hurt.iter().sum::<u64>() > 0);
    assert!(new_counts.unknown_flagged > 0);

    // The baseline's numbers equal a count over its own decisions (replayed as the candidate).
    let alone = run(dir.path().join("lite.veto"), None, "base.jsonl");
    let base_counts = count(&dir.path().join("base.jsonl"), &events);
    let base = report.baseline.as_ref().and_then(|b| b.labels.as_ref());
    assert_report_matches(base.expect("labels of the baseline"), &base_counts);
    assert_eq!(alone.new.labels.as_ref(), base);

    let diff = report.changes.as_ref().and_then(|c| c.labels.as_ref());
    let diff = diff.expect("label diff");
    let (mut newly_caught, mut no_longer_caught, mut newly_hurt, mut no_longer_hurt) = (0, 0, 0, 0);
    for (ev, label) in &events {
        let (n, b) = (
            new_counts.flagged[&ev.event_id],
            base_counts.flagged[&ev.event_id],
        );
        match (label, n, b) {
            (Some(Label::Fraud), true, false) => newly_caught += 1,
            (Some(Label::Fraud), false, true) => no_longer_caught += 1,
            (Some(Label::Legit), true, false) => newly_hurt += 1,
            (Some(Label::Legit), false, true) => no_longer_hurt += 1,
            _ => {}
        }
    }
    assert_eq!(
        (
            diff.newly_caught,
            diff.no_longer_caught,
            diff.newly_hurt,
            diff.no_longer_hurt
        ),
        (newly_caught, no_longer_caught, newly_hurt, no_longer_hurt)
    );
    assert_eq!(
        diff.fraud_caught,
        new_counts.fraud_caught as i64 - base_counts.fraud_caught as i64
    );
    let summary = report.labels.as_ref().expect("labels summary");
    assert_eq!(summary.units, label_lines.len() as u64);
    assert_eq!(summary.fraud_not_in_events + summary.legit_not_in_events, 0);
    assert_eq!(summary.reported_after_decision, summary.fraud);

    // The sweep point at the rules' own threshold is the set's totals; other points are what a
    // replay with the threshold really moved there decides.
    let sweep = |outcome: &str| {
        new.sweeps
            .iter()
            .find(|s| s.outcome == outcome)
            .expect("sweep")
    };
    for s in &new.sweeps {
        let at = s
            .points
            .iter()
            .find(|p| p.threshold == s.threshold)
            .expect("current threshold");
        assert_eq!(at.fraud_caught, new.fraud_caught);
        assert_eq!(at.legit_hurt, new.legit_hurt);
        assert_eq!(at.unknown_flagged, new.unknown_flagged.count);
    }
    let thresholds: Vec<i32> = sweep("challenge")
        .points
        .iter()
        .map(|p| p.threshold)
        .collect();
    assert_eq!(thresholds, [50, 60, 70, 80, 90]);

    // On score-only rules, sweep points equal replays with the threshold really moved.
    std::fs::write(dir.path().join("scored.veto"), SCORED).expect("write");
    let scored = run(dir.path().join("scored.veto"), None, "scored.jsonl");
    let scored = scored.new.labels.expect("labels");
    assert_report_matches(&scored, &count(&dir.path().join("scored.jsonl"), &events));
    let mut changed = 0;
    for (outcome, threshold) in [("block", 80), ("challenge", 50), ("review", 30)] {
        let s = scored
            .sweeps
            .iter()
            .find(|s| s.outcome == outcome)
            .expect("sweep");
        assert_eq!(s.threshold, threshold);
        let ends = [s.points.first(), s.points.last()];
        for point in ends.into_iter().flatten() {
            let t = point.threshold;
            let from = format!("decide {outcome} when score >= {threshold}");
            assert!(SCORED.contains(&from));
            let moved = SCORED.replace(&from, &format!("decide {outcome} when score >= {t}"));
            let name = format!("{outcome}-{t}");
            std::fs::write(dir.path().join(format!("{name}.veto")), moved).expect("write");
            let replay = run(
                dir.path().join(format!("{name}.veto")),
                None,
                &format!("{name}.jsonl"),
            );
            let c = count(&dir.path().join(format!("{name}.jsonl")), &events);
            assert_eq!(point.fraud_caught.count, c.fraud_caught, "{outcome} at {t}");
            assert_eq!(
                point.fraud_caught.amount.get("EUR").copied().unwrap_or(0),
                c.fraud_caught_minor
            );
            let hurt = &point.legit_hurt;
            assert_eq!([hurt.review, hurt.challenge, hurt.block], c.legit_hurt);
            assert_eq!(point.unknown_flagged, c.unknown_flagged);
            let replayed = replay.new.labels.expect("labels");
            assert_eq!(replayed.fraud_caught, point.fraud_caught);
            assert_eq!(replayed.legit_hurt, point.legit_hurt);
            if (&point.fraud_caught, &point.legit_hurt)
                != (&scored.fraud_caught, &scored.legit_hurt)
            {
                changed += 1;
            }
        }
    }
    assert!(
        changed >= 4,
        "moving thresholds changes who is flagged, or how: {changed}"
    );

    let text = render_human(&report);
    for needle in [
        "labels: ",
        "fraud caught",
        "rules against the labels",
        "card_testing",
        "score sweep (new set): decide challenge when score >= N (N = 70 in the rules)",
        "new vs baseline: fraud caught",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    let json: serde_json::Value = serde_json::to_value(&report).expect("the report serializes");
    assert!(
        json["new"]["labels"]["rules"][0]["precision"].is_number()
            || json["new"]["labels"]["rules"][0]["precision"].is_null()
    );
    assert!(json["new"]["labels"]["sweeps"][0]["points"].is_array());
    assert!(json["changes"]["labels"]["newly_caught"].is_u64());
}

fn auth(id: &str, txn: &str, at_ms: i64, amount: &str, kind: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","type":"{kind}","event_time_ms":{},"card_id":"c-{txn}","txn_id":"{txn}","amount":"{amount}","currency":"EUR"}}"#,
        1_767_225_600_000 + at_ms
    )
}

const CRAFTED: &str = r#"version "c-1"
rule big when type == "authorization" and amount > 500 then block
rule mid when type == "authorization" and amount > 100 then score 40
rule small when type == "authorization" and amount > 25 then score 20
rule no_capture after type == "authorization" expect type == "capture" with same txn_id within 2s then challenge
decide review when score >= 40
"#;

#[test]
fn transactions_timeouts_and_unknown_events_are_counted_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t0 = 1_767_225_600_000i64;
    write_lines(
        &dir.path().join("events.jsonl"),
        &[
            auth("e1", "t1", 0, "700.00", "authorization"),
            auth("e1c", "t1", 1_000, "700.00", "capture"),
            auth("e2", "t2", 2_000, "150.00", "authorization"),
            auth("e3", "t3", 3_000, "50.00", "authorization"),
            auth("e4", "t4", 6_000, "20.00", "authorization"),
            auth("e4c", "t4", 6_500, "20.00", "capture"),
            auth("e5", "t5", 7_000, "900.00", "authorization"),
            auth("e5c", "t5", 7_500, "900.00", "capture"),
            auth("e6", "t6", 8_000, "30.00", "authorization"),
            auth("e6c", "t6", 8_200, "30.00", "capture"),
        ],
    );
    std::fs::write(
        dir.path().join("labels.csv"),
        format!(
            "txn_id,event_id,label,amount_minor,currency,reported_at_ms\n\
             t1,,fraud,70000,EUR,{}\n\
             ,e2,legit,,,\n\
             ,e5,legit,,,{t0}\n\
             ,e6,fraud,,,{}\n\
             ,ghost,fraud,,,\n",
            t0 + 40 * 86_400_000,
            t0 + 86_400_000
        ),
    )
    .expect("write");
    std::fs::write(dir.path().join("new.veto"), CRAFTED).expect("write");
    std::fs::write(
        dir.path().join("base.veto"),
        "version \"b-1\"\nrule big when type == \"authorization\" and amount > 800 then block\n",
    )
    .expect("write");
    let report = backtest(&BacktestOptions {
        rules: vec![dir.path().join("new.veto")],
        baseline: vec![dir.path().join("base.veto")],
        events: dir.path().join("events.jsonl"),
        labels: Some(dir.path().join("labels.csv")),
        sweep_step: 10,
        ..BacktestOptions::default()
    })
    .expect("backtest");
    let new = report.new.labels.as_ref().expect("labels");
    // t1 (e1 block + its capture) caught at the label's amount; e6 missed.
    assert_eq!(new.fraud.count, 2);
    assert_eq!(new.fraud_caught.count, 1);
    assert_eq!(new.fraud_caught.block, 1);
    assert_eq!(
        new.fraud_caught.amount,
        BTreeMap::from([("EUR".into(), 70_000)])
    );
    assert_eq!(new.fraud.amount, BTreeMap::from([("EUR".into(), 73_000)]));
    // e2: review on the event, challenge at its timeout: one unit, challenged. e5: blocked.
    assert_eq!(new.legit.count, 2);
    assert_eq!(
        (
            new.legit_hurt.count,
            new.legit_hurt.challenge,
            new.legit_hurt.block
        ),
        (2, 1, 1)
    );
    // e3 (timeout challenge), e4, e4c, e5c, e6c have no label.
    assert_eq!(new.unknown_events, 5);
    assert_eq!(new.unknown_flagged.count, 1);
    assert_eq!(new.unknown_flagged.challenge, 1);
    assert_eq!(new.flagged.count, 4);
    assert_eq!(new.precision, Some(1.0 / 3.0));
    assert_eq!(new.recall, Some(0.5));
    let rule = |name: &str| {
        let q = new.rules.iter().find(|q| q.rule == name).expect("rule");
        (
            q.fraud.count,
            q.legit,
            q.legit_hurt.count,
            q.unknown,
            q.precision,
            q.recall,
        )
    };
    assert_eq!(rule("big"), (1, 1, 1, 0, Some(0.5), Some(0.5)));
    assert_eq!(rule("mid"), (1, 2, 2, 0, Some(1.0 / 3.0), Some(0.5)));
    assert_eq!(rule("no_capture"), (0, 1, 1, 1, Some(0.0), Some(0.0)));
    assert_eq!(rule("small"), (2, 2, 2, 1, Some(0.5), Some(1.0)));
    // Only the review line, so 10..=70. At 20 or below, e6 (score 20 from `small`) is caught.
    let sweep = &new.sweeps[0];
    assert_eq!((sweep.outcome, sweep.threshold), ("review", 40));
    let at = |t: i32| {
        let p = sweep
            .points
            .iter()
            .find(|p| p.threshold == t)
            .expect("point");
        (p.fraud_caught.count, p.legit_hurt.count, p.unknown_flagged)
    };
    let thresholds: Vec<i32> = sweep.points.iter().map(|p| p.threshold).collect();
    assert_eq!(thresholds, [10, 20, 30, 40, 50, 60, 70]);
    assert_eq!(at(10), (2, 2, 1));
    assert_eq!(at(20), (2, 2, 1));
    assert_eq!(at(30), (1, 2, 1));
    assert_eq!(at(40), (1, 2, 1));

    let summary = report.labels.as_ref().expect("summary");
    assert_eq!((summary.units, summary.fraud, summary.legit), (5, 3, 2));
    assert_eq!(summary.fraud_not_in_events, 1);
    assert_eq!(summary.legit_not_in_events, 0);
    // t1 and e6 were reported after their decision; e5 at the epoch of the stream, before.
    assert_eq!(summary.reported_after_decision, 2);

    let base = report.baseline.as_ref().and_then(|b| b.labels.as_ref());
    let base = base.expect("baseline labels");
    assert_eq!((base.fraud_caught.count, base.legit_hurt.count), (0, 1));
    let diff = report.changes.as_ref().and_then(|c| c.labels.as_ref());
    let diff = diff.expect("diff");
    assert_eq!((diff.fraud_caught, diff.legit_hurt), (1, 1));
    assert_eq!(
        (
            diff.newly_caught,
            diff.no_longer_caught,
            diff.newly_hurt,
            diff.no_longer_hurt
        ),
        (1, 0, 1, 0)
    );
    assert_eq!(
        diff.fraud_caught_amount,
        BTreeMap::from([("EUR".into(), 70_000)])
    );
    let rules: Vec<(&str, i64, i64)> = diff
        .rules
        .iter()
        .map(|d| (d.rule.as_str(), d.fraud, d.legit_hurt))
        .collect();
    assert_eq!(
        rules,
        [
            ("big", 1, 0),
            ("mid", 1, 2),
            ("no_capture", 0, 1),
            ("small", 2, 2)
        ]
    );
}

#[test]
fn a_bad_labels_file_stops_the_backtest_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("new.veto"), CRAFTED).expect("write");
    write_lines(
        &dir.path().join("events.jsonl"),
        &[auth("e1", "t1", 0, "700.00", "authorization")],
    );
    std::fs::write(
        dir.path().join("labels.jsonl"),
        "{\"event_id\":\"e1\",\"label\":\"fraud\"}\n{\"event_id\":\"e2\",\"label\":\"fraud?\"}\n",
    )
    .expect("write");
    let err = backtest(&BacktestOptions {
        rules: vec![dir.path().join("new.veto")],
        events: dir.path().join("events.jsonl"),
        labels: Some(dir.path().join("labels.jsonl")),
        ..BacktestOptions::default()
    })
    .expect_err("bad label");
    assert!(matches!(err, BacktestError::Labels(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with("--labels ") && text.contains("labels.jsonl:2:1: label must be"),
        "{text}"
    );
}
