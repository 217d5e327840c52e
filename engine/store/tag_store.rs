//! `TagStore`: lock-striped shards of entity state, spill of cold entities, checkpoint and restore.

use super::disk::{printable_key, CheckpointWriter, Disk, Manifest, Pending};
use super::entity::{alloc_size, Entity, FeatureUpdate, MAP_SLOT_ACCOUNTED};
use super::hll::item_hash;
use super::packed::Scratch;
use super::telemetry;
use super::window::{empty_value, to_fixed, Contribution, Geometry};
use super::{
    CheckpointStats, FeatureInput, FeatureSpec, Observation, PartitionOffset, Restored,
    StoreConfig, StoreError, StoreStats,
};
use crate::event::{Aggregate, Field, TagUpdate};
use ahash::{AHashSet, RandomState};
use hashbrown::hash_map::RawEntryMut;
use parking_lot::{Mutex, MutexGuard, RwLock};
use std::cell::RefCell;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

const KINDS: usize = Field::ALL.len();

/// The fixed-seed hash of entity values. Shards and shard maps use the same hash, so an
/// operation hashes each entity value once: the shard comes from bits 32.. (the maps probe with
/// the low bits and keep the top 7 as tags, so the shard choice does not skew them).
#[derive(Debug, Clone, Copy, Default)]
struct EntityHasher;

const ENTITY_SEEDS: RandomState = RandomState::with_seeds(
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
);

impl BuildHasher for EntityHasher {
    type Hasher = ahash::AHasher;

    fn build_hasher(&self) -> ahash::AHasher {
        ENTITY_SEEDS.build_hasher()
    }
}

/// Entities of one kind in one shard, by value.
type EntityMap = hashbrown::HashMap<Box<str>, Entity, EntityHasher>;

/// Hash of an entity value, as [`EntityMap`] computes it.
fn entity_hash(value: &str) -> u64 {
    EntityHasher.hash_one(value)
}

/// One lock stripe: a map per entity kind, keyed by the entity value.
#[derive(Default)]
struct Shard {
    maps: [EntityMap; KINDS],
    /// Accounted bytes of the entities in `maps`.
    bytes: u64,
    /// [`Shard::table_excess`] as last computed; recomputed when `tables_changed` is set.
    tables: u64,
    /// Set by every insert into or removal from `maps` (and by `reserve`): `tables` is stale.
    tables_changed: bool,
    /// Access clock; entities remember the tick of their last access.
    clock: u32,
    /// Newest event time seen by this shard.
    watermark_ms: i64,
    /// Entries of this shard in the spill column family.
    spilled: u64,
    /// Keys of checkpointed entities deleted since the last checkpoint.
    deleted: AHashSet<Box<[u8]>>,
}

impl Shard {
    fn entity_count(&self) -> u64 {
        self.maps.iter().map(|m| m.len() as u64).sum()
    }

    /// Bytes of the maps' tables beyond the slots the entity accounting counts: a table keeps
    /// its size when entities leave and doubles when it fills.
    fn table_excess(&self) -> u64 {
        self.maps
            .iter()
            .map(|m| {
                (m.allocation_size() as u64)
                    .saturating_sub(m.len() as u64 * MAP_SLOT_ACCOUNTED as u64)
            })
            .sum()
    }

    /// Accounted bytes of the shard: its entities and its tables. Walking the tables costs
    /// more than the rest of a feature update, so it happens only after they changed.
    fn memory(&mut self) -> u64 {
        if self.tables_changed {
            self.tables = self.table_excess();
            self.tables_changed = false;
        }
        debug_assert_eq!(self.tables, self.table_excess(), "a map changed unflagged");
        self.bytes + self.tables
    }
}

thread_local! {
    /// Vectors for unpacking features, per thread (used only while a shard lock is held).
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// A shard on its own cache lines, so neighbouring locks do not false-share.
#[repr(align(128))]
struct PaddedShard(Mutex<Shard>);

/// The engine's per-entity memory. `Send + Sync`; every method takes `&self`.
pub struct TagStore {
    shards: Box<[PaddedShard]>,
    shard_mask: usize,
    /// Accounted bytes one shard may hold: see [`entity_budget`]; refreshed as RocksDB's memory
    /// changes.
    shard_budget: AtomicU64,
    /// Evictions so far; every [`BUDGET_REFRESH_EVICTIONS`]th refreshes `shard_budget`.
    evictions: AtomicU64,
    cfg: StoreConfig,
    disk: Disk,
    /// Read by every operation, written by checkpoint and restore so they see a still store.
    gate: RwLock<()>,
    /// The checkpoint column family belongs to this run (restored or written by it).
    checkpoint_live: AtomicBool,
    /// Some checkpointed entities are only on disk, so misses must look there.
    checkpoint_has_cold: AtomicBool,
    checkpoint_entities: AtomicU64,
    sequence: AtomicU64,
    /// An exactly-once checkpoint file whose transaction committed but whose ingestion failed;
    /// applied before the next checkpoint.
    unapplied: Mutex<Option<Pending>>,
    /// Feature ids still defined, once `retain_features` has been called.
    retained: RwLock<Option<Arc<AHashSet<u64>>>>,
}

/// One part in this of what RocksDB leaves of the budget is kept free for the allocator: its
/// size classes, partly used pages and metadata came to about a quarter of the entity bytes
/// under jemalloc in `veto-bench spill` (docs/store.md, "Memory budget and spill").
const ALLOCATOR_RESERVE_PARTS: u64 = 5;

/// Evictions between two refreshes of the entity budget from RocksDB's memory.
const BUDGET_REFRESH_EVICTIONS: u64 = 64;

/// Accounted entity bytes the store keeps in memory under `memory_budget`: the budget covers
/// RocksDB's memory (memtables, block cache, table readers) and an allocator reserve too, so the
/// process's resident memory for the store stays near the budget. Never below a quarter of it.
fn entity_budget(memory_budget: u64, rocksdb_bytes: u64) -> u64 {
    let rest = memory_budget.saturating_sub(rocksdb_bytes);
    (rest - rest / ALLOCATOR_RESERVE_PARTS).max(memory_budget / 4)
}

/// One shard's part of [`entity_budget`], at least one byte.
fn shard_budget(memory_budget: u64, rocksdb_bytes: u64, shards: usize) -> u64 {
    (entity_budget(memory_budget, rocksdb_bytes) / shards as u64).max(1)
}

/// The persisted key of an entity: kind byte, then the value bytes.
fn entity_key(kind: u8, value: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + value.len());
    key.push(kind);
    key.extend_from_slice(value.as_bytes());
    key
}

fn split_key(key: &[u8]) -> Result<(Field, &str), StoreError> {
    let bad =
        |why: &str| StoreError::CorruptCheckpoint(format!("key {}: {why}", printable_key(key)));
    let (&kind, value) = key.split_first().ok_or_else(|| bad("empty"))?;
    let kind = Field::from_u8(kind).ok_or_else(|| bad("unknown entity kind"))?;
    let value = std::str::from_utf8(value).map_err(|_| bad("value not utf-8"))?;
    Ok((kind, value))
}

/// Drops the features not in `keep`; marks the entity dirty if any was dropped.
fn retain_features(entity: &mut Entity, keep: &AHashSet<u64>) {
    if entity.retain_features(|id| keep.contains(&id)) {
        entity.dirty = true;
    }
}

/// A persisted key as (kind byte, value bytes): compares like the key's bytes.
fn key_parts(key: &[u8]) -> (u8, &[u8]) {
    key.split_first()
        .map_or((0, &[][..]), |(kind, value)| (*kind, value))
}

/// One entry of a checkpoint file, borrowed from a shard.
enum Change<'s> {
    Delete(&'s [u8]),
    Put(u8, &'s str, &'s Entity),
}

impl Change<'_> {
    /// Orders like the persisted key ([`entity_key`]): kind byte, then value bytes.
    fn key(&self) -> (u8, &[u8]) {
        match *self {
            Change::Delete(key) => key_parts(key),
            Change::Put(kind, value, _) => (kind, value.as_bytes()),
        }
    }

    fn is_put(&self) -> bool {
        matches!(self, Change::Put(..))
    }

    fn write(
        &self,
        writer: &mut CheckpointWriter<'_>,
        payload: &mut Vec<u8>,
        counts: &mut Counts,
    ) -> Result<(), StoreError> {
        match *self {
            Change::Delete(key) => {
                writer.delete_entity(key)?;
                counts.deleted += 1;
                counts.total = counts.total.saturating_sub(1);
            }
            Change::Put(kind, value, entity) => {
                payload.clear();
                entity.encode(payload);
                writer.put_entity(&entity_key(kind, value), payload)?;
                counts.written += 1;
                counts.total += u64::from(!entity.persisted);
            }
        }
        Ok(())
    }
}

/// Entities a checkpoint wrote and deleted, and how many it holds.
#[derive(Default)]
struct Counts {
    written: u64,
    deleted: u64,
    total: u64,
}

/// Outcome of scanning the checkpoint in [`TagStore::restore`].
struct CheckpointScan {
    /// Entities seen (verified or not, when the scan stopped early).
    found: u64,
    /// Some entities were left on disk.
    cold: bool,
    result: Result<(), StoreError>,
}

/// What an input adds to a feature of aggregate `agg`.
fn contribution(agg: Aggregate, input: &FeatureInput<'_>) -> Contribution {
    if !input.counted {
        return Contribution::Nothing;
    }
    match (agg, input.observation) {
        (_, Observation::Missing) => Contribution::Nothing,
        (Aggregate::Count, _) => Contribution::Count,
        (Aggregate::Distinct, Observation::Item(item)) => {
            Contribution::Item(item_hash(item.as_bytes()))
        }
        (_, Observation::Num(v)) => to_fixed(v).map_or(Contribution::Nothing, Contribution::Number),
        _ => Contribution::Nothing,
    }
}

impl TagStore {
    /// Opens (or creates) the store's RocksDB directory. State starts empty: call
    /// [`TagStore::restore`] before the first update to load the last checkpoint.
    pub fn open(cfg: StoreConfig) -> Result<TagStore, StoreError> {
        if cfg.shards == 0 || !cfg.shards.is_power_of_two() {
            return Err(StoreError::Config(format!(
                "shards must be a power of two, got {}",
                cfg.shards
            )));
        }
        if cfg.distinct_exact_limit == 0 {
            return Err(StoreError::Config(
                "distinct_exact_limit must be at least 1".into(),
            ));
        }
        let disk = Disk::open(&cfg.data_dir, cfg.block_cache_bytes, cfg.in_memory)?;
        let shards = (0..cfg.shards)
            .map(|_| PaddedShard(Mutex::new(Shard::default())))
            .collect();
        Ok(TagStore {
            shards,
            shard_mask: cfg.shards - 1,
            shard_budget: AtomicU64::new(shard_budget(cfg.memory_budget_bytes, 0, cfg.shards)),
            evictions: AtomicU64::new(0),
            cfg,
            disk,
            gate: RwLock::new(()),
            checkpoint_live: AtomicBool::new(false),
            checkpoint_has_cold: AtomicBool::new(false),
            checkpoint_entities: AtomicU64::new(0),
            sequence: AtomicU64::new(0),
            unapplied: Mutex::new(None),
            retained: RwLock::new(None),
        })
    }

    /// The shard of an entity whose value hashes to `hash` ([`entity_hash`]).
    fn shard_of(&self, hash: u64) -> usize {
        (hash >> 32) as usize & self.shard_mask
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, Shard> {
        self.shards[index & self.shard_mask].0.lock()
    }

    /// Updates every feature of one event and writes each feature's value after counting into
    /// `out[i]`. `specs[i]` and `inputs[i]` correspond. Entities are updated one at a time, each
    /// under its shard's lock with all of its features.
    pub fn update(
        &self,
        event_time_ms: i64,
        specs: &[FeatureSpec],
        inputs: &[FeatureInput<'_>],
        out: &mut [Option<f64>],
    ) {
        out.iter_mut().for_each(|o| *o = None);
        let n = specs.len().min(inputs.len()).min(out.len());
        let mut scratch = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
        // the entity hash of every input still to apply (features by the same field usually
        // name the same entity: hash it once)
        let mut pending = std::mem::take(&mut scratch.pending);
        pending.clear();
        let mut hashed: [Option<(&str, u64)>; KINDS] = [None; KINDS];
        pending.extend(specs.iter().zip(inputs).take(n).map(|(spec, input)| {
            let value = input.entity?;
            let cached = &mut hashed[spec.by as usize];
            Some(match *cached {
                Some((seen, hash)) if std::ptr::eq(seen, value) || seen == value => hash,
                _ => {
                    let hash = entity_hash(value);
                    *cached = Some((value, hash));
                    hash
                }
            })
        }));
        let limit = self.cfg.distinct_exact_limit;
        let _gate = self.gate.read();
        // one entity at a time, in order of first use, with all of its features
        for first in 0..n {
            let (Some(hash), kind, Some(value)) =
                (pending[first], specs[first].by, inputs[first].entity)
            else {
                continue;
            };
            let mut updates = std::mem::take(&mut scratch.updates);
            let mut of_input = std::mem::take(&mut scratch.update_inputs);
            updates.clear();
            of_input.clear();
            for i in first..n {
                let same = pending[i] == Some(hash)
                    && specs[i].by == kind
                    && inputs[i]
                        .entity
                        .is_some_and(|v| std::ptr::eq(v, value) || v == value);
                if !same {
                    continue;
                }
                pending[i] = None;
                let spec = &specs[i];
                of_input.push(i);
                updates.push(FeatureUpdate {
                    id: spec.id,
                    agg: spec.agg,
                    geometry: Geometry::new(spec.window_ms, spec.resolution_ms),
                    window_ms: i64::try_from(spec.window_ms).unwrap_or(i64::MAX),
                    contribution: contribution(spec.agg, &inputs[i]),
                });
            }
            let mut shard = self.lock(self.shard_of(hash));
            shard.watermark_ms = shard.watermark_ms.max(event_time_ms);
            if let Some(entity) = self.entity_mut(&mut shard, kind, value, hash, true) {
                let before = entity.accounted_bytes(value.len());
                entity.update_features(event_time_ms, &updates, limit, &mut scratch, |k, v, _| {
                    out[of_input[k]] = v;
                });
                entity.dirty = true;
                let after = entity.accounted_bytes(value.len());
                shard.bytes = (shard.bytes + after as u64).saturating_sub(before as u64);
            }
            self.keep_within_budget(&mut shard);
            scratch.updates = updates;
            scratch.update_inputs = of_input;
        }
        scratch.pending = pending;
        SCRATCH.with(|s| *s.borrow_mut() = scratch);
    }

    /// The entity in memory, read back from disk if it was spilled or checkpointed, or (with
    /// `create`) a new one. Marks it as just accessed.
    fn entity_mut<'s>(
        &self,
        shard: &'s mut Shard,
        kind: Field,
        value: &str,
        hash: u64,
        create: bool,
    ) -> Option<&'s mut Entity> {
        let Shard {
            maps,
            bytes,
            tables_changed,
            clock,
            spilled,
            deleted,
            ..
        } = shard;
        let entity = match maps[kind as usize]
            .raw_entry_mut()
            .from_key_hashed_nocheck(hash, value)
        {
            RawEntryMut::Occupied(entry) => entry.into_mut(),
            RawEntryMut::Vacant(entry) => {
                let entity = match self.read_back(spilled, deleted, kind, value) {
                    Some(entity) => entity,
                    None if create => {
                        let mut entity = Entity::fresh();
                        if !deleted.is_empty() {
                            let key = entity_key(kind as u8, value);
                            entity.persisted = deleted.remove(key.as_slice());
                        }
                        entity
                    }
                    None => return None,
                };
                *bytes += entity.accounted_bytes(value.len()) as u64;
                *tables_changed = true;
                entry.insert_hashed_nocheck(hash, value.into(), entity).1
            }
        };
        *clock = clock.wrapping_add(1);
        entity.last_access = *clock;
        Some(entity)
    }

    /// Looks for an entity that is not in memory in the spill, then in the checkpoint.
    fn read_back(
        &self,
        spilled: &mut u64,
        deleted: &AHashSet<Box<[u8]>>,
        kind: Field,
        value: &str,
    ) -> Option<Entity> {
        let maybe_spilled = *spilled > 0;
        let maybe_checkpointed = self.checkpoint_has_cold.load(Ordering::Relaxed)
            && self.checkpoint_live.load(Ordering::Relaxed);
        if !maybe_spilled && !maybe_checkpointed {
            return None;
        }
        let key = entity_key(kind as u8, value);
        if deleted.contains(key.as_slice()) {
            return None;
        }
        let found = (|| -> Result<Option<(Entity, usize)>, StoreError> {
            let corrupt = |reason: super::codec::DecodeError| StoreError::CorruptSpill {
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

    fn drop_retired_features(&self, entity: &mut Entity) {
        if let Some(keep) = self.retained.read().as_ref() {
            retain_features(entity, keep);
        }
    }

    fn keep_within_budget(&self, shard: &mut Shard) {
        if shard.memory() > self.shard_budget.load(Ordering::Relaxed) {
            if self.evictions.fetch_add(1, Ordering::Relaxed) % BUDGET_REFRESH_EVICTIONS == 0 {
                self.refresh_budget(self.disk.memory_bytes());
            }
            self.evict(shard);
        }
    }

    /// Sets the entity budget from RocksDB's current memory ([`entity_budget`]).
    fn refresh_budget(&self, rocksdb_bytes: u64) {
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
        let mut ages: Vec<u32> = shard
            .maps
            .iter()
            .flat_map(|m| m.values().map(|e| clock.wrapping_sub(e.last_access)))
            .collect();
        let mut to_evict = ((total - target).div_ceil(saving.max(1)) as usize).clamp(1, count);
        let (_, threshold, _) = ages.select_nth_unstable_by(to_evict - 1, |a, b| b.cmp(a));
        let threshold = *threshold;
        let horizon = shard.watermark_ms.saturating_sub(self.cfg.expiry_grace_ms);
        let mut spill: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut freed = 0u64;
        let mut idle = 0u64;
        let mut dropped_clean = false;
        let Shard { maps, deleted, .. } = &mut *shard;
        for (kind, map) in maps.iter_mut().enumerate() {
            map.retain(|value, entity| {
                let is_idle = entity.holds_until_ms <= horizon;
                let is_cold = to_evict > 0 && clock.wrapping_sub(entity.last_access) >= threshold;
                if !is_idle && !is_cold {
                    return true;
                }
                freed += entity.accounted_bytes(value.len()) as u64;
                let key = entity_key(kind as u8, value);
                if is_idle {
                    idle += 1;
                    if entity.persisted {
                        deleted.insert(key.into_boxed_slice());
                    }
                    return false;
                }
                to_evict -= 1;
                if entity.dirty {
                    let mut payload = Vec::with_capacity(64);
                    entity.encode(&mut payload);
                    spill.push((key, payload));
                } else {
                    dropped_clean = true;
                }
                false
            });
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
        match self.disk.spill(&spill) {
            Ok(()) => {
                shard.spilled += spill.len() as u64;
                let bytes = spill.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
                telemetry::entities_spilled(spill.len() as u64, bytes);
            }
            Err(error) => {
                telemetry::spill_failed(&error);
                self.reinsert(shard, spill);
            }
        }
    }

    /// Puts entities back into memory after a failed spill.
    fn reinsert(&self, shard: &mut Shard, entries: Vec<(Vec<u8>, Vec<u8>)>) {
        for (key, payload) in entries {
            let (Ok((kind, value)), Ok(mut entity)) = (split_key(&key), Entity::decode(&payload))
            else {
                continue;
            };
            entity.dirty = true;
            shard.bytes += entity.accounted_bytes(value.len()) as u64;
            shard.maps[kind as usize].insert(value.into(), entity);
            shard.tables_changed = true;
        }
    }

    /// Whether the entity carries the tag at event time `now_ms`.
    pub fn has_tag(&self, entity: Field, value: &str, tag: &str, now_ms: i64) -> bool {
        let _gate = self.gate.read();
        let hash = entity_hash(value);
        let mut shard = self.lock(self.shard_of(hash));
        let found = self
            .entity_mut(&mut shard, entity, value, hash, false)
            .is_some_and(|e| e.has_tag(tag, now_ms));
        self.keep_within_budget(&mut shard);
        found
    }

    /// Calls `each` with the name of every tag the entity carries at event time `now_ms`
    /// (for callers asking about several tags of one entity: one lookup for all).
    pub fn for_each_tag(
        &self,
        entity: Field,
        value: &str,
        now_ms: i64,
        mut each: impl FnMut(&str),
    ) {
        let _gate = self.gate.read();
        let hash = entity_hash(value);
        let mut shard = self.lock(self.shard_of(hash));
        if let Some(e) = self.entity_mut(&mut shard, entity, value, hash, false) {
            for tag in e.tags().iter().filter(|t| t.is_live(now_ms)) {
                each(&tag.name);
            }
        }
        self.keep_within_budget(&mut shard);
    }

    /// Sets or removes a tag.
    /// Applies a tag update; `false` when it was refused because the entity already holds
    /// [`MAX_TAGS`](super::entity::MAX_TAGS) tags (said in the log and metrics).
    pub fn apply_tag(&self, update: &TagUpdate) -> bool {
        let _gate = self.gate.read();
        let hash = entity_hash(&update.value);
        let mut shard = self.lock(self.shard_of(hash));
        let create = !update.remove;
        let mut applied = true;
        if let Some(entity) =
            self.entity_mut(&mut shard, update.entity, &update.value, hash, create)
        {
            let before = entity.accounted_bytes(update.value.len());
            if update.remove {
                entity.dirty |= entity.remove_tag(&update.tag);
            } else if entity.set_tag(&update.tag, update.expires_at_ms) {
                entity.dirty = true;
            } else {
                applied = false;
                super::telemetry::tag_limit_reached(update.entity.name(), &update.tag);
            }
            let after = entity.accounted_bytes(update.value.len());
            shard.bytes = (shard.bytes + after as u64).saturating_sub(before as u64);
        }
        self.keep_within_budget(&mut shard);
        applied
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
            let mut shard = self.lock(index);
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

    /// Reads a feature value at evaluation time max(`at_ms`, T) without counting anything.
    pub fn feature_value(&self, spec: &FeatureSpec, entity: &str, at_ms: i64) -> Option<f64> {
        let _gate = self.gate.read();
        let hash = entity_hash(entity);
        let mut shard = self.lock(self.shard_of(hash));
        let geometry = Geometry::new(spec.window_ms, spec.resolution_ms);
        let mut scratch = Scratch::default();
        let value = self
            .entity_mut(&mut shard, spec.by, entity, hash, false)
            .and_then(|e| e.feature_value(spec.id, spec.agg, geometry, at_ms, &mut scratch))
            .unwrap_or_else(|| empty_value(spec.agg));
        self.keep_within_budget(&mut shard);
        value
    }

    /// Purges expired tags and deletes idle entities (event time, minus the grace period) in
    /// every shard; call it periodically.
    pub fn sweep(&self) -> StoreStats {
        let _gate = self.gate.read();
        let mut deleted_total = 0;
        for index in 0..self.shards.len() {
            let mut shard = self.lock(index);
            let horizon = shard.watermark_ms.saturating_sub(self.cfg.expiry_grace_ms);
            let mut freed: i64 = 0;
            let Shard { maps, deleted, .. } = &mut *shard;
            for (kind, map) in maps.iter_mut().enumerate() {
                map.retain(|value, entity| {
                    let before = entity.accounted_bytes(value.len()) as i64;
                    if entity.holds_until_ms <= horizon {
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
        drop(_gate);
        let stats = self.stats();
        telemetry::size(&stats);
        stats
    }

    /// Writes every dirty entity (in memory and spilled), the timers blob and the Kafka offsets
    /// as one checkpoint file, ingested atomically and durably. Waits for in-flight operations
    /// and blocks new ones while it runs, so state and offsets correspond.
    pub fn checkpoint(
        &self,
        offsets: &[PartitionOffset],
        timers: &[u8],
    ) -> Result<CheckpointStats, StoreError> {
        self.write_checkpoint(offsets, timers, None)
    }

    /// The exactly-once checkpoint: the file is first recorded as *pending*, then `publish`
    /// commits the Kafka transaction that carries `txn_offsets` (it is given the checkpoint's
    /// sequence, which the transaction carries as the offsets' commit metadata so that two
    /// transactions with equal offsets are told apart), then the file is applied.
    /// When `publish` fails the state stays dirty and the pending copy stays on disk, settled
    /// by [`TagStore::resolve_pending`] at the next start once Kafka tells the outcome.
    pub fn checkpoint_published(
        &self,
        offsets: &[PartitionOffset],
        timers: &[u8],
        txn_offsets: &[PartitionOffset],
        publish: &mut dyn FnMut(u64) -> Result<(), String>,
    ) -> Result<CheckpointStats, StoreError> {
        self.write_checkpoint(
            offsets,
            timers,
            Some(Publish {
                txn_offsets,
                publish,
            }),
        )
    }

    /// The Kafka offsets and the sequence of the pending exactly-once checkpoint, if one is
    /// waiting.
    pub fn pending_checkpoint(&self) -> Result<Option<(Vec<PartitionOffset>, u64)>, StoreError> {
        Ok(self
            .disk
            .pending()?
            .map(|pending| (pending.txn_offsets, pending.sequence)))
    }

    /// Applies the pending checkpoint if its transaction `committed`, else discards it; call
    /// before [`TagStore::restore`].
    pub fn resolve_pending(&self, committed: bool) -> Result<(), StoreError> {
        self.disk.resolve_pending(committed)?;
        telemetry::pending_checkpoint_resolved(committed);
        Ok(())
    }

    /// Applies the file of an exactly-once checkpoint whose transaction committed but whose
    /// ingestion failed. The in-memory flags were left as before it, so the checkpoint that
    /// follows rewrites everything it held (and what changed since) on top of it.
    fn apply_unapplied(&self) -> Result<(), StoreError> {
        let mut unapplied = self.unapplied.lock();
        if let Some(pending) = unapplied.as_ref() {
            self.disk.commit_pending(pending)?;
            self.sequence.store(pending.sequence, Ordering::Relaxed);
            *unapplied = None;
        }
        Ok(())
    }

    /// Writes into `writer`, in key order, every deleted and dirty entity of `shards` and every
    /// spilled one (the spilled copy wins on the same key: it is the newer one).
    fn write_changes(
        &self,
        shards: &[MutexGuard<'_, Shard>],
        writer: &mut CheckpointWriter<'_>,
        counts: &mut Counts,
    ) -> Result<(), StoreError> {
        let mut order = Vec::new();
        for shard in shards {
            order.extend(shard.deleted.iter().map(|key| Change::Delete(key)));
            for (kind, map) in shard.maps.iter().enumerate() {
                let dirty = map.iter().filter(|(_, e)| e.dirty);
                order.extend(dirty.map(|(value, e)| Change::Put(kind as u8, value, e)));
            }
        }
        // a put outranks a delete of the same key (the entity came back)
        order.sort_unstable_by(|a, b| a.key().cmp(&b.key()).then(b.is_put().cmp(&a.is_put())));
        order.dedup_by(|later, earlier| later.key() == earlier.key());
        let mut payload = Vec::with_capacity(256);
        let mut changes = order.iter().peekable();
        self.disk.for_each_spilled(|key, spilled| {
            let at = key_parts(key);
            while let Some(change) = changes.next_if(|c| c.key() <= at) {
                if change.key() < at {
                    change.write(writer, &mut payload, counts)?;
                }
            }
            writer.put_entity(key, spilled)?;
            counts.written += 1;
            counts.total += u64::from(spilled.get(1) != Some(&1));
            Ok(())
        })?;
        changes.try_for_each(|change| change.write(writer, &mut payload, counts))
    }

    fn write_checkpoint(
        &self,
        offsets: &[PartitionOffset],
        timers: &[u8],
        publish: Option<Publish<'_>>,
    ) -> Result<CheckpointStats, StoreError> {
        let started = Instant::now();
        let _gate = self.gate.write();
        self.apply_unapplied()?;
        let live = self.checkpoint_live.load(Ordering::Relaxed);
        if !live {
            self.disk.clear_checkpoint()?;
        }
        let mut counts = Counts {
            total: if live {
                self.checkpoint_entities.load(Ordering::Relaxed)
            } else {
                0
            },
            ..Counts::default()
        };
        let sequence = self.sequence.load(Ordering::Relaxed) + 1;
        let mut writer = self.disk.checkpoint_writer(sequence)?;
        let mut shards: Vec<_> = (0..self.shards.len()).map(|i| self.lock(i)).collect();
        self.write_changes(&shards, &mut writer, &mut counts)?;
        let manifest = Manifest {
            sequence,
            entities: counts.total,
            offsets: offsets.to_vec(),
            timers: timers.to_vec(),
        };
        let bytes_written = writer.bytes;
        match publish {
            None => self.disk.commit(writer, &manifest)?,
            Some(Publish {
                txn_offsets,
                publish,
            }) => {
                let pending = self.disk.write_pending(txn_offsets, writer, &manifest)?;
                publish(sequence).map_err(StoreError::NotPublished)?;
                if let Err(error) = self.disk.commit_pending(&pending) {
                    // its transaction committed: no other checkpoint before this one is in
                    *self.unapplied.lock() = Some(pending);
                    return Err(error);
                }
            }
        }
        self.disk.end_spill_epoch();

        let mut moved_to_disk = false;
        for shard in shards.iter_mut() {
            shard.deleted = AHashSet::new();
            moved_to_disk |= shard.spilled > 0;
            shard.spilled = 0;
            for map in shard.maps.iter_mut() {
                for entity in map.values_mut() {
                    entity.dirty = false;
                    entity.persisted = true;
                }
            }
        }
        if moved_to_disk {
            self.checkpoint_has_cold.store(true, Ordering::Relaxed);
        }
        self.checkpoint_live.store(true, Ordering::Relaxed);
        self.checkpoint_entities
            .store(counts.total, Ordering::Relaxed);
        self.sequence.store(sequence, Ordering::Relaxed);
        let stats = CheckpointStats {
            sequence,
            entities_written: counts.written,
            entities_deleted: counts.deleted,
            entities_total: counts.total,
            bytes_written,
            duration: started.elapsed(),
        };
        telemetry::checkpoint_written(&stats);
        drop(shards);
        drop(_gate);
        telemetry::size(&self.stats());
        Ok(stats)
    }

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
                        cold.store(true, Ordering::Relaxed);
                        return Ok(());
                    }
                    entity.persisted = true;
                    entity.dirty = false;
                    if let Some(keep) = &retained {
                        retain_features(&mut entity, keep);
                    }
                    let bytes = entity.accounted_bytes(value.len()) as u64;
                    if loaded_bytes.fetch_add(bytes, Ordering::Relaxed) >= load_limit {
                        cold.store(true, Ordering::Relaxed);
                        return Ok(());
                    }
                    let mut shard = self.lock(self.shard_of(entity_hash(value)));
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

    /// Flushes RocksDB memtables to files (for shutdown and tests).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.disk.flush()
    }

    /// Sizes of the store right now.
    pub fn stats(&self) -> StoreStats {
        let mut stats = StoreStats {
            entities_checkpointed: self.checkpoint_entities.load(Ordering::Relaxed),
            rocksdb_bytes: self.disk.memory_bytes(),
            ..StoreStats::default()
        };
        self.refresh_budget(stats.rocksdb_bytes);
        for index in 0..self.shards.len() {
            let mut shard = self.lock(index);
            stats.entities_in_memory += shard.entity_count();
            stats.entities_spilled += shard.spilled;
            stats.accounted_bytes += shard.memory()
                + shard
                    .deleted
                    .iter()
                    .map(|k| (alloc_size(k.len()) + 24) as u64)
                    .sum::<u64>();
        }
        stats
    }
}

/// The Kafka side of an exactly-once checkpoint: the transaction's offsets and its commit.
struct Publish<'a> {
    txn_offsets: &'a [PartitionOffset],
    publish: &'a mut dyn FnMut(u64) -> Result<(), String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{FeatureInput, Observation};

    #[test]
    fn the_budget_covers_rocksdb_and_an_allocator_reserve() {
        const MIB: u64 = 1 << 20;
        assert_eq!(entity_budget(160 * MIB, 0), 128 * MIB);
        assert_eq!(entity_budget(160 * MIB, 10 * MIB), 120 * MIB);
        // RocksDB over the budget still leaves a quarter of it for entities.
        assert_eq!(entity_budget(160 * MIB, 200 * MIB), 40 * MIB);
    }

    fn config(dir: &std::path::Path) -> StoreConfig {
        StoreConfig {
            shards: 8,
            data_dir: dir.to_path_buf(),
            ..StoreConfig::default()
        }
    }

    fn spec(id: u64, agg: Aggregate, by: Field) -> FeatureSpec {
        FeatureSpec {
            id,
            agg,
            by,
            window_ms: 600_000,
            resolution_ms: 10_000,
        }
    }

    /// The offsets of a checkpoint that consumed `payments` partition 0 up to `next`.
    fn offsets(next: i64) -> Vec<PartitionOffset> {
        vec![PartitionOffset {
            topic: "payments".into(),
            partition: 0,
            offset: next,
        }]
    }

    /// Counts one event of card `c1` at t = 1 s.
    fn count_card_c1(store: &TagStore, specs: &[FeatureSpec; 1]) {
        let mut out = [None];
        store.update(
            1_000,
            specs,
            &[input(Some("c1"), Observation::Count)],
            &mut out,
        );
    }

    fn input<'a>(entity: Option<&'a str>, observation: Observation<'a>) -> FeatureInput<'a> {
        FeatureInput {
            entity,
            counted: true,
            observation,
        }
    }

    #[test]
    fn update_counts_each_feature_and_skips_missing_entities() {
        let dir = tempfile::tempdir().unwrap();
        let store = TagStore::open(config(dir.path())).unwrap();
        let specs = [
            spec(1, Aggregate::Count, Field::CardId),
            spec(2, Aggregate::Sum, Field::CardId),
            spec(3, Aggregate::Distinct, Field::UserId),
            spec(4, Aggregate::Count, Field::Ip),
        ];
        let mut out = [None; 4];
        for (i, device) in ["d1", "d2", "d1"].iter().enumerate() {
            let inputs = [
                input(Some("card-1"), Observation::Count),
                input(Some("card-1"), Observation::Num(10.25)),
                input(Some("user-1"), Observation::Item(device)),
                input(None, Observation::Count),
            ];
            store.update(1_000 + i as i64, &specs, &inputs, &mut out);
        }
        assert_eq!(out, [Some(3.0), Some(30.75), Some(2.0), None]);
        assert_eq!(store.feature_value(&specs[0], "card-1", 1_002), Some(3.0));
        assert_eq!(store.feature_value(&specs[0], "card-1", 700_000), Some(0.0));
        assert_eq!(store.feature_value(&specs[0], "nobody", 0), Some(0.0));
        assert_eq!(store.stats().entities_in_memory, 2);
    }

    #[test]
    fn many_threads_on_overlapping_keys_count_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let store = TagStore::open(config(dir.path())).unwrap();
        let specs = [
            spec(1, Aggregate::Count, Field::CardId),
            spec(2, Aggregate::Count, Field::UserId),
            spec(3, Aggregate::Sum, Field::CardId),
        ];
        let threads = 8;
        let per_thread = 5_000;
        let keys = 37;
        std::thread::scope(|scope| {
            for t in 0..threads {
                let store = &store;
                let specs = &specs;
                scope.spawn(move || {
                    let mut out = [None; 3];
                    for i in 0..per_thread {
                        let card = format!("c{}", (i * 7 + t) % keys);
                        let user = format!("u{}", (i + t * 3) % keys);
                        let inputs = [
                            input(Some(&card), Observation::Count),
                            input(Some(&user), Observation::Count),
                            input(Some(&card), Observation::Num(0.01)),
                        ];
                        store.update(1_000, specs, &inputs, &mut out);
                    }
                });
            }
        });
        let mut cards = 0.0;
        let mut users = 0.0;
        let mut cents = 0.0;
        for k in 0..keys {
            cards += store
                .feature_value(&specs[0], &format!("c{k}"), 1_000)
                .unwrap();
            users += store
                .feature_value(&specs[1], &format!("u{k}"), 1_000)
                .unwrap();
            cents += store
                .feature_value(&specs[2], &format!("c{k}"), 1_000)
                .unwrap()
                * 100.0;
        }
        let events = (threads * per_thread) as f64;
        assert_eq!(cards, events);
        assert_eq!(users, events);
        assert_eq!(cents.round(), events);
    }

    #[test]
    fn a_new_tag_beyond_the_per_entity_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = TagStore::open(config(dir.path())).unwrap();
        let tag = |tag: &str, remove| TagUpdate {
            entity: Field::UserId,
            value: "u1".into(),
            tag: tag.into(),
            expires_at_ms: None,
            remove,
        };
        for i in 0..crate::store::MAX_TAGS {
            assert!(store.apply_tag(&tag(&format!("t{i}"), false)));
        }
        assert!(!store.apply_tag(&tag("one-too-many", false)));
        assert!(!store.has_tag(Field::UserId, "u1", "one-too-many", 0));
        // a held tag is renewed, a removal makes room
        assert!(store.apply_tag(&tag("t0", false)));
        assert!(store.apply_tag(&tag("t1", true)));
        assert!(store.apply_tag(&tag("one-too-many", false)));
        assert!(store.has_tag(Field::UserId, "u1", "one-too-many", 0));
    }

    #[test]
    fn tags_expire_and_survive_spill_and_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = TagStore::open(config(dir.path())).unwrap();
        let tag = |tag: &str, expires_at_ms, remove| TagUpdate {
            entity: Field::UserId,
            value: "u1".into(),
            tag: tag.into(),
            expires_at_ms,
            remove,
        };
        store.apply_tag(&tag("trusted", Some(5_000), false));
        store.apply_tag(&tag("vip", None, false));
        assert!(store.has_tag(Field::UserId, "u1", "trusted", 4_999));
        assert!(!store.has_tag(Field::UserId, "u1", "trusted", 5_000));
        assert!(!store.has_tag(Field::CardId, "u1", "trusted", 0));
        store.apply_tag(&tag("vip", None, true));
        assert!(!store.has_tag(Field::UserId, "u1", "vip", 0));
        store.checkpoint(&[], b"timers").unwrap();
        drop(store);
        let store = TagStore::open(config(dir.path())).unwrap();
        let restored = store.restore().unwrap().unwrap();
        assert_eq!(restored.timers, b"timers");
        assert_eq!(restored.entities, 1);
        assert!(store.has_tag(Field::UserId, "u1", "trusted", 10));
    }

    /// The exactly-once two-phase checkpoint: a failed publish leaves the previous checkpoint
    /// in force plus a pending copy, which the next start applies or discards.
    #[test]
    fn pending_checkpoints_apply_only_when_their_transaction_committed() {
        let specs = [spec(1, Aggregate::Count, Field::CardId)];
        let count_one = |store: &TagStore| count_card_c1(store, &specs);
        for committed in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let store = TagStore::open(config(dir.path())).unwrap();
            count_one(&store);
            let mut published = Vec::new();
            store
                .checkpoint_published(&offsets(1), b"t1", &offsets(1), &mut |sequence| {
                    published.push(sequence);
                    Ok(())
                })
                .unwrap();
            assert_eq!(published, [1], "publish is given the checkpoint's sequence");
            assert_eq!(store.pending_checkpoint().unwrap(), None);

            // The second transaction "crashes": publish fails after the pending copy is written.
            count_one(&store);
            let error = store
                .checkpoint_published(&offsets(2), b"t2", &offsets(2), &mut |sequence| {
                    assert_eq!(sequence, 2);
                    Err("broker gone".into())
                })
                .unwrap_err();
            assert!(matches!(error, StoreError::NotPublished(_)), "{error}");
            // its transaction may have committed: no later checkpoint may replace it
            let error = store
                .checkpoint_published(&offsets(3), b"t3", &offsets(3), &mut |_| Ok(()))
                .unwrap_err();
            assert!(matches!(error, StoreError::PendingUnsettled), "{error}");
            drop(store);

            let store = TagStore::open(config(dir.path())).unwrap();
            assert_eq!(store.pending_checkpoint().unwrap(), Some((offsets(2), 2)));
            store.resolve_pending(committed).unwrap();
            assert_eq!(store.pending_checkpoint().unwrap(), None);
            let restored = store.restore().unwrap().unwrap();
            let (want_offset, want_timers, want_count) = if committed {
                (2, b"t2", 2.0)
            } else {
                (1, b"t1", 1.0)
            };
            assert_eq!(restored.offsets, offsets(want_offset));
            assert_eq!(restored.timers, want_timers);
            assert_eq!(
                store.feature_value(&specs[0], "c1", 1_000),
                Some(want_count)
            );
        }
    }

    /// The transaction committed but the file could not be ingested (here: it vanished for a
    /// moment): the next checkpoint applies it first, then writes its own on top.
    #[test]
    fn a_committed_checkpoint_that_failed_to_apply_is_applied_by_the_next() {
        let specs = [spec(1, Aggregate::Count, Field::CardId)];
        let count_one = |store: &TagStore| count_card_c1(store, &specs);
        let dir = tempfile::tempdir().unwrap();
        let incoming = dir.path().join("incoming");
        let held = dir.path().join("held.sst");
        let store = TagStore::open(config(dir.path())).unwrap();
        count_one(&store);
        let mut name = None;
        let error = store
            .checkpoint_published(&offsets(1), b"t1", &offsets(1), &mut |_| {
                let file = std::fs::read_dir(&incoming)
                    .unwrap()
                    .next()
                    .unwrap()
                    .unwrap();
                std::fs::rename(file.path(), &held).unwrap();
                name = Some(file.file_name());
                Ok(())
            })
            .unwrap_err();
        assert!(matches!(error, StoreError::Rocks { .. }), "{error}");
        std::fs::rename(&held, incoming.join(name.unwrap())).unwrap();
        count_one(&store);
        store
            .checkpoint_published(&offsets(2), b"t2", &offsets(2), &mut |_| Ok(()))
            .unwrap();
        drop(store);

        let store = TagStore::open(config(dir.path())).unwrap();
        assert_eq!(store.pending_checkpoint().unwrap(), None);
        let restored = store.restore().unwrap().unwrap();
        assert_eq!(restored.offsets, offsets(2));
        assert_eq!(restored.entities, 1);
        assert_eq!(store.feature_value(&specs[0], "c1", 1_000), Some(2.0));
        assert_eq!(std::fs::read_dir(&incoming).unwrap().count(), 0);
    }

    #[test]
    fn sweep_deletes_idle_entities_and_purges_tags() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.shards = 1;
        cfg.expiry_grace_ms = 0;
        let store = TagStore::open(cfg).unwrap();
        let specs = [spec(1, Aggregate::Count, Field::CardId)];
        let mut out = [None];
        store.update(
            0,
            &specs,
            &[input(Some("old"), Observation::Count)],
            &mut out,
        );
        store.apply_tag(&TagUpdate {
            entity: Field::CardId,
            value: "tagged".into(),
            tag: "t".into(),
            expires_at_ms: Some(100_000),
            remove: false,
        });
        store.update(
            650_000,
            &specs,
            &[input(Some("new"), Observation::Count)],
            &mut out,
        );
        let stats = store.sweep();
        assert_eq!(stats.entities_in_memory, 1, "old and tagged are idle");
        assert_eq!(store.feature_value(&specs[0], "new", 650_000), Some(1.0));
    }

    #[test]
    fn retained_features_drop_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = TagStore::open(config(dir.path())).unwrap();
        let specs = [
            spec(1, Aggregate::Count, Field::CardId),
            spec(2, Aggregate::Count, Field::CardId),
        ];
        let inputs = [
            input(Some("c"), Observation::Count),
            input(Some("c"), Observation::Count),
        ];
        let mut out = [None; 2];
        store.update(0, &specs, &inputs, &mut out);
        let before = store.stats().accounted_bytes;
        store.retain_features(&[2u64].into_iter().collect());
        assert!(store.stats().accounted_bytes < before);
        assert_eq!(store.feature_value(&specs[0], "c", 0), Some(0.0));
        assert_eq!(store.feature_value(&specs[1], "c", 0), Some(1.0));
    }

    #[test]
    fn damaged_checkpoints_are_rejected_and_nothing_stays_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let specs = [spec(1, Aggregate::Count, Field::CardId)];
        {
            let store = TagStore::open(config(dir.path())).unwrap();
            let mut out = [None];
            for card in ["a", "b", "c"] {
                store.update(
                    0,
                    &specs,
                    &[input(Some(card), Observation::Count)],
                    &mut out,
                );
            }
            store.checkpoint(&[], &[]).unwrap();
        }
        // flip a byte of one checkpointed entity behind the store's back
        {
            let cfs = [
                super::super::disk::CF_SPILL,
                super::super::disk::CF_CHECKPOINT_ENTITIES,
                super::super::disk::CF_CHECKPOINT_META,
            ];
            let mut opts = rocksdb::Options::default();
            opts.create_if_missing(false);
            let db = rocksdb::DB::open_cf(&opts, dir.path(), cfs).unwrap();
            let cf = db
                .cf_handle(super::super::disk::CF_CHECKPOINT_ENTITIES)
                .unwrap();
            let key = entity_key(Field::CardId as u8, "b");
            let mut value = db.get_cf(cf, &key).unwrap().unwrap();
            value[2] ^= 0x40;
            db.put_cf(cf, &key, value).unwrap();
        }
        let store = TagStore::open(config(dir.path())).unwrap();
        let error = store.restore().unwrap_err();
        assert!(matches!(error, StoreError::CorruptCheckpoint(_)), "{error}");
        assert!(error.to_string().contains("card_id:b"), "{error}");
        assert_eq!(store.stats().entities_in_memory, 0);
    }

    #[test]
    fn missing_entities_are_detected_by_the_manifest_count() {
        let dir = tempfile::tempdir().unwrap();
        let specs = [spec(1, Aggregate::Count, Field::CardId)];
        {
            let store = TagStore::open(config(dir.path())).unwrap();
            let mut out = [None];
            for card in ["a", "b"] {
                store.update(
                    0,
                    &specs,
                    &[input(Some(card), Observation::Count)],
                    &mut out,
                );
            }
            store.checkpoint(&[], &[]).unwrap();
        }
        {
            let cfs = [
                super::super::disk::CF_SPILL,
                super::super::disk::CF_CHECKPOINT_ENTITIES,
                super::super::disk::CF_CHECKPOINT_META,
            ];
            let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), cfs).unwrap();
            let cf = db
                .cf_handle(super::super::disk::CF_CHECKPOINT_ENTITIES)
                .unwrap();
            db.delete_cf(cf, entity_key(Field::CardId as u8, "a"))
                .unwrap();
        }
        let store = TagStore::open(config(dir.path())).unwrap();
        let error = store.restore().unwrap_err();
        assert!(
            error
                .to_string()
                .contains("manifest lists 2 entities but 1"),
            "{error}"
        );
    }

    #[test]
    fn no_checkpoint_restores_nothing_and_open_rejects_bad_config() {
        let dir = tempfile::tempdir().unwrap();
        let store = TagStore::open(config(dir.path())).unwrap();
        assert_eq!(store.restore().unwrap(), None);
        drop(store);
        let mut cfg = config(dir.path());
        cfg.shards = 6;
        assert!(matches!(TagStore::open(cfg), Err(StoreError::Config(_))));
    }
}
