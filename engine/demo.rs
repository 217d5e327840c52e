//! `veto demo`: the real service on an embedded Kafka broker (rdkafka's `MockCluster`), fed with
//! synthetic payments, printing a live summary of decisions until Ctrl-C.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::Message;

use crate::cli::DemoArgs;
use crate::config::Config;
use crate::event::{decode_decision, encode_event, InputFormat, Outcome, OutputFormat, Trigger};
use crate::service::{now_ms, serve};
use crate::synth::{Synth, SynthConfig};

const PAYMENTS: &str = "payments";
const TOPICS: [&str; 4] = [
    "entity-tags",
    "decisions",
    "dead-letters",
    "decisions-shadow",
];

/// Runs the demo until Ctrl-C (or `--seconds`).
pub fn run_demo(args: DemoArgs) -> anyhow::Result<()> {
    let cluster = MockCluster::new(1).context("start the embedded Kafka broker")?;
    cluster.create_topic(PAYMENTS, 4, 1)?;
    for topic in TOPICS {
        cluster.create_topic(topic, 1, 1)?;
    }
    let brokers = cluster.bootstrap_servers();
    let data_dir = tempfile::tempdir().context("create a scratch data directory")?;

    let mut config = Config::default();
    config.kafka.brokers = brokers.clone();
    config.kafka.group_id = "veto-demo".into();
    config.rules.paths = args.rules.clone();
    config.store.data_dir = data_dir.path().to_path_buf();
    config.telemetry.listen = args.listen;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let signals = crate::reload::listen_signals()?;
    let stop = Arc::new(AtomicBool::new(false));
    let producer = spawn_producer(brokers.clone(), args.rate, stop.clone())?;
    let summary = spawn_summary(brokers, stop.clone())?;
    println!(
        "veto demo: embedded broker, {} new payments/s, rules {:?}, metrics on http://{}/metrics — Ctrl-C to stop",
        args.rate, args.rules, args.listen
    );

    let seconds = args.seconds;
    let stop_signal = signals.stop;
    let shutdown = async move {
        match seconds {
            Some(s) => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(s)) => {}
                    _ = crate::reload::stopped(stop_signal) => {}
                }
            }
            None => crate::reload::stopped(stop_signal).await,
        }
    };
    let stop_producer = stop.clone();
    let result = runtime.block_on(async move {
        let shutdown = async move {
            shutdown.await;
            stop_producer.store(true, Ordering::SeqCst);
        };
        serve(config, signals.requests, shutdown).await
    });
    stop.store(true, Ordering::SeqCst);
    let _ = producer.join();
    let _ = summary.join();
    let run = result?;
    println!(
        "veto demo stopped: {} events decided, {} dead letters, {} timeout decisions",
        run.events_decided, run.dead_letters, run.timeout_decisions
    );
    Ok(())
}

/// Produces synthetic payments, paced so event time follows the wall clock.
fn spawn_producer(
    brokers: String,
    rate: f64,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "5")
        .create()
        .context("create the demo producer")?;
    let started_ms = now_ms();
    let synth = Synth::new(SynthConfig {
        seed: 7,
        users: 20_000,
        fraud_rate: 0.05,
        start_ms: started_ms,
        flows_per_sec: rate.max(1.0),
        ..SynthConfig::default()
    });
    let handle = std::thread::Builder::new()
        .name("demo-producer".into())
        .spawn(move || {
            let started = Instant::now();
            for event in synth {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let due = Duration::from_millis((event.event_time_ms - started_ms).max(0) as u64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
                let payload = encode_event(&event, OutputFormat::Protobuf);
                let key = event.card_id.clone().unwrap_or_default();
                let mut record = BaseRecord::to(PAYMENTS).key(&key).payload(&payload);
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            record = r;
                            producer.poll(Duration::from_millis(10));
                        }
                        Err((e, _)) => {
                            tracing::warn!(error = %e, "demo producer dropped an event");
                            break;
                        }
                    }
                }
                producer.poll(Duration::ZERO);
            }
            let _ = producer.flush(Duration::from_secs(5));
        })?;
    Ok(handle)
}

/// Consumes decisions and prints a summary line every two seconds.
fn spawn_summary(
    brokers: String,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "veto-demo-summary")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("create the demo summary consumer")?;
    consumer.subscribe(&["decisions"])?;
    let handle = std::thread::Builder::new()
        .name("demo-summary".into())
        .spawn(move || {
            let started = Instant::now();
            let mut tally = Tally::default();
            let mut last_print = Instant::now();
            while !stop.load(Ordering::SeqCst) {
                if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
                    if let Some(Ok(decision)) = message
                        .payload()
                        .map(|p| decode_decision(p, InputFormat::Auto))
                    {
                        tally.add(&decision);
                    }
                }
                if last_print.elapsed() >= Duration::from_secs(2) {
                    println!("{}", tally.line(started.elapsed()));
                    tally.latencies_us.clear();
                    last_print = Instant::now();
                }
            }
        })?;
    Ok(handle)
}

/// Running totals of the decisions seen by the demo.
#[derive(Default)]
struct Tally {
    decisions: u64,
    timeouts: u64,
    by_outcome: BTreeMap<Outcome, u64>,
    by_rule: BTreeMap<String, u64>,
    latencies_us: Vec<u32>,
}

impl Tally {
    fn add(&mut self, decision: &crate::event::Decision) {
        self.decisions += 1;
        if decision.trigger == Trigger::Timeout {
            self.timeouts += 1;
        }
        *self.by_outcome.entry(decision.outcome).or_default() += 1;
        for hit in &decision.hits {
            *self.by_rule.entry(hit.rule.to_string()).or_default() += 1;
        }
        if decision.trigger == Trigger::Event {
            self.latencies_us.push(decision.eval_latency_us);
        }
    }

    fn line(&mut self, elapsed: Duration) -> String {
        let rate = self.decisions as f64 / elapsed.as_secs_f64().max(0.001);
        let outcomes: Vec<String> = Outcome::ALL
            .iter()
            .map(|o| format!("{o} {}", self.by_outcome.get(o).copied().unwrap_or(0)))
            .collect();
        let mut rules: Vec<(&String, &u64)> = self.by_rule.iter().collect();
        rules.sort_by(|a, b| b.1.cmp(a.1));
        let top: Vec<String> = rules
            .iter()
            .take(3)
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        self.latencies_us.sort_unstable();
        let p99 = self
            .latencies_us
            .get(self.latencies_us.len().saturating_mul(99) / 100)
            .copied()
            .unwrap_or(0);
        format!(
            "[{:>4}s] decisions {} ({rate:.0}/s) | {} | timeouts {} | eval p99 {p99} µs | top rules: {}",
            elapsed.as_secs(),
            self.decisions,
            outcomes.join(", "),
            self.timeouts,
            top.join(", ")
        )
    }
}
