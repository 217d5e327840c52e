//! Crash recovery on a real broker: `kill -9` at ten points of a 200k-event stream, a restart
//! after each; no event without a decision, every decision (duplicates included) equal to a
//! crash-free replay's, the same final state, and no `auth_without_capture` timer lost.
//! `VETO_CRASH_EVENTS` and `VETO_CRASH_KILLS` resize it. With `VETO_KAFKA__DELIVERY=exactly_once`
//! (and `VETO_KAFKA__TRANSACTIONAL_ID`, inherited by the `veto` processes) it runs exactly-once
//! mode and also checks that transactions committed; the mock broker does not hide aborted
//! transactions from readers, so duplicates are still counted, not rejected (docs/pipeline.md).

mod support;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rdkafka::consumer::BaseConsumer;
use rdkafka::Message;
use veto::decider::{Engine, EventTimeTimers};
use veto::event::{decode_decision, Decision, InputFormat, Outcome, PaymentEvent, Trigger};
use veto::store::{FeatureSpec, StoreConfig, TagStore};
use veto::synth::{Synth, SynthConfig};

use support::*;

/// How far production runs ahead of the decisions seen.
const STREAM_AHEAD: usize = 15_000;

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

fn kill_9(mut veto: Killed) {
    assert!(
        veto.0.try_wait().expect("wait").is_none(),
        "veto exited before it was killed"
    );
    veto.0.kill().expect("SIGKILL");
    veto.0.wait().expect("reap");
}

#[test]
fn kill_9_at_ten_points_loses_nothing_and_counts_nothing_twice() {
    let total = env_usize("VETO_CRASH_EVENTS", 200_000);
    let kills = env_usize("VETO_CRASH_KILLS", 10);
    // The broker: librdkafka's mock cluster, a Kafka-protocol broker the test process serves
    // over TCP to the `veto` processes it kills. tansu 0.6 (`VETO_CRASH_BROKER=tansu`) loses
    // records here: decisions it acknowledged never reach a consumer (docs/decisions.md).
    // One payments partition: the stream order is the decision order, so a replay after a
    // crash must reproduce every decision exactly (across partitions, entities shared by
    // several partitions may see events in another interleaving).
    let (_mock, _tansu, brokers) = if std::env::var("VETO_CRASH_BROKER").as_deref() == Ok("tansu") {
        let (tansu, brokers) = start_broker();
        create_topics(&brokers, 1);
        (None, Some(tansu), brokers)
    } else {
        let (mock, brokers) = start_mock_broker(1);
        (Some(mock), None, brokers)
    };
    let events: Vec<PaymentEvent> = Synth::new(SynthConfig {
        seed: 77,
        users: 3_000,
        ..SynthConfig::default()
    })
    .take(total)
    .collect();
    // The stream is produced while Veto runs (and dies), at most STREAM_AHEAD events ahead of
    // the decisions seen: the mock broker keeps only the newest ~5 MB of each partition.
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
    // A killed member never leaves its group, and tansu 0.6 does not expire it: a restart in
    // the same group may be assigned nothing. Each run therefore joins a fresh group, so every
    // restart starts where the state checkpoint says (there is no Kafka commit to fall back on).
    let config = |run: usize| {
        write_config_with(
            data.path(),
            &brokers,
            &format!("veto-crash-{run}"),
            &rules,
            "checkpoint_interval = \"300ms\"",
            &[],
        )
    };
    let consumer = decisions_reader(&brokers, "crash-reader");
    let mut seen = Seen::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let log_path = |i: usize| data.path().join(format!("veto-{i}.log"));
    let log = |i: usize| std::fs::File::create(log_path(i)).expect("log");

    // Each run is killed at a random instant 0.2–2 s after it got its partition.
    for i in 0..kills {
        feed(&seen, &mut produced);
        let veto = start_veto_logging(&config(i), log(i));
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

    let veto = start_veto_logging(&config(kills), log(kills));
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
    seen.read_for(&consumer, Duration::from_secs(2));

    // 1. every event has a decision, and every decision equals the crash-free one.
    let mut duplicated = 0;
    for e in &events {
        let got = seen
            .event
            .get(&e.event_id)
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
    assert!(
        duplicated > 0,
        "{kills} kills replayed nothing: the test did not crash mid-stream"
    );
    // 2. no timer lost: every authorization never captured got its timeout decision.
    assert!(
        !reference.never_captured.is_empty(),
        "the workload has uncaptured authorizations"
    );
    let logs: Vec<String> = (0..=kills)
        .map(|i| std::fs::read_to_string(log_path(i)).expect("log"))
        .collect();
    if std::env::var("VETO_KAFKA__DELIVERY").as_deref() == Ok("exactly_once") {
        let transactions: usize = logs
            .iter()
            .map(|log| log.matches("kafka transaction committed").count())
            .sum();
        assert!(
            transactions > 0,
            "exactly-once mode committed no transaction"
        );
        eprintln!("exactly-once mode: {transactions} transactions committed");
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
        "{total} events, {kills} kills: {duplicated} duplicate decisions (all identical), \
         {} never-captured authorizations timed out, {compared} feature values equal",
        reference.never_captured.len()
    );
}
