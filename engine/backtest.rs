//! `veto backtest`: replays recorded events through a candidate rule set (and a baseline) with real state and event-time timers, and reports what changes.
//!
//! [`backtest`] runs the replay as a pipeline: one thread reads the file into raw batches
//! (`read`); one thread decodes each batch in parallel and counts its events into the features
//! of both sets, the entities split into partitions counted on cores of their own (`features`),
//! buffers going back for reuse (`recycle`); one thread per rule set
//! evaluates its rules on those values with its own tags and timers (`runner`); this thread
//! compares (`tally`) and, with `--labels` (`labels`), judges each set against the ground truth
//! (`quality`, `label_diff`); [`render_human`] prints the summary.

mod features;
mod label_diff;
mod labels;
mod quality;
mod read;
mod recycle;
mod render;
mod runner;
mod tags;
mod tally;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_labels;
#[cfg(test)]
mod tests_parallel;

pub(crate) use features::scratch_store;
pub use label_diff::{LabelDiff, LabelsSummary, RuleQualityDelta};
pub use labels::{InputError, Label};
pub use quality::{Amounts, Flagged, LabelledSet, RuleQuality, Sweep, SweepPoint, Total};
pub(crate) use read::for_each_event;
pub use render::render_human;
pub(crate) use tags::{read_tags, TimedTag};

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::bounded;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::event::Decision;
use crate::rules::RuleSet;
use crate::store::StoreError;
use features::{FeatureBatch, FeatureThread};
use labels::Labels;
use quality::LabelTally;
use read::{EventReader, RawBatch};
use runner::SetRunner;
use tally::{PairTally, SetTally};

/// Encoding of a recorded events file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventFileFormat {
    /// One JSON `PaymentEvent` per line (`docs/wire-format.md`); blank lines are skipped. A
    /// line may start with its Kafka record key and a tab, as `kcat -K '\t'` and
    /// `kafka-console-consumer --property print.key=true` print it.
    Jsonl,
    /// Length-delimited protobuf `veto.v1.PaymentEvent` records (varint length, then bytes).
    Pb,
    /// A dump of the payments topic as `kcat -C -t payments -e -f '%S %s\n'` writes it: each
    /// record's value length in decimal, a space, the value (protobuf or JSON), a newline.
    Kcat,
}

impl EventFileFormat {
    /// `.jsonl` / `.ndjson` / `.json` are JSON lines, `.pb` is length-delimited protobuf,
    /// `.kcat` a kcat dump.
    pub fn from_path(path: &Path) -> Option<EventFileFormat> {
        match path.extension()?.to_str()? {
            "jsonl" | "ndjson" | "json" => Some(EventFileFormat::Jsonl),
            "pb" => Some(EventFileFormat::Pb),
            "kcat" => Some(EventFileFormat::Kcat),
            _ => None,
        }
    }
}

/// Errors that stop a backtest (bad event records do not: they are counted and reported).
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error("{which} rule files rejected:\n{diagnostics}")]
    Rules {
        which: &'static str,
        diagnostics: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: unknown extension, expected .jsonl, .pb or .kcat (or pass --format)")]
    UnknownFormat(PathBuf),
    #[error("cannot open a scratch tag store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot start thread {name}: {source}")]
    Spawn {
        name: String,
        source: std::io::Error,
    },
    #[error("the {0} thread failed")]
    Thread(&'static str),
    #[error("--labels {0}")]
    Labels(InputError),
    #[error("--tags {0}")]
    Tags(InputError),
}

/// What to replay, through which rule sets.
#[derive(Debug, Clone, Default)]
pub struct BacktestOptions {
    /// The candidate ("new") rule set.
    pub rules: Vec<PathBuf>,
    /// The set to compare against; empty = report the new set alone.
    pub baseline: Vec<PathBuf>,
    pub events: PathBuf,
    /// `None`: by the events file's extension.
    pub format: Option<EventFileFormat>,
    /// Every decision of the new set, as JSON lines (the Kafka decision's JSON encoding).
    pub decisions_out: Option<PathBuf>,
    /// Sample event ids kept per outcome change.
    pub samples: usize,
    /// Show a progress bar (only drawn when stderr is a terminal).
    pub progress: bool,
    /// Ground truth (`event_id` or `txn_id`, `label` fraud/legit) joined onto the decisions.
    pub labels: Option<PathBuf>,
    /// Distance between the thresholds of a score sweep (0: the current threshold only).
    pub sweep_step: u32,
    /// External tag updates (`TagUpdate` JSON lines with `event_time_ms`) replayed in event
    /// time, as the `entity-tags` topic would have delivered them.
    pub tags: Option<PathBuf>,
    /// Partitions of the entities whose features are counted in parallel (0: the cores left
    /// after one per rule set, at least 1). Decisions do not depend on it.
    pub partitions: usize,
}

/// A record of the events file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadRecord {
    /// 1-based line (JSON lines) or record number (protobuf, kcat dump).
    pub line: u64,
    pub error: String,
}

/// One rule set's totals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SetReport {
    pub version: String,
    /// Event-triggered decisions by outcome.
    pub decisions: BTreeMap<&'static str, u64>,
    /// Timeout decisions of sequence rules (event time) by outcome.
    pub timeout_decisions: BTreeMap<&'static str, u64>,
    /// Matches per rule, timeouts included.
    pub rule_hits: BTreeMap<String, u64>,
    /// The set against the labels (with `--labels`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<LabelledSet>,
}

/// Events whose outcome went from `from` (baseline) to `to` (new).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub from: &'static str,
    pub to: &'static str,
    pub events: u64,
    pub sample_event_ids: Vec<String>,
}

/// A rule matched a different number of times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleDelta {
    pub rule: String,
    pub baseline: u64,
    pub new: u64,
    pub delta: i64,
}

/// Differences between the baseline and the new set, event by event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Changes {
    /// Events with a different outcome.
    pub changed_events: u64,
    /// Events with the same outcome but a different list of matching rules.
    pub hits_changed_events: u64,
    /// `matrix[baseline outcome][new outcome]` = events.
    pub matrix: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
    /// The off-diagonal cells of the matrix, largest first, with sample event ids.
    pub transitions: Vec<Transition>,
    /// Rules whose hit count changed, largest change first.
    pub rule_hit_deltas: Vec<RuleDelta>,
    /// Timeout decisions of sequence rules, paired by rule and key.
    pub timeouts: TimeoutChanges,
    /// The new set minus the baseline on the labels (with `--labels`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<LabelDiff>,
}

/// Timeout decisions compared: the n-th firing of a sequence rule for a key (the value of its
/// `with same` field) in the baseline is paired with the n-th in the new set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimeoutChanges {
    /// Timeouts that fired in both sets.
    pub paired: u64,
    /// Paired timeouts whose outcome differs.
    pub changed: u64,
    /// `matrix[baseline outcome][new outcome]` = paired timeouts.
    pub matrix: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
    /// The off-diagonal cells, largest first, with sample event ids (the arming events).
    pub transitions: Vec<Transition>,
    /// Timeouts only the new set fired, per rule (e.g. a new rule, or a capture it no longer
    /// waits for).
    pub only_new: BTreeMap<String, u64>,
    /// Timeouts only the baseline fired, per rule.
    pub only_baseline: BTreeMap<String, u64>,
}

/// The result of a backtest (also written as JSON with `--out`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub events_file: String,
    /// Events replayed.
    pub events: u64,
    /// Records that could not be decoded or validated (skipped).
    pub bad_records: u64,
    /// The first bad records, with their line numbers.
    pub bad_record_samples: Vec<BadRecord>,
    pub seconds: f64,
    pub events_per_second: f64,
    pub new: SetReport,
    pub baseline: Option<SetReport>,
    pub changes: Option<Changes>,
    /// The labels file and how it met the replay (with `--labels`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<LabelsSummary>,
    /// The external tag updates replayed (with `--tags`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<TagsSummary>,
}

/// External tag updates replayed with `--tags`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagsSummary {
    pub file: String,
    /// Updates in the file.
    pub updates: u64,
    /// Updates whose time the events reached (later ones cannot matter).
    pub applied: u64,
    /// Updates refused by the new set's store (the entity already held 256 tags).
    pub refused: u64,
    /// The same for the baseline's store.
    pub refused_baseline: Option<u64>,
}

/// `veto backtest`: runs, prints the summary (or the JSON report with `json`), writes `out`.
pub fn run_backtest(opts: &BacktestOptions, out: Option<&Path>, json: bool) -> i32 {
    let report = match backtest(opts) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let rendered = serde_json::to_string_pretty(&report).unwrap_or_default();
    if json {
        println!("{rendered}");
    } else {
        print!("{}", render_human(&report));
    }
    if let Some(path) = out {
        if let Err(e) = std::fs::write(path, rendered + "\n") {
            eprintln!("error: {}: {e}", path.display());
            return 1;
        }
    }
    0
}

/// Replays the events file through the new set (and the baseline) and compares them.
pub fn backtest(opts: &BacktestOptions) -> Result<Report, BacktestError> {
    let new_rules = load_set("--rules", &opts.rules)?;
    let baseline_rules = if opts.baseline.is_empty() {
        None
    } else {
        Some(load_set("--baseline", &opts.baseline)?)
    };
    let format = opts
        .format
        .or_else(|| EventFileFormat::from_path(&opts.events))
        .ok_or_else(|| BacktestError::UnknownFormat(opts.events.clone()))?;
    let tags = match &opts.tags {
        Some(path) => tags::read_tags(path).map_err(BacktestError::Tags)?,
        None => Vec::new(),
    };
    let tag_updates = tags.len() as u64;
    let tags = Arc::new(tags);
    let labels = match &opts.labels {
        Some(path) => Some(Arc::new(Labels::read(path).map_err(BacktestError::Labels)?)),
        None => None,
    };
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BacktestError::Io { path, source }
    };
    let file = File::open(&opts.events).map_err(io_err(&opts.events))?;
    let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let decisions_out = match &opts.decisions_out {
        Some(path) => Some((
            path.clone(),
            BufWriter::new(File::create(path).map_err(io_err(path))?),
        )),
        None => None,
    };
    let bar = progress_bar(opts.progress, total_bytes);
    let started = Instant::now();

    let features = FeatureThread::new(
        new_rules.clone(),
        baseline_rules.clone(),
        match opts.partitions {
            // each set's rules keep a core busy
            0 => rayon::current_num_threads()
                .saturating_sub(1 + usize::from(baseline_rules.is_some()))
                .max(1),
            n => n,
        },
    )?;
    let sets: Vec<(Arc<RuleSet>, &'static str, Vec<usize>)> =
        std::iter::once((new_rules.clone(), "new", features.slots(false)))
            .chain(
                baseline_rules
                    .clone()
                    .map(|b| (b, "baseline", features.slots(true))),
            )
            .collect();
    let feature_recycle = features.recycle.clone();
    let raw_recycle = features.raw_recycle.clone();
    let mut batch_txs = Vec::new();
    let mut runners = Vec::new();
    let mut result_rxs = Vec::new();
    let mut decision_recycles = Vec::new();
    let mut writer = decisions_out;
    for (rules, name, slots) in sets {
        let (batch_tx, batch_rx) = bounded::<Batch>(4);
        let (result_tx, result_rx) = bounded::<BatchResult>(4);
        batch_txs.push(batch_tx);
        result_rxs.push(result_rx);
        let mut runner = SetRunner::new(rules, slots, name, writer.take(), tags.clone())?;
        runner.channels = Some((batch_rx, result_tx));
        decision_recycles.push(runner.recycle.clone());
        runners.push(runner);
    }
    let (raw_tx, raw_rx) = bounded::<RawBatch>(4);
    let reader = EventReader {
        format,
        path: opts.events.clone(),
        recycle: raw_recycle,
    };
    let mut tally_new = SetTally::default();
    let mut tally_base = SetTally::default();
    let mut pairs = baseline_rules
        .as_ref()
        .map(|b| PairTally::new(opts.samples, b, &new_rules));
    let mut labels_new = labels
        .as_ref()
        .map(|l| LabelTally::new(l.clone(), &new_rules));
    let mut labels_base = labels
        .as_ref()
        .zip(baseline_rules.as_ref())
        .map(|(l, b)| LabelTally::new(l.clone(), b));
    let outcome = std::thread::scope(|scope| {
        // A thread that cannot be spawned drops its channel ends, so the others stop too.
        let thread_err = |name: &str| {
            let name = name.to_string();
            move |source| BacktestError::Spawn { name, source }
        };
        let read = std::thread::Builder::new()
            .name("backtest-read".into())
            .spawn_scoped(scope, move || reader.run(file, raw_tx))
            .map_err(thread_err("backtest-read"));
        let count = std::thread::Builder::new()
            .name("backtest-features".into())
            .spawn_scoped(scope, move || features.run(raw_rx, batch_txs))
            .map_err(thread_err("backtest-features"));
        let running: Vec<_> = runners
            .into_iter()
            .map(|runner| {
                let name = format!("backtest-{}", runner.name);
                std::thread::Builder::new()
                    .name(name.clone())
                    .spawn_scoped(scope, move || runner.run())
                    .map_err(thread_err(&name))
            })
            .collect();
        let mut rxs = result_rxs.into_iter();
        let new_rx = rxs.next();
        let base_rx = rxs.next();
        if let Some(new_rx) = &new_rx {
            let mut decided = 0u64;
            while let Ok(new) = new_rx.recv() {
                decided += new.decisions.len() as u64;
                show_progress(&bar, decided, new.events.read_bytes);
                tally_new.add(&new);
                if let Some(l) = &mut labels_new {
                    l.add(&new);
                }
                let mut done = vec![new];
                if let Some(base_rx) = &base_rx {
                    let Ok(base) = base_rx.recv() else { break };
                    tally_base.add(&base);
                    if let Some(l) = &mut labels_base {
                        l.add(&base);
                    }
                    if let Some(pairs) = &mut pairs {
                        pairs.add(&base, &done[0]);
                    }
                    done.push(base);
                }
                // Buffers back to the threads that fill them.
                let mut events = None;
                for (result, recycle) in done.into_iter().zip(&decision_recycles) {
                    let mut decisions = result.decisions;
                    decisions.clear();
                    recycle.give(decisions);
                    events = Some(result.events);
                }
                if let Some(batch) = events.and_then(|e| Arc::try_unwrap(e).ok()) {
                    feature_recycle.give(batch);
                }
            }
        }
        // Unblock any runner still sending before joining it.
        drop(new_rx);
        drop(base_rx);
        let read = read?
            .join()
            .map_err(|_| BacktestError::Thread("event reader"))?;
        let stats = count?
            .join()
            .map_err(|_| BacktestError::Thread("feature"))?;
        let mut run_stats = Vec::new();
        for handle in running {
            run_stats.push(
                handle?
                    .join()
                    .map_err(|_| BacktestError::Thread("rule set"))??,
            );
        }
        read?;
        Ok::<_, BacktestError>((stats, run_stats))
    });
    let (stats, run_stats) = outcome?;
    let tags_summary = opts.tags.as_ref().map(|path| TagsSummary {
        file: path.display().to_string(),
        updates: tag_updates,
        applied: run_stats.first().map_or(0, |s| s.tags_applied),
        refused: run_stats.first().map_or(0, |s| s.tags_refused),
        refused_baseline: run_stats.get(1).map(|s| s.tags_refused),
    });
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let judged = |tally: &mut Option<LabelTally>| {
        tally.as_mut().map(|t| {
            t.finish();
            t.report(opts.sweep_step)
        })
    };
    let new_labels = judged(&mut labels_new);
    let base_labels = judged(&mut labels_base);
    let label_diff = match (&labels_new, &new_labels, &labels_base, &base_labels) {
        (Some(nt), Some(n), Some(bt), Some(b)) => Some(LabelDiff::new(nt, n, bt, b)),
        _ => None,
    };
    let labels_summary = labels_new
        .as_ref()
        .zip(opts.labels.as_ref())
        .map(|(t, path)| LabelsSummary::new(path.display().to_string(), t));
    let mut new_report = tally_new.report(&new_rules);
    new_report.labels = new_labels;
    let baseline_report = baseline_rules.as_ref().map(|b| {
        let mut report = tally_base.report(b);
        report.labels = base_labels;
        report
    });
    let changes = pairs.as_ref().map(|pairs| {
        let mut changes = pairs.report(&tally_base, &tally_new);
        changes.labels = label_diff;
        changes
    });
    Ok(Report {
        events_file: opts.events.display().to_string(),
        events: stats.events,
        bad_records: stats.bad_records,
        bad_record_samples: stats.bad_samples,
        seconds,
        events_per_second: if seconds > 0.0 {
            stats.events as f64 / seconds
        } else {
            0.0
        },
        new: new_report,
        baseline: baseline_report,
        changes,
        labels: labels_summary,
        tags: tags_summary,
    })
}

fn load_set(which: &'static str, paths: &[PathBuf]) -> Result<Arc<RuleSet>, BacktestError> {
    let report = crate::rules::load(paths);
    if report.has_errors() {
        return Err(BacktestError::Rules {
            which,
            diagnostics: report.render_human(false),
        });
    }
    report.ruleset.map(Arc::new).ok_or(BacktestError::Rules {
        which,
        diagnostics: "no rule set was produced".into(),
    })
}

/// A bar of the events file's bytes decided so far, with events/s and the ETA; hidden unless
/// wanted and stderr is a terminal.
fn progress_bar(wanted: bool, total_bytes: u64) -> ProgressBar {
    if !wanted || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} replaying [{bar:40}] {percent:>3}% {msg}, elapsed {elapsed}, ETA {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Moves the bar to the file position of the last decided batch.
fn show_progress(bar: &ProgressBar, events: u64, read_bytes: u64) {
    if bar.is_hidden() {
        return;
    }
    bar.set_position(read_bytes.max(bar.position()));
    let seconds = bar.elapsed().as_secs_f64();
    let rate = if seconds > 0.0 {
        events as f64 / seconds
    } else {
        0.0
    };
    bar.set_message(format!("{events} events, {rate:.0} events/s"));
}

/// Events decoded from the file with their feature values, shared by every set.
type Batch = Arc<FeatureBatch>;

/// What one rule set decided for one batch: a decision per event (in order) and the timeout
/// decisions that fired in event time while deciding it.
struct BatchResult {
    /// The batch's events (`events[i]` decided `decisions[i]`); empty for the final timeouts.
    events: Batch,
    decisions: Vec<Decision>,
    timeouts: Vec<Decision>,
    /// The key (`with same` field value) of each timeout.
    timeout_keys: Vec<String>,
}
