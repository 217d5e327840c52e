//! The memory budget: evicting the coldest entities of a shard to RocksDB (or dropping clean
//! ones) and reading them back on access.

use super::disk_keys::DiskKeys;
use super::{entity_hash, entity_key, split_key, Shard, TagStore};
use crate::event::Field;
use crate::store::codec::DecodeError;
use crate::store::disk::{printable_key, SpillBatch};
use crate::store::entity::{Entity, MAP_SLOT_ACCOUNTED};
use crate::store::telemetry;
use crate::store::StoreError;
use ahash::AHashSet;
use std::cell::RefCell;
use std::sync::atomic::Ordering;

/// One part in this of what RocksDB leaves of the budget is kept free for the allocator: its
/// size classes, partly used pages and metadata came to about a quarter of the entity bytes
/// under jemalloc in `veto-bench spill` (docs/store.md, "Memory budget and spill").
const ALLOCATOR_RESERVE_PARTS: u64 = 5;

thread_local! {
    /// An eviction's buffers (entity ages, the spill batch), per thread and kept between
    /// evictions: fresh ones would be allocated, faulted in and returned to the kernel at each
    /// eviction (the allocator hands freed pages back at once).
    static EVICTION: RefCell<(Vec<u32>, SpillBatch)> = RefCell::default();
}

/// Eviction buffers larger than this (a very large shard, an eviction after the budget
/// shrank) are not kept.
pub(super) const KEPT_BUFFER_BYTES: usize = 4 << 20;

/// Frees an eviction's buffers that grew past [`KEPT_BUFFER_BYTES`] instead of keeping them.
pub(super) fn drop_large_buffers(ages: &mut Vec<u32>, spill: &mut SpillBatch) {
    if ages.capacity() * size_of::<u32>() > KEPT_BUFFER_BYTES {
        *ages = Vec::new();
    }
    if spill.bytes() > KEPT_BUFFER_BYTES as u64 {
        *spill = SpillBatch::default();
    }
}

/// Evictions between two refreshes of the entity budget from RocksDB's memory.
pub(super) const BUDGET_REFRESH_EVICTIONS: u64 = 64;

/// Accounted entity bytes the store keeps in memory under `memory_budget`: the budget covers
/// RocksDB's memory (memtables, block cache, table readers) and an allocator reserve too, so the
/// process's resident memory for the store stays near the budget. Never below a quarter of it.
pub(super) fn entity_budget(memory_budget: u64, rocksdb_bytes: u64) -> u64 {
    let rest = memory_budget.saturating_sub(rocksdb_bytes);
    (rest - rest / ALLOCATOR_RESERVE_PARTS).max(memory_budget / 4)
}

/// One shard's part of [`entity_budget`], at least one byte.
pub(super) fn shard_budget(memory_budget: u64, rocksdb_bytes: u64, shards: usize) -> u64 {
    (entity_budget(memory_budget, rocksdb_bytes) / shards as u64).max(1)
}

impl TagStore {
    /// Looks for an entity that is not in memory in the spill, then in the checkpoint; not at
    /// all when the shard's [`DiskKeys`] say it never left memory, nor when it was deleted
    /// since the last checkpoint (`deleted`: the shard's deleted keys and those of the
    /// checkpoint being written).
    pub(super) fn read_back(
        &self,
        spilled: &mut u64,
        deleted: [&AHashSet<Box<[u8]>>; 2],
        disk_keys: &DiskKeys,
        kind: Field,
        value: &str,
        hash: u64,
    ) -> Option<Entity> {
        let maybe_spilled = *spilled > 0;
        let maybe_checkpointed = self.checkpoint_has_cold.load(Ordering::Relaxed)
            && self.checkpoint_live.load(Ordering::Relaxed);
        if !maybe_spilled && !maybe_checkpointed || !disk_keys.may_contain(kind as u8, hash) {
            return None;
        }
        let key = entity_key(kind as u8, value);
        if deleted.iter().any(|d| d.contains(key.as_slice())) {
            return None;
        }
        let found = (|| -> Result<Option<(Entity, usize)>, StoreError> {
            let corrupt = |reason: DecodeError| StoreError::CorruptSpill {
                key: printable_key(&key),
                reason: reason.to_string(),
            };
            if maybe_spilled {
                if let Some(bytes) = self.disk.take_spilled(&key)? {
                    *spilled = spilled.saturating_sub(1);
                    let mut entity = Entity::decode(&bytes).map_err(corrupt)?;
                    entity.dirty = true;
                    return Ok(Some((entity, bytes.len())));
                }
            }
            if maybe_checkpointed {
                if let Some(bytes) = self.disk.checkpointed(&key)? {
                    let mut entity = Entity::decode(&bytes).map_err(corrupt)?;
                    entity.persisted = true;
                    return Ok(Some((entity, bytes.len())));
                }
            }
            Ok(None)
        })();
        match found {
            Ok(Some((mut entity, bytes))) => {
                telemetry::entity_read_back(bytes as u64);
                self.drop_retired_features(&mut entity);
                Some(entity)
            }
            Ok(None) => None,
            Err(error) => {
                telemetry::read_back_failed(&printable_key(&key), &error);
                // the damaged copy may still be in the checkpoint: keep the entity count right
                let mut entity = Entity::fresh();
                entity.persisted = maybe_checkpointed;
                Some(entity)
            }
        }
    }

    /// Evicts from a shard over its budget, except while a checkpoint is being written (see
    /// [`TagStore::checkpoint_in_background`]).
    pub(super) fn keep_within_budget(&self, shard: &mut Shard) {
        if shard.memory() > self.shard_budget.load(Ordering::Relaxed)
            && !self.checkpoint_writing.load(Ordering::Relaxed)
        {
            if self.evictions.fetch_add(1, Ordering::Relaxed) % BUDGET_REFRESH_EVICTIONS == 0 {
                self.refresh_budget(self.disk.memory_bytes());
            }
            self.evict(shard);
        }
    }

    /// Sets the entity budget from RocksDB's current memory ([`entity_budget`]).
    pub(super) fn refresh_budget(&self, rocksdb_bytes: u64) {
        let budget = shard_budget(
            self.cfg.memory_budget_bytes,
            rocksdb_bytes,
            self.shards.len(),
        );
        self.shard_budget.store(budget, Ordering::Relaxed);
    }

    /// Brings a shard back to 90% of its budget: idle entities are deleted, then the least
    /// recently used ones are spilled (dirty) or dropped (clean, their checkpoint copy is current).
    fn evict(&self, shard: &mut Shard) {
        EVICTION.with_borrow_mut(|(ages, spill)| {
            ages.clear();
            spill.clear();
            self.evict_with(shard, ages, spill);
            drop_large_buffers(ages, spill);
        });
    }

    /// [`TagStore::evict`] with cleared buffers.
    fn evict_with(&self, shard: &mut Shard, ages: &mut Vec<u32>, spill: &mut SpillBatch) {
        let shard_budget = self.shard_budget.load(Ordering::Relaxed);
        let target = shard_budget - shard_budget / 10;
        let total = shard.memory();
        let count = shard.entity_count() as usize;
        if total <= target || count == 0 {
            return;
        }
        // An evicted entity frees its bytes but not its table slot.
        let saving = (shard.bytes / count as u64).saturating_sub(MAP_SLOT_ACCOUNTED as u64);
        let clock = shard.clock;
        ages.extend(
            (shard.maps.iter()).flat_map(|m| m.values().map(|e| clock.wrapping_sub(e.last_access))),
        );
        let mut to_evict = ((total - target).div_ceil(saving.max(1)) as usize).clamp(1, count);
        let (_, threshold, _) = ages.select_nth_unstable_by(to_evict - 1, |a, b| b.cmp(a));
        let threshold = *threshold;
        let horizon = shard.watermark_ms.saturating_sub(self.cfg.expiry_grace_ms);
        let mut freed = 0u64;
        let mut idle = 0u64;
        let mut dropped_clean = false;
        let Shard {
            maps,
            deleted,
            disk_keys,
            ..
        } = &mut *shard;
        for (kind, map) in maps.iter_mut().enumerate() {
            map.retain(|value, entity| {
                let is_idle = entity.holds_until_ms <= horizon;
                let is_cold = to_evict > 0 && clock.wrapping_sub(entity.last_access) >= threshold;
                if !is_idle && !is_cold {
                    return true;
                }
                freed += entity.accounted_bytes(value.len()) as u64;
                if is_idle {
                    idle += 1;
                    if entity.persisted {
                        deleted.insert(entity_key(kind as u8, value).into_boxed_slice());
                    }
                    return false;
                }
                to_evict -= 1;
                // on disk from here on (spilled, or its checkpoint copy is current)
                disk_keys.insert(kind as u8, entity_hash(value), shard_budget);
                if entity.dirty {
                    spill.push(kind as u8, value.as_bytes(), |buf| entity.encode(buf));
                } else {
                    dropped_clean = true;
                }
                false
            });
            // A table keeps its size when entities leave, and its slots count in the shard's
            // memory: left at a peak's size, tables would crowd out the entities themselves.
            if map.len() * 4 < map.capacity() {
                map.shrink_to(map.len() * 2);
            }
        }
        shard.bytes = shard.bytes.saturating_sub(freed);
        shard.tables_changed = true;
        if dropped_clean {
            self.checkpoint_has_cold.store(true, Ordering::Relaxed);
        }
        if idle > 0 {
            telemetry::idle_entities_deleted(idle);
        }
        if spill.is_empty() {
            return;
        }
        match self.disk.spill(spill) {
            Ok(()) => {
                shard.spilled += spill.len() as u64;
                telemetry::entities_spilled(spill.len() as u64, spill.bytes());
            }
            Err(error) => {
                telemetry::spill_failed(&error);
                self.reinsert(shard, spill);
            }
        }
    }

    /// Puts entities back into memory after a failed spill.
    fn reinsert(&self, shard: &mut Shard, entries: &SpillBatch) {
        for (key, payload) in entries.iter() {
            let (Ok((kind, value)), Ok(mut entity)) = (split_key(key), Entity::decode(payload))
            else {
                continue;
            };
            entity.dirty = true;
            shard.bytes += entity.accounted_bytes(value.len()) as u64;
            shard.maps[kind as usize].insert(value.into(), entity);
            shard.tables_changed = true;
        }
    }
}
