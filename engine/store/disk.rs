//! RocksDB side of the store: spill and checkpoint column families, the checkpoint manifest.
//!
//! Column families: `spill` (dirty entities pushed out of memory since the last checkpoint;
//! cleared on open), `checkpoint_entities` (entity key -> encoded entity + crc32 of key and
//! payload) and `checkpoint_meta` (the manifest: format version, sequence, entity count,
//! Kafka offsets, timers blob, crc32; in exactly-once mode also a pending checkpoint, written
//! before its Kafka transaction commits and applied once the transaction's fate is known).

use super::codec::{DecodeError, Reader, Writer};
use super::{PartitionOffset, StoreError};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType,
    IteratorMode, Options, Range, ReadOptions, WriteBatch, WriteOptions, DB,
};
use std::path::Path;

pub const CF_SPILL: &str = "spill";
pub const CF_CHECKPOINT_ENTITIES: &str = "checkpoint_entities";
pub const CF_CHECKPOINT_META: &str = "checkpoint_meta";
const MANIFEST_KEY: &[u8] = b"manifest";
/// A checkpoint batch waiting for its Kafka transaction (encoded as a [`Manifest`] whose
/// offsets are the transaction's and whose blob is the raw RocksDB write batch).
const PENDING_KEY: &[u8] = b"pending";
const MANIFEST_MAGIC: &[u8; 8] = b"VETOCKPT";
/// Version of the checkpoint format; bump on any incompatible change.
pub const CHECKPOINT_FORMAT_VERSION: u32 = 1;
/// Entity keys are `[kind byte][value bytes]`, so every key sorts inside this range.
const KEY_RANGE: (&[u8], &[u8]) = (&[0x00], &[0xff]);

/// A half-open key range [lower, upper); `None` is unbounded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRange {
    pub lower: Option<Vec<u8>>,
    pub upper: Option<Vec<u8>>,
}

/// A checkpoint written before its Kafka transaction committed.
pub struct Pending {
    /// The consumer offsets the transaction commits.
    pub txn_offsets: Vec<PartitionOffset>,
    /// The raw RocksDB write batch of the checkpoint.
    pub batch: Vec<u8>,
}

/// The checkpoint header stored beside the entities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub sequence: u64,
    pub entities: u64,
    pub offsets: Vec<PartitionOffset>,
    pub timers: Vec<u8>,
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(64 + self.timers.len());
        buf.extend_from_slice(MANIFEST_MAGIC);
        buf.extend_from_slice(&CHECKPOINT_FORMAT_VERSION.to_le_bytes());
        let mut w = Writer { buf: &mut buf };
        w.u64_fixed(self.sequence);
        w.u64_fixed(self.entities);
        w.varint(self.offsets.len() as u64);
        for o in &self.offsets {
            w.bytes(o.topic.as_bytes());
            w.zigzag(i64::from(o.partition));
            w.zigzag(o.offset);
        }
        w.bytes(&self.timers);
        let crc = crc32fast::hash(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        buf
    }

    pub fn decode(bytes: &[u8]) -> Result<Manifest, StoreError> {
        let corrupt = |what: &str| StoreError::CorruptCheckpoint(format!("manifest: {what}"));
        if bytes.len() < 16 || &bytes[..8] != MANIFEST_MAGIC {
            return Err(corrupt("bad magic or too short"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let mut crc_bytes = [0u8; 4];
        crc_bytes.copy_from_slice(crc);
        if crc32fast::hash(body) != u32::from_le_bytes(crc_bytes) {
            return Err(corrupt("checksum mismatch"));
        }
        let mut version = [0u8; 4];
        version.copy_from_slice(&body[8..12]);
        let version = u32::from_le_bytes(version);
        if version != CHECKPOINT_FORMAT_VERSION {
            return Err(StoreError::UnsupportedCheckpointVersion {
                found: version,
                expected: CHECKPOINT_FORMAT_VERSION,
            });
        }
        let decode = |r: &mut Reader<'_>| -> Result<Manifest, DecodeError> {
            let sequence = r.u64_fixed()?;
            let entities = r.u64_fixed()?;
            let n = r.len()?;
            let mut offsets = Vec::with_capacity(n);
            for _ in 0..n {
                let topic = std::str::from_utf8(r.bytes()?)
                    .map_err(|_| DecodeError("topic not utf-8"))?
                    .to_owned();
                let partition = i32::try_from(r.zigzag()?)
                    .map_err(|_| DecodeError("partition out of range"))?;
                offsets.push(PartitionOffset {
                    topic,
                    partition,
                    offset: r.zigzag()?,
                });
            }
            let timers = r.bytes()?.to_vec();
            if !r.rest.is_empty() {
                return Err(DecodeError("trailing bytes"));
            }
            Ok(Manifest {
                sequence,
                entities,
                offsets,
                timers,
            })
        };
        decode(&mut Reader { rest: &body[12..] }).map_err(|e| corrupt(e.0))
    }
}

/// Appends crc32(key ++ payload) to a checkpointed entity payload.
pub fn seal(key: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(key);
    hasher.update(payload);
    let mut value = Vec::with_capacity(payload.len() + 4);
    value.extend_from_slice(payload);
    value.extend_from_slice(&hasher.finalize().to_le_bytes());
    value
}

/// Checks and strips the crc32 written by [`seal`].
pub fn unseal<'v>(key: &[u8], value: &'v [u8]) -> Result<&'v [u8], StoreError> {
    if value.len() < 4 {
        return Err(StoreError::CorruptCheckpoint(format!(
            "entity {}: value too short",
            printable_key(key)
        )));
    }
    let (payload, crc) = value.split_at(value.len() - 4);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(key);
    hasher.update(payload);
    let mut crc_bytes = [0u8; 4];
    crc_bytes.copy_from_slice(crc);
    if hasher.finalize() != u32::from_le_bytes(crc_bytes) {
        return Err(StoreError::CorruptCheckpoint(format!(
            "entity {}: checksum mismatch",
            printable_key(key)
        )));
    }
    Ok(payload)
}

/// An entity key for error messages: `kind:value`, lossy.
pub fn printable_key(key: &[u8]) -> String {
    match key.split_first() {
        Some((&kind, value)) => {
            let kind = crate::event::Field::from_u8(kind).map_or("?", |f| f.name());
            format!("{kind}:{}", String::from_utf8_lossy(value))
        }
        None => "<empty key>".into(),
    }
}

fn rocks(context: &'static str) -> impl Fn(rocksdb::Error) -> StoreError {
    move |source| {
        if source.kind() == rocksdb::ErrorKind::Corruption {
            StoreError::CorruptCheckpoint(format!("{context}: {source}"))
        } else {
            StoreError::Rocks { context, source }
        }
    }
}

/// Write options for checkpoint writes: through the WAL and fsynced before returning.
fn synced() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(true);
    options
}

/// The store's RocksDB database.
pub struct Disk {
    db: DB,
    cache: Cache,
}

impl Disk {
    pub fn open(dir: &Path, cache_bytes: usize, in_memory: bool) -> Result<Disk, StoreError> {
        if !in_memory {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let cache = Cache::new_lru_cache(cache_bytes);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);
        let cf_options = || {
            let mut o = Options::default();
            o.set_block_based_table_factory(&table);
            o.set_compression_type(DBCompressionType::Lz4);
            o.set_write_buffer_size(8 << 20);
            o.set_max_write_buffer_number(2);
            o
        };
        let mut db_options = cf_options();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.set_paranoid_checks(true);
        db_options.set_max_background_jobs(2);
        if in_memory {
            db_options.set_env(&rocksdb::Env::mem_env().map_err(rocks("in-memory env"))?);
        }
        let families = [CF_SPILL, CF_CHECKPOINT_ENTITIES, CF_CHECKPOINT_META]
            .map(|name| ColumnFamilyDescriptor::new(name, cf_options()));
        let db = DB::open_cf_descriptors(&db_options, dir, families).map_err(rocks("open"))?;
        let disk = Disk { db, cache };
        // spilled state is newer than the checkpoint: it is never valid after a restart
        disk.db
            .delete_range_cf(disk.cf(CF_SPILL)?, KEY_RANGE.0, KEY_RANGE.1)
            .map_err(rocks("clear spill"))?;
        Ok(disk)
    }

    /// Bytes RocksDB holds in memory: memtables, table readers (index and filter blocks
    /// outside the cache) and the block cache.
    pub fn memory_bytes(&self) -> u64 {
        let mut total = self.cache.get_usage() as u64;
        for name in [CF_SPILL, CF_CHECKPOINT_ENTITIES, CF_CHECKPOINT_META] {
            let Ok(cf) = self.cf(name) else { continue };
            for property in [
                "rocksdb.cur-size-all-mem-tables",
                "rocksdb.estimate-table-readers-mem",
            ] {
                total += self
                    .db
                    .property_int_value_cf(cf, property)
                    .ok()
                    .flatten()
                    .unwrap_or(0);
            }
        }
        total
    }

    fn cf(&self, name: &'static str) -> Result<&ColumnFamily, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or(StoreError::MissingColumnFamily(name))
    }

    /// Writes spilled entities; no WAL, spill is discarded on restart anyway.
    pub fn spill(&self, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StoreError> {
        let cf = self.cf(CF_SPILL)?;
        let mut batch = WriteBatch::default();
        for (key, value) in entries {
            batch.put_cf(cf, key, value);
        }
        let mut options = WriteOptions::default();
        options.disable_wal(true);
        self.db.write_opt(batch, &options).map_err(rocks("spill"))
    }

    /// Reads a spilled entity and removes it from the spill.
    pub fn take_spilled(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let cf = self.cf(CF_SPILL)?;
        let Some(value) = self
            .db
            .get_pinned_cf(cf, key)
            .map_err(rocks("read spill"))?
        else {
            return Ok(None);
        };
        let value = value.to_vec();
        let mut options = WriteOptions::default();
        options.disable_wal(true);
        self.db
            .delete_cf_opt(cf, key, &options)
            .map_err(rocks("delete spill"))?;
        Ok(Some(value))
    }

    /// Reads one checkpointed entity payload (checksum verified).
    pub fn checkpointed(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let cf = self.cf(CF_CHECKPOINT_ENTITIES)?;
        let Some(value) = self
            .db
            .get_pinned_cf(cf, key)
            .map_err(rocks("read checkpoint"))?
        else {
            return Ok(None);
        };
        Ok(Some(unseal(key, &value)?.to_vec()))
    }

    pub fn manifest(&self) -> Result<Option<Manifest>, StoreError> {
        let cf = self.cf(CF_CHECKPOINT_META)?;
        match self
            .db
            .get_pinned_cf(cf, MANIFEST_KEY)
            .map_err(rocks("read manifest"))?
        {
            None => Ok(None),
            Some(bytes) => Manifest::decode(&bytes).map(Some),
        }
    }

    /// Calls `each` with every checkpointed (key, verified payload) in `range`, in key order.
    /// One sequential pass with a large readahead, without filling the block cache; keys and
    /// values are borrowed from the iterator (no copy per entity).
    pub fn for_each_checkpointed_in(
        &self,
        range: &KeyRange,
        mut each: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let cf = self.cf(CF_CHECKPOINT_ENTITIES)?;
        let mut options = ReadOptions::default();
        options.fill_cache(false);
        options.set_readahead_size(4 << 20);
        if let Some(lower) = &range.lower {
            options.set_iterate_lower_bound(lower.clone());
        }
        if let Some(upper) = &range.upper {
            options.set_iterate_upper_bound(upper.clone());
        }
        let mut iter = self.db.raw_iterator_cf_opt(cf, options);
        iter.seek_to_first();
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            each(key, unseal(key, value)?)?;
            iter.next();
        }
        iter.status().map_err(rocks("scan checkpoint"))
    }

    /// Approximate share of the checkpoint's on-disk bytes under each leading key byte (entity
    /// kind) `0..kinds`; all zero when nothing is on disk yet. A sizing hint only.
    pub fn checkpoint_kind_shares(&self, kinds: u8) -> Result<Vec<f64>, StoreError> {
        let cf = self.cf(CF_CHECKPOINT_ENTITIES)?;
        let bounds: Vec<[u8; 1]> = (0..=kinds).map(|k| [k]).collect();
        let ranges: Vec<Range<'_>> = bounds
            .windows(2)
            .map(|w| Range::new(&w[0], &w[1]))
            .collect();
        let sizes = self.db.get_approximate_sizes_cf(cf, &ranges);
        let total = sizes.iter().sum::<u64>().max(1) as f64;
        Ok(sizes.iter().map(|&s| s as f64 / total).collect())
    }

    /// Splits the checkpoint key space into at most `parts` ranges of similar on-disk size,
    /// at SST file boundaries, so restore can scan them in parallel. The ranges are disjoint
    /// and cover every key (memtable contents included).
    pub fn checkpoint_ranges(&self, parts: usize) -> Result<Vec<KeyRange>, StoreError> {
        let mut files: Vec<(Vec<u8>, usize)> = self
            .db
            .live_files()
            .map_err(rocks("list checkpoint files"))?
            .into_iter()
            .filter(|f| f.column_family_name == CF_CHECKPOINT_ENTITIES)
            .filter_map(|f| Some((f.start_key?, f.size)))
            .collect();
        files.sort();
        let total: usize = files.iter().map(|f| f.1).sum();
        let step = total / parts.max(1) + 1;
        let mut bounds: Vec<Vec<u8>> = Vec::new();
        let mut seen = 0;
        for (start, size) in files {
            if seen >= step * (bounds.len() + 1) && bounds.last() != Some(&start) {
                bounds.push(start);
            }
            seen += size;
        }
        let mut ranges = Vec::with_capacity(bounds.len() + 1);
        let mut lower = None;
        for bound in bounds {
            ranges.push(KeyRange {
                lower: lower.take(),
                upper: Some(bound.clone()),
            });
            lower = Some(bound);
        }
        ranges.push(KeyRange { lower, upper: None });
        Ok(ranges)
    }

    /// Calls `each` with every spilled (key, payload).
    pub fn for_each_spilled(
        &self,
        mut each: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let cf = self.cf(CF_SPILL)?;
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (key, value) = item.map_err(rocks("scan spill"))?;
            each(&key, &value)?;
        }
        Ok(())
    }

    pub fn clear_spill(&self) -> Result<(), StoreError> {
        self.db
            .delete_range_cf(self.cf(CF_SPILL)?, KEY_RANGE.0, KEY_RANGE.1)
            .map_err(rocks("clear spill"))
    }

    /// Starts a checkpoint batch.
    pub fn checkpoint_batch(&self) -> Result<CheckpointBatch<'_>, StoreError> {
        Ok(CheckpointBatch {
            batch: WriteBatch::default(),
            entities: self.cf(CF_CHECKPOINT_ENTITIES)?,
            meta: self.cf(CF_CHECKPOINT_META)?,
            spill: self.cf(CF_SPILL)?,
            bytes: 0,
        })
    }

    /// Writes a checkpoint batch atomically and durably (WAL, fsync).
    pub fn commit(&self, batch: CheckpointBatch<'_>) -> Result<(), StoreError> {
        let options = synced();
        self.db
            .write_opt(batch.batch, &options)
            .map_err(rocks("write checkpoint"))
    }

    /// Stores `batch` as the pending checkpoint of a Kafka transaction committing
    /// `txn_offsets`, durably, without applying it.
    pub fn write_pending(
        &self,
        txn_offsets: &[PartitionOffset],
        batch: &CheckpointBatch<'_>,
    ) -> Result<(), StoreError> {
        let record = Manifest {
            sequence: 0,
            entities: 0,
            offsets: txn_offsets.to_vec(),
            timers: batch.batch.data().to_vec(),
        };
        let options = synced();
        self.db
            .put_cf_opt(
                self.cf(CF_CHECKPOINT_META)?,
                PENDING_KEY,
                record.encode(),
                &options,
            )
            .map_err(rocks("write pending checkpoint"))
    }

    /// The pending checkpoint's transaction offsets and write batch, if one is waiting.
    pub fn pending(&self) -> Result<Option<Pending>, StoreError> {
        let cf = self.cf(CF_CHECKPOINT_META)?;
        let Some(bytes) = self
            .db
            .get_pinned_cf(cf, PENDING_KEY)
            .map_err(rocks("read pending checkpoint"))?
        else {
            return Ok(None);
        };
        let record = Manifest::decode(&bytes)?;
        Ok(Some(Pending {
            txn_offsets: record.offsets,
            batch: record.timers,
        }))
    }

    /// Settles the pending checkpoint: applies it when its transaction committed, else
    /// discards it. Atomic and durable; a no-op without one.
    pub fn resolve_pending(&self, committed: bool) -> Result<(), StoreError> {
        let Some(pending) = self.pending()? else {
            return Ok(());
        };
        let mut batch = if committed {
            WriteBatch::from_data(&pending.batch)
        } else {
            WriteBatch::default()
        };
        batch.delete_cf(self.cf(CF_CHECKPOINT_META)?, PENDING_KEY);
        let options = synced();
        self.db
            .write_opt(batch, &options)
            .map_err(rocks("resolve pending checkpoint"))
    }

    /// Applies a checkpoint batch whose pending copy was written, and drops that copy.
    pub fn commit_pending(&self, mut batch: CheckpointBatch<'_>) -> Result<(), StoreError> {
        batch.batch.delete_cf(batch.meta, PENDING_KEY);
        self.commit(batch)
    }

    /// Flushes memtables to SST files (tests and shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        for name in [CF_SPILL, CF_CHECKPOINT_ENTITIES, CF_CHECKPOINT_META] {
            self.db.flush_cf(self.cf(name)?).map_err(rocks("flush"))?;
        }
        Ok(())
    }
}

/// One checkpoint being assembled: entity puts and deletes, spill clearing, the manifest.
pub struct CheckpointBatch<'a> {
    batch: WriteBatch,
    entities: &'a ColumnFamily,
    meta: &'a ColumnFamily,
    spill: &'a ColumnFamily,
    pub bytes: u64,
}

impl CheckpointBatch<'_> {
    pub fn clear_entities(&mut self) {
        self.batch
            .delete_range_cf(self.entities, KEY_RANGE.0, KEY_RANGE.1);
    }

    pub fn put_entity(&mut self, key: &[u8], payload: &[u8]) {
        let value = seal(key, payload);
        self.bytes += (key.len() + value.len()) as u64;
        self.batch.put_cf(self.entities, key, value);
    }

    pub fn delete_entity(&mut self, key: &[u8]) {
        self.batch.delete_cf(self.entities, key);
    }

    pub fn clear_spill(&mut self) {
        self.batch
            .delete_range_cf(self.spill, KEY_RANGE.0, KEY_RANGE.1);
    }

    pub fn put_manifest(&mut self, manifest: &Manifest) {
        let value = manifest.encode();
        self.bytes += value.len() as u64;
        self.batch.put_cf(self.meta, MANIFEST_KEY, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_detects_damage() {
        let m = Manifest {
            sequence: 3,
            entities: 42,
            offsets: vec![PartitionOffset {
                topic: "payments".into(),
                partition: 2,
                offset: 1_000,
            }],
            timers: vec![1, 2, 3],
        };
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(Manifest::decode(&bad).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn sealed_values_detect_damage() {
        let v = seal(b"\x05card", b"payload");
        assert_eq!(unseal(b"\x05card", &v).unwrap(), b"payload");
        assert!(unseal(b"\x05carx", &v).is_err());
        let mut bad = v.clone();
        bad[1] ^= 1;
        let err = unseal(b"\x05card", &bad).unwrap_err();
        assert!(err.to_string().contains("card_id:card"), "{err}");
    }
}
