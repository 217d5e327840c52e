//! Time sources for the timers: the system clock and a manual clock that tests move by hand.

use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A monotonic timeline (with an origin of its own) plus the wall clock, and a way to wait.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic time elapsed since this clock's origin; never goes backwards.
    fn monotonic(&self) -> Duration;

    /// Wall-clock time in milliseconds since the Unix epoch (may jump).
    fn wall_ms(&self) -> i64;

    /// Waits until `monotonic() >= deadline`, spinning for the last `spin` of the wait. May
    /// return early (callers re-check), and returns within about a millisecond of real time
    /// even if the deadline is further away, so callers can notice a stop request.
    fn wait_until(&self, deadline: Duration, spin: Duration);
}

/// The real clock: `Instant` for the timeline, `SystemTime` for the wall.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose monotonic origin is now.
    pub fn new() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

/// The longest single sleep of [`SystemClock::wait_until`], so a stop flag is seen promptly.
const MAX_SLEEP: Duration = Duration::from_millis(5);

impl Clock for SystemClock {
    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }

    fn wall_ms(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(since_epoch) => i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX),
            Err(before_epoch) => {
                -i64::try_from(before_epoch.duration().as_millis()).unwrap_or(i64::MAX)
            }
        }
    }

    fn wait_until(&self, deadline: Duration, spin: Duration) {
        let remaining = deadline.saturating_sub(self.monotonic());
        if remaining > spin {
            std::thread::sleep((remaining - spin).min(MAX_SLEEP));
            if deadline.saturating_sub(self.monotonic()) > spin {
                return;
            }
        }
        while self.monotonic() < deadline {
            std::hint::spin_loop();
        }
    }
}

#[derive(Debug)]
struct ManualTime {
    monotonic: Duration,
    /// The wall clock showed `wall_base_ms` when the timeline was at `wall_base`.
    wall_base_ms: i64,
    wall_base: Duration,
}

impl ManualTime {
    fn wall_ms(&self) -> i64 {
        let since_base = (self.monotonic - self.wall_base).as_millis();
        self.wall_base_ms
            .saturating_add(i64::try_from(since_base).unwrap_or(i64::MAX))
    }
}

/// A clock that only moves when told to; clones share the same time. For deterministic tests.
#[derive(Debug, Clone)]
pub struct ManualClock {
    shared: Arc<(Mutex<ManualTime>, Condvar)>,
}

impl ManualClock {
    /// A clock at monotonic zero showing `wall_ms` on the wall.
    pub fn new(wall_ms: i64) -> Self {
        ManualClock {
            shared: Arc::new((
                Mutex::new(ManualTime {
                    monotonic: Duration::ZERO,
                    wall_base_ms: wall_ms,
                    wall_base: Duration::ZERO,
                }),
                Condvar::new(),
            )),
        }
    }

    /// Moves both the monotonic and the wall clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let (time, moved) = &*self.shared;
        let mut time = time.lock();
        time.monotonic = time.monotonic.saturating_add(by);
        moved.notify_all();
    }

    /// Sets the wall clock alone (the monotonic timeline is unaffected), like an NTP step.
    pub fn set_wall_ms(&self, wall_ms: i64) {
        let mut time = self.shared.0.lock();
        time.wall_base_ms = wall_ms;
        time.wall_base = time.monotonic;
    }
}

impl Clock for ManualClock {
    fn monotonic(&self) -> Duration {
        self.shared.0.lock().monotonic
    }

    fn wall_ms(&self) -> i64 {
        self.shared.0.lock().wall_ms()
    }

    fn wait_until(&self, deadline: Duration, _spin: Duration) {
        let (time, moved) = &*self.shared;
        let mut time = time.lock();
        if time.monotonic < deadline {
            moved.wait_for(&mut time, Duration::from_millis(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = ManualClock::new(1_000);
        assert_eq!(clock.monotonic(), Duration::ZERO);
        clock.advance(Duration::from_millis(1_500));
        assert_eq!(clock.monotonic(), Duration::from_millis(1_500));
        assert_eq!(clock.wall_ms(), 2_500);
        clock.set_wall_ms(10);
        assert_eq!(clock.monotonic(), Duration::from_millis(1_500));
        assert_eq!(clock.wall_ms(), 10);
        for _ in 0..5 {
            clock.advance(Duration::from_micros(400));
        }
        assert_eq!(clock.wall_ms(), 12);
    }

    #[test]
    fn system_clock_waits_until_the_deadline() {
        let clock = SystemClock::new();
        let deadline = clock.monotonic() + Duration::from_millis(2);
        while clock.monotonic() < deadline {
            clock.wait_until(deadline, Duration::from_micros(50));
        }
        assert!(clock.monotonic() >= deadline);
    }
}
