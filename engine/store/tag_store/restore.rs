//! Restore: the last checkpoint verified and loaded on every core, up to 90% of the budget.

use super::retention::retain_features;
use super::{entity_hash, split_key, Shard, TagStore, KINDS};
use crate::store::disk::printable_key;
use crate::store::entity::Entity;
use crate::store::telemetry;
use crate::store::{Restored, StoreError};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

/// Outcome of scanning the checkpoint in [`TagStore::restore`].
struct CheckpointScan {
    /// Entities seen (verified or not, when the scan stopped early).
    found: u64,
    /// Some entities were left on disk.
    cold: bool,
    result: Result<(), StoreError>,
}

impl TagStore {
    /// Loads the last checkpoint: verifies the manifest and every entity's checksum, loads
    /// entities into memory up to 90% of the budget (the rest is read back on access) and
    /// returns the offsets and timers saved with it. `Ok(None)` when there is no checkpoint.
    /// On any damage nothing stays loaded and a typed error is returned.
    pub fn restore(&self) -> Result<Option<Restored>, StoreError> {
        let started = Instant::now();
        let _gate = self.gate.write();
        let manifest = match self.disk.manifest() {
            Ok(Some(manifest)) => manifest,
            Ok(None) => return Ok(None),
            Err(error) => {
                telemetry::checkpoint_rejected(&error);
                return Err(error);
            }
        };
        self.clear_memory()?;
        self.reserve_for(manifest.entities);
        let scan = self.scan_checkpoint();
        let (found, cold) = (scan.found, scan.cold);
        let scanned = scan.result;
        let checked = scanned.and_then(|()| {
            if found == manifest.entities {
                Ok(())
            } else {
                Err(StoreError::CorruptCheckpoint(format!(
                    "manifest lists {} entities but {found} are stored",
                    manifest.entities
                )))
            }
        });
        if let Err(error) = checked {
            self.clear_memory()?;
            telemetry::checkpoint_rejected(&error);
            return Err(error);
        }
        self.checkpoint_live.store(true, Ordering::Relaxed);
        self.checkpoint_has_cold.store(cold, Ordering::Relaxed);
        self.checkpoint_entities.store(found, Ordering::Relaxed);
        self.sequence.store(manifest.sequence, Ordering::Relaxed);
        let entities = usize::try_from(found).unwrap_or(usize::MAX);
        telemetry::checkpoint_restored(
            entities,
            manifest.sequence,
            started.elapsed().as_secs_f64(),
        );
        drop(_gate);
        telemetry::size(&self.stats());
        Ok(Some(Restored {
            offsets: manifest.offsets,
            timers: manifest.timers,
            entities,
            sequence: manifest.sequence,
        }))
    }

    /// Accounted bytes a restore loads: 90% of the entity budget.
    fn restore_limit(&self) -> u64 {
        let budget = self.shard_budget.load(Ordering::Relaxed) * self.shards.len() as u64;
        budget - budget / 10
    }

    /// Sizes the shard maps for the entities a restore will load (estimated per kind from the
    /// on-disk key ranges, at most what fits in the budget), so loading does not rehash: a
    /// rehash reads every key box again, one cache miss each.
    fn reserve_for(&self, entities: u64) {
        let Ok(shares) = self.disk.checkpoint_kind_shares(KINDS as u8) else {
            return;
        };
        let load_limit = self.restore_limit();
        let smallest = Entity::fresh().accounted_bytes(1) as u64;
        let loadable = entities.min(load_limit / smallest) as f64;
        let shards = self.shards.len() as f64;
        for (kind, share) in shares.into_iter().enumerate() {
            let per_shard = (loadable * share / shards).ceil() as usize;
            if per_shard > 0 {
                for index in 0..self.shards.len() {
                    let mut shard = self.lock(index);
                    shard.maps[kind].reserve(per_shard);
                    shard.tables_changed = true;
                }
            }
        }
    }

    /// Scans the whole checkpoint on every core: each thread takes key ranges (split at SST
    /// file boundaries) from a shared queue, verifies and decodes every entity and loads it into
    /// its shard until 90% of the budget is used; the rest stays cold (read back on access).
    /// The first error stops every thread.
    fn scan_checkpoint(&self) -> CheckpointScan {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        let ranges = match self.disk.checkpoint_ranges(threads * 4) {
            Ok(ranges) => ranges,
            Err(error) => {
                return CheckpointScan {
                    found: 0,
                    cold: false,
                    result: Err(error),
                }
            }
        };
        let load_limit = self.restore_limit();
        let next = AtomicUsize::new(0);
        let found = AtomicU64::new(0);
        let loaded_bytes = AtomicU64::new(0);
        let cold = AtomicBool::new(false);
        let stop = AtomicBool::new(false);
        let first_error: Mutex<Option<StoreError>> = Mutex::new(None);
        let retained = self.retained.read().clone();
        // an entity left on disk only: its shard's filter must say it may be there
        let leave_cold = |kind: u8, hash: u64| {
            cold.store(true, Ordering::Relaxed);
            let shard_budget = self.shard_budget.load(Ordering::Relaxed);
            (self.lock(self.shard_of(hash)).disk_keys).insert(kind, hash, shard_budget);
        };
        let worker = || {
            while !stop.load(Ordering::Relaxed) {
                let Some(range) = ranges.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    break;
                };
                let mut seen = 0u64;
                let mut buf = Vec::with_capacity(256);
                let result = self.disk.for_each_checkpointed_in(range, |key, payload| {
                    seen += 1;
                    let (kind, value) = split_key(key)?;
                    let mut entity = Entity::decode_with(payload, &mut buf).map_err(|e| {
                        StoreError::CorruptCheckpoint(format!("entity {}: {e}", printable_key(key)))
                    })?;
                    if cold.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed) {
                        leave_cold(kind as u8, entity_hash(value));
                        return Ok(());
                    }
                    entity.persisted = true;
                    entity.dirty = false;
                    if let Some(keep) = &retained {
                        retain_features(&mut entity, keep);
                    }
                    let bytes = entity.accounted_bytes(value.len()) as u64;
                    let hash = entity_hash(value);
                    if loaded_bytes.fetch_add(bytes, Ordering::Relaxed) >= load_limit {
                        leave_cold(kind as u8, hash);
                        return Ok(());
                    }
                    let mut shard = self.lock(self.shard_of(hash));
                    shard.bytes += bytes;
                    shard.maps[kind as usize].insert(value.into(), entity);
                    shard.tables_changed = true;
                    Ok(())
                });
                found.fetch_add(seen, Ordering::Relaxed);
                if let Err(error) = result {
                    stop.store(true, Ordering::Relaxed);
                    first_error.lock().get_or_insert(error);
                }
            }
        };
        std::thread::scope(|scope| {
            for _ in 1..threads {
                scope.spawn(worker);
            }
            worker();
        });
        CheckpointScan {
            found: found.into_inner(),
            cold: cold.into_inner(),
            result: first_error.into_inner().map_or(Ok(()), Err),
        }
    }

    /// Empties memory and the spill (restore starts from a clean slate).
    fn clear_memory(&self) -> Result<(), StoreError> {
        for index in 0..self.shards.len() {
            *self.lock(index) = Shard::default();
        }
        self.disk.clear_spill()
    }
}
