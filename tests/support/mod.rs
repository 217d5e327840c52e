//! Helpers shared by the tests that run the real `veto` binary on a real broker (Apache Kafka,
//! started by `tests/kafka/broker.sh`) or on librdkafka's mock cluster.
#![allow(dead_code)] // each test crate uses a different subset

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::Message;
use veto::event::{
    decode_decision, encode_event, InputFormat, OutputFormat, PaymentEvent, Trigger,
};

pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A single-node Apache Kafka (KRaft) in a temporary folder, run by `tests/kafka/broker.sh`
/// (which fetches Kafka with Maven once); stopped when dropped.
pub struct Kafka {
    dir: tempfile::TempDir,
    pub brokers: String,
}

fn broker_script(args: &[&std::ffi::OsStr]) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/broker.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("run tests/kafka/broker.sh");
    assert!(
        out.status.success(),
        "tests/kafka/broker.sh {args:?} failed with {}",
        out.status
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Kafka {
    /// Starts a fresh broker on free 127.0.0.1 ports and waits until it serves requests.
    pub fn start() -> Kafka {
        let dir = tempfile::Builder::new()
            .prefix("veto-kafka-")
            .tempdir()
            .expect("broker dir");
        let brokers = broker_script(&["start".as_ref(), dir.path().as_os_str()]);
        Kafka { dir, brokers }
    }

    /// `kill -9` of the broker process; its log dir stays for [`Kafka::restart`].
    pub fn kill_9(&self) {
        broker_script(&["kill".as_ref(), self.dir.path().as_os_str()]);
    }

    /// Starts the broker again on the same ports and log dir.
    pub fn restart(&self) {
        let brokers = broker_script(&["start".as_ref(), self.dir.path().as_os_str()]);
        assert_eq!(
            brokers, self.brokers,
            "a restarted broker keeps its address"
        );
    }

    /// The broker's own log (for a failing test's message).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("broker.log")
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/broker.sh");
        let _ = Command::new("bash")
            .arg(script)
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// A fresh Apache Kafka broker and its bootstrap address.
pub fn start_broker() -> (Kafka, String) {
    let kafka = Kafka::start();
    let brokers = kafka.brokers.clone();
    (kafka, brokers)
}

/// A broker for tests that kill Veto: librdkafka's mock cluster, served over TCP by the test
/// process, with the default config's topics (`payments` gets `payments_partitions`).
pub fn start_mock_broker(
    payments_partitions: i32,
) -> (
    rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    String,
) {
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    cluster
        .create_topic("payments", payments_partitions, 1)
        .expect("payments topic");
    for topic in [
        "entity-tags",
        "decisions",
        "dead-letters",
        "decisions-shadow",
        "veto-control",
    ] {
        cluster.create_topic(topic, 1, 1).expect("topic");
    }
    let brokers = cluster.bootstrap_servers();
    (cluster, brokers)
}

/// Creates the topics of the default config; `payments` gets `payments_partitions` partitions.
pub fn create_topics(brokers: &str, payments_partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin");
    let topics = [
        NewTopic::new("payments", payments_partitions, TopicReplication::Fixed(1)),
        NewTopic::new("entity-tags", 1, TopicReplication::Fixed(1)),
        NewTopic::new("decisions", 1, TopicReplication::Fixed(1)),
        NewTopic::new("dead-letters", 1, TopicReplication::Fixed(1)),
        NewTopic::new("decisions-shadow", 1, TopicReplication::Fixed(1)),
    ];
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let results = runtime
        .block_on(admin.create_topics(&topics, &AdminOptions::new()))
        .expect("create topics");
    for r in results {
        r.expect("topic created");
    }
}

pub fn start_veto(config: &std::path::Path) -> Killed {
    start_veto_logging(config, Stdio::inherit())
}

pub fn start_veto_logging(config: &std::path::Path, stderr: impl Into<Stdio>) -> Killed {
    Killed(
        Command::new(env!("CARGO_BIN_EXE_veto"))
            .args(["run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start veto"),
    )
}

pub fn write_config(
    dir: &std::path::Path,
    brokers: &str,
    group: &str,
    rules: &std::path::Path,
) -> PathBuf {
    write_config_with(dir, brokers, group, rules, "", &[])
}

/// Like [`write_config`], with `store_extra` lines added to the `[store]` section and
/// `librdkafka` properties in `[kafka.librdkafka]`. `rules.swap_deadline` is 30 s: a reload
/// in a debug build on a loaded CI machine can pass the 500-ms default and be abandoned
/// (its own test sets it to 1 ms).
pub fn write_config_with(
    dir: &std::path::Path,
    brokers: &str,
    group: &str,
    rules: &std::path::Path,
    store_extra: &str,
    librdkafka: &[(&str, &str)],
) -> PathBuf {
    let librdkafka: String = librdkafka
        .iter()
        .map(|(k, v)| format!("{k:?} = {v:?}\n"))
        .collect();
    let config = dir.join("veto.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"{group}\"\n\n[rules]\nswap_deadline = \"30s\"\npaths = [{rules:?}]\n\n\
             [store]\ndata_dir = {:?}\n{store_extra}\n\n[telemetry]\nlisten = \"127.0.0.1:0\"\n\n\
             [kafka.librdkafka]\n{librdkafka}",
            dir.join("state")
        ),
    )
    .expect("write config");
    config
}

pub fn produce_events(brokers: &str, events: &[veto::event::PaymentEvent]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for e in events {
        let payload = encode_event(e, OutputFormat::Protobuf);
        let key = e.card_id.clone().unwrap_or_default();
        let mut record = BaseRecord::to("payments").key(&key).payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => panic!("enqueue: {e}"),
            }
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
}

pub fn decisions_reader(brokers: &str, group: &str) -> BaseConsumer {
    topic_reader(brokers, group, "decisions")
}

/// A consumer of `topic` from its start, in its own group.
pub fn topic_reader(brokers: &str, group: &str, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

pub fn sigterm_and_wait(mut veto: Killed) {
    let status = Command::new("kill")
        .args(["-TERM", &veto.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(status) = veto.0.try_wait().expect("wait") {
            assert!(status.success(), "veto exited with {status} after SIGTERM");
            return;
        }
        assert!(Instant::now() < deadline, "veto did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the file at `path` contains `needle`.
pub fn wait_for_log(path: &std::path::Path, needle: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if std::fs::read_to_string(path).is_ok_and(|log| log.contains(needle)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never logged {needle:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads decisions until `done` says enough or the deadline passes.
pub fn read_decisions(
    consumer: &BaseConsumer,
    seen: &mut HashMap<String, usize>,
    done: impl Fn(&HashMap<String, usize>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done(seen) {
        assert!(
            Instant::now() < deadline,
            "timed out with {} decided",
            seen.len()
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let d = decode_decision(m.payload().expect("payload"), InputFormat::Auto)
                .expect("decision");
            if d.trigger == Trigger::Event {
                *seen.entry(d.event_id).or_default() += 1;
            }
        }
    }
}

/// Copies the shipped rule set (and its lists) under `dir`; returns the rule file's path and a
/// function giving its text with another `version` line.
pub fn copy_shipped_rules(dir: &std::path::Path) -> (PathBuf, impl Fn(&str) -> String) {
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules");
    let rules_dir = dir.join("rules");
    std::fs::create_dir_all(rules_dir.join("lists")).expect("mkdir");
    for list in std::fs::read_dir(shipped.join("lists")).expect("lists") {
        let list = list.expect("entry").path();
        let name = list.file_name().expect("name").to_owned();
        std::fs::copy(&list, rules_dir.join("lists").join(name)).expect("copy list");
    }
    let source = std::fs::read_to_string(shipped.join("payments.veto")).expect("read rules");
    let with_version = move |v: &str| {
        source.replace(
            "version \"payments-2026.11.1\"",
            &format!("version \"{v}\""),
        )
    };
    (rules_dir.join("payments.veto"), with_version)
}

pub fn send_sigusr1(veto: &Killed) {
    send_signal(veto, "-USR1");
}

pub fn send_sigusr2(veto: &Killed) {
    send_signal(veto, "-USR2");
}

fn send_signal(veto: &Killed, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &veto.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// How often `needle` occurs in the file at `path` (0 when unreadable).
pub fn log_count(path: &std::path::Path, needle: &str) -> usize {
    std::fs::read_to_string(path).map_or(0, |log| log.matches(needle).count())
}

/// Reads decisions until one for `event_id` arrives; returns its rule set version.
pub fn version_of(consumer: &BaseConsumer, event_id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "no decision for {event_id}");
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let d = decode_decision(m.payload().expect("payload"), InputFormat::Auto)
                .expect("decision");
            if d.event_id == event_id && d.trigger == Trigger::Event {
                return d.ruleset_version.to_string();
            }
        }
    }
}

/// Event time origin of the scripted service tests.
pub const T0: i64 = 1_767_225_600_000;

/// A plain authorization on `card` at `T0 + at_s` seconds.
pub fn auth(id: &str, card: &str, at_s: i64) -> PaymentEvent {
    PaymentEvent {
        event_id: id.into(),
        kind: "authorization".into(),
        event_time_ms: T0 + at_s * 1000,
        txn_id: Some(format!("txn-{id}")),
        user_id: Some(format!("user-{card}")),
        card_id: Some(card.into()),
        device_id: Some("dev-1".into()),
        ip: Some("10.0.0.1".into()),
        merchant_id: Some("m-1".into()),
        amount_minor: Some(2_500),
        currency: Some("EUR".into()),
        country: Some("DE".into()),
        ip_country: Some("DE".into()),
        card_country: Some("DE".into()),
        mcc: Some("5411".into()),
        channel: Some("web".into()),
        ..Default::default()
    }
}

/// Produces `(key, payload)` messages to `payments`.
pub fn produce_raw(brokers: &str, messages: &[(String, Vec<u8>)]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("producer");
    for (key, payload) in messages {
        producer
            .send(BaseRecord::to("payments").key(key).payload(payload))
            .expect("enqueue");
    }
    producer.flush(Duration::from_secs(10)).expect("flush");
}

/// The log text without ANSI colour sequences (human log lines colour field names).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The `/metrics` address a running `veto` logged ("veto running metrics=..."), waiting for it.
pub fn metrics_address(log_path: &std::path::Path) -> String {
    wait_for_log(log_path, "veto running", Duration::from_secs(60));
    let log = strip_ansi(&std::fs::read_to_string(log_path).expect("read log"));
    let line = log
        .lines()
        .find(|l| l.contains("veto running"))
        .expect("the running line");
    let start = line.find("metrics=").expect("metrics= on the running line") + "metrics=".len();
    line[start..]
        .split_whitespace()
        .next()
        .expect("an address")
        .to_owned()
}

/// `GET /metrics` from `address`; the value of the series named `series` (0 when absent).
pub fn scrape(address: &str, series: &str) -> f64 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connect to /metrics");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response
        .lines()
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}
