//! End to end against a real Kafka-protocol broker process (tansu) and the real `veto` binary:
//! every event gets exactly one decision across a SIGTERM mid-stream and a restart.
//! The broker binary comes from `$VETO_TANSU` (set by tests/run.sh) or `~/.cache/veto-tools/bin/tansu`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::Message;
use veto::event::{decode_decision, encode_event, InputFormat, OutputFormat, Trigger};
use veto::synth::{Synth, SynthConfig};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tansu_binary() -> PathBuf {
    if let Ok(p) = std::env::var("VETO_TANSU") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").expect("HOME");
    let path = PathBuf::from(home).join(".cache/veto-tools/bin/tansu");
    assert!(
        path.exists(),
        "the tansu broker is missing: run `bash tests/run.sh`, which installs it, or set VETO_TANSU"
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn start_broker() -> (Killed, String) {
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(tansu_binary())
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tansu");
    let brokers = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&brokers).is_err() {
        assert!(Instant::now() < deadline, "tansu did not start listening");
        std::thread::sleep(Duration::from_millis(100));
    }
    (Killed(child), brokers)
}

fn create_topics(brokers: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin");
    let topics = [
        NewTopic::new("payments", 2, TopicReplication::Fixed(1)),
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

fn start_veto(config: &std::path::Path) -> Killed {
    start_veto_logging(config, Stdio::inherit())
}

fn start_veto_logging(config: &std::path::Path, stderr: impl Into<Stdio>) -> Killed {
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

fn write_config(
    dir: &std::path::Path,
    brokers: &str,
    group: &str,
    rules: &std::path::Path,
) -> PathBuf {
    let config = dir.join("veto.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"{group}\"\n\n[rules]\npaths = [{rules:?}]\n\n\
             [store]\ndata_dir = {:?}\n\n[telemetry]\nlisten = \"127.0.0.1:0\"\n",
            dir.join("state")
        ),
    )
    .expect("write config");
    config
}

fn produce_events(brokers: &str, events: &[veto::event::PaymentEvent]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("producer");
    for e in events {
        let payload = encode_event(e, OutputFormat::Protobuf);
        let key = e.card_id.clone().unwrap_or_default();
        producer
            .send(BaseRecord::to("payments").key(&key).payload(&payload))
            .expect("enqueue");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

fn decisions_reader(brokers: &str, group: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&["decisions"]).expect("subscribe");
    consumer
}

fn sigterm_and_wait(mut veto: Killed) {
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

/// Reads decisions until `done` says enough or the deadline passes.
fn read_decisions(
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

#[test]
fn sigterm_mid_stream_then_restart_decides_every_event_exactly_once() {
    let (_broker, brokers) = start_broker();
    create_topics(&brokers);

    let events: Vec<_> = Synth::new(SynthConfig {
        seed: 11,
        users: 500,
        ..SynthConfig::default()
    })
    .take(400)
    .collect();
    let (first, second) = events.split_at(200);
    produce_events(&brokers, first);
    let data = tempfile::tempdir().expect("tempdir");
    let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules/payments.veto");
    let config = write_config(data.path(), &brokers, "veto-e2e", &rules);
    let consumer = decisions_reader(&brokers, "e2e-reader");
    let mut seen = HashMap::new();

    let veto = start_veto(&config);
    read_decisions(&consumer, &mut seen, |s| s.len() >= 50);
    sigterm_and_wait(veto);

    // The second half arrives while Veto is down; the restarted process decides the rest.
    produce_events(&brokers, second);
    let veto = start_veto(&config);
    let total = events.len();
    read_decisions(&consumer, &mut seen, |s| s.len() >= total);
    sigterm_and_wait(veto);
    // Anything still in flight would have arrived by now.
    read_decisions(&consumer, &mut seen, |_| true);

    for e in &events {
        assert_eq!(
            seen.get(&e.event_id).copied(),
            Some(1),
            "event {} must have exactly one decision",
            e.event_id
        );
    }
}

/// Copies the shipped rule set (and its lists) under `dir`; returns the rule file's path and a
/// function giving its text with another `version` line.
fn copy_shipped_rules(dir: &std::path::Path) -> (PathBuf, impl Fn(&str) -> String) {
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

fn send_sigusr1(veto: &Killed) {
    let status = Command::new("kill")
        .args(["-USR1", &veto.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Reads decisions until one for `event_id` arrives; returns its rule set version.
fn version_of(consumer: &BaseConsumer, event_id: &str) -> String {
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

#[test]
fn sigusr1_swaps_good_files_and_rejects_a_bad_one() {
    let (_broker, brokers) = start_broker();
    create_topics(&brokers);
    let data = tempfile::tempdir().expect("tempdir");
    let (rules, with_version) = copy_shipped_rules(data.path());
    std::fs::write(&rules, with_version("v1")).expect("write rules");
    let config = write_config(data.path(), &brokers, "veto-swap", &rules);
    let log_path = data.path().join("veto.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let veto = start_veto_logging(&config, log);
    let consumer = decisions_reader(&brokers, "swap-reader");

    let mut synth = Synth::new(SynthConfig {
        seed: 5,
        ..SynthConfig::default()
    });
    let mut probe = |consumer: &BaseConsumer| {
        let e = synth.next().expect("event");
        produce_events(&brokers, std::slice::from_ref(&e));
        version_of(consumer, &e.event_id)
    };
    assert_eq!(probe(&consumer), "v1");

    std::fs::write(&rules, with_version("v2")).expect("write rules");
    send_sigusr1(&veto);
    let deadline = Instant::now() + Duration::from_secs(30);
    while probe(&consumer) != "v2" {
        assert!(Instant::now() < deadline, "v2 never went live");
    }

    std::fs::write(
        &rules,
        format!(
            "{}\nrule broken when amount > \"x\" then block\n",
            with_version("v3")
        ),
    )
    .expect("write rules");
    send_sigusr1(&veto);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = std::fs::read_to_string(&log_path).expect("read log");
        if log.contains("rule reload rejected") {
            assert!(
                log.contains("type mismatch"),
                "diagnostics are logged: {log}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the bad file was not rejected: {log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(probe(&consumer), "v2", "a rejected file changes nothing");

    std::fs::write(&rules, with_version("v4")).expect("write rules");
    send_sigusr1(&veto);
    let deadline = Instant::now() + Duration::from_secs(30);
    while probe(&consumer) != "v4" {
        assert!(Instant::now() < deadline, "v4 never went live");
    }
    sigterm_and_wait(veto);
}

#[test]
fn a_burst_of_50_sigusr1_keeps_the_service_up_and_ends_on_the_last_file() {
    let (_broker, brokers) = start_broker();
    create_topics(&brokers);
    let data = tempfile::tempdir().expect("tempdir");
    let (rules, with_version) = copy_shipped_rules(data.path());
    std::fs::write(&rules, with_version("burst-0")).expect("write rules");
    let config = write_config(data.path(), &brokers, "veto-burst", &rules);
    let veto = start_veto(&config);
    let consumer = decisions_reader(&brokers, "burst-reader");
    let mut synth = Synth::new(SynthConfig {
        seed: 9,
        ..SynthConfig::default()
    });
    let first = synth.next().expect("event");
    produce_events(&brokers, std::slice::from_ref(&first));
    assert_eq!(version_of(&consumer, &first.event_id), "burst-0");

    for i in 1..=50 {
        std::fs::write(&rules, with_version(&format!("burst-{i}"))).expect("write rules");
        send_sigusr1(&veto);
        let batch: Vec<_> = synth.by_ref().take(5).collect();
        produce_events(&brokers, &batch);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let e = synth.next().expect("event");
        produce_events(&brokers, std::slice::from_ref(&e));
        if version_of(&consumer, &e.event_id) == "burst-50" {
            break;
        }
        assert!(Instant::now() < deadline, "the last file never went live");
    }
    sigterm_and_wait(veto);
}
