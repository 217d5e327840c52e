//! The standby: replays payments and entity-tags through the engine up to the active's committed offsets, publishing nothing, and takes over when elected.
//!
//! One consumer with a manual assignment (it never joins the main group and never commits)
//! reads every partition of the two input topics from where the local state stands (its
//! checkpoint, else the start), and every partition of the decisions topic from the start.
//! A partition is applied only below the main group's committed offset, polled every
//! [`LIMIT_REFRESH`]: at a message at or past it the partition pauses (and seeks back to that
//! message) until the offset moves. The state is thus never ahead of what the active made
//! durable, and on takeover the pipeline starts exactly where the state stands. Timeout
//! decisions read from the decisions topic go to [`DeliveredTimeouts`].
//!
//! Takeover (the election says active): fence the previous active's transactional id
//! (exactly-once), read the final committed offsets, apply everything up to them and read the
//! decisions topic to its end, then hand over to the pipeline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use tokio::sync::watch;

use crate::event::{decode_decision, decode_event, decode_tag_update, InputFormat};
use crate::event::{PaymentEvent, TagUpdate};
use crate::pipeline::PipelineSettings;

use super::delivered::DeliveredTimeouts;
use super::error::HaError;
use super::{events, HaStatus, Role};

pub use crate::pipeline::fence;

/// How often the main group's committed offsets are read.
const LIMIT_REFRESH: Duration = Duration::from_millis(500);
/// How long `poll` blocks when idle.
const STANDBY_POLL: Duration = Duration::from_millis(20);
/// Takeover: no message for this long after the final offsets were read means the state is at
/// them and the decisions topic is read to its end.
const CAUGHT_UP_IDLE: Duration = Duration::from_millis(300);
/// Takeover: a partition that has not reached its committed offset (e.g. transaction markers
/// after its last message) counts as caught up after this long without messages.
const CAUGHT_UP_IDLE_LONG: Duration = Duration::from_secs(1);
/// Deadline of broker calls (metadata, committed offsets).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Replayed messages are counted in the metric in batches of this many.
const REPLAYED_BATCH: u64 = 1024;

/// The engine as the standby drives it.
pub trait Replica: Send + Sync + 'static {
    /// Counts one payment event into the state (features, tags, timers), publishing nothing.
    fn replay_event(&self, event: &PaymentEvent);
    /// Applies one tag update from the entity-tags topic.
    fn replay_tag_update(&self, update: &TagUpdate);
    /// The state now holds every message of `(topic, partition)` before `next`.
    fn replayed_to(&self, topic: &str, partition: i32, next: i64);
    /// Where the state stands for `(topic, partition)` (the restored checkpoint's offset).
    fn state_offset(&self, topic: &str, partition: i32) -> Option<i64>;
    /// Writes a checkpoint of the state as it stands (the standby is between messages).
    fn checkpoint(&self);
}

/// What the standby needs to know.
#[derive(Debug, Clone)]
pub struct StandbySettings {
    /// Brokers, groups, topics, formats, limits and `kafka.librdkafka`, as the pipeline has them.
    pub pipeline: PipelineSettings,
    pub instance_id: String,
    /// How often the standby checkpoints its state.
    pub checkpoint_interval: Duration,
    /// Takeover gives up catching up after this long (the pipeline then starts where the
    /// state stands).
    pub takeover_timeout: Duration,
}

/// How the standby ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StandbyEnd {
    /// Shutdown was requested; a final checkpoint is written.
    Stopped,
    /// Elected: the state is at the committed offsets (or as near as the takeover got).
    Elected,
}

/// The standby replay, run on a thread of its own by [`Standby::run`].
pub struct Standby {
    settings: StandbySettings,
    replica: Arc<dyn Replica>,
    delivered: Arc<DeliveredTimeouts>,
    status: Arc<HaStatus>,
    role: watch::Receiver<Role>,
    stop: watch::Receiver<bool>,
}

type Key = (String, i32);

/// Per-partition progress of the replay.
#[derive(Default)]
struct Progress {
    /// Next offset to apply (everything before it is in the state), per input partition.
    next: HashMap<Key, i64>,
    /// The main group's committed offset per input partition (absent: nothing committed).
    limit: HashMap<Key, i64>,
    /// Paused input partitions and the offset each was sought back to.
    paused: HashMap<Key, i64>,
    /// Resumed partitions: the offset their next message must have (a message fetched before
    /// the seek back must not be applied in its place).
    resumed: HashMap<Key, i64>,
    inputs: Vec<Key>,
    replayed: u64,
}

impl Progress {
    fn limit_of(&self, key: &Key) -> i64 {
        self.limit.get(key).copied().unwrap_or(0)
    }

    /// Messages between the state and the committed offsets.
    fn lag(&self) -> i64 {
        self.inputs
            .iter()
            .map(|k| {
                let next = self.next.get(k).copied().unwrap_or(0);
                (self.limit_of(k) - next).max(0)
            })
            .sum()
    }

    /// Every input partition applied up to its committed offset (or paused at it).
    fn at_limits(&self) -> bool {
        self.inputs.iter().all(|k| {
            self.paused.contains_key(k)
                || self.next.get(k).copied().unwrap_or(0) >= self.limit_of(k)
        })
    }
}

/// A takeover in progress.
struct Takeover {
    started: Instant,
    /// When the final committed offsets were read (after the fence).
    final_limits_at: Option<Instant>,
}

impl Standby {
    pub fn new(
        settings: StandbySettings,
        replica: Arc<dyn Replica>,
        delivered: Arc<DeliveredTimeouts>,
        status: Arc<HaStatus>,
        role: watch::Receiver<Role>,
        stop: watch::Receiver<bool>,
    ) -> Standby {
        Standby {
            settings,
            replica,
            delivered,
            status,
            role,
            stop,
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    fn elected(&self) -> bool {
        *self.role.borrow() == Role::Active
    }

    /// Replays until shutdown or election (blocking: run it off the async runtime).
    pub fn run(self) -> Result<StandbyEnd, HaError> {
        let consumer = self.consumer()?;
        let mut progress = Progress::default();
        let Some(assignment) = self.assign(&consumer, &mut progress)? else {
            self.replica.checkpoint();
            return Ok(StandbyEnd::Stopped);
        };
        events::standby_started(assignment.0, assignment.1);
        let mut last_refresh: Option<Instant> = None;
        let mut last_checkpoint = Instant::now();
        let mut last_message = Instant::now();
        let mut takeover: Option<Takeover> = None;
        loop {
            if self.stopping() {
                self.replica.checkpoint();
                events::replayed(progress.replayed % REPLAYED_BATCH);
                events::standby_stopped(progress.replayed, self.delivered.len());
                return Ok(StandbyEnd::Stopped);
            }
            if takeover.is_none() && self.elected() {
                let fence = self.settings.pipeline.clone();
                fence_previous(&fence)?;
                takeover = Some(Takeover {
                    started: Instant::now(),
                    final_limits_at: None,
                });
                last_refresh = None;
            }
            if last_refresh.is_none_or(|at| at.elapsed() >= LIMIT_REFRESH) {
                if self.refresh_limits(&consumer, &mut progress) {
                    if let Some(t) = takeover.as_mut() {
                        if t.final_limits_at.is_none() {
                            t.final_limits_at = Some(Instant::now());
                        }
                    }
                }
                last_refresh = Some(Instant::now());
            }
            if let Some(t) = &takeover {
                let caught_up = t.final_limits_at.is_some_and(|read_at| {
                    let idle = last_message.max(read_at).elapsed();
                    idle >= CAUGHT_UP_IDLE && (progress.at_limits() || idle >= CAUGHT_UP_IDLE_LONG)
                });
                let timed_out = t.started.elapsed() >= self.settings.takeover_timeout;
                if caught_up || timed_out {
                    events::replayed(progress.replayed % REPLAYED_BATCH);
                    events::takeover_ready(t.started.elapsed(), caught_up, self.delivered.len());
                    return Ok(StandbyEnd::Elected);
                }
            }
            match consumer.poll(STANDBY_POLL) {
                None => {}
                Some(Err(error)) => events::standby_consume_failed(&error),
                Some(Ok(message)) => {
                    last_message = Instant::now();
                    self.handle(&consumer, &mut progress, &message);
                }
            }
            if takeover.is_none() && last_checkpoint.elapsed() >= self.settings.checkpoint_interval
            {
                self.replica.checkpoint();
                last_checkpoint = Instant::now();
            }
        }
    }

    fn consumer(&self) -> Result<BaseConsumer<StandbyContext>, HaError> {
        let pipeline = &self.settings.pipeline;
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &pipeline.brokers)
            // The main group's id only to read its committed offsets: a manual assignment
            // never joins the group, and nothing is ever committed.
            .set("group.id", &pipeline.group_id)
            .set(
                "client.id",
                format!("veto-standby-{}", self.settings.instance_id),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "20")
            .set("queued.max.messages.kbytes", "16384");
        if pipeline.transactional_id.is_some() {
            config.set("isolation.level", "read_committed");
        }
        for (key, value) in &pipeline.librdkafka {
            config.set(key, value);
        }
        config
            .create_with_context(StandbyContext)
            .map_err(|source| HaError::ClientCreation {
                client: "standby consumer",
                source,
            })
    }

    /// Assigns every partition of the inputs (from the state's offset, else the start) and of
    /// the decisions topic (from the start). `None`: shutdown came first. Returns the number of
    /// partitions and of those starting from the state.
    fn assign(
        &self,
        consumer: &BaseConsumer<StandbyContext>,
        progress: &mut Progress,
    ) -> Result<Option<(usize, usize)>, HaError> {
        let pipeline = &self.settings.pipeline;
        let topics = [
            pipeline.payments_topic.as_str(),
            pipeline.entity_tags_topic.as_str(),
            pipeline.decisions_topic.as_str(),
        ];
        let mut tpl = TopicPartitionList::new();
        let mut from_state = 0;
        for (index, topic) in topics.iter().enumerate() {
            let Some(partitions) = self.partitions_of(consumer, topic) else {
                return Ok(None);
            };
            for partition in partitions {
                let key = (topic.to_string(), partition);
                let start = if index < 2 {
                    progress.inputs.push(key.clone());
                    match self.replica.state_offset(topic, partition) {
                        Some(next) => {
                            from_state += 1;
                            progress.next.insert(key, next);
                            Offset::Offset(next)
                        }
                        None => Offset::Beginning,
                    }
                } else {
                    Offset::Beginning
                };
                tpl.add_partition_offset(topic, partition, start)
                    .map_err(|source| HaError::Kafka {
                        context: "build the assignment",
                        source,
                    })?;
            }
        }
        consumer.assign(&tpl).map_err(|source| HaError::Kafka {
            context: "assign the partitions",
            source,
        })?;
        self.status.set_standby_reachable();
        Ok(Some((tpl.count(), from_state)))
    }

    /// The partitions of `topic`, retried until the broker answers; `None` on shutdown.
    fn partitions_of(
        &self,
        consumer: &BaseConsumer<StandbyContext>,
        topic: &str,
    ) -> Option<Vec<i32>> {
        loop {
            if self.stopping() {
                return None;
            }
            if let Ok(metadata) = consumer.fetch_metadata(Some(topic), CALL_TIMEOUT) {
                if let Some(t) = metadata.topics().first() {
                    if t.error().is_none() && !t.partitions().is_empty() {
                        return Some(t.partitions().iter().map(|p| p.id()).collect());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Reads the main group's committed offsets and resumes partitions they moved past.
    /// Returns whether the read succeeded.
    fn refresh_limits(
        &self,
        consumer: &BaseConsumer<StandbyContext>,
        progress: &mut Progress,
    ) -> bool {
        let mut tpl = TopicPartitionList::with_capacity(progress.inputs.len());
        for (topic, partition) in &progress.inputs {
            tpl.add_partition(topic, *partition);
        }
        let Ok(committed) = consumer.committed_offsets(tpl, CALL_TIMEOUT) else {
            return false;
        };
        for element in committed.elements() {
            if let Some(offset) = element.offset().to_raw().filter(|&o| o >= 0) {
                let key = (element.topic().to_owned(), element.partition());
                progress.limit.insert(key, offset);
            }
        }
        let movable: Vec<Key> = progress
            .paused
            .iter()
            .filter(|(key, held)| progress.limit_of(key) > **held)
            .map(|(key, _)| key.clone())
            .collect();
        if !movable.is_empty() {
            let mut resume = TopicPartitionList::new();
            for key in &movable {
                resume.add_partition(&key.0, key.1);
                if let Some(held) = progress.paused.remove(key) {
                    progress.resumed.insert(key.clone(), held);
                }
            }
            if let Err(error) = consumer.resume(&resume) {
                events::standby_consume_failed(&error);
            }
        }
        self.status.set_standby_lag(progress.lag());
        true
    }

    fn handle(
        &self,
        consumer: &BaseConsumer<StandbyContext>,
        progress: &mut Progress,
        message: &BorrowedMessage<'_>,
    ) {
        let pipeline = &self.settings.pipeline;
        let topic = message.topic();
        if topic == pipeline.decisions_topic {
            if let Some(Ok(decision)) = message
                .payload()
                .map(|raw| decode_decision(raw, InputFormat::Auto))
            {
                self.delivered.record(&decision);
            }
            return;
        }
        let (partition, offset) = (message.partition(), message.offset());
        let key = (topic.to_owned(), partition);
        if progress.paused.contains_key(&key)
            || progress.next.get(&key).is_some_and(|&next| offset < next)
        {
            return; // fetched before the pause or the seek back
        }
        if let Some(&expected) = progress.resumed.get(&key) {
            if offset > expected {
                // fetched before the seek back: read the partition again from `expected`
                let _ = consumer.seek(&key.0, key.1, Offset::Offset(expected), CALL_TIMEOUT);
                return;
            }
            progress.resumed.remove(&key);
        }
        if offset >= progress.limit_of(&key) {
            // Not committed by the active yet: wait here until it is.
            self.pause_at(consumer, progress, key, offset);
            return;
        }
        let raw = message.payload().unwrap_or_default();
        if topic == pipeline.payments_topic {
            if let Ok(event) = decode_event(raw, pipeline.input_format, pipeline.max_event_bytes) {
                if !too_far_ahead(pipeline, event.event_time_ms) {
                    self.replica.replay_event(&event);
                }
            }
        } else if let Ok(update) =
            decode_tag_update(raw, pipeline.input_format, pipeline.max_event_bytes)
        {
            self.replica.replay_tag_update(&update);
        }
        progress.next.insert(key, offset + 1);
        self.replica.replayed_to(topic, partition, offset + 1);
        progress.replayed += 1;
        if progress.replayed % REPLAYED_BATCH == 0 {
            events::replayed(REPLAYED_BATCH);
        }
    }

    fn pause_at(
        &self,
        consumer: &BaseConsumer<StandbyContext>,
        progress: &mut Progress,
        key: Key,
        offset: i64,
    ) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&key.0, key.1);
        if let Err(error) = consumer.pause(&tpl) {
            return events::standby_consume_failed(&error);
        }
        // Seeking discards what was fetched past the limit; resuming fetches from `offset`.
        if let Err(error) = consumer.seek(&key.0, key.1, Offset::Offset(offset), CALL_TIMEOUT) {
            events::standby_consume_failed(&error);
        }
        progress.paused.insert(key, offset);
    }
}

/// Exactly-once: fences the previous active (its open transaction aborts, a zombie can no
/// longer commit), so the committed offsets read next are final.
fn fence_previous(settings: &PipelineSettings) -> Result<(), HaError> {
    fence(settings).map_err(HaError::Fence)
}

/// The pipeline's `max_future_skew` check: such events were dead-lettered by the active.
fn too_far_ahead(settings: &PipelineSettings, event_time_ms: i64) -> bool {
    settings.max_future_skew.is_some_and(|skew| {
        let skew = i64::try_from(skew.as_millis()).unwrap_or(i64::MAX);
        event_time_ms > crate::service::now_ms().saturating_add(skew)
    })
}

/// Forwards the standby consumer's librdkafka logs and errors.
struct StandbyContext;

impl ClientContext for StandbyContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::pipeline::librdkafka_log("standby", level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        crate::pipeline::kafka_client_error("standby", &error, reason);
    }
}

impl ConsumerContext for StandbyContext {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_and_limits_follow_the_committed_offsets() {
        let key = ("payments".to_owned(), 0);
        let mut progress = Progress {
            inputs: vec![key.clone()],
            ..Progress::default()
        };
        // nothing committed yet: nothing to replay, at the limit
        assert_eq!(progress.lag(), 0);
        assert!(progress.at_limits());
        progress.limit.insert(key.clone(), 100);
        progress.next.insert(key.clone(), 40);
        assert_eq!(progress.lag(), 60);
        assert!(!progress.at_limits());
        progress.paused.insert(key.clone(), 100);
        assert!(progress.at_limits());
        // a state ahead of the committed offsets (an old active restarted) has no lag
        progress.next.insert(key, 150);
        assert_eq!(progress.lag(), 0);
    }
}
