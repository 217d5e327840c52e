//! Exactly-once checkpoints: timers paused until every fired one is published, the state stored
//! as pending, the Kafka transaction committed, then the state applied; and at start, settling a
//! pending checkpoint a crash left between those phases.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::live::LiveDecider;
use crate::pipeline::{self, PipelineSettings};
use crate::store::{PartitionOffset, TagStore};

/// How long an exactly-once checkpoint waits for fired timers to be published.
const TIMEOUTS_PUBLISHED_WAIT: Duration = Duration::from_secs(5);

/// Settles a pending exactly-once checkpoint left by a crash between its two phases: fences
/// the previous producer (its transaction then completes or aborts), reads the group's
/// committed offsets and applies the checkpoint iff its transaction's offsets were committed.
pub(super) fn settle_pending_checkpoint(
    store: &TagStore,
    settings: &PipelineSettings,
) -> anyhow::Result<()> {
    let Some((txn_offsets, sequence)) = store.pending_checkpoint()? else {
        return Ok(());
    };
    let offsets: Vec<(String, i32, i64)> = txn_offsets
        .iter()
        .map(|o| (o.topic.clone(), o.partition, o.offset))
        .collect();
    let committed = pipeline::transaction_committed(settings, &offsets, sequence)
        .context("settle the pending exactly-once checkpoint")?;
    store.resolve_pending(committed)?;
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
        let paused = self.timers.0.pause();
        let published = pipeline::wait_until(Instant::now() + TIMEOUTS_PUBLISHED_WAIT, || {
            self.timeouts_handled.load(Ordering::Acquire) >= self.timers.0.delivered()
        });
        if !published {
            drop(paused);
            tracing::warn!("exactly-once checkpoint skipped: timeout decisions still unpublished");
            return;
        }
        let timers = self.timers.0.snapshot_armed();
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
