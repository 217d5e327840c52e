//! The engine as the pipeline drives it: decisions, tag updates, safe offsets and the
//! at-least-once checkpoint (state, armed timers and offsets in one atomic write).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::now_ms;
use super::rule_hits::rules_hit;
use crate::decider::{Decided, Engine};
use crate::event::{EventError, PaymentEvent, TagUpdate};
use crate::ha::{self, Replica};
use crate::pipeline::Decider;
use crate::store::PartitionOffset;
use crate::timer::TimerService;

/// The engine as the pipeline drives it: decisions, tag updates, offsets and checkpoints.
pub(super) struct LiveDecider {
    pub(super) engine: Arc<Engine>,
    pub(super) timers: Arc<TimerService>,
    /// Checkpoints go through Kafka transactions (two-phase, see `TagStore::checkpoint_published`).
    pub(super) exactly_once: bool,
    /// Fired timers whose timeout decision was published or dropped (compared with the timer
    /// service's delivered count before an exactly-once checkpoint).
    pub(super) timeouts_handled: Arc<AtomicU64>,
    /// The latest safe offset of every partition seen: where the in-memory state stands (the
    /// restored checkpoint's offsets at start).
    pub(super) safe_offsets: Mutex<Vec<PartitionOffset>>,
    pub(super) checkpoint_interval: Duration,
}

impl LiveDecider {
    /// Records the pipeline's `(topic, partition, next offset)` triples, keeping the newest.
    pub(super) fn merge_offsets(&self, offsets: &[(String, i32, i64)]) {
        let mut safe = self.safe_offsets.lock();
        for (topic, partition, offset) in offsets {
            match safe
                .iter_mut()
                .find(|o| o.topic == *topic && o.partition == *partition)
            {
                Some(o) => o.offset = o.offset.max(*offset),
                None => safe.push(PartitionOffset {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: *offset,
                }),
            }
        }
    }

    /// The periodic at-least-once checkpoint: the snapshot is taken now, the state copied out
    /// and written in the background while decisions go on. Returns whether the offsets may be
    /// committed to Kafka at once: yes when an earlier checkpoint is on disk (a crash before
    /// this one is in restores that one, and partitions start from *its* offsets, whatever
    /// Kafka holds); no for a store's first checkpoint, since without any checkpoint a restart
    /// would start from Kafka's offsets with an empty state.
    fn periodic_checkpoint(&self) -> anyhow::Result<bool> {
        let store = self.engine.store();
        let durable = store.has_checkpoint();
        let offsets = self.safe_offsets.lock().clone();
        let timers = self.timers.snapshot();
        // paced over at most half the interval: in well before the next one
        store.checkpoint_in_background(&offsets, &timers, self.checkpoint_interval / 2)?;
        Ok(durable)
    }

    /// Writes state, armed timers and the safe offsets in one atomic checkpoint.
    pub(super) fn write_checkpoint(&self) -> anyhow::Result<()> {
        let offsets = self.safe_offsets.lock().clone();
        let timers = self.timers.snapshot();
        let stats = self.engine.store().checkpoint(&offsets, &timers)?;
        tracing::debug!(entities = stats.entities_written, "checkpoint written");
        Ok(())
    }
}

impl Decider for LiveDecider {
    fn decide(&self, event: &PaymentEvent, out: &mut Decided) {
        self.engine.decide_reusing(event, now_ms(), out);
        rules_hit(&out.decision);
    }

    fn apply_tag_update(&self, update: &TagUpdate) -> Result<(), EventError> {
        self.engine.apply_tag_update(update)
    }

    fn on_safe_offsets(&self, offsets: &[(String, i32, i64)]) {
        self.merge_offsets(offsets);
    }

    fn checkpoint_interval(&self) -> Option<Duration> {
        Some(self.checkpoint_interval)
    }

    fn checkpoint(
        &self,
        offsets: &[(String, i32, i64)],
        publish: &mut dyn FnMut(Option<u64>) -> Result<(), String>,
    ) {
        self.merge_offsets(offsets);
        if self.exactly_once {
            return self.checkpoint_exactly_once(offsets, publish);
        }
        match self.periodic_checkpoint() {
            // Failures are logged by the pipeline; a restart seeks to the checkpoint anyway.
            Ok(true) => {
                let _ = publish(None);
            }
            // committed with the next checkpoint
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "periodic checkpoint failed; the previous one stands");
            }
        }
    }

    fn stopping(&self) {
        self.timers.stop_firing();
    }

    fn timeout_handled(&self) {
        self.timeouts_handled.fetch_add(1, Ordering::AcqRel);
    }

    fn state_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.safe_offsets
            .lock()
            .iter()
            .find(|o| o.topic == topic && o.partition == partition)
            .map(|o| o.offset)
    }
}

impl Replica for LiveDecider {
    fn replay_event(&self, event: &PaymentEvent) {
        let _ = self.engine.decide(event, now_ms());
    }

    fn replay_tag_update(&self, update: &TagUpdate) {
        // A refused update was dead-lettered by the active; the state ignores it alike.
        let _ = self.engine.apply_tag_update(update);
    }

    fn replayed_to(&self, topic: &str, partition: i32, next: i64) {
        let mut safe = self.safe_offsets.lock();
        match safe
            .iter_mut()
            .find(|o| o.topic == topic && o.partition == partition)
        {
            Some(o) => o.offset = next,
            None => safe.push(PartitionOffset {
                topic: topic.to_owned(),
                partition,
                offset: next,
            }),
        }
    }

    fn state_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        Decider::state_offset(self, topic, partition)
    }

    fn checkpoint(&self) {
        if let Err(e) = self.write_checkpoint() {
            ha::standby_checkpoint_failed(&e);
        }
    }
}
