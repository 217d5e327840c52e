//! The decision sink: an idempotent producer whose delivery reports acknowledge consumed offsets.
//!
//! Every produced message carries an [`AckToken`]; when Kafka confirms delivery the token
//! acknowledges its event in the partition's tracker. A failed delivery is produced again
//! after a backoff (never dropped), and a full producer queue makes the sender wait.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;

use super::ack::AckSeq;
use super::error::PipelineError;
use super::events;
use super::partition::PartitionSlot;
use super::settings::PipelineSettings;
use super::status::PipelineStatus;
use super::transaction::checkpoint_metadata;

/// The broker aborts a transaction left open longer than this (a crashed instance's).
const TRANSACTION_TIMEOUT_MS: &str = "60000";
/// Deadline of one transactional call (init, send offsets, commit).
const TRANSACTION_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often `init_transactions` is tried at start (broker unreachable) before giving up.
const INIT_TRANSACTIONS_ATTEMPTS: u32 = 10;

/// The delivery settings of Veto's producer (`kafka.librdkafka` may override all but
/// idempotence). `linger.ms` = 1: on Apache Kafka it halves the median decision latency at
/// 20,000 events/s against librdkafka's default of 5 with the same saturation throughput
/// (docs/decisions.md, "The producer lingers 1 ms"). The benchmark's passthrough baseline
/// produces with the same settings, so the throughput ratio compares the engine and nothing else.
pub const PRODUCER_SETTINGS: [(&str, &str); 3] = [
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("linger.ms", "1"),
];

/// What a delivery acknowledges.
#[derive(Debug)]
pub enum AckToken {
    /// One output of a consumed message.
    Event {
        slot: Arc<PartitionSlot>,
        seq: AckSeq,
    },
    /// A timeout decision: no consumed offset depends on it; its hook runs once it is in Kafka.
    Timeout(Option<Delivered>),
}

impl AckToken {
    fn acknowledge(self) {
        match self {
            AckToken::Event { slot, seq } => slot.ack(seq),
            AckToken::Timeout(Some(delivered)) => delivered.run(),
            AckToken::Timeout(None) => {}
        }
    }
}

/// What to do once a timeout decision is acknowledged by Kafka (or dropped on purpose): the
/// timer it came from may then leave the state's snapshots.
pub struct Delivered(Box<dyn FnOnce() + Send + Sync>);

impl Delivered {
    pub fn new(hook: impl FnOnce() + Send + Sync + 'static) -> Delivered {
        Delivered(Box::new(hook))
    }

    pub fn run(self) {
        (self.0)()
    }
}

impl std::fmt::Debug for Delivered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Delivered")
    }
}

/// The delivery opaque: the token plus how often the message was already attempted.
#[derive(Debug)]
pub struct Delivery {
    token: AckToken,
    attempt: u32,
}

/// A message whose delivery failed, waiting to be produced again.
struct RetryRecord {
    topic: String,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    delivery: Delivery,
    /// When to produce it again: its backoff after the failure.
    due: Instant,
}

impl RetryRecord {
    /// A failed message (its `delivery.attempt` already counts the failure), due after its
    /// backoff; says so in the log and metrics.
    fn failed(
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        delivery: Delivery,
        error: &KafkaError,
    ) -> RetryRecord {
        let backoff = retry_backoff(delivery.attempt);
        events::delivery_failed(topic, error, delivery.attempt, backoff);
        RetryRecord {
            topic: topic.to_owned(),
            key: key.map(<[u8]>::to_vec),
            payload: payload.to_vec(),
            delivery,
            due: Instant::now() + backoff,
        }
    }
}

/// Outputs produced but not yet acknowledged (in librdkafka's queue or waiting for a retry)
/// above which workers wait before producing more: a broker outage then stops consumption
/// instead of growing the retry backlog without bound.
const MAX_IN_FLIGHT: i64 = 200_000;

/// Producer callbacks: delivery reports, errors, logs.
pub struct SinkContext {
    retry_tx: Sender<RetryRecord>,
    /// Messages sent and not yet acknowledged (retries included).
    in_flight: Arc<AtomicI64>,
    status: Arc<PipelineStatus>,
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        events::librdkafka_log("producer", level, fac, log_message);
    }

    fn stats_raw(&self, _statistics: &[u8]) {}

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown)
            && self.status.is_broker_reachable()
        {
            self.status.set_broker_reachable(false);
            events::broker_reachability_changed(false);
        }
        events::kafka_client_error("producer", &error, reason);
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Box<Delivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, delivery: Box<Delivery>) {
        match result {
            Ok(_) => {
                delivery.token.acknowledge();
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
            }
            Err((error, message)) => {
                let mut delivery = *delivery;
                delivery.attempt += 1;
                let record = RetryRecord::failed(
                    message.topic(),
                    message.key(),
                    message.payload().unwrap_or_default(),
                    delivery,
                    error,
                );
                // Fails only once the retry thread is gone (run over): the event stays
                // unacknowledged, so its offset is never committed.
                let _ = self.retry_tx.send(record);
            }
        }
    }
}

/// Backoff before producing a failed message again: 100 ms doubling up to 5 s.
fn retry_backoff(attempt: u32) -> Duration {
    let factor = 1u64 << attempt.saturating_sub(1).min(6);
    Duration::from_millis(100 * factor).min(Duration::from_secs(5))
}

/// The producer side of the pipeline, shared by workers, the timeout publisher and the retry thread.
pub struct Sink {
    producer: ThreadedProducer<SinkContext>,
    in_flight: Arc<AtomicI64>,
    /// Set when the drain deadline passed: senders stop waiting and give up.
    abort: Arc<AtomicBool>,
    /// Exactly-once mode: the producer's `transactional.id`.
    transactional_id: Option<String>,
}

/// Whether `code` says another producer with the same `transactional.id` took over.
fn is_fencing(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
    )
}

/// Outcome of one attempt to hand a message to the producer.
enum Attempt {
    Sent,
    QueueFull(Box<Delivery>),
}

impl Sink {
    /// Creates the idempotent producer and starts the retry thread.
    pub fn start(
        settings: &PipelineSettings,
        status: Arc<PipelineStatus>,
        abort: Arc<AtomicBool>,
    ) -> Result<(Arc<Sink>, RetryThread), PipelineError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &settings.brokers)
            .set("client.id", &settings.client_id)
            .set(
                "message.max.bytes",
                (settings.max_event_bytes + 64 * 1024)
                    .max(1_000_000)
                    .to_string(),
            );
        for (key, value) in PRODUCER_SETTINGS {
            config.set(key, value);
        }
        if let Some(id) = &settings.transactional_id {
            config
                .set("transactional.id", id)
                .set("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS);
        }
        for (key, value) in &settings.librdkafka {
            config.set(key, value);
        }
        let (retry_tx, retry_rx) = mpsc::channel();
        let in_flight = Arc::new(AtomicI64::new(0));
        let context = SinkContext {
            retry_tx,
            in_flight: Arc::clone(&in_flight),
            status,
        };
        let producer = config.create_with_context(context).map_err(|source| {
            PipelineError::ClientCreation {
                client: "producer",
                source,
            }
        })?;
        let sink = Arc::new(Sink {
            producer,
            in_flight,
            abort,
            transactional_id: settings.transactional_id.clone(),
        });
        if settings.transactional_id.is_some() {
            sink.start_transactions()?;
        }
        let retry = RetryThread::spawn(Arc::clone(&sink), retry_rx)?;
        Ok((sink, retry))
    }

    /// Produces one message, waiting while the producer queue is full or [`MAX_IN_FLIGHT`]
    /// outputs are unacknowledged.
    ///
    /// Returns false (the token is not acknowledged) only when the drain deadline passed.
    pub fn send_blocking(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        token: AckToken,
    ) -> bool {
        while self.in_flight.load(Ordering::Acquire) >= MAX_IN_FLIGHT {
            if self.abort.load(Ordering::Acquire) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.resend_blocking(
            topic,
            key,
            payload,
            Box::new(Delivery { token, attempt: 0 }),
        )
    }

    /// Async variant of [`Sink::send_blocking`] for the timeout publisher.
    pub async fn send_async(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        token: AckToken,
    ) -> bool {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let mut delivery = Box::new(Delivery { token, attempt: 0 });
        let mut waited = false;
        loop {
            match self.send_step(topic, key, payload, delivery, &mut waited) {
                Ok(sent) => return sent,
                Err(back) => delivery = back,
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn resend_blocking(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        mut delivery: Box<Delivery>,
    ) -> bool {
        let mut waited = false;
        loop {
            match self.send_step(topic, key, payload, delivery, &mut waited) {
                Ok(sent) => return sent,
                Err(back) => delivery = back,
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// One pass of a send loop: `Ok(true)` sent, `Ok(false)` given up (drain deadline passed),
    /// `Err(delivery)` the producer queue is full: wait a moment and pass again (the first
    /// full queue of a message is reported once, through `waited`).
    fn send_step(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        delivery: Box<Delivery>,
        waited: &mut bool,
    ) -> Result<bool, Box<Delivery>> {
        match self.attempt(topic, key, payload, delivery) {
            Attempt::Sent => Ok(true),
            Attempt::QueueFull(back) => {
                if self.give_up() {
                    return Ok(false);
                }
                if !*waited {
                    events::producer_queue_full();
                    *waited = true;
                }
                Err(back)
            }
        }
    }

    /// Drops a message that could not be handed over: it stays unacknowledged forever.
    fn give_up(&self) -> bool {
        if self.abort.load(Ordering::Acquire) {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return true;
        }
        false
    }

    fn attempt(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        delivery: Box<Delivery>,
    ) -> Attempt {
        let mut record = BaseRecord::with_opaque_to(topic, delivery).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        match self.producer.send(record) {
            Ok(()) => Attempt::Sent,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), record)) => {
                Attempt::QueueFull(record.delivery_opaque)
            }
            Err((error, record)) => {
                // Refused before queueing (e.g. message too large): treat like a failed delivery.
                let mut delivery = *record.delivery_opaque;
                delivery.attempt += 1;
                let retry = RetryRecord::failed(topic, key, payload, delivery, &error);
                let _ = self.producer.context().retry_tx.send(retry);
                Attempt::Sent
            }
        }
    }

    /// Exactly-once mode: fences any earlier instance with the same `transactional.id`
    /// (its open transaction is aborted, a committing one completes) and opens a transaction.
    fn start_transactions(&self) -> Result<(), PipelineError> {
        let transaction = |context, source| self.transaction_error(context, source);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.producer.init_transactions(TRANSACTION_CALL_TIMEOUT) {
                Ok(()) => break,
                Err(error) if attempt < INIT_TRANSACTIONS_ATTEMPTS => {
                    events::kafka_client_error("producer", &error, "init transactions, retrying");
                    std::thread::sleep(retry_backoff(attempt));
                }
                Err(error) => return Err(transaction("init", error)),
            }
        }
        self.producer
            .begin_transaction()
            .map_err(|source| transaction("begin", source))
    }

    /// Exactly-once mode: commits the open transaction (every message produced since the last
    /// commit) together with the consumer `offsets`, then opens the next transaction. The
    /// checkpoint `sequence` goes into each offset's commit metadata ([`checkpoint_metadata`]).
    pub fn commit_transaction(
        &self,
        offsets: &[(String, i32, i64)],
        group: &ConsumerGroupMetadata,
        sequence: Option<u64>,
    ) -> Result<(), PipelineError> {
        let transaction = |context, source| self.transaction_error(context, source);
        if !offsets.is_empty() {
            let mut tpl = TopicPartitionList::with_capacity(offsets.len());
            for (topic, partition, next) in offsets {
                let mut elem = tpl.add_partition(topic, *partition);
                elem.set_offset(Offset::Offset(*next))
                    .map_err(|source| transaction("offsets", source))?;
                if let Some(sequence) = sequence {
                    elem.set_metadata(checkpoint_metadata(sequence));
                }
            }
            self.producer
                .send_offsets_to_transaction(&tpl, group, TRANSACTION_CALL_TIMEOUT)
                .map_err(|source| transaction("send offsets", source))?;
        }
        self.producer
            .commit_transaction(TRANSACTION_CALL_TIMEOUT)
            .map_err(|source| transaction("commit", source))?;
        self.producer
            .begin_transaction()
            .map_err(|source| transaction("begin", source))
    }

    /// Messages sent and not yet acknowledged.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }

    /// The producer's fatal error, if any (idempotence guarantees can no longer be kept);
    /// [`PipelineError::Fenced`] when another instance took over the transactional id.
    pub fn fatal_error(&self) -> Option<PipelineError> {
        let (code, reason) = self.producer.client().fatal_error()?;
        Some(match &self.transactional_id {
            Some(id) if is_fencing(code) => PipelineError::Fenced {
                transactional_id: id.clone(),
                reason,
            },
            _ => PipelineError::ProducerFatal {
                code: code.to_string(),
                reason,
            },
        })
    }

    /// A failed transactional call as an error: [`PipelineError::Fenced`] when another
    /// instance with the same transactional id took over.
    fn transaction_error(&self, context: &'static str, source: KafkaError) -> PipelineError {
        match (&self.transactional_id, source.rdkafka_error_code()) {
            (Some(id), Some(code)) if is_fencing(code) => PipelineError::Fenced {
                transactional_id: id.clone(),
                reason: source.to_string(),
            },
            _ => PipelineError::Transaction { context, source },
        }
    }
}

/// Produces failed messages again after their backoff; stopped at the end of the run.
pub struct RetryThread {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl RetryThread {
    fn spawn(
        sink: Arc<Sink>,
        retries: Receiver<RetryRecord>,
    ) -> Result<RetryThread, PipelineError> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let name = "veto-sink-retry".to_owned();
        let handle = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || loop {
                if stop_flag.load(Ordering::Acquire) {
                    return;
                }
                match retries.recv_timeout(Duration::from_millis(100)) {
                    Ok(record) => {
                        // Records arrive in failure order, so a burst of failures (a broker
                        // outage) is produced again together once its backoff has passed.
                        std::thread::sleep(record.due.saturating_duration_since(Instant::now()));
                        sink.resend_blocking(
                            &record.topic,
                            record.key.as_deref(),
                            &record.payload,
                            Box::new(record.delivery),
                        );
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            })
            .map_err(|source| PipelineError::ThreadSpawn { name, source })?;
        Ok(RetryThread { stop, handle })
    }

    /// Stops the thread and waits for it (at most one backoff).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.handle.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(retry_backoff(1), Duration::from_millis(100));
        assert_eq!(retry_backoff(2), Duration::from_millis(200));
        assert_eq!(retry_backoff(4), Duration::from_millis(800));
        assert_eq!(retry_backoff(30), Duration::from_secs(5));
    }

    #[test]
    fn event_tokens_acknowledge_their_slot() {
        let slot = Arc::new(PartitionSlot::new(
            "payments",
            0,
            super::super::partition::TopicKind::Payments,
        ));
        let seq = slot.register(9, 1);
        AckToken::Event {
            slot: Arc::clone(&slot),
            seq,
        }
        .acknowledge();
        assert_eq!(slot.safe_next(), Some(10));
    }
}
