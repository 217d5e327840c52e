//! Scenario `core`: engine evaluation + state updates in-process on 1, 2 and all cores (events/s,
//! scaling efficiency), optionally instructions per event and a ZEN decision-table comparison.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use veto::event::{Outcome, PaymentEvent};
use veto::synth::{Synth, SynthConfig};

use super::instructions::{self, Counter};
use super::machine::MachineInfo;
use super::plot::{self, Chart, Series};
use super::report::{now_rfc3339, Report};
use super::stats::{LatencySummary, PERCENTILES};
use super::BenchError;

/// Defaults of `veto-bench core`, also used when `e2e` measures the engine alone.
pub const EVENTS_PER_THREAD: usize = 200_000;
pub const WARMUP_EVENTS: usize = 20_000;
pub const LATENCY_SAMPLE_EVERY: usize = 64;
pub const USERS: u64 = 100_000;
pub const SEED: u64 = 42;
pub const INSTRUCTIONS_EVENTS: usize = 20_000;

/// Arguments of `veto-bench core`.
#[derive(Debug, Clone, clap::Args)]
pub struct CoreArgs {
    /// Output folder for report.json and the plots.
    #[arg(long, default_value = "bench-out/core")]
    pub out: PathBuf,
    /// Rule file(s) the engine runs.
    #[arg(long, default_value = "rules/payments.veto")]
    pub rules: PathBuf,
    /// Thread counts to measure, comma-separated; default 1, 2 and all cores.
    #[arg(long, value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Events each thread processes per measurement.
    #[arg(long, default_value_t = EVENTS_PER_THREAD)]
    pub events_per_thread: usize,
    /// Events each thread processes first, unmeasured, to warm caches and windows.
    #[arg(long, default_value_t = WARMUP_EVENTS)]
    pub warmup_events: usize,
    /// Distinct users per thread's stream.
    #[arg(long, default_value_t = USERS)]
    pub users: u64,
    /// Seed of the synthetic streams (thread i uses seed + i).
    #[arg(long, default_value_t = SEED)]
    pub seed: u64,
    /// Time one event in every N individually for the latency percentiles.
    #[arg(long, default_value_t = LATENCY_SAMPLE_EVERY)]
    pub latency_sample_every: usize,
    /// Also count instructions per decided event (perf stat, else valgrind's callgrind): the
    /// harness re-runs itself on one thread at N and 2N events after the same warmup.
    #[arg(long)]
    pub instructions: bool,
    /// N of `--instructions`.
    #[arg(long, default_value_t = INSTRUCTIONS_EVENTS)]
    pub instructions_events: usize,
    /// Counter of `--instructions`.
    #[arg(long, value_enum, default_value_t = Counter::Auto)]
    pub instructions_counter: Counter,
    /// Internal: decide warmup + N events on one thread and exit (the counted child).
    #[arg(long, hide = true)]
    pub instructions_child: Option<usize>,
    /// Internal: with `--instructions-child`, build everything but decide nothing.
    #[arg(long, hide = true)]
    pub instructions_baseline: bool,
    /// JDM decision table for the ZEN comparison (veto-bench built with feature `zen`).
    #[arg(long, default_value = "tools/zen/payments-table.json")]
    pub zen_table: PathBuf,
}

impl CoreArgs {
    /// The command-line defaults with `out` and `rules`.
    pub fn with_defaults(out: PathBuf, rules: PathBuf) -> CoreArgs {
        CoreArgs {
            out,
            rules,
            threads: Vec::new(),
            events_per_thread: EVENTS_PER_THREAD,
            warmup_events: WARMUP_EVENTS,
            users: USERS,
            seed: SEED,
            latency_sample_every: LATENCY_SAMPLE_EVERY,
            instructions: false,
            instructions_events: INSTRUCTIONS_EVENTS,
            instructions_counter: Counter::Auto,
            instructions_child: None,
            instructions_baseline: false,
            zen_table: PathBuf::from("tools/zen/payments-table.json"),
        }
    }
}

/// What the core scenario drives: one engine shared by every thread.
pub trait CoreEngine: Send + Sync {
    /// Updates the state with `event` and evaluates the rule set on it.
    fn decide(&self, event: &PaymentEvent) -> Outcome;
}

/// `veto::decider::Engine` on a scratch tag store and event-time timers, fresh (empty state).
pub struct ScratchEngine {
    pub engine: veto::decider::Engine,
    /// The timers the engine arms; `due` drains them.
    pub timers: Arc<veto::decider::EventTimeTimers>,
    /// Keeps the scratch store directory alive as long as the engine.
    _store_dir: tempfile::TempDir,
}

thread_local! {
    /// Each thread's decision buffers, reused from event to event as a pipeline worker does.
    static DECIDED: std::cell::RefCell<veto::decider::Decided> = Default::default();
}

impl CoreEngine for ScratchEngine {
    fn decide(&self, event: &PaymentEvent) -> Outcome {
        DECIDED.with_borrow_mut(|out| {
            self.engine.decide_reusing(event, event.event_time_ms, out);
            out.decision.outcome
        })
    }
}

/// Builds the engine for `rules` with empty state.
pub fn scratch_engine(rules: &Path) -> Result<ScratchEngine, BenchError> {
    let timers = Arc::new(veto::decider::EventTimeTimers::default());
    let (engine, store_dir) = engine_with_timers(rules, timers.clone())?;
    Ok(ScratchEngine {
        engine,
        timers,
        _store_dir: store_dir,
    })
}

/// The engine for `rules` with empty state on a scratch tag store (kept while the directory
/// lives), arming `timers`.
pub fn engine_with_timers(
    rules: &Path,
    timers: Arc<dyn veto::decider::TimerSink>,
) -> Result<(veto::decider::Engine, tempfile::TempDir), BenchError> {
    let limit = veto::store::StoreConfig::default().distinct_exact_limit;
    engine_with_store(rules, timers, limit)
}

/// [`engine_with_timers`] with `store.distinct_exact_limit` set: a `distinct` window turns
/// into a sketch past that many live items.
pub fn engine_with_store(
    rules: &Path,
    timers: Arc<dyn veto::decider::TimerSink>,
    distinct_exact_limit: usize,
) -> Result<(veto::decider::Engine, tempfile::TempDir), BenchError> {
    let report = veto::rules::load(&[rules.to_path_buf()]);
    let rendered = report.render_human(false);
    let has_errors = report.has_errors();
    let Some(rule_set) = report.ruleset.filter(|_| !has_errors) else {
        return Err(BenchError::Invalid(format!(
            "{}: rules rejected:\n{rendered}",
            rules.display()
        )));
    };
    let store_dir = tempfile::tempdir().map_err(|source| BenchError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let store = veto::store::TagStore::open(veto::store::StoreConfig {
        data_dir: store_dir.path().to_path_buf(),
        distinct_exact_limit,
        ..veto::store::StoreConfig::default()
    })
    .map_err(|e| BenchError::Invalid(format!("scratch tag store: {e}")))?;
    let engine = veto::decider::Engine::new(Arc::new(rule_set), Arc::new(store), timers);
    Ok((engine, store_dir))
}

/// Builds the engine for `rules`, fresh (empty state) for each measurement.
pub fn load_engine(rules: &Path) -> Result<Arc<dyn CoreEngine>, BenchError> {
    Ok(Arc::new(scratch_engine(rules)?))
}

/// One thread count's measurement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CoreResult {
    pub threads: usize,
    pub events: u64,
    pub seconds: f64,
    pub events_per_sec: f64,
    pub events_per_sec_per_core: f64,
    /// events/s at n threads / (n × events/s at 1 thread), when 1 thread was measured.
    pub scaling_efficiency: Option<f64>,
    pub outcomes: std::collections::BTreeMap<String, u64>,
    /// Per-event engine latency of sampled events.
    pub latency: Option<LatencySummary>,
}

struct ThreadRun {
    elapsed: Duration,
    samples: Vec<u64>,
    outcomes: [u64; 4],
}

fn outcome_index(o: Outcome) -> usize {
    match o {
        Outcome::Allow => 0,
        Outcome::Review => 1,
        Outcome::Challenge => 2,
        Outcome::Block => 3,
    }
}

/// Measures `engine` on `threads` threads, each with its own pre-generated stream.
pub fn measure(
    engine: Arc<dyn CoreEngine>,
    threads: usize,
    args: &CoreArgs,
) -> Result<CoreResult, BenchError> {
    let streams: Vec<Vec<PaymentEvent>> = (0..threads)
        .map(|i| {
            Synth::new(SynthConfig {
                seed: args.seed + i as u64,
                users: args.users,
                ..SynthConfig::default()
            })
            .take(args.warmup_events + args.events_per_thread)
            .collect()
        })
        .collect();
    let barrier = Arc::new(Barrier::new(threads));
    let every = args.latency_sample_every.max(1);
    let warmup = args.warmup_events;
    let handles: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, events)| {
            let (engine, barrier) = (Arc::clone(&engine), Arc::clone(&barrier));
            std::thread::Builder::new()
                .name(format!("core-{i}"))
                .spawn(move || {
                    let mut outcomes = [0u64; 4];
                    for event in &events[..warmup] {
                        std::hint::black_box(engine.decide(event));
                    }
                    let measured = &events[warmup..];
                    let mut samples = Vec::with_capacity(measured.len() / every + 1);
                    barrier.wait();
                    let start = Instant::now();
                    for (n, event) in measured.iter().enumerate() {
                        let outcome = if n % every == 0 {
                            let t = Instant::now();
                            let o = engine.decide(event);
                            samples.push(t.elapsed().as_nanos() as u64);
                            o
                        } else {
                            engine.decide(event)
                        };
                        outcomes[outcome_index(outcome)] += 1;
                    }
                    ThreadRun {
                        elapsed: start.elapsed(),
                        samples,
                        outcomes,
                    }
                })
                .map_err(|e| BenchError::Invalid(format!("spawn core thread: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let mut runs = Vec::with_capacity(threads);
    for h in handles {
        runs.push(
            h.join()
                .map_err(|_| BenchError::Invalid("core thread panicked".into()))?,
        );
    }
    let seconds = runs
        .iter()
        .map(|r| r.elapsed.as_secs_f64())
        .fold(0.0, f64::max);
    let events = (threads * args.events_per_thread) as u64;
    let mut samples: Vec<u64> = runs
        .iter()
        .flat_map(|r| r.samples.iter().copied())
        .collect();
    let mut outcomes = std::collections::BTreeMap::new();
    for o in Outcome::ALL {
        let n: u64 = runs.iter().map(|r| r.outcomes[outcome_index(o)]).sum();
        outcomes.insert(o.name().to_string(), n);
    }
    let events_per_sec = if seconds > 0.0 {
        events as f64 / seconds
    } else {
        0.0
    };
    Ok(CoreResult {
        threads,
        events,
        seconds,
        events_per_sec,
        events_per_sec_per_core: events_per_sec / threads as f64,
        scaling_efficiency: None,
        outcomes,
        latency: LatencySummary::from_nanos(&mut samples),
    })
}

fn plots(out: &Path, results: &[CoreResult]) -> Result<Vec<String>, BenchError> {
    let throughput = "throughput_vs_threads.png";
    plot::draw(
        &out.join(throughput),
        &Chart {
            title: "Engine core throughput (evaluation + state updates)",
            x_label: "threads",
            y_label: "events/s",
            series: vec![
                Series {
                    name: "events/s".into(),
                    points: results
                        .iter()
                        .map(|r| (r.threads as f64, r.events_per_sec))
                        .collect(),
                },
                Series {
                    name: "events/s per core".into(),
                    points: results
                        .iter()
                        .map(|r| (r.threads as f64, r.events_per_sec_per_core))
                        .collect(),
                },
            ],
            log_y: false,
            markers: Default::default(),
        },
    )?;
    let latency = "latency_vs_threads.png";
    plot::draw(
        &out.join(latency),
        &Chart {
            title: "Engine latency per event",
            x_label: "threads",
            y_label: "latency (µs, log)",
            series: PERCENTILES
                .iter()
                .enumerate()
                .map(|(i, (name, _))| Series {
                    name: (*name).to_string(),
                    points: results
                        .iter()
                        .filter_map(|r| r.latency.map(|l| (r.threads as f64, l.by_index(i))))
                        .collect(),
                })
                .collect(),
            log_y: true,
            markers: Default::default(),
        },
    )?;
    Ok(vec![throughput.into(), latency.into()])
}

/// Runs the scenario with the engine from [`load_engine`] and writes the report.
pub fn run(args: &CoreArgs) -> Result<PathBuf, BenchError> {
    if let Some(events) = args.instructions_child {
        instructions::child(args, events, args.instructions_baseline)?;
        return Ok(args.out.clone());
    }
    run_with(args, true, || load_engine(&args.rules))
}

/// Events whose allocations are counted (after the warmup), per wire format.
const ALLOCATION_EVENTS: usize = 50_000;

/// The thread counts measured by default: 1, 2 and all cores.
fn default_threads(cores: usize) -> Vec<usize> {
    let mut t = vec![1, 2.min(cores.max(1)), cores.max(1)];
    t.dedup();
    t
}

/// Runs the scenario with engines from `make_engine` (one fresh engine per thread count); with
/// `count_allocations`, also counts the allocations of the real engine for `args.rules`.
pub fn run_with(
    args: &CoreArgs,
    count_allocations: bool,
    make_engine: impl Fn() -> Result<Arc<dyn CoreEngine>, BenchError>,
) -> Result<PathBuf, BenchError> {
    let started = Instant::now();
    let started_at = now_rfc3339();
    let machine = MachineInfo::collect();
    let threads: Vec<usize> = if args.threads.is_empty() {
        default_threads(machine.cores)
    } else {
        args.threads.clone()
    };
    if threads.contains(&0) || args.events_per_thread == 0 {
        return Err(BenchError::Invalid(
            "--threads and --events-per-thread must be positive".into(),
        ));
    }
    let mut results: Vec<CoreResult> = Vec::new();
    for &t in &threads {
        let mut result = measure(make_engine()?, t, args)?;
        let one = results
            .iter()
            .find(|r| r.threads == 1)
            .map(|r| r.events_per_sec);
        let one = one.or((t == 1).then_some(result.events_per_sec));
        result.scaling_efficiency = one
            .filter(|&e1| e1 > 0.0)
            .map(|e1| result.events_per_sec / (t as f64 * e1));
        eprintln!(
            "core: {t} thread(s): {:.0} events/s, {:.0} events/s/core, scaling efficiency {}, \
             p99 {:.1} µs",
            result.events_per_sec,
            result.events_per_sec_per_core,
            result
                .scaling_efficiency
                .map_or("n/a".to_string(), |e| format!("{e:.2}")),
            result.latency.map(|l| l.p99_us).unwrap_or(f64::NAN)
        );
        results.push(result);
    }
    std::fs::create_dir_all(&args.out).map_err(|source| BenchError::Io {
        path: args.out.clone(),
        source,
    })?;
    let instructions = if args.instructions {
        let r = instructions::measure(args, &args.out)?;
        eprintln!(
            "core: instructions/event ({:?}): {:.0} per decided event, marginal {:.0} \
             (ΔIr/ΔN between {} and {} events after {} warmup)",
            r.counter,
            r.per_event,
            r.marginal_per_event,
            r.runs[0].events,
            r.runs[1].events,
            r.warmup_events
        );
        Some(r)
    } else {
        None
    };
    let allocations = if count_allocations {
        Some(super::allocs::measure(
            &args.rules,
            args.seed,
            args.users,
            args.warmup_events,
            args.events_per_thread.min(ALLOCATION_EVENTS),
        )?)
    } else {
        None
    };
    for (name, p) in allocations
        .iter()
        .flat_map(|a| [("protobuf", a.protobuf), ("JSON", a.json)])
    {
        eprintln!(
            "core: allocations per decided event, {name} path: {:.2} (decode {:.2}, decide {:.2}, \
             encode {:.2})",
            p.total, p.decode, p.decide, p.encode
        );
    }
    let veto_one_thread = results
        .iter()
        .find(|r| r.threads == 1)
        .map(|r| r.events_per_sec);
    let zen = zen_comparison(args, veto_one_thread)?;
    let plots = plots(&args.out, &results)?;
    let report = Report {
        scenario: "core".into(),
        started_at,
        duration_seconds: started.elapsed().as_secs_f64(),
        machine,
        params: serde_json::json!({
            "rules": args.rules,
            "threads": threads,
            "events_per_thread": args.events_per_thread,
            "warmup_events": args.warmup_events,
            "users": args.users,
            "seed": args.seed,
            "latency_sample_every": args.latency_sample_every,
            "instructions": args.instructions,
            "instructions_events": args.instructions_events,
            "zen_table": args.zen_table,
        }),
        results: serde_json::json!({
            "runs": results,
            "instructions": instructions,
            "allocations": allocations,
            "zen": zen,
        }),
        plots,
    };
    report.write(&args.out)
}

/// The ZEN decision table on one thread over thread 0's stream, and Veto's ratio to it.
#[cfg(feature = "zen")]
fn zen_comparison(
    args: &CoreArgs,
    veto_one_thread: Option<f64>,
) -> Result<serde_json::Value, BenchError> {
    let events: Vec<PaymentEvent> = Synth::new(SynthConfig {
        seed: args.seed,
        users: args.users,
        ..SynthConfig::default()
    })
    .take(args.warmup_events + args.events_per_thread)
    .collect();
    let mut r = super::zen::measure(&args.zen_table, &events, args.warmup_events)?;
    r.veto_ratio = veto_one_thread.map(|v| v / r.events_per_sec);
    eprintln!(
        "core: zen-engine {} ({} rules, first hit), 1 thread: {:.0} events/s; Veto 1 thread / \
         zen: {}",
        super::zen::ZEN_VERSION,
        r.rules,
        r.events_per_sec,
        r.veto_ratio
            .map_or("n/a (1 thread not measured)".into(), |x| format!("{x:.2}×"))
    );
    serde_json::to_value(&r).map_err(|e| BenchError::Invalid(format!("zen result: {e}")))
}

/// Without feature `zen` the comparison is not built; the report says so.
#[cfg(not(feature = "zen"))]
fn zen_comparison(
    _args: &CoreArgs,
    _veto_one_thread: Option<f64>,
) -> Result<serde_json::Value, BenchError> {
    eprintln!("core: zen comparison not built (build veto-tools with --features zen, as tools/bench.sh core does)");
    Ok(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Counts events and blocks every sanctioned-geo payment: enough to exercise the harness.
    struct CountingEngine(AtomicU64);

    impl CoreEngine for CountingEngine {
        fn decide(&self, event: &PaymentEvent) -> Outcome {
            self.0.fetch_add(1, Ordering::Relaxed);
            match event.ip_country.as_deref() {
                Some("KP" | "IR" | "SY") => Outcome::Block,
                _ => Outcome::Allow,
            }
        }
    }

    fn args(out: PathBuf) -> CoreArgs {
        CoreArgs {
            threads: vec![1, 2],
            events_per_thread: 5_000,
            warmup_events: 100,
            users: 1_000,
            seed: 1,
            latency_sample_every: 10,
            zen_table: PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/zen/payments-table.json"
            )),
            ..CoreArgs::with_defaults(out, PathBuf::from("rules/payments.veto"))
        }
    }

    #[test]
    fn measures_every_event_on_every_thread_count() {
        let engine = Arc::new(CountingEngine(AtomicU64::new(0)));
        let a = args(PathBuf::new());
        let result = measure(engine.clone(), 2, &a).expect("measure");
        assert_eq!(result.events, 10_000);
        assert_eq!(engine.0.load(Ordering::Relaxed), 2 * 5_100);
        assert_eq!(result.outcomes.values().sum::<u64>(), 10_000);
        assert_eq!(result.latency.expect("samples").count, 2 * 500);
        assert!(result.events_per_sec > 0.0);
    }

    #[test]
    fn default_threads_are_one_two_and_all_cores() {
        assert_eq!(default_threads(1), [1]);
        assert_eq!(default_threads(2), [1, 2]);
        assert_eq!(default_threads(8), [1, 2, 8]);
    }

    #[test]
    fn writes_report_and_plots() {
        let dir = tempfile::tempdir().expect("temp dir");
        let a = args(dir.path().join("core"));
        let report = run_with(&a, false, || {
            Ok(Arc::new(CountingEngine(AtomicU64::new(0))) as Arc<dyn CoreEngine>)
        })
        .expect("run");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(report).expect("read")).expect("json");
        let runs = json["results"]["runs"].as_array().expect("runs");
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0]["scaling_efficiency"].as_f64(), Some(1.0));
        let two = runs[1]["events_per_sec"].as_f64().expect("rate");
        let one = runs[0]["events_per_sec"].as_f64().expect("rate");
        let eff = runs[1]["scaling_efficiency"].as_f64().expect("efficiency");
        assert!((eff - two / (2.0 * one)).abs() < 1e-9);
        for plot in json["plots"].as_array().expect("plots") {
            let name = plot.as_str().expect("name");
            assert!(a.out.join(name).metadata().expect("png").len() > 1_000);
        }
    }
}
