//! The whole service (`veto::service::serve`: real rules, tag store, timers, pipeline) on rdkafka's
//! MockCluster: one decision per event, scripted outcomes, dead letters, and state that survives a
//! graceful restart without counting anything twice; in both delivery modes (exactly-once runs
//! the transactional protocol against the mock's transaction coordinator).

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::Message;
use veto::config::{Config, Delivery};
use veto::event::{
    decode_dead_letter, decode_decision, encode_event, Decision, InputFormat, Outcome,
    OutputFormat, PaymentEvent, Trigger,
};
use veto::store::{FeatureSpec, StoreConfig, TagStore};

use support::*;

fn capture_of(e: &PaymentEvent) -> PaymentEvent {
    PaymentEvent {
        event_id: format!("{}-cap", e.event_id),
        kind: "capture".into(),
        event_time_ms: e.event_time_ms + 100,
        ..e.clone()
    }
}

fn config(brokers: &str, data_dir: &Path, delivery: Delivery) -> Config {
    let mut config = Config::default();
    config.kafka.delivery = delivery;
    config.kafka.brokers = brokers.into();
    config.kafka.group_id = "veto-test".into();
    config.rules.paths = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/payments.veto")];
    config.store.data_dir = data_dir.to_path_buf();
    config.telemetry.listen = "127.0.0.1:0".parse().expect("addr");
    // The mock's group coordinator waits a session timeout (minus 1 s) before it rebalances a
    // group whose member left, i.e. before the restarted service gets its partitions back.
    config.kafka.librdkafka = [
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    config
}

/// The service running in-process (`veto::service::serve`) until [`Service::stop`].
struct Service {
    runtime: tokio::runtime::Runtime,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<veto::pipeline::RunSummary>>,
}

impl Service {
    fn start(brokers: &str, data_dir: &Path, delivery: Delivery) -> Service {
        // Veto's own log lines, shown when the test fails.
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_test_writer()
            .try_init();
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (_requests_tx, requests) = veto::reload::requests();
        let task = runtime.spawn(veto::service::serve(
            config(brokers, data_dir, delivery),
            requests,
            async move {
                let _ = stop_rx.await;
            },
        ));
        Service {
            runtime,
            stop,
            task,
        }
    }

    /// Reads decisions into `decisions` until it holds `expected` event decisions.
    fn read_until(&self, consumer: &BaseConsumer, decisions: &mut Vec<Decision>, expected: usize) {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(120);
        while decisions
            .iter()
            .filter(|d: &&Decision| d.trigger == Trigger::Event)
            .count()
            < expected
        {
            assert!(
                !self.task.is_finished(),
                "the service ended before deciding everything; read {decisions:?}"
            );
            if Instant::now() >= deadline {
                let metrics = veto::service::metrics_handle().expect("metrics").render();
                let pipeline: Vec<&str> = metrics
                    .lines()
                    .filter(|l| l.starts_with("veto_") && !l.contains("_bucket"))
                    .collect();
                panic!(
                    "timed out after {:?}; read {decisions:?}; metrics:\n{}",
                    started.elapsed(),
                    pipeline.join("\n")
                );
            }
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let payload = m.payload().expect("payload");
                decisions.push(decode_decision(payload, InputFormat::Auto).expect("decision"));
            }
        }
    }

    /// Shuts the service down; it must end cleanly.
    fn stop(self) -> veto::pipeline::RunSummary {
        let _ = self.stop.send(());
        self.runtime
            .block_on(self.task)
            .expect("join")
            .expect("service ends cleanly")
    }
}

/// Runs the service until `expected` event decisions have been published, then shuts it down.
fn run_until(
    brokers: &str,
    data_dir: &Path,
    delivery: Delivery,
    consumer: &BaseConsumer,
    expected: usize,
) -> Vec<Decision> {
    let service = Service::start(brokers, data_dir, delivery);
    let mut decisions = Vec::new();
    let started = Instant::now();
    service.read_until(consumer, &mut decisions, expected);
    eprintln!(
        "{delivery:?}: {} decisions after {:?}",
        decisions.len(),
        started.elapsed()
    );
    let summary = service.stop();
    assert!(summary.events_decided >= expected as u64);
    decisions
}

/// Reads whatever decisions arrive within `period`.
fn read_for(consumer: &BaseConsumer, period: Duration) -> Vec<Decision> {
    let deadline = Instant::now() + period;
    let mut out = Vec::new();
    while Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(
                decode_decision(m.payload().expect("payload"), InputFormat::Auto)
                    .expect("decision"),
            );
        }
    }
    out
}

#[test]
fn decides_every_event_once_and_restarts_without_double_counting() {
    decide_restart_and_count_once(Delivery::AtLeastOnce);
}

#[test]
fn exactly_once_mode_decides_every_event_once_across_a_restart() {
    let decisions = decide_restart_and_count_once(Delivery::ExactlyOnce);
    let mut per_event: HashMap<&str, usize> = HashMap::new();
    for d in decisions.iter().filter(|d| d.trigger == Trigger::Event) {
        *per_event.entry(d.event_id.as_str()).or_default() += 1;
    }
    assert!(
        per_event.values().all(|&n| n == 1),
        "an event decided twice across the restart: {per_event:?}"
    );
    // The decisions went through Kafka transactions (only this mode commits any).
    let metrics = veto::service::metrics_handle().expect("metrics").render();
    let committed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("veto_transactions_committed_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(committed >= 2.0, "transactions committed: {committed}");
}

/// Decides a scripted stream, restarts on the same data directory, decides one more event;
/// returns every decision read (both runs).
fn decide_restart_and_count_once(delivery: Delivery) -> Vec<Decision> {
    let (_cluster, brokers) = start_mock_broker(2);
    let data = tempfile::tempdir().expect("tempdir");
    let consumer = topic_reader(&brokers, "test-reader", "decisions");

    // Seven authorizations (each captured) on one card, one from a sanctioned country, one garbage message.
    let mut events = Vec::new();
    for i in 0..7 {
        let a = auth(&format!("velo-{i}"), "c-velo", i * 10);
        events.push(capture_of(&a));
        events.insert(events.len() - 1, a);
    }
    let mut kp = auth("kp-1", "c-kp", 5);
    kp.ip_country = Some("KP".into());
    events.push(capture_of(&kp));
    events.insert(events.len() - 1, kp);
    let mut messages: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|e| {
            let key = e.card_id.clone().unwrap_or_default();
            (key, encode_event(e, OutputFormat::Protobuf))
        })
        .collect();
    messages.push(("c-velo".into(), b"\xff\xfe not an event".to_vec()));
    produce_raw(&brokers, &messages);

    let mut decisions = run_until(&brokers, data.path(), delivery, &consumer, events.len());
    let by_id: HashMap<&str, Vec<&Decision>> = decisions
        .iter()
        .filter(|d| d.trigger == Trigger::Event)
        .fold(HashMap::new(), |mut m, d| {
            m.entry(d.event_id.as_str()).or_default().push(d);
            m
        });
    for e in &events {
        assert_eq!(
            by_id.get(e.event_id.as_str()).map(Vec::len),
            Some(1),
            "exactly one decision for {}",
            e.event_id
        );
    }
    let hits = |id: &str| -> Vec<String> {
        by_id[id][0]
            .hits
            .iter()
            .map(|h| h.rule.to_string())
            .collect()
    };
    assert!(!hits("velo-4").contains(&"card_velocity".to_string()));
    assert!(
        hits("velo-5").contains(&"card_velocity".to_string()),
        "6th auth in 10 min: {:?}",
        hits("velo-5")
    );
    assert_eq!(by_id["kp-1"][0].outcome, Outcome::Block);
    assert!(hits("kp-1").contains(&"sanctioned_geo".to_string()));

    // The garbage message is in the dead-letter topic with its reason.
    let dead = topic_reader(&brokers, "test-dead", "dead-letters");
    let deadline = Instant::now() + Duration::from_secs(20);
    let letter = loop {
        assert!(Instant::now() < deadline, "no dead letter");
        if let Some(Ok(m)) = dead.poll(Duration::from_millis(100)) {
            break decode_dead_letter(m.payload().expect("payload")).expect("dead letter");
        }
    };
    assert_eq!(letter.reason_code, "undecodable");
    assert_eq!(letter.source_topic, "payments");

    // Restart on the same data directory: one more authorization on the card.
    let eighth = auth("velo-7", "c-velo", 70);
    produce_raw(
        &brokers,
        &[(
            "c-velo".into(),
            encode_event(&eighth, OutputFormat::Protobuf),
        )],
    );
    let later = run_until(&brokers, data.path(), delivery, &consumer, 1);
    assert!(later.iter().any(|d| d.event_id == "velo-7"));

    // The checkpointed window counts each authorization once: 8, not 15.
    let store = TagStore::open(StoreConfig {
        data_dir: data.path().to_path_buf(),
        ..StoreConfig::default()
    })
    .expect("open store");
    store
        .restore()
        .expect("restore")
        .expect("a checkpoint exists");
    let report =
        veto::rules::load(&[Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/payments.veto")]);
    let rules = report.ruleset.expect("rules");
    let def = rules
        .features()
        .iter()
        .find(|f| &*f.name == "card_auths_10m")
        .expect("feature");
    let spec = FeatureSpec {
        id: def.fingerprint,
        agg: def.agg,
        by: def.by,
        window_ms: def.window_ms,
        resolution_ms: def.resolution_ms,
    };
    assert_eq!(
        store.feature_value(&spec, "c-velo", eighth.event_time_ms),
        Some(8.0)
    );
    // A short read for anything the restart decided again.
    decisions.extend(later);
    decisions.extend(read_for(&consumer, Duration::from_secs(2)));
    decisions
}

#[test]
fn a_partition_assigned_again_in_the_same_run_continues_where_the_state_stands() {
    rebalance_in_the_middle(Delivery::AtLeastOnce);
}

#[test]
fn a_partition_assigned_again_in_exactly_once_mode_continues_where_the_state_stands() {
    rebalance_in_the_middle(Delivery::ExactlyOnce);
}

/// Two runs on one data directory; in the second, a second group member joins and leaves
/// (two rebalances) between decided events: no event is decided twice.
fn rebalance_in_the_middle(delivery: Delivery) {
    let (_cluster, brokers) = start_mock_broker(2);
    let data = tempfile::tempdir().expect("tempdir");
    let consumer = topic_reader(&brokers, "test-reader", "decisions");
    let produce = |events: &[PaymentEvent]| {
        let messages: Vec<(String, Vec<u8>)> = events
            .iter()
            .map(|e| {
                let key = e.card_id.clone().unwrap_or_default();
                (key, encode_event(e, OutputFormat::Protobuf))
            })
            .collect();
        produce_raw(&brokers, &messages);
    };
    // Run 1 leaves a checkpoint behind (its offsets: after these two events).
    produce(&[auth("r-1", "c-1", 0), auth("r-2", "c-2", 1)]);
    run_until(&brokers, data.path(), delivery, &consumer, 2);

    // Run 2 restores it and decides two more events: the state moves past the checkpoint.
    let service = Service::start(&brokers, data.path(), delivery);
    produce(&[auth("r-3", "c-1", 2), auth("r-4", "c-2", 3)]);
    let mut decisions = Vec::new();
    service.read_until(&consumer, &mut decisions, 2);

    // A second member joins the group (rebalance: every partition revoked, some given to it)
    // and leaves (rebalance: all back to Veto). Each assignment must continue where the state
    // stands (after r-3 and r-4), neither from run 1's checkpoint nor from an older commit (the
    // mock refuses the revocation's commit: "RebalanceInProgress").
    let member: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "veto-test")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("member");
    member
        .subscribe(&["payments", "entity-tags"])
        .expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(60);
    while member.assignment().map_or(0, |a| a.count()) == 0 {
        assert!(
            Instant::now() < deadline,
            "the second member got no partition"
        );
        let _ = member.poll(Duration::from_millis(100));
        decisions.extend(read_for(&consumer, Duration::from_millis(10)));
    }
    member.unsubscribe();
    drop(member);
    // Once Veto owns every partition again, a new event is decided; anything replayed would
    // have been decided before it.
    produce(&[auth("r-5", "c-1", 4), auth("r-6", "c-2", 5)]);
    service.read_until(&consumer, &mut decisions, 4);
    decisions.extend(read_for(&consumer, Duration::from_secs(2)));
    service.stop();

    let mut per_event: HashMap<&str, usize> = HashMap::new();
    for d in decisions.iter().filter(|d| d.trigger == Trigger::Event) {
        *per_event.entry(d.event_id.as_str()).or_default() += 1;
    }
    assert_eq!(
        per_event.get("r-3").copied(),
        Some(1),
        "r-3 decided again after the rebalance: {per_event:?}"
    );
    assert_eq!(per_event.get("r-4").copied(), Some(1), "{per_event:?}");
    assert_eq!(
        per_event.get("r-1"),
        None,
        "run 1's events replayed: {per_event:?}"
    );
}
