//! `PartitionSlot`: the shared per-partition state between the source, the workers and the sink.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use parking_lot::Mutex;

use super::ack::{AckSeq, AckTracker};
use super::feed::{Feed, Schedule};

/// What a consumed topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    Payments,
    EntityTags,
}

/// Sentinel for "no offset yet" in the atomic offset fields.
const NO_OFFSET: i64 = -1;

/// One assigned partition: its acknowledgement tracker and progress counters.
///
/// A slot lives from the partition's assignment to its revocation; a reassigned partition gets
/// a fresh slot, so late acknowledgements for an old assignment never touch the new one.
pub struct PartitionSlot {
    pub topic: String,
    pub partition: i32,
    pub kind: TopicKind,
    tracker: Mutex<AckTracker>,
    /// Copy of the tracker's safe offset, readable without the lock.
    safe_next: AtomicI64,
    /// Last offset committed to Kafka (source thread only writes it).
    committed_next: AtomicI64,
    /// Messages taken by a worker / finished by a worker (skipped ones included).
    taken: AtomicU64,
    processed: AtomicU64,
    /// Set when the partition is revoked: workers skip its queued messages.
    revoked: AtomicBool,
    /// The partition's own queue of consumed messages, read by one worker at a time (see
    /// [`super::feed`]); `None` before it is attached and once the partition is revoked.
    pub(super) feed: Mutex<Option<Box<dyn Feed>>>,
    /// On the workers' ready queue or being read.
    pub(super) schedule: Schedule,
}

impl std::fmt::Debug for PartitionSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionSlot")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl PartitionSlot {
    pub fn new(topic: &str, partition: i32, kind: TopicKind) -> PartitionSlot {
        PartitionSlot {
            topic: topic.to_owned(),
            partition,
            kind,
            tracker: Mutex::new(AckTracker::new()),
            safe_next: AtomicI64::new(NO_OFFSET),
            committed_next: AtomicI64::new(NO_OFFSET),
            taken: AtomicU64::new(0),
            processed: AtomicU64::new(0),
            revoked: AtomicBool::new(false),
            feed: Mutex::new(None),
            schedule: Schedule::default(),
        }
    }

    /// Registers a consumed message that is done after `outstanding` acknowledgements; a
    /// worker calls it before producing any of the message's outputs.
    pub fn register(&self, offset: i64, outstanding: usize) -> AckSeq {
        let outstanding = u32::try_from(outstanding).unwrap_or(u32::MAX);
        let mut tracker = self.tracker.lock();
        let (seq, advanced) = tracker.register(offset, outstanding);
        if let Some(next) = advanced {
            self.safe_next.store(next, Ordering::Release);
        }
        seq
    }

    /// Records one acknowledgement of the message with ticket `seq`.
    pub fn ack(&self, seq: AckSeq) {
        let mut tracker = self.tracker.lock();
        if let Some(next) = tracker.ack(seq) {
            self.safe_next.store(next, Ordering::Release);
        }
    }

    /// Next offset to consume such that every earlier message is done.
    pub fn safe_next(&self) -> Option<i64> {
        Some(self.safe_next.load(Ordering::Acquire)).filter(|&o| o != NO_OFFSET)
    }

    /// The safe offset when it differs from the last committed one.
    pub fn uncommitted_safe_next(&self) -> Option<i64> {
        let safe = self.safe_next()?;
        (safe != self.committed_next.load(Ordering::Acquire)).then_some(safe)
    }

    /// Where the partition starts: `next` is its position before anything is consumed (where
    /// the state stands, or Kafka's committed offset `committed`), so a checkpoint before the
    /// first message still has an offset to commit (an exactly-once transaction holding only
    /// timeout decisions needs one).
    pub fn start_at(&self, next: i64, committed: Option<i64>) {
        let _ =
            self.safe_next
                .compare_exchange(NO_OFFSET, next, Ordering::AcqRel, Ordering::Acquire);
        if let Some(committed) = committed {
            self.mark_committed(committed);
        }
    }

    /// Records a confirmed commit. Only forward: a late confirmation of an older commit
    /// (e.g. one issued for the partition's previous assignment) changes nothing.
    pub fn mark_committed(&self, next: i64) {
        self.committed_next.fetch_max(next, Ordering::AcqRel);
    }

    // Sequentially consistent, with `revoke` / `is_revoked`: a worker counts a message taken
    // before it asks whether the partition is revoked, the revocation marks it before it asks
    // whether every taken message is processed; so either the revocation waits for that
    // message, or the worker sees the mark and skips it.
    pub fn note_taken(&self) {
        self.taken.fetch_add(1, Ordering::SeqCst);
    }

    pub fn note_processed(&self) {
        self.processed.fetch_add(1, Ordering::SeqCst);
    }

    /// Every message taken by a worker is processed and every output acknowledged.
    pub fn is_drained(&self) -> bool {
        self.processed.load(Ordering::SeqCst) >= self.taken.load(Ordering::SeqCst)
            && self.tracker.lock().in_flight() == 0
    }

    pub fn revoke(&self) {
        self.revoked.store(true, Ordering::SeqCst);
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_offset_follows_the_tracker_and_commits() {
        let slot = PartitionSlot::new("payments", 0, TopicKind::Payments);
        slot.note_taken();
        let seq = slot.register(4, 1);
        slot.note_processed();
        assert_eq!(slot.safe_next(), None);
        assert!(!slot.is_drained());
        slot.ack(seq);
        assert_eq!(slot.safe_next(), Some(5));
        assert!(slot.is_drained());
        assert_eq!(slot.uncommitted_safe_next(), Some(5));
        slot.mark_committed(5);
        assert_eq!(slot.uncommitted_safe_next(), None);
        // a late confirmation of an older commit does not move it back
        slot.mark_committed(2);
        assert_eq!(slot.uncommitted_safe_next(), None);
    }

    #[test]
    fn a_taken_but_unprocessed_message_keeps_the_slot_busy() {
        let slot = PartitionSlot::new("payments", 1, TopicKind::Payments);
        slot.note_taken();
        assert!(!slot.is_drained());
        slot.note_processed();
        assert!(slot.is_drained());
    }
}
