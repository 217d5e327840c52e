//! Checkpoints: every dirty entity (in memory and spilled), the timers and the offsets written
//! as one SST file in key order and ingested atomically; the exactly-once pending variant.

use super::{entity_key, Shard, TagStore};
use crate::store::disk::{CheckpointWriter, Manifest};
use crate::store::entity::Entity;
use crate::store::telemetry;
use crate::store::{CheckpointStats, PartitionOffset, StoreError};
use ahash::AHashSet;
use parking_lot::MutexGuard;
use std::sync::atomic::Ordering;
use std::time::Instant;

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

/// The Kafka side of an exactly-once checkpoint: the transaction's offsets and its commit.
struct Publish<'a> {
    txn_offsets: &'a [PartitionOffset],
    publish: &'a mut dyn FnMut(u64) -> Result<(), String>,
}

impl TagStore {
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
}
