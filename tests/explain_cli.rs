//! `veto explain` as a user runs it, on the shipped rules and example events: an event that hits
//! a velocity rule and a tag rule, checked against `veto backtest`'s decision of the same event
//! and against a count made here from the events file; inline events; errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn veto(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_veto"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .expect("run veto")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const EVENTS: &str = "rules/examples/events.jsonl";
/// An authorization on a card tagged by `card_testing` earlier in the file.
const EVENT: &str = "ev-7-219";

fn explain_json(extra: &[&str]) -> Value {
    let mut args = vec!["explain", "--rules", "rules/", "--events", EVENTS];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--format", "json"]);
    let out = veto(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("explain prints JSON")
}

fn events() -> Vec<Value> {
    std::fs::read_to_string(repo(EVENTS))
        .expect("example events")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("event JSON"))
        .collect()
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|v| v.as_str().expect("a name").to_string())
        .collect()
}

#[test]
fn explains_a_velocity_and_tag_hit_as_the_backtest_decided_it() {
    let e = explain_json(&["--event-id", EVENT]);

    // The same event's decision in a full replay (`veto backtest`).
    let dir = tempfile::tempdir().expect("tempdir");
    let decisions = dir.path().join("decisions.jsonl");
    let out = veto(&[
        "backtest",
        "--rules",
        "rules/",
        "--events",
        EVENTS,
        "--quiet",
        "--decisions-out",
        decisions.to_str().expect("utf-8 path"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all_decisions: Vec<Value> = std::fs::read_to_string(&decisions)
        .expect("decisions")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("decision JSON"))
        .collect();
    let decided = all_decisions
        .iter()
        .find(|d| d["event_id"] == EVENT)
        .expect("the backtest decided the event");
    let backtest_hits: Vec<String> = decided["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|h| h["rule"].as_str().expect("rule").to_string())
        .collect();
    assert_eq!(e["outcome"], decided["outcome"]);
    assert_eq!(e["score"], decided["score"]);
    assert_eq!(names(&e["hits"]), backtest_hits);
    assert!(backtest_hits.contains(&"card_velocity".to_string()));
    assert!(backtest_hits.contains(&"card_testing_card_reused".to_string()));

    // Every rule's condition parts agree with the engine's hit, and only evaluated rules hit.
    let rules = e["rules"].as_array().expect("rules");
    assert!(rules.len() > 40, "every rule of the shipped set is listed");
    for r in rules {
        assert_eq!(
            r["when"]["result"], r["hit"],
            "rule {} explained as {} but the engine's hit is {}",
            r["name"], r["when"]["result"], r["hit"]
        );
        if r["hit"] == true {
            assert_eq!(r["evaluated"], true);
        }
    }

    // The velocity feature, counted here: authorizations of the card in the 10 minutes up to
    // and including the event (the window is event time, the event itself counted).
    let all = events();
    let at = all
        .iter()
        .position(|ev| ev["event_id"] == EVENT)
        .expect("event in file");
    let me = &all[at];
    let now = me["event_time_ms"].as_i64().expect("time");
    let card = me["card_id"].as_str().expect("card");
    let counted = all[..=at]
        .iter()
        .filter(|ev| {
            ev["type"] == "authorization"
                && ev["card_id"] == card
                && ev["event_time_ms"]
                    .as_i64()
                    .is_some_and(|t| t > now - 600_000)
        })
        .count();
    assert_eq!(e["replayed_events"], at as u64);
    let feature = e["features"]
        .as_array()
        .expect("features")
        .iter()
        .find(|f| f["name"] == "card_auths_10m")
        .expect("card_auths_10m listed");
    assert_eq!(feature["value"], counted.to_string());
    assert_eq!(feature["entity"], card);
    assert!(
        counted > 5,
        "card_velocity needs more than 5, counted {counted}"
    );

    // The tag rule read the card's tag, set by card_testing on an earlier event.
    let read = e["tags_read"]
        .as_array()
        .expect("tags_read")
        .iter()
        .find(|t| t["entity"] == "card_id" && t["tag"] == "card_testing")
        .expect("the card's card_testing tag was read");
    assert_eq!(read["value"], card);
    assert_eq!(read["present"], true);
    let tagged_before = all[..at].iter().any(|ev| {
        ev["card_id"] == card
            && all_decisions.iter().any(|d| {
                d["event_id"] == ev["event_id"]
                    && d["hits"]
                        .as_array()
                        .is_some_and(|h| h.iter().any(|h| h["rule"] == "card_testing"))
            })
    });
    assert!(
        tagged_before,
        "card_testing tagged the card on an earlier event"
    );

    // Score build-up: the hits' scores add up; the block threshold is met.
    let sum: i64 = rules
        .iter()
        .filter(|r| r["hit"] == true)
        .map(|r| r["score"].as_i64().expect("score"))
        .sum();
    assert_eq!(e["score"].as_i64(), Some(sum));
}

#[test]
fn human_output_shows_the_deciding_parts_with_their_values() {
    let out = veto(&[
        "explain",
        "--rules",
        "rules/",
        "--events",
        EVENTS,
        "--event-id",
        EVENT,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    for expected in [
        "HIT   card_velocity",
        "✓ card_auths_10m > 5",
        "✓ card_id has tag \"card_testing\"",
        "card_id \"card-t-200\" has tag \"card_testing\": yes",
        "rules/payments.veto:",
        "outcome BLOCK",
    ] {
        assert!(
            shown.contains(expected),
            "missing {expected:?} in:\n{shown}"
        );
    }
    // A missed rule shows the part that failed, with the value it read.
    assert!(
        shown.contains("✗ ip_cards_1h >= 5"),
        "a missed rule's failing part:\n{shown}"
    );
}

#[test]
fn an_inline_event_is_decided_after_the_history_and_missing_fields_are_named() {
    let all = events();
    let mut ev = all
        .iter()
        .find(|ev| ev["event_id"] == EVENT)
        .expect("event")
        .clone();
    ev["event_id"] = Value::from("inline-1");
    ev["event_time_ms"] = all.last().expect("events")["event_time_ms"].clone();
    let object = ev.as_object_mut().expect("object");
    object.remove("device_id");
    let inline = ev.to_string();
    let e = explain_json(&["--event", &inline]);
    assert_eq!(e["event_id"], "inline-1");
    assert_eq!(e["replayed_events"], all.len() as u64);
    let device = e["features"]
        .as_array()
        .expect("features")
        .iter()
        .find(|f| f["name"] == "device_users_24h")
        .expect("device feature");
    assert_eq!(device["entity"], Value::Null);
    assert_eq!(device["value"], Value::Null);

    // Without history the state is empty: no velocity.
    let out = veto(&["explain", "--rules", "rules/", "--event", &inline]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("state: 0 earlier events replayed"),
        "{shown}"
    );
    assert!(shown.contains("miss  card_velocity"), "{shown}");
    assert!(
        shown.contains("✗ device_users_24h >= 4    (device_users_24h = missing)"),
        "{shown}"
    );
}

#[test]
fn errors_name_the_problem() {
    let out = veto(&[
        "explain",
        "--rules",
        "rules/",
        "--events",
        EVENTS,
        "--event-id",
        "no-such-event",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("\"no-such-event\" is not in"), "{err}");

    let out = veto(&["explain", "--rules", "rules/", "--event", "{\"type\":1}"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--event:"),
        "{}",
        text(&out.stderr)
    );

    // Neither --event-id nor --event: a usage error from the argument parser.
    let out = veto(&["explain", "--rules", "rules/", "--events", EVENTS]);
    assert_eq!(out.status.code(), Some(2));
}
