//! Retention: state of features a rule-set swap dropped, idle entities and expired tags.

use super::checkpoint::in_snapshot;
use super::{entity_key, Shard, TagStore};
use crate::store::entity::Entity;
use crate::store::telemetry;
use crate::store::StoreStats;
use ahash::AHashSet;
use std::sync::Arc;

/// Drops the features not in `keep`; marks the entity dirty if any was dropped.
pub(super) fn retain_features(entity: &mut Entity, keep: &AHashSet<u64>) {
    if entity.retain_features(|id| keep.contains(&id)) {
        entity.dirty = true;
    }
}

impl TagStore {
    pub(super) fn drop_retired_features(&self, entity: &mut Entity) {
        if let Some(keep) = self.retained.read().as_ref() {
            retain_features(entity, keep);
        }
    }

    /// Drops the state of features no longer defined (by `FeatureSpec::id`), in memory now and
    /// on disk when entities are read back.
    pub fn retain_features(&self, keep: &AHashSet<u64>) {
        {
            let mut retained = self.retained.write();
            if retained.as_deref() == Some(keep) {
                return; // same features as the last swap: nothing to drop
            }
            *retained = Some(Arc::new(keep.clone()));
        }
        let _gate = self.gate.read();
        for index in 0..self.shards.len() {
            let mut shard = self.lock_captured(index);
            let mut delta: i64 = 0;
            for map in shard.maps.iter_mut() {
                for (value, entity) in map.iter_mut() {
                    let before = entity.accounted_bytes(value.len()) as i64;
                    if entity.retain_features(|id| keep.contains(&id)) {
                        entity.dirty = true;
                        delta += entity.accounted_bytes(value.len()) as i64 - before;
                    }
                }
            }
            shard.bytes = shard.bytes.saturating_add_signed(delta);
        }
    }

    /// Purges expired tags and deletes idle entities (event time, minus the grace period) in
    /// every shard; call it periodically.
    pub fn sweep(&self) -> StoreStats {
        let started = std::time::Instant::now();
        let mut deleted_total = 0;
        for index in 0..self.shards.len() {
            // per shard: a checkpoint's snapshot waits for one shard's sweep, not all of them
            let _gate = self.gate.read();
            let mut shard = self.lock(index);
            let horizon = shard.watermark_ms.saturating_sub(self.cfg.expiry_grace_ms);
            let (capturing, snapshot_clock) = (shard.uncaptured, shard.snapshot_clock);
            let mut freed: i64 = 0;
            let Shard {
                maps,
                deleted,
                capture,
                clock,
                ..
            } = &mut *shard;
            for (kind, map) in maps.iter_mut().enumerate() {
                map.retain(|value, entity| {
                    let idle = entity.holds_until_ms <= horizon;
                    if !idle && entity.tags().is_empty() {
                        return true;
                    }
                    // copied for the checkpoint being captured before it changes, and
                    // touched, as an access does (`TagStore::entity_mut`): neither the writer
                    // nor a later access copies it again
                    if capturing && in_snapshot(*clock, snapshot_clock, entity) {
                        capture.entity(kind as u8, value, entity);
                        *clock = clock.wrapping_add(1);
                        entity.last_access = *clock;
                    }
                    let before = entity.accounted_bytes(value.len()) as i64;
                    if idle {
                        if entity.persisted {
                            deleted.insert(entity_key(kind as u8, value).into_boxed_slice());
                        }
                        deleted_total += 1;
                        freed += before;
                        return false;
                    }
                    if entity.purge_tags(horizon) {
                        entity.dirty = true;
                        freed += before - entity.accounted_bytes(value.len()) as i64;
                    }
                    true
                });
            }
            shard.bytes = shard.bytes.saturating_add_signed(-freed);
            shard.tables_changed = true;
        }
        if deleted_total > 0 {
            telemetry::idle_entities_deleted(deleted_total);
        }
        telemetry::swept(started.elapsed());
        let stats = self.stats();
        telemetry::size(&stats);
        stats
    }
}
