//! Exactly-once checkpoints: timers paused until every fired one is published, the state stored
//! as pending, the Kafka transaction committed, then the state applied; and at start, discarding
//! a pending checkpoint a crash left between those phases.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::live::LiveDecider;
use crate::pipeline;
use crate::store::{PartitionOffset, TagStore};

/// How long an exactly-once checkpoint waits for fired timers to be published.
const TIMEOUTS_PUBLISHED_WAIT: Duration = Duration::from_secs(5);

/// Discards a pending exactly-once checkpoint left by a crash between its two phases: the
/// previous checkpoint stands, and the standby replay brings the state from it to the group's
/// committed offsets whether the pending checkpoint's transaction committed or not. (Asking
/// Kafka would need to fence the transactional id, which belongs to the active instance.)
pub(super) fn discard_pending_checkpoint(store: &TagStore) -> anyhow::Result<()> {
    if store.pending_checkpoint()?.is_some() {
        store.resolve_pending(false)?;
        tracing::info!(
            "pending exactly-once checkpoint discarded: the replay rebuilds the state up to the \
             committed offsets"
        );
    }
    Ok(())
}

impl LiveDecider {
    /// The exactly-once checkpoint: timers paused and every fired one published, so the
    /// transaction holds exactly the timeouts missing from the snapshot; the state is stored
    /// as pending, the transaction commits (decisions, timeouts and `offsets`), then the
    /// state is applied. Skipped (nothing committed) while timeouts are still on their way.
    pub(super) fn checkpoint_exactly_once(
        &self,
        offsets: &[(String, i32, i64)],
        publish: &mut dyn FnMut(Option<u64>) -> Result<(), String>,
    ) {
        if offsets.is_empty() {
            return; // no partition with a known position: no offsets to tie the transaction to
        }
        let paused = self.timers.pause();
        let published = pipeline::wait_until(Instant::now() + TIMEOUTS_PUBLISHED_WAIT, || {
            self.timeouts_handled.load(Ordering::Acquire) >= self.timers.delivered()
        });
        if !published {
            drop(paused);
            tracing::warn!("exactly-once checkpoint skipped: timeout decisions still unpublished");
            return;
        }
        let timers = self.timers.snapshot_armed();
        let state_offsets = self.safe_offsets.lock().clone();
        let txn_offsets: Vec<PartitionOffset> = offsets
            .iter()
            .map(|(topic, partition, offset)| PartitionOffset {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
            })
            .collect();
        let result = self.engine.store().checkpoint_published(
            &state_offsets,
            &timers,
            &txn_offsets,
            &mut |sequence| publish(Some(sequence)),
        );
        drop(paused);
        if let Err(e) = result {
            tracing::error!(error = %e, "exactly-once checkpoint failed; the previous one stands");
        }
    }
}
