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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use veto::timer::{
    raise_to_realtime, ManualClock, SystemClock, Ticker, TimerConfig, TimerCore, TimerKey,
    TimerPayload, TimerService, TimingWheel,
};

const PERIOD: Duration = Duration::from_millis(1);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Lateness of every tick (ns) relative to t0 + k·period, for one timing method.
struct Series {
    name: &'static str,
    lateness_ns: Vec<u64>,
    elapsed: Duration,
}

impl Series {
    fn percentile(sorted: &[u64], quantile: f64) -> u64 {
        if sorted.is_empty() {
            return 0;
        }
        let rank = ((sorted.len() as f64) * quantile).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    fn summary(&self) -> serde_json::Value {
        let mut sorted = self.lateness_ns.clone();
        sorted.sort_unstable();
        let drift = self.lateness_ns.last().copied().unwrap_or(0);
        let ms = |ns: u64| ns as f64 / 1e6;
        serde_json::json!({
            "method": self.name,
            "ticks": self.lateness_ns.len(),
            "elapsed_s": self.elapsed.as_secs_f64(),
            "lateness_p50_ms": ms(Self::percentile(&sorted, 0.50)),
            "lateness_p99_ms": ms(Self::percentile(&sorted, 0.99)),
            "lateness_p999_ms": ms(Self::percentile(&sorted, 0.999)),
            "lateness_max_ms": ms(sorted.last().copied().unwrap_or(0)),
            "drift_ms": ms(drift),
        })
    }
}

/// The service's loop without the channel: a drift-corrected ticker advancing a wheel that
/// holds one timer per tick. Records the lateness of every tick, skipped ones included.
fn wheel_series(name: &'static str, ticks: usize, spin: Duration) -> Series {
    let clock = SystemClock::new();
    let mut ticker = Ticker::new(clock, PERIOD, spin);
    let first = ticker.next_tick();
    let last = first + ticks as u64 - 1;
    let mut wheel = TimingWheel::with_capacity(first - 1, ticks);
    for tick in first..=last {
        wheel.arm(tick, tick);
    }
    let stop = AtomicBool::new(false);
    let mut lateness_ns = Vec::with_capacity(ticks);
    let mut fired = 0usize;
    let started = Instant::now();
    while let Some(batch) = ticker.wait(&stop) {
        let end = batch.last.min(last);
        wheel.advance_to(end, |expired| {
            fired += usize::from(expired.value == expired.deadline_tick)
        });
        for tick in batch.first..=end {
            lateness_ns.push(nanos(ticker.lateness(tick, batch.now)));
        }
        if end == last {
            break;
        }
    }
    assert_eq!(fired, ticks, "the wheel lost or misfired timers");
    Series {
        name,
        lateness_ns,
        elapsed: started.elapsed(),
    }
}

/// `tokio::time::interval` with its default `MissedTickBehavior::Burst`.
fn tokio_series(ticks: usize) -> Series {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build();
    let Ok(runtime) = runtime else {
        return Series {
            name: "tokio interval (Burst)",
            lateness_ns: Vec::new(),
            elapsed: Duration::ZERO,
        };
    };
    runtime.block_on(async move {
        let mut interval = tokio::time::interval(PERIOD);
        let t0 = interval.tick().await;
        let started = Instant::now();
        let mut lateness_ns = Vec::with_capacity(ticks);
        for k in 1..=ticks as u32 {
            interval.tick().await;
            let due = t0.into_std() + PERIOD * k;
            lateness_ns.push(nanos(Instant::now().saturating_duration_since(due)));
        }
        Series {
            name: "tokio interval (Burst)",
            lateness_ns,
            elapsed: started.elapsed(),
        }
    })
}

/// A plain `sleep(period)` chain: each iteration's oversleep adds up.
fn sleep_series(ticks: usize) -> Series {
    let t0 = Instant::now();
    let mut lateness_ns = Vec::with_capacity(ticks);
    for k in 1..=ticks as u32 {
        std::thread::sleep(PERIOD);
        let due = t0 + PERIOD * k;
        lateness_ns.push(nanos(Instant::now().saturating_duration_since(due)));
    }
    Series {
        name: "sleep(period) loop",
        lateness_ns,
        elapsed: t0.elapsed(),
    }
}

/// The real service end to end: one timer per millisecond, lateness as reported in `Fired`
/// (includes rounding of unaligned deadlines up to the next tick, < 1 ms).
fn service_series(ticks: usize) -> Series {
    let Ok((service, mut receiver)) = TimerService::start(TimerConfig::default()) else {
        return Series {
            name: "TimerService fired",
            lateness_ns: Vec::new(),
            elapsed: Duration::ZERO,
        };
    };
    let started = Instant::now();
    for k in 1..=ticks as u32 {
        let value = k.to_string();
        service.arm(key("bench", &value), payload("bench", &value), PERIOD * k);
    }
    let mut lateness_ns = Vec::with_capacity(ticks);
    while lateness_ns.len() < ticks {
        match receiver.blocking_recv() {
            Some(fired) => lateness_ns.push(nanos(fired.lateness)),
            None => break,
        }
    }
    service.shutdown();
    Series {
        name: "TimerService fired (end to end)",
        lateness_ns,
        elapsed: started.elapsed(),
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn key(rule: &str, value: &str) -> TimerKey {
    TimerKey {
        sequence: Arc::from(rule),
        key: value.to_owned(),
    }
}

fn payload(rule: &str, value: &str) -> TimerPayload {
    TimerPayload {
        rule: Arc::from(rule),
        event_id: value.to_owned(),
        txn_id: Some(value.to_owned()),
        key: value.to_owned(),
    }
}

/// Keeps every core busy with integer work until `stop` is set.
fn start_busy_threads(count: usize, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<u64>> {
    (0..count)
        .map(|seed| {
            let stop = Arc::clone(stop);
            std::thread::spawn(move || {
                let mut state = seed as u64 + 1;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..10_000 {
                        state = state
                            .wrapping_mul(6_364_136_223_846_793_005)
                            .wrapping_add(1);
                    }
                }
                black_box(state)
            })
        })
        .collect()
}

fn lateness_comparison(ticks: usize, busy_threads: usize) -> Vec<serde_json::Value> {
    let stop = Arc::new(AtomicBool::new(false));
    let busy = start_busy_threads(busy_threads, &stop);
    // Every method runs with the same scheduling as Veto's timer thread (real-time FIFO when
    // permitted), so the comparison is between methods, not priorities.
    let realtime = |run: fn(usize) -> Series| {
        std::thread::spawn(move || {
            if let Err(reason) = raise_to_realtime() {
                eprintln!("normal scheduling: {reason}");
            }
            run(ticks)
        })
    };
    let runs: Vec<std::thread::JoinHandle<Series>> = vec![
        realtime(|t| wheel_series("wheel ticker (spin 100 us)", t, Duration::from_micros(100))),
        realtime(|t| wheel_series("wheel ticker (no spin)", t, Duration::ZERO)),
        realtime(tokio_series),
        realtime(sleep_series),
        realtime(service_series),
    ];
    let series: Vec<Series> = runs.into_iter().filter_map(|run| run.join().ok()).collect();
    stop.store(true, Ordering::Relaxed);
    for thread in busy {
        let _ = thread.join();
    }
    series.iter().map(Series::summary).collect()
}

/// Arms `armed` keyed timers into a core, then times arming and cancelling them all.
fn keyed_throughput(armed: usize) -> serde_json::Value {
    let core = TimerCore::new(ManualClock::new(0), PERIOD, armed);
    let keys: Vec<String> = (0..armed).map(|i| format!("txn-{i:09}")).collect();
    let started = Instant::now();
    for (i, value) in keys.iter().enumerate() {
        let after = Duration::from_millis(1 + (i as u64 * 7_919) % 7_200_000);
        core.arm(
            key("auth_without_capture", value),
            payload("auth_without_capture", value),
            after,
        );
    }
    let arm_elapsed = started.elapsed();
    let snapshot_started = Instant::now();
    let snapshot = core.snapshot();
    let snapshot_elapsed = snapshot_started.elapsed();
    let started = Instant::now();
    for value in &keys {
        core.cancel(&key("auth_without_capture", value));
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
            row["method"].as_str().unwrap_or("?"),
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
            key("auth_without_capture", &value),
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
                (
                    key("auth_without_capture", &value),
                    payload("auth_without_capture", &value),
                )
            },
            |(timer_key, timer_payload)| {
                core.arm(timer_key.clone(), timer_payload, Duration::from_secs(2));
                black_box(core.cancel(&timer_key))
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
