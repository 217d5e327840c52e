//! The checks of tests/failover_kafka.rs: the uninterrupted reference run, the independent
//! `read_committed` reader and the comparison of the final state.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use veto::decider::{Engine, EventTimeTimers};
use veto::event::{Decision, Outcome, PaymentEvent, TagUpdate};
use veto::store::{FeatureSpec, StoreConfig, TagStore};

pub type Verdict = (Outcome, Vec<String>, String);

pub fn verdict(d: &Decision) -> Verdict {
    (
        d.outcome,
        d.hits.iter().map(|h| h.rule.to_string()).collect(),
        d.ruleset_version.to_string(),
    )
}

/// The uninterrupted reference: tags applied, then every event in stream order.
pub struct Reference {
    pub verdicts: HashMap<String, Verdict>,
    pub never_captured: Vec<String>,
    pub engine: Engine,
}

pub fn reference(
    rules: &Path,
    tags: &[TagUpdate],
    events: &[PaymentEvent],
    dir: &Path,
) -> Reference {
    let rules = veto::reload::load_rules_blocking(&[rules.to_path_buf()]).expect("rules");
    let store = TagStore::open(StoreConfig {
        data_dir: dir.to_path_buf(),
        ..StoreConfig::default()
    })
    .expect("reference store");
    let timers = Arc::new(EventTimeTimers::default());
    let engine = Engine::new(rules, Arc::new(store), timers.clone());
    for tag in tags {
        engine.apply_tag_update(tag).expect("tag");
    }
    let verdicts = events
        .iter()
        .map(|e| (e.event_id.clone(), verdict(&engine.decide(e, 0).decision)))
        .collect();
    let never_captured = timers
        .due(i64::MAX)
        .into_iter()
        .filter(|t| &*t.rule == "auth_without_capture")
        .map(|t| t.event_id)
        .collect();
    Reference {
        verdicts,
        never_captured,
        engine,
    }
}

/// Every decision on the topic as the confluent-kafka client reads it with `read_committed`,
/// and their total size in bytes.
pub fn independent_read_committed(
    brokers: &str,
) -> (HashMap<(String, String), Vec<Verdict>>, usize) {
    let python = std::env::var("VETO_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/compose/read_topic.py");
    let out = Command::new(&python)
        .arg(script)
        .args(["--brokers", brokers, "--topic", "decisions"])
        .args(["--isolation", "read_committed", "--timeout", "120"])
        .output()
        .expect("run tests/compose/read_topic.py");
    assert!(
        out.status.success(),
        "{python} tests/compose/read_topic.py failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut seen: HashMap<(String, String), Vec<Verdict>> = HashMap::new();
    let mut bytes = 0;
    for line in out.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        bytes += line.len();
        let d: serde_json::Value = serde_json::from_slice(line).expect("a JSON decision");
        let field = |k: &str| {
            d[k].as_str()
                .unwrap_or_else(|| panic!("{k} in {d}"))
                .to_string()
        };
        let outcome = match field("outcome").as_str() {
            "allow" => Outcome::Allow,
            "review" => Outcome::Review,
            "challenge" => Outcome::Challenge,
            "block" => Outcome::Block,
            other => panic!("outcome {other}"),
        };
        let hits = d["hits"]
            .as_array()
            .expect("hits")
            .iter()
            .map(|h| h["rule"].as_str().expect("rule").to_string())
            .collect();
        seen.entry((field("trigger"), field("event_id")))
            .or_default()
            .push((outcome, hits, field("ruleset_version")));
    }
    (seen, bytes)
}

pub fn restored_store(dir: &Path) -> TagStore {
    let store = TagStore::open(StoreConfig {
        data_dir: dir.to_path_buf(),
        ..StoreConfig::default()
    })
    .expect("open the live state");
    store
        .restore()
        .expect("restore")
        .expect("a checkpoint exists");
    store
}

/// Compares every feature value and rule tag of every entity; returns how many were compared.
pub fn compare_state(reference: &Reference, events: &[PaymentEvent], live: &TagStore) -> usize {
    let rule_set = reference.engine.rules();
    let now = events.iter().map(|e| e.event_time_ms).max().unwrap_or(0);
    let mut compared = 0;
    for def in rule_set.features() {
        let spec = FeatureSpec {
            id: def.fingerprint,
            agg: def.agg,
            by: def.by,
            window_ms: def.window_ms,
            resolution_ms: def.resolution_ms,
        };
        let entities: BTreeSet<&str> = events.iter().filter_map(|e| e.str_field(def.by)).collect();
        for entity in entities {
            let want = reference.engine.store().feature_value(&spec, entity, now);
            assert_eq!(
                live.feature_value(&spec, entity, now),
                want,
                "feature {} of {entity}",
                def.name
            );
            compared += 1;
        }
    }
    for rule in rule_set.rules() {
        for tag in &rule.tags {
            let entities: BTreeSet<&str> = events
                .iter()
                .filter_map(|e| e.str_field(tag.entity))
                .collect();
            for entity in entities {
                let want = reference
                    .engine
                    .store()
                    .has_tag(tag.entity, entity, &tag.tag, now);
                assert_eq!(
                    live.has_tag(tag.entity, entity, &tag.tag, now),
                    want,
                    "tag {} on {entity}",
                    tag.tag
                );
                compared += 1;
            }
        }
    }
    compared
}
