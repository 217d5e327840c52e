//! Timer benchmark: tick lateness and drift (wheel vs tokio interval vs sleep loop) under CPU load, arm/cancel throughput.
//!
//! Environment:
//! - `VETO_TIMER_TICKS` (default 120000): 1 ms ticks per lateness series (10^6 takes 17 min).
//! - `VETO_TIMER_BUSY_THREADS` (default: available parallelism): threads spinning to load the CPU.
//! - `VETO_TIMER_ARMED` (default 1000000): timers armed for the throughput measurements.
//!
//! Prints a table and writes `target/timer-lateness.json`; then runs the criterion groups.

use criterion::{BatchSize, Criterion};
use std::hint::black_box;
use std::time::{Duration, Instant};
use veto::timer::{ManualClock, TimerCore, TimingWheel};
use veto_tools::kit::timers::{compare, timer_payload as payload, Method, PERIOD};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn lateness_comparison(ticks: usize, busy_threads: usize) -> Vec<serde_json::Value> {
    let comparison = compare(&Method::ALL, ticks, busy_threads);
    if let Some(reason) = &comparison.normal_scheduling {
        eprintln!("normal scheduling: {reason}");
    }
    comparison
        .series
        .iter()
        .map(|s| {
            if let Some(error) = &s.error {
                eprintln!("{}: {error}", s.method.name());
            }
            serde_json::to_value(s.summary()).unwrap_or_default()
        })
        .collect()
}

/// Arms `armed` keyed timers into a core, then times arming and cancelling them all.
fn keyed_throughput(armed: usize) -> serde_json::Value {
    let core = TimerCore::new(ManualClock::new(0), PERIOD, armed);
    let keys: Vec<String> = (0..armed).map(|i| format!("txn-{i:09}")).collect();
    let started = Instant::now();
    for (i, value) in keys.iter().enumerate() {
        let after = Duration::from_millis(1 + (i as u64 * 7_919) % 7_200_000);
        core.arm(payload("auth_without_capture", value), after);
    }
    let arm_elapsed = started.elapsed();
    let snapshot_started = Instant::now();
    let snapshot = core.snapshot();
    let snapshot_elapsed = snapshot_started.elapsed();
    let started = Instant::now();
    for value in &keys {
        core.cancel("auth_without_capture", value);
    }
    let cancel_elapsed = started.elapsed();
    let restore_started = Instant::now();
    let restored = core.restore(&snapshot).unwrap_or(0);
    let restore_elapsed = restore_started.elapsed();
    let per_second = |elapsed: Duration| armed as f64 / elapsed.as_secs_f64();
    serde_json::json!({
        "armed": armed,
        "arm_per_s": per_second(arm_elapsed),
        "cancel_per_s": per_second(cancel_elapsed),
        "snapshot_ms": snapshot_elapsed.as_secs_f64() * 1e3,
        "snapshot_bytes": snapshot.len(),
        "restore_ms": restore_elapsed.as_secs_f64() * 1e3,
        "restored": restored,
    })
}

fn print_table(series: &[serde_json::Value], throughput: &serde_json::Value, busy: usize) {
    println!("\ntimer lateness, 1 ms period, {busy} busy threads (ms; drift = lateness of the last tick)");
    println!(
        "{:<34} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9} {:>10}",
        "method", "ticks", "elapsed_s", "p50", "p99", "p99.9", "max", "drift"
    );
    for row in series {
        println!(
            "{:<34} {:>9} {:>9.1} {:>8.3} {:>8.3} {:>8.3} {:>9.3} {:>10.3}",
            row["name"].as_str().unwrap_or("?"),
            row["ticks"],
            row["elapsed_s"].as_f64().unwrap_or(0.0),
            row["lateness_p50_ms"].as_f64().unwrap_or(0.0),
            row["lateness_p99_ms"].as_f64().unwrap_or(0.0),
            row["lateness_p999_ms"].as_f64().unwrap_or(0.0),
            row["lateness_max_ms"].as_f64().unwrap_or(0.0),
            row["drift_ms"].as_f64().unwrap_or(0.0),
        );
    }
    println!(
        "\nkeyed timers, {} armed: arm {:.0}/s, cancel {:.0}/s, snapshot {:.0} ms ({} bytes), restore {:.0} ms\n",
        throughput["armed"],
        throughput["arm_per_s"].as_f64().unwrap_or(0.0),
        throughput["cancel_per_s"].as_f64().unwrap_or(0.0),
        throughput["snapshot_ms"].as_f64().unwrap_or(0.0),
        throughput["snapshot_bytes"],
        throughput["restore_ms"].as_f64().unwrap_or(0.0),
    );
}

fn criterion_groups(criterion: &mut Criterion, armed: usize) {
    let mut group = criterion.benchmark_group(format!("timers_{armed}_armed"));
    let mut wheel = TimingWheel::with_capacity(0, armed + 1);
    for i in 0..armed as u64 {
        wheel.arm(1 + (i * 7_919) % 7_200_000, i);
    }
    let mut deadline = 0u64;
    group.bench_function("wheel_arm_cancel", |bencher| {
        bencher.iter(|| {
            deadline = (deadline + 7_919) % 7_200_000 + 1;
            let handle = wheel.arm(deadline, deadline);
            black_box(wheel.cancel(handle))
        })
    });
    let core = TimerCore::new(ManualClock::new(0), PERIOD, armed + 1);
    for i in 0..armed {
        let value = format!("txn-{i:09}");
        core.arm(
            payload("auth_without_capture", &value),
            Duration::from_millis(1 + (i as u64 * 7_919) % 7_200_000),
        );
    }
    let mut counter = 0u64;
    group.bench_function("keyed_arm_cancel", |bencher| {
        bencher.iter_batched(
            || {
                counter += 1;
                let value = format!("bench-{counter}");
                (payload("auth_without_capture", &value), value)
            },
            |(timer, key)| {
                core.arm(timer, Duration::from_secs(2));
                black_box(core.cancel("auth_without_capture", &key))
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn main() {
    let ticks = env_usize("VETO_TIMER_TICKS", 120_000).max(1);
    let busy = env_usize(
        "VETO_TIMER_BUSY_THREADS",
        std::thread::available_parallelism().map_or(2, usize::from),
    );
    let armed = env_usize("VETO_TIMER_ARMED", 1_000_000).max(1);

    let series = lateness_comparison(ticks, busy);
    let throughput = keyed_throughput(armed);
    print_table(&series, &throughput, busy);
    let report = serde_json::json!({
        "period_ms": 1,
        "busy_threads": busy,
        "lateness": series,
        "throughput": throughput,
    });
    let written = std::fs::create_dir_all("target").and_then(|()| {
        std::fs::write(
            "target/timer-lateness.json",
            serde_json::to_vec_pretty(&report).unwrap_or_default(),
        )
    });
    if let Err(error) = written {
        eprintln!("cannot write target/timer-lateness.json: {error}");
    }

    let mut criterion = Criterion::default().configure_from_args();
    criterion_groups(&mut criterion, armed);
    criterion.final_summary();
}
