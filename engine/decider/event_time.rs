//! Timers in event time for replays (`veto test`, `veto backtest`, the benches): the engine's
//! timer sink when there is no wall clock to wait on.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
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
    /// Deadlines in the order they fall due (then in arming order). A cancel leaves its entry
    /// here: an entry whose timer is no longer armed under its `seq` is skipped when it is due.
    queue: BinaryHeap<Reverse<Deadline>>,
    /// Armed timers of each rule (a handful of sequence rules: found by a scan).
    rules: Vec<RuleTimers>,
    seq: u64,
}

/// One armed timer's place in the queue.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Deadline {
    at_ms: i64,
    /// Unique per arm: the order of timers due at the same time, and the check that an entry
    /// is still the armed timer of its key.
    seq: u64,
    rule: usize,
    key: Arc<str>,
}

struct RuleTimers {
    rule: Arc<str>,
    /// By key (looked up by `&str`: no allocation to cancel).
    armed: hashbrown::HashMap<Arc<str>, Armed, ahash::RandomState>,
}

struct Armed {
    seq: u64,
    /// The arming event's id followed by its transaction id: one allocation per timer.
    ids: Box<str>,
    /// Where the transaction id starts in `ids`; `None` when the event had none.
    txn_at: Option<usize>,
}

impl Armed {
    fn new(seq: u64, event: &PaymentEvent) -> Armed {
        let txn_id = event.txn_id.as_deref();
        let mut ids = String::with_capacity(event.event_id.len() + txn_id.map_or(0, str::len));
        ids.push_str(&event.event_id);
        let txn_at = txn_id.map(|txn_id| {
            ids.push_str(txn_id);
            event.event_id.len()
        });
        Armed {
            seq,
            ids: ids.into_boxed_str(),
            txn_at,
        }
    }

    /// The event id and the transaction id.
    fn ids(&self) -> (String, Option<String>) {
        match self.txn_at.and_then(|at| self.ids.split_at_checked(at)) {
            Some((event_id, txn_id)) => (event_id.to_string(), Some(txn_id.to_string())),
            None => (self.ids.to_string(), None),
        }
    }
}

impl EventTimeTimersInner {
    /// The index of `rule`'s timers (the same `Arc` as a rule set passes each time, else the
    /// same name: a swapped-in set's rule finds the timers its predecessor armed).
    fn rule(&self, rule: &Arc<str>) -> Option<usize> {
        self.rules
            .iter()
            .position(|r| Arc::ptr_eq(&r.rule, rule) || r.rule == *rule)
    }
}

impl EventTimeTimers {
    /// Removes and returns, in deadline order, every timer due at or before `now_ms`.
    pub fn due(&self, now_ms: i64) -> Vec<DueTimer> {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let mut due = Vec::new();
        while let Some(Reverse(next)) = inner.queue.peek() {
            if next.at_ms > now_ms {
                break;
            }
            let Some(Reverse(next)) = inner.queue.pop() else {
                break;
            };
            let Some(timers) = inner.rules.get_mut(next.rule) else {
                continue;
            };
            // cancelled, or fired and armed again since: not this entry's timer any more
            if timers
                .armed
                .get(&*next.key)
                .is_none_or(|a| a.seq != next.seq)
            {
                continue;
            }
            if let Some(armed) = timers.armed.remove(&*next.key) {
                let (event_id, txn_id) = armed.ids();
                due.push(DueTimer {
                    rule: timers.rule.clone(),
                    key: next.key.to_string(),
                    event_id,
                    txn_id,
                    deadline_ms: next.at_ms,
                });
            }
        }
        due
    }

    /// Number of armed timers.
    pub fn armed(&self) -> usize {
        self.inner.lock().rules.iter().map(|r| r.armed.len()).sum()
    }
}

impl TimerSink for EventTimeTimers {
    fn arm(&self, rule: &Arc<str>, key: &str, event: &PaymentEvent, within: Duration) {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let at = match inner.rule(rule) {
            Some(at) => at,
            None => {
                inner.rules.push(RuleTimers {
                    rule: rule.clone(),
                    armed: Default::default(),
                });
                inner.rules.len() - 1
            }
        };
        // one lookup: the key is copied only when it is not armed yet
        let hashbrown::hash_map::EntryRef::Vacant(vacant) = inner.rules[at].armed.entry_ref(key)
        else {
            return;
        };
        inner.seq += 1;
        let at_ms = event
            .event_time_ms
            .saturating_add(i64::try_from(within.as_millis()).unwrap_or(i64::MAX));
        let key = Arc::clone(vacant.insert_entry(Armed::new(inner.seq, event)).key());
        inner.queue.push(Reverse(Deadline {
            at_ms,
            seq: inner.seq,
            rule: at,
            key,
        }));
    }

    fn cancel(&self, rule: &Arc<str>, key: &str) {
        let mut inner = self.inner.lock();
        if let Some(at) = inner.rule(rule) {
            inner.rules[at].armed.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, at_ms: i64) -> PaymentEvent {
        PaymentEvent {
            event_id: id.into(),
            event_time_ms: at_ms,
            ..PaymentEvent::default()
        }
    }

    fn fired(timers: &EventTimeTimers, now_ms: i64) -> Vec<(String, String, i64)> {
        timers
            .due(now_ms)
            .into_iter()
            .map(|t| (t.rule.to_string(), t.event_id, t.deadline_ms))
            .collect()
    }

    #[test]
    fn a_fired_timer_carries_the_arming_events_ids() {
        let timers = EventTimeTimers::default();
        let rule = Arc::<str>::from("r");
        let with_txn = PaymentEvent {
            txn_id: Some("t-9".into()),
            ..event("e-1", 0)
        };
        timers.arm(&rule, "k1", &with_txn, Duration::from_secs(1));
        timers.arm(&rule, "k2", &event("e-2", 0), Duration::from_secs(1));
        let ids: Vec<_> = timers
            .due(1_000)
            .into_iter()
            .map(|t| (t.key, t.event_id, t.txn_id))
            .collect();
        assert_eq!(
            ids,
            vec![
                ("k1".into(), "e-1".into(), Some("t-9".into())),
                ("k2".into(), "e-2".into(), None)
            ]
        );
    }

    #[test]
    fn timers_fire_in_deadline_order_once_and_not_after_a_cancel() {
        let timers = EventTimeTimers::default();
        let (a, b) = (Arc::<str>::from("a"), Arc::<str>::from("b"));
        let s = Duration::from_secs(1);
        timers.arm(&a, "k1", &event("e1", 0), s * 5);
        timers.arm(&b, "k1", &event("e2", 0), s * 2);
        timers.arm(&a, "k2", &event("e3", 1_000), s);
        // armed already: the second arm of a key is ignored
        timers.arm(&a, "k1", &event("e4", 100), s);
        assert_eq!(timers.armed(), 3);
        // cancelled, then armed again later: only the new timer fires, at its own deadline
        timers.cancel(&Arc::from("b"), "k1");
        timers.arm(&b, "k1", &event("e5", 2_500), s);
        // a cancel of a key or rule never armed changes nothing
        timers.cancel(&a, "nope");
        timers.cancel(&Arc::from("c"), "k1");
        assert_eq!(fired(&timers, 1_999), vec![]);
        assert_eq!(
            fired(&timers, 2_000),
            vec![("a".into(), "e3".into(), 2_000)]
        );
        assert_eq!(
            fired(&timers, 10_000),
            vec![
                ("b".into(), "e5".into(), 3_500),
                ("a".into(), "e1".into(), 5_000)
            ]
        );
        assert_eq!(timers.armed(), 0);
        // fired: the key can be armed again
        timers.arm(&a, "k1", &event("e6", 20_000), s);
        assert_eq!(
            fired(&timers, 21_000),
            vec![("a".into(), "e6".into(), 21_000)]
        );
    }
}
