//! The decoding and feature thread of a replay: decodes each raw batch in parallel, then counts
//! its events into the features of both sets, each partition of the entities on a core of its
//! own.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use rayon::prelude::*;

use super::read::{RawBatch, ReadStats};
use super::recycle::Recycle;
use super::{BacktestError, Batch};
use crate::decider::FeatureStage;
use crate::event::PaymentEvent;
use crate::rules::RuleSet;
use crate::store::{StoreConfig, TagStore};

/// Memory budget of the feature state, shared by the partitions (spilled to disk beyond).
const FEATURE_BUDGET_BYTES: u64 = 1 << 30;

/// Decoded events with their feature values, shared by every set's thread.
#[derive(Default)]
pub(super) struct FeatureBatch {
    pub(super) events: Vec<PaymentEvent>,
    /// `width` values per event: every feature of both sets after counting the event.
    values: Vec<Option<f64>>,
    width: usize,
    /// Bytes of the events file read up to the end of this batch.
    pub(super) read_bytes: u64,
}

impl FeatureBatch {
    /// The feature values of event `i`.
    pub(super) fn row(&self, i: usize) -> &[Option<f64>] {
        let start = i * self.width;
        self.values.get(start..start + self.width).unwrap_or(&[])
    }
}

/// A fresh store in a temporary directory that lives as long as the returned guard.
pub(crate) fn scratch_store(
    memory_budget_bytes: u64,
) -> Result<(TagStore, tempfile::TempDir), BacktestError> {
    let dir = tempfile::tempdir().map_err(|source| BacktestError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let store = TagStore::open(StoreConfig {
        data_dir: dir.path().to_path_buf(),
        memory_budget_bytes,
        ..StoreConfig::default()
    })?;
    Ok((store, dir))
}

/// Decodes raw batches and counts their features.
pub(super) struct FeatureThread {
    stage: FeatureStage,
    /// Each partition's values of the batch being counted (kept across batches).
    parts: Vec<Vec<Option<f64>>>,
    /// Scratch space of the decoder.
    decoded: Vec<Result<PaymentEvent, String>>,
    /// Raw batches go back to the reader once decoded.
    pub(super) raw_recycle: Recycle<RawBatch>,
    /// Batches every set is done with, back for reuse.
    pub(super) recycle: Recycle<FeatureBatch>,
    /// Keeps the partitions' store directories until the replay ends.
    _dirs: Vec<tempfile::TempDir>,
}

impl FeatureThread {
    /// The features of `new` and `baseline` (counted once where they are defined alike) over
    /// `partitions` partitions of the entities.
    pub(super) fn new(
        new: Arc<RuleSet>,
        baseline: Option<Arc<RuleSet>>,
        partitions: usize,
    ) -> Result<FeatureThread, BacktestError> {
        let partitions = partitions.max(1);
        let mut stores = Vec::with_capacity(partitions);
        let mut dirs = Vec::with_capacity(partitions);
        for _ in 0..partitions {
            let (store, dir) = scratch_store(FEATURE_BUDGET_BYTES / partitions as u64)?;
            stores.push(store);
            dirs.push(dir);
        }
        Ok(FeatureThread {
            stage: FeatureStage::new(new, baseline, stores),
            parts: vec![Vec::new(); partitions],
            decoded: Vec::new(),
            raw_recycle: Recycle::new(8),
            recycle: Recycle::new(8),
            _dirs: dirs,
        })
    }

    /// Where the new set's (`baseline == false`) or the baseline's features are in a row.
    pub(super) fn slots(&self, baseline: bool) -> Vec<usize> {
        self.stage.slots(baseline)
    }

    /// Decodes and counts every raw batch, in order, and hands each to every set; stops early
    /// when a set stops (its thread reports why).
    pub(super) fn run(mut self, raw: Receiver<RawBatch>, sets: Vec<Sender<Batch>>) -> ReadStats {
        let mut stats = ReadStats::default();
        while let Ok(mut raw_batch) = raw.recv() {
            let mut batch = self.recycle.take().unwrap_or_default();
            batch.read_bytes = raw_batch.read_bytes;
            raw_batch.decode_into(&mut batch.events, &mut self.decoded, &mut stats);
            self.raw_recycle.give(raw_batch);
            self.count(&mut batch);
            let batch = Arc::new(batch);
            if !sets.iter().all(|tx| tx.send(batch.clone()).is_ok()) {
                break;
            }
        }
        stats
    }

    /// Counts the batch's events into the features: each partition walks the batch in order
    /// on its own core, updating only its entities; the rows are then merged.
    fn count(&mut self, batch: &mut FeatureBatch) {
        let width = self.stage.width();
        let cells = batch.events.len() * width;
        let stage = &self.stage;
        let events = &batch.events;
        self.parts
            .par_iter_mut()
            .enumerate()
            .with_max_len(1)
            .for_each(|(part, values)| {
                values.clear();
                values.resize(cells, None);
                if width > 0 {
                    for (event, row) in events.iter().zip(values.chunks_exact_mut(width)) {
                        stage.update(part, event, row);
                    }
                }
            });
        batch.width = width;
        if let [only] = self.parts.as_mut_slice() {
            std::mem::swap(&mut batch.values, only);
            return;
        }
        batch.values.clear();
        batch.values.resize(cells, None);
        // A value is `None` in every partition but its entity's.
        for part in &self.parts {
            for (merged, value) in batch.values.iter_mut().zip(part) {
                if value.is_some() {
                    *merged = *value;
                }
            }
        }
    }
}
