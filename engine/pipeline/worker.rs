//! Worker pool: reads each partition's own queue, decodes, decides and publishes, in offset order.
//!
//! Every assigned partition has its own queue of consumed messages ([`super::feed`]). A
//! partition with messages is on the shared ready queue exactly once; a worker takes it, reads
//! up to [`BATCH`] of its messages and puts it back at the end of the ready queue if more are
//! waiting. So one partition is never read by two workers at once (offset order holds), while
//! any idle worker can take any partition: skewed partitions do not leave one worker idle and
//! another saturated. Workers are plain threads: decoding and deciding never run on the async
//! runtime. The source can pause the workers between batches ([`PoolHandle::pause`]) to
//! checkpoint at quiet offsets.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
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
use super::feed::{Feed, Incoming, Polled};
use super::partition::{PartitionSlot, TopicKind};
use super::settings::PipelineSettings;
use super::sink::{AckToken, Sink};
use super::status::{PipelineStatus, RunCounters};
use super::Decider;

/// Messages a worker reads from one partition before giving other partitions a turn.
const BATCH: usize = 64;
/// How often an idle worker checks whether the pool is closing.
const CLOSE_CHECK: Duration = Duration::from_millis(20);
/// How often a paused worker checks whether the pause is over.
const PAUSE_CHECK: Duration = Duration::from_micros(200);

/// Everything a worker needs, shared by all workers.
struct WorkerShared {
    decider: Arc<dyn Decider>,
    sink: Arc<Sink>,
    counters: Arc<RunCounters>,
    status: Arc<PipelineStatus>,
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
    /// Set by [`WorkerPool::close`]: workers exit after the batch in hand.
    closing: AtomicBool,
    /// Pauses in force ([`PoolHandle::pause`]): workers start no batch while above zero.
    pauses: AtomicUsize,
    /// Workers inside a batch.
    busy: AtomicUsize,
}

/// The worker threads and the ready queue of partitions they share.
pub struct WorkerPool {
    handle: PoolHandle,
    handles: Vec<JoinHandle<()>>,
}

/// What the source holds of the pool: it attaches partitions' queues and pauses the workers.
#[derive(Clone)]
pub struct PoolHandle {
    /// Unbounded, yet never longer than the assigned partitions: one is on it at most once.
    ready: Sender<Arc<PartitionSlot>>,
    shared: Arc<WorkerShared>,
}

/// Workers start no batch while this lives; see [`Paused::idle`].
pub struct Paused {
    shared: Arc<WorkerShared>,
}

impl Paused {
    /// No worker is inside a batch: every message taken so far is processed.
    pub fn idle(&self) -> bool {
        self.shared.busy.load(Ordering::SeqCst) == 0
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        self.shared.pauses.fetch_sub(1, Ordering::SeqCst);
    }
}

impl WorkerPool {
    pub fn start(
        settings: &PipelineSettings,
        decider: Arc<dyn Decider>,
        sink: Arc<Sink>,
        counters: Arc<RunCounters>,
        status: Arc<PipelineStatus>,
        abort: Arc<AtomicBool>,
    ) -> Result<WorkerPool, PipelineError> {
        let shared = Arc::new(WorkerShared {
            decider,
            sink,
            counters,
            status,
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
            pauses: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
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
            handle: PoolHandle { ready, shared },
            handles,
        })
    }

    pub fn handle(&self) -> PoolHandle {
        self.handle.clone()
    }

    /// Whether every worker thread is still running.
    pub fn all_alive(&self) -> bool {
        self.handles.iter().all(|handle| !handle.is_finished())
    }

    /// Workers finish the batch in hand, then exit; messages still queued stay unprocessed
    /// (never acknowledged, so never committed: consumed again by the next owner).
    pub fn close(self) -> Vec<JoinHandle<()>> {
        self.handle.shared.closing.store(true, Ordering::Release);
        self.handles
    }
}

impl PoolHandle {
    /// Gives `slot` its queue, and schedules it in case messages are waiting already.
    pub fn attach(&self, slot: &Arc<PartitionSlot>, feed: Box<dyn Feed>) {
        *slot.feed.lock() = Some(feed);
        self.wake(slot);
    }

    /// What the partition's queue calls when it becomes non-empty: schedules the partition.
    pub fn waker(&self, slot: &Arc<PartitionSlot>) -> impl Fn() + Send + Sync + 'static {
        let (pool, slot) = (self.clone(), Arc::downgrade(slot));
        move || {
            if let Some(slot) = Weak::upgrade(&slot) {
                pool.wake(&slot);
            }
        }
    }

    fn wake(&self, slot: &Arc<PartitionSlot>) {
        if slot.schedule.notify() {
            // cannot fail while the pool lives: it holds a receiver until the workers exit
            let _ = self.ready.send(Arc::clone(slot));
        }
    }

    /// Pauses the workers between batches until the guard drops.
    pub fn pause(&self) -> Paused {
        self.shared.pauses.fetch_add(1, Ordering::SeqCst);
        Paused {
            shared: Arc::clone(&self.shared),
        }
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

/// What became of a scheduled partition after a worker's turn.
enum Served {
    /// Messages may remain: back on the ready queue.
    More,
    /// Its queue was empty: unscheduled.
    Idle,
    /// The pool is closing.
    Closing,
}

impl WorkerShared {
    fn run(&self, ready: &Sender<Arc<PartitionSlot>>, ready_rx: &Receiver<Arc<PartitionSlot>>) {
        let mut scratch = Scratch::default();
        loop {
            match ready_rx.recv_timeout(CLOSE_CHECK) {
                Ok(slot) => match self.serve(&slot, &mut scratch) {
                    // behind the other partitions; cannot fail: this worker holds a receiver
                    Served::More => {
                        let _ = ready.send(slot);
                    }
                    Served::Idle => {}
                    Served::Closing => return,
                },
                Err(RecvTimeoutError::Timeout) => {
                    if self.closing.load(Ordering::Acquire) {
                        return;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Counts this worker busy, once no pause is in force; `false` when the pool is closing.
    fn enter(&self) -> bool {
        loop {
            if self.closing.load(Ordering::Acquire) {
                return false;
            }
            // Sequentially consistent with `pause` / `Paused::idle`: a pause either sees this
            // worker busy, or this worker sees the pause.
            self.busy.fetch_add(1, Ordering::SeqCst);
            if self.pauses.load(Ordering::SeqCst) == 0 {
                return true;
            }
            self.busy.fetch_sub(1, Ordering::SeqCst);
            std::thread::sleep(PAUSE_CHECK);
        }
    }

    /// Reads up to [`BATCH`] messages of a scheduled partition in offset order.
    fn serve(&self, slot: &Arc<PartitionSlot>, scratch: &mut Scratch) -> Served {
        if !self.enter() {
            return Served::Closing;
        }
        let (emptied, read) = {
            let feed = slot.feed.lock();
            match feed.as_deref() {
                // not attached yet, or revoked
                None => (true, 0),
                Some(feed) => self.read(slot, feed, scratch),
            }
        };
        self.busy.fetch_sub(1, Ordering::SeqCst);
        // messages came: the broker is reachable (also without librdkafka's statistics)
        if read > 0 && self.status.mark_reachable() {
            events::broker_reachability_changed(true);
        }
        if emptied && slot.schedule.idle() {
            Served::Idle
        } else {
            Served::More
        }
    }

    /// Handles up to [`BATCH`] messages of `feed`: whether it was found empty (or revoked),
    /// and how many messages were read.
    fn read(
        &self,
        slot: &Arc<PartitionSlot>,
        feed: &dyn Feed,
        scratch: &mut Scratch,
    ) -> (bool, usize) {
        let mut read = 0;
        for _ in 0..BATCH {
            if slot.is_revoked() {
                return (true, read);
            }
            match feed.next(&mut |message| self.handle(slot, message, scratch)) {
                Polled::Message => read += 1,
                Polled::Empty => return (true, read),
                Polled::Error(error) => events::consume_failed(&error),
            }
        }
        (false, read)
    }

    fn handle(&self, slot: &Arc<PartitionSlot>, message: Incoming<'_>, scratch: &mut Scratch) {
        slot.note_taken();
        if slot.is_revoked() || self.abort.load(Ordering::Acquire) {
            events::revoked_message_skipped();
        } else {
            match slot.kind {
                TopicKind::Payments => self.handle_payment(slot, &message, scratch),
                TopicKind::EntityTags => self.handle_tag_update(slot, &message),
            }
        }
        slot.note_processed();
    }

    fn handle_payment(
        &self,
        slot: &Arc<PartitionSlot>,
        item: &Incoming<'_>,
        scratch: &mut Scratch,
    ) {
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

    fn handle_tag_update(&self, slot: &Arc<PartitionSlot>, item: &Incoming<'_>) {
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
    fn reject(&self, slot: &Arc<PartitionSlot>, item: &Incoming<'_>, error: &EventError) {
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
        let key = dead_letter_key(item.key);
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
    use parking_lot::{Condvar, Mutex};
    use std::collections::{HashMap, HashSet, VecDeque};
    use std::sync::mpsc;

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

    /// A partition queue in memory: the tag updates `"PARTITION:OFFSET"` in offset order.
    /// With `stall` set, the next read that finds it empty says so on the first channel and
    /// waits for the second before it returns.
    #[derive(Default)]
    struct Items {
        queue: Mutex<VecDeque<(i64, Vec<u8>)>>,
        stall: Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>>,
    }

    impl Items {
        fn push(&self, partition: i32, offset: i64) {
            let json = format!(
                r#"{{"entity_kind":"user_id","entity_value":"{partition}:{offset}","tag":"t"}}"#
            );
            self.queue.lock().push_back((offset, json.into_bytes()));
        }
    }

    impl Feed for Arc<Items> {
        fn next(&self, handle: &mut dyn FnMut(Incoming<'_>)) -> Polled {
            let Some((offset, payload)) = self.queue.lock().pop_front() else {
                if let Some((found_empty, go)) = self.stall.lock().take() {
                    let _ = found_empty.send(());
                    let _ = go.recv();
                }
                return Polled::Empty;
            };
            handle(Incoming {
                offset,
                key: None,
                payload: Some(&payload),
            });
            Polled::Message
        }
    }

    /// Two workers over partitions of the tags topic: `fill` gets each partition's slot and
    /// in-memory queue (attached to the pool), and returns how many updates to wait for. With
    /// `hold`, the recorder holds the first update until two workers are inside.
    fn run_workers(
        partitions: usize,
        hold: bool,
        fill: impl FnOnce(&PoolHandle, &[(Arc<PartitionSlot>, Arc<Items>)]) -> usize,
    ) -> Arc<Recorder> {
        let settings = PipelineSettings {
            brokers: "127.0.0.1:1".to_owned(),
            input_format: InputFormat::Json,
            workers: 2,
            ..PipelineSettings::default()
        };
        let recorder = Arc::new(Recorder::default());
        recorder.met.store(!hold, Ordering::Release);
        let abort = Arc::new(AtomicBool::new(false));
        let status = Arc::new(PipelineStatus::new());
        let Ok((sink, retry)) = Sink::start(&settings, Arc::clone(&status), Arc::clone(&abort))
        else {
            panic!("producer not created");
        };
        let decider: Arc<dyn Decider> = recorder.clone();
        let counters = Arc::new(RunCounters::default());
        let Ok(pool) = WorkerPool::start(&settings, decider, sink, counters, status, abort) else {
            panic!("workers not started");
        };
        let parts: Vec<(Arc<PartitionSlot>, Arc<Items>)> = (0..partitions as i32)
            .map(|p| {
                let slot = Arc::new(PartitionSlot::new("entity-tags", p, TopicKind::EntityTags));
                let items = Arc::new(Items::default());
                pool.handle().attach(&slot, Box::new(Arc::clone(&items)));
                (slot, items)
            })
            .collect();
        let expected = fill(&pool.handle(), &parts);
        let give_up = Instant::now() + Duration::from_secs(30);
        while recorder.seen.lock().len() < expected && Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(5));
        }
        for handle in pool.close() {
            assert!(handle.join().is_ok(), "a worker panicked");
        }
        for (slot, items) in &parts {
            assert!(
                slot.is_drained(),
                "partition {} not drained",
                slot.partition
            );
            assert!(
                items.queue.lock().is_empty(),
                "partition {} unread",
                slot.partition
            );
        }
        retry.stop();
        recorder
    }

    /// `counts[p]` tag updates queued on partition `p` before its queue is announced.
    fn run_partitions(counts: &[i64]) -> Arc<Recorder> {
        run_workers(counts.len(), true, |pool, parts| {
            for ((slot, items), &count) in parts.iter().zip(counts) {
                for offset in 0..count {
                    items.push(slot.partition, offset);
                }
                pool.waker(slot)();
            }
            counts.iter().sum::<i64>() as usize
        })
    }

    #[test]
    fn a_message_arriving_after_its_queue_was_read_empty_is_read() {
        // The queue announces only its change from empty to non-empty: a message that lands
        // between a worker finding the queue empty and unscheduling the partition must still
        // be read, with no later message to wake a worker.
        let recorder = run_workers(1, false, |pool, parts| {
            let (slot, items) = &parts[0];
            let (found_empty, wait_found) = mpsc::channel();
            let (go, wait_go) = mpsc::channel();
            *items.stall.lock() = Some((found_empty, wait_go));
            items.push(slot.partition, 0);
            pool.waker(slot)();
            wait_found
                .recv_timeout(Duration::from_secs(10))
                .expect("the worker read the queue empty");
            items.push(slot.partition, 1);
            pool.waker(slot)();
            let _ = go.send(());
            2
        });
        let offsets: Vec<i64> = recorder.seen.lock().iter().map(|(_, _, o)| *o).collect();
        assert_eq!(offsets, [0, 1]);
    }

    #[test]
    fn partitions_keep_offset_order_and_never_share_a_worker() {
        let counts = [700, 150, 150, 40];
        let recorder = run_partitions(&counts);
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
        let recorder = run_partitions(&[200, 0, 200]);
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
