//! Scenario `spill`: engine throughput and process RSS as the entity count grows past
//! `store.memory_budget`, with the store on real RocksDB on disk.
//!
//! One engine (the rule set, a tag store with the given budget in a temp dir) decides a synthetic
//! stream in which every event names a new user, card, device and IP, so the entity count grows
//! linearly. After each `--step` events the harness records the step's throughput, the store's
//! counters and this process's RSS. RSS is the whole process (harness, rule set, RocksDB
//! memtables and block cache included) and is compared with the budget as the target in docs/benchmarks.md states it.
//! Then a fresh engine whose store never spills decides the same events again: the in-memory
//! figure the throughput while spilling is compared with, step for step.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::kit::process::{cpu_seconds, dir_bytes, rss_bytes};
use veto::decider::{Engine, EventTimeTimers};
use veto::event::PaymentEvent;
use veto::reload::load_rules_blocking;
use veto::rules::RuleSet;
use veto::store::{StoreConfig, TagStore};
use veto::synth::{Synth, SynthConfig};

use super::machine::MachineInfo;
use super::plot::{self, Chart, Markers, Series};
use super::report::{now_rfc3339, Report};
use super::timers::met;
use super::BenchError;

const MIB: f64 = 1024.0 * 1024.0;

/// `store.memory_budget` of the in-memory run: 1 PiB, beyond any machine's memory.
const UNLIMITED_BUDGET: u64 = 1 << 50;

/// Arguments of `veto-bench spill`.
#[derive(Debug, Clone, clap::Args)]
pub struct SpillArgs {
    /// Output folder for report.json and the plots.
    #[arg(long, default_value = "bench-out/spill")]
    pub out: PathBuf,
    /// Rule file(s) the engine runs.
    #[arg(long, default_value = "rules/payments.veto")]
    pub rules: PathBuf,
    /// `store.memory_budget` in MiB.
    #[arg(long, default_value_t = 128)]
    pub budget_mib: u64,
    /// Events to decide in all (each brings about four new entities).
    #[arg(long, default_value_t = 1_500_000)]
    pub events: usize,
    /// Events per measured point.
    #[arg(long, default_value_t = 50_000)]
    pub step: usize,
    /// Parent of the temporary RocksDB directory (default: the system temp dir).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Seed of the synthetic stream.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// One measured point.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SpillPoint {
    pub events: u64,
    /// Entities the stream has named so far (users, cards, devices, IPs, merchants).
    pub entities: u64,
    pub entities_in_memory: u64,
    pub entities_spilled: u64,
    pub accounted_bytes: u64,
    pub rss_bytes: u64,
    /// Bytes allocated through Rust's allocator (the store's entities and maps, not RocksDB).
    pub rust_heap_bytes: u64,
    /// RocksDB's own memory: memtables, index and filter blocks, block cache.
    pub rocksdb_bytes: u64,
    /// Throughput of this step.
    pub events_per_sec: f64,
    /// Whether the store had spilled entities at this point.
    pub spilling: bool,
}

/// RSS against the budget over the points where the store was spilling.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BudgetCheck {
    pub budget_bytes: u64,
    pub points_spilling: usize,
    /// Process RSS / budget.
    pub rss_over_budget_max: Option<f64>,
    pub rss_over_budget_last: Option<f64>,
    /// The store's RSS (process RSS minus the RSS before the store opened: binary, rule set,
    /// harness) / budget.
    pub store_rss_over_budget_max: Option<f64>,
    /// Target (docs/benchmarks.md): "RSS within 10 % of budget when spilling": the store's RSS ≤ 1.10 × budget at
    /// every spilling point.
    pub within_10_percent: bool,
    pub accounted_over_budget_max: Option<f64>,
}

/// Checks the spilling points against the budget.
pub fn budget_check(
    points: &[SpillPoint],
    budget_bytes: u64,
    rss_before_store: u64,
) -> BudgetCheck {
    let spilling: Vec<&SpillPoint> = points.iter().filter(|p| p.spilling).collect();
    let ratio = |v: u64| v as f64 / budget_bytes.max(1) as f64;
    let max_of =
        |f: &dyn Fn(&SpillPoint) -> u64| spilling.iter().map(|p| ratio(f(p))).reduce(f64::max);
    let store_rss_max = max_of(&|p| p.rss_bytes.saturating_sub(rss_before_store));
    BudgetCheck {
        budget_bytes,
        points_spilling: spilling.len(),
        rss_over_budget_max: max_of(&|p| p.rss_bytes),
        rss_over_budget_last: spilling.last().map(|p| ratio(p.rss_bytes)),
        store_rss_over_budget_max: store_rss_max,
        within_10_percent: store_rss_max.is_some_and(|r| r <= 1.10),
        accounted_over_budget_max: max_of(&|p| p.accounted_bytes),
    }
}

/// Rewrites an event's entity ids so that event `n` names entities no earlier event named;
/// returns how many entity values the event carries.
pub fn make_entities_new(event: &mut PaymentEvent, n: u64) -> u64 {
    let mut named = 0;
    let fields = [
        &mut event.user_id,
        &mut event.card_id,
        &mut event.device_id,
        &mut event.ip,
    ];
    for value in fields.into_iter().flatten() {
        *value = format!("{value}-n{n}");
        named += 1;
    }
    named
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BenchError + '_ {
    move |source| BenchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn plots(
    out: &Path,
    points: &[SpillPoint],
    in_memory: &[f64],
    budget_bytes: u64,
    rss_before_store: u64,
) -> Result<Vec<String>, BenchError> {
    let first_spill: Vec<f64> = points
        .iter()
        .find(|p| p.spilling)
        .map(|p| p.entities as f64)
        .into_iter()
        .collect();
    let markers = || Markers {
        label: "first spill".into(),
        x: first_spill.clone(),
    };
    let throughput = "throughput_vs_entities.png";
    plot::draw(
        &out.join(throughput),
        &Chart {
            title: "Engine throughput as entities grow past the memory budget",
            x_label: "entities named so far",
            y_label: "events/s",
            series: vec![
                Series {
                    name: "events/s (per step)".into(),
                    points: points
                        .iter()
                        .map(|p| (p.entities as f64, p.events_per_sec))
                        .collect(),
                },
                Series {
                    name: "the same events, store in memory".into(),
                    points: (points.iter().zip(in_memory))
                        .map(|(p, &r)| (p.entities as f64, r))
                        .collect(),
                },
            ],
            log_y: false,
            markers: markers(),
        },
    )?;
    let rss = "rss_vs_entities.png";
    let x_end = points.last().map_or(1.0, |p| p.entities as f64);
    plot::draw(
        &out.join(rss),
        &Chart {
            title: "RSS, Rust heap and store accounting vs entities",
            x_label: "entities named so far",
            y_label: "MiB",
            series: vec![
                Series {
                    name: "process RSS".into(),
                    points: points
                        .iter()
                        .map(|p| (p.entities as f64, p.rss_bytes as f64 / MIB))
                        .collect(),
                },
                Series {
                    name: "store RSS (RSS - RSS before the store)".into(),
                    points: points
                        .iter()
                        .map(|p| {
                            let store = p.rss_bytes.saturating_sub(rss_before_store);
                            (p.entities as f64, store as f64 / MIB)
                        })
                        .collect(),
                },
                Series {
                    name: "Rust heap".into(),
                    points: points
                        .iter()
                        .map(|p| (p.entities as f64, p.rust_heap_bytes as f64 / MIB))
                        .collect(),
                },
                Series {
                    name: "store accounted bytes".into(),
                    points: points
                        .iter()
                        .map(|p| (p.entities as f64, p.accounted_bytes as f64 / MIB))
                        .collect(),
                },
                Series {
                    name: "memory budget".into(),
                    points: vec![
                        (0.0, budget_bytes as f64 / MIB),
                        (x_end, budget_bytes as f64 / MIB),
                    ],
                },
                Series {
                    name: "budget + 10 %".into(),
                    points: vec![
                        (0.0, budget_bytes as f64 * 1.1 / MIB),
                        (x_end, budget_bytes as f64 * 1.1 / MIB),
                    ],
                },
            ],
            log_y: false,
            markers: markers(),
        },
    )?;
    Ok(vec![throughput.into(), rss.into()])
}

/// An engine running `rules` over a tag store with `budget` in `dir`, and its timers.
/// Due timers are taken (and dropped: the bench measures event decisions) as event time
/// passes ([`decide_stream`]), so armed timers stay bounded as in a running service.
fn open_engine(
    rules: Arc<RuleSet>,
    dir: &Path,
    budget: u64,
) -> Result<(Engine, Arc<EventTimeTimers>), BenchError> {
    let store = TagStore::open(StoreConfig {
        memory_budget_bytes: budget,
        data_dir: dir.to_path_buf(),
        ..StoreConfig::default()
    })
    .map_err(|e| BenchError::Invalid(format!("tag store in {}: {e}", dir.display())))?;
    let timers = Arc::new(EventTimeTimers::default());
    Ok((Engine::new(rules, Arc::new(store), timers.clone()), timers))
}

/// Events/s of `count` events decided in `seconds`.
fn rate(count: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// Decides the scenario's stream (`args.events` events, every one naming new entities) in
/// steps of `args.step`, calling `after_step(events decided, entities named, events in the
/// step, seconds)` after each. Events are made one at a time (no batch held in memory: RSS
/// is the store's); due timers are taken every 256 events.
fn decide_stream(
    engine: &Engine,
    timers: &EventTimeTimers,
    args: &SpillArgs,
    mut after_step: impl FnMut(usize, u64, usize, f64),
) {
    let mut synth = Synth::new(SynthConfig {
        seed: args.seed,
        ..SynthConfig::default()
    });
    let (mut named, mut done) = (0u64, 0usize);
    while done < args.events {
        let count = args.step.min(args.events - done);
        let step_started = Instant::now();
        for (i, mut event) in synth.by_ref().take(count).enumerate() {
            named += make_entities_new(&mut event, (done + i) as u64);
            std::hint::black_box(engine.decide(&event, event.event_time_ms).decision.outcome);
            if i % 256 == 0 {
                std::hint::black_box(timers.due(event.event_time_ms).len());
            }
        }
        let seconds = step_started.elapsed().as_secs_f64();
        done += count;
        after_step(done, named, count, seconds);
    }
}

/// The same stream with a store that never spills (a budget beyond any RSS): the events/s of
/// each step, the in-memory figure for the very events the budgeted run decided.
fn in_memory_rates(
    args: &SpillArgs,
    rules: Arc<RuleSet>,
    parent: &Path,
) -> Result<Vec<f64>, BenchError> {
    let data_dir = tempfile::Builder::new()
        .prefix("veto-bench-spill-memory-")
        .tempdir_in(parent)
        .map_err(io_err(parent))?;
    let (engine, timers) = open_engine(rules, data_dir.path(), UNLIMITED_BUDGET)?;
    let mut rates = Vec::new();
    decide_stream(&engine, &timers, args, |_, _, count, seconds| {
        rates.push(rate(count, seconds))
    });
    Ok(rates)
}

/// Runs the scenario and writes the report; returns the report's path.
pub fn run(args: &SpillArgs) -> Result<PathBuf, BenchError> {
    if args.step == 0 || args.events == 0 || args.budget_mib == 0 {
        return Err(BenchError::Invalid(
            "--events, --step and --budget-mib must be positive".into(),
        ));
    }
    let started = Instant::now();
    let started_at = now_rfc3339();
    let machine = MachineInfo::collect();
    std::fs::create_dir_all(&args.out).map_err(io_err(&args.out))?;
    let rules = load_rules_blocking(std::slice::from_ref(&args.rules))
        .map_err(|d| BenchError::Invalid(format!("{}: rejected:\n{d}", args.rules.display())))?;
    let parent = args.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    let data_dir = tempfile::Builder::new()
        .prefix("veto-bench-spill-")
        .tempdir_in(&parent)
        .map_err(io_err(&parent))?;
    let budget_bytes = args.budget_mib << 20;
    let rss_before_store = rss_bytes();
    let (engine, timers) = open_engine(Arc::clone(&rules), data_dir.path(), budget_bytes)?;
    let merchants = SynthConfig::default().merchants;
    eprintln!(
        "spill: {} events in steps of {}, budget {} MiB, RocksDB in {} (RSS before the store {:.0} MiB)",
        args.events,
        args.step,
        args.budget_mib,
        data_dir.path().display(),
        rss_before_store as f64 / MIB
    );
    let cpu_before = cpu_seconds();
    let mut points = Vec::new();
    decide_stream(&engine, &timers, args, |done, named, count, seconds| {
        let stats = engine.store().stats();
        let point = SpillPoint {
            events: done as u64,
            entities: named + merchants.min(done as u64),
            entities_in_memory: stats.entities_in_memory,
            entities_spilled: stats.entities_spilled,
            accounted_bytes: stats.accounted_bytes,
            rss_bytes: rss_bytes(),
            rust_heap_bytes: super::heap::rust_heap_bytes(),
            rocksdb_bytes: stats.rocksdb_bytes,
            events_per_sec: rate(count, seconds),
            spilling: stats.entities_spilled > 0,
        };
        eprintln!(
            "spill: {:>9} events, {:>9} entities ({:>8} in memory, {:>8} spilled), {:>7.0} events/s, RSS {:>6.0} MiB, accounted {:>6.0} MiB, Rust heap {:>6.0} MiB, rocksdb {:>5.0} MiB",
            point.events,
            point.entities,
            point.entities_in_memory,
            point.entities_spilled,
            point.events_per_sec,
            point.rss_bytes as f64 / MIB,
            point.accounted_bytes as f64 / MIB,
            point.rust_heap_bytes as f64 / MIB,
            point.rocksdb_bytes as f64 / MIB
        );
        points.push(point);
    });
    let cpu = cpu_seconds() - cpu_before;
    let check = budget_check(&points, budget_bytes, rss_before_store);
    let disk_bytes = dir_bytes(data_dir.path());
    drop(engine);
    eprintln!("spill: the same events again, with the store in memory (no budget)");
    let in_memory = in_memory_rates(args, rules, &parent)?;
    let rates = |spilling: bool| -> Vec<f64> {
        (points.iter())
            .filter(|p| p.spilling == spilling)
            .map(|p| p.events_per_sec)
            .collect()
    };
    let (before_spill, while_spilling) = (rates(false), rates(true));
    // the in-memory run's steps over the very events decided while spilling
    let same_events: Vec<f64> = (points.iter().zip(&in_memory))
        .filter(|(p, _)| p.spilling)
        .map(|(_, &r)| r)
        .collect();
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let throughput_ratio = ratio(mean(&while_spilling), mean(&before_spill));
    let in_memory_ratio = ratio(mean(&while_spilling), mean(&same_events));
    let fmt = |v: Option<f64>, d: usize| v.map_or("n/a".into(), |v| format!("{v:.d$}"));
    eprintln!(
        "spill: throughput before spilling {} events/s, while spilling {} events/s (ratio {})",
        fmt(mean(&before_spill), 0),
        fmt(mean(&while_spilling), 0),
        fmt(throughput_ratio, 2)
    );
    eprintln!(
        "spill: the events decided while spilling, decided again with the store in memory: {} events/s (while spilling / in memory {})",
        fmt(mean(&same_events), 0),
        fmt(in_memory_ratio, 2)
    );
    eprintln!(
        "spill: while spilling, store RSS (RSS - RSS before the store) / budget max {} (target ≤ 1.10: {}); process RSS / budget max {}, last {}; store accounted / budget max {}",
        fmt(check.store_rss_over_budget_max, 2),
        if check.points_spilling == 0 { "not reached: no spill" } else { met(check.within_10_percent) },
        fmt(check.rss_over_budget_max, 2),
        fmt(check.rss_over_budget_last, 2),
        fmt(check.accounted_over_budget_max, 2)
    );
    let plots = plots(
        &args.out,
        &points,
        &in_memory,
        budget_bytes,
        rss_before_store,
    )?;
    let report = Report {
        scenario: "spill".into(),
        started_at,
        duration_seconds: started.elapsed().as_secs_f64(),
        machine,
        params: serde_json::json!({
            "rules": args.rules,
            "budget_mib": args.budget_mib,
            "events": args.events,
            "step": args.step,
            "data_dir": data_dir.path(),
            "seed": args.seed,
        }),
        results: serde_json::json!({
            "points": points,
            "budget": check,
            "rss_before_store_bytes": rss_before_store,
            "rocksdb_disk_bytes": disk_bytes,
            "cpu_seconds": cpu,
            "events_per_sec_before_spill": mean(&before_spill),
            "events_per_sec_while_spilling": mean(&while_spilling),
            "throughput_ratio_spilling_vs_not": throughput_ratio,
            "events_per_sec_in_memory": in_memory,
            "events_per_sec_in_memory_same_events": mean(&same_events),
            "throughput_ratio_spilling_vs_in_memory": in_memory_ratio,
        }),
        plots,
    };
    report.write(&args.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(rss_mib: u64, spilling: bool) -> SpillPoint {
        SpillPoint {
            events: 1,
            entities: 1,
            entities_in_memory: 1,
            entities_spilled: u64::from(spilling),
            accounted_bytes: 90 << 20,
            rss_bytes: rss_mib << 20,
            rust_heap_bytes: 80 << 20,
            rocksdb_bytes: 10 << 20,
            events_per_sec: 1.0,
            spilling,
        }
    }

    #[test]
    fn budget_check_looks_only_at_spilling_points() {
        let points = [point(50, false), point(115, true), point(118, true)];
        // 10 MiB of RSS before the store: the store's RSS is 1.08 × budget at most.
        let check = budget_check(&points, 100 << 20, 10 << 20);
        assert_eq!(check.points_spilling, 2);
        assert_eq!(check.rss_over_budget_max, Some(1.18));
        assert_eq!(check.store_rss_over_budget_max, Some(1.08));
        assert!(check.within_10_percent);
        let check = budget_check(&[point(120, true)], 100 << 20, 0);
        assert!(!check.within_10_percent);
        let check = budget_check(&[point(50, false)], 100 << 20, 0);
        assert!(!check.within_10_percent && check.rss_over_budget_max.is_none());
    }

    #[test]
    fn every_event_names_new_entities() {
        let events: Vec<PaymentEvent> = Synth::new(SynthConfig::default()).take(200).collect();
        let mut users = std::collections::HashSet::new();
        let mut total = 0;
        for (n, mut e) in events.into_iter().enumerate() {
            total += make_entities_new(&mut e, n as u64);
            if let Some(u) = e.user_id {
                assert!(users.insert(u), "user ids repeat");
            }
        }
        assert!(total >= 200);
    }

    #[test]
    fn small_run_spills_and_writes_report() {
        let dir = tempfile::tempdir().expect("temp dir");
        let args = SpillArgs {
            out: dir.path().join("spill"),
            rules: PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../rules/payments.veto"
            )),
            budget_mib: 1,
            events: 6_000,
            step: 2_000,
            data_dir: Some(dir.path().to_path_buf()),
            seed: 1,
        };
        let report = run(&args).expect("run");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(report).expect("read")).expect("json");
        let points = json["results"]["points"].as_array().expect("points");
        assert_eq!(points.len(), 3);
        assert_eq!(points[2]["events"], 6_000);
        assert!(json["results"]["budget"]["points_spilling"].as_u64() > Some(0));
        // the same events decided again in memory: a rate per step, and the ratio from them
        let in_memory = json["results"]["events_per_sec_in_memory"]
            .as_array()
            .expect("in-memory rates");
        assert_eq!(in_memory.len(), 3);
        assert!(in_memory.iter().all(|r| r.as_f64() > Some(0.0)));
        assert!(json["results"]["throughput_ratio_spilling_vs_in_memory"].as_f64() > Some(0.0));
        for plot in json["plots"].as_array().expect("plots") {
            let name = plot.as_str().expect("name");
            assert!(args.out.join(name).metadata().expect("png").len() > 1_000);
        }
    }
}
