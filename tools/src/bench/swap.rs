//! Scenario `swap`: event latency around hot swaps of a 1,000-rule set vs without swaps, in the
//! same run, and the signal-to-live time of each swap.
//!
//! The swaps go through Veto's real reload path: this process installs Veto's signal handlers
//! (`veto::reload::listen_signals`) and runs its reloader (`run_reloader`); each swap rewrites
//! the generated rule file (a new variant of the same size) and sends `kill -USR1` to this
//! process, exactly what an operator does. Signal-to-live runs from just before `kill` is
//! spawned to the reloader's swap callback. `--deciders` threads (default: one per core, so the
//! cores are saturated by decisions, as the pipeline workers saturate them under full load)
//! decide synthetic events throughout: first `--quiet` without swaps, then `--swapping` with a
//! swap every `--interval`. Each reload is bounded by `--deadline` (`rules.swap_deadline`): the
//! report says which path each signal took, live within the deadline or abandoned and counted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::kit::swap::{decide_until, write_rule_files, DecideSample};
use veto::decider::{Engine, EventTimeTimers};
use veto::reload::{listen_signals, load_rules_blocking, run_reloader, ReloadStatus, RulePaths};
use veto::store::{StoreConfig, TagStore};

use super::machine::MachineInfo;
use super::plot::{self, Chart, Markers, Series};
use super::report::{now_rfc3339, Report};
use super::stats::{per_slice, LatencySummary};
use super::timers::met;
use super::BenchError;

/// Arguments of `veto-bench swap`.
#[derive(Debug, Clone, clap::Args)]
pub struct SwapArgs {
    /// Output folder for report.json and the plots.
    #[arg(long, default_value = "bench-out/swap")]
    pub out: PathBuf,
    /// The shipped rule file the set starts from.
    #[arg(long, default_value = "rules/payments.veto")]
    pub rules: PathBuf,
    /// Rules in the swapped set (shipped plus generated).
    #[arg(long, default_value_t = 1000)]
    pub rule_count: usize,
    /// Deciding without swaps first, for the baseline.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub quiet: Duration,
    /// Deciding while swapping after that.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub swapping: Duration,
    /// Time from one swap's start to the next one's.
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Threads deciding events; 0: one per available core (the cores saturated).
    #[arg(long, default_value_t = 0)]
    pub deciders: usize,
    /// `rules.swap_deadline` of the reloader.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub deadline: Duration,
    /// Width of the time slices of the latency-over-time plot.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub slice: Duration,
}

/// One hot swap: when it was signalled and when the new set was live (seconds since the start).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct SwapTiming {
    pub signalled_s: f64,
    pub live_s: f64,
    pub signal_to_live_ms: f64,
}

/// Latency of the phases and their p99 ratios.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LatencyPhases {
    pub no_swaps: Option<LatencySummary>,
    pub swap_phase_all: Option<LatencySummary>,
    pub while_swapping: Option<LatencySummary>,
    /// p99 of events decided while a swap ran / p99 without swaps (target: ≤ 1.5).
    pub p99_ratio_while_swapping: Option<f64>,
    /// p99 of the whole swap phase / p99 without swaps.
    pub p99_ratio_swap_phase: Option<f64>,
}

/// Splits samples into the phases; `quiet_ns` is where the swap phase begins.
pub fn phases(samples: &[DecideSample], quiet_ns: u64) -> LatencyPhases {
    let pick = |f: &dyn Fn(&DecideSample) -> bool| {
        let mut v: Vec<u64> = samples
            .iter()
            .filter(|s| f(s))
            .map(|s| s.latency_ns)
            .collect();
        LatencySummary::from_nanos(&mut v)
    };
    let no_swaps = pick(&|s| s.at_ns < quiet_ns);
    let swap_phase_all = pick(&|s| s.at_ns >= quiet_ns);
    let while_swapping = pick(&|s| s.swapping);
    let ratio = |a: &Option<LatencySummary>| match (a, &no_swaps) {
        (Some(a), Some(b)) if b.p99_us > 0.0 => Some(a.p99_us / b.p99_us),
        _ => None,
    };
    LatencyPhases {
        p99_ratio_while_swapping: ratio(&while_swapping),
        p99_ratio_swap_phase: ratio(&swap_phase_all),
        no_swaps,
        swap_phase_all,
        while_swapping,
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BenchError + '_ {
    move |source| BenchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn plots(
    out: &Path,
    samples: &[DecideSample],
    swaps: &[SwapTiming],
    slice: Duration,
    quiet: Duration,
) -> Result<Vec<String>, BenchError> {
    let timed: Vec<(Duration, u64)> = samples
        .iter()
        .map(|s| (Duration::from_nanos(s.at_ns), s.latency_ns))
        .collect();
    let slices = per_slice(&timed, slice);
    let line = |name: &str, f: fn(&LatencySummary) -> f64| Series {
        name: name.to_string(),
        points: slices.iter().map(|(t, l)| (*t, f(l))).collect(),
    };
    let file = "latency_over_time.png";
    plot::draw(
        &out.join(file),
        &Chart {
            title: &format!(
                "Event latency per {} ms (no swaps until {:.0} s, then hot swaps)",
                slice.as_millis(),
                quiet.as_secs_f64()
            ),
            x_label: "seconds",
            y_label: "latency (µs, log)",
            series: vec![
                line("p50", |l| l.p50_us),
                line("p99", |l| l.p99_us),
                line("p99.9", |l| l.p999_us),
            ],
            log_y: true,
            markers: Markers {
                label: "swap signalled".into(),
                x: swaps.iter().map(|s| s.signalled_s).collect(),
            },
        },
    )?;
    let file2 = "signal_to_live.png";
    plot::draw(
        &out.join(file2),
        &Chart {
            title: "Hot swap: signal to live, per swap",
            x_label: "swap",
            y_label: "ms",
            series: vec![
                Series {
                    name: "signal to live".into(),
                    points: swaps
                        .iter()
                        .enumerate()
                        .map(|(i, s)| (i as f64 + 1.0, s.signal_to_live_ms))
                        .collect(),
                },
                Series {
                    name: "target 100 ms".into(),
                    points: vec![(1.0, 100.0), (swaps.len().max(2) as f64, 100.0)],
                },
            ],
            log_y: false,
            markers: Markers::default(),
        },
    )?;
    Ok(vec![file.into(), file2.into()])
}

/// Runs the scenario and writes the report; returns the report's path.
pub fn run(args: &SwapArgs) -> Result<PathBuf, BenchError> {
    if args.interval.is_zero() || args.slice.is_zero() || args.deadline.is_zero() {
        return Err(BenchError::Invalid(
            "--interval, --slice and --deadline must be positive".into(),
        ));
    }
    let deciders = match args.deciders {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let started = Instant::now();
    let started_at = now_rfc3339();
    let machine = MachineInfo::collect();
    std::fs::create_dir_all(&args.out).map_err(io_err(&args.out))?;
    let rules_dir = tempfile::tempdir().map_err(io_err(&args.out))?;
    let shipped = std::fs::canonicalize(&args.rules).map_err(io_err(&args.rules))?;
    let paths = write_rule_files(rules_dir.path(), &shipped, args.rule_count, 0)
        .map_err(io_err(rules_dir.path()))?;
    let rules = load_rules_blocking(&paths)
        .map_err(|d| BenchError::Invalid(format!("the generated set is rejected:\n{d}")))?;
    let rule_count = rules.rules().len() + rules.sequences().len();
    let store_dir = tempfile::tempdir().map_err(io_err(&args.out))?;
    let store = TagStore::open(StoreConfig {
        data_dir: store_dir.path().to_path_buf(),
        ..StoreConfig::default()
    })
    .map_err(|e| BenchError::Invalid(format!("scratch tag store: {e}")))?;
    let engine = Arc::new(Engine::new(
        rules,
        Arc::new(store),
        Arc::new(EventTimeTimers::default()),
    ));

    // Veto's own signal handling and reloader, in this process.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| BenchError::Invalid(e.to_string()))?;
    let signals = listen_signals().map_err(io_err(Path::new("signal handlers")))?;
    let mut stop_signal = signals.stop.clone();
    runtime.spawn(async move {
        // SIGTERM/SIGINT now reach Veto's handler instead of ending this process: honour them.
        if stop_signal.wait_for(|s| *s).await.is_ok() {
            eprintln!("swap: stop signal received, exiting");
            std::process::exit(130);
        }
    });
    let status = Arc::new(parking_lot::Mutex::new(ReloadStatus::default()));
    let (live_tx, live_rx) = std::sync::mpsc::channel::<Instant>();
    runtime.spawn(run_reloader(
        Arc::clone(&engine),
        RulePaths {
            live: paths.clone(),
            shadow: Vec::new(),
        },
        args.deadline,
        signals.requests,
        Arc::clone(&status),
        move |_, _, _| {
            let _ = live_tx.send(Instant::now());
        },
    ));

    let base = Instant::now();
    let swapping = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut decider_threads = Vec::with_capacity(deciders);
    for index in 0..deciders {
        let (engine, swapping, stop) = (
            Arc::clone(&engine),
            Arc::clone(&swapping),
            Arc::clone(&stop),
        );
        let seed = 3 + index as u64;
        let thread = std::thread::Builder::new()
            .name(format!("decider-{index}"))
            .spawn(move || {
                decide_until(&engine, seed, base, &swapping, || {
                    stop.load(Ordering::Relaxed)
                })
            })
            .map_err(|e| BenchError::Invalid(format!("spawn decider: {e}")))?;
        decider_threads.push(thread);
    }
    eprintln!(
        "swap: {rule_count} rules, {deciders} deciding threads, deadline {} ms; {:.1} s without swaps, then {:.1} s with a swap every {} ms",
        args.deadline.as_millis(),
        args.quiet.as_secs_f64(),
        args.swapping.as_secs_f64(),
        args.interval.as_millis()
    );
    std::thread::sleep(args.quiet);
    let pid = std::process::id().to_string();
    let swap_end = base + args.quiet + args.swapping;
    let mut swaps = Vec::new();
    let mut abandoned = 0u64;
    let mut failure = None;
    let mut variant = 0;
    while Instant::now() < swap_end {
        let next = Instant::now() + args.interval;
        variant += 1;
        if let Err(e) = write_rule_files(rules_dir.path(), &shipped, args.rule_count, variant) {
            failure = Some(format!("rewrite rules: {e}"));
            break;
        }
        swapping.store(true, Ordering::Relaxed);
        let signalled = Instant::now();
        let sent = Command::new("kill").args(["-USR1", &pid]).status();
        if !sent.as_ref().is_ok_and(|s| s.success()) {
            failure = Some(format!("kill -USR1 {pid} failed: {sent:?}"));
            break;
        }
        let served = swaps.len() as u64 + abandoned;
        let live = wait_for_reload(&live_rx, &status, served, abandoned);
        swapping.store(false, Ordering::Relaxed);
        let live = match live {
            ReloadEnd::Live(at) => at,
            ReloadEnd::Abandoned => {
                abandoned += 1;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
                continue;
            }
            ReloadEnd::Failed(why) => {
                failure = Some(why);
                break;
            }
        };
        swaps.push(SwapTiming {
            signalled_s: signalled.duration_since(base).as_secs_f64(),
            live_s: live.duration_since(base).as_secs_f64(),
            signal_to_live_ms: live.duration_since(signalled).as_secs_f64() * 1e3,
        });
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    for thread in decider_threads {
        samples.extend(
            thread
                .join()
                .map_err(|_| BenchError::Invalid("decider thread panicked".into()))?,
        );
    }
    samples.sort_by_key(|s| s.at_ns);
    let reload_status = status.lock().clone();
    if let Some(f) = failure {
        return Err(BenchError::Invalid(format!(
            "swap: {f}; reload status {reload_status:?}"
        )));
    }

    let quiet_ns = args.quiet.as_nanos() as u64;
    let phases = phases(&samples, quiet_ns);
    let mut reload_ms: Vec<f64> = swaps.iter().map(|s| s.signal_to_live_ms).collect();
    reload_ms.sort_by(f64::total_cmp);
    let p50 = reload_ms.get(reload_ms.len() / 2).copied();
    let p99 = percentile(&reload_ms, 0.99);
    let max = reload_ms.last().copied();
    let reload_met = max.is_some_and(|m| m < 100.0);
    let deadline_ms = args.deadline.as_secs_f64() * 1e3;
    let path = SwapPath::of(p99, deadline_ms, abandoned, reload_status.deadline_exceeded);
    let ratio_met = phases.p99_ratio_while_swapping.is_some_and(|r| r <= 1.5);
    let fmt = |v: Option<f64>, d: usize| v.map_or("n/a".into(), |v| format!("{v:.d$}"));
    eprintln!(
        "swap: {} signals: {} live, {abandoned} abandoned at the deadline (counted by the reloader: {})",
        swaps.len() as u64 + abandoned,
        swaps.len(),
        reload_status.deadline_exceeded
    );
    eprintln!(
        "swap: {} swaps of {rule_count} rules, signal to live p50 {} ms, p99 {} ms, max {} ms (quiet-machine target < 100 ms: {})",
        swaps.len(),
        fmt(p50, 1),
        fmt(p99, 1),
        fmt(max, 1),
        met(reload_met)
    );
    eprintln!(
        "swap: with {deciders} deciding threads: {}",
        path.describe(deadline_ms)
    );
    for (name, s) in [
        ("no swaps", &phases.no_swaps),
        ("swap phase, all", &phases.swap_phase_all),
        ("while a swap runs", &phases.while_swapping),
    ] {
        if let Some(s) = s {
            eprintln!(
                "swap: {name:<18} {:>9} events, p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.0} µs",
                s.count, s.p50_us, s.p99_us, s.p999_us, s.max_us
            );
        }
    }
    eprintln!(
        "swap: p99 while swapping / p99 without swaps: {} (target ≤ 1.5: {}); whole swap phase: {}",
        fmt(phases.p99_ratio_while_swapping, 2),
        met(ratio_met),
        fmt(phases.p99_ratio_swap_phase, 2)
    );
    let plots = plots(&args.out, &samples, &swaps, args.slice, args.quiet)?;
    let report = Report {
        scenario: "swap".into(),
        started_at,
        duration_seconds: started.elapsed().as_secs_f64(),
        machine,
        params: serde_json::json!({
            "rules": args.rules,
            "rule_count": args.rule_count,
            "quiet_seconds": args.quiet.as_secs_f64(),
            "swapping_seconds": args.swapping.as_secs_f64(),
            "interval_ms": args.interval.as_secs_f64() * 1e3,
            "slice_ms": args.slice.as_secs_f64() * 1e3,
            "deciders": deciders,
            "deadline_ms": deadline_ms,
        }),
        results: serde_json::json!({
            "rules_in_set": rule_count,
            "swaps": swaps,
            "reloads": reload_status.reloads,
            "reload_failures": reload_status.failures,
            "abandoned_at_deadline": abandoned,
            "deadline_exceeded_counted": reload_status.deadline_exceeded,
            "signal_to_live_ms": { "p50": p50, "p99": p99, "max": max, "target_lt": 100.0, "met": reload_met },
            "swap_path": path,
            "swap_path_met": path.met(),
            "latency": phases,
            "p99_ratio_target_max": 1.5,
            "p99_ratio_met": ratio_met,
        }),
        plots,
    };
    report.write(&args.out)
}

/// How a reload signalled by the bench ended.
enum ReloadEnd {
    /// The new set went live at this instant.
    Live(Instant),
    /// The reloader abandoned it at the deadline.
    Abandoned,
    Failed(String),
}

/// Waits until the reloader has served one more request than `served`: the swap callback
/// fired, or the reload status counts it as abandoned (one more than `abandoned`); a rejected
/// reload is a failure of the bench.
fn wait_for_reload(
    live_rx: &std::sync::mpsc::Receiver<Instant>,
    status: &parking_lot::Mutex<ReloadStatus>,
    served: u64,
    abandoned: u64,
) -> ReloadEnd {
    let limit = Instant::now() + Duration::from_secs(30);
    while Instant::now() < limit {
        if let Ok(at) = live_rx.recv_timeout(Duration::from_millis(2)) {
            return ReloadEnd::Live(at);
        }
        let s = status.lock().clone();
        if s.reloads > served {
            // The swap callback runs before the status is updated: it may have just fired.
            if let Ok(at) = live_rx.try_recv() {
                return ReloadEnd::Live(at);
            }
            if s.deadline_exceeded > abandoned {
                return ReloadEnd::Abandoned;
            }
            return ReloadEnd::Failed(format!("the reload failed: {:?}", s.last_error));
        }
    }
    ReloadEnd::Failed("no swap within 30 s of the signal (see the reload status)".into())
}

/// The `p` quantile (nearest rank) of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = ((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1);
    sorted.get(rank.min(last)).copied()
}

/// Which path the swaps took against the deadline.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(tag = "path", rename_all = "snake_case")]
pub enum SwapPath {
    /// Every signal went live; `p99_ms` is the signal-to-live p99.
    Live { p99_ms: f64, within_deadline: bool },
    /// Some reloads were abandoned at the deadline; `counted` is the reloader's count of them.
    DeadlineTaken { abandoned: u64, counted: u64 },
    /// No signal was sent.
    None,
}

impl SwapPath {
    fn of(p99_ms: Option<f64>, deadline_ms: f64, abandoned: u64, counted: u64) -> SwapPath {
        match (abandoned, p99_ms) {
            (0, Some(p99_ms)) => SwapPath::Live {
                p99_ms,
                within_deadline: p99_ms <= deadline_ms,
            },
            (0, None) => SwapPath::None,
            (abandoned, _) => SwapPath::DeadlineTaken { abandoned, counted },
        }
    }

    /// Signal to live p99 within the deadline, or every abandoned reload counted.
    pub fn met(&self) -> bool {
        match *self {
            SwapPath::Live {
                within_deadline, ..
            } => within_deadline,
            SwapPath::DeadlineTaken { abandoned, counted } => abandoned == counted,
            SwapPath::None => false,
        }
    }

    fn describe(&self, deadline_ms: f64) -> String {
        match *self {
            SwapPath::Live { p99_ms, .. } => format!(
                "every swap live, signal to live p99 {p99_ms:.1} ms (≤ {deadline_ms:.0} ms deadline: {})",
                met(self.met())
            ),
            SwapPath::DeadlineTaken { abandoned, counted } => format!(
                "deadline path taken: {abandoned} reloads abandoned at {deadline_ms:.0} ms, {counted} counted ({})",
                met(self.met())
            ),
            SwapPath::None => "no swap signalled".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: u64, latency_us: u64, swapping: bool) -> DecideSample {
        DecideSample {
            at_ns: at_ms * 1_000_000,
            latency_ns: latency_us * 1_000,
            swapping,
        }
    }

    #[test]
    fn phases_split_by_time_and_flag() {
        let mut samples: Vec<DecideSample> = (0..100).map(|i| sample(i, 10, false)).collect();
        samples
            .extend((100..200).map(|i| sample(i, if i % 10 == 0 { 30 } else { 10 }, i % 10 == 0)));
        let p = phases(&samples, 100 * 1_000_000);
        assert_eq!(p.no_swaps.expect("quiet").count, 100);
        assert_eq!(p.swap_phase_all.expect("swap phase").count, 100);
        let during = p.while_swapping.expect("during");
        assert_eq!(during.count, 10);
        assert_eq!(during.p99_us, 30.0);
        assert_eq!(p.p99_ratio_while_swapping, Some(3.0));
        assert_eq!(p.p99_ratio_swap_phase, Some(3.0));
    }

    #[test]
    fn the_swap_path_is_live_within_the_deadline_or_abandoned_and_counted() {
        let live = SwapPath::of(Some(120.0), 500.0, 0, 0);
        assert_eq!(
            live,
            SwapPath::Live {
                p99_ms: 120.0,
                within_deadline: true
            }
        );
        assert!(live.met());
        assert!(!SwapPath::of(Some(700.0), 500.0, 0, 0).met());
        assert!(SwapPath::of(Some(480.0), 500.0, 3, 3).met());
        assert!(
            !SwapPath::of(None, 500.0, 3, 2).met(),
            "an uncounted abandon fails"
        );
        assert_eq!(SwapPath::of(None, 500.0, 0, 0), SwapPath::None);
        let sorted: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 0.99), Some(198.0));
        assert_eq!(percentile(&[], 0.99), None);
    }

    #[test]
    fn no_samples_no_ratios() {
        let p = phases(&[], 1);
        assert!(p.no_swaps.is_none() && p.p99_ratio_while_swapping.is_none());
    }
}
