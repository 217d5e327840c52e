//! Drift-corrected tick source: tick k is due at k·period on a clock's monotonic timeline.
//!
//! The ticker never chains `sleep(period)`: it waits for the absolute due time of the next tick,
//! so lateness never accumulates. When it wakes late it reports every tick that became due
//! meanwhile as one batch, so the caller processes skipped ticks in order instead of losing them.

use super::clock::Clock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Ticks `first..=last` are due; `now` is the clock reading when they were observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickBatch {
    pub first: u64,
    pub last: u64,
    pub now: Duration,
}

impl TickBatch {
    /// Number of ticks in the batch (more than one means the ticker woke late).
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    /// Always false: a batch holds at least one tick.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Produces tick batches at absolute deadlines on a clock.
#[derive(Debug)]
pub struct Ticker<C> {
    clock: C,
    period_ns: u64,
    spin: Duration,
    next_tick: u64,
}

impl<C: Clock> Ticker<C> {
    /// A ticker whose first tick is the first one due strictly after the clock's current time.
    /// `period` is clamped to at least 1 µs.
    pub fn new(clock: C, period: Duration, spin: Duration) -> Self {
        let period_ns = period_nanos(period);
        let next_tick = nanos(clock.monotonic()) / period_ns + 1;
        Ticker {
            clock,
            period_ns,
            spin,
            next_tick,
        }
    }

    /// The next tick that will be reported.
    pub fn next_tick(&self) -> u64 {
        self.next_tick
    }

    /// Due time of tick `tick` on the clock's timeline.
    pub fn due_time(&self, tick: u64) -> Duration {
        Duration::from_nanos(tick.saturating_mul(self.period_ns))
    }

    /// How late tick `tick` is when observed at `now`.
    pub fn lateness(&self, tick: u64, now: Duration) -> Duration {
        now.saturating_sub(self.due_time(tick))
    }

    /// Waits for the next tick and returns every tick due by the time it woke; `None` once `stop`
    /// is set. `precise` spins the last part of the wait (the configured spin); without it the
    /// thread only sleeps, for ticks at which nothing can fire.
    pub fn wait(&mut self, stop: &AtomicBool, precise: bool) -> Option<TickBatch> {
        let due = self.due_time(self.next_tick);
        let spin = if precise { self.spin } else { Duration::ZERO };
        loop {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            self.clock.wait_until(due, spin);
            let now = self.clock.monotonic();
            if now >= due {
                let last = (nanos(now) / self.period_ns).max(self.next_tick);
                let batch = TickBatch {
                    first: self.next_tick,
                    last,
                    now,
                };
                self.next_tick = last + 1;
                return Some(batch);
            }
        }
    }
}

/// A period in nanoseconds, at least 1 µs.
pub(crate) fn period_nanos(period: Duration) -> u64 {
    nanos(period).max(1_000)
}

/// A duration in nanoseconds, saturating (u64 nanoseconds last 584 years).
pub(crate) fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Moves the calling thread to real-time FIFO scheduling at the lowest real-time priority, so
/// a tick is never queued behind busy normal threads. Without the privilege (CAP_SYS_NICE or
/// an `RLIMIT_RTPRIO` allowance) nothing changes and the reason comes back; the timer thread
/// reports either (`veto_timer_thread_realtime`).
pub fn raise_to_realtime() -> Result<(), String> {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, RealtimeThreadSchedulePolicy,
        ThreadPriority, ThreadSchedulePolicy,
    };
    set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
    )
    .map_err(|e| format!("{e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timer::clock::ManualClock;
    use std::sync::Arc;

    #[test]
    fn ticks_are_due_at_absolute_multiples_of_the_period() {
        let clock = ManualClock::new(0);
        let mut ticker = Ticker::new(clock.clone(), Duration::from_millis(1), Duration::ZERO);
        assert_eq!(ticker.next_tick(), 1);
        clock.advance(Duration::from_micros(1_300));
        let stop = AtomicBool::new(false);
        let batch = ticker.wait(&stop, true);
        assert_eq!(
            batch,
            Some(TickBatch {
                first: 1,
                last: 1,
                now: Duration::from_micros(1_300)
            })
        );
        // The next due time stays at 2 ms, not 1.3 ms + 1 ms.
        assert_eq!(
            ticker.due_time(ticker.next_tick()),
            Duration::from_millis(2)
        );
        assert_eq!(
            ticker.lateness(1, Duration::from_micros(1_300)),
            Duration::from_micros(300)
        );
    }

    #[test]
    fn a_late_wake_reports_every_skipped_tick() {
        let clock = ManualClock::new(0);
        let mut ticker = Ticker::new(clock.clone(), Duration::from_millis(1), Duration::ZERO);
        clock.advance(Duration::from_secs(5));
        let stop = AtomicBool::new(false);
        let batch = ticker.wait(&stop, true);
        assert_eq!(
            batch.map(|batch| (batch.first, batch.last, batch.len())),
            Some((1, 5_000, 5_000))
        );
        assert_eq!(ticker.next_tick(), 5_001);
    }

    #[test]
    fn wait_returns_none_when_stopped() {
        let clock = ManualClock::new(0);
        let mut ticker = Ticker::new(clock, Duration::from_millis(1), Duration::ZERO);
        let stop = Arc::new(AtomicBool::new(false));
        let stopper = Arc::clone(&stop);
        let handle = std::thread::spawn(move || ticker.wait(&stopper, true));
        stop.store(true, Ordering::Relaxed);
        assert_eq!(handle.join().ok(), Some(None));
    }

    #[test]
    fn realtime_scheduling_takes_effect_or_says_why_not() {
        let outcome = std::thread::spawn(|| {
            let result = raise_to_realtime();
            (result, thread_priority::thread_schedule_policy())
        })
        .join()
        .expect("thread");
        match outcome {
            (Ok(()), Ok(policy)) => assert_eq!(
                policy,
                thread_priority::ThreadSchedulePolicy::Realtime(
                    thread_priority::RealtimeThreadSchedulePolicy::Fifo
                )
            ),
            (Err(reason), _) => assert!(!reason.is_empty()),
            (Ok(()), Err(e)) => panic!("policy unreadable: {e:?}"),
        }
    }
}
