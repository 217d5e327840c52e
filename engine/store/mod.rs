//! Tag store: sharded per-entity state (sliding-window features, distinct sketches, tags) with a
//! memory budget, RocksDB spill and atomic checkpoints. See `docs/store.md`.
//!
//! The store never knows rules syntax or Kafka: callers describe features with [`FeatureSpec`]
//! and, for each event, name its entity of each kind and what it brings to each feature
//! ([`TagStore::update_planned`], or one [`FeatureInput`] per feature to [`TagStore::update`]).

mod codec;
mod disk;
mod entity;
mod hll;
mod packed;
mod plan;
mod tag_store;
mod telemetry;
mod window;

pub use disk::CHECKPOINT_FORMAT_VERSION;
pub use entity::MAX_TAGS;
pub use hll::SKETCH_STANDARD_ERROR;
pub use plan::FeaturePlan;
pub use tag_store::{LiveTags, TagStore};

use crate::event::{Aggregate, Field};
use std::path::PathBuf;
use std::time::Duration;

/// Store settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Number of lock stripes; a power of two.
    pub shards: usize,
    /// The store's memory: entity state, RocksDB's memory and an allocator reserve; the coldest
    /// entities spill to keep within it (docs/store.md).
    pub memory_budget_bytes: u64,
    /// RocksDB directory for spill and checkpoints.
    pub data_dir: PathBuf,
    /// `distinct` is exact up to this many live items per (feature, entity), then a sketch.
    pub distinct_exact_limit: usize,
    /// Event-time slack before idle entities and expired tags are purged, so slightly late
    /// events still find their state.
    pub expiry_grace_ms: i64,
    /// RocksDB block cache size.
    pub block_cache_bytes: usize,
    /// RocksDB on an in-memory environment: nothing touches the disk and opening is cheap.
    /// For scratch stores (rule tests run on every reload, `veto test`); `data_dir` only names it
    /// (it must be absolute). Such a store cannot checkpoint.
    pub in_memory: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            shards: 64,
            memory_budget_bytes: 1 << 30,
            data_dir: PathBuf::from("data/store"),
            distinct_exact_limit: 32,
            expiry_grace_ms: 5 * 60 * 1000,
            block_cache_bytes: 8 << 20,
            in_memory: false,
        }
    }
}

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid store config: {0}")]
    Config(String),
    #[error("cannot create store directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("rocksdb failed to {context}: {source}")]
    Rocks {
        context: &'static str,
        source: rocksdb::Error,
    },
    #[error("rocksdb column family {0} is missing")]
    MissingColumnFamily(&'static str),
    #[error("corrupt checkpoint, refusing to load it: {0}")]
    CorruptCheckpoint(String),
    #[error(
        "checkpoint format version {found} is not supported (this build reads version {expected})"
    )]
    UnsupportedCheckpointVersion { found: u32, expected: u32 },
    #[error("the checkpoint's Kafka transaction did not commit: {0}")]
    NotPublished(String),
    #[error("an earlier exactly-once checkpoint is not settled yet; the next start settles it")]
    PendingUnsettled,
    #[error("checkpoint not written: {0}")]
    NotWritten(String),
    #[error("corrupt spilled entity {key}: {reason}")]
    CorruptSpill { key: String, reason: String },
}

/// One compiled feature definition, as the store sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureSpec {
    /// Stable fingerprint of the definition; state is keyed by it.
    pub id: u64,
    pub agg: Aggregate,
    /// The entity field the feature is grouped by.
    pub by: Field,
    pub window_ms: u64,
    pub resolution_ms: u64,
}

/// What one event brings to one feature.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureInput<'a> {
    /// Value of the `by` field; `None` (missing) means no update and an output of `None`.
    pub entity: Option<&'a str>,
    /// Whether the event passed the feature's `where` filter.
    pub counted: bool,
    pub observation: Observation<'a>,
}

/// The value an event contributes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Observation<'a> {
    /// `count()`.
    Count,
    /// `sum/avg/min/max/last` of a numeric field.
    Num(f64),
    /// `distinct` of a field.
    Item(&'a str),
    /// The value field is missing: advances T, counts nothing.
    Missing,
}

/// Where a partition's consumption resumes after a restore.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: i32,
    /// Next offset to consume.
    pub offset: i64,
}

/// What [`TagStore::checkpoint`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointStats {
    pub sequence: u64,
    /// Entities written (dirty ones, in memory or spilled).
    pub entities_written: u64,
    pub entities_deleted: u64,
    /// Entities in the checkpoint after this one.
    pub entities_total: u64,
    pub bytes_written: u64,
    /// From the start to the file being in.
    pub duration: Duration,
    /// How long operations were blocked while the dirty state was copied out.
    pub locked: Duration,
}

/// What [`TagStore::restore`] loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub offsets: Vec<PartitionOffset>,
    pub timers: Vec<u8>,
    pub entities: usize,
    pub sequence: u64,
}

/// A snapshot of the store's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    pub entities_in_memory: u64,
    /// Dirty entities spilled to RocksDB since the last checkpoint.
    pub entities_spilled: u64,
    /// Entities in the last checkpoint (some may also be in memory).
    pub entities_checkpointed: u64,
    /// Approximate bytes of in-memory state.
    pub accounted_bytes: u64,
    /// Bytes RocksDB holds in memory (memtables, table readers, block cache).
    pub rocksdb_bytes: u64,
}
