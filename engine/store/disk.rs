//! RocksDB side of the store: spill and checkpoint column families, the checkpoint manifest.
//!
//! Column families: `spill` (dirty entities pushed out of memory since the last checkpoint,
//! keyed by spill epoch then entity key; cleared on open), `checkpoint_entities` (entity key ->
//! encoded entity + crc32 of key and payload, and after every entity key the manifest: format
//! version, sequence, entity count, Kafka offsets, timers blob, crc32) and `checkpoint_meta`
//! (in exactly-once mode a pending checkpoint, written before its Kafka transaction commits and
//! applied once the transaction's fate is known).
//!
//! A checkpoint is one SST file, written in key order beside the database (`incoming/`) and
//! ingested atomically: no write batch or memtable holds the whole checkpoint in memory.

use super::codec::{DecodeError, Reader, Writer};
use super::{PartitionOffset, StoreError};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompactionStyle,
    DBCompressionType, IngestExternalFileOptions, MemtableFactory, Options, Range, ReadOptions,
    SliceTransform, SstFileWriter, WriteBatch, WriteOptions, DB,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub const CF_SPILL: &str = "spill";
pub const CF_CHECKPOINT_ENTITIES: &str = "checkpoint_entities";
pub const CF_CHECKPOINT_META: &str = "checkpoint_meta";
/// The manifest's key in `checkpoint_entities`: after every entity key ([`KEY_RANGE`]), so
/// it is the last key of a checkpoint file.
const MANIFEST_KEY: &[u8] = b"\xffmanifest";
/// Where format 1 kept the manifest (in `checkpoint_meta`); read only to refuse it by version.
const LEGACY_MANIFEST_KEY: &[u8] = b"manifest";
/// A checkpoint file waiting for its Kafka transaction (encoded as a [`Manifest`] whose
/// offsets are the transaction's and whose blob is the file's name in `incoming/`).
const PENDING_KEY: &[u8] = b"pending";
const MANIFEST_MAGIC: &[u8; 8] = b"VETOCKPT";
/// Version of the checkpoint format; bump on any incompatible change.
pub const CHECKPOINT_FORMAT_VERSION: u32 = 2;
/// Entity keys are `[kind byte][value bytes]`, so every key sorts inside this range.
const KEY_RANGE: (&[u8], &[u8]) = (&[0x00], &[0xff]);
/// Checkpoint files are written here (inside the data folder) before RocksDB ingests them.
const INCOMING_DIR: &str = "incoming";

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
    /// The checkpoint's sequence: applied already when the manifest's is at least this.
    pub sequence: u64,
    /// The checkpoint file.
    file: PathBuf,
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

/// Write options for the spill: no WAL, the spill is discarded on restart anyway.
fn unlogged() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.disable_wal(true);
    options
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Removes a file that may already be gone.
fn remove_file(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

/// The spill keys of `epoch`: every key starting with its 8 big-endian bytes, [from, to).
fn epoch_range(epoch: u64) -> ([u8; 8], [u8; 8]) {
    (epoch.to_be_bytes(), (epoch + 1).to_be_bytes())
}

/// The spill key of an entity: spill epoch (big-endian), then the entity key.
fn spill_key(epoch: u64, key: &[u8]) -> Vec<u8> {
    let mut spill = Vec::with_capacity(8 + key.len());
    write_spill_key(&mut spill, epoch, key);
    spill
}

/// Replaces `buf` with the spill key of entity `key` under `epoch` ([`spill_key`] into a
/// reused buffer).
fn write_spill_key(buf: &mut Vec<u8>, epoch: u64, key: &[u8]) {
    buf.clear();
    buf.extend_from_slice(&epoch.to_be_bytes());
    buf.extend_from_slice(key);
}

/// Hash buckets of a spill memtable: about one per entry of an 8 MiB memtable.
const SPILL_MEMTABLE_BUCKETS: usize = 1 << 16;
/// Sorted runs the spill column family gathers before universal compaction merges them.
const SPILL_RUNS_BEFORE_COMPACTION: i32 = 8;

/// Bytes of a RocksDB write batch before its first entry (sequence number, count).
const WRITE_BATCH_HEADER: usize = 12;
/// Bytes a spill entry adds to a write batch beyond its entity key and payload: the record
/// tag, the column family id, the two lengths (varints of at most 5 bytes each) and the
/// epoch prefix of the key.
const SPILL_ENTRY_OVERHEAD: usize = 1 + 5 + 5 + 5 + 8;

/// The store's RocksDB database.
pub struct Disk {
    db: DB,
    cache: Cache,
    /// Options of checkpoint files: the column families' table format, the database's env.
    sst_options: Options,
    /// Where checkpoint files are written before RocksDB ingests them.
    incoming: PathBuf,
    in_memory: bool,
    /// Spill entries are keyed under this epoch; a checkpoint that took the spill in moves to
    /// the next one, so older entries are dead even before they are deleted.
    spill_epoch: AtomicU64,
}

impl Disk {
    pub fn open(dir: &Path, cache_bytes: usize, in_memory: bool) -> Result<Disk, StoreError> {
        let incoming = dir.join(INCOMING_DIR);
        if !in_memory {
            std::fs::create_dir_all(&incoming).map_err(io(&incoming))?;
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
        let mut sst_options = cf_options();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.set_paranoid_checks(true);
        db_options.set_max_background_jobs(2);
        // the spill's hash memtable takes one writer at a time
        db_options.set_allow_concurrent_memtable_write(false);
        if in_memory {
            let env = rocksdb::Env::mem_env().map_err(rocks("in-memory env"))?;
            db_options.set_env(&env);
            sst_options.set_env(&env);
        }
        let families = [CF_SPILL, CF_CHECKPOINT_ENTITIES, CF_CHECKPOINT_META].map(|name| {
            let mut o = cf_options();
            if name == CF_SPILL {
                // Spilled entries live until read back or taken into a checkpoint, and every
                // one is written once: compressing them and compacting them level by level
                // took half of RocksDB's background CPU while spilling (docs/store.md).
                o.set_compression_type(DBCompressionType::None);
                o.set_compaction_style(DBCompactionStyle::Universal);
                // Spilled entries are found by key, never scanned in order but by a
                // checkpoint: a hash table takes them in at a fraction of a skip list's cost
                // on the deciding thread; the flush sorts them in the background. Eight sorted
                // runs before a compaction: the same data rewritten less often.
                o.set_prefix_extractor(SliceTransform::create_noop());
                o.set_memtable_factory(MemtableFactory::HashLinkList {
                    bucket_count: SPILL_MEMTABLE_BUCKETS,
                });
                o.set_level_zero_file_num_compaction_trigger(SPILL_RUNS_BEFORE_COMPACTION);
            }
            ColumnFamilyDescriptor::new(name, o)
        });
        let db = DB::open_cf_descriptors(&db_options, dir, families).map_err(rocks("open"))?;
        let disk = Disk {
            db,
            cache,
            sst_options,
            incoming,
            in_memory,
            spill_epoch: AtomicU64::new(0),
        };
        // spilled state is newer than the checkpoint: it is never valid after a restart
        disk.clear_spill()?;
        disk.remove_unused_files()?;
        Ok(disk)
    }

    /// Deletes checkpoint files left in `incoming/` by a crash, except the pending one.
    fn remove_unused_files(&self) -> Result<(), StoreError> {
        if self.in_memory {
            return Ok(());
        }
        let keep = self.pending()?.map(|p| p.file);
        let entries = std::fs::read_dir(&self.incoming).map_err(io(&self.incoming))?;
        for entry in entries {
            let path = entry.map_err(io(&self.incoming))?.path();
            if Some(&path) != keep.as_ref() {
                remove_file(&path)?;
            }
        }
        Ok(())
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

    /// Writes spilled entities under the current spill epoch.
    pub fn spill(&self, entities: &SpillBatch) -> Result<(), StoreError> {
        let cf = self.cf(CF_SPILL)?;
        let epoch = self.spill_epoch.load(Ordering::Relaxed);
        // sized up front: a batch grown by doubling copied itself over and over
        let mut batch = WriteBatch::with_capacity_bytes(
            WRITE_BATCH_HEADER + entities.bytes() as usize + entities.len() * SPILL_ENTRY_OVERHEAD,
        );
        let mut key = Vec::new();
        for (entity, payload) in entities.iter() {
            write_spill_key(&mut key, epoch, entity);
            batch.put_cf(cf, &key, payload);
        }
        self.db
            .write_opt(batch, &unlogged())
            .map_err(rocks("spill"))
    }

    /// Reads a spilled entity and removes it from the spill.
    pub fn take_spilled(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let cf = self.cf(CF_SPILL)?;
        let key = spill_key(self.spill_epoch.load(Ordering::Relaxed), key);
        let Some(value) = self
            .db
            .get_pinned_cf(cf, &key)
            .map_err(rocks("read spill"))?
        else {
            return Ok(None);
        };
        let value = value.to_vec();
        self.db
            .delete_cf_opt(cf, &key, &unlogged())
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
        let read = |cf: &'static str, key: &[u8]| {
            self.db
                .get_pinned_cf(self.cf(cf)?, key)
                .map_err(rocks("read manifest"))?
                .map(|bytes| Manifest::decode(&bytes))
                .transpose()
        };
        match read(CF_CHECKPOINT_ENTITIES, MANIFEST_KEY)? {
            Some(manifest) => Ok(Some(manifest)),
            // a format-1 manifest fails to decode with its version
            None => read(CF_CHECKPOINT_META, LEGACY_MANIFEST_KEY),
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
        // entity keys only: the manifest sorts after them
        let upper = match &range.upper {
            Some(upper) if upper.as_slice() < KEY_RANGE.1 => upper.clone(),
            _ => KEY_RANGE.1.to_vec(),
        };
        options.set_iterate_upper_bound(upper);
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
            // a file holding only a manifest starts after every entity key
            .filter(|(start, _)| start.as_slice() < KEY_RANGE.1)
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

    /// The spill as it stands now, for [`Disk::for_each_spilled`] to read later while entities
    /// go on being read back (and their entries deleted).
    pub fn spill_view(&self) -> SpillView<'_> {
        SpillView(self.db.snapshot())
    }

    /// Calls `each` with every spilled (entity key, payload) of the current epoch as `view`
    /// saw them, in key order.
    pub fn for_each_spilled(
        &self,
        view: &SpillView<'_>,
        mut each: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let cf = self.cf(CF_SPILL)?;
        let epoch = self.spill_epoch.load(Ordering::Relaxed);
        let mut options = ReadOptions::default();
        options.set_snapshot(&view.0);
        // the spill's prefix extractor is the whole key: walk every key, not one prefix
        options.set_total_order_seek(true);
        let (from, to) = epoch_range(epoch);
        options.set_iterate_lower_bound(from.to_vec());
        options.set_iterate_upper_bound(to.to_vec());
        let mut iter = self.db.raw_iterator_cf_opt(cf, options);
        iter.seek_to_first();
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            // the bounds hold every key to this epoch's 8-byte prefix
            let entity = key.get(8..).ok_or_else(|| StoreError::CorruptSpill {
                key: printable_key(key),
                reason: "shorter than its epoch".into(),
            })?;
            each(entity, value)?;
            iter.next();
        }
        iter.status().map_err(rocks("scan spill"))
    }

    /// Deletes every spill entry, of every epoch.
    pub fn clear_spill(&self) -> Result<(), StoreError> {
        self.db
            .delete_range_cf_opt(
                self.cf(CF_SPILL)?,
                &[0u8; 8][..],
                &[0xffu8; 9][..],
                &unlogged(),
            )
            .map_err(rocks("clear spill"))
    }

    /// Moves to the next spill epoch (the checkpoint just applied holds the spill) and deletes
    /// the previous epoch's entries. A failed delete leaves only dead entries, gone at the next
    /// open, so it is not an error.
    pub fn end_spill_epoch(&self) {
        let epoch = self.spill_epoch.fetch_add(1, Ordering::Relaxed);
        if let Ok(cf) = self.cf(CF_SPILL) {
            let (from, to) = epoch_range(epoch);
            let _ = self.db.delete_range_cf_opt(cf, from, to, &unlogged());
        }
    }

    /// Starts the file of checkpoint `sequence`.
    pub fn checkpoint_writer(&self, sequence: u64) -> Result<CheckpointWriter<'_>, StoreError> {
        if self.in_memory {
            // its files would live in RocksDB's memory env, beyond `std::fs` to remove
            return Err(StoreError::Config(
                "an in-memory store cannot checkpoint".into(),
            ));
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = self
            .incoming
            .join(format!("checkpoint-{sequence}-{nanos}.sst"));
        let writer = SstFileWriter::create(&self.sst_options);
        writer
            .open(&path)
            .map_err(rocks("create checkpoint file"))?;
        Ok(CheckpointWriter {
            writer,
            path,
            finished: false,
            bytes: 0,
        })
    }

    /// Deletes every checkpointed entity and the manifest, durably (before a first
    /// checkpoint replaces a checkpoint this run did not restore).
    pub fn clear_checkpoint(&self) -> Result<(), StoreError> {
        let cf = self.cf(CF_CHECKPOINT_ENTITIES)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, KEY_RANGE.0, KEY_RANGE.1);
        batch.delete_cf(cf, MANIFEST_KEY);
        batch.delete_cf(self.cf(CF_CHECKPOINT_META)?, LEGACY_MANIFEST_KEY);
        self.db
            .write_opt(batch, &synced())
            .map_err(rocks("clear checkpoint"))
    }

    /// Writes `manifest` into the checkpoint file and applies the file atomically and durably.
    pub fn commit(
        &self,
        writer: CheckpointWriter<'_>,
        manifest: &Manifest,
    ) -> Result<(), StoreError> {
        let path = writer.finish(manifest)?;
        let applied = self.ingest(&path);
        if applied.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        applied
    }

    /// Makes the file part of the checkpoint column family, atomically: all of it or nothing.
    /// RocksDB moves the file into the database and syncs it and its own manifest before
    /// returning.
    fn ingest(&self, path: &Path) -> Result<(), StoreError> {
        let mut options = IngestExternalFileOptions::default();
        options.set_move_files(true);
        self.db
            .ingest_external_file_cf_opts(self.cf(CF_CHECKPOINT_ENTITIES)?, &options, vec![path])
            .map_err(rocks("apply checkpoint file"))
    }

    /// Finishes the checkpoint file with `manifest` and records it, durably, as the pending
    /// checkpoint of a Kafka transaction committing `txn_offsets`, without applying it. Never
    /// replaces an unsettled pending checkpoint ([`StoreError::PendingUnsettled`]): its
    /// transaction may have committed.
    pub fn write_pending(
        &self,
        txn_offsets: &[PartitionOffset],
        writer: CheckpointWriter<'_>,
        manifest: &Manifest,
    ) -> Result<Pending, StoreError> {
        if let Some(old) = self.pending()? {
            if !self.applied(&old)? {
                return Err(StoreError::PendingUnsettled);
            }
            // applied, only its record was left (see `commit_pending`)
            self.drop_pending()?;
        }
        let file = writer.finish(manifest)?;
        let recorded = self.record_pending(txn_offsets, manifest.sequence, &file);
        if recorded.is_err() {
            let _ = std::fs::remove_file(&file);
        }
        recorded?;
        Ok(Pending {
            txn_offsets: txn_offsets.to_vec(),
            sequence: manifest.sequence,
            file,
        })
    }

    fn record_pending(
        &self,
        txn_offsets: &[PartitionOffset],
        sequence: u64,
        file: &Path,
    ) -> Result<(), StoreError> {
        if !self.in_memory {
            // the file's name must survive a crash before the record naming it is written
            std::fs::File::open(&self.incoming)
                .and_then(|dir| dir.sync_all())
                .map_err(io(&self.incoming))?;
        }
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
        let record = Manifest {
            sequence,
            entities: 0,
            offsets: txn_offsets.to_vec(),
            timers: name.unwrap_or_default().into_bytes(),
        };
        self.db
            .put_cf_opt(
                self.cf(CF_CHECKPOINT_META)?,
                PENDING_KEY,
                record.encode(),
                &synced(),
            )
            .map_err(rocks("write pending checkpoint"))
    }

    /// The pending checkpoint, if one is waiting.
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
        let name = String::from_utf8(record.timers).map_err(|_| {
            StoreError::CorruptCheckpoint("pending checkpoint: file name not utf-8".into())
        })?;
        Ok(Some(Pending {
            txn_offsets: record.offsets,
            sequence: record.sequence,
            file: self.incoming.join(name),
        }))
    }

    /// Settles the pending checkpoint: applies it when its transaction committed (unless a
    /// crash came after applying it), else discards it. Durable; a no-op without one.
    pub fn resolve_pending(&self, committed: bool) -> Result<(), StoreError> {
        let Some(pending) = self.pending()? else {
            return Ok(());
        };
        if committed && !self.applied(&pending)? {
            self.ingest(&pending.file)?;
        } else {
            remove_file(&pending.file)?;
        }
        self.drop_pending()
    }

    /// Whether the pending checkpoint's file is in already (the manifest is that new).
    fn applied(&self, pending: &Pending) -> Result<bool, StoreError> {
        Ok(self
            .manifest()?
            .is_some_and(|m| m.sequence >= pending.sequence))
    }

    /// Applies the pending checkpoint file and drops the record of it. Only the ingestion can
    /// fail: a record left behind is dropped by [`Disk::resolve_pending`] at the next start
    /// (its sequence is applied).
    pub fn commit_pending(&self, pending: &Pending) -> Result<(), StoreError> {
        self.ingest(&pending.file)?;
        let _ = self.drop_pending();
        Ok(())
    }

    fn drop_pending(&self) -> Result<(), StoreError> {
        self.db
            .delete_cf_opt(self.cf(CF_CHECKPOINT_META)?, PENDING_KEY, &synced())
            .map_err(rocks("drop pending checkpoint"))
    }

    /// Flushes memtables to SST files (tests and shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        for name in [CF_SPILL, CF_CHECKPOINT_ENTITIES, CF_CHECKPOINT_META] {
            self.db.flush_cf(self.cf(name)?).map_err(rocks("flush"))?;
        }
        Ok(())
    }
}

/// The spill at one moment (a RocksDB snapshot): what a checkpoint captured then holds.
pub struct SpillView<'a>(rocksdb::SnapshotWithThreadMode<'a, DB>);

/// One checkpoint file being written: entity puts and deletes in ascending key order, then
/// the manifest. Removed when dropped unfinished.
pub struct CheckpointWriter<'a> {
    writer: SstFileWriter<'a>,
    path: PathBuf,
    finished: bool,
    pub bytes: u64,
}

impl CheckpointWriter<'_> {
    /// Adds an entity; keys must come in ascending order.
    pub fn put_entity(&mut self, key: &[u8], payload: &[u8]) -> Result<(), StoreError> {
        let value = seal(key, payload);
        self.bytes += (key.len() + value.len()) as u64;
        self.writer
            .put(key, value)
            .map_err(rocks("write checkpoint file"))
    }

    /// Removes an entity from the checkpoint; keys must come in ascending order.
    pub fn delete_entity(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.writer
            .delete(key)
            .map_err(rocks("write checkpoint file"))
    }

    /// Adds the manifest (the last key) and closes the file, synced; returns its path.
    fn finish(mut self, manifest: &Manifest) -> Result<PathBuf, StoreError> {
        let value = manifest.encode();
        self.bytes += value.len() as u64;
        self.writer
            .put(MANIFEST_KEY, value)
            .and_then(|()| self.writer.finish())
            .map_err(rocks("finish checkpoint file"))?;
        self.finished = true;
        Ok(self.path.clone())
    }
}

impl Drop for CheckpointWriter<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

mod spill_batch;

pub use spill_batch::SpillBatch;

#[cfg(test)]
mod tests;
