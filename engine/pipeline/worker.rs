//! Worker pool: decodes, decides and publishes consumed messages, each partition in offset order.
//!
//! Every partition has its own bounded lane of waiting messages (in its [`PartitionSlot`]).
//! A lane with messages is on the shared ready queue exactly once; a worker takes it, handles
//! up to [`LANE_BATCH`] of its messages and puts it back at the end of the ready queue if more
//! are waiting. So one partition is never handled by two workers at once (offset order holds),
//! while any idle worker can take any partition: skewed partitions no longer leave one worker
//! idle and another saturated. Workers are plain threads: decoding and deciding never run on
//! the async runtime. The source waits when a lane is full.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};

use crate::decider::Decided;
use crate::event::{
    dead_letter, dead_letter_key, decode_event_into, decode_tag_update, encode_decision_into,
    Decision, EventError, InputFormat, OutputFormat, PaymentEvent,
};

use super::ack::AckSeq;
use super::error::PipelineError;
use super::events;
use super::partition::{PartitionSlot, TopicKind};
use super::settings::PipelineSettings;
use super::sink::{AckToken, Sink};
use super::status::RunCounters;
use super::Decider;

/// Messages a worker handles from one lane before giving other lanes a turn.
const LANE_BATCH: usize = 64;
/// How often an idle worker checks whether the pool is closing.
const CLOSE_CHECK: Duration = Duration::from_millis(20);

/// One consumed message on its way to a worker (its partition is the lane it waits in).
#[derive(Debug)]
pub struct WorkItem {
    pub offset: i64,
    /// Key bytes followed by payload bytes: one allocation per message instead of two.
    data: Vec<u8>,
    /// Length of the key at the start of `data`; `None` when the message has no key.
    key_len: Option<usize>,
    /// Whether the message has a payload (the rest of `data`), as opposed to a null value.
    has_payload: bool,
}

/// A partition's waiting messages, in offset order.
#[derive(Debug, Default)]
pub struct Lane {
    items: VecDeque<WorkItem>,
    /// On the ready queue or being handled by a worker: at most one of either at a time.
    scheduled: bool,
}

impl WorkItem {
    /// Copies a consumed message's key and payload.
    pub fn new(offset: i64, key: Option<&[u8]>, payload: Option<&[u8]>) -> WorkItem {
        let (k, p) = (key.unwrap_or_default(), payload.unwrap_or_default());
        let mut data = Vec::with_capacity(k.len() + p.len());
        data.extend_from_slice(k);
        data.extend_from_slice(p);
        WorkItem {
            offset,
            data,
            key_len: key.map(<[u8]>::len),
            has_payload: payload.is_some(),
        }
    }

    /// The message key, if any.
    pub fn key(&self) -> Option<&[u8]> {
        self.key_len.and_then(|len| self.data.get(..len))
    }

    /// The message payload, or why there is none: a null value (a Kafka tombstone).
    pub fn value(&self) -> Result<&[u8], EventError> {
        if self.has_payload {
            Ok(self.payload())
        } else {
            Err(EventError::Undecodable {
                format: "message",
                detail: "null value (a tombstone), not an event".to_owned(),
            })
        }
    }

    /// The message payload; empty for a null value.
    pub fn payload(&self) -> &[u8] {
        if !self.has_payload {
            return &[];
        }
        self.data
            .get(self.key_len.unwrap_or(0)..)
            .unwrap_or_default()
    }
}

/// Why a message could not be queued.
pub enum DispatchError {
    /// The partition's lane is full; the item comes back.
    Full(WorkItem),
    /// The worker thread is gone (it panicked).
    WorkerGone,
}

/// Everything a worker needs, shared by all workers.
struct WorkerShared {
    decider: Arc<dyn Decider>,
    sink: Arc<Sink>,
    counters: Arc<RunCounters>,
    abort: Arc<AtomicBool>,
    decisions_topic: String,
    dead_letters_topic: String,
    shadow_topic: Option<String>,
    input_format: InputFormat,
    output_format: OutputFormat,
    max_event_bytes: usize,
    /// Latest accepted event time, as milliseconds ahead of the wall clock.
    max_future_skew_ms: Option<i64>,
    metrics: events::DecisionMetrics,
    /// Set by [`WorkerPool::close`]: workers exit once no lane is scheduled.
    closing: AtomicBool,
    /// Lanes on the ready queue or being handled.
    scheduled_lanes: AtomicUsize,
}

/// The worker threads and the ready queue of lanes they share.
pub struct WorkerPool {
    /// Unbounded, yet never longer than the assigned partitions: a lane is on it at most once.
    ready: Sender<Arc<PartitionSlot>>,
    lane_capacity: usize,
    shared: Arc<WorkerShared>,
    handles: Vec<JoinHandle<()>>,
}

impl WorkerPool {
    pub fn start(
        settings: &PipelineSettings,
        decider: Arc<dyn Decider>,
        sink: Arc<Sink>,
        counters: Arc<RunCounters>,
        abort: Arc<AtomicBool>,
    ) -> Result<WorkerPool, PipelineError> {
        let shared = Arc::new(WorkerShared {
            decider,
            sink,
            counters,
            abort,
            decisions_topic: settings.decisions_topic.clone(),
            dead_letters_topic: settings.dead_letters_topic.clone(),
            shadow_topic: settings.shadow_topic.clone(),
            input_format: settings.input_format,
            output_format: settings.output_format,
            max_event_bytes: settings.max_event_bytes,
            max_future_skew_ms: settings
                .max_future_skew
                .map(|skew| i64::try_from(skew.as_millis()).unwrap_or(i64::MAX)),
            metrics: events::DecisionMetrics::register(),
            closing: AtomicBool::new(false),
            scheduled_lanes: AtomicUsize::new(0),
        });
        let (ready, ready_rx) = unbounded();
        let mut handles = Vec::with_capacity(settings.workers);
        for index in 0..settings.workers {
            let shared = Arc::clone(&shared);
            let (ready, ready_rx) = (ready.clone(), ready_rx.clone());
            let name = format!("veto-worker-{index}");
            let handle = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || shared.run(&ready, &ready_rx))
                .map_err(|source| PipelineError::ThreadSpawn { name, source })?;
            handles.push(handle);
        }
        Ok(WorkerPool {
            ready,
            lane_capacity: settings.queue_capacity,
            shared,
            handles,
        })
    }

    /// Queues an item in its partition's lane without waiting, and schedules the lane if it
    /// was idle.
    ///
    /// The caller backs off on [`DispatchError::Full`] instead of waiting on a condition: a
    /// waiter woken by every taken message costs a context switch per message for both
    /// threads exactly when the workers are the bottleneck.
    pub fn dispatch(&self, slot: &Arc<PartitionSlot>, item: WorkItem) -> Result<(), DispatchError> {
        let mut lane = slot.lane.lock();
        if lane.items.len() >= self.lane_capacity {
            return Err(DispatchError::Full(item));
        }
        slot.note_dispatched();
        lane.items.push_back(item);
        if lane.scheduled {
            return Ok(());
        }
        lane.scheduled = true;
        self.shared.scheduled_lanes.fetch_add(1, Ordering::AcqRel);
        drop(lane);
        self.ready
            .send(Arc::clone(slot))
            .map_err(|_| DispatchError::WorkerGone)
    }

    /// Whether every worker thread is still running.
    pub fn all_alive(&self) -> bool {
        self.handles.iter().all(|handle| !handle.is_finished())
    }

    /// Stops taking new items; workers finish every queued one, then exit.
    pub fn close(self) -> Vec<JoinHandle<()>> {
        self.shared.closing.store(true, Ordering::Release);
        self.handles
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What a worker reuses from message to message: once warm, decoding, deciding and encoding
/// an event allocate nothing for these.
#[derive(Default)]
struct Scratch {
    event: PaymentEvent,
    decided: Decided,
    /// The encoded output; the producer copies it.
    encoded: Vec<u8>,
}

/// The key a decision is published under: its txn_id, else its event_id.
pub fn decision_key(decision: &Decision) -> &[u8] {
    decision
        .txn_id
        .as_deref()
        .unwrap_or(&decision.event_id)
        .as_bytes()
}

impl WorkerShared {
    fn run(&self, ready: &Sender<Arc<PartitionSlot>>, ready_rx: &Receiver<Arc<PartitionSlot>>) {
        let mut scratch = Scratch::default();
        let mut batch = Vec::with_capacity(LANE_BATCH);
        loop {
            match ready_rx.recv_timeout(CLOSE_CHECK) {
                Ok(slot) => {
                    if !self.serve(&slot, &mut batch, &mut scratch) {
                        // More waiting: back to the end of the ready queue, behind the other
                        // lanes. Cannot fail: this worker holds a receiver.
                        let _ = ready.send(slot);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if self.closing.load(Ordering::Acquire)
                        && self.scheduled_lanes.load(Ordering::Acquire) == 0
                    {
                        return;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Handles up to [`LANE_BATCH`] messages of a scheduled lane in offset order. Returns
    /// `false` when messages remain (the lane stays scheduled and goes back on the ready
    /// queue), `true` when the lane is empty and was unscheduled.
    fn serve(
        &self,
        slot: &Arc<PartitionSlot>,
        batch: &mut Vec<WorkItem>,
        scratch: &mut Scratch,
    ) -> bool {
        {
            let mut lane = slot.lane.lock();
            let take = lane.items.len().min(LANE_BATCH);
            batch.extend(lane.items.drain(..take));
        }
        for item in batch.drain(..) {
            if slot.is_revoked() || self.abort.load(Ordering::Acquire) {
                events::revoked_message_skipped();
            } else {
                match slot.kind {
                    TopicKind::Payments => self.handle_payment(slot, &item, scratch),
                    TopicKind::EntityTags => self.handle_tag_update(slot, &item),
                }
            }
            slot.note_processed();
        }
        let mut lane = slot.lane.lock();
        if !lane.items.is_empty() {
            return false;
        }
        lane.scheduled = false;
        self.scheduled_lanes.fetch_sub(1, Ordering::AcqRel);
        true
    }

    fn handle_payment(&self, slot: &Arc<PartitionSlot>, item: &WorkItem, scratch: &mut Scratch) {
        let event = &mut scratch.event;
        let decoded = item
            .value()
            .and_then(|raw| decode_event_into(raw, self.input_format, self.max_event_bytes, event));
        if let Err(error) = decoded {
            return self.reject(slot, item, &error);
        }
        if let Some(error) = self.too_far_ahead(event.event_time_ms) {
            return self.reject(slot, item, &error);
        }
        let started = Instant::now();
        self.decider.decide(event, &mut scratch.decided);
        let eval = started.elapsed();

        let Decided { decision, shadow } = &scratch.decided;
        self.metrics.event_decided(decision.outcome, eval);
        self.counters.events_decided.fetch_add(1, Ordering::AcqRel);
        let shadow = match (shadow, &self.shadow_topic) {
            (Some(shadow), Some(topic)) => {
                self.metrics.shadow_decided(shadow.outcome);
                Some((shadow, topic))
            }
            (Some(_), None) => {
                events::shadow_dropped();
                None
            }
            (None, _) => None,
        };
        let seq = slot.register(item.offset, 1 + usize::from(shadow.is_some()));
        let outputs = std::iter::once((decision, &self.decisions_topic)).chain(shadow);
        for (decision, topic) in outputs {
            encode_decision_into(decision, self.output_format, &mut scratch.encoded);
            let key = Some(decision_key(decision));
            if !self.send(slot, seq, topic, key, &scratch.encoded) {
                return;
            }
        }
    }

    /// An event time further ahead of the wall clock than `pipeline.max_future_skew`.
    fn too_far_ahead(&self, event_time_ms: i64) -> Option<EventError> {
        let skew = self.max_future_skew_ms?;
        let now = now_ms();
        (event_time_ms > now.saturating_add(skew)).then(|| EventError::InvalidTime {
            field: "event_time",
            detail: format!(
                "{} ms ahead of Veto's clock, more than pipeline.max_future_skew ({skew} ms)",
                event_time_ms - now
            ),
        })
    }

    fn handle_tag_update(&self, slot: &Arc<PartitionSlot>, item: &WorkItem) {
        match item
            .value()
            .and_then(|raw| decode_tag_update(raw, self.input_format, self.max_event_bytes))
            .and_then(|update| self.decider.apply_tag_update(&update))
        {
            Ok(()) => {
                self.metrics.tag_update_applied();
                self.counters.tag_updates.fetch_add(1, Ordering::AcqRel);
                slot.register(item.offset, 0);
            }
            Err(error) => self.reject(slot, item, &error),
        }
    }

    /// Publishes a dead letter for a message that could not be decoded or validated.
    fn reject(&self, slot: &Arc<PartitionSlot>, item: &WorkItem, error: &EventError) {
        let reason = error.to_string();
        events::dead_lettered(
            error.reason_code(),
            &reason,
            &slot.topic,
            slot.partition,
            item.offset,
        );
        self.counters.dead_letters.fetch_add(1, Ordering::AcqRel);
        let raw = item.payload();
        let payload = dead_letter(
            raw,
            error,
            &slot.topic,
            slot.partition,
            item.offset,
            now_ms(),
            self.max_event_bytes,
        );
        let seq = slot.register(item.offset, 1);
        let key = dead_letter_key(item.key());
        self.send(slot, seq, &self.dead_letters_topic, key, &payload);
    }

    /// Produces one output of a registered message; `false` once the run is aborted.
    fn send(
        &self,
        slot: &Arc<PartitionSlot>,
        seq: AckSeq,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
    ) -> bool {
        let token = AckToken::Event {
            slot: Arc::clone(slot),
            seq,
        };
        self.sink.send_blocking(topic, key, payload, token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::event::{PaymentEvent, TagUpdate};
    use crate::pipeline::status::PipelineStatus;
    use parking_lot::{Condvar, Mutex};
    use std::collections::{HashMap, HashSet};

    /// Records which thread applied which tag update (value "PARTITION:OFFSET"), checks that no
    /// partition is handled by two threads at once, and holds the first update back until two
    /// workers are inside at the same time (so a test can prove two partitions run in parallel).
    #[derive(Default)]
    struct Recorder {
        seen: Mutex<Vec<(String, i32, i64)>>,
        busy_partitions: Mutex<HashSet<i32>>,
        overlaps: AtomicUsize,
        inside: Mutex<usize>,
        both_inside: Condvar,
        met: AtomicBool,
    }

    impl Decider for Recorder {
        fn decide(&self, _event: &PaymentEvent, _out: &mut Decided) {}

        fn apply_tag_update(&self, update: &TagUpdate) -> Result<(), EventError> {
            let (partition, offset) = update.value.split_once(':').unwrap_or(("-1", "-1"));
            let partition: i32 = partition.parse().unwrap_or(-1);
            let offset: i64 = offset.parse().unwrap_or(-1);
            if !self.busy_partitions.lock().insert(partition) {
                self.overlaps.fetch_add(1, Ordering::AcqRel);
            }
            if !self.met.load(Ordering::Acquire) {
                let mut inside = self.inside.lock();
                *inside += 1;
                if *inside >= 2 {
                    self.met.store(true, Ordering::Release);
                    self.both_inside.notify_all();
                } else {
                    let give_up = Instant::now() + Duration::from_secs(10);
                    while !self.met.load(Ordering::Acquire) && Instant::now() < give_up {
                        self.both_inside.wait_until(&mut inside, give_up);
                    }
                }
                *inside -= 1;
            }
            let thread = std::thread::current().name().unwrap_or("?").to_owned();
            self.seen.lock().push((thread, partition, offset));
            self.busy_partitions.lock().remove(&partition);
            Ok(())
        }
    }

    fn tag_update(partition: i32, offset: i64) -> WorkItem {
        let json = format!(
            r#"{{"entity_kind":"user_id","entity_value":"{partition}:{offset}","tag":"t"}}"#
        );
        WorkItem::new(offset, None, Some(json.as_bytes()))
    }

    /// Dispatches `counts[p]` tag updates to partition `p` of the tags topic on two workers,
    /// closes the pool and returns what the recorder saw.
    fn run_lanes(counts: &[i64]) -> Arc<Recorder> {
        let settings = PipelineSettings {
            brokers: "127.0.0.1:1".to_owned(),
            input_format: InputFormat::Json,
            workers: 2,
            queue_capacity: 16,
            ..PipelineSettings::default()
        };
        let recorder = Arc::new(Recorder::default());
        let abort = Arc::new(AtomicBool::new(false));
        let status = Arc::new(PipelineStatus::new());
        let Ok((sink, retry)) = Sink::start(&settings, status, Arc::clone(&abort)) else {
            panic!("producer not created");
        };
        let decider: Arc<dyn Decider> = recorder.clone();
        let counters = Arc::new(RunCounters::default());
        let Ok(pool) = WorkerPool::start(&settings, decider, sink, counters, abort) else {
            panic!("workers not started");
        };
        let slots: Vec<Arc<PartitionSlot>> = (0..counts.len() as i32)
            .map(|p| Arc::new(PartitionSlot::new("entity-tags", p, TopicKind::EntityTags)))
            .collect();
        let longest = counts.iter().copied().max().unwrap_or(0);
        for offset in 0..longest {
            for (slot, &count) in slots.iter().zip(counts) {
                if offset >= count {
                    continue;
                }
                let mut item = tag_update(slot.partition, offset);
                loop {
                    match pool.dispatch(slot, item) {
                        Ok(()) => break,
                        Err(DispatchError::Full(back)) => {
                            item = back;
                            std::thread::sleep(Duration::from_micros(200));
                        }
                        Err(DispatchError::WorkerGone) => panic!("workers gone"),
                    }
                }
            }
        }
        for handle in pool.close() {
            assert!(handle.join().is_ok(), "a worker panicked");
        }
        for slot in &slots {
            assert!(
                slot.is_drained(),
                "partition {} not drained",
                slot.partition
            );
        }
        retry.stop();
        recorder
    }

    #[test]
    fn lanes_keep_offset_order_and_never_share_a_partition() {
        let counts = [700, 150, 150, 40];
        let recorder = run_lanes(&counts);
        assert_eq!(recorder.overlaps.load(Ordering::Acquire), 0);
        let seen = recorder.seen.lock();
        let mut per_partition: HashMap<i32, Vec<i64>> = HashMap::new();
        for (_, partition, offset) in seen.iter() {
            per_partition.entry(*partition).or_default().push(*offset);
        }
        for (partition, &count) in counts.iter().enumerate() {
            let offsets = per_partition
                .remove(&(partition as i32))
                .unwrap_or_default();
            assert_eq!(
                offsets,
                (0..count).collect::<Vec<_>>(),
                "partition {partition}"
            );
        }
        assert!(
            per_partition.is_empty(),
            "unexpected partitions {per_partition:?}"
        );
    }

    #[test]
    fn partitions_that_a_fixed_routing_would_pair_run_on_both_workers() {
        // Partitions 0 and 2 of two workers shared worker 0 under the old round-robin routing;
        // the recorder holds the first update until a second worker is inside too.
        let recorder = run_lanes(&[200, 0, 200]);
        assert!(
            recorder.met.load(Ordering::Acquire),
            "never two workers at once"
        );
        let threads: HashSet<String> = recorder
            .seen
            .lock()
            .iter()
            .map(|(thread, ..)| thread.clone())
            .collect();
        assert_eq!(threads.len(), 2, "{threads:?}");
    }

    #[test]
    fn decisions_are_keyed_by_txn_id_else_event_id() {
        let mut decision = Decision {
            event_id: "e-1".into(),
            ..Decision::default()
        };
        assert_eq!(decision_key(&decision), b"e-1");
        decision.txn_id = Some("t-9".into());
        assert_eq!(decision_key(&decision), b"t-9");
    }
}
