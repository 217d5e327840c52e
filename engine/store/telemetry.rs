//! Log lines and metrics of the store, one function per notable occurrence.

use super::{CheckpointStats, StoreError, StoreStats};

pub fn entities_spilled(count: u64, bytes: u64) {
    metrics::counter!("veto_store_spilled_total").increment(count);
    metrics::counter!("veto_store_spilled_bytes_total").increment(bytes);
    tracing::debug!(count, bytes, "spilled cold entities");
}

pub fn entity_read_back(bytes: u64) {
    metrics::counter!("veto_store_read_backs_total").increment(1);
    metrics::counter!("veto_store_read_back_bytes_total").increment(bytes);
}

pub fn read_back_failed(key: &str, error: &StoreError) {
    metrics::counter!("veto_store_read_back_failures_total").increment(1);
    tracing::error!(entity = key, %error, "cannot read back entity, starting it empty");
}

pub fn spill_failed(error: &StoreError) {
    metrics::counter!("veto_store_spill_failures_total").increment(1);
    tracing::error!(%error, "cannot spill entities, keeping them in memory");
}

/// A new tag was refused: its entity already holds `MAX_TAGS` tags.
pub fn tag_limit_reached(kind: &str, tag: &str) {
    metrics::counter!("veto_store_tags_refused_total").increment(1);
    tracing::warn!(
        entity_kind = kind,
        tag,
        max = super::entity::MAX_TAGS,
        "tag refused: the entity holds the most tags allowed"
    );
}

pub fn idle_entities_deleted(count: u64) {
    metrics::counter!("veto_store_idle_deleted_total").increment(count);
    tracing::debug!(count, "deleted idle entities");
}

/// A sweep of idle entities and expired tags went through every shard in `took`.
pub fn swept(took: std::time::Duration) {
    metrics::histogram!("veto_store_sweep_seconds").record(took.as_secs_f64());
    tracing::debug!(seconds = took.as_secs_f64(), "store swept");
}

pub fn checkpoint_written(stats: &CheckpointStats) {
    metrics::histogram!("veto_store_checkpoint_duration_seconds")
        .record(stats.duration.as_secs_f64());
    metrics::histogram!("veto_store_checkpoint_locked_seconds").record(stats.locked.as_secs_f64());
    metrics::counter!("veto_store_checkpoint_bytes_total").increment(stats.bytes_written);
    tracing::info!(
        sequence = stats.sequence,
        written = stats.entities_written,
        deleted = stats.entities_deleted,
        total = stats.entities_total,
        bytes = stats.bytes_written,
        seconds = stats.duration.as_secs_f64(),
        locked_seconds = stats.locked.as_secs_f64(),
        "checkpoint written"
    );
}

/// A checkpoint written in the background failed: the previous one stands, the state stays
/// dirty for the next.
pub fn checkpoint_failed(error: &StoreError) {
    metrics::counter!("veto_store_checkpoint_failures_total").increment(1);
    tracing::error!(%error, "checkpoint failed; the previous one stands");
}

pub fn checkpoint_restored(entities: usize, sequence: u64, seconds: f64) {
    metrics::histogram!("veto_store_restore_duration_seconds").record(seconds);
    tracing::info!(entities, sequence, seconds, "checkpoint restored");
}

/// A pending exactly-once checkpoint found at start was applied (its transaction committed) or
/// discarded (it did not).
pub fn pending_checkpoint_resolved(committed: bool) {
    let outcome = if committed { "applied" } else { "discarded" };
    metrics::counter!("veto_store_pending_checkpoints_total", "outcome" => outcome).increment(1);
    tracing::info!(outcome, "pending exactly-once checkpoint settled");
}

pub fn checkpoint_rejected(error: &StoreError) {
    metrics::counter!("veto_store_checkpoint_rejected_total").increment(1);
    tracing::error!(%error, "checkpoint rejected");
}

pub fn size(stats: &StoreStats) {
    metrics::gauge!("veto_store_entities").set(stats.entities_in_memory as f64);
    metrics::gauge!("veto_store_spilled_entities").set(stats.entities_spilled as f64);
    metrics::gauge!("veto_store_bytes").set(stats.accounted_bytes as f64);
    metrics::gauge!("veto_store_rocksdb_memory_bytes").set(stats.rocksdb_bytes as f64);
}
