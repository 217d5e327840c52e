//! Command-line interface: the `veto` subcommands and their flags (clap), dispatched to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::telemetry::{LogChoice, LogFormat};

/// Veto: a real-time risk-control rule engine for payments.
#[derive(Debug, Parser)]
#[command(name = "veto", version, about, long_about = None)]
pub struct Cli {
    /// Log output format.
    #[arg(long, global = true, value_enum, env = "VETO_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log level filter, e.g. `info` or `veto=debug` (RUST_LOG wins when set).
    #[arg(long, global = true, env = "VETO_LOG_LEVEL")]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: consume payments from Kafka, publish decisions.
    ///
    /// Signals: SIGUSR1 reloads the rule files (abandoned past `rules.swap_deadline`, the
    /// running set kept); SIGUSR2 rolls back to the rule set the last swap replaced;
    /// SIGTERM/SIGINT drain in-flight events, checkpoint and exit.
    Run(RunArgs),
    /// Run everything on an embedded broker with synthetic payments and a live summary.
    Demo(DemoArgs),
    /// Check rule files: exit 0 with a summary, 1 with diagnostics.
    Check(CheckArgs),
    /// Run the in-file `test` blocks of rule files.
    Test(TestArgs),
    /// Replay recorded events through a candidate rule set (and a baseline) and report the changes.
    Backtest(BacktestArgs),
    /// Explain one event's decision: feature values, tags read, each rule's deciding
    /// condition parts, score and thresholds (the events before it replayed for real state).
    Explain(ExplainArgs),
}

/// Flags of `veto run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Configuration file (TOML); environment variables `VETO_SECTION__KEY` override it.
    #[arg(long, short, env = "VETO_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Flags of `veto demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Rule files or directories.
    #[arg(long, default_value = "rules/payments.veto")]
    pub rules: Vec<PathBuf>,
    /// New payment flows per second produced by the synthetic generator.
    #[arg(long, default_value_t = 2_000.0)]
    pub rate: f64,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Address for /metrics, /healthz, /readyz.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub listen: std::net::SocketAddr,
}

/// Flags of `veto check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Rule files or directories of `*.veto` files.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Output format of diagnostics.
    #[arg(long, value_enum, default_value = "human")]
    pub format: DiagFormat,
}

/// Diagnostics output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DiagFormat {
    Human,
    Json,
}

/// Flags of `veto test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// Rule files or directories of `*.veto` files.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// Flags of `veto backtest`.
#[derive(Debug, Args)]
pub struct BacktestArgs {
    /// The candidate rule files or directories.
    #[arg(long, required = true, num_args = 1..)]
    pub rules: Vec<PathBuf>,
    /// Rule files or directories to compare against (e.g. the live set).
    #[arg(long, num_args = 1..)]
    pub baseline: Vec<PathBuf>,
    /// Recorded events: `.jsonl` (one JSON event a line, optionally after its record key and a
    /// tab), `.pb` (length-delimited protobuf) or `.kcat` (a topic dump written by
    /// `kcat -C -t payments -e -f '%S %s\n'`).
    #[arg(long)]
    pub events: PathBuf,
    /// Encoding of the events file (default: by its extension).
    #[arg(long, value_enum)]
    pub format: Option<crate::backtest::EventFileFormat>,
    /// Write every decision of the candidate set here, as JSON lines (the Kafka decision's JSON).
    #[arg(long)]
    pub decisions_out: Option<PathBuf>,
    /// Write the JSON report here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the JSON report to stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Sample event ids kept per outcome change.
    #[arg(long, default_value_t = 5)]
    pub samples: usize,
    /// No progress bar (it is never drawn when stderr is not a terminal).
    #[arg(long, alias = "no-progress")]
    pub quiet: bool,
    /// Ground truth joined onto the decisions: `.jsonl` or `.csv` with `event_id` or `txn_id`,
    /// `label` (fraud or legit), optional `amount_minor`, `currency`, `reported_at_ms`. Adds
    /// fraud caught, legit hurt, precision and recall per set and per rule, and score sweeps.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Distance between the thresholds of a score sweep (`decide ... when score >= N`): N and
    /// up to three steps either side. 0 sweeps the current threshold only.
    #[arg(long, default_value_t = 10)]
    pub sweep_step: u32,
    /// External tag updates to replay, as the `entity-tags` topic delivered them: `.jsonl`,
    /// one `TagUpdate` JSON object a line plus `event_time_ms`, applied before the first event
    /// at or after that time.
    #[arg(long)]
    pub tags: Option<PathBuf>,
    /// Partitions of the entities whose features are counted in parallel, each on its own
    /// core (0: the cores left after one per rule set, at least 1). Decisions do not depend
    /// on it.
    #[arg(long, default_value_t = 0)]
    pub partitions: usize,
}

/// Flags of `veto explain`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["event_id", "event"])))]
pub struct ExplainArgs {
    /// The rule files or directories.
    #[arg(long, required = true, num_args = 1..)]
    pub rules: Vec<PathBuf>,
    /// Recorded events (`.jsonl`, `.pb` or `.kcat`, as `veto backtest` reads them): replayed
    /// before the event, so features and tags hold the state it met.
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// Encoding of the events file (default: by its extension).
    #[arg(long, value_enum)]
    pub events_format: Option<crate::backtest::EventFileFormat>,
    /// Explain the first event of `--events` with this `event_id` (the events before it are
    /// replayed).
    #[arg(long, requires = "events")]
    pub event_id: Option<String>,
    /// Explain this event, given as JSON (`docs/wire-format.md`); it is decided after every
    /// event of `--events`, if given.
    #[arg(long)]
    pub event: Option<String>,
    /// External tag updates to replay (`veto backtest --tags` format).
    #[arg(long)]
    pub tags: Option<PathBuf>,
    /// Output: `human` (the deciding parts of each rule) or `json` (every part of every
    /// condition, for tools).
    #[arg(long, value_enum, default_value = "human")]
    pub format: DiagFormat,
}

/// Runs a parsed command line and returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    let log = LogChoice {
        format: cli.log_format,
        level: cli.log_level,
    };
    // `veto run` starts logging once its config is read: the config's `[telemetry]` log keys
    // apply there, below these flags.
    if !matches!(cli.command, Command::Run(_)) {
        log.init(LogFormat::default(), "info");
    }
    let code = match cli.command {
        Command::Check(args) => {
            crate::rules::run_check(&args.paths, args.format == DiagFormat::Json)
        }
        Command::Test(args) => crate::ruletest::run_tests(&args.paths),
        Command::Backtest(args) => {
            let opts = crate::backtest::BacktestOptions {
                rules: args.rules,
                baseline: args.baseline,
                events: args.events,
                format: args.format,
                decisions_out: args.decisions_out,
                samples: args.samples,
                progress: !args.quiet,
                labels: args.labels,
                sweep_step: args.sweep_step,
                tags: args.tags,
                partitions: args.partitions,
            };
            crate::backtest::run_backtest(&opts, args.out.as_deref(), args.json)
        }
        Command::Explain(args) => {
            let opts = crate::explain::ExplainOptions {
                rules: args.rules,
                events: args.events,
                format: args.events_format,
                event_id: args.event_id,
                event: args.event,
                tags: args.tags,
            };
            crate::explain::run_explain(&opts, args.format == DiagFormat::Json)
        }
        Command::Run(args) => report(crate::service::run_service(args.config.as_deref(), &log)),
        Command::Demo(args) => report(crate::demo::run_demo(args)),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn report(result: anyhow::Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            1
        }
    }
}
