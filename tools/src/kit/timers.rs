//! Timer lateness under CPU load: Veto's timer service and its wheel ticker beside a tokio
//! `interval` and a plain sleep loop, all run at once on busy cores.
//!
//! Lateness of tick k is `now − (t0 + k·period)` when the tick is seen, so a method whose error
//! accumulates (drift) shows growing lateness; the lateness of the last tick is the cumulative drift.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use veto::timer::{
    raise_to_realtime, SystemClock, Ticker, TimerConfig, TimerIds, TimerPayload, TimerService,
    TimingWheel,
};

/// The tick period every method is measured at.
pub const PERIOD: Duration = Duration::from_millis(1);

/// A way of waking up every [`PERIOD`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The real `TimerService`, one timer armed per millisecond; lateness as reported in `Fired`
    /// (includes rounding of unaligned deadlines up to the next tick, < 1 ms).
    Service,
    /// The service's loop without the channel: drift-corrected ticker + wheel, spinning the last 100 µs.
    WheelSpin,
    /// The same without the final spin.
    WheelNoSpin,
    /// `tokio::time::interval` with its default `MissedTickBehavior::Burst` (current-thread runtime).
    TokioInterval,
    /// A plain `sleep(period)` chain: each iteration's oversleep adds up.
    SleepLoop,
}

impl Method {
    /// Every method, in report order.
    pub const ALL: [Method; 5] = [
        Method::WheelSpin,
        Method::WheelNoSpin,
        Method::TokioInterval,
        Method::SleepLoop,
        Method::Service,
    ];

    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            Method::Service => "TimerService fired (end to end)",
            Method::WheelSpin => "wheel ticker (spin 100 us)",
            Method::WheelNoSpin => "wheel ticker (no spin)",
            Method::TokioInterval => "tokio interval (Burst)",
            Method::SleepLoop => "sleep(period) loop",
        }
    }

    /// Measures `ticks` ticks on the calling thread.
    pub fn run(self, ticks: usize) -> LatenessSeries {
        match self {
            Method::Service => service_series(ticks),
            Method::WheelSpin => wheel_series(self, ticks, Duration::from_micros(100)),
            Method::WheelNoSpin => wheel_series(self, ticks, Duration::ZERO),
            Method::TokioInterval => tokio_series(ticks),
            Method::SleepLoop => sleep_series(ticks),
        }
    }
}

/// Lateness of every tick of one method, in tick order.
#[derive(Debug, Clone)]
pub struct LatenessSeries {
    pub method: Method,
    pub lateness_ns: Vec<u64>,
    pub elapsed: Duration,
    /// Why the method could not be measured (then `lateness_ns` is empty).
    pub error: Option<String>,
}

/// Percentiles (nearest rank) and drift of a series, in milliseconds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LatenessSummary {
    pub method: Method,
    pub name: &'static str,
    pub ticks: usize,
    pub elapsed_s: f64,
    pub lateness_p50_ms: f64,
    pub lateness_p99_ms: f64,
    pub lateness_p999_ms: f64,
    pub lateness_max_ms: f64,
    /// Lateness of the last tick: how far the method's clock fell behind over the whole run.
    pub drift_ms: f64,
}

/// Nearest-rank quantile (0..=1) of sorted samples; 0 when empty.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64) * q - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl LatenessSeries {
    fn failed(method: Method, error: String) -> LatenessSeries {
        LatenessSeries {
            method,
            lateness_ns: Vec::new(),
            elapsed: Duration::ZERO,
            error: Some(error),
        }
    }

    /// The lateness samples, sorted.
    pub fn sorted(&self) -> Vec<u64> {
        let mut sorted = self.lateness_ns.clone();
        sorted.sort_unstable();
        sorted
    }

    /// Percentiles and drift.
    pub fn summary(&self) -> LatenessSummary {
        let sorted = self.sorted();
        let ms = |ns: u64| ns as f64 / 1e6;
        LatenessSummary {
            method: self.method,
            name: self.method.name(),
            ticks: self.lateness_ns.len(),
            elapsed_s: self.elapsed.as_secs_f64(),
            lateness_p50_ms: ms(quantile(&sorted, 0.50)),
            lateness_p99_ms: ms(quantile(&sorted, 0.99)),
            lateness_p999_ms: ms(quantile(&sorted, 0.999)),
            lateness_max_ms: ms(sorted.last().copied().unwrap_or(0)),
            drift_ms: ms(self.lateness_ns.last().copied().unwrap_or(0)),
        }
    }
}

/// The drift-corrected ticker advancing a wheel that holds one timer per tick. Records the
/// lateness of every tick, skipped ones included.
fn wheel_series(method: Method, ticks: usize, spin: Duration) -> LatenessSeries {
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
    while let Some(batch) = ticker.wait(&stop, true) {
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
    let error = (fired != ticks).then(|| format!("the wheel fired {fired} of {ticks} timers"));
    LatenessSeries {
        method,
        lateness_ns,
        elapsed: started.elapsed(),
        error,
    }
}

fn tokio_series(ticks: usize) -> LatenessSeries {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => return LatenessSeries::failed(Method::TokioInterval, e.to_string()),
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
        LatenessSeries {
            method: Method::TokioInterval,
            lateness_ns,
            elapsed: started.elapsed(),
            error: None,
        }
    })
}

fn sleep_series(ticks: usize) -> LatenessSeries {
    let t0 = Instant::now();
    let mut lateness_ns = Vec::with_capacity(ticks);
    for k in 1..=ticks as u32 {
        std::thread::sleep(PERIOD);
        let due = t0 + PERIOD * k;
        lateness_ns.push(nanos(Instant::now().saturating_duration_since(due)));
    }
    LatenessSeries {
        method: Method::SleepLoop,
        lateness_ns,
        elapsed: t0.elapsed(),
        error: None,
    }
}

fn service_series(ticks: usize) -> LatenessSeries {
    let (service, mut receiver) = match TimerService::start(TimerConfig::default()) {
        Ok(started) => started,
        Err(e) => return LatenessSeries::failed(Method::Service, e.to_string()),
    };
    let started = Instant::now();
    for k in 1..=ticks as u32 {
        let value = k.to_string();
        service.arm(timer_payload("bench", &value), PERIOD * k);
    }
    let mut lateness_ns = Vec::with_capacity(ticks);
    while lateness_ns.len() < ticks {
        match receiver.blocking_recv() {
            Some(fired) => lateness_ns.push(nanos(fired.lateness)),
            None => break,
        }
    }
    service.shutdown();
    let error = (lateness_ns.len() != ticks)
        .then(|| format!("the service fired {} of {ticks} timers", lateness_ns.len()));
    LatenessSeries {
        method: Method::Service,
        lateness_ns,
        elapsed: started.elapsed(),
        error,
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Bench timer `value` of sequence `rule`.
pub fn timer_payload(rule: &str, value: &str) -> TimerPayload {
    TimerPayload {
        rule: Arc::from(rule),
        ids: TimerIds::new(value, value, Some(value)),
    }
}

/// Threads spinning on integer work to keep cores busy; they stop when this is dropped.
pub struct BusyThreads {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<u64>>,
}

impl BusyThreads {
    /// Starts `count` spinning threads.
    pub fn start(count: usize) -> BusyThreads {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..count)
            .map(|seed| {
                let stop = Arc::clone(&stop);
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
            .collect();
        BusyThreads { stop, threads }
    }
}

impl Drop for BusyThreads {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Series of one comparison run and how the measuring threads were scheduled.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub series: Vec<LatenessSeries>,
    /// `None` when every method ran at real-time FIFO priority, else why it could not.
    pub normal_scheduling: Option<String>,
}

/// Runs `methods` at once, each on its own thread, for `ticks` ticks while `busy_threads`
/// threads spin. Every method gets the scheduling of Veto's timer thread (real-time FIFO when
/// permitted), so the comparison is between methods, not priorities.
pub fn compare(methods: &[Method], ticks: usize, busy_threads: usize) -> Comparison {
    let busy = BusyThreads::start(busy_threads);
    let runs: Vec<_> = methods
        .iter()
        .map(|&method| {
            std::thread::spawn(move || {
                let scheduling = raise_to_realtime().err();
                (method.run(ticks.max(1)), scheduling)
            })
        })
        .collect();
    let mut series = Vec::new();
    let mut normal_scheduling = None;
    for (run, &method) in runs.into_iter().zip(methods) {
        match run.join() {
            Ok((s, scheduling)) => {
                normal_scheduling = normal_scheduling.or(scheduling);
                series.push(s);
            }
            Err(_) => series.push(LatenessSeries::failed(method, "panicked".into())),
        }
    }
    drop(busy);
    Comparison {
        series,
        normal_scheduling,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let sorted: Vec<u64> = (1..=1000).collect();
        assert_eq!(quantile(&sorted, 0.5), 500);
        assert_eq!(quantile(&sorted, 0.99), 990);
        assert_eq!(quantile(&sorted, 0.999), 999);
        assert_eq!(quantile(&sorted, 1.0), 1000);
        assert_eq!(quantile(&[], 0.5), 0);
    }

    #[test]
    fn summary_reports_drift_as_the_last_ticks_lateness() {
        let series = LatenessSeries {
            method: Method::SleepLoop,
            lateness_ns: vec![1_000_000, 2_000_000, 500_000],
            elapsed: Duration::from_millis(3),
            error: None,
        };
        let s = series.summary();
        assert_eq!(s.ticks, 3);
        assert_eq!(s.lateness_max_ms, 2.0);
        assert_eq!(s.drift_ms, 0.5);
        assert_eq!(s.lateness_p50_ms, 1.0);
    }

    #[test]
    fn every_method_measures_every_tick() {
        let comparison = compare(
            &[Method::Service, Method::WheelSpin, Method::TokioInterval],
            50,
            1,
        );
        assert_eq!(comparison.series.len(), 3);
        for s in &comparison.series {
            assert_eq!(s.error, None, "{:?}", s.method);
            assert_eq!(s.lateness_ns.len(), 50, "{:?}", s.method);
            assert!(
                s.elapsed >= PERIOD * 40,
                "{:?} took {:?}",
                s.method,
                s.elapsed
            );
        }
    }
}
