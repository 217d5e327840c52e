//! The timer service: a dedicated thread ticking a drift-corrected clock over keyed timers.
//!
//! Workers arm and cancel through `&self` (one short mutex hold, never waiting for the thread);
//! fired timers leave through a bounded tokio channel read by the pipeline.

use super::clock::{Clock, SystemClock};
use super::error::TimerError;
use super::keyed::TimerCore;
use super::model::{Fired, TimerConfig, TimerPayload};
use super::telemetry::Telemetry;
use super::ticker::Ticker;
use parking_lot::{Mutex, MutexGuard};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long the timer thread waits before retrying a send into a full channel.
const FULL_CHANNEL_BACKOFF: Duration = Duration::from_micros(200);

/// Receives fired timers; usable from async code ([`recv`](Self::recv)) and from plain threads.
#[derive(Debug)]
pub struct FiredReceiver {
    inner: mpsc::Receiver<Fired>,
}

impl FiredReceiver {
    /// The next fired timer; `None` once the service has shut down and the channel is drained.
    pub async fn recv(&mut self) -> Option<Fired> {
        self.inner.recv().await
    }

    /// Blocking variant of [`recv`](Self::recv); must not be called from async code.
    pub fn blocking_recv(&mut self) -> Option<Fired> {
        self.inner.blocking_recv()
    }

    /// A fired timer if one is waiting.
    pub fn try_recv(&mut self) -> Result<Fired, mpsc::error::TryRecvError> {
        self.inner.try_recv()
    }

    /// The underlying tokio receiver.
    pub fn into_inner(self) -> mpsc::Receiver<Fired> {
        self.inner
    }
}

/// Millisecond timers keyed by (sequence rule, correlation value), fired by a dedicated thread.
#[derive(Debug)]
pub struct TimerService<C: Clock = SystemClock> {
    core: Arc<TimerCore<C>>,
    /// Held by the timer thread while it fires and delivers; [`TimerService::pause`] takes it.
    firing: Arc<Mutex<()>>,
    /// Timers handed to the channel since start.
    delivered: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    /// While set nothing fires (a standby instance): due timers wait, armed and cancellable.
    held: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TimerService<SystemClock> {
    /// Starts the timer thread on the system clock.
    pub fn start(config: TimerConfig) -> Result<(TimerService, FiredReceiver), TimerError> {
        Self::start_with_clock(config, SystemClock::new())
    }
}

impl<C: Clock + Clone> TimerService<C> {
    /// Starts the timer thread on `clock` (a [`ManualClock`](super::ManualClock) in tests).
    pub fn start_with_clock(
        config: TimerConfig,
        clock: C,
    ) -> Result<(TimerService<C>, FiredReceiver), TimerError> {
        let core = Arc::new(TimerCore::new(
            clock.clone(),
            config.resolution,
            config.initial_capacity,
        ));
        let (sender, receiver) = mpsc::channel(config.channel_capacity.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let held = Arc::new(AtomicBool::new(false));
        let firing = Arc::new(Mutex::new(()));
        let delivered = Arc::new(AtomicU64::new(0));
        let ticker = Ticker::new(clock, config.resolution, config.spin);
        let thread = std::thread::Builder::new()
            .name("veto-timers".to_owned())
            .spawn({
                let core = Arc::clone(&core);
                let stop = Arc::clone(&stop);
                let held = Arc::clone(&held);
                let firing = Arc::clone(&firing);
                let delivered = Arc::clone(&delivered);
                move || {
                    let output = Output {
                        sender: &sender,
                        firing: &firing,
                        delivered: &delivered,
                    };
                    run_timer_thread(&core, ticker, &output, &stop, &held)
                }
            })
            .map_err(TimerError::Spawn)?;
        let service = TimerService {
            core,
            firing,
            delivered,
            stop,
            held,
            thread: Some(thread),
        };
        Ok((service, FiredReceiver { inner: receiver }))
    }
}

impl<C: Clock> TimerService<C> {
    /// Arms a timer firing `after` from now. Returns `false` and changes nothing if a timer is
    /// already armed for its rule and key: the first arming wins and its deadline is not
    /// extended.
    pub fn arm(&self, timer: TimerPayload, after: Duration) -> bool {
        self.core.arm(timer, after)
    }

    /// Cancels the timer of sequence rule `sequence` keyed by `key`; `false` if none is armed
    /// (never armed, cancelled, or fired already — a fired timer may still be on its way
    /// through the channel).
    pub fn cancel(&self, sequence: &str, key: &str) -> bool {
        self.core.cancel(sequence, key)
    }

    /// Number of armed timers.
    pub fn armed(&self) -> usize {
        self.core.armed()
    }

    /// Cancels every timer of the sequence rule `rule` (the rule was removed); returns how many.
    pub fn cancel_sequence(&self, rule: &str) -> usize {
        self.core.cancel_sequence(rule)
    }

    /// Serialises every armed timer, and every fired one not acknowledged yet, for the store's
    /// checkpoint (see `docs/timers.md`).
    pub fn snapshot(&self) -> Vec<u8> {
        self.core.snapshot()
    }

    /// Like [`snapshot`](Self::snapshot) but only the armed timers, without the fired ones
    /// (for exactly-once checkpoints, whose fired timers are all in the transaction).
    pub fn snapshot_armed(&self) -> Vec<u8> {
        self.core.snapshot_armed()
    }

    /// Stops firing until the guard is dropped (due timers then fire at once, late); waits
    /// for a firing in progress to hand its timers to the channel.
    pub fn pause(&self) -> MutexGuard<'_, ()> {
        self.firing.lock()
    }

    /// The timeout decision of fired timer `id` is in Kafka (or was dropped on purpose): the
    /// timer leaves the snapshots.
    pub fn acknowledge(&self, id: u64) {
        self.core.acknowledge(id);
    }

    /// Stops firing for good (the service is shutting down): the timer thread hands over what
    /// it is firing and exits; every timer still armed stays in snapshots and fires after a
    /// restart. Arming, cancelling and snapshots keep working.
    pub fn stop_firing(&self) {
        let _firing = self.firing.lock();
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Holds every timer (a standby instance publishes nothing): due timers stay armed, can be
    /// cancelled and are in snapshots; they fire at once, late, on [`release`](Self::release).
    /// Waits for a firing in progress to hand its timers to the channel.
    pub fn hold(&self) {
        let _firing = self.firing.lock();
        self.held.store(true, Ordering::Release);
    }

    /// Ends a [`hold`](Self::hold): every timer due meanwhile fires at the next tick.
    pub fn release(&self) {
        self.held.store(false, Ordering::Release);
    }

    /// Fired timers handed to the channel since start.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Acquire)
    }

    /// Re-arms the timers of a snapshot; overdue ones fire at once. Returns how many were armed.
    pub fn restore(&self, bytes: &[u8]) -> Result<usize, TimerError> {
        self.core.restore(bytes)
    }

    /// Stops and joins the timer thread. Armed timers stay in place (snapshot them first if
    /// they must survive); timers fired but not yet accepted by a full channel are dropped.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl<C: Clock> Drop for TimerService<C> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("timer thread panicked");
            }
        }
    }
}

/// Where the timer thread hands fired timers.
struct Output<'a> {
    sender: &'a mpsc::Sender<Fired>,
    firing: &'a Mutex<()>,
    delivered: &'a AtomicU64,
}

/// The timer thread: wait for the next tick, fire everything due, hand it to the channel.
fn run_timer_thread<C: Clock>(
    core: &TimerCore<C>,
    mut ticker: Ticker<C>,
    output: &Output<'_>,
    stop: &AtomicBool,
    held: &AtomicBool,
) {
    let telemetry = Telemetry::register();
    telemetry.realtime_scheduling(&super::ticker::raise_to_realtime());
    let mut fired = Vec::new();
    let mut receiver_gone = false;
    // Spin only before ticks at which a timer can fire; other ticks are slept through, which
    // keeps the spin's CPU away from the workers while no deadline is near.
    // While held, every tick is slept through: due timers must not make the thread spin.
    let precise = |tick| !held.load(Ordering::Acquire) && core.may_fire_at(tick);
    while let Some(batch) = ticker.wait(stop, precise(ticker.next_tick())) {
        let _firing = output.firing.lock();
        if stop.load(Ordering::Relaxed) {
            break; // stop_firing: nothing fires after it returned
        }
        if held.load(Ordering::Acquire) {
            continue; // hold: the wheel stays where it is; release fires what fell due
        }
        telemetry.tick_observed(ticker.lateness(batch.first, batch.now), batch.len());
        core.fire_due(&mut fired);
        let mut pending = fired.drain(..);
        while !receiver_gone {
            let Some(timer) = pending.next() else {
                break;
            };
            if deliver(output.sender, timer, stop) {
                output.delivered.fetch_add(1, Ordering::AcqRel);
            } else if !stop.load(Ordering::Relaxed) {
                receiver_gone = true;
                telemetry.receiver_closed(pending.len() + 1);
            }
        }
    }
}

/// Sends one fired timer, waiting while the channel is full; `false` if the receiver is gone
/// or the service is stopping.
fn deliver(sender: &mpsc::Sender<Fired>, mut timer: Fired, stop: &AtomicBool) -> bool {
    loop {
        match sender.try_send(timer) {
            Ok(()) => return true,
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
            Err(mpsc::error::TrySendError::Full(returned)) => {
                if stop.load(Ordering::Relaxed) {
                    return false;
                }
                timer = returned;
                std::thread::sleep(FULL_CHANNEL_BACKOFF);
            }
        }
    }
}

/// Test helper: receives with a real-time limit so a missing timer fails the test instead of
/// hanging it.
#[cfg(test)]
pub(crate) fn recv_within(receiver: &mut FiredReceiver, limit: Duration) -> Option<Fired> {
    let give_up = std::time::Instant::now() + limit;
    loop {
        match receiver.try_recv() {
            Ok(timer) => return Some(timer),
            Err(mpsc::error::TryRecvError::Disconnected) => return None,
            Err(mpsc::error::TryRecvError::Empty) if std::time::Instant::now() >= give_up => {
                return None
            }
            Err(mpsc::error::TryRecvError::Empty) => std::thread::sleep(Duration::from_micros(200)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timer::clock::ManualClock;
    use crate::timer::TimerIds;
    use std::time::Instant;

    fn payload(value: &str) -> TimerPayload {
        TimerPayload {
            rule: Arc::from("auth_without_capture"),
            ids: TimerIds::new(value, value, Some(value)),
        }
    }

    #[test]
    fn the_service_can_be_shared_between_worker_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<TimerService>();
        assert_send_sync::<TimerService<ManualClock>>();
    }

    #[test]
    fn after_stop_firing_due_timers_stay_armed_for_the_final_snapshot() {
        let clock = ManualClock::new(0);
        let started = TimerService::start_with_clock(TimerConfig::default(), clock.clone());
        let Ok((service, mut receiver)) = started else {
            panic!("timer thread did not start");
        };
        assert!(service.arm(payload("early"), Duration::from_millis(100)));
        clock.advance(Duration::from_millis(200));
        assert!(recv_within(&mut receiver, Duration::from_secs(10)).is_some());
        assert!(service.arm(payload("late"), Duration::from_millis(100)));
        service.stop_firing();
        clock.advance(Duration::from_secs(5));
        assert!(recv_within(&mut receiver, Duration::from_millis(300)).is_none());
        assert_eq!(service.armed(), 1);
        // the snapshot still holds it: a restart fires it (overdue)
        let (restored, _receiver) =
            TimerService::start_with_clock(TimerConfig::default(), ManualClock::new(0))
                .unwrap_or_else(|_| panic!("timer thread did not start"));
        assert!(restored.restore(&service.snapshot_armed()).is_ok());
        assert_eq!(restored.armed(), 1);
    }

    #[test]
    fn held_timers_stay_cancellable_and_fire_on_release() {
        let clock = ManualClock::new(0);
        let started = TimerService::start_with_clock(TimerConfig::default(), clock.clone());
        let Ok((service, mut receiver)) = started else {
            panic!("timer thread did not start");
        };
        service.hold();
        assert!(service.arm(payload("kept"), Duration::from_millis(100)));
        assert!(service.arm(payload("gone"), Duration::from_millis(100)));
        clock.advance(Duration::from_secs(2));
        assert!(recv_within(&mut receiver, Duration::from_millis(300)).is_none());
        // due but held: still armed, so the capture that arrives now cancels it
        assert!(service.cancel("auth_without_capture", "gone"));
        assert_eq!(service.armed(), 1);
        service.release();
        // the next tick fires everything due by the clock
        clock.advance(Duration::from_millis(10));
        let fired = recv_within(&mut receiver, Duration::from_secs(10)).expect("fires");
        assert_eq!(fired.payload.event_id(), "kept");
        assert!(recv_within(&mut receiver, Duration::from_millis(300)).is_none());
    }

    #[test]
    fn the_thread_fires_on_a_manual_clock_jump_in_order() {
        let clock = ManualClock::new(0);
        let started = TimerService::start_with_clock(TimerConfig::default(), clock.clone());
        let Ok((service, mut receiver)) = started else {
            panic!("timer thread did not start");
        };
        for (value, after_ms) in [("c", 3_000), ("a", 1_000), ("b", 2_000), ("d", 6_000)] {
            assert!(service.arm(payload(value), Duration::from_millis(after_ms)));
        }
        assert!(service.cancel("auth_without_capture", "b"));
        clock.advance(Duration::from_secs(5));
        let mut order = Vec::new();
        for _ in 0..2 {
            let timer = recv_within(&mut receiver, Duration::from_secs(10));
            order.extend(timer.map(|timer| (timer.payload.key().to_owned(), timer.lateness)));
        }
        assert_eq!(
            order,
            vec![
                ("a".to_owned(), Duration::from_secs(4)),
                ("c".to_owned(), Duration::from_secs(2))
            ]
        );
        assert_eq!(service.armed(), 1);
        service.shutdown();
        assert!(recv_within(&mut receiver, Duration::from_secs(10)).is_none());
    }

    #[test]
    fn async_receivers_get_fired_timers() {
        let clock = ManualClock::new(0);
        let Ok((service, mut receiver)) =
            TimerService::start_with_clock(TimerConfig::default(), clock.clone())
        else {
            panic!("timer thread did not start");
        };
        service.arm(payload("t"), Duration::from_millis(5));
        clock.advance(Duration::from_millis(5));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build();
        let Ok(runtime) = runtime else {
            panic!("no tokio runtime");
        };
        let received = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), receiver.recv()).await
        });
        assert_eq!(
            received
                .ok()
                .flatten()
                .map(|timer| timer.payload.event_id().to_owned()),
            Some("t".to_owned())
        );
    }

    /// Real time: 100k timers between 1 ms and 2 s each fire exactly once and never before
    /// their deadline. Lateness is measured in `tools/benches/timers.rs`, not asserted here.
    #[test]
    fn real_time_100k_timers_fire_exactly_once_and_never_early() {
        const TIMERS: usize = 100_000;
        let Ok((service, mut receiver)) = TimerService::start(TimerConfig::default()) else {
            panic!("timer thread did not start");
        };
        let mut due_at = Vec::with_capacity(TIMERS);
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for index in 0..TIMERS {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let after = Duration::from_micros(1_000 + state % 1_999_000);
            let armed_at = Instant::now();
            let value = index.to_string();
            assert!(service.arm(payload(&value), after));
            due_at.push(armed_at + after);
        }
        let mut fired_count = vec![0u32; TIMERS];
        for _ in 0..TIMERS {
            let Some(timer) = recv_within(&mut receiver, Duration::from_secs(30)) else {
                break;
            };
            let received_at = Instant::now();
            let index: usize = timer.payload.event_id().parse().unwrap_or(usize::MAX);
            assert!(index < TIMERS, "unknown timer {}", timer.payload.event_id());
            assert!(received_at >= due_at[index], "timer {index} fired early");
            fired_count[index] += 1;
        }
        assert!(recv_within(&mut receiver, Duration::from_millis(50)).is_none());
        assert!(fired_count.iter().all(|&count| count == 1));
        assert_eq!(service.armed(), 0);
    }
}
