//! Shadow rule sets on the whole service (`veto::service::serve` on rdkafka's MockCluster): shadow
//! decisions land on the shadow topic, and `veto backtest` decides the same events the same way.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::Message;
use veto::config::Config;
use veto::event::{
    decode_decision, encode_event, Decision, InputFormat, Outcome, OutputFormat, PaymentEvent,
    Trigger,
};

use support::*;

fn config(brokers: &str, data_dir: &Path, shadow: &[PathBuf]) -> Config {
    let mut config = Config::default();
    config.kafka.brokers = brokers.into();
    config.kafka.group_id = "veto-test".into();
    config.rules.paths = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/payments.veto")];
    config.rules.shadow_paths = shadow.to_vec();
    config.store.data_dir = data_dir.to_path_buf();
    config.telemetry.listen = "127.0.0.1:0".parse().expect("addr");
    config
}

/// Runs the service on `config` until `expected` event decisions (live or shadow) were read.
fn run_until(config: Config, consumer: &BaseConsumer, expected: usize) -> (Vec<Decision>, u64) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (_requests_tx, requests) = veto::reload::requests();
    let service = runtime.spawn(veto::service::serve(config, requests, async move {
        let _ = stop_rx.await;
    }));
    let mut decisions = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while decisions
        .iter()
        .filter(|d: &&Decision| d.trigger == Trigger::Event)
        .count()
        < expected
    {
        assert!(Instant::now() < deadline, "timed out: {decisions:?}");
        if service.is_finished() {
            let ended = runtime.block_on(service).expect("join");
            panic!("the service stopped early: {ended:?}");
        }
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let payload = m.payload().expect("payload");
            decisions.push(decode_decision(payload, InputFormat::Auto).expect("decision"));
        }
    }
    let _ = stop_tx.send(());
    let summary = runtime
        .block_on(service)
        .expect("join")
        .expect("service ends cleanly");
    (decisions, summary.events_decided)
}

/// A shadow set beside the live one: live decisions on `decisions`, the shadow's (`shadow =
/// true`, its own version and outcomes) on `decisions-shadow`; the live outcomes are unchanged.
#[test]
fn shadow_decisions_land_on_the_shadow_topic() {
    let (_cluster, brokers) = start_mock_broker(1);
    let data = tempfile::tempdir().expect("tempdir");
    let shadow_file = data.path().join("candidate.veto");
    std::fs::write(
        &shadow_file,
        "version \"candidate-1\"\n\
         feature card_auths_10m = count() by card_id over 10m where type == \"authorization\"\n\
         rule stricter_velocity when type == \"authorization\" and card_auths_10m > 2 then block\n",
    )
    .expect("write shadow rules");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "test-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer
        .subscribe(&["decisions", "decisions-shadow"])
        .expect("subscribe");
    let events: Vec<PaymentEvent> = (0..4)
        .map(|i| auth(&format!("a-{i}"), "c-1", i * 10))
        .collect();
    let messages: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|e| ("c-1".to_string(), encode_event(e, OutputFormat::Protobuf)))
        .collect();
    produce_raw(&brokers, &messages);

    // Each event yields a live and a shadow decision: wait for both.
    let config = config(&brokers, data.path(), &[shadow_file]);
    let (decisions, decided) = run_until(config, &consumer, 2 * events.len());
    assert_eq!(decided, events.len() as u64);
    let (shadow, live): (Vec<&Decision>, Vec<&Decision>) = decisions.iter().partition(|d| d.shadow);
    assert_eq!(live.len(), events.len(), "{decisions:?}");
    assert_eq!(shadow.len(), events.len(), "{decisions:?}");
    assert!(live
        .iter()
        .all(|d| &*d.ruleset_version != "candidate-1" && d.outcome != Outcome::Block));
    assert!(shadow.iter().all(|d| &*d.ruleset_version == "candidate-1"));
    let shadow_outcome = |id: &str| shadow.iter().find(|d| d.event_id == id).map(|d| d.outcome);
    assert_eq!(shadow_outcome("a-1"), Some(Outcome::Allow));
    assert_eq!(shadow_outcome("a-2"), Some(Outcome::Block));
    assert_eq!(shadow_outcome("a-3"), Some(Outcome::Block));
}

/// The same events through `veto run` (the service on MockCluster, one partition so the order is
/// the file's) and through `veto backtest`: identical event-triggered decisions, for the live
/// set and for the shadow set. Timeout decisions are left out: live timers run on processing
/// time, backtest timers on event time (docs/decisions.md).
#[test]
fn backtest_decides_recorded_events_exactly_like_the_service() {
    let (_cluster, brokers) = start_mock_broker(1);
    let data = tempfile::tempdir().expect("tempdir");
    let shadow_file = data.path().join("candidate.veto");
    let live_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/payments.veto");
    // The candidate: the shipped set with a stricter velocity threshold (and without its
    // tests, which pin the old threshold).
    let shipped = std::fs::read_to_string(&live_file).expect("read shipped rules");
    let tests_start = shipped.find("\ntest ").expect("the shipped set has tests");
    let candidate = shipped[..tests_start]
        .replace("card_auths_10m > 5", "card_auths_10m > 2")
        .replace("version \"payments-", "version \"candidate-");
    std::fs::write(&shadow_file, candidate).expect("write candidate");
    // Lists are read relative to the rule file.
    let lists = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/lists");
    std::fs::create_dir(data.path().join("lists")).expect("mkdir");
    for entry in std::fs::read_dir(&lists).expect("lists") {
        let entry = entry.expect("entry");
        std::fs::copy(
            entry.path(),
            data.path().join("lists").join(entry.file_name()),
        )
        .expect("copy list");
    }

    let events: Vec<PaymentEvent> = veto::synth::Synth::new(veto::synth::SynthConfig {
        seed: 7,
        users: 40,
        merchants: 10,
        fraud_rate: 0.3,
        start_ms: T0,
        ..veto::synth::SynthConfig::default()
    })
    .take(400)
    .collect();
    let events_file = data.path().join("events.jsonl");
    let mut jsonl = Vec::new();
    for e in &events {
        jsonl.extend_from_slice(&encode_event(e, OutputFormat::Json));
        jsonl.push(b'\n');
    }
    std::fs::write(&events_file, jsonl).expect("write events");
    let messages: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|e| {
            let key = e.user_id.clone().unwrap_or_default();
            (key, encode_event(e, OutputFormat::Protobuf))
        })
        .collect();
    produce_raw(&brokers, &messages);

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "test-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer
        .subscribe(&["decisions", "decisions-shadow"])
        .expect("subscribe");
    let config = config(
        &brokers,
        &data.path().join("store"),
        std::slice::from_ref(&shadow_file),
    );
    let (decisions, _) = run_until(config, &consumer, 2 * events.len());

    let backtest = |rules: &Path, out: &str| -> Vec<Decision> {
        let out = data.path().join(out);
        let report = veto::backtest::backtest(&veto::backtest::BacktestOptions {
            rules: vec![rules.to_path_buf()],
            baseline: Vec::new(),
            events: events_file.clone(),
            format: None,
            decisions_out: Some(out.clone()),
            samples: 5,
            progress: false,
            ..Default::default()
        })
        .expect("backtest");
        assert_eq!(report.events, events.len() as u64);
        assert_eq!(report.bad_records, 0);
        std::fs::read_to_string(out)
            .expect("decisions file")
            .lines()
            .map(|l| decode_decision(l.as_bytes(), InputFormat::Json).expect("decision"))
            .collect()
    };
    // What may differ: wall-clock stamps and the shadow flag (backtest decisions are the set's own).
    let comparable = |d: &Decision| {
        (
            d.event_id.clone(),
            d.txn_id.clone(),
            d.outcome,
            d.score,
            d.hits.clone(),
            d.ruleset_version.clone(),
        )
    };
    let event_decisions = |ds: &[Decision], shadow: bool| -> Vec<_> {
        ds.iter()
            .filter(|d| d.trigger == Trigger::Event && d.shadow == shadow)
            .map(comparable)
            .collect()
    };
    let service_live = event_decisions(&decisions, false);
    let service_shadow = event_decisions(&decisions, true);
    assert_eq!(service_live.len(), events.len());
    let backtest_live = event_decisions(&backtest(&live_file, "live.jsonl"), false);
    let backtest_shadow = event_decisions(&backtest(&shadow_file, "shadow.jsonl"), false);
    assert_eq!(service_live, backtest_live);
    assert_eq!(service_shadow, backtest_shadow);
    // The workload exercises the rules: not everything is allowed, and the sets disagree somewhere.
    assert!(service_live.iter().any(|d| d.2 != Outcome::Allow));
    assert_ne!(service_live, service_shadow);
}
