//! The source: a consumer-group member on its own thread that hands each assigned partition's
//! queue to the workers and commits safe offsets.
//!
//! The consumer is polled on a dedicated thread, so rebalance callbacks (which run inside
//! `poll`) may block while revoked partitions drain. Messages never pass through it: each
//! partition's messages go to a queue of their own, split from the consumer's when the
//! partition is assigned (before fetching starts), which the workers read. Auto commit and
//! auto offset store are off: the source commits the offsets up to which every message's
//! outputs are acknowledged (see [`super::ack`]): every `commit_interval`, or, with a stateful
//! decider, right after each quiesced checkpoint with exactly the checkpoint's offsets.
//!
//! Over 800 lines on purpose: the poll loop, the rebalance callbacks and the checkpoint/commit
//! steps are one state machine over the same assignment and slots.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;
use serde::Deserialize;

use super::error::PipelineError;
use super::events;
use super::partition::{PartitionSlot, TopicKind};
use super::settings::PipelineSettings;
use super::sink::Sink;
use super::status::{PipelineStatus, RunCounters, RunSummary};
use super::worker::{PoolHandle, WorkerPool};
use super::Decider;

/// How long `poll` blocks when idle; bounds how fast a shutdown request is noticed.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// Fetched-but-unconsumed messages librdkafka may hold, in KiB (`queued.max.messages.kbytes`;
/// overridable in `kafka.librdkafka`). 16 MiB is ~0.5 s of input at 150k events/s.
const PREFETCH_KBYTES: &str = "16384";
/// How often drains check for progress.
const DRAIN_CHECK: Duration = Duration::from_millis(2);
/// Deadline for reading committed offsets when a partition is assigned.
const COMMITTED_LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Partitions currently owned, by topic kind and partition number.
#[derive(Default)]
struct Assignment {
    payments: HashMap<i32, Arc<PartitionSlot>>,
    entity_tags: HashMap<i32, Arc<PartitionSlot>>,
}

impl Assignment {
    fn slots_mut(&mut self, kind: TopicKind) -> &mut HashMap<i32, Arc<PartitionSlot>> {
        match kind {
            TopicKind::Payments => &mut self.payments,
            TopicKind::EntityTags => &mut self.entity_tags,
        }
    }

    fn all_slots(&self) -> Vec<Arc<PartitionSlot>> {
        self.payments
            .values()
            .chain(self.entity_tags.values())
            .cloned()
            .collect()
    }

    fn len(&self) -> usize {
        self.payments.len() + self.entity_tags.len()
    }
}

/// State shared between the source loop and the consumer callbacks (same thread, so the lock
/// is never contended; it is never held across `poll`).
pub struct SourceContext {
    payments_topic: String,
    entity_tags_topic: String,
    drain_timeout: Duration,
    decider: Arc<dyn Decider>,
    status: Arc<PipelineStatus>,
    assignment: Mutex<Assignment>,
    /// Set by `run` when shutdown starts: the drain deadline.
    stop_at: Arc<OnceLock<Instant>>,
    /// Exactly-once mode: the transactional sink that commits offsets with the decisions.
    transactional: Option<Arc<Sink>>,
    /// Exactly-once mode: a revocation that could not commit; the run loop stops on it.
    revoke_failed: Mutex<Option<String>>,
    /// The consumer itself, to split assigned partitions' queues from (set once created).
    consumer: OnceLock<Weak<BaseConsumer<SourceContext>>>,
    /// The workers: assigned partitions' queues go to them; checkpoints pause them.
    workers: PoolHandle,
    /// A partition whose queue could not be split; the run loop stops on it.
    split_failed: Mutex<Option<(String, i32)>>,
}

impl SourceContext {
    fn kind_of(&self, topic: &str) -> Option<TopicKind> {
        if topic == self.payments_topic {
            Some(TopicKind::Payments)
        } else if topic == self.entity_tags_topic {
            Some(TopicKind::EntityTags)
        } else {
            None
        }
    }

    fn mark_reachable(&self) {
        if self.status.mark_reachable() {
            events::broker_reachability_changed(true);
        }
    }

    /// New partitions: fresh slots starting where the decider's state stands, else at Kafka's
    /// committed offset (the start offset is moved to the state's when they differ).
    fn on_assign(&self, consumer: &BaseConsumer<SourceContext>, tpl: &mut TopicPartitionList) {
        let mut added = Vec::new();
        let mut slots = Vec::new();
        let mut from_state = Vec::new();
        {
            let mut assignment = self.assignment.lock();
            for elem in tpl.elements() {
                let (topic, partition) = (elem.topic(), elem.partition());
                let Some(kind) = self.kind_of(topic) else {
                    continue;
                };
                let slot = Arc::new(PartitionSlot::new(topic, partition, kind));
                assignment.slots_mut(kind).insert(partition, slot.clone());
                slots.push(slot);
                self.status.add_partition(topic, partition);
                added.push((topic.to_owned(), partition));
                if let Some(offset) = self.decider.state_offset(topic, partition) {
                    from_state.push((topic.to_owned(), partition, offset));
                }
            }
            events::partitions_assigned(&added, assignment.len());
        }
        let committed = consumer
            .committed_offsets(tpl.clone(), COMMITTED_LOOKUP_TIMEOUT)
            .map(|list| list.to_topic_map())
            .unwrap_or_default();
        let committed_of = |topic: &str, partition: i32| {
            committed
                .get(&(topic.to_owned(), partition))
                .and_then(|offset| offset.to_raw())
                .filter(|&o| o >= 0)
        };
        // Never behind the committed offset: the events before it were decided and committed
        // by whoever owned the partition meanwhile; deciding them again here would publish
        // them twice (the state then misses them, which is said).
        from_state.retain(
            |(topic, partition, state)| match committed_of(topic, *partition) {
                Some(committed) if committed > *state => {
                    events::state_behind_committed(topic, *partition, *state, committed);
                    false
                }
                _ => true,
            },
        );
        for slot in &slots {
            let committed = committed_of(&slot.topic, slot.partition);
            let state = from_state
                .iter()
                .find(|(t, p, _)| *t == slot.topic && *p == slot.partition)
                .map(|(_, _, offset)| *offset);
            if let Some(next) = state.or(committed) {
                slot.start_at(next, committed);
            }
        }
        for (topic, partition, state) in &from_state {
            let committed = committed_of(topic, *partition);
            if committed != Some(*state)
                && tpl
                    .set_partition_offset(topic, *partition, Offset::Offset(*state))
                    .is_ok()
            {
                events::partition_starts_from_state(topic, *partition, *state, committed);
            }
        }
        self.split_queues(&slots);
        self.status.set_joined();
        self.mark_reachable();
    }

    /// Gives every new partition its own queue, read by the workers. Split before the
    /// assignment starts fetching, so no message of it reaches the consumer's queue (librdkafka
    /// keeps a queue's forwarding that the application set).
    fn split_queues(&self, slots: &[Arc<PartitionSlot>]) {
        let consumer = self.consumer.get().and_then(Weak::upgrade);
        for slot in slots {
            let queue = consumer
                .as_ref()
                .and_then(|c| c.split_partition_queue(&slot.topic, slot.partition));
            let Some(mut queue) = queue else {
                events::partition_queue_failed(&slot.topic, slot.partition);
                *self.split_failed.lock() = Some((slot.topic.clone(), slot.partition));
                continue;
            };
            queue.set_nonempty_callback(self.workers.waker(slot));
            self.workers.attach(slot, Box::new(queue));
        }
    }

    /// Revoked partitions: queued messages are skipped (never decided here, so the new owner
    /// decides them), in-flight outputs are awaited, then the safe offsets are committed.
    fn on_revoke(&self, consumer: &BaseConsumer<SourceContext>, tpl: &TopicPartitionList) {
        let mut revoked = Vec::new();
        let remaining;
        {
            let mut assignment = self.assignment.lock();
            for elem in tpl.elements() {
                let Some(kind) = self.kind_of(elem.topic()) else {
                    continue;
                };
                if let Some(slot) = assignment.slots_mut(kind).remove(&elem.partition()) {
                    slot.revoke();
                    self.status.remove_partition(&slot.topic, slot.partition);
                    revoked.push(slot);
                }
            }
            remaining = assignment.len();
        }
        let mut deadline = Instant::now() + self.drain_timeout;
        if let Some(&stop_at) = self.stop_at.get() {
            deadline = deadline.min(stop_at);
        }
        let drained = wait_until(deadline, || revoked.iter().all(|s| s.is_drained()));
        // the workers are done with them (a worker reading one finishes its batch first)
        for slot in &revoked {
            slot.feed.lock().take();
        }
        let lost = consumer.assignment_lost();
        if self.transactional.is_some() {
            // The state covers every partition: checkpoint and commit them all in one transaction.
            let mut slots = self.assignment.lock().all_slots();
            slots.extend(revoked.iter().cloned());
            let paused = self.workers.pause();
            let quiet = wait_until(deadline, || {
                paused.idle() && slots.iter().all(|s| s.is_drained())
            });
            // Whether the open transaction holds decisions of the revoked partitions.
            let theirs = revoked
                .iter()
                .any(|s| !s.is_drained() || s.uncommitted_safe_next().is_some());
            let outcome = match (lost, quiet) {
                (true, _) => Err("the assignment was lost".to_owned()),
                (_, false) => Err("in-flight events not acknowledged in time".to_owned()),
                _ => match checkpoint_and_commit(consumer, &slots, CommitMode::Sync) {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err("the decider skipped the checkpoint".to_owned()),
                    Err(error) => Err(error.to_string()),
                },
            };
            if let (Err(reason), true) = (outcome, theirs) {
                // The new owner decides these partitions again from the committed offsets;
                // committing the open transaction later would publish their decisions twice.
                *self.revoke_failed.lock() = Some(reason);
            }
        } else if lost {
            // Not committed, yet the state has counted them: a later assignment in this run
            // continues from here.
            report_safe_offsets(self.decider.as_ref(), &revoked);
        } else {
            // Failures are logged inside; the new owner then starts from an older offset.
            let _ = commit_slots(
                consumer,
                self.decider.as_ref(),
                &revoked,
                CommitMode::Sync,
                false,
            );
        }
        let names: Vec<(String, i32)> = revoked
            .iter()
            .map(|s| (s.topic.clone(), s.partition))
            .collect();
        events::partitions_revoked(&names, remaining, drained, lost);
    }

    fn on_stats(&self, raw: &[u8]) {
        let Ok(stats) = serde_json::from_slice::<ClientStats>(raw) else {
            return;
        };
        let reachable = stats.brokers.values().any(|b| b.state == "UP");
        if reachable {
            self.mark_reachable();
        }
        for (topic, topic_stats) in &stats.topics {
            for partition in topic_stats.partitions.values() {
                if partition.partition >= 0
                    && self
                        .status
                        .set_lag(topic, partition.partition, partition.lag())
                {
                    events::consumer_lag(topic, partition.partition, partition.lag());
                }
            }
        }
    }
}

/// The part of librdkafka's statistics JSON the source reads.
#[derive(Deserialize)]
struct ClientStats {
    #[serde(default)]
    brokers: HashMap<String, BrokerStats>,
    #[serde(default)]
    topics: HashMap<String, TopicStats>,
}

#[derive(Deserialize)]
struct BrokerStats {
    state: String,
}

#[derive(Deserialize)]
struct TopicStats {
    #[serde(default)]
    partitions: HashMap<String, PartitionStats>,
}

#[derive(Deserialize)]
struct PartitionStats {
    partition: i32,
    consumer_lag: i64,
    /// Next offset handed to the application (-1001 before the first message).
    #[serde(default = "invalid_offset")]
    app_offset: i64,
    /// End of the partition (high watermark).
    #[serde(default = "invalid_offset")]
    hi_offset: i64,
}

fn invalid_offset() -> i64 {
    -1
}

impl PartitionStats {
    /// Messages between the end of the partition and the next one Veto will consume. Offsets are
    /// committed only with checkpoints, so librdkafka's own (commit-based) `consumer_lag` would
    /// grow in steps of the checkpoint interval even when Veto keeps up.
    fn lag(&self) -> i64 {
        if self.app_offset >= 0 && self.hi_offset >= 0 {
            (self.hi_offset - self.app_offset).max(0)
        } else {
            self.consumer_lag
        }
    }
}

impl ClientContext for SourceContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        events::librdkafka_log("consumer", level, fac, log_message);
    }

    fn stats_raw(&self, statistics: &[u8]) {
        self.on_stats(statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown)
            && self.status.is_broker_reachable()
        {
            self.status.set_broker_reachable(false);
            events::broker_reachability_changed(false);
        }
        events::kafka_client_error("consumer", &error, reason);
    }
}

impl ConsumerContext for SourceContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.on_assign(consumer, tpl);
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.on_revoke(consumer, tpl);
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                events::rebalance_failed(&RDKafkaErrorCode::from(other).to_string());
                // Like librdkafka's default: drop the whole assignment.
                if let Ok(current) = consumer.assignment() {
                    self.on_revoke(consumer, &current);
                }
                consumer.unassign()
            }
        };
        if let Err(error) = result {
            events::rebalance_failed(&error.to_string());
        }
    }

    fn commit_callback(&self, result: Result<(), KafkaError>, offsets: &TopicPartitionList) {
        events::offsets_committed(offsets.count(), result.as_ref().map(|_| ()));
        if result.is_err() {
            return;
        }
        let mut assignment = self.assignment.lock();
        for elem in offsets.elements() {
            let (Some(kind), Some(next)) = (self.kind_of(elem.topic()), elem.offset().to_raw())
            else {
                continue;
            };
            if let Some(slot) = assignment.slots_mut(kind).get(&elem.partition()) {
                slot.mark_committed(next);
            }
        }
    }
}

/// Polls `done` until it holds or `deadline` passes; returns whether it held.
pub(crate) fn wait_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(DRAIN_CHECK);
    }
}

/// The safe offsets of the slots that have one.
fn safe_offsets(slots: &[Arc<PartitionSlot>]) -> NextOffsets {
    slots
        .iter()
        .filter_map(|slot| Some((slot.topic.clone(), slot.partition, slot.safe_next()?)))
        .collect()
}

/// Reports the slots' safe offsets to the decider (where its state stands) without committing.
fn report_safe_offsets(decider: &dyn Decider, slots: &[Arc<PartitionSlot>]) {
    let offsets = safe_offsets(slots);
    if !offsets.is_empty() {
        decider.on_safe_offsets(&offsets);
    }
}

/// Reports the slots' safe offsets to the decider, then commits them.
///
/// With `force` every slot with a safe offset is committed, else only those that moved since
/// the last commit. Returns the committed `(topic, partition, next offset)` list.
fn commit_slots(
    consumer: &BaseConsumer<SourceContext>,
    decider: &dyn Decider,
    slots: &[Arc<PartitionSlot>],
    mode: CommitMode,
    force: bool,
) -> Result<Vec<(String, i32, i64)>, KafkaError> {
    let offsets = if force {
        safe_offsets(slots)
    } else {
        slots
            .iter()
            .filter_map(|slot| {
                Some((
                    slot.topic.clone(),
                    slot.partition,
                    slot.uncommitted_safe_next()?,
                ))
            })
            .collect()
    };
    commit_offsets(consumer, decider, slots, offsets, mode)
}

/// Reports `offsets` to the decider, then commits them and marks the slots (a sync commit
/// at once, an async one in the commit callback).
fn commit_offsets(
    consumer: &BaseConsumer<SourceContext>,
    decider: &dyn Decider,
    slots: &[Arc<PartitionSlot>],
    offsets: Vec<(String, i32, i64)>,
    mode: CommitMode,
) -> Result<Vec<(String, i32, i64)>, KafkaError> {
    if offsets.is_empty() {
        return Ok(offsets);
    }
    decider.on_safe_offsets(&offsets);
    let mut tpl = TopicPartitionList::with_capacity(offsets.len());
    for (topic, partition, next) in &offsets {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
    }
    let result = consumer.commit(&tpl, mode);
    if matches!(mode, CommitMode::Async) {
        // Queued; the commit callback logs the outcome and marks the slots once confirmed.
        if let Err(error) = &result {
            events::offsets_committed(offsets.len(), Err(error));
        }
        return result.map(|()| offsets);
    }
    events::offsets_committed(offsets.len(), result.as_ref().map(|_| ()));
    result?;
    mark_committed(slots, &offsets);
    Ok(offsets)
}

/// `(topic, partition, next offset to consume)` of partitions.
type NextOffsets = Vec<(String, i32, i64)>;

/// Lets the decider checkpoint at the slots' safe offsets and publish them: an offset commit
/// in `mode`, or in exactly-once mode the transaction commit (decisions and offsets together).
/// Returns the offsets handed over (`None` when the decider skipped the checkpoint); a failed
/// transaction is an error (fatal: its outcome is settled at the next start), a failed plain
/// commit is only logged (the next one retries).
fn checkpoint_and_commit(
    consumer: &BaseConsumer<SourceContext>,
    slots: &[Arc<PartitionSlot>],
    mode: CommitMode,
) -> Result<Option<NextOffsets>, PipelineError> {
    let context = consumer.context();
    let decider = context.decider.as_ref();
    let offsets = safe_offsets(slots);
    let mut failed = None;
    let mut published = false;
    decider.checkpoint(&offsets, &mut |sequence| {
        published = true;
        let Some(sink) = &context.transactional else {
            return commit_offsets(consumer, decider, slots, offsets.clone(), mode)
                .map(|_| ())
                .map_err(|e| e.to_string());
        };
        decider.on_safe_offsets(&offsets);
        let group = consumer
            .group_metadata()
            .ok_or_else(|| "no consumer group metadata".to_owned())?;
        match sink.commit_transaction(&offsets, &group, sequence) {
            Ok(()) => {
                events::transaction_committed(offsets.len());
                mark_committed(slots, &offsets);
                Ok(())
            }
            Err(error) => {
                let message = error.to_string();
                failed = Some(error);
                Err(message)
            }
        }
    });
    match failed {
        Some(error) => Err(error),
        None => Ok(published.then_some(offsets)),
    }
}

/// Marks the slots whose offsets were committed.
fn mark_committed(slots: &[Arc<PartitionSlot>], offsets: &[(String, i32, i64)]) {
    for slot in slots {
        if let Some((_, _, next)) = offsets
            .iter()
            .find(|(t, p, _)| *t == slot.topic && *p == slot.partition)
        {
            slot.mark_committed(*next);
        }
    }
}

/// The consumer side of the pipeline; `run` loops on its own thread until shutdown.
pub struct Source {
    consumer: Arc<BaseConsumer<SourceContext>>,
    workers: WorkerPool,
    sink: Arc<Sink>,
    counters: Arc<RunCounters>,
    abort: Arc<AtomicBool>,
    commit_interval: Duration,
    drain_timeout: Duration,
}

impl Source {
    /// Creates the consumer and subscribes to the payments and entity-tags topics.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: &PipelineSettings,
        decider: Arc<dyn Decider>,
        status: Arc<PipelineStatus>,
        workers: WorkerPool,
        sink: Arc<Sink>,
        counters: Arc<RunCounters>,
        abort: Arc<AtomicBool>,
        stop_at: Arc<OnceLock<Instant>>,
    ) -> Result<Source, PipelineError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &settings.brokers)
            .set("group.id", &settings.group_id)
            .set("client.id", &settings.client_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            // Latency first: a fetch returns within 5 ms even when little data is waiting.
            .set("fetch.wait.max.ms", "5")
            // A bounded prefetch: a backlog waits in Kafka, not in Veto's memory (librdkafka's
            // default holds up to 64 MiB of fetched messages, the RSS spikes of the soak).
            .set("queued.max.messages.kbytes", PREFETCH_KBYTES)
            // Once the prefetch is full librdkafka pauses a partition's fetches for this long
            // (default 1 s): Veto drained it in ~0.5 s and then idled, running in bursts.
            // 10 ms resumes fetching soon after there is room.
            .set("fetch.queue.backoff.ms", "10")
            // Messages kept waiting per partition (its queue, read by the workers).
            .set("queued.min.messages", settings.queue_capacity.to_string())
            .set("statistics.interval.ms", "1000");
        if let Some((session, heartbeat)) = settings.session {
            config
                .set("session.timeout.ms", session.as_millis().to_string())
                .set("heartbeat.interval.ms", heartbeat.as_millis().to_string());
        }
        if settings.transactional_id.is_some() {
            // Exactly-once end to end: upstream transactional writes count once committed.
            config.set("isolation.level", "read_committed");
        }
        for (key, value) in &settings.librdkafka {
            config.set(key, value);
        }
        let context = SourceContext {
            payments_topic: settings.payments_topic.clone(),
            entity_tags_topic: settings.entity_tags_topic.clone(),
            drain_timeout: settings.drain_timeout,
            decider,
            status,
            assignment: Mutex::new(Assignment::default()),
            stop_at,
            transactional: settings
                .transactional_id
                .as_ref()
                .map(|_| Arc::clone(&sink)),
            revoke_failed: Mutex::new(None),
            consumer: OnceLock::new(),
            workers: workers.handle(),
            split_failed: Mutex::new(None),
        };
        let consumer: Arc<BaseConsumer<SourceContext>> =
            Arc::new(config.create_with_context(context).map_err(|source| {
                PipelineError::ClientCreation {
                    client: "consumer",
                    source,
                }
            })?);
        let _ = consumer.context().consumer.set(Arc::downgrade(&consumer));
        let topics = [
            settings.payments_topic.as_str(),
            settings.entity_tags_topic.as_str(),
        ];
        consumer
            .subscribe(&topics)
            .map_err(|source| PipelineError::Subscribe {
                topics: topics.iter().map(|t| t.to_string()).collect(),
                source,
            })?;
        Ok(Source {
            consumer,
            workers,
            sink,
            counters,
            abort,
            commit_interval: settings.commit_interval,
            drain_timeout: settings.drain_timeout,
        })
    }

    fn context(&self) -> &SourceContext {
        self.consumer.context()
    }

    /// Serves the consumer (rebalances, errors, statistics) and commits until shutdown is
    /// requested (or a fatal error), then drains and commits.
    pub fn run(self) -> Result<RunSummary, PipelineError> {
        let mut last_commit = Instant::now();
        // A stateful decider's checkpoints pace the commits: Kafka never runs ahead of the state.
        let checkpoints = self.context().decider.checkpoint_interval();
        let commit_every = checkpoints.unwrap_or(self.commit_interval);
        let failure = loop {
            if let Some(&deadline) = self.context().stop_at.get() {
                return self.shut_down(deadline, None);
            }
            if let Some(fatal) = self.sink.fatal_error() {
                break fatal;
            }
            if !self.workers.all_alive() {
                break PipelineError::ThreadPanicked("a worker thread exited".to_owned());
            }
            let polled = self.consumer.poll(IDLE_POLL);
            if let Some(reason) = self.context().revoke_failed.lock().take() {
                break PipelineError::RevokeUncommitted { reason };
            }
            if let Some((topic, partition)) = self.context().split_failed.lock().take() {
                break PipelineError::PartitionQueue { topic, partition };
            }
            match polled {
                None => {}
                // Cannot happen: every assigned partition's queue is split before fetching
                // starts. Deciding it here could break its partition's order: stop instead.
                Some(Ok(message)) => {
                    break PipelineError::PartitionQueue {
                        topic: message.topic().to_owned(),
                        partition: message.partition(),
                    }
                }
                Some(Err(error)) => events::consume_failed(&error),
            }
            if last_commit.elapsed() >= commit_every {
                // Plain commit failures are logged inside; the next commit retries.
                if checkpoints.is_some() {
                    if let Err(error) = self.quiesced_checkpoint() {
                        break error;
                    }
                } else {
                    let _ = self.commit(CommitMode::Async, false);
                }
                last_commit = Instant::now();
            }
        };
        // A fatal error: still drain what can be drained, commit the safe offsets, report it.
        let deadline = Instant::now() + self.drain_timeout;
        self.shut_down(deadline, Some(failure))
    }

    /// Pauses the workers until every message they took is decided and its outputs
    /// acknowledged, lets the decider checkpoint at those offsets, then commits exactly them.
    /// Past the drain timeout it skips both, and says so: the state already counts events
    /// decided past the safe offsets (outputs unacknowledged), so a checkpoint then would be
    /// ahead of its offsets and a restart would count those events twice; the previous
    /// checkpoint and commit stand, the next interval tries again. Timeouts are the decider's
    /// business: at-least-once keeps unacknowledged fired timers in the checkpoint, exactly-once
    /// pauses the timers until every fired one is in the transaction.
    fn quiesced_checkpoint(&self) -> Result<(), PipelineError> {
        let started = Instant::now();
        let slots = self.context().assignment.lock().all_slots();
        let paused = self.context().workers.pause();
        let quiet = wait_until(started + self.drain_timeout, || {
            paused.idle() && slots.iter().all(|s| s.is_drained())
        });
        events::checkpoint_quiesced(started.elapsed(), quiet);
        if !quiet {
            return Ok(());
        }
        let checkpointed = checkpoint_and_commit(&self.consumer, &slots, CommitMode::Async);
        drop(paused);
        events::checkpoint_pause_ended(started.elapsed());
        checkpointed.map(|_| ())
    }

    /// Reports and commits safe offsets of every owned partition.
    fn commit(&self, mode: CommitMode, force: bool) -> Result<Vec<(String, i32, i64)>, KafkaError> {
        let slots = self.context().assignment.lock().all_slots();
        commit_slots(
            &self.consumer,
            self.context().decider.as_ref(),
            &slots,
            mode,
            force,
        )
    }

    /// Stops the workers after the batch in hand, waits for every output to be acknowledged, flushes the producer and commits the safe offsets, all by `deadline`.
    fn shut_down(
        self,
        deadline: Instant,
        failure: Option<PipelineError>,
    ) -> Result<RunSummary, PipelineError> {
        let started = Instant::now();
        let timeout = deadline.saturating_duration_since(started);
        // Also bounds the revocation that closing the consumer triggers.
        let _ = self.context().stop_at.set(deadline);
        self.context().status.set_stopping();
        events::drain_started(timeout);

        let Source {
            consumer,
            workers,
            sink,
            counters,
            abort,
            drain_timeout,
            ..
        } = self;
        let handles: Vec<JoinHandle<()>> = workers.close();
        let workers_done = wait_until(deadline, || handles.iter().all(|h| h.is_finished()));
        let acked = wait_until(deadline, || sink.in_flight() <= 0);
        let flushed = sink
            .flush(deadline.saturating_duration_since(Instant::now()))
            .is_ok();
        let drained = workers_done && acked && flushed;
        let busy_workers = handles.iter().filter(|h| !h.is_finished()).count();
        if !drained {
            abort.store(true, Ordering::Release);
            // Said before the commit below, which may wait on an unreachable broker: an
            // orchestrator's SIGKILL then still finds the reason in the log.
            events::drain_timed_out(drain_timeout, sink.in_flight(), busy_workers);
        }

        let slots = consumer.context().assignment.lock().all_slots();
        let commit = if consumer.context().transactional.is_some() {
            if drained && failure.is_none() {
                checkpoint_and_commit(&consumer, &slots, CommitMode::Sync)
                    .map(Option::unwrap_or_default)
            } else {
                // Undrained or failed: leave the transaction open; it is aborted, the next
                // start settles from the checkpoint and replays.
                Ok(Vec::new())
            }
        } else {
            // Undrained (the broker is likely unreachable): queue the commit without waiting
            // for it; the deadline has passed already.
            let mode = if drained {
                CommitMode::Sync
            } else {
                CommitMode::Async
            };
            commit_slots(
                &consumer,
                consumer.context().decider.as_ref(),
                &slots,
                mode,
                true,
            )
            .map_err(|source| PipelineError::FinalCommit { source })
        };
        // The partitions' queues hold the consumer: let it go, so that dropping it below
        // leaves the group at once.
        for slot in &slots {
            slot.feed.lock().take();
        }
        let mut panicked = false;
        for handle in handles {
            if handle.is_finished() {
                panicked |= handle.join().is_err();
            }
        }

        if let Some(failure) = failure {
            return Err(failure);
        }
        if panicked {
            return Err(PipelineError::ThreadPanicked(
                "a worker thread panicked".to_owned(),
            ));
        }
        if !drained {
            return Err(PipelineError::DrainTimeout {
                timeout: drain_timeout,
                unacknowledged: sink.in_flight(),
                busy_workers,
            });
        }
        let committed = commit?;
        events::drain_finished(started.elapsed(), committed.len());
        Ok(counters.summary(safe_offsets(&slots)))
    }
}
