//! Metrics and log lines of the timer service, one function per notable occurrence.

use metrics::{Counter, Gauge, Histogram};
use std::time::Duration;

/// Histogram buckets (seconds) for `veto_timer_lateness_seconds`, from 100 µs up; the
/// exporter is configured with them where the recorder is installed.
pub const LATENESS_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// A tick observed this late counts as a stall of the timer thread (suspend, clock jump,
/// starved CPU) and is logged.
const STALL_THRESHOLD: Duration = Duration::from_millis(100);

/// Metric handles registered once when the service starts.
#[derive(Debug, Clone)]
pub(crate) struct Telemetry {
    armed: Gauge,
    fired: Counter,
    cancelled: Counter,
    lateness: Histogram,
    stalls: Counter,
}

impl Telemetry {
    pub(crate) fn register() -> Self {
        Telemetry {
            armed: metrics::gauge!("veto_timers_armed"),
            fired: metrics::counter!("veto_timers_fired_total"),
            cancelled: metrics::counter!("veto_timers_cancelled_total"),
            lateness: metrics::histogram!("veto_timer_lateness_seconds"),
            stalls: metrics::counter!("veto_timer_stalls_total"),
        }
    }

    /// Whether the timer thread runs with real-time scheduling (see `raise_to_realtime`).
    pub(crate) fn realtime_scheduling(&self, result: &Result<(), String>) {
        metrics::gauge!("veto_timer_thread_realtime").set(if result.is_ok() { 1.0 } else { 0.0 });
        match result {
            Ok(()) => tracing::info!("timer thread runs with real-time (FIFO) scheduling"),
            Err(reason) => tracing::info!(
                reason,
                "timer thread keeps normal scheduling (no real-time privilege); ticks may be late under CPU load"
            ),
        }
    }

    pub(crate) fn armed_changed(&self, armed: usize) {
        self.armed.set(armed as f64);
    }

    pub(crate) fn timer_fired(&self, lateness: Duration) {
        self.fired.increment(1);
        self.lateness.record(lateness.as_secs_f64());
    }

    pub(crate) fn timers_cancelled(&self, count: usize) {
        self.cancelled.increment(count as u64);
    }

    /// Called for every tick batch; logs and counts only when the thread woke very late.
    pub(crate) fn tick_observed(&self, lateness: Duration, ticks: u64) {
        if lateness >= STALL_THRESHOLD {
            self.stalls.increment(1);
            tracing::warn!(
                lateness_ms = lateness.as_millis() as u64,
                ticks,
                "timer thread woke late, processing every skipped tick in order"
            );
        }
    }

    pub(crate) fn snapshot_restored(&self, restored: usize, overdue: usize, duplicates: usize) {
        tracing::info!(
            restored,
            overdue,
            duplicates,
            "timers restored from snapshot"
        );
    }

    pub(crate) fn unacknowledged_forgotten(&self, count: usize) {
        metrics::counter!("veto_timer_unacknowledged_forgotten_total").increment(count as u64);
        tracing::warn!(
            count,
            "fired timers forgotten before their timeout decision was acknowledged (too many waiting)"
        );
    }

    pub(crate) fn receiver_closed(&self, dropped: usize) {
        tracing::warn!(dropped, "fired timers dropped: the receiver is gone");
    }
}
