//! One rule set replaying the batches on its own tags, with timers in event time, from the
//! feature values the feature thread computed.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::features::{scratch_store, FeatureBatch};
use super::recycle::Recycle;
use super::tags::TimedTag;
use super::{BacktestError, Batch, BatchResult};
use crate::decider::{event_decision, EventTimeTimers, RuleStage};
use crate::event::{encode_decision, Decision, OutputFormat};
use crate::rules::RuleSet;

/// Memory budget of a set's tags (spilled to disk beyond).
const TAGS_BUDGET_BYTES: u64 = 256 << 20;

/// One rule set replaying the events on its own tags, with timers in event time.
pub(super) struct SetRunner {
    stage: RuleStage,
    timers: Arc<EventTimeTimers>,
    pub(super) name: &'static str,
    out: Option<(PathBuf, BufWriter<File>)>,
    pub(super) channels: Option<(Receiver<Batch>, Sender<BatchResult>)>,
    /// Decision lists the tally is done with, back for reuse.
    pub(super) recycle: Recycle<Vec<Decision>>,
    /// External tag updates by time (`--tags`), and the next one to apply.
    tags: Arc<Vec<TimedTag>>,
    next_tag: usize,
    stats: RunStats,
    /// Keeps the scratch store's directory until the run ends.
    _dir: tempfile::TempDir,
}

/// What a set's replay did besides deciding.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct RunStats {
    /// External tag updates applied (their time was reached).
    pub(super) tags_applied: u64,
    /// Of those, updates refused: the entity already held the most tags allowed.
    pub(super) tags_refused: u64,
}

impl SetRunner {
    /// `slots`: where the set's features are in a batch's rows.
    pub(super) fn new(
        rules: Arc<RuleSet>,
        slots: Vec<usize>,
        name: &'static str,
        out: Option<(PathBuf, BufWriter<File>)>,
        tags: Arc<Vec<TimedTag>>,
    ) -> Result<SetRunner, BacktestError> {
        let (store, dir) = scratch_store(TAGS_BUDGET_BYTES)?;
        let timers = Arc::new(EventTimeTimers::default());
        Ok(SetRunner {
            stage: RuleStage::new(rules, slots, store, timers.clone()),
            timers,
            name,
            out,
            channels: None,
            recycle: Recycle::new(8),
            tags,
            next_tag: 0,
            stats: RunStats::default(),
            _dir: dir,
        })
    }

    pub(super) fn run(mut self) -> Result<RunStats, BacktestError> {
        let Some((batches, results)) = self.channels.take() else {
            return Ok(self.stats);
        };
        let rules = self.stage.rules().clone();
        while let Ok(batch) = batches.recv() {
            let mut decisions = self.recycle.take().unwrap_or_default();
            decisions.reserve(batch.events.len());
            let (mut timeouts, mut timeout_keys) = (Vec::new(), Vec::new());
            for (i, event) in batch.events.iter().enumerate() {
                self.apply_tags(event.event_time_ms);
                // Timers whose deadline passed fire before the event that reveals it.
                self.fire_due(event.event_time_ms, &mut timeouts, &mut timeout_keys)?;
                let eval = self.stage.evaluate(event, batch.row(i));
                // replays time nothing per event: latency 0
                let decision = event_decision(event, eval, &rules, event.event_time_ms, 0);
                self.write(&decision)?;
                decisions.push(decision);
            }
            let result = BatchResult {
                events: batch,
                decisions,
                timeouts,
                timeout_keys,
            };
            if results.send(result).is_err() {
                return Ok(self.stats);
            }
        }
        // The end of the stream fires every remaining timer.
        let mut last = BatchResult {
            events: Arc::new(FeatureBatch::default()),
            decisions: Vec::new(),
            timeouts: Vec::new(),
            timeout_keys: Vec::new(),
        };
        self.fire_due(i64::MAX, &mut last.timeouts, &mut last.timeout_keys)?;
        let _ = results.send(last);
        if let Some((path, out)) = &mut self.out {
            out.flush().map_err(|source| BacktestError::Io {
                path: path.clone(),
                source,
            })?;
        }
        tracing::debug!(set = self.name, "replay finished");
        Ok(self.stats)
    }

    /// Applies the external tag updates due by `now_ms` (event time), before the event.
    fn apply_tags(&mut self, now_ms: i64) {
        while let Some(tag) = self.tags.get(self.next_tag) {
            if tag.at_ms > now_ms {
                break;
            }
            self.stats.tags_applied += 1;
            if self.stage.apply_tag_update(&tag.update).is_err() {
                self.stats.tags_refused += 1;
            }
            self.next_tag += 1;
        }
    }

    fn fire_due(
        &mut self,
        now_ms: i64,
        timeouts: &mut Vec<Decision>,
        keys: &mut Vec<String>,
    ) -> Result<(), BacktestError> {
        for timer in self.timers.due(now_ms) {
            let decided_at = timer.deadline_ms;
            if let Some(decision) =
                self.stage
                    .timeout_decision(&timer.rule, timer.event_id, timer.txn_id, decided_at)
            {
                self.write(&decision)?;
                timeouts.push(decision);
                keys.push(timer.key);
            }
        }
        Ok(())
    }

    fn write(&mut self, decision: &Decision) -> Result<(), BacktestError> {
        let Some((path, out)) = &mut self.out else {
            return Ok(());
        };
        let mut line = encode_decision(decision, OutputFormat::Json);
        line.push(b'\n');
        out.write_all(&line).map_err(|source| BacktestError::Io {
            path: path.clone(),
            source,
        })
    }
}
