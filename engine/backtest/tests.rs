//! Tests of `veto backtest`: replays, comparisons, bad records, protobuf framing.

use super::*;
use crate::event::{
    decode_decision, decode_event, encode_event, InputFormat, OutputFormat, Trigger,
};

const BASELINE: &str = r#"version "base-1"
feature card_auths = count() by card_id over 10m
rule velocity when card_auths > 2 then review
rule big when amount > 1000 then block
"#;

const NEW: &str = r#"version "new-1"
feature card_auths = count() by card_id over 10m
rule velocity when card_auths > 1 then review
rule big when amount > 500 then block
rule no_capture after type == "authorization" expect type == "capture" with same txn_id within 2s then challenge
"#;

fn event_line(id: &str, card: &str, at_s: i64, amount: &str, txn: Option<&str>) -> String {
    let txn = txn.map_or(String::new(), |t| format!(r#","txn_id":"{t}""#));
    format!(
        r#"{{"event_id":"{id}","type":"authorization","event_time_ms":{},"card_id":"{card}","amount":"{amount}","currency":"EUR"{txn}}}"#,
        1_767_225_600_000 + at_s * 1000
    )
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("base.veto"), BASELINE).expect("write");
        std::fs::write(dir.path().join("new.veto"), NEW).expect("write");
        Fixture { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn options(&self, events: &str) -> BacktestOptions {
        BacktestOptions {
            rules: vec![self.path("new.veto")],
            baseline: vec![self.path("base.veto")],
            events: self.path(events),
            format: None,
            decisions_out: Some(self.path("decisions.jsonl")),
            samples: 5,
            progress: false,
            ..BacktestOptions::default()
        }
    }
}

fn crafted_lines() -> Vec<String> {
    vec![
        event_line("e1", "c1", 0, "100.00", Some("t1")),
        event_line("e2", "c1", 1, "700.00", None),
        event_line("e3", "c1", 2, "50.00", None),
        event_line("e4", "c2", 3, "2000.00", None),
        "{not json".to_string(),
        event_line("e5", "c2", 4, "600.00", None),
        String::new(),
        event_line("e6", "c3", 5, "10.00", None),
    ]
}

#[test]
fn crafted_events_give_the_exact_expected_diff() {
    let fx = Fixture::new();
    std::fs::write(fx.path("events.jsonl"), crafted_lines().join("\n")).expect("write");
    let report = backtest(&fx.options("events.jsonl")).expect("backtest");

    assert_eq!(report.events, 6);
    assert_eq!(report.bad_records, 1);
    assert_eq!(report.bad_record_samples[0].line, 5);
    let base = report.baseline.as_ref().expect("baseline");
    assert_eq!(base.version, "base-1");
    assert_eq!(report.new.version, "new-1");
    let counts = |s: &SetReport| -> Vec<u64> {
        ["allow", "review", "challenge", "block"]
            .iter()
            .map(|o| s.decisions[o])
            .collect()
    };
    assert_eq!(counts(base), [4, 1, 0, 1]);
    assert_eq!(counts(&report.new), [2, 1, 0, 3]);
    assert_eq!(report.new.timeout_decisions["challenge"], 1);
    assert_eq!(base.timeout_decisions.values().sum::<u64>(), 0);

    let changes = report.changes.as_ref().expect("changes");
    assert_eq!(changes.changed_events, 2);
    assert_eq!(changes.hits_changed_events, 0);
    assert_eq!(
        changes.transitions,
        [Transition {
            from: "allow",
            to: "block",
            events: 2,
            sample_event_ids: vec!["e2".into(), "e5".into()],
        }]
    );
    assert_eq!(changes.matrix["allow"]["allow"], 2);
    assert_eq!(changes.matrix["review"]["review"], 1);
    assert_eq!(changes.matrix["block"]["block"], 1);
    // The baseline has no sequence rule: the new set's timeout is unpaired.
    assert_eq!(changes.timeouts.paired, 0);
    assert_eq!(
        changes.timeouts.only_new,
        BTreeMap::from([("no_capture".to_string(), 1)])
    );
    assert!(changes.timeouts.only_baseline.is_empty());
    let deltas: Vec<(&str, u64, u64, i64)> = changes
        .rule_hit_deltas
        .iter()
        .map(|d| (d.rule.as_str(), d.baseline, d.new, d.delta))
        .collect();
    assert_eq!(
        deltas,
        [
            ("big", 1, 3, 2),
            ("velocity", 1, 3, 2),
            ("no_capture", 0, 1, 1)
        ]
    );

    // Every decision of the new set, the timeout where it fired in event time (before e3).
    let written = std::fs::read_to_string(fx.path("decisions.jsonl")).expect("read");
    let decisions: Vec<Decision> = written
        .lines()
        .map(|l| decode_decision(l.as_bytes(), InputFormat::Json).expect("decision"))
        .collect();
    let order: Vec<(&str, Trigger)> = decisions
        .iter()
        .map(|d| (d.event_id.as_str(), d.trigger))
        .collect();
    assert_eq!(
        order,
        [
            ("e1", Trigger::Event),
            ("e2", Trigger::Event),
            ("e1", Trigger::Timeout),
            ("e3", Trigger::Event),
            ("e4", Trigger::Event),
            ("e5", Trigger::Event),
            ("e6", Trigger::Event),
        ]
    );
    assert!(decisions.iter().all(|d| &*d.ruleset_version == "new-1"));
    assert!(render_human(&report).contains("bad record at line 5"));
}

#[test]
fn protobuf_files_replay_like_json_and_bad_records_are_numbered() {
    let fx = Fixture::new();
    let mut pb = Vec::new();
    let mut record = 0;
    for line in crafted_lines() {
        if line.is_empty() {
            continue;
        }
        record += 1;
        let bytes = match decode_event(line.as_bytes(), InputFormat::Json, 1 << 16) {
            Ok(event) => encode_event(&event, OutputFormat::Protobuf),
            Err(_) => b"\xff\xff garbage".to_vec(),
        };
        prost::encoding::encode_varint(bytes.len() as u64, &mut pb);
        pb.extend_from_slice(&bytes);
    }
    assert_eq!(record, 7);
    // A truncated last record: announced 50 bytes, 3 present.
    pb.extend_from_slice(&[50, 1, 2, 3]);
    std::fs::write(fx.path("events.pb"), &pb).expect("write");
    let mut options = fx.options("events.pb");
    options.decisions_out = None;
    let report = backtest(&options).expect("backtest");
    assert_eq!(report.events, 6);
    assert_eq!(report.bad_records, 2);
    assert_eq!(report.bad_record_samples[0].line, 5);
    assert_eq!(report.bad_record_samples[1].line, 8);
    assert!(report.bad_record_samples[1].error.contains("truncated"));
    let changes = report.changes.expect("changes");
    assert_eq!(changes.changed_events, 2);
}

#[test]
fn timeouts_are_paired_by_rule_and_key() {
    let fx = Fixture::new();
    let seq = |within: &str, outcome: &str| {
        format!(
            "version \"{outcome}\"\nrule no_capture after type == \"authorization\" expect type == \"capture\" with same txn_id within {within} then {outcome}\n"
        )
    };
    std::fs::write(fx.path("base.veto"), seq("2s", "review")).expect("write");
    std::fs::write(fx.path("new.veto"), seq("5s", "challenge")).expect("write");
    let capture = |id: &str, at_ms: i64, txn: &str| {
        format!(
            r#"{{"event_id":"{id}","type":"capture","event_time_ms":{},"card_id":"c","txn_id":"{txn}","amount":"1.00","currency":"EUR"}}"#,
            1_767_225_600_000 + at_ms
        )
    };
    let lines = [
        event_line("e1", "c1", 0, "10.00", Some("t1")),
        event_line("e2", "c2", 1, "10.00", Some("t2")),
        capture("e3", 3_000, "t2"),
        event_line("e4", "c3", 10, "10.00", Some("t3")),
        capture("e5", 10_500, "t3"),
    ];
    std::fs::write(fx.path("events.jsonl"), lines.join("\n")).expect("write");
    let report = backtest(&fx.options("events.jsonl")).expect("backtest");
    let t = report.changes.expect("changes").timeouts;
    // t1 times out in both (review at 2 s, challenge at 5 s); t2's capture at 3 s is too late
    // for the baseline only; t3 is captured in time by both.
    assert_eq!((t.paired, t.changed), (1, 1));
    assert_eq!(t.matrix["review"]["challenge"], 1);
    assert_eq!(
        t.transitions,
        [Transition {
            from: "review",
            to: "challenge",
            events: 1,
            sample_event_ids: vec!["e1".into()],
        }]
    );
    assert_eq!(
        t.only_baseline,
        BTreeMap::from([("no_capture".to_string(), 1)])
    );
    assert!(t.only_new.is_empty());
    let text = render_human(&backtest(&fx.options("events.jsonl")).expect("backtest"));
    assert!(
        text.contains("timeouts paired by rule and key: 1 (1 changed outcome)")
            && text.contains("only in baseline: no_capture (1)"),
        "{text}"
    );
}

#[test]
fn external_tags_are_applied_in_event_time() {
    let fx = Fixture::new();
    std::fs::write(
        fx.path("new.veto"),
        "version \"t-1\"\nrule known_fraudster when user_id has tag \"fraudster\" then block\n",
    )
    .expect("write");
    let t0 = 1_767_225_600_000i64;
    let ev = |id: &str, at_s: i64| {
        format!(
            r#"{{"event_id":"{id}","type":"authorization","event_time_ms":{},"user_id":"u1","amount":"5.00","currency":"EUR"}}"#,
            t0 + at_s * 1000
        )
    };
    let lines: Vec<String> = [("e0", 0), ("e1", 2), ("e2", 3), ("e3", 5), ("e4", 9)]
        .iter()
        .map(|(id, at)| ev(id, *at))
        .collect();
    std::fs::write(fx.path("events.jsonl"), lines.join("\n")).expect("write");
    // Out of order in the file: set at 1 s until 4 s, removed at 8 s; set again at 5 s.
    let tag = |at_s: i64, extra: &str| {
        format!(
            r#"{{"event_time_ms":{},"entity_kind":"user","entity_value":"u1","tag":"fraudster"{extra}}}"#,
            t0 + at_s * 1000
        )
    };
    let tags = [
        tag(8, r#","remove":true"#),
        tag(1, &format!(r#","expires_at_ms":{}"#, t0 + 2_500)),
        tag(3, ""),
        String::new(),
        tag(60, ""),
    ];
    std::fs::write(fx.path("tags.jsonl"), tags.join("\n")).expect("write");
    let mut options = fx.options("events.jsonl");
    options.tags = Some(fx.path("tags.jsonl"));
    let report = backtest(&options).expect("backtest");
    let decisions: Vec<(String, &'static str)> =
        std::fs::read_to_string(fx.path("decisions.jsonl"))
            .expect("read")
            .lines()
            .map(|l| {
                let d = decode_decision(l.as_bytes(), InputFormat::Json).expect("decision");
                (d.event_id, d.outcome.name())
            })
            .collect();
    let want = [
        ("e0", "allow"), // before the first update
        ("e1", "block"), // set at 1 s, expires at 2.5 s
        ("e2", "block"), // set again at 3 s
        ("e3", "block"),
        ("e4", "allow"), // removed at 8 s
    ];
    let want: Vec<(String, &str)> = want.iter().map(|(e, o)| (e.to_string(), *o)).collect();
    assert_eq!(decisions, want);
    let summary = report.tags.expect("tags summary");
    assert_eq!(
        (summary.updates, summary.applied, summary.refused),
        (4, 3, 0)
    );
    assert_eq!(summary.refused_baseline, Some(0));
    // Without --tags the same events are all allowed.
    let mut options = fx.options("events.jsonl");
    options.decisions_out = None;
    assert_eq!(
        backtest(&options).expect("backtest").new.decisions["block"],
        0
    );

    std::fs::write(fx.path("tags.jsonl"), "{\"event_time_ms\":1}\n").expect("write");
    let mut options = fx.options("events.jsonl");
    options.tags = Some(fx.path("tags.jsonl"));
    let err = backtest(&options).expect_err("bad tags").to_string();
    assert!(
        err.starts_with("--tags ") && err.contains("tags.jsonl:1:1: "),
        "{err}"
    );
}

#[test]
fn a_missing_file_and_a_bad_rule_file_are_errors_not_panics() {
    let fx = Fixture::new();
    let err = backtest(&fx.options("absent.jsonl")).expect_err("missing file");
    assert!(err.to_string().contains("absent.jsonl"), "{err}");
    std::fs::write(fx.path("x.txt"), "").expect("write");
    let err = backtest(&fx.options("x.txt")).expect_err("unknown extension");
    assert!(matches!(err, BacktestError::UnknownFormat(_)), "{err}");
    std::fs::write(fx.path("new.veto"), "rule broken when then block\n").expect("write");
    std::fs::write(fx.path("e.jsonl"), "").expect("write");
    let err = backtest(&fx.options("e.jsonl")).expect_err("bad rules");
    assert!(
        err.to_string().starts_with("--rules rule files rejected"),
        "{err}"
    );
}

/// The report without its timing.
fn untimed(mut report: Report) -> Report {
    report.seconds = 0.0;
    report.events_per_second = 0.0;
    report.events_file = String::new();
    report
}

#[test]
fn topic_dumps_replay_like_json_lines() {
    let fx = Fixture::new();
    let events: Vec<String> = crafted_lines()
        .into_iter()
        .filter(|l| l.starts_with('{') && !l.starts_with("{not"))
        .collect();
    std::fs::write(fx.path("plain.jsonl"), events.join("\n")).expect("write");
    let mut plain = fx.options("plain.jsonl");
    plain.decisions_out = None;
    let want = untimed(backtest(&plain).expect("plain"));
    assert_eq!(want.events, 6);

    // `kafka-console-consumer --property print.key=true` (or `kcat -K '\t'`): key, tab, value;
    // a record without a key prints `null` (the console consumer) or nothing (kcat).
    let keyed: Vec<String> = events
        .iter()
        .enumerate()
        .map(|(i, l)| match i % 3 {
            0 => format!("c{i}\t{l}"),
            1 => format!("null\t{l}"),
            _ => format!("\t{l}"),
        })
        .collect();
    std::fs::write(fx.path("keyed.jsonl"), keyed.join("\n") + "\n").expect("write");
    let mut options = fx.options("keyed.jsonl");
    options.decisions_out = None;
    assert_eq!(untimed(backtest(&options).expect("keyed")), want);

    // `kcat -C -t payments -e -f '%S %s\n'`: length, space, value, newline; protobuf and JSON
    // values alike.
    let mut dump = Vec::new();
    for (i, line) in events.iter().enumerate() {
        let value = if i % 2 == 0 {
            let event = decode_event(line.as_bytes(), InputFormat::Json, 1 << 16).expect("event");
            encode_event(&event, OutputFormat::Protobuf)
        } else {
            line.clone().into_bytes()
        };
        dump.extend_from_slice(format!("{} ", value.len()).as_bytes());
        dump.extend_from_slice(&value);
        dump.push(b'\n');
    }
    std::fs::write(fx.path("events.kcat"), &dump).expect("write");
    let mut options = fx.options("events.kcat");
    options.decisions_out = None;
    assert_eq!(untimed(backtest(&options).expect("kcat")), want);

    // Bad records count with a reason: a null value (tombstone; `-Z` prints it as NULL), an
    // undecodable value, then a length that is not a number, which ends the readable part.
    let mut bad = dump.clone();
    bad.extend_from_slice(b"-1 \n-1 NULL\n4 \xff\xfe\xfd\xfc\nxyz {\"event_id\":\"late\"}\n");
    bad.extend_from_slice(&dump);
    std::fs::write(fx.path("bad.kcat"), &bad).expect("write");
    let mut options = fx.options("bad.kcat");
    options.decisions_out = None;
    let report = backtest(&options).expect("bad kcat");
    assert_eq!(report.events, 6);
    assert_eq!(report.bad_records, 4, "{:?}", report.bad_record_samples);
    let samples: Vec<(u64, &str)> = report
        .bad_record_samples
        .iter()
        .map(|b| (b.line, b.error.as_str()))
        .collect();
    assert_eq!(samples[0].0, 7);
    assert!(samples[0].1.contains("null value"), "{samples:?}");
    assert_eq!(samples[1].0, 8);
    assert_eq!(samples[2].0, 9);
    assert_eq!(samples[3].0, 10);
    assert!(
        samples[3].1.contains("expected a decimal length"),
        "{samples:?}"
    );
    assert!(
        samples[3].1.contains("the rest of the file is skipped"),
        "{samples:?}"
    );

    // A record cut short, and a record not followed by a newline.
    for (tail, want) in [
        (&b"100 {\"event_id\""[..], "truncated record"),
        (&b"2 {}x"[..], "no newline after a record"),
    ] {
        let mut cut = dump.clone();
        cut.extend_from_slice(tail);
        std::fs::write(fx.path("cut.kcat"), &cut).expect("write");
        let mut options = fx.options("cut.kcat");
        options.decisions_out = None;
        let report = backtest(&options).expect("cut kcat");
        assert_eq!(report.events, 6);
        assert_eq!(report.bad_records, 1);
        assert!(
            report.bad_record_samples[0].error.contains(want),
            "{report:?}"
        );
    }
}
