//! Crash recovery on Apache Kafka: `kill -9` of `veto run` at random points of a stream with
//! timers and tags in play, a restart after each, in both delivery modes.
//! - at-least-once: no event without a decision, every decision (duplicates included) equal to a
//!   crash-free replay's, no `auth_without_capture` timeout lost;
//! - exactly-once: an independent `read_committed` reader (the confluent-kafka Python client,
//!   `tests/compose/read_topic.py`) sees exactly one decision per event and at most one timeout
//!   decision per sequence, every never-captured authorization's among them;
//! - both: the final state equals the crash-free replay's.
//!
//! The default is 60,000 events and 5 kills per mode; `VETO_CRASH_EVENTS` and `VETO_CRASH_KILLS`
//! resize it (docs/kafka.md: the 200,000-event, 10-kill run). The Python client comes from
//! `$VETO_PYTHON` (tests/run.sh installs it), else `python3`.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::Message;
use veto::decider::{Engine, EventTimeTimers};
use veto::event::{decode_decision, Decision, InputFormat, Outcome, PaymentEvent, Trigger};
use veto::store::{FeatureSpec, StoreConfig, TagStore};
use veto::synth::{Synth, SynthConfig};

use support::*;

/// How far production runs ahead of the decisions seen (so the kills land mid-stream).
const STREAM_AHEAD: usize = 15_000;

/// The two modes run one after the other: each starts a broker and `veto` processes, and on two
/// cores side by side they would only slow each other down.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Delivery {
    AtLeastOnce,
    ExactlyOnce,
}

/// What must be identical between two decisions of one event.
type Verdict = (Outcome, Vec<String>, String);

fn verdict(d: &Decision) -> Verdict {
    (
        d.outcome,
        d.hits.iter().map(|h| h.rule.to_string()).collect(),
        d.ruleset_version.to_string(),
    )
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Everything read from the decisions topic.
#[derive(Default)]
struct Seen {
    event: HashMap<String, Vec<Verdict>>,
    timeouts: HashMap<String, usize>,
}

impl Seen {
    /// Reads decisions until `done` holds (panics after `limit`).
    /// Reads decisions for `span`.
    fn read_for(&mut self, consumer: &BaseConsumer, span: Duration) {
        let until = Instant::now() + span;
        self.read_until(consumer, span + Duration::from_secs(1), |_| {
            Instant::now() >= until
        });
    }

    fn read_until(
        &mut self,
        consumer: &BaseConsumer,
        limit: Duration,
        done: impl Fn(&Seen) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "timed out with {} events decided",
                self.event.len()
            );
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let d = decode_decision(m.payload().expect("payload"), InputFormat::Auto)
                    .expect("decision");
                match d.trigger {
                    Trigger::Event => self
                        .event
                        .entry(d.event_id.clone())
                        .or_default()
                        .push(verdict(&d)),
                    Trigger::Timeout => *self.timeouts.entry(d.event_id).or_default() += 1,
                }
            }
        }
    }
}

/// The crash-free reference: every event decided in stream order by an in-process engine.
struct Reference {
    verdicts: HashMap<String, Verdict>,
    /// Events whose `auth_without_capture` timer no capture ever cancels.
    never_captured: Vec<String>,
    engine: Engine,
}

fn reference(
    rules_path: &std::path::Path,
    events: &[PaymentEvent],
    dir: &std::path::Path,
) -> Reference {
    let rules = veto::reload::load_rules_blocking(&[rules_path.to_path_buf()]).expect("rules");
    let store = TagStore::open(StoreConfig {
        data_dir: dir.to_path_buf(),
        ..StoreConfig::default()
    })
    .expect("reference store");
    let timers = Arc::new(EventTimeTimers::default());
    let engine = Engine::new(rules, Arc::new(store), timers.clone());
    let verdicts = events
        .iter()
        .map(|e| (e.event_id.clone(), verdict(&engine.decide(e, 0).decision)))
        .collect();
    // Never asked for due timers until the end: what is left was never cancelled.
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

/// The live store as the final graceful stop left it on disk.
fn restored_store(dir: &std::path::Path) -> TagStore {
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

/// Veto's decisions as read by the test while it runs (progress), in `isolation.level`.
fn progress_reader(brokers: &str, delivery: Delivery) -> BaseConsumer {
    let isolation = match delivery {
        Delivery::AtLeastOnce => "read_uncommitted",
        Delivery::ExactlyOnce => "read_committed",
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "crash-reader")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", isolation)
        .create()
        .expect("consumer");
    consumer.subscribe(&["decisions"]).expect("subscribe");
    consumer
}

/// Every decision on the topic, read by the confluent-kafka client with `read_committed`:
/// `(trigger, event_id) → verdicts`, parsed from JSON with serde_json (not Veto's decoder).
fn independent_read_committed(brokers: &str) -> HashMap<(String, String), Vec<Verdict>> {
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
        "{python} tests/compose/read_topic.py failed ({}): {} (tests/run.sh installs confluent-kafka; \
         or set VETO_PYTHON)",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut seen: HashMap<(String, String), Vec<Verdict>> = HashMap::new();
    for line in out.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
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
    seen
}

fn kill_9(mut veto: Killed) {
    assert!(
        veto.0.try_wait().expect("wait").is_none(),
        "veto exited before it was killed"
    );
    veto.0.kill().expect("SIGKILL");
    veto.0.wait().expect("reap");
}

#[test]
fn at_least_once_kill_9_loses_nothing_and_counts_nothing_twice() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    crash_and_restart(Delivery::AtLeastOnce);
}

#[test]
fn exactly_once_kill_9_shows_a_read_committed_reader_each_decision_once() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    crash_and_restart(Delivery::ExactlyOnce);
}

fn crash_and_restart(delivery: Delivery) {
    let total = env_usize("VETO_CRASH_EVENTS", 60_000);
    let kills = env_usize("VETO_CRASH_KILLS", 5);
    // One payments partition: the stream order is the decision order, so a replay after a
    // crash must reproduce every decision exactly (across partitions, entities shared by
    // several partitions may see events in another interleaving).
    let kafka = Kafka::start();
    let brokers = kafka.brokers.clone();
    create_topics(&brokers, 1);
    let events: Vec<PaymentEvent> = Synth::new(SynthConfig {
        seed: 77,
        users: 3_000,
        ..SynthConfig::default()
    })
    .take(total)
    .collect();
    let mut produced = 0;
    let feed = |seen: &Seen, produced: &mut usize| {
        while *produced < total && *produced < seen.event.len() + STREAM_AHEAD {
            let end = (*produced + 5_000).min(total);
            produce_events(&brokers, &events[*produced..end]);
            *produced = end;
        }
    };

    let data = tempfile::tempdir().expect("tempdir");
    let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules/payments.veto");
    // Every run joins the same group: a restart resumes from the group's committed offsets and
    // the state checkpoint. A killed member never leaves the group; the broker expires it after
    // `session.timeout.ms`, so a short one lets the restart get the partition within seconds.
    let delivery_line = match delivery {
        Delivery::AtLeastOnce => "delivery = \"at_least_once\"",
        Delivery::ExactlyOnce => "delivery = \"exactly_once\"",
    };
    let config = write_config_with(
        data.path(),
        &brokers,
        "veto-crash",
        &rules,
        "checkpoint_interval = \"300ms\"",
        &[
            ("session.timeout.ms", "2000"),
            ("heartbeat.interval.ms", "300"),
        ],
    );
    // The kafka section gains the mode and JSON decisions (read back by the Python client).
    let text = std::fs::read_to_string(&config).expect("read config");
    std::fs::write(
        &config,
        text.replacen(
            "[kafka]\n",
            &format!("[kafka]\n{delivery_line}\noutput_format = \"json\"\n"),
            1,
        ),
    )
    .expect("write config");
    let consumer = progress_reader(&brokers, delivery);
    let mut seen = Seen::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let log_path = |i: usize| data.path().join(format!("veto-{i}.log"));
    let log = |i: usize| std::fs::File::create(log_path(i)).expect("log");

    // Each run is killed at a random instant 0.2–2 s after it got its partition.
    for i in 0..kills {
        feed(&seen, &mut produced);
        let veto = start_veto_logging(&config, log(i));
        wait_for_log(&log_path(i), "(\"payments\", 0)", Duration::from_secs(60));
        let kill_at = Instant::now() + Duration::from_millis(rng.random_range(200..2000));
        while Instant::now() < kill_at {
            seen.read_for(&consumer, Duration::from_millis(100));
            feed(&seen, &mut produced);
        }
        kill_9(veto);
        eprintln!("run {i} killed with {} events decided", seen.event.len());
    }

    let reference_dir = tempfile::tempdir().expect("tempdir");
    let reference = reference(&rules, &events, reference_dir.path());

    let veto = start_veto_logging(&config, log(kills));
    // Up and assigned before the checks can end the run: when the killed runs already decided
    // everything, an immediate SIGTERM would reach the process before its signal handlers.
    wait_for_log(
        &log_path(kills),
        "(\"payments\", 0)",
        Duration::from_secs(60),
    );
    let finished = |s: &Seen| {
        s.event.len() >= total
            && reference
                .never_captured
                .iter()
                .all(|id| s.timeouts.contains_key(id))
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    while !finished(&seen) {
        if Instant::now() > deadline {
            let missing: Vec<usize> = (0..total)
                .filter(|&i| !seen.event.contains_key(&events[i].event_id))
                .collect();
            panic!(
                "{} events without a decision (stream indexes {:?}...), {} of {} timeouts",
                missing.len(),
                &missing[..missing.len().min(20)],
                reference
                    .never_captured
                    .iter()
                    .filter(|id| seen.timeouts.contains_key(*id))
                    .count(),
                reference.never_captured.len()
            );
        }
        seen.read_for(&consumer, Duration::from_secs(1));
        feed(&seen, &mut produced);
    }
    sigterm_and_wait(veto);

    // 1. what a downstream reader sees: every event decided as the crash-free replay decided
    //    it; exactly once in exactly-once mode.
    let decisions = independent_read_committed(&brokers);
    let mut duplicated = 0;
    for e in &events {
        let got = decisions
            .get(&("event".to_string(), e.event_id.clone()))
            .unwrap_or_else(|| panic!("event {} has no decision", e.event_id));
        let want = &reference.verdicts[&e.event_id];
        duplicated += got.len() - 1;
        for g in got {
            assert_eq!(
                g, want,
                "decision of {} differs from the crash-free replay",
                e.event_id
            );
        }
    }
    let event_decisions = decisions.keys().filter(|(t, _)| t == "event").count();
    assert_eq!(
        event_decisions, total,
        "decisions for events never produced"
    );
    // 2. no timer lost: every authorization never captured got its timeout decision.
    assert!(
        !reference.never_captured.is_empty(),
        "the workload has uncaptured authorizations"
    );
    for id in &reference.never_captured {
        assert!(
            decisions.contains_key(&("timeout".to_string(), id.clone())),
            "no timeout decision for the never-captured authorization {id}"
        );
    }
    let timeouts: Vec<usize> = decisions
        .iter()
        .filter(|((t, _), _)| t == "timeout")
        .map(|(_, v)| v.len())
        .collect();
    let duplicate_timeouts: usize = timeouts.iter().map(|n| n - 1).sum();
    match delivery {
        Delivery::AtLeastOnce => assert!(
            duplicated > 0,
            "{kills} kills replayed nothing: the test did not crash mid-stream"
        ),
        Delivery::ExactlyOnce => {
            assert_eq!(
                duplicated, 0,
                "a read_committed reader saw duplicate decisions"
            );
            assert_eq!(
                duplicate_timeouts, 0,
                "a read_committed reader saw duplicate timeout decisions"
            );
        }
    }
    let logs: Vec<String> = (0..=kills)
        .map(|i| std::fs::read_to_string(log_path(i)).expect("log"))
        .collect();
    let transactions: usize = logs
        .iter()
        .map(|log| log.matches("kafka transaction committed").count())
        .sum();
    if delivery == Delivery::ExactlyOnce {
        assert!(
            transactions > 0,
            "exactly-once mode committed no transaction"
        );
    }
    let restored_timers = logs
        .iter()
        .filter(|log| log.contains("timers restored from checkpoint"))
        .count();
    assert!(
        restored_timers > 0,
        "no restart restored armed timers; restarts logged: {:?}",
        logs.iter()
            .flat_map(|l| l
                .lines()
                .filter(|l| l.contains("restored") || l.contains("checkpoint")))
            .collect::<Vec<_>>()
    );

    // 3. the final state equals the crash-free replay's.
    let live = restored_store(&data.path().join("state"));
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
            let got = live.feature_value(&spec, entity, now);
            assert_eq!(got, want, "feature {} of {entity}", def.name);
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
            }
        }
    }
    eprintln!(
        "{delivery:?} on Apache Kafka: {total} events, {kills} kills: {duplicated} duplicate \
         decisions (all identical), {} timeout decisions ({duplicate_timeouts} duplicates), all {} \
         never-captured authorizations among them, {transactions} transactions committed, \
         {compared} feature values equal",
        timeouts.len(),
        reference.never_captured.len()
    );
}
