//! Worker pool: decodes, decides and publishes the messages of its partitions, in partition order.
//!
//! Each partition is routed to exactly one worker thread, so its messages are handled in
//! offset order. Workers are plain threads: decoding and deciding never run on the async
//! runtime. Each worker's queue is bounded; the source waits when it is full.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use crate::event::{
    dead_letter, decode_event, decode_tag_update, encode_decision_into, Decision, EventError,
    InputFormat, OutputFormat,
};

use super::ack::AckSeq;
use super::error::PipelineError;
use super::events;
use super::partition::{PartitionSlot, TopicKind};
use super::settings::PipelineSettings;
use super::sink::{AckToken, Sink};
use super::status::RunCounters;
use super::Decider;

/// One consumed message on its way to a worker.
#[derive(Debug)]
pub struct WorkItem {
    pub slot: Arc<PartitionSlot>,
    pub offset: i64,
    /// Key bytes followed by payload bytes: one allocation per message instead of two.
    data: Vec<u8>,
    /// Length of the key at the start of `data`; `None` when the message has no key.
    key_len: Option<usize>,
    /// Whether the message has a payload (the rest of `data`), as opposed to a null value.
    has_payload: bool,
}

impl WorkItem {
    /// Copies a consumed message's key and payload.
    pub fn new(
        slot: Arc<PartitionSlot>,
        offset: i64,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
    ) -> WorkItem {
        let (k, p) = (key.unwrap_or_default(), payload.unwrap_or_default());
        let mut data = Vec::with_capacity(k.len() + p.len());
        data.extend_from_slice(k);
        data.extend_from_slice(p);
        WorkItem {
            slot,
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

    /// The message payload; empty for a null value (which then fails decoding).
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
    /// The worker's queue is full; the item comes back.
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
    metrics: events::DecisionMetrics,
}

/// The worker threads and the senders of their queues.
pub struct WorkerPool {
    queues: Vec<Sender<WorkItem>>,
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
            metrics: events::DecisionMetrics::register(),
        });
        let mut queues = Vec::with_capacity(settings.workers);
        let mut handles = Vec::with_capacity(settings.workers);
        for index in 0..settings.workers {
            let (tx, rx) = bounded(settings.queue_capacity);
            let shared = Arc::clone(&shared);
            let name = format!("veto-worker-{index}");
            let handle = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || shared.run(rx))
                .map_err(|source| PipelineError::ThreadSpawn { name, source })?;
            queues.push(tx);
            handles.push(handle);
        }
        Ok(WorkerPool { queues, handles })
    }

    /// Queues an item on its partition's worker without waiting.
    ///
    /// The caller backs off on [`DispatchError::Full`] instead of parking on the channel: a
    /// sender parked on a full queue is woken by every `recv`, a context switch per message
    /// for both threads exactly when the worker is the bottleneck.
    pub fn dispatch(&self, item: WorkItem) -> Result<(), DispatchError> {
        let queue = &self.queues[worker_index(&item.slot, self.queues.len())];
        match queue.try_send(item) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(item)) => Err(DispatchError::Full(item)),
            Err(TrySendError::Disconnected(_)) => Err(DispatchError::WorkerGone),
        }
    }

    /// Closes the queues; workers finish what is queued, then exit.
    pub fn close(self) -> Vec<JoinHandle<()>> {
        drop(self.queues);
        self.handles
    }
}

/// The worker of a partition: payments partitions spread round-robin, tag partitions offset by one.
fn worker_index(slot: &PartitionSlot, workers: usize) -> usize {
    let lane = match slot.kind {
        TopicKind::Payments => 0,
        TopicKind::EntityTags => 1,
    };
    (slot.partition.unsigned_abs() as usize + lane) % workers
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
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
    fn run(&self, queue: Receiver<WorkItem>) {
        // One encode buffer per worker: the producer copies each payload.
        let mut scratch = Vec::with_capacity(256);
        while let Ok(item) = queue.recv() {
            if item.slot.is_revoked() || self.abort.load(Ordering::Acquire) {
                events::revoked_message_skipped();
            } else {
                match item.slot.kind {
                    TopicKind::Payments => self.handle_payment(&item, &mut scratch),
                    TopicKind::EntityTags => self.handle_tag_update(&item),
                }
            }
            item.slot.note_processed();
        }
    }

    fn handle_payment(&self, item: &WorkItem, scratch: &mut Vec<u8>) {
        let raw = item.payload();
        let event = match decode_event(raw, self.input_format, self.max_event_bytes) {
            Ok(event) => event,
            Err(error) => return self.reject(item, &error),
        };
        let started = Instant::now();
        let decisions = self.decider.decide(&event);
        let eval = started.elapsed();

        let mut outputs = 0usize;
        let mut enforced = 0usize;
        for decision in &decisions {
            if decision.shadow {
                if self.shadow_topic.is_some() {
                    self.metrics.shadow_decided(decision.outcome);
                    outputs += 1;
                } else {
                    events::shadow_dropped();
                }
            } else {
                enforced += 1;
                outputs += 1;
                self.metrics.event_decided(decision.outcome, eval);
            }
        }
        if enforced == 0 {
            events::decider_returned_nothing(&event.event_id);
        } else {
            self.counters.events_decided.fetch_add(1, Ordering::AcqRel);
        }
        let seq = self.register(item, outputs);
        for decision in &decisions {
            let topic = match (decision.shadow, &self.shadow_topic) {
                (false, _) => &self.decisions_topic,
                (true, Some(shadow)) => shadow,
                (true, None) => continue,
            };
            encode_decision_into(decision, self.output_format, scratch);
            if !self.send(item, seq, topic, Some(decision_key(decision)), scratch) {
                return;
            }
        }
    }

    fn handle_tag_update(&self, item: &WorkItem) {
        let raw = item.payload();
        match decode_tag_update(raw, self.input_format, self.max_event_bytes) {
            Ok(update) => {
                self.decider.apply_tag_update(&update);
                self.metrics.tag_update_applied();
                self.counters.tag_updates.fetch_add(1, Ordering::AcqRel);
                self.register(item, 0);
            }
            Err(error) => self.reject(item, &error),
        }
    }

    /// Publishes a dead letter for a message that could not be decoded or validated.
    fn reject(&self, item: &WorkItem, error: &EventError) {
        let slot = &item.slot;
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
        );
        let seq = self.register(item, 1);
        self.send(item, seq, &self.dead_letters_topic, item.key(), &payload);
    }

    /// Registers the message with its partition's tracker before any of its `outputs` is
    /// produced; the offset becomes committable once every output is acknowledged.
    fn register(&self, item: &WorkItem, outputs: usize) -> AckSeq {
        let outstanding = u32::try_from(outputs).unwrap_or(u32::MAX);
        item.slot.register(item.offset, outstanding)
    }

    /// Produces one output of a registered message; `false` once the run is aborted.
    fn send(
        &self,
        item: &WorkItem,
        seq: AckSeq,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
    ) -> bool {
        let token = AckToken::Event {
            slot: Arc::clone(&item.slot),
            seq,
        };
        self.sink.send_blocking(topic, key, payload, token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_of_one_topic_spread_over_workers() {
        let workers = 4;
        let indexes: Vec<usize> = (0..8)
            .map(|p| {
                worker_index(
                    &PartitionSlot::new("payments", p, TopicKind::Payments),
                    workers,
                )
            })
            .collect();
        assert_eq!(indexes, vec![0, 1, 2, 3, 0, 1, 2, 3]);
        let tags = PartitionSlot::new("entity-tags", 0, TopicKind::EntityTags);
        assert_eq!(worker_index(&tags, workers), 1);
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
