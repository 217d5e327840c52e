//! `TagStore`: lock-striped shards of entity state; the per-event feature update and reads.
//!
//! The store's other concerns live in the child modules: [`spill`] (memory budget, eviction
//! to RocksDB, read-back), [`tags`], [`retention`] (dropped features, idle entities, expired
//! tags), [`checkpoint`] (writing one atomic checkpoint file, exactly-once pending files) and
//! [`restore`] (loading a checkpoint on every core).

mod checkpoint;
mod disk_keys;
mod restore;
mod retention;
mod spill;
mod tags;
#[cfg(test)]
mod tests;

use super::disk::{printable_key, Disk, Pending};
use super::entity::{alloc_size, Entity, Tag, MAP_SLOT_ACCOUNTED};
use super::hll::item_hash;
use super::packed::Scratch;
use super::plan::FeaturePlan;
use super::window::{empty_value, to_fixed, Contribution, Geometry};
use super::{FeatureInput, FeatureSpec, Observation, StoreConfig, StoreError, StoreStats};
use crate::event::{Aggregate, Field};
use ahash::{AHashSet, RandomState};
use checkpoint::in_snapshot;
use compact_str::CompactString;
use disk_keys::DiskKeys;
use hashbrown::hash_map::RawEntryMut;
use parking_lot::{Mutex, MutexGuard, RwLock};
use spill::shard_budget;
use std::cell::RefCell;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

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

/// Entities of one kind in one shard, by value (values of up to 24 bytes, most ids, held
/// inline in the key).
type EntityMap = hashbrown::HashMap<CompactString, Entity, EntityHasher>;

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
    /// [`Shard::table_excess`], kept up to date by inserts that do not grow a table, and
    /// recomputed when `tables_changed` is set.
    tables: u64,
    /// Set by every removal from `maps`, an insert that may grow a table, and `reserve`:
    /// `tables` is stale.
    tables_changed: bool,
    /// Access clock; entities remember the tick of their last access.
    clock: u32,
    /// Newest event time seen by this shard.
    watermark_ms: i64,
    /// Entries of this shard in the spill column family.
    spilled: u64,
    /// Keys of checkpointed entities deleted since the last checkpoint.
    deleted: AHashSet<Box<[u8]>>,
    /// Keys deleted by the checkpoint being written: still in the checkpoint on disk until it
    /// is in, so a miss must not read them back.
    pending_deleted: AHashSet<Box<[u8]>>,
    /// The entities of this shard that may be on disk.
    disk_keys: DiskKeys,
    /// A checkpoint's snapshot was taken and this shard's part is not all copied out yet
    /// ([`Shard::capture`]).
    uncaptured: bool,
    /// `clock` at the snapshot: entities accessed since were copied before that access.
    snapshot_clock: u32,
    /// This shard's part of the checkpoint being written, until the writer collects it.
    capture: checkpoint::Capture,
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
        self.bytes + self.tables + self.disk_keys.bytes()
    }
}

thread_local! {
    /// Vectors for unpacking features, per thread (used only while a shard lock is held);
    /// boxed, so taking it out for an update moves a pointer.
    static SCRATCH: RefCell<Option<Box<Scratch>>> = const { RefCell::new(None) };
}

/// A shard on its own cache lines, so neighbouring locks do not false-share.
#[repr(align(128))]
struct PaddedShard(Mutex<Shard>);

/// The engine's per-entity memory. `Send + Sync`; every method takes `&self`.
pub struct TagStore {
    shards: Box<[PaddedShard]>,
    shard_mask: usize,
    /// Accounted bytes one shard may hold: see [`spill::entity_budget`]; refreshed as RocksDB's memory
    /// changes.
    shard_budget: AtomicU64,
    /// Evictions so far; every [`spill::BUDGET_REFRESH_EVICTIONS`]th refreshes `shard_budget`.
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
    /// A checkpoint is being captured and written: entities it marked clean have no current
    /// copy on disk yet, so nothing is evicted until it is in.
    checkpoint_writing: AtomicBool,
    /// The thread writing a checkpoint begun by [`TagStore::checkpoint_in_background`].
    background: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Someone waits for the background checkpoint: it stops pacing itself.
    hurry: AtomicBool,
    /// Feature ids still defined, once `retain_features` has been called.
    retained: RwLock<Option<Arc<AHashSet<u64>>>>,
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

/// The tags of an entity live at an event's time ([`TagStore::update_planned`]).
pub struct LiveTags<'e> {
    tags: &'e [Tag],
    now_ms: i64,
}

impl LiveTags<'_> {
    /// The names of the live tags.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        let now_ms = self.now_ms;
        self.tags
            .iter()
            .filter(move |t| t.is_live(now_ms))
            .map(|t| &*t.name)
    }
}

/// What an observation adds to a feature of aggregate `agg`.
fn contribution(agg: Aggregate, observation: Observation<'_>) -> Contribution {
    match (agg, observation) {
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
            checkpoint_writing: AtomicBool::new(false),
            background: Mutex::new(None),
            hurry: AtomicBool::new(false),
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

    /// Locks a shard for an operation that may change any of its entities, first copying out
    /// what is left of its part of a checkpoint being written ([`Shard::capture`]).
    fn lock_captured(&self, index: usize) -> MutexGuard<'_, Shard> {
        let mut shard = self.lock(index);
        shard.capture();
        shard
    }

    /// Updates every feature of one event and writes each feature's value after counting into
    /// `out[i]`. `specs[i]` and `inputs[i]` correspond; features of one kind may name different
    /// entities. Plans the features on every call: the engine keeps a [`FeaturePlan`] per rule
    /// set and calls [`TagStore::update_planned`].
    pub fn update(
        &self,
        event_time_ms: i64,
        specs: &[FeatureSpec],
        inputs: &[FeatureInput<'_>],
        out: &mut [Option<f64>],
    ) {
        let n = specs.len().min(inputs.len()).min(out.len());
        out.iter_mut().for_each(|o| *o = None);
        // one planned update per (kind, entity), in order of first appearance
        let mut done = vec![false; n];
        for first in 0..n {
            let (kind, Some(entity)) = (specs[first].by, inputs[first].entity) else {
                continue;
            };
            if done[first] {
                continue;
            }
            let members: Vec<usize> = (first..n)
                .filter(|&i| !done[i] && specs[i].by == kind && inputs[i].entity == Some(entity))
                .collect();
            let plan: Vec<FeatureSpec> = members.iter().map(|&i| specs[i]).collect();
            let mut values = vec![None; members.len()];
            self.update_planned(
                event_time_ms,
                &FeaturePlan::new(&plan),
                |_| Some(entity),
                |k| {
                    let input = inputs[members[k]];
                    if input.counted {
                        input.observation
                    } else {
                        Observation::Missing
                    }
                },
                &mut values,
                |_, _| {},
            );
            for (&i, value) in members.iter().zip(values) {
                done[i] = true;
                out[i] = value;
            }
        }
    }

    /// Updates every feature of `plan` for one event and writes each feature's value after
    /// counting into `out[i]`: `entity(kind)` names the event's entity of each kind (`None`:
    /// its features are not updated and their values stay `None`), `observe(i)` what the event
    /// brings to feature `i` (`Observation::Missing` when it fails the feature's `where`).
    /// Entities are updated one at a time, each under its shard's lock with all of its
    /// features; `seen` then gets each entity's kind and its tags live at the event's time
    /// (read in the same lookup, for callers that ask about them next).
    pub fn update_planned<'a>(
        &self,
        event_time_ms: i64,
        plan: &FeaturePlan,
        entity: impl Fn(Field) -> Option<&'a str>,
        observe: impl Fn(usize) -> Observation<'a>,
        out: &mut [Option<f64>],
        mut seen: impl FnMut(Field, LiveTags<'_>),
    ) {
        out.iter_mut().for_each(|o| *o = None);
        let mut scratch = SCRATCH.with(|s| s.borrow_mut().take()).unwrap_or_default();
        let mut contributions = std::mem::take(&mut scratch.contributions);
        let _gate = self.gate.read();
        for group in &plan.groups {
            let Some(value) = entity(group.kind) else {
                continue;
            };
            contributions.clear();
            contributions.extend(
                group
                    .specs
                    .iter()
                    .zip(&group.updates)
                    .map(|(&i, update)| contribution(update.agg, observe(i))),
            );
            let specs = &group.specs;
            let report = |k: usize, v: Option<f64>, _| {
                if let Some(o) = out.get_mut(specs[k]) {
                    *o = v;
                }
            };
            let (updates, contributions) = (group.updates(), &contributions[..]);
            self.update_entity(
                event_time_ms,
                group.kind,
                value,
                &mut scratch,
                &mut seen,
                |e, s| {
                    e.update_features(
                        event_time_ms,
                        updates,
                        contributions,
                        self.cfg.distinct_exact_limit,
                        s,
                        report,
                    )
                },
            );
        }
        scratch.contributions = contributions;
        SCRATCH.with(|s| *s.borrow_mut() = Some(scratch));
        for &(i, first) in &plan.aliases {
            let value = out.get(first).copied().flatten();
            if let Some(o) = out.get_mut(i) {
                *o = value;
            }
        }
    }

    /// Applies `update` to the entity `value` of `kind` under its shard's lock (it returns
    /// whether the entity's accounted bytes may have changed), then shows its live tags to
    /// `seen` and keeps the shard within its budget.
    fn update_entity(
        &self,
        event_time_ms: i64,
        kind: Field,
        value: &str,
        scratch: &mut Scratch,
        seen: &mut impl FnMut(Field, LiveTags<'_>),
        update: impl FnOnce(&mut Entity, &mut Scratch) -> bool,
    ) {
        let hash = entity_hash(value);
        let mut shard = self.lock(self.shard_of(hash));
        shard.watermark_ms = shard.watermark_ms.max(event_time_ms);
        if let Some(entity) = self.entity_mut(&mut shard, kind, value, hash, true) {
            let before = entity.accounted_bytes(value.len());
            let resized = update(entity, scratch);
            entity.dirty = true;
            seen(
                kind,
                LiveTags {
                    tags: entity.tags(),
                    now_ms: event_time_ms,
                },
            );
            if resized {
                let after = entity.accounted_bytes(value.len());
                shard.bytes = (shard.bytes + after as u64).saturating_sub(before as u64);
            }
        }
        self.keep_within_budget(&mut shard);
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
            tables,
            tables_changed,
            clock,
            spilled,
            deleted,
            pending_deleted,
            disk_keys,
            uncaptured,
            snapshot_clock,
            capture,
            ..
        } = shard;
        let map = &mut maps[kind as usize];
        // what an insert does to the table excess: no reallocation while the map has room
        let (table_bytes, len) = (map.allocation_size() as u64, map.len() as u64);
        let room = map.capacity() as u64 > len;
        let entity = match map.raw_entry_mut().from_key_hashed_nocheck(hash, value) {
            RawEntryMut::Occupied(entry) => {
                let (key, entity) = entry.into_key_value();
                // copied for the checkpoint being captured before its first access since the
                // snapshot (one read back or created below is not in the snapshot)
                if *uncaptured && in_snapshot(*clock, *snapshot_clock, entity) {
                    capture.entity(kind as u8, key, entity);
                }
                entity
            }
            RawEntryMut::Vacant(entry) => {
                let entity = match self.read_back(
                    spilled,
                    [deleted, pending_deleted],
                    disk_keys,
                    kind,
                    value,
                    hash,
                ) {
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
                if room && !*tables_changed {
                    // the same table with one more slot accounted per entity
                    let slot = MAP_SLOT_ACCOUNTED as u64;
                    *tables -= table_bytes.saturating_sub(len * slot);
                    *tables += table_bytes.saturating_sub((len + 1) * slot);
                } else {
                    *tables_changed = true;
                }
                entry
                    .insert_hashed_nocheck(hash, CompactString::from(value), entity)
                    .1
            }
        };
        *clock = clock.wrapping_add(1);
        entity.last_access = *clock;
        Some(entity)
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
                + (shard.deleted.iter())
                    .chain(&shard.pending_deleted)
                    .map(|k| (alloc_size(k.len()) + 24) as u64)
                    .sum::<u64>();
        }
        stats
    }
}
