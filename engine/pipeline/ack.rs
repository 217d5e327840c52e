//! In-order acknowledgement tracking: which offset of a partition is safe to commit.
//!
//! Every consumed message of a partition is registered, in consumption order, with the number
//! of produced messages (decisions, dead letters) that must be acknowledged before it counts
//! as done. The safe offset is the offset after the longest prefix of done messages, so a
//! committed offset never skips a message whose output is still unacknowledged.

use std::collections::VecDeque;

/// Ticket identifying one registered message inside its partition's tracker.
pub type AckSeq = u64;

/// One registered message still waiting for acknowledgements (or waiting for the ones before it).
#[derive(Debug, Clone, Copy)]
struct Pending {
    offset: i64,
    outstanding: u32,
}

/// Tracks the acknowledgements of one partition and computes its safe (committable) offset.
#[derive(Debug, Default)]
pub struct AckTracker {
    /// Registered messages not yet released, oldest first; `pending[i]` has seq `front_seq + i`.
    pending: VecDeque<Pending>,
    front_seq: AckSeq,
    /// Next offset to consume such that every earlier registered message is done.
    safe_next: Option<i64>,
}

impl AckTracker {
    pub fn new() -> AckTracker {
        AckTracker::default()
    }

    /// Registers the next consumed message of the partition, at `offset`, which is done once
    /// `outstanding` acknowledgements arrived (0: done already).
    ///
    /// Returns the message's ticket and the new safe offset when it advanced.
    pub fn register(&mut self, offset: i64, outstanding: u32) -> (AckSeq, Option<i64>) {
        let seq = self.front_seq + self.pending.len() as AckSeq;
        self.pending.push_back(Pending {
            offset,
            outstanding,
        });
        (seq, self.release_done())
    }

    /// Records one acknowledgement for the message with ticket `seq`.
    ///
    /// Returns the new safe offset when it advanced. Tickets that are unknown or already
    /// fully acknowledged are ignored.
    pub fn ack(&mut self, seq: AckSeq) -> Option<i64> {
        let index = seq.checked_sub(self.front_seq)?;
        let entry = self.pending.get_mut(usize::try_from(index).ok()?)?;
        entry.outstanding = entry.outstanding.saturating_sub(1);
        self.release_done()
    }

    /// The next offset to consume such that every earlier registered message is done.
    pub fn safe_next(&self) -> Option<i64> {
        self.safe_next
    }

    /// Number of registered messages not yet released (done ones waiting behind others included).
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Pops the done prefix; returns the new safe offset when it moved.
    fn release_done(&mut self) -> Option<i64> {
        let mut released = None;
        while let Some(front) = self.pending.front() {
            if front.outstanding > 0 {
                break;
            }
            released = Some(front.offset + 1);
            self.pending.pop_front();
            self.front_seq += 1;
        }
        if released.is_some() && released != self.safe_next {
            self.safe_next = released;
            return released;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn in_order_acks_advance_one_by_one() {
        let mut t = AckTracker::new();
        let (a, _) = t.register(10, 1);
        let (b, _) = t.register(11, 1);
        assert_eq!(t.safe_next(), None);
        assert_eq!(t.ack(a), Some(11));
        assert_eq!(t.ack(b), Some(12));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn a_later_ack_waits_for_the_earlier_message() {
        let mut t = AckTracker::new();
        let (a, _) = t.register(0, 1);
        let (b, _) = t.register(1, 1);
        let (c, _) = t.register(2, 1);
        assert_eq!(t.ack(c), None);
        assert_eq!(t.ack(b), None);
        assert_eq!(t.safe_next(), None);
        assert_eq!(t.ack(a), Some(3));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn a_message_with_several_outputs_needs_every_ack() {
        let mut t = AckTracker::new();
        let (a, _) = t.register(5, 2);
        assert_eq!(t.ack(a), None);
        assert_eq!(t.ack(a), Some(6));
    }

    #[test]
    fn messages_without_outputs_are_done_at_registration() {
        let mut t = AckTracker::new();
        assert_eq!(t.register(7, 0).1, Some(8));
        let (b, _) = t.register(8, 1);
        assert_eq!(t.register(9, 0).1, None);
        assert_eq!(t.ack(b), Some(10));
    }

    #[test]
    fn gaps_in_offsets_are_fine() {
        let mut t = AckTracker::new();
        let (a, _) = t.register(100, 1);
        let (b, _) = t.register(250, 1);
        assert_eq!(t.ack(a), Some(101));
        assert_eq!(t.ack(b), Some(251));
    }

    #[test]
    fn unknown_and_repeated_tickets_are_ignored() {
        let mut t = AckTracker::new();
        let (a, _) = t.register(0, 1);
        assert_eq!(t.ack(a + 5), None);
        assert_eq!(t.ack(a), Some(1));
        assert_eq!(t.ack(a), None);
        assert_eq!(t.safe_next(), Some(1));
    }

    proptest! {
        /// Whatever the acknowledgement order, the safe offset is always the offset after the
        /// longest fully acknowledged prefix, and it never moves backwards.
        #[test]
        fn safe_offset_is_the_end_of_the_done_prefix(
            outputs in proptest::collection::vec(0u32..4, 1..40),
            seed in any::<u64>(),
        ) {
            let mut t = AckTracker::new();
            let mut acks = Vec::new();
            let mut remaining = Vec::new();
            for (i, &n) in outputs.iter().enumerate() {
                let offset = i as i64 * 3;
                let (seq, _) = t.register(offset, n);
                remaining.push(n);
                for _ in 0..n {
                    acks.push((i, seq));
                }
            }
            // Deterministic shuffle from the seed.
            let mut state = seed | 1;
            for i in (1..acks.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                acks.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let mut last_safe = t.safe_next();
            for (index, seq) in acks {
                t.ack(seq);
                remaining[index] -= 1;
                let done_prefix = remaining.iter().take_while(|&&r| r == 0).count();
                let expected = if done_prefix == 0 { None } else { Some((done_prefix as i64 - 1) * 3 + 1) };
                prop_assert_eq!(t.safe_next(), expected);
                prop_assert!(t.safe_next() >= last_safe);
                last_safe = t.safe_next();
            }
            prop_assert_eq!(t.in_flight(), 0);
            prop_assert_eq!(t.safe_next(), Some((outputs.len() as i64 - 1) * 3 + 1));
        }
    }
}
