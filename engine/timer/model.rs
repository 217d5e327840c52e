//! The values the timer service is armed with and hands back: keys, payloads, fired timers, config.

use std::sync::Arc;
use std::time::Duration;

/// What a timeout decision needs about the event that armed a timer, and the timer's key:
/// the sequence rule (at most one timer per rule and key) and, in one shared allocation, the
/// correlation value (e.g. rule `auth_without_capture`, key = the `txn_id`), the event id and
/// the transaction id. Arming costs one allocation; a snapshot copies it without allocating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerPayload {
    /// Name of the sequence rule.
    pub rule: Arc<str>,
    pub ids: TimerIds,
}

impl TimerPayload {
    /// Value of the correlation field (`with same <field>`).
    pub fn key(&self) -> &str {
        self.ids.key()
    }

    pub fn event_id(&self) -> &str {
        self.ids.event_id()
    }

    pub fn txn_id(&self) -> Option<&str> {
        self.ids.txn_id()
    }
}

/// A timer's key, event id and transaction id in one allocation: `key ‖ event_id ‖ txn_id`,
/// the transaction id left out when it equals the key (a `with same txn_id` rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerIds {
    text: Arc<str>,
    key_end: usize,
    event_end: usize,
    txn: Txn,
}

thread_local! {
    static JOINED: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Txn {
    None,
    SameAsKey,
    /// The rest of the text after the event id.
    Own,
}

impl TimerIds {
    pub fn new(key: &str, event_id: &str, txn_id: Option<&str>) -> TimerIds {
        let txn = match txn_id {
            None => Txn::None,
            Some(txn_id) if txn_id == key => Txn::SameAsKey,
            Some(_) => Txn::Own,
        };
        let own = txn_id.filter(|_| txn == Txn::Own).unwrap_or("");
        // joined in a reused buffer: the shared text is the only allocation
        let text = JOINED.with_borrow_mut(|joined| {
            joined.clear();
            joined.push_str(key);
            joined.push_str(event_id);
            joined.push_str(own);
            Arc::from(joined.as_str())
        });
        TimerIds {
            text,
            key_end: key.len(),
            event_end: key.len() + event_id.len(),
            txn,
        }
    }

    pub fn key(&self) -> &str {
        self.text.get(..self.key_end).unwrap_or_default()
    }

    pub fn event_id(&self) -> &str {
        self.text
            .get(self.key_end..self.event_end)
            .unwrap_or_default()
    }

    pub fn txn_id(&self) -> Option<&str> {
        match self.txn {
            Txn::None => None,
            Txn::SameAsKey => Some(self.key()),
            Txn::Own => self.text.get(self.event_end..),
        }
    }
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
