//! Timers in event time for replays (`veto test`, `veto backtest`, the benches): the engine's
//! timer sink when there is no wall clock to wait on.

use std::sync::Arc;
use std::time::Duration;

use super::TimerSink;
use crate::event::PaymentEvent;

/// A timer that fired: which sequence rule, for which original event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTimer {
    pub rule: Arc<str>,
    pub key: String,
    pub event_id: String,
    pub txn_id: Option<String>,
    pub deadline_ms: i64,
}

/// Timers in event time, for `veto test` and `veto backtest`: a timer armed by an event at `t`
/// with `within d` is due once an event at or after `t + d` is seen (or the stream ends), so
/// replays decide the same way every time.
#[derive(Default)]
pub struct EventTimeTimers {
    inner: parking_lot::Mutex<EventTimeTimersInner>,
}

#[derive(Default)]
struct EventTimeTimersInner {
    by_deadline: std::collections::BTreeMap<(i64, u64), DueTimer>,
    /// Armed timers by rule, then key (looked up by `&str`: no allocation to cancel).
    armed: ahash::AHashMap<Arc<str>, ahash::AHashMap<String, (i64, u64)>>,
    seq: u64,
}

impl EventTimeTimers {
    /// Removes and returns, in deadline order, every timer due at or before `now_ms`.
    pub fn due(&self, now_ms: i64) -> Vec<DueTimer> {
        let mut inner = self.inner.lock();
        let mut due = Vec::new();
        while let Some(entry) = inner.by_deadline.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            let timer = entry.remove();
            if let Some(keys) = inner.armed.get_mut(&*timer.rule) {
                keys.remove(&timer.key);
            }
            due.push(timer);
        }
        due
    }

    /// Number of armed timers.
    pub fn armed(&self) -> usize {
        self.inner
            .lock()
            .armed
            .values()
            .map(|keys| keys.len())
            .sum()
    }
}

impl TimerSink for EventTimeTimers {
    fn arm(&self, rule: &Arc<str>, key: &str, event: &PaymentEvent, within: Duration) {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        if !inner.armed.contains_key(&**rule) {
            inner.armed.insert(rule.clone(), Default::default());
        }
        let Some(keys) = inner.armed.get_mut(&**rule) else {
            return;
        };
        if keys.contains_key(key) {
            return;
        }
        inner.seq += 1;
        let deadline_ms = event
            .event_time_ms
            .saturating_add(i64::try_from(within.as_millis()).unwrap_or(i64::MAX));
        let slot = (deadline_ms, inner.seq);
        keys.insert(key.to_owned(), slot);
        inner.by_deadline.insert(
            slot,
            DueTimer {
                rule: rule.clone(),
                key: key.to_owned(),
                event_id: event.event_id.clone(),
                txn_id: event.txn_id.clone(),
                deadline_ms,
            },
        );
    }

    fn cancel(&self, rule: &Arc<str>, key: &str) {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        if let Some(slot) = inner
            .armed
            .get_mut(&**rule)
            .and_then(|keys| keys.remove(key))
        {
            inner.by_deadline.remove(&slot);
        }
    }
}
