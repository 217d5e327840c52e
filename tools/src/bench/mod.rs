//! `veto-bench`: runs a named scenario and writes `report.json` plus PNG plots into a folder.
//!
//! | scenario | what it measures |
//! |----------|------------------|
//! | `core`   | engine evaluation + state updates in-process on 1, 2, all cores (events/s, scaling, instructions/event, ZEN ratio) |
//! | `e2e`    | Kafka end-to-end throughput and latency of `veto run` beside a no-rules passthrough |
//! | `timers` | timer lateness and drift of the timer service beside a tokio interval, cores busy |
//! | `swap`   | event latency around hot swaps of a 1,000-rule set vs without, signal-to-live time |
//! | `spill`  | throughput and RSS as entities grow past the memory budget (RocksDB on disk) |

pub mod allocs;
pub mod badinput;
pub mod broker;
pub mod core;
pub mod cpu;
pub mod digest;
pub mod e2e;
pub mod garbage;
pub mod heap;
pub mod instructions;
pub mod kafka;
pub mod machine;
pub mod passthrough;
pub mod plot;
pub mod reference;
pub mod report;
pub mod spill;
pub mod stats;
pub mod swap;
pub mod timers;
#[cfg(feature = "zen")]
pub mod zen;

use std::path::PathBuf;

/// Command line of `veto-bench`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "veto-bench",
    version,
    about = "Benchmark scenarios for Veto: report.json + PNG plots"
)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// The named scenarios.
#[derive(Debug, clap::Subcommand)]
pub enum Scenario {
    /// Engine evaluation + state updates in-process on 1, 2 and all cores.
    Core(core::CoreArgs),
    /// End-to-end through a real Kafka-protocol broker, beside a no-rules passthrough.
    E2e(e2e::E2eArgs),
    /// Timer lateness distribution and drift vs a tokio interval.
    Timers(timers::TimersArgs),
    /// Latency around hot swaps of the rule set, and signal-to-live time.
    Swap(swap::SwapArgs),
    /// Throughput and RSS as the entity count grows past the memory budget.
    Spill(spill::SpillArgs),
}

/// Errors of the benchmark harness.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plot {path}: {message}")]
    Plot { path: PathBuf, message: String },
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("broker: {0}")]
    Broker(String),
    #[error("veto process: {0}")]
    Veto(String),
    #[error("{0}")]
    Invalid(String),
    #[error("timed out: {0}")]
    Timeout(String),
}

/// Runs the chosen scenario; returns the path of the written report.
pub fn run(args: BenchArgs) -> Result<PathBuf, BenchError> {
    match args.scenario {
        Scenario::Core(a) => core::run(&a),
        Scenario::E2e(a) => e2e::run(&a),
        Scenario::Timers(a) => timers::run(&a),
        Scenario::Swap(a) => swap::run(&a),
        Scenario::Spill(a) => spill::run(&a),
    }
}
