//! Pipeline tests on rdkafka's in-process `MockCluster`: decisions, dead letters, tag updates, offsets, drain.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};
use veto::decider::Decided;
use veto::event::{
    decode_dead_letter, decode_decision, encode_event, encode_tag_update, Decision, EventError,
    Field, InputFormat, Outcome, OutputFormat, PaymentEvent, TagUpdate, Trigger,
};
use veto::pipeline::{
    run, Decider, Delivered, PipelineError, PipelineSettings, PipelineStatus, RunSummary,
    TimeoutDecision,
};

const PAYMENTS: &str = "payments";
const TAGS: &str = "entity-tags";
const DECISIONS: &str = "decisions";
const DEAD_LETTERS: &str = "dead-letters";
const SHADOW: &str = "shadow-decisions";
const WAIT: Duration = Duration::from_secs(15);

/// A deterministic decider: outcome by amount, `block` for users tagged "blocked", and a
/// shadow decision (always `review`) per event. Records everything it sees.
#[derive(Default)]
struct AmountDecider {
    decided: Mutex<Vec<String>>,
    blocked_users: Mutex<BTreeSet<String>>,
    tag_updates: AtomicUsize,
    safe_offsets: Mutex<BTreeMap<(String, i32), i64>>,
    /// Sleep per decision, to keep events in flight.
    delay: Duration,
}

impl AmountDecider {
    fn with_delay(delay: Duration) -> AmountDecider {
        AmountDecider {
            delay,
            ..AmountDecider::default()
        }
    }

    fn outcome(&self, event: &PaymentEvent) -> Outcome {
        let blocked = event
            .user_id
            .as_ref()
            .is_some_and(|u| self.blocked_users.lock().contains(u));
        match event.amount_minor.unwrap_or(0) {
            _ if blocked => Outcome::Block,
            a if a >= 100_000 => Outcome::Block,
            a if a >= 10_000 => Outcome::Review,
            _ => Outcome::Allow,
        }
    }
}

impl Decider for AmountDecider {
    fn decide(&self, event: &PaymentEvent, out: &mut Decided) {
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        self.decided.lock().push(event.event_id.clone());
        let live = Decision {
            event_id: event.event_id.clone(),
            txn_id: event.txn_id.clone(),
            outcome: self.outcome(event),
            ruleset_version: "test-1".into(),
            ..Decision::default()
        };
        let shadow = Decision {
            outcome: Outcome::Review,
            shadow: true,
            ..live.clone()
        };
        *out = Decided {
            decision: live,
            shadow: Some(shadow),
        };
    }

    fn apply_tag_update(&self, update: &TagUpdate) -> Result<(), EventError> {
        if update.entity == Field::UserId && update.tag == "blocked" {
            if update.remove {
                self.blocked_users.lock().remove(&update.value);
            } else {
                self.blocked_users.lock().insert(update.value.clone());
            }
        }
        self.tag_updates.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn on_safe_offsets(&self, offsets: &[(String, i32, i64)]) {
        let mut safe = self.safe_offsets.lock();
        for (topic, partition, next) in offsets {
            safe.insert((topic.clone(), *partition), *next);
        }
    }
}

/// A mock cluster with the pipeline's topics.
fn cluster(payment_partitions: i32) -> MockCluster<'static, DefaultProducerContext> {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster
        .create_topic(PAYMENTS, payment_partitions, 1)
        .expect("payments topic");
    for topic in [TAGS, DECISIONS, DEAD_LETTERS, SHADOW] {
        cluster.create_topic(topic, 1, 1).expect("topic");
    }
    cluster
}

fn settings(brokers: &str, group: &str) -> PipelineSettings {
    PipelineSettings {
        brokers: brokers.to_owned(),
        group_id: group.to_owned(),
        payments_topic: PAYMENTS.into(),
        entity_tags_topic: TAGS.into(),
        decisions_topic: DECISIONS.into(),
        dead_letters_topic: DEAD_LETTERS.into(),
        shadow_topic: Some(SHADOW.into()),
        input_format: InputFormat::Auto,
        output_format: OutputFormat::Protobuf,
        workers: 2,
        queue_capacity: 8,
        max_event_bytes: 4096,
        drain_timeout: Duration::from_secs(10),
        commit_interval: Duration::from_millis(200),
        ..PipelineSettings::default()
    }
}

fn producer(brokers: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("test producer")
}

fn produce(producer: &BaseProducer, topic: &str, partition: i32, payload: &[u8]) {
    producer
        .send(
            BaseRecord::<[u8], [u8]>::to(topic)
                .partition(partition)
                .payload(payload),
        )
        .map_err(|(e, _)| e)
        .expect("produce");
}

fn event(id: &str, amount_minor: i64, user: &str) -> PaymentEvent {
    PaymentEvent {
        event_id: id.to_owned(),
        kind: "authorization".into(),
        event_time_ms: 1_700_000_000_000,
        txn_id: Some(format!("t-{id}")),
        user_id: Some(user.to_owned()),
        amount_minor: Some(amount_minor),
        currency: Some("EUR".into()),
        ..PaymentEvent::default()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn expected_outcome(amount_minor: i64) -> Outcome {
    match amount_minor {
        a if a >= 100_000 => Outcome::Block,
        a if a >= 10_000 => Outcome::Review,
        _ => Outcome::Allow,
    }
}

/// Reads `topic` (one partition) from the beginning until `count` messages or the deadline.
fn read_topic(brokers: &str, topic: &str, count: usize) -> Vec<(i64, Vec<u8>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{topic}"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + WAIT;
    let mut out = Vec::new();
    while out.len() < count && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push((m.offset(), m.payload().unwrap_or_default().to_vec()));
        }
    }
    out
}

fn read_decisions(brokers: &str, topic: &str, count: usize) -> Vec<Decision> {
    read_topic(brokers, topic, count)
        .into_iter()
        .map(|(_, bytes)| decode_decision(&bytes, InputFormat::Protobuf).expect("decision"))
        .collect()
}

/// Offsets committed by `group` for the payments partitions.
fn committed(brokers: &str, group: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("offsets reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(PAYMENTS, p);
    }
    let list = consumer
        .committed_offsets(tpl, Duration::from_secs(5))
        .expect("committed offsets");
    (0..partitions)
        .map(|p| {
            list.find_partition(PAYMENTS, p)
                .and_then(|e| e.offset().to_raw())
                .filter(|&o| o >= 0)
                .unwrap_or(-1)
        })
        .collect()
}

/// A running pipeline plus the means to stop it.
struct Running {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<RunSummary, PipelineError>>,
    status: Arc<PipelineStatus>,
    timeouts: mpsc::Sender<TimeoutDecision>,
}

fn start(settings: PipelineSettings, decider: Arc<dyn Decider>) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let (timeouts, extra) = mpsc::channel(16);
    let status = Arc::new(PipelineStatus::new());
    let task = tokio::spawn(run(
        settings,
        decider,
        extra,
        Arc::clone(&status),
        async move {
            let _ = stopped.await;
        },
    ));
    Running {
        stop,
        task,
        status,
        timeouts,
    }
}

impl Running {
    async fn stop(self) -> Result<RunSummary, PipelineError> {
        let _ = self.stop.send(());
        self.task.await.expect("pipeline task")
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_gets_exactly_one_decision_and_offsets_are_committed() {
    let cluster = cluster(3);
    let brokers = cluster.bootstrap_servers();
    let decider = Arc::new(AmountDecider::default());
    let running = start(settings(&brokers, "g-exactly-one"), decider.clone());

    let producer = producer(&brokers);
    let mut expected = BTreeMap::new();
    let mut per_partition = [0i64; 3];
    for i in 0..150i64 {
        let id = format!("e-{i}");
        let amount = (i * 997) % 150_000;
        let partition = (i % 3) as i32;
        let format = if i % 2 == 0 {
            OutputFormat::Protobuf
        } else {
            OutputFormat::Json
        };
        produce(
            &producer,
            PAYMENTS,
            partition,
            &encode_event(&event(&id, amount, "u-1"), format),
        );
        expected.insert(id, expected_outcome(amount));
        per_partition[partition as usize] += 1;
    }
    producer.flush(Duration::from_secs(5)).expect("flush");

    let timeout = Decision {
        event_id: "e-timer".into(),
        outcome: Outcome::Review,
        trigger: Trigger::Timeout,
        ruleset_version: "test-1".into(),
        ..Decision::default()
    };
    let (acked_tx, acked_rx) = std::sync::mpsc::channel();
    running
        .timeouts
        .send(TimeoutDecision {
            decision: timeout,
            delivered: Some(Delivered::new(move || {
                let _ = acked_tx.send(());
            })),
        })
        .await
        .expect("timeout decision");

    let decisions = read_decisions(&brokers, DECISIONS, expected.len() + 1);
    // the timeout decision is in Kafka: its delivery hook ran (the timer leaves the snapshots)
    assert!(acked_rx.recv_timeout(Duration::from_secs(10)).is_ok());
    wait_for("ready", || running.status.is_ready()).await;
    let shadow = read_decisions(&brokers, SHADOW, expected.len());
    wait_for("safe offsets", || {
        let safe = decider.safe_offsets.lock();
        (0..3).all(|p| safe.get(&(PAYMENTS.to_owned(), p)) == Some(&per_partition[p as usize]))
    })
    .await;
    let summary = running.stop().await.expect("clean stop");

    let mut by_event = BTreeMap::new();
    for d in &decisions {
        assert!(!d.shadow);
        assert!(
            by_event
                .insert(d.event_id.clone(), (d.outcome, d.trigger))
                .is_none(),
            "duplicate decision for {}",
            d.event_id
        );
    }
    assert_eq!(
        by_event.remove("e-timer"),
        Some((Outcome::Review, Trigger::Timeout))
    );
    let outcomes: BTreeMap<String, Outcome> = by_event
        .into_iter()
        .map(|(id, (o, t))| {
            assert_eq!(t, Trigger::Event);
            (id, o)
        })
        .collect();
    assert_eq!(outcomes, expected);
    assert_eq!(shadow.len(), expected.len());
    assert!(shadow.iter().all(|d| d.shadow));

    assert_eq!(summary.events_decided, 150);
    assert_eq!(summary.timeout_decisions, 1);
    assert_eq!(summary.dead_letters, 0);
    assert_eq!(
        committed(&brokers, "g-exactly-one", 3),
        per_partition.to_vec()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_events_go_to_dead_letters_and_the_partition_moves_on() {
    let cluster = cluster(1);
    let brokers = cluster.bootstrap_servers();
    let decider = Arc::new(AmountDecider::default());
    let running = start(settings(&brokers, "g-dead-letters"), decider.clone());

    let producer = producer(&brokers);
    let valid = |id: &str| encode_event(&event(id, 500, "u-2"), OutputFormat::Protobuf);
    let oversized = format!(
        r#"{{"event_id":"big","type":"authorization","event_time_ms":1700000000000,"attrs":{{"pad":"{}"}}}}"#,
        "x".repeat(5000)
    );
    let inputs: Vec<Vec<u8>> = vec![
        valid("ok-0"),
        vec![0xff, 0xff, 0xff, 0x01],
        valid("ok-2"),
        br#"{"type":"authorization","event_time_ms":1700000000000}"#.to_vec(),
        oversized.into_bytes(),
        valid("ok-5"),
        // a day ahead of the clock: past the default pipeline.max_future_skew (10 min)
        encode_event(
            &PaymentEvent {
                event_time_ms: now_ms() + 86_400_000,
                ..event("future", 500, "u-2")
            },
            OutputFormat::Protobuf,
        ),
    ];
    for input in &inputs {
        produce(&producer, PAYMENTS, 0, input);
    }
    // a tombstone: a null value (offset 7)
    producer
        .send(
            BaseRecord::<[u8], [u8]>::to(PAYMENTS)
                .partition(0)
                .key(b"k"),
        )
        .map_err(|(e, _)| e)
        .expect("produce");
    producer.flush(Duration::from_secs(5)).expect("flush");

    let decisions = read_decisions(&brokers, DECISIONS, 3);
    let dead: Vec<_> = read_topic(&brokers, DEAD_LETTERS, 5)
        .into_iter()
        .map(|(_, bytes)| decode_dead_letter(&bytes).expect("dead letter"))
        .collect();
    wait_for("safe offsets", || {
        decider.safe_offsets.lock().get(&(PAYMENTS.to_owned(), 0)) == Some(&8)
    })
    .await;
    let summary = running.stop().await.expect("clean stop");

    let ids: Vec<&str> = decisions.iter().map(|d| d.event_id.as_str()).collect();
    assert_eq!(ids, ["ok-0", "ok-2", "ok-5"]);
    let reasons: Vec<(&str, i64)> = dead
        .iter()
        .map(|d| (d.reason_code.as_str(), d.source_offset))
        .collect();
    assert_eq!(
        reasons,
        [
            ("undecodable", 1),
            ("missing_field", 3),
            ("oversized", 4),
            ("invalid_time", 6),
            ("undecodable", 7)
        ]
    );
    assert!(dead[4].reason.contains("tombstone"), "{}", dead[4].reason);
    assert!(dead[4].raw.is_empty());
    for d in &dead[..4] {
        assert_eq!(d.source_topic, PAYMENTS);
        assert_eq!(d.source_partition, 0);
        let input = &inputs[d.source_offset as usize];
        if d.reason_code == "oversized" {
            // only its first max_event_bytes travel in the dead letter
            assert!(d.raw_truncated);
            assert_eq!(d.raw, input[..4096]);
        } else {
            assert!(!d.raw_truncated);
            assert_eq!(&d.raw, input);
        }
        assert!(!d.reason.is_empty());
    }
    assert!(
        dead[3].reason.contains("max_future_skew"),
        "{}",
        dead[3].reason
    );
    assert_eq!(summary.dead_letters, 5);
    assert_eq!(summary.events_decided, 3);
    assert_eq!(committed(&brokers, "g-dead-letters", 1), vec![8]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_updates_reach_the_decider() {
    let cluster = cluster(1);
    let brokers = cluster.bootstrap_servers();
    let decider = Arc::new(AmountDecider::default());
    let running = start(settings(&brokers, "g-tags"), decider.clone());

    let producer = producer(&brokers);
    let update = TagUpdate {
        entity: Field::UserId,
        value: "u-bad".into(),
        tag: "blocked".into(),
        expires_at_ms: None,
        remove: false,
    };
    produce(
        &producer,
        TAGS,
        0,
        &encode_tag_update(&update, OutputFormat::Protobuf),
    );
    produce(&producer, TAGS, 0, b"{not a tag update");
    producer.flush(Duration::from_secs(5)).expect("flush");
    wait_for("tag update", || {
        decider.tag_updates.load(Ordering::SeqCst) == 1
    })
    .await;

    produce(
        &producer,
        PAYMENTS,
        0,
        &encode_event(
            &event("small-but-blocked", 100, "u-bad"),
            OutputFormat::Json,
        ),
    );
    produce(
        &producer,
        PAYMENTS,
        0,
        &encode_event(&event("small-ok", 100, "u-good"), OutputFormat::Json),
    );
    producer.flush(Duration::from_secs(5)).expect("flush");

    let decisions = read_decisions(&brokers, DECISIONS, 2);
    let dead = read_topic(&brokers, DEAD_LETTERS, 1);
    let summary = running.stop().await.expect("clean stop");

    let outcomes: Vec<(&str, Outcome)> = decisions
        .iter()
        .map(|d| (d.event_id.as_str(), d.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("small-but-blocked", Outcome::Block),
            ("small-ok", Outcome::Allow)
        ]
    );
    assert_eq!(dead.len(), 1);
    let dead = decode_dead_letter(&dead[0].1).expect("dead letter");
    assert_eq!((dead.source_topic.as_str(), dead.source_offset), (TAGS, 1));
    assert_eq!(summary.tag_updates, 1);
    assert_eq!(
        decider.safe_offsets.lock().get(&(TAGS.to_owned(), 0)),
        Some(&2),
        "the tag partition's offsets are committed too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_events_and_commits_them() {
    let cluster = cluster(2);
    let brokers = cluster.bootstrap_servers();
    let decider = Arc::new(AmountDecider::with_delay(Duration::from_millis(5)));
    let running = start(settings(&brokers, "g-drain"), decider.clone());

    let producer = producer(&brokers);
    let mut ids_by_partition: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    for i in 0..400 {
        let id = format!("d-{i}");
        let partition = i % 2;
        produce(
            &producer,
            PAYMENTS,
            partition as i32,
            &encode_event(&event(&id, 100, "u-3"), OutputFormat::Protobuf),
        );
        ids_by_partition[partition].push(id);
    }
    producer.flush(Duration::from_secs(5)).expect("flush");

    // Stop while events are queued and in flight (5 ms each, 400 events).
    wait_for("first decisions", || decider.decided.lock().len() >= 20).await;
    let summary = running.stop().await.expect("drained within the deadline");

    let decided: BTreeSet<String> = decider.decided.lock().iter().cloned().collect();
    assert!(
        decided.len() < 400,
        "the stop came before the end of the input"
    );
    assert_eq!(summary.events_decided as usize, decided.len());
    let published: BTreeSet<String> = read_decisions(&brokers, DECISIONS, decided.len())
        .into_iter()
        .map(|d| d.event_id)
        .collect();
    assert_eq!(
        published, decided,
        "every decided event was published before exit"
    );

    // Each partition's committed offset covers exactly its decided prefix.
    let committed = committed(&brokers, "g-drain", 2);
    for (partition, ids) in ids_by_partition.iter().enumerate() {
        let decided_here = ids.iter().take_while(|id| decided.contains(*id)).count();
        assert_eq!(
            ids.iter().filter(|id| decided.contains(*id)).count(),
            decided_here
        );
        let expected = if decided_here == 0 {
            -1
        } else {
            decided_here as i64
        };
        assert_eq!(committed[partition], expected, "partition {partition}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_past_the_deadline_is_reported() {
    let cluster = cluster(1);
    let brokers = cluster.bootstrap_servers();
    let decider = Arc::new(AmountDecider::with_delay(Duration::from_millis(400)));
    let mut settings = settings(&brokers, "g-deadline");
    settings.drain_timeout = Duration::from_millis(300);
    let running = start(settings, decider.clone());

    let producer = producer(&brokers);
    for i in 0..20 {
        produce(
            &producer,
            PAYMENTS,
            0,
            &encode_event(
                &event(&format!("s-{i}"), 100, "u-4"),
                OutputFormat::Protobuf,
            ),
        );
    }
    producer.flush(Duration::from_secs(5)).expect("flush");
    wait_for("first decision", || !decider.decided.lock().is_empty()).await;

    match running.stop().await {
        Err(PipelineError::DrainTimeout { timeout, .. }) => {
            assert_eq!(timeout, Duration::from_millis(300))
        }
        other => panic!("expected a drain timeout, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_not_ready_and_not_fatal() {
    // Nothing listens on this port: the clients keep retrying in the background.
    let decider = Arc::new(AmountDecider::default());
    let running = start(settings("127.0.0.1:9", "g-unreachable"), decider);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!running.status.is_ready());
    assert!(!running.task.is_finished(), "the pipeline keeps running");
    let summary = running.stop().await.expect("a clean stop without a broker");
    assert_eq!(summary, RunSummary::default());
}

/// How long the broker stays down in the fault test (`VETO_BROKER_DOWN_SECS`, default 30).
fn broker_down_for() -> Duration {
    let secs = std::env::var("VETO_BROKER_DOWN_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_mid_stream_makes_it_not_ready_then_it_resumes_without_loss() {
    let cluster = cluster(1);
    let brokers = cluster.bootstrap_servers();
    let decider = Arc::new(AmountDecider::default());
    // librdkafka's statistics off: readiness comes back from the messages the workers read
    let mut settings = settings(&brokers, "g-broker-down");
    settings
        .librdkafka
        .insert("statistics.interval.ms".into(), "0".into());
    let running = start(settings, decider.clone());
    let producer = producer(&brokers);
    let mut expected = BTreeMap::new();
    let mut send = |range: std::ops::Range<i64>| {
        for i in range {
            let id = format!("down-{i}");
            let amount = (i * 7919) % 150_000;
            produce(
                &producer,
                PAYMENTS,
                0,
                &encode_event(&event(&id, amount, "u-2"), OutputFormat::Protobuf),
            );
            expected.insert(id, expected_outcome(amount));
        }
        producer.flush(Duration::from_secs(10)).expect("flush");
    };
    send(0..50);
    wait_for("ready", || running.status.is_ready()).await;
    let before = read_decisions(&brokers, DECISIONS, 50);
    assert_eq!(before.len(), 50);

    cluster.broker_down(1).expect("broker down");
    wait_for("the broker reported unreachable", || {
        !running.status.is_broker_reachable() && !running.status.is_ready()
    })
    .await;
    tokio::time::sleep(broker_down_for()).await;
    assert!(
        !running.task.is_finished(),
        "the pipeline survives the outage"
    );
    assert!(
        !running.status.is_ready(),
        "still not ready while the broker is down"
    );
    cluster.broker_up(1).expect("broker up");

    send(50..100);
    let decisions = read_decisions(&brokers, DECISIONS, 100);
    wait_for("ready again", || running.status.is_ready()).await;
    let summary = running.stop().await.expect("a clean stop after the outage");

    let mut decided = BTreeMap::new();
    for d in &decisions {
        if let Some(previous) = decided.insert(d.event_id.clone(), d.outcome) {
            assert_eq!(previous, d.outcome, "a replayed event got another outcome");
        }
    }
    assert_eq!(decided, expected, "every event decided, none lost");
    assert!(summary.events_decided >= 100);
}
