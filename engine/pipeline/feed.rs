//! A partition's own queue of consumed messages, read by the workers, and when it is scheduled.
//!
//! Every assigned partition's messages go to a queue of their own (librdkafka's partition
//! queue, split from the consumer's), which the workers read directly: no thread copies
//! messages from the consumer to the workers. A partition is scheduled on the workers' ready
//! queue when its queue becomes non-empty ([`Schedule`]), and read by one worker at a time.

use std::sync::atomic::{AtomicU8, Ordering};

use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;

use crate::event::EventError;

/// One consumed message, borrowed from its partition's queue.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    /// `None` for a null value (a Kafka tombstone).
    pub payload: Option<&'a [u8]>,
}

impl<'a> Incoming<'a> {
    /// The message payload, or why there is none: a null value (a Kafka tombstone).
    pub fn value(&self) -> Result<&'a [u8], EventError> {
        self.payload.ok_or_else(|| EventError::Undecodable {
            format: "message",
            detail: "null value (a tombstone), not an event".to_owned(),
        })
    }

    /// The message payload; empty for a null value.
    pub fn payload(&self) -> &'a [u8] {
        self.payload.unwrap_or_default()
    }
}

/// What one read of a feed found.
pub enum Polled {
    /// A message, handed to the reader's callback.
    Message,
    /// Nothing waiting.
    Empty,
    /// A consumer error for this partition (the next read goes on).
    Error(KafkaError),
}

/// A partition's queue of consumed messages.
pub trait Feed: Send + Sync {
    /// Hands the next waiting message to `handle`, without waiting.
    fn next(&self, handle: &mut dyn FnMut(Incoming<'_>)) -> Polled;
}

impl<C: ConsumerContext + 'static> Feed for PartitionQueue<C> {
    fn next(&self, handle: &mut dyn FnMut(Incoming<'_>)) -> Polled {
        match self.poll(std::time::Duration::ZERO) {
            None => Polled::Empty,
            Some(Err(error)) => Polled::Error(error),
            Some(Ok(message)) => {
                handle(Incoming {
                    offset: message.offset(),
                    key: message.key(),
                    payload: message.payload(),
                });
                Polled::Message
            }
        }
    }
}

const IDLE: u8 = 0;
const SCHEDULED: u8 = 1;
/// Scheduled, and told of new messages since: the worker must read again before idling.
const NOTIFIED: u8 = 2;

/// Whether a partition is on the ready queue or being read.
///
/// Its queue says when it goes from empty to non-empty, not for every message: a message
/// arriving after a worker found the queue empty but before it unscheduled the partition is
/// caught by [`NOTIFIED`], so no message waits for a next one to wake a worker.
#[derive(Debug, Default)]
pub struct Schedule(AtomicU8);

impl Schedule {
    /// Records that messages are waiting; `true` when the caller must put the partition on the
    /// ready queue (it was idle).
    pub fn notify(&self) -> bool {
        let mut state = self.0.load(Ordering::Acquire);
        loop {
            let next = if state == IDLE { SCHEDULED } else { NOTIFIED };
            match self
                .0
                .compare_exchange(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return state == IDLE,
                Err(now) => state = now,
            }
        }
    }

    /// A worker found the queue empty: idles the partition, unless messages were announced
    /// meanwhile (then it stays scheduled, and `false` says to read again).
    pub fn idle(&self) -> bool {
        self.0
            .compare_exchange(SCHEDULED, IDLE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            || {
                // NOTIFIED: back to SCHEDULED; the caller reads again
                self.0.store(SCHEDULED, Ordering::Release);
                false
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_while_scheduled_keeps_the_partition_scheduled_once() {
        let s = Schedule::default();
        assert!(s.notify(), "idle: schedule it");
        assert!(!s.notify(), "already scheduled");
        assert!(!s.idle(), "notified while read: read again");
        assert!(s.idle(), "nothing new: idle");
        assert!(s.notify(), "idle again: schedule it");
    }
}
