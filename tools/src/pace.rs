//! Fixed-rate pacing: tells a sending loop how long to wait before the next event.

use std::time::{Duration, Instant};

/// Paces a loop at a fixed rate (events per second) measured from its start; `None` = flat out.
/// A loop that falls behind catches up without sleeping (no coordinated omission in the schedule).
#[derive(Debug, Clone)]
pub struct Pacer {
    start: Instant,
    interval: Option<Duration>,
}

impl Pacer {
    /// A pacer for `rate` events per second; `None` or a non-positive rate means unlimited.
    pub fn new(rate: Option<f64>) -> Pacer {
        let interval = rate
            .filter(|r| r.is_finite() && *r > 0.0)
            .map(|r| Duration::from_secs_f64(1.0 / r));
        Pacer {
            start: Instant::now(),
            interval,
        }
    }

    /// When event number `n` (from 0) is due.
    pub fn due(&self, n: u64) -> Instant {
        match self.interval {
            Some(interval) => self.start + interval.mul_f64(n as f64),
            None => self.start,
        }
    }

    /// How long to wait at `now` before sending event `n`; zero when it is due or overdue.
    pub fn wait(&self, n: u64, now: Instant) -> Duration {
        self.due(n).saturating_duration_since(now)
    }

    /// Sleeps until event `n` is due (short waits are skipped to keep the thread busy-free).
    pub fn pace(&self, n: u64) {
        let wait = self.wait(n, Instant::now());
        if wait >= Duration::from_micros(200) {
            std::thread::sleep(wait);
        }
    }

    /// When the pacer started.
    pub fn start(&self) -> Instant {
        self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_events_evenly() {
        let pacer = Pacer::new(Some(1_000.0));
        assert_eq!(pacer.due(0), pacer.start());
        assert_eq!(pacer.due(500) - pacer.start(), Duration::from_millis(500));
        assert_eq!(pacer.wait(10, pacer.start()), Duration::from_millis(10));
        assert_eq!(
            pacer.wait(10, pacer.start() + Duration::from_secs(1)),
            Duration::ZERO
        );
    }

    #[test]
    fn unlimited_never_waits() {
        for rate in [None, Some(0.0), Some(-5.0), Some(f64::NAN)] {
            let pacer = Pacer::new(rate);
            assert_eq!(pacer.wait(1_000_000, pacer.start()), Duration::ZERO);
        }
    }
}
