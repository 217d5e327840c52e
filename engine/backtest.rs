//! `veto backtest`: replays recorded events through a candidate rule set (and a baseline) with real state and event-time timers, and reports what changes.
//!
//! [`backtest`] runs the replay: one thread reads the file (`read`), one thread per rule set
//! decides (`runner`), this thread compares (`tally`); [`render_human`] prints the summary.

mod read;
mod render;
mod runner;
mod tally;
#[cfg(test)]
mod tests;

pub use render::render_human;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::bounded;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::event::{Decision, PaymentEvent};
use crate::rules::RuleSet;
use crate::store::StoreError;
use read::EventReader;
use runner::SetRunner;
use tally::{PairTally, SetTally};

/// Encoding of a recorded events file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventFileFormat {
    /// One JSON `PaymentEvent` per line (`docs/wire-format.md`); blank lines are skipped.
    Jsonl,
    /// Length-delimited protobuf `veto.v1.PaymentEvent` records (varint length, then bytes).
    Pb,
}

impl EventFileFormat {
    /// `.jsonl` / `.ndjson` / `.json` are JSON lines, `.pb` is length-delimited protobuf.
    pub fn from_path(path: &Path) -> Option<EventFileFormat> {
        match path.extension()?.to_str()? {
            "jsonl" | "ndjson" | "json" => Some(EventFileFormat::Jsonl),
            "pb" => Some(EventFileFormat::Pb),
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
    #[error("{0}: unknown extension, expected .jsonl or .pb (or pass --format)")]
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
}

/// What to replay, through which rule sets.
#[derive(Debug, Clone)]
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
}

/// A record of the events file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadRecord {
    /// 1-based line (JSON lines) or record number (protobuf).
    pub line: u64,
    pub error: String,
}

/// One rule set's totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetReport {
    pub version: String,
    /// Event-triggered decisions by outcome.
    pub decisions: BTreeMap<&'static str, u64>,
    /// Timeout decisions of sequence rules (event time) by outcome.
    pub timeout_decisions: BTreeMap<&'static str, u64>,
    /// Matches per rule, timeouts included.
    pub rule_hits: BTreeMap<String, u64>,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

    let sets: Vec<(Arc<RuleSet>, &'static str)> = std::iter::once((new_rules.clone(), "new"))
        .chain(baseline_rules.clone().map(|b| (b, "baseline")))
        .collect();
    let mut batch_txs = Vec::new();
    let mut runners = Vec::new();
    let mut result_rxs = Vec::new();
    let mut writer = decisions_out;
    for (rules, name) in &sets {
        let (batch_tx, batch_rx) = bounded::<Batch>(4);
        let (result_tx, result_rx) = bounded::<BatchResult>(4);
        batch_txs.push(batch_tx);
        result_rxs.push(result_rx);
        let mut runner = SetRunner::new(rules.clone(), name, writer.take())?;
        runner.channels = Some((batch_rx, result_tx));
        runners.push(runner);
    }

    let reader = EventReader {
        format,
        path: opts.events.clone(),
        bar: bar.clone(),
    };
    let mut tally_new = SetTally::default();
    let mut tally_base = SetTally::default();
    let mut pairs = PairTally::new(opts.samples);
    let outcome = std::thread::scope(|scope| {
        // A thread that cannot be spawned drops its channel ends, so the others stop too.
        let thread_err = |name: &str| {
            let name = name.to_string();
            move |source| BacktestError::Spawn { name, source }
        };
        let read = std::thread::Builder::new()
            .name("backtest-read".into())
            .spawn_scoped(scope, move || reader.run(file, batch_txs))
            .map_err(thread_err("backtest-read"));
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
            while let Ok(new) = new_rx.recv() {
                tally_new.add(&new);
                if let Some(base_rx) = &base_rx {
                    let Ok(base) = base_rx.recv() else { break };
                    tally_base.add(&base);
                    pairs.add(&base.decisions, &new.decisions);
                }
            }
        }
        // Unblock any runner still sending before joining it.
        drop(new_rx);
        drop(base_rx);
        let read = read?
            .join()
            .map_err(|_| BacktestError::Thread("event reader"))?;
        for handle in running {
            handle?
                .join()
                .map_err(|_| BacktestError::Thread("rule set"))??;
        }
        read
    });
    let stats = outcome?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
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
        new: tally_new.report(&new_rules),
        changes: baseline_rules
            .as_ref()
            .map(|_| pairs.report(&tally_base, &tally_new)),
        baseline: baseline_rules.as_ref().map(|b| tally_base.report(b)),
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

fn progress_bar(wanted: bool, total_bytes: u64) -> ProgressBar {
    if !wanted || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} replaying [{bar:40}] {bytes}/{total_bytes} {msg} ({eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Events decoded from the file, shared by every set.
type Batch = Arc<Vec<PaymentEvent>>;

/// What one rule set decided for one batch: a decision per event (in order) and the timeout
/// decisions that fired in event time while deciding it.
struct BatchResult {
    decisions: Vec<Decision>,
    timeouts: Vec<Decision>,
}
