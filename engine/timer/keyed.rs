//! Keyed timers over the wheel: arm/cancel by (rule, key), firing against a clock, snapshots.
//!
//! `TimerCore` holds all state behind one mutex and does no waiting of its own: the service's
//! thread calls [`TimerCore::fire_due`] after every tick, tests call it after moving a manual clock.

use super::clock::Clock;
use super::error::TimerError;
use super::model::{Fired, TimerIds, TimerPayload};
use super::persist;
use super::telemetry::Telemetry;
use super::ticker::{nanos, period_nanos};
use super::wheel::{TimerHandle, TimingWheel};
use ahash::AHashMap;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;

/// A timer's correlation value as a map key: hashed and compared by the key alone, looked up
/// by `&str`.
#[derive(Debug)]
struct KeyOf(TimerIds);

impl std::hash::Hash for KeyOf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.key().hash(state);
    }
}

impl PartialEq for KeyOf {
    fn eq(&self, other: &Self) -> bool {
        self.0.key() == other.0.key()
    }
}

impl Eq for KeyOf {}

impl std::borrow::Borrow<str> for KeyOf {
    fn borrow(&self) -> &str {
        self.0.key()
    }
}

#[derive(Debug)]
struct Entry {
    /// Shared strings: a snapshot copies it out of the lock without allocating.
    timer: TimerPayload,
    /// Deadline on the clock's monotonic timeline in ns (negative for restored overdue timers).
    deadline_ns: i64,
    deadline_ms: i64,
    /// Arming order, to keep ties in order across snapshots.
    sequence_number: u64,
}

#[derive(Debug)]
struct State {
    wheel: TimingWheel<Entry>,
    /// rule name → correlation value → timer.
    by_rule: AHashMap<Arc<str>, AHashMap<KeyOf, TimerHandle>>,
    next_sequence_number: u64,
    /// Fired timers whose timeout decision is not acknowledged yet, by fire id (oldest first):
    /// (deadline, timer). They stay in snapshots, so a restart fires them again (a duplicate
    /// timeout decision) instead of losing one that never reached Kafka.
    unacknowledged: std::collections::BTreeMap<u64, (i64, TimerPayload)>,
    next_fire_id: u64,
}

/// Most fired timers kept waiting for their acknowledgement; past it the oldest are forgotten
/// (said in the log and metrics), so timeouts that are never acknowledged cannot grow memory.
const MAX_UNACKNOWLEDGED: usize = 1 << 20;

impl State {
    fn handle(&self, sequence: &str, key: &str) -> Option<TimerHandle> {
        self.by_rule.get(sequence)?.get(key).copied()
    }

    fn forget(&mut self, sequence: &str, key: &str) -> Option<TimerHandle> {
        let keys = self.by_rule.get_mut(sequence)?;
        let handle = keys.remove(key);
        if keys.is_empty() {
            self.by_rule.remove(sequence);
        }
        handle
    }

    /// Arms unless the key is armed already; `false` for a duplicate.
    fn arm(&mut self, entry: Entry, deadline_tick: u64) -> bool {
        let timer = &entry.timer;
        if self.handle(&timer.rule, timer.key()).is_some() {
            return false;
        }
        let (sequence, key) = (Arc::clone(&timer.rule), KeyOf(timer.ids.clone()));
        let handle = self.wheel.arm(deadline_tick, entry);
        self.by_rule
            .entry(sequence)
            .or_default()
            .insert(key, handle);
        true
    }
}

/// Keyed timers on a timing wheel, ticking at a fixed resolution on a [`Clock`]'s timeline.
#[derive(Debug)]
pub struct TimerCore<C> {
    clock: C,
    period_ns: u64,
    state: Mutex<State>,
    telemetry: Telemetry,
}

impl<C: Clock> TimerCore<C> {
    /// Empty timers ticking every `resolution` (at least 1 µs) from the clock's current time.
    pub fn new(clock: C, resolution: Duration, initial_capacity: usize) -> Self {
        let period_ns = period_nanos(resolution);
        let current_tick = nanos(clock.monotonic()) / period_ns;
        TimerCore {
            clock,
            period_ns,
            state: Mutex::new(State {
                wheel: TimingWheel::with_capacity(current_tick, initial_capacity),
                by_rule: AHashMap::new(),
                next_sequence_number: 0,
                unacknowledged: std::collections::BTreeMap::new(),
                next_fire_id: 0,
            }),
            telemetry: Telemetry::register(),
        }
    }

    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Arms a timer firing `after` from now for its rule and key. Returns `false` and changes
    /// nothing if a timer for them is armed already (the first arming wins; its deadline is
    /// not extended).
    pub fn arm(&self, timer: TimerPayload, after: Duration) -> bool {
        let now_ns = self.monotonic_ns();
        let deadline_ns = now_ns.saturating_add(to_i64(nanos(after)));
        let after_ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
        let deadline_ms = self.clock.wall_ms().saturating_add(after_ms);
        let deadline_tick = self.deadline_tick(deadline_ns);
        let mut state = self.state.lock();
        let entry = Entry {
            timer,
            deadline_ns,
            deadline_ms,
            sequence_number: state.next_sequence_number,
        };
        let armed = state.arm(entry, deadline_tick);
        if armed {
            state.next_sequence_number += 1;
            self.telemetry.armed_changed(state.wheel.len());
        }
        armed
    }

    /// Cancels the timer of sequence rule `sequence` keyed by `key`; `false` if none is armed
    /// (never armed, fired or cancelled).
    pub fn cancel(&self, sequence: &str, key: &str) -> bool {
        let mut state = self.state.lock();
        let Some(handle) = state.forget(sequence, key) else {
            return false;
        };
        let cancelled = state.wheel.cancel(handle).is_some();
        if cancelled {
            self.telemetry.timers_cancelled(1);
            self.telemetry.armed_changed(state.wheel.len());
        }
        cancelled
    }

    /// Cancels every timer armed by the sequence rule `rule`; returns how many.
    pub fn cancel_sequence(&self, rule: &str) -> usize {
        let mut state = self.state.lock();
        let Some(keys) = state.by_rule.remove(rule) else {
            return 0;
        };
        let cancelled = keys
            .into_values()
            .filter(|&handle| state.wheel.cancel(handle).is_some())
            .count();
        self.telemetry.timers_cancelled(cancelled);
        self.telemetry.armed_changed(state.wheel.len());
        cancelled
    }

    /// Number of armed timers.
    pub fn armed(&self) -> usize {
        self.state.lock().wheel.len()
    }

    /// Whether a timer could fire at tick `tick` (a conservative check: `true` may still fire
    /// nothing, `false` is certain for the timers armed now).
    pub fn may_fire_at(&self, tick: u64) -> bool {
        let bound = self.state.lock().wheel.next_expiry_bound();
        bound.is_some_and(|bound| bound <= tick)
    }

    /// Whether a timer of sequence rule `sequence` is armed for `key`.
    pub fn is_armed(&self, sequence: &str, key: &str) -> bool {
        self.state.lock().handle(sequence, key).is_some()
    }

    /// Processes every tick due by the clock's current time, in order, appending the fired
    /// timers to `fired` (deadline order, arming order within a tick). Returns how many fired.
    pub fn fire_due(&self, fired: &mut Vec<Fired>) -> usize {
        let before = fired.len();
        let mut state = self.state.lock();
        let now_ns = self.monotonic_ns();
        let fired_at_ms = self.clock.wall_ms();
        let due_tick = u64::try_from(now_ns).unwrap_or(0) / self.period_ns;
        let State {
            wheel,
            by_rule,
            unacknowledged,
            next_fire_id,
            ..
        } = &mut *state;
        wheel.advance_to(due_tick, |expired| {
            let entry = expired.value;
            let payload = entry.timer;
            if let Some(keys) = by_rule.get_mut(&*payload.rule) {
                keys.remove(payload.key());
                if keys.is_empty() {
                    by_rule.remove(&*payload.rule);
                }
            }
            let lateness_ns = now_ns.saturating_sub(entry.deadline_ns).max(0);
            let id = *next_fire_id;
            *next_fire_id += 1;
            unacknowledged.insert(id, (entry.deadline_ms, payload.clone()));
            fired.push(Fired {
                id,
                payload,
                deadline_ms: entry.deadline_ms,
                fired_at_ms,
                lateness: Duration::from_nanos(lateness_ns.unsigned_abs()),
            });
        });
        let count = fired.len() - before;
        if count > 0 {
            self.telemetry.armed_changed(state.wheel.len());
        }
        let mut forgotten = 0;
        while state.unacknowledged.len() > MAX_UNACKNOWLEDGED {
            state.unacknowledged.pop_first();
            forgotten += 1;
        }
        drop(state);
        if forgotten > 0 {
            self.telemetry.unacknowledged_forgotten(forgotten);
        }
        for timer in &fired[before..] {
            self.telemetry.timer_fired(timer.lateness);
        }
        count
    }

    /// The timeout decision of fired timer `id` was acknowledged by Kafka (or dropped on
    /// purpose): it leaves the snapshots.
    pub fn acknowledge(&self, id: u64) {
        self.state.lock().unacknowledged.remove(&id);
    }

    /// Serialises every armed timer (wall-clock deadlines and payloads) in firing order, and
    /// the fired timers not yet acknowledged (they fire again after a restore). The
    /// lock is held only to copy out (deadline, shared pointer) pairs; encoding happens outside.
    pub fn snapshot(&self) -> Vec<u8> {
        self.snapshot_with(true)
    }

    /// Serialises only the armed timers (see [`TimerCore::snapshot`]).
    pub fn snapshot_armed(&self) -> Vec<u8> {
        self.snapshot_with(false)
    }

    fn snapshot_with(&self, unacknowledged: bool) -> Vec<u8> {
        let (taken_at_ms, mut timers) = {
            let state = self.state.lock();
            let timers: Vec<(i64, u64, i64, TimerPayload)> = state
                .wheel
                .iter()
                .map(|(_, entry)| {
                    let order = (entry.deadline_ns, entry.sequence_number);
                    (order.0, order.1, entry.deadline_ms, entry.timer.clone())
                })
                .chain(
                    state
                        .unacknowledged
                        .values()
                        .filter(|_| unacknowledged)
                        .map(|(deadline_ms, timer)| (i64::MIN, 0, *deadline_ms, timer.clone())),
                )
                .collect();
            (self.clock.wall_ms(), timers)
        };
        timers.sort_unstable_by_key(|(deadline_ns, sequence_number, ..)| {
            (*deadline_ns, *sequence_number)
        });
        persist::encode(
            taken_at_ms,
            timers
                .iter()
                .map(|(_, _, deadline_ms, timer)| (*deadline_ms, timer)),
        )
    }

    /// Re-arms the timers of a snapshot by their wall-clock deadlines: overdue ones fire at the
    /// next tick with their original deadline and the lateness measured from it. Keys armed
    /// already are skipped. Corrupt bytes are rejected before anything changes. Returns how many
    /// timers were armed.
    pub fn restore(&self, bytes: &[u8]) -> Result<usize, TimerError> {
        let timers = persist::decode(bytes)?;
        let mut state = self.state.lock();
        let now_ns = self.monotonic_ns();
        let wall_now_ms = self.clock.wall_ms();
        let (mut restored, mut overdue) = (0, 0);
        let total = timers.len();
        for persist::PersistedTimer {
            deadline_ms,
            payload: timer,
        } in timers
        {
            let remaining_ms = i128::from(deadline_ms) - i128::from(wall_now_ms);
            let deadline_ns = i128::from(now_ns) + remaining_ms * 1_000_000;
            let deadline_ns = i64::try_from(deadline_ns).unwrap_or(if deadline_ns < 0 {
                i64::MIN
            } else {
                i64::MAX
            });
            let entry = Entry {
                timer,
                deadline_ns,
                deadline_ms,
                sequence_number: state.next_sequence_number,
            };
            if state.arm(entry, self.deadline_tick(deadline_ns)) {
                state.next_sequence_number += 1;
                restored += 1;
                if remaining_ms <= 0 {
                    overdue += 1;
                }
            }
        }
        self.telemetry.armed_changed(state.wheel.len());
        drop(state);
        self.telemetry
            .snapshot_restored(restored, overdue, total - restored);
        Ok(restored)
    }

    fn monotonic_ns(&self) -> i64 {
        to_i64(nanos(self.clock.monotonic()))
    }

    /// The first tick at or after `deadline_ns`: a timer never fires early.
    fn deadline_tick(&self, deadline_ns: i64) -> u64 {
        u64::try_from(deadline_ns).map_or(0, |deadline| deadline.div_ceil(self.period_ns))
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timer::clock::ManualClock;

    const WALL_START_MS: i64 = 1_700_000_000_000;

    fn core() -> TimerCore<ManualClock> {
        TimerCore::new(ManualClock::new(WALL_START_MS), Duration::from_millis(1), 0)
    }

    fn payload(rule: &str, value: &str) -> TimerPayload {
        TimerPayload {
            rule: Arc::from(rule),
            ids: TimerIds::new(value, &format!("evt-{value}"), Some(value)),
        }
    }

    fn arm(core: &TimerCore<ManualClock>, rule: &str, value: &str, after_ms: u64) -> bool {
        core.arm(payload(rule, value), Duration::from_millis(after_ms))
    }

    fn advance_and_fire(core: &TimerCore<ManualClock>, by: Duration) -> Vec<Fired> {
        core.clock().advance(by);
        let mut fired = Vec::new();
        core.fire_due(&mut fired);
        fired
    }

    fn keys_of(fired: &[Fired]) -> Vec<&str> {
        fired.iter().map(|timer| timer.payload.key()).collect()
    }

    #[test]
    fn only_ticks_near_a_deadline_may_fire() {
        let core = core();
        // ManualClock starts at monotonic 0: the next tick is 1.
        assert!(!core.may_fire_at(1), "nothing armed");
        assert!(arm(&core, "seq", "far", 60_000));
        assert!(!core.may_fire_at(1), "a minute away");
        assert!(core.may_fire_at(60_000));
        assert!(arm(&core, "seq", "near", 1));
        assert!(core.may_fire_at(1));
    }

    #[test]
    fn fires_in_deadline_order_with_wall_deadlines_and_lateness() {
        let core = core();
        assert!(arm(&core, "seq", "c", 30));
        assert!(arm(&core, "seq", "a", 10));
        assert!(arm(&core, "seq", "b", 20));
        assert!(arm(&core, "seq", "b2", 20));
        assert!(advance_and_fire(&core, Duration::from_millis(9)).is_empty());
        let fired = advance_and_fire(&core, Duration::from_millis(1));
        assert_eq!(keys_of(&fired), vec!["a"]);
        assert_eq!(fired[0].deadline_ms, WALL_START_MS + 10);
        assert_eq!(fired[0].fired_at_ms, WALL_START_MS + 10);
        assert_eq!(fired[0].lateness, Duration::ZERO);
        let fired = advance_and_fire(&core, Duration::from_millis(25));
        assert_eq!(keys_of(&fired), vec!["b", "b2", "c"]);
        assert_eq!(fired[0].lateness, Duration::from_millis(15));
        assert_eq!(fired[2].lateness, Duration::from_millis(5));
        assert_eq!(core.armed(), 0);
    }

    #[test]
    fn sub_tick_deadlines_round_up_never_early() {
        let core = core();
        core.clock().advance(Duration::from_micros(400));
        core.arm(payload("seq", "x"), Duration::from_micros(1_500));
        // Deadline at 1.9 ms: tick 1 (1 ms) is too early, tick 2 (2 ms) fires it.
        assert!(advance_and_fire(&core, Duration::from_micros(1_400)).is_empty());
        let fired = advance_and_fire(&core, Duration::from_micros(200));
        assert_eq!(keys_of(&fired), vec!["x"]);
        assert_eq!(fired[0].lateness, Duration::from_micros(100));
    }

    #[test]
    fn cancel_by_key_and_by_sequence() {
        let core = core();
        arm(&core, "auth", "t1", 100);
        arm(&core, "auth", "t2", 100);
        arm(&core, "refund", "t1", 100);
        assert!(core.cancel("auth", "t1"));
        assert!(!core.cancel("auth", "t1"));
        assert!(!core.cancel("auth", "unknown"));
        assert!(!core.cancel("unknown", "t1"));
        assert!(core.is_armed("refund", "t1"));
        assert_eq!(core.cancel_sequence("auth"), 1);
        assert_eq!(core.cancel_sequence("auth"), 0);
        let fired = advance_and_fire(&core, Duration::from_millis(100));
        assert_eq!(
            fired
                .iter()
                .map(|timer| (&*timer.payload.rule, timer.payload.key()))
                .collect::<Vec<_>>(),
            vec![("refund", "t1")]
        );
    }

    #[test]
    fn duplicate_arm_keeps_the_first_timer_and_rearm_works_after_cancel_or_fire() {
        let core = core();
        assert!(arm(&core, "auth", "t1", 10));
        assert!(!arm(&core, "auth", "t1", 50));
        assert_eq!(core.armed(), 1);
        let fired = advance_and_fire(&core, Duration::from_millis(10));
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].deadline_ms, WALL_START_MS + 10);
        // After firing the key is free again.
        assert!(arm(&core, "auth", "t1", 10));
        assert!(core.cancel("auth", "t1"));
        assert!(arm(&core, "auth", "t1", 30));
        assert!(advance_and_fire(&core, Duration::from_millis(29)).is_empty());
        assert_eq!(
            advance_and_fire(&core, Duration::from_millis(1))[0].deadline_ms,
            WALL_START_MS + 10 + 30
        );
        assert!(advance_and_fire(&core, Duration::from_secs(10)).is_empty());
    }

    #[test]
    fn a_five_second_clock_jump_fires_every_skipped_timer_in_order() {
        let core = core();
        // 2 000 timers at pseudo-random offsets within the jump, armed out of order.
        let mut offsets: Vec<u64> = (0..2_000u64).map(|i| (i * 7_919) % 4_999 + 1).collect();
        for (i, &offset) in offsets.iter().enumerate() {
            assert!(arm(&core, "seq", &format!("{i}"), offset));
        }
        arm(&core, "seq", "later", 5_001);
        let fired = advance_and_fire(&core, Duration::from_secs(5));
        assert_eq!(fired.len(), offsets.len());
        let deadlines: Vec<i64> = fired.iter().map(|timer| timer.deadline_ms).collect();
        assert!(deadlines.windows(2).all(|pair| pair[0] <= pair[1]));
        offsets.sort_unstable();
        for (timer, offset) in fired.iter().zip(&offsets) {
            assert_eq!(timer.deadline_ms, WALL_START_MS + *offset as i64);
            assert_eq!(timer.lateness, Duration::from_millis(5_000 - offset));
        }
        assert_eq!(core.armed(), 1);
        assert_eq!(
            keys_of(&advance_and_fire(&core, Duration::from_millis(1))),
            vec!["later"]
        );
    }

    #[test]
    fn snapshot_restore_fires_overdue_at_once_and_rearms_the_rest() {
        let core = core();
        arm(&core, "auth", "soon", 1_000);
        arm(&core, "auth", "late", 10_000);
        arm(&core, "auth", "cancelled", 1_000);
        core.cancel("auth", "cancelled");
        arm(&core, "capture", "soon", 2_000);
        let bytes = core.snapshot();

        // Restart 3 s later (wall clock), with a fresh monotonic timeline.
        let restarted = TimerCore::new(
            ManualClock::new(WALL_START_MS + 3_000),
            Duration::from_millis(1),
            0,
        );
        assert_eq!(restarted.restore(&bytes).ok(), Some(3));
        assert_eq!(restarted.armed(), 3);
        let fired = advance_and_fire(&restarted, Duration::from_millis(1));
        assert_eq!(
            fired
                .iter()
                .map(|timer| (&*timer.payload.rule, timer.deadline_ms, timer.lateness))
                .collect::<Vec<_>>(),
            vec![
                ("auth", WALL_START_MS + 1_000, Duration::from_millis(2_001)),
                (
                    "capture",
                    WALL_START_MS + 2_000,
                    Duration::from_millis(1_001)
                ),
            ]
        );
        assert!(advance_and_fire(&restarted, Duration::from_millis(6_998)).is_empty());
        let fired = advance_and_fire(&restarted, Duration::from_millis(1));
        assert_eq!(keys_of(&fired), vec!["late"]);
        assert_eq!(fired[0].deadline_ms, WALL_START_MS + 10_000);
        assert_eq!(fired[0].lateness, Duration::ZERO);
    }

    #[test]
    fn restore_skips_keys_armed_already_and_rejects_corrupt_bytes_unchanged() {
        let core = core();
        arm(&core, "auth", "t1", 1_000);
        arm(&core, "auth", "t2", 1_000);
        let bytes = core.snapshot();
        assert_eq!(core.restore(&bytes).ok(), Some(0));

        let other = TimerCore::new(ManualClock::new(WALL_START_MS), Duration::from_millis(1), 0);
        arm(&other, "auth", "t1", 50);
        let mut corrupt = bytes.clone();
        corrupt[30] ^= 1;
        assert!(matches!(
            other.restore(&corrupt),
            Err(TimerError::Checksum { .. })
        ));
        assert!(other.restore(&bytes[..bytes.len() - 1]).is_err());
        assert!(other.restore(&[]).is_err());
        assert_eq!(other.armed(), 1);
        assert_eq!(other.restore(&bytes).ok(), Some(1));
        let fired = advance_and_fire(&other, Duration::from_millis(50));
        assert_eq!(fired[0].deadline_ms, WALL_START_MS + 50);
    }

    #[test]
    fn a_fired_timer_stays_in_snapshots_until_its_timeout_is_acknowledged() {
        let core = core();
        arm(&core, "auth", "a", 1_000);
        arm(&core, "auth", "b", 1_000);
        let fired = advance_and_fire(&core, Duration::from_secs(60));
        assert_eq!(fired.len(), 2);
        let restored = |bytes: &[u8]| {
            let fresh =
                TimerCore::new(ManualClock::new(WALL_START_MS), Duration::from_millis(1), 0);
            fresh.restore(bytes).ok()
        };
        // long after firing (no time window): both still unacknowledged
        assert_eq!(restored(&core.snapshot()), Some(2));
        assert_eq!(restored(&core.snapshot_armed()), Some(0));
        core.acknowledge(fired[0].id);
        assert_eq!(restored(&core.snapshot()), Some(1));
        core.acknowledge(fired[1].id);
        assert_eq!(restored(&core.snapshot()), Some(0));
    }

    #[test]
    fn snapshot_of_an_empty_core_restores_nothing() {
        let core = core();
        let bytes = core.snapshot();
        assert_eq!(core.restore(&bytes).ok(), Some(0));
    }
}
