//! `veto backtest`: replays recorded events through a candidate rule set (and a baseline) with real state and event-time timers, and reports what changes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, ErrorKind, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::decider::{Engine, EventTimeTimers};
use crate::event::{
    decode_event, encode_decision, Decision, InputFormat, Outcome, OutputFormat, PaymentEvent,
    DEFAULT_MAX_EVENT_BYTES,
};
use crate::rules::RuleSet;
use crate::store::{StoreConfig, StoreError, TagStore};

/// Events handed to the rule sets at a time.
const BATCH: usize = 1024;
/// Bad records kept (with line numbers) in the report; all are counted.
const BAD_SAMPLES: usize = 20;
/// Largest protobuf record accepted (a larger length prefix means the file is corrupt).
const MAX_RECORD_BYTES: u64 = 16 << 20;

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

/// Counts of the records read.
#[derive(Debug, Default)]
struct ReadStats {
    events: u64,
    bad_records: u64,
    bad_samples: Vec<BadRecord>,
}

impl ReadStats {
    /// A record could not be used: counted, the first few kept with their line number.
    fn bad_record(&mut self, line: u64, error: String) {
        self.bad_records += 1;
        if self.bad_samples.len() < BAD_SAMPLES {
            tracing::debug!(line, %error, "bad record in the events file, skipped");
            self.bad_samples.push(BadRecord { line, error });
        }
    }
}

/// Reads the events file and hands batches to every rule set.
struct EventReader {
    format: EventFileFormat,
    path: PathBuf,
    bar: ProgressBar,
}

/// A reader that counts the bytes it returned.
struct Counting<R> {
    inner: R,
    bytes: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

impl EventReader {
    fn run(self, file: File, sets: Vec<Sender<Batch>>) -> Result<ReadStats, BacktestError> {
        let mut input = BufReader::with_capacity(
            1 << 20,
            Counting {
                inner: file,
                bytes: 0,
            },
        );
        let mut stats = ReadStats::default();
        let mut batch = Vec::with_capacity(BATCH);
        let mut record = Vec::new();
        let mut line = 0u64;
        loop {
            line += 1;
            let next = match self.format {
                EventFileFormat::Jsonl => self.next_line(&mut input, &mut record),
                EventFileFormat::Pb => next_pb_record(&mut input, &mut record),
            };
            match next {
                Ok(Next::Record) => {}
                Ok(Next::Blank) => continue,
                Ok(Next::End) => break,
                Err(RecordError::Fatal(error)) => {
                    // The rest of a protobuf file cannot be framed: report where and stop.
                    stats.bad_record(line, format!("{error}; the rest of the file is skipped"));
                    break;
                }
                Err(RecordError::Io(source)) => {
                    return Err(BacktestError::Io {
                        path: self.path.clone(),
                        source,
                    })
                }
            }
            let wire = match self.format {
                EventFileFormat::Jsonl => InputFormat::Json,
                EventFileFormat::Pb => InputFormat::Protobuf,
            };
            match decode_event(&record, wire, DEFAULT_MAX_EVENT_BYTES) {
                Ok(event) => {
                    batch.push(event);
                    stats.events += 1;
                }
                Err(e) => stats.bad_record(line, e.to_string()),
            }
            if batch.len() == BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                if !send_all(&sets, full) {
                    return Ok(stats);
                }
                self.bar.set_position(input.get_ref().bytes);
                self.bar.set_message(format!("{} events", stats.events));
            }
        }
        if !batch.is_empty() {
            send_all(&sets, batch);
        }
        Ok(stats)
    }

    fn next_line(
        &self,
        input: &mut impl BufRead,
        record: &mut Vec<u8>,
    ) -> Result<Next, RecordError> {
        record.clear();
        if input.read_until(b'\n', record).map_err(RecordError::Io)? == 0 {
            return Ok(Next::End);
        }
        while record.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
            record.pop();
        }
        if record.iter().all(u8::is_ascii_whitespace) {
            return Ok(Next::Blank);
        }
        Ok(Next::Record)
    }
}

/// Sends a batch to every set; false when a set stopped (its error is reported by its thread).
fn send_all(sets: &[Sender<Batch>], batch: Vec<PaymentEvent>) -> bool {
    let batch = Arc::new(batch);
    sets.iter().all(|tx| tx.send(batch.clone()).is_ok())
}

enum Next {
    Record,
    Blank,
    End,
}

enum RecordError {
    /// The file cannot be read further.
    Fatal(String),
    Io(std::io::Error),
}

/// Reads one length-delimited protobuf record (varint length, then the bytes).
fn next_pb_record(input: &mut impl Read, record: &mut Vec<u8>) -> Result<Next, RecordError> {
    let mut len: u64 = 0;
    for i in 0..10 {
        let mut byte = [0u8];
        match input.read_exact(&mut byte) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                return if i == 0 {
                    Ok(Next::End)
                } else {
                    Err(RecordError::Fatal("truncated length prefix".into()))
                };
            }
            Err(e) => return Err(RecordError::Io(e)),
        }
        len |= u64::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            if len > MAX_RECORD_BYTES {
                return Err(RecordError::Fatal(format!(
                    "record length {len} exceeds {MAX_RECORD_BYTES} bytes"
                )));
            }
            record.clear();
            record.resize(len as usize, 0);
            return match input.read_exact(record) {
                Ok(()) => Ok(Next::Record),
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => Err(RecordError::Fatal(format!(
                    "truncated record: {len} bytes announced"
                ))),
                Err(e) => Err(RecordError::Io(e)),
            };
        }
    }
    Err(RecordError::Fatal(
        "length prefix longer than 10 bytes".into(),
    ))
}

/// One rule set replaying the events on its own tag store, with timers in event time.
struct SetRunner {
    engine: Engine,
    timers: Arc<EventTimeTimers>,
    name: &'static str,
    out: Option<(PathBuf, BufWriter<File>)>,
    channels: Option<(Receiver<Batch>, Sender<BatchResult>)>,
    /// Keeps the scratch store's directory until the run ends.
    _dir: tempfile::TempDir,
}

impl SetRunner {
    fn new(
        rules: Arc<RuleSet>,
        name: &'static str,
        out: Option<(PathBuf, BufWriter<File>)>,
    ) -> Result<SetRunner, BacktestError> {
        let dir = tempfile::tempdir().map_err(|source| BacktestError::Io {
            path: std::env::temp_dir(),
            source,
        })?;
        let store = TagStore::open(StoreConfig {
            data_dir: dir.path().to_path_buf(),
            ..StoreConfig::default()
        })?;
        let timers = Arc::new(EventTimeTimers::default());
        Ok(SetRunner {
            engine: Engine::new(rules, Arc::new(store), timers.clone()),
            timers,
            name,
            out,
            channels: None,
            _dir: dir,
        })
    }

    fn run(mut self) -> Result<(), BacktestError> {
        let Some((batches, results)) = self.channels.take() else {
            return Ok(());
        };
        while let Ok(batch) = batches.recv() {
            let mut result = BatchResult {
                decisions: Vec::with_capacity(batch.len()),
                timeouts: Vec::new(),
            };
            for event in batch.iter() {
                // Timers whose deadline passed fire before the event that reveals it.
                self.fire_due(event.event_time_ms, &mut result)?;
                let decision = self.engine.decide(event, event.event_time_ms).decision;
                self.write(&decision)?;
                result.decisions.push(decision);
            }
            if results.send(result).is_err() {
                return Ok(());
            }
        }
        // The end of the stream fires every remaining timer.
        let mut last = BatchResult {
            decisions: Vec::new(),
            timeouts: Vec::new(),
        };
        self.fire_due(i64::MAX, &mut last)?;
        let _ = results.send(last);
        if let Some((path, out)) = &mut self.out {
            out.flush().map_err(|source| BacktestError::Io {
                path: path.clone(),
                source,
            })?;
        }
        tracing::debug!(set = self.name, "replay finished");
        Ok(())
    }

    fn fire_due(&mut self, now_ms: i64, result: &mut BatchResult) -> Result<(), BacktestError> {
        for timer in self.timers.due(now_ms) {
            let decided_at = timer.deadline_ms;
            if let Some(decision) =
                self.engine
                    .timeout_decision(&timer.rule, timer.event_id, timer.txn_id, decided_at)
            {
                self.write(&decision)?;
                result.timeouts.push(decision);
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

/// One set's running totals.
#[derive(Default)]
struct SetTally {
    decisions: [u64; 4],
    timeouts: [u64; 4],
    hits: ahash::AHashMap<Arc<str>, u64>,
}

impl SetTally {
    fn add(&mut self, batch: &BatchResult) {
        for d in &batch.decisions {
            self.decisions[d.outcome as usize] += 1;
        }
        for d in &batch.timeouts {
            self.timeouts[d.outcome as usize] += 1;
        }
        for hit in batch
            .decisions
            .iter()
            .chain(&batch.timeouts)
            .flat_map(|d| &d.hits)
        {
            *self.hits.entry(hit.rule.clone()).or_default() += 1;
        }
    }

    fn report(&self, rules: &RuleSet) -> SetReport {
        let by_outcome = |counts: &[u64; 4]| {
            Outcome::ALL
                .iter()
                .map(|o| (o.name(), counts[*o as usize]))
                .collect()
        };
        SetReport {
            version: rules.version().to_string(),
            decisions: by_outcome(&self.decisions),
            timeout_decisions: by_outcome(&self.timeouts),
            rule_hits: self
                .hits
                .iter()
                .map(|(rule, n)| (rule.to_string(), *n))
                .collect(),
        }
    }
}

/// Event-by-event comparison of the two sets.
struct PairTally {
    matrix: [[u64; 4]; 4],
    samples: Vec<Vec<Vec<String>>>,
    keep: usize,
    hits_changed: u64,
}

impl PairTally {
    fn new(keep: usize) -> PairTally {
        PairTally {
            matrix: [[0; 4]; 4],
            samples: vec![vec![Vec::new(); 4]; 4],
            keep,
            hits_changed: 0,
        }
    }

    fn add(&mut self, baseline: &[Decision], new: &[Decision]) {
        for (b, n) in baseline.iter().zip(new) {
            let (i, j) = (b.outcome as usize, n.outcome as usize);
            self.matrix[i][j] += 1;
            if i != j {
                let samples = &mut self.samples[i][j];
                if samples.len() < self.keep {
                    samples.push(n.event_id.clone());
                }
            } else if !b
                .hits
                .iter()
                .map(|h| &h.rule)
                .eq(n.hits.iter().map(|h| &h.rule))
            {
                self.hits_changed += 1;
            }
        }
    }

    fn report(&self, baseline: &SetTally, new: &SetTally) -> Changes {
        let mut transitions = Vec::new();
        let mut matrix = BTreeMap::new();
        for from in Outcome::ALL {
            let row: &mut BTreeMap<&'static str, u64> = matrix.entry(from.name()).or_default();
            for to in Outcome::ALL {
                let events = self.matrix[from as usize][to as usize];
                row.insert(to.name(), events);
                if from != to && events > 0 {
                    transitions.push(Transition {
                        from: from.name(),
                        to: to.name(),
                        events,
                        sample_event_ids: self.samples[from as usize][to as usize].clone(),
                    });
                }
            }
        }
        transitions.sort_by_key(|t| std::cmp::Reverse(t.events));
        let rules: std::collections::BTreeSet<&Arc<str>> =
            baseline.hits.keys().chain(new.hits.keys()).collect();
        let mut rule_hit_deltas: Vec<RuleDelta> = rules
            .into_iter()
            .filter_map(|rule| {
                let b = baseline.hits.get(rule).copied().unwrap_or(0);
                let n = new.hits.get(rule).copied().unwrap_or(0);
                (b != n).then(|| RuleDelta {
                    rule: rule.to_string(),
                    baseline: b,
                    new: n,
                    delta: n as i64 - b as i64,
                })
            })
            .collect();
        rule_hit_deltas.sort_by(|a, b| {
            b.delta
                .unsigned_abs()
                .cmp(&a.delta.unsigned_abs())
                .then_with(|| a.rule.cmp(&b.rule))
        });
        Changes {
            changed_events: transitions.iter().map(|t| t.events).sum(),
            hits_changed_events: self.hits_changed,
            matrix,
            transitions,
            rule_hit_deltas,
        }
    }
}

/// The summary printed to stdout.
pub fn render_human(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "backtest: {} events from {} in {:.2} s ({:.0} events/s); {} bad records",
        report.events,
        report.events_file,
        report.seconds,
        report.events_per_second,
        report.bad_records
    );
    let _ = writeln!(
        s,
        "{:<28} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "set", "allow", "review", "challenge", "block", "timeouts"
    );
    let mut row = |label: &str, set: &SetReport| {
        let count = |o: Outcome| set.decisions.get(o.name()).copied().unwrap_or(0);
        let timeouts: u64 = set.timeout_decisions.values().sum();
        let _ = writeln!(
            s,
            "{:<28} {:>10} {:>10} {:>10} {:>10} {:>10}",
            format!("{label} {}", set.version),
            count(Outcome::Allow),
            count(Outcome::Review),
            count(Outcome::Challenge),
            count(Outcome::Block),
            timeouts
        );
    };
    if let Some(baseline) = &report.baseline {
        row("baseline", baseline);
    }
    row("new", &report.new);
    if let Some(changes) = &report.changes {
        let _ = writeln!(
            s,
            "outcome changed on {} events ({} more kept the outcome with different hits)",
            changes.changed_events, changes.hits_changed_events
        );
        for t in &changes.transitions {
            let _ = writeln!(
                s,
                "  {:>9} -> {:<9} {:>10}  e.g. {}",
                t.from,
                t.to,
                t.events,
                t.sample_event_ids.join(", ")
            );
        }
        if !changes.rule_hit_deltas.is_empty() {
            let _ = writeln!(s, "rule hits (baseline -> new):");
        }
        for d in &changes.rule_hit_deltas {
            let _ = writeln!(
                s,
                "  {:<32} {:>10} -> {:<10} ({:+})",
                d.rule, d.baseline, d.new, d.delta
            );
        }
    }
    for bad in &report.bad_record_samples {
        let _ = writeln!(s, "bad record at line {}: {}", bad.line, bad.error);
    }
    if report.bad_records > report.bad_record_samples.len() as u64 {
        let _ = writeln!(
            s,
            "... and {} more bad records",
            report.bad_records - report.bad_record_samples.len() as u64
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{decode_decision, encode_event, Trigger};

    const BASELINE: &str = r#"version "base-1"
feature card_auths = count() by card_id over 10m
rule velocity when card_auths > 2 then review
rule big when amount > 1000 then block
"#;

    const NEW: &str = r#"version "new-1"
feature card_auths = count() by card_id over 10m
rule velocity when card_auths > 1 then review
rule big when amount > 500 then block
rule no_capture after type == "authorization" expect type == "capture" with same txn_id within 2s then challenge
"#;

    fn event_line(id: &str, card: &str, at_s: i64, amount: &str, txn: Option<&str>) -> String {
        let txn = txn.map_or(String::new(), |t| format!(r#","txn_id":"{t}""#));
        format!(
            r#"{{"event_id":"{id}","type":"authorization","event_time_ms":{},"card_id":"{card}","amount":"{amount}","currency":"EUR"{txn}}}"#,
            1_767_225_600_000 + at_s * 1000
        )
    }

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::write(dir.path().join("base.veto"), BASELINE).expect("write");
            std::fs::write(dir.path().join("new.veto"), NEW).expect("write");
            Fixture { dir }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn options(&self, events: &str) -> BacktestOptions {
            BacktestOptions {
                rules: vec![self.path("new.veto")],
                baseline: vec![self.path("base.veto")],
                events: self.path(events),
                format: None,
                decisions_out: Some(self.path("decisions.jsonl")),
                samples: 5,
                progress: false,
            }
        }
    }

    fn crafted_lines() -> Vec<String> {
        vec![
            event_line("e1", "c1", 0, "100.00", Some("t1")),
            event_line("e2", "c1", 1, "700.00", None),
            event_line("e3", "c1", 2, "50.00", None),
            event_line("e4", "c2", 3, "2000.00", None),
            "{not json".to_string(),
            event_line("e5", "c2", 4, "600.00", None),
            String::new(),
            event_line("e6", "c3", 5, "10.00", None),
        ]
    }

    #[test]
    fn crafted_events_give_the_exact_expected_diff() {
        let fx = Fixture::new();
        std::fs::write(fx.path("events.jsonl"), crafted_lines().join("\n")).expect("write");
        let report = backtest(&fx.options("events.jsonl")).expect("backtest");

        assert_eq!(report.events, 6);
        assert_eq!(report.bad_records, 1);
        assert_eq!(report.bad_record_samples[0].line, 5);
        let base = report.baseline.as_ref().expect("baseline");
        assert_eq!(base.version, "base-1");
        assert_eq!(report.new.version, "new-1");
        let counts = |s: &SetReport| -> Vec<u64> {
            ["allow", "review", "challenge", "block"]
                .iter()
                .map(|o| s.decisions[o])
                .collect()
        };
        assert_eq!(counts(base), [4, 1, 0, 1]);
        assert_eq!(counts(&report.new), [2, 1, 0, 3]);
        assert_eq!(report.new.timeout_decisions["challenge"], 1);
        assert_eq!(base.timeout_decisions.values().sum::<u64>(), 0);

        let changes = report.changes.as_ref().expect("changes");
        assert_eq!(changes.changed_events, 2);
        assert_eq!(changes.hits_changed_events, 0);
        assert_eq!(
            changes.transitions,
            [Transition {
                from: "allow",
                to: "block",
                events: 2,
                sample_event_ids: vec!["e2".into(), "e5".into()],
            }]
        );
        assert_eq!(changes.matrix["allow"]["allow"], 2);
        assert_eq!(changes.matrix["review"]["review"], 1);
        assert_eq!(changes.matrix["block"]["block"], 1);
        let deltas: Vec<(&str, u64, u64, i64)> = changes
            .rule_hit_deltas
            .iter()
            .map(|d| (d.rule.as_str(), d.baseline, d.new, d.delta))
            .collect();
        assert_eq!(
            deltas,
            [
                ("big", 1, 3, 2),
                ("velocity", 1, 3, 2),
                ("no_capture", 0, 1, 1)
            ]
        );

        // Every decision of the new set, the timeout where it fired in event time (before e3).
        let written = std::fs::read_to_string(fx.path("decisions.jsonl")).expect("read");
        let decisions: Vec<Decision> = written
            .lines()
            .map(|l| decode_decision(l.as_bytes(), InputFormat::Json).expect("decision"))
            .collect();
        let order: Vec<(&str, Trigger)> = decisions
            .iter()
            .map(|d| (d.event_id.as_str(), d.trigger))
            .collect();
        assert_eq!(
            order,
            [
                ("e1", Trigger::Event),
                ("e2", Trigger::Event),
                ("e1", Trigger::Timeout),
                ("e3", Trigger::Event),
                ("e4", Trigger::Event),
                ("e5", Trigger::Event),
                ("e6", Trigger::Event),
            ]
        );
        assert!(decisions.iter().all(|d| &*d.ruleset_version == "new-1"));
        assert!(render_human(&report).contains("bad record at line 5"));
    }

    #[test]
    fn protobuf_files_replay_like_json_and_bad_records_are_numbered() {
        let fx = Fixture::new();
        let mut pb = Vec::new();
        let mut record = 0;
        for line in crafted_lines() {
            if line.is_empty() {
                continue;
            }
            record += 1;
            let bytes = match decode_event(line.as_bytes(), InputFormat::Json, 1 << 16) {
                Ok(event) => encode_event(&event, OutputFormat::Protobuf),
                Err(_) => b"\xff\xff garbage".to_vec(),
            };
            prost::encoding::encode_varint(bytes.len() as u64, &mut pb);
            pb.extend_from_slice(&bytes);
        }
        assert_eq!(record, 7);
        // A truncated last record: announced 50 bytes, 3 present.
        pb.extend_from_slice(&[50, 1, 2, 3]);
        std::fs::write(fx.path("events.pb"), &pb).expect("write");
        let mut options = fx.options("events.pb");
        options.decisions_out = None;
        let report = backtest(&options).expect("backtest");
        assert_eq!(report.events, 6);
        assert_eq!(report.bad_records, 2);
        assert_eq!(report.bad_record_samples[0].line, 5);
        assert_eq!(report.bad_record_samples[1].line, 8);
        assert!(report.bad_record_samples[1].error.contains("truncated"));
        let changes = report.changes.expect("changes");
        assert_eq!(changes.changed_events, 2);
    }

    #[test]
    fn a_missing_file_and_a_bad_rule_file_are_errors_not_panics() {
        let fx = Fixture::new();
        let err = backtest(&fx.options("absent.jsonl")).expect_err("missing file");
        assert!(err.to_string().contains("absent.jsonl"), "{err}");
        std::fs::write(fx.path("x.txt"), "").expect("write");
        let err = backtest(&fx.options("x.txt")).expect_err("unknown extension");
        assert!(matches!(err, BacktestError::UnknownFormat(_)), "{err}");
        std::fs::write(fx.path("new.veto"), "rule broken when then block\n").expect("write");
        std::fs::write(fx.path("e.jsonl"), "").expect("write");
        let err = backtest(&fx.options("e.jsonl")).expect_err("bad rules");
        assert!(
            err.to_string().starts_with("--rules rule files rejected"),
            "{err}"
        );
    }
}
