//! `PipelineStatus` (readiness, assignment, lag, shared with `/readyz` and metrics) and `RunSummary`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

/// Live state of a running pipeline, shared with the telemetry endpoints.
///
/// Ready means: the consumer joined its group (an assignment arrived, possibly empty), the
/// broker is reachable, and the pipeline is not shutting down.
#[derive(Debug, Default)]
pub struct PipelineStatus {
    joined: AtomicBool,
    broker_reachable: AtomicBool,
    stopping: AtomicBool,
    /// Assigned partitions with their last known consumer lag (-1 = unknown yet).
    partitions: Mutex<BTreeMap<(String, i32), i64>>,
}

impl PipelineStatus {
    pub fn new() -> PipelineStatus {
        PipelineStatus::default()
    }

    /// Whether the pipeline is consuming: joined, broker reachable, not stopping.
    pub fn is_ready(&self) -> bool {
        self.joined.load(Ordering::Acquire)
            && self.broker_reachable.load(Ordering::Acquire)
            && !self.stopping.load(Ordering::Acquire)
    }

    pub fn is_broker_reachable(&self) -> bool {
        self.broker_reachable.load(Ordering::Acquire)
    }

    /// Assigned `(topic, partition)` pairs, sorted.
    pub fn assigned_partitions(&self) -> Vec<(String, i32)> {
        self.partitions.lock().keys().cloned().collect()
    }

    /// Consumer lag in messages per assigned `(topic, partition)`; -1 while unknown.
    pub fn consumer_lag(&self) -> Vec<((String, i32), i64)> {
        self.partitions
            .lock()
            .iter()
            .map(|(k, &lag)| (k.clone(), lag))
            .collect()
    }

    pub(crate) fn set_joined(&self) {
        self.joined.store(true, Ordering::Release);
    }

    pub(crate) fn set_broker_reachable(&self, reachable: bool) {
        self.broker_reachable.store(reachable, Ordering::Release);
    }

    /// Marks the broker reachable; `true` when it was not (the caller reports the change).
    pub(crate) fn mark_reachable(&self) -> bool {
        !self.is_broker_reachable() && !self.broker_reachable.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    pub(crate) fn add_partition(&self, topic: &str, partition: i32) {
        self.partitions
            .lock()
            .insert((topic.to_owned(), partition), -1);
    }

    pub(crate) fn remove_partition(&self, topic: &str, partition: i32) {
        self.partitions
            .lock()
            .remove(&(topic.to_owned(), partition));
    }

    /// Records a lag for an assigned partition; unknown partitions are ignored.
    pub(crate) fn set_lag(&self, topic: &str, partition: i32, lag: i64) -> bool {
        match self
            .partitions
            .lock()
            .get_mut(&(topic.to_owned(), partition))
        {
            Some(slot) => {
                *slot = lag;
                true
            }
            None => false,
        }
    }
}

/// Totals of one pipeline run, returned when it stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Payment events decided (each produced at least one decision).
    pub events_decided: u64,
    /// Input messages published as dead letters.
    pub dead_letters: u64,
    /// Tag updates applied.
    pub tag_updates: u64,
    /// Timeout decisions published from the `extra` channel.
    pub timeout_decisions: u64,
    /// Offsets committed at the end: `(topic, partition, next offset to consume)`.
    pub final_offsets: Vec<(String, i32, i64)>,
}

/// Counters behind [`RunSummary`], updated by workers and the sink.
#[derive(Debug, Default)]
pub(crate) struct RunCounters {
    pub events_decided: AtomicU64,
    pub dead_letters: AtomicU64,
    pub tag_updates: AtomicU64,
    pub timeout_decisions: AtomicU64,
}

impl RunCounters {
    pub fn summary(&self, final_offsets: Vec<(String, i32, i64)>) -> RunSummary {
        RunSummary {
            events_decided: self.events_decided.load(Ordering::Acquire),
            dead_letters: self.dead_letters.load(Ordering::Acquire),
            tag_updates: self.tag_updates.load(Ordering::Acquire),
            timeout_decisions: self.timeout_decisions.load(Ordering::Acquire),
            final_offsets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_join_and_broker_and_not_stopping() {
        let status = PipelineStatus::new();
        assert!(!status.is_ready());
        status.set_joined();
        assert!(!status.is_ready());
        status.set_broker_reachable(true);
        assert!(status.is_ready());
        status.set_stopping();
        assert!(!status.is_ready());
    }

    #[test]
    fn lag_is_kept_only_for_assigned_partitions() {
        let status = PipelineStatus::new();
        status.add_partition("payments", 3);
        assert!(status.set_lag("payments", 3, 42));
        assert!(!status.set_lag("payments", 4, 1));
        assert_eq!(
            status.consumer_lag(),
            vec![(("payments".to_owned(), 3), 42)]
        );
        status.remove_partition("payments", 3);
        assert!(status.assigned_partitions().is_empty());
    }
}
