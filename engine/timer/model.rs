//! The values the timer service is armed with and hands back: keys, payloads, fired timers, config.

use std::sync::Arc;
use std::time::Duration;

/// Identifies an armed timer: the sequence rule that armed it and the correlation value
/// (e.g. rule `auth_without_capture`, key = the `txn_id`). At most one timer per key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TimerKey {
    /// Name of the sequence rule.
    pub sequence: Arc<str>,
    /// Value of the correlation field (`with same <field>`).
    pub key: String,
}

/// What a timeout decision needs about the event that armed the timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerPayload {
    pub rule: Arc<str>,
    pub event_id: String,
    pub txn_id: Option<String>,
    pub key: String,
}

/// A timer that reached its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// Fire sequence number: acknowledge it (`TimerService::acknowledge`) once the timeout
    /// decision is in Kafka; until then the timer stays in snapshots.
    pub id: u64,
    pub payload: TimerPayload,
    /// Deadline in wall-clock milliseconds since the Unix epoch (as computed when armed).
    pub deadline_ms: i64,
    /// Wall-clock milliseconds since the Unix epoch when the timer fired.
    pub fired_at_ms: i64,
    /// How long after its deadline the timer fired, measured on the monotonic clock
    /// (for timers restored from a snapshot: wall-clock overdue time plus processing delay).
    pub lateness: Duration,
}

/// Settings of the timer service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerConfig {
    /// Tick period; a timer fires at the first tick at or after its deadline. At least 1 µs.
    pub resolution: Duration,
    /// Capacity of the channel of fired timers; when it is full the timer thread waits (timers
    /// fire late, none is lost) while arming and cancelling carry on.
    pub channel_capacity: usize,
    /// The timer thread sleeps until this long before a tick's due time and spins the rest,
    /// trading CPU for precision against coarse OS wake-ups (50 µs covers a real-time thread's
    /// wake-up at p99; docs/timers.md). Zero disables spinning.
    pub spin: Duration,
    /// Slab capacity reserved up front (timers), to avoid regrowth pauses under load.
    pub initial_capacity: usize,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            resolution: Duration::from_millis(1),
            channel_capacity: 65_536,
            spin: Duration::from_micros(50),
            initial_capacity: 0,
        }
    }
}
