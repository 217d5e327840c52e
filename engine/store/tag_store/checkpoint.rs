//! Checkpoints: a snapshot taken in an instant under every shard lock, each dirty entity copied
//! out before anything changes it, then one SST file in key order ingested atomically while
//! decisions go on; the periodic one on a background thread that paces itself; the
//! exactly-once variant.

use super::{entity_hash, split_key, Shard, TagStore};
use crate::store::disk::{CheckpointWriter, Manifest, SpillView};
use crate::store::entity::Entity;
use crate::store::telemetry;
use crate::store::{CheckpointStats, PartitionOffset, StoreError};
use ahash::AHashSet;
use compact_str::CompactString;
use itertools::Itertools;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One change of a [`Capture`]: its key and, for a put, the encoded entity right after it in
/// the capture's arena.
struct Change {
    at: usize,
    key_len: u32,
    /// `None` for a delete.
    payload_len: Option<u32>,
    /// A put of an entity the checkpoint did not hold: it counts one more.
    new: bool,
}

/// Changes of a checkpoint, encoded: one shard's part, or all of them.
#[derive(Default)]
pub(super) struct Capture {
    arena: Vec<u8>,
    changes: Vec<Change>,
}

/// Whether `entity` belongs to the snapshot of a shard now at `clock` (at `snapshot_clock`
/// then) and is not copied out yet: dirty, and last accessed before the snapshot, so its
/// `dirty` flag is still the one the snapshot saw (an access copies it first). Exact while
/// fewer than 2^32 accesses of the shard separate a dirty entity's last access from the
/// snapshot: an entity stays dirty only until the next checkpoint (30 s by default), and the
/// shard's clock would need over a hundred million accesses per second to wrap in that time.
pub(super) fn in_snapshot(clock: u32, snapshot_clock: u32, entity: &Entity) -> bool {
    entity.dirty && clock.wrapping_sub(entity.last_access) >= clock.wrapping_sub(snapshot_clock)
}

/// Entities the checkpoint's writer copies out under one hold of a shard's lock: a worker
/// waiting for the shard waits for at most this many encodings.
const CAPTURE_STEP: usize = 128;

/// An entity of a shard by kind and value.
type EntityKey = (u8, CompactString);

impl Shard {
    /// Copies what is left of this shard's part of the checkpoint being written out, at once:
    /// every key the checkpoint deletes and every entity dirty at the snapshot and not accessed
    /// since (an access copies its entity first: `TagStore::entity_mut`). They become clean and
    /// checkpointed. Called by operations that go through a whole shard
    /// ([`TagStore::lock_captured`]); the writer does the same in steps
    /// ([`TagStore::collect_capture`]).
    pub(super) fn capture(&mut self) {
        if !self.uncaptured {
            return;
        }
        let keys = self.snapshot_keys();
        self.capture_entities(&keys);
        self.capture_deletes();
    }

    /// The entities dirty at the snapshot and not accessed since: those the capture still has
    /// to copy.
    pub(super) fn snapshot_keys(&self) -> Vec<EntityKey> {
        let (clock, snapshot_clock) = (self.clock, self.snapshot_clock);
        let mut keys = Vec::new();
        for (kind, map) in self.maps.iter().enumerate() {
            let held = map
                .iter()
                .filter(|(_, e)| in_snapshot(clock, snapshot_clock, e));
            keys.extend(held.map(|(value, _)| (kind as u8, value.clone())));
        }
        keys
    }

    /// Copies those of `keys` still in the snapshot (not accessed, deleted or copied since
    /// [`Shard::snapshot_keys`]).
    pub(super) fn capture_entities(&mut self, keys: &[EntityKey]) {
        let (clock, snapshot_clock) = (self.clock, self.snapshot_clock);
        let Shard { maps, capture, .. } = self;
        for (kind, value) in keys {
            let Some(entity) = maps[usize::from(*kind)].get_mut(value.as_str()) else {
                continue;
            };
            if in_snapshot(clock, snapshot_clock, entity) {
                capture.entity(*kind, value, entity);
            }
        }
    }

    /// Copies the keys the checkpoint deletes, which ends this shard's part: every entity of
    /// the snapshot is copied by now.
    fn capture_deletes(&mut self) {
        self.uncaptured = false;
        let Shard {
            pending_deleted,
            capture,
            ..
        } = self;
        for key in pending_deleted.iter() {
            capture.push_delete(key);
        }
    }
}

/// One checkpoint from its snapshot to its file. The snapshot itself only marks every shard
/// uncaptured and notes its clock, so decisions go on while the entities are copied out (each
/// before its first access since the snapshot, the rest by the writer: [`Shard::capture`]) and
/// the file written. Until the file is in (or has failed) the store keeps what it will change
/// visible: the deletes it carries stay in each shard's `pending_deleted`, and nothing is
/// evicted (an entity a capture marked clean has no current copy on disk yet).
pub(super) struct Snapshot {
    /// Every shard's capture, once collected, in key order.
    parts: Vec<Capture>,
    /// How long the writer may take: it paces itself until then ([`Pace`]).
    spread: Duration,
    manifest: Manifest,
    /// Some shard had spilled entities: once in, some checkpointed entities are only on disk.
    moved_to_disk: bool,
    started: Instant,
    /// How long the shards were locked for the snapshot.
    locked: Duration,
}

/// Work between two rests of a paced checkpoint writer.
const WORK_SLICE: Duration = Duration::from_millis(2);

/// How long a paced writer rests per unit of work: twice as long, so it takes a third of one
/// core (on two cores at 20,000 events/s, decisions, the broker and the producers keep most
/// of the machine busy: a writer at full speed delays decisions by tens to hundreds of ms).
const REST_PER_WORK: u32 = 2;

/// Spreads a background checkpoint's work until a deadline: after each [`WORK_SLICE`] of work
/// the writer rests [`REST_PER_WORK`] times as long, holding no lock; past the deadline, or
/// once someone waits for the checkpoint (a shutdown, the next checkpoint), it works at full
/// speed, so the checkpoint is in well before the next one.
struct Pace<'a> {
    until: Instant,
    working_since: Instant,
    hurry: &'a AtomicBool,
}

impl<'a> Pace<'a> {
    /// Paces until `until` (now or earlier: not at all) unless `hurry` is set.
    fn new(until: Instant, hurry: &'a AtomicBool) -> Pace<'a> {
        Pace {
            until,
            working_since: Instant::now(),
            hurry,
        }
    }

    /// Called between units of work (an entity written, a capture step), holding no lock.
    fn rest(&mut self) {
        let now = Instant::now();
        let worked = now - self.working_since;
        if now >= self.until || worked < WORK_SLICE || self.hurry.load(Ordering::Relaxed) {
            return;
        }
        std::thread::sleep((worked * REST_PER_WORK).min(self.until - now));
        self.working_since = Instant::now();
    }
}

impl Capture {
    /// How many changes it holds.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.changes.len()
    }

    fn key(&self, change: &Change) -> &[u8] {
        &self.arena[change.at..change.at + change.key_len as usize]
    }

    fn push_delete(&mut self, key: &[u8]) {
        self.changes.push(Change {
            at: self.arena.len(),
            key_len: key.len() as u32,
            payload_len: None,
            new: false,
        });
        self.arena.extend_from_slice(key);
    }

    /// Copies an entity dirty at the snapshot, which becomes clean and checkpointed.
    pub(super) fn entity(&mut self, kind: u8, value: &str, entity: &mut Entity) {
        self.push_put(kind, value, entity);
        entity.dirty = false;
        entity.persisted = true;
    }

    fn push_put(&mut self, kind: u8, value: &str, entity: &Entity) {
        let at = self.arena.len();
        self.arena.push(kind);
        self.arena.extend_from_slice(value.as_bytes());
        let payload_at = self.arena.len();
        entity.encode(&mut self.arena);
        self.changes.push(Change {
            at,
            key_len: (payload_at - at) as u32,
            payload_len: Some((self.arena.len() - payload_at) as u32),
            new: !entity.persisted,
        });
    }

    /// Key order, one change per key: a put outranks a delete of the same key (the entity came
    /// back).
    fn sort(&mut self) {
        let arena = &self.arena;
        let key = |c: &Change| &arena[c.at..c.at + c.key_len as usize];
        let is_put = |c: &Change| c.payload_len.is_some();
        self.changes
            .sort_unstable_by(|a, b| key(a).cmp(key(b)).then(is_put(b).cmp(&is_put(a))));
        self.changes
            .dedup_by(|later, earlier| key(later) == key(earlier));
    }

    fn write(
        &self,
        change: &Change,
        writer: &mut CheckpointWriter<'_>,
        counts: &mut Counts,
    ) -> Result<(), StoreError> {
        let key = self.key(change);
        match change.payload_len {
            None => {
                writer.delete_entity(key)?;
                counts.deleted += 1;
                counts.total = counts.total.saturating_sub(1);
            }
            Some(len) => {
                let at = change.at + key.len();
                writer.put_entity(key, &self.arena[at..at + len as usize])?;
                counts.written += 1;
                counts.total += u64::from(change.new);
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

/// The Kafka side of an exactly-once checkpoint: the transaction's offsets and its commit.
pub(super) struct Publish<'a> {
    txn_offsets: &'a [PartitionOffset],
    publish: &'a mut dyn FnMut(u64) -> Result<(), String>,
}

impl TagStore {
    /// Writes every dirty entity (in memory and spilled), the timers blob and the Kafka offsets
    /// as one checkpoint file, ingested atomically and durably, and returns once it is in.
    /// Operations are blocked only while the snapshot is taken (then an operation copies the
    /// entity it touches first if the snapshot holds it); a checkpoint still being written in
    /// the background is waited for first.
    pub fn checkpoint(
        &self,
        offsets: &[PartitionOffset],
        timers: &[u8],
    ) -> Result<CheckpointStats, StoreError> {
        self.wait_for_background_checkpoint();
        let (snapshot, view) = self.take_snapshot(offsets.to_vec(), timers.to_vec())?;
        self.complete_snapshot(snapshot, view, None)
    }

    /// The checkpoint of [`TagStore::checkpoint`], returning as soon as its snapshot is taken:
    /// a thread of its own collects the shards' captures and writes the file while operations
    /// go on, pacing itself to a third of one core until `spread` after the snapshot (then at
    /// full speed), so it does not take the cores decisions need. Until the file is in,
    /// nothing is evicted; a failure is logged and counted, and leaves the state dirty for the
    /// next checkpoint. The next checkpoint (of either kind) waits for this one first. Errors
    /// are those of the snapshot.
    pub fn checkpoint_in_background(
        self: &Arc<Self>,
        offsets: &[PartitionOffset],
        timers: &[u8],
        spread: Duration,
    ) -> Result<(), StoreError> {
        let mut background = self.background.lock();
        if let Some(previous) = background.take() {
            self.hurry.store(true, Ordering::Relaxed);
            let _ = previous.join();
        }
        self.hurry.store(false, Ordering::Relaxed);
        let (taken, copied) = std::sync::mpsc::sync_channel(1);
        let store = Arc::clone(self);
        let (offsets, timers) = (offsets.to_vec(), timers.to_vec());
        let writer = std::thread::Builder::new()
            .name("veto-checkpoint".into())
            .spawn(move || match store.take_snapshot(offsets, timers) {
                Ok((mut snapshot, view)) => {
                    let _ = taken.send(Ok(()));
                    snapshot.spread = spread;
                    if let Err(error) = store.complete_snapshot(snapshot, view, None) {
                        telemetry::checkpoint_failed(&error);
                    }
                }
                Err(error) => {
                    let _ = taken.send(Err(error));
                }
            })
            .map_err(|e| StoreError::NotWritten(format!("cannot start its thread: {e}")))?;
        *background = Some(writer);
        copied.recv().unwrap_or_else(|_| {
            Err(StoreError::NotWritten(
                "the checkpoint thread ended before taking the snapshot".into(),
            ))
        })
    }

    /// Whether a checkpoint of this run's state is on disk (restored, or written by this run).
    pub fn has_checkpoint(&self) -> bool {
        self.checkpoint_live.load(Ordering::Relaxed)
    }

    /// Waits until a checkpoint begun by [`TagStore::checkpoint_in_background`] is in (or
    /// failed).
    pub fn wait_for_background_checkpoint(&self) {
        if let Some(writer) = self.background.lock().take() {
            self.hurry.store(true, Ordering::Relaxed);
            let _ = writer.join();
        }
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
        self.wait_for_background_checkpoint();
        let (snapshot, view) = self.take_snapshot(offsets.to_vec(), timers.to_vec())?;
        let publish = Publish {
            txn_offsets,
            publish,
        };
        self.complete_snapshot(snapshot, view, Some(publish))
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

    /// Takes the snapshot under the gate and every shard lock: marks every shard uncaptured,
    /// moves its deleted keys to `pending_deleted`, and takes a view of the spill at the same
    /// instant. No entity is copied here.
    pub(super) fn take_snapshot(
        &self,
        offsets: Vec<PartitionOffset>,
        timers: Vec<u8>,
    ) -> Result<(Snapshot, SpillView<'_>), StoreError> {
        let started = Instant::now();
        let _gate = self.gate.write();
        self.apply_unapplied()?;
        let mut snapshot = Snapshot {
            parts: Vec::new(),
            spread: Duration::ZERO,
            manifest: Manifest {
                sequence: self.sequence.load(Ordering::Relaxed) + 1,
                entities: 0,
                offsets,
                timers,
            },
            moved_to_disk: false,
            started,
            locked: Duration::ZERO,
        };
        let mut shards: Vec<_> = (0..self.shards.len()).map(|i| self.lock(i)).collect();
        let view = self.disk.spill_view();
        for shard in shards.iter_mut() {
            snapshot.moved_to_disk |= shard.spilled > 0;
            let deleted = std::mem::take(&mut shard.deleted);
            shard.pending_deleted.extend(deleted);
            shard.uncaptured = true;
            shard.snapshot_clock = shard.clock;
        }
        self.checkpoint_writing.store(true, Ordering::Relaxed);
        drop(shards);
        snapshot.locked = started.elapsed();
        Ok((snapshot, view))
    }

    /// Writes the snapshot's file ([`TagStore::write_snapshot`]), then finishes it either way
    /// ([`TagStore::finish_snapshot`]).
    pub(super) fn complete_snapshot(
        &self,
        mut snapshot: Snapshot,
        view: SpillView<'_>,
        publish: Option<Publish<'_>>,
    ) -> Result<CheckpointStats, StoreError> {
        let written = self.write_snapshot(&mut snapshot, &view, publish);
        self.finish_snapshot(snapshot, written)
    }

    /// Finishes shard `index`'s part of the checkpoint and takes it. The writer holds the
    /// shard's lock for one step of [`CAPTURE_STEP`] entities at a time, not for the whole
    /// shard: decisions that need the shard wait for one step at most.
    fn collect_capture(&self, index: usize, pace: &mut Pace<'_>) -> Capture {
        let keys = {
            let mut shard = self.lock(index);
            if !shard.uncaptured {
                return std::mem::take(&mut shard.capture);
            }
            shard.snapshot_keys()
        };
        for step in keys.chunks(CAPTURE_STEP) {
            let mut shard = self.lock(index);
            if !shard.uncaptured {
                break; // an operation through the whole shard captured the rest
            }
            shard.capture_entities(step);
            drop(shard);
            pace.rest();
        }
        let mut shard = self.lock(index);
        if shard.uncaptured {
            shard.capture_deletes();
        }
        std::mem::take(&mut shard.capture)
    }

    /// Writes the snapshot and every entity spilled as `view` saw the spill (the spilled copy
    /// wins on the same key: it is the newer one) into one file, in key order, and applies it;
    /// in exactly-once mode records it as pending, publishes, then applies it. Returns the
    /// counts and bytes written.
    fn write_snapshot(
        &self,
        snapshot: &mut Snapshot,
        view: &SpillView<'_>,
        publish: Option<Publish<'_>>,
    ) -> Result<(Counts, u64), StoreError> {
        let mut pace = Pace::new(snapshot.started + snapshot.spread, &self.hurry);
        for index in 0..self.shards.len() {
            let mut part = self.collect_capture(index, &mut pace);
            part.sort();
            snapshot.parts.push(part);
            pace.rest();
        }
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
        let sequence = snapshot.manifest.sequence;
        let mut writer = self.disk.checkpoint_writer(sequence)?;
        // the shards' parts merged into key order (a key is in one shard's part only)
        let mut changes = snapshot
            .parts
            .iter()
            .map(|part| part.changes.iter().map(move |change| (part, change)))
            .kmerge_by(|(a, x), (b, y)| a.key(x) < b.key(y))
            .peekable();
        self.disk.for_each_spilled(view, |key, spilled| {
            while let Some((part, change)) = changes.next_if(|(p, c)| p.key(c) <= key) {
                if part.key(change) < key {
                    part.write(change, &mut writer, &mut counts)?;
                }
                pace.rest();
            }
            writer.put_entity(key, spilled)?;
            counts.written += 1;
            counts.total += u64::from(spilled.get(1) != Some(&1));
            pace.rest();
            Ok(())
        })?;
        changes.try_for_each(|(part, change)| {
            pace.rest();
            part.write(change, &mut writer, &mut counts)
        })?;
        snapshot.manifest.entities = counts.total;
        let bytes = writer.bytes;
        match publish {
            None => self.disk.commit(writer, &snapshot.manifest)?,
            Some(Publish {
                txn_offsets,
                publish,
            }) => {
                let pending = self
                    .disk
                    .write_pending(txn_offsets, writer, &snapshot.manifest)?;
                publish(sequence).map_err(StoreError::NotPublished)?;
                if let Err(error) = self.disk.commit_pending(&pending) {
                    // its transaction committed: no other checkpoint before this one is in
                    *self.unapplied.lock() = Some(pending);
                    return Err(error);
                }
            }
        }
        Ok((counts, bytes))
    }

    /// After the file is in: the store's counters follow it, the spill taken in is dropped and
    /// the pending deletes are done. After a failure: every change is pending again (dirty
    /// entities, deleted keys, checkpointed flags as before), for the next checkpoint.
    fn finish_snapshot(
        &self,
        snapshot: Snapshot,
        written: Result<(Counts, u64), StoreError>,
    ) -> Result<CheckpointStats, StoreError> {
        let (counts, bytes_written) = match written {
            Ok(written) => written,
            Err(error) => {
                self.restore_pending(&snapshot);
                self.checkpoint_writing.store(false, Ordering::Relaxed);
                return Err(error);
            }
        };
        let sequence = snapshot.manifest.sequence;
        // before the spill epoch ends: a miss must find the spilled entities in the checkpoint
        if snapshot.moved_to_disk {
            self.checkpoint_has_cold.store(true, Ordering::Relaxed);
        }
        self.checkpoint_live.store(true, Ordering::Relaxed);
        self.checkpoint_entities
            .store(counts.total, Ordering::Relaxed);
        self.sequence.store(sequence, Ordering::Relaxed);
        self.disk.end_spill_epoch();
        for index in 0..self.shards.len() {
            let mut shard = self.lock(index);
            // nothing was spilled since the snapshot: eviction waits for the file
            shard.spilled = 0;
            shard.pending_deleted = AHashSet::new();
        }
        self.checkpoint_writing.store(false, Ordering::Relaxed);
        let stats = CheckpointStats {
            sequence,
            entities_written: counts.written,
            entities_deleted: counts.deleted,
            entities_total: counts.total,
            bytes_written,
            duration: snapshot.started.elapsed(),
            locked: snapshot.locked,
        };
        telemetry::checkpoint_written(&stats);
        telemetry::size(&self.stats());
        Ok(stats)
    }

    /// Undoes what the snapshot and the captures did to the shards, for a checkpoint that is not
    /// in: entities it copied are dirty again (and not checkpointed if they were not), keys it
    /// deletes are deleted again, and a key that came back in the meantime is checkpointed.
    fn restore_pending(&self, snapshot: &Snapshot) {
        let changes = snapshot.parts.iter().flat_map(|part| {
            part.changes
                .iter()
                .map(move |change| (part.key(change), change))
        });
        for (key, change) in changes.filter(|(_, c)| c.payload_len.is_some()) {
            let Ok((kind, value)) = split_key(key) else {
                continue;
            };
            let mut shard = self.lock(self.shard_of(entity_hash(value)));
            match shard.maps[kind as usize].get_mut(value) {
                Some(entity) => {
                    entity.dirty = true;
                    entity.persisted &= !change.new;
                }
                // deleted since (idle): its key went to `deleted` as checkpointed
                None if change.new => {
                    shard.deleted.remove(key);
                }
                None => {}
            }
        }
        for index in 0..self.shards.len() {
            let mut shard = self.lock(index);
            let Shard {
                maps,
                deleted,
                pending_deleted,
                ..
            } = &mut *shard;
            for key in std::mem::take(pending_deleted) {
                let back = split_key(&key)
                    .ok()
                    .and_then(|(kind, value)| maps[kind as usize].get_mut(value));
                match back {
                    Some(entity) => entity.persisted = true,
                    None => {
                        deleted.insert(key);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Pace, REST_PER_WORK, WORK_SLICE};
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    fn work(how_long: Duration) {
        let started = Instant::now();
        while started.elapsed() < how_long {
            std::hint::spin_loop();
        }
    }

    /// A paced writer rests twice as long as it worked, but not past its deadline, and not at
    /// all without a deadline ahead or once hurried.
    #[test]
    fn a_paced_writer_rests_in_proportion_until_its_deadline_or_hurried() {
        let calm = AtomicBool::new(false);
        let started = Instant::now();
        let mut pace = Pace::new(started + Duration::from_secs(60), &calm);
        work(WORK_SLICE);
        pace.rest();
        assert!(started.elapsed() >= WORK_SLICE * (1 + REST_PER_WORK));

        let started = Instant::now();
        let mut pace = Pace::new(started + WORK_SLICE * 2, &calm);
        work(WORK_SLICE);
        pace.rest();
        assert!(
            started.elapsed() >= WORK_SLICE * 2,
            "rests until the deadline"
        );

        let hurried = AtomicBool::new(true);
        for (until, hurry) in [
            (Instant::now(), &calm),
            (Instant::now() + Duration::from_secs(60), &hurried),
        ] {
            let mut pace = Pace::new(until, hurry);
            work(WORK_SLICE);
            let before = Instant::now();
            pace.rest();
            assert!(
                pace.working_since < before,
                "no rest: the clock of work was not reset"
            );
        }
    }
}
