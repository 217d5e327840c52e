//! `DeliveredTimeouts`: the timeout decisions already on the decisions topic, so a new active instance does not publish them again.

use std::collections::HashSet;

use parking_lot::Mutex;

use crate::event::{Decision, Trigger};

/// `(sequence rule, event id)` of every timeout decision the standby read from the decisions
/// topic. A fired timer in this set was delivered by an earlier active instance: the new one
/// acknowledges it without publishing (required for exactly-once; at-least-once would only
/// duplicate it).
#[derive(Debug, Default)]
pub struct DeliveredTimeouts {
    seen: Mutex<HashSet<(String, String)>>,
}

impl DeliveredTimeouts {
    pub fn new() -> DeliveredTimeouts {
        DeliveredTimeouts::default()
    }

    /// Records `decision` if it is a (non-shadow) timeout decision.
    pub fn record(&self, decision: &Decision) {
        if decision.trigger != Trigger::Timeout || decision.shadow {
            return;
        }
        if let Some(hit) = decision.hits.first() {
            self.seen
                .lock()
                .insert((hit.rule.to_string(), decision.event_id.clone()));
        }
    }

    /// Whether the timeout of sequence `rule` for `event_id` was delivered already; a match is
    /// forgotten (each timer fires once).
    pub fn take(&self, rule: &str, event_id: &str) -> bool {
        let mut seen = self.seen.lock();
        if seen.is_empty() {
            return false;
        }
        seen.remove(&(rule.to_owned(), event_id.to_owned()))
    }

    pub fn len(&self) -> usize {
        self.seen.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Outcome, RuleHit};
    use std::sync::Arc;

    fn decision(trigger: Trigger, shadow: bool) -> Decision {
        Decision {
            event_id: "e1".into(),
            txn_id: None,
            outcome: Outcome::Review,
            score: 0,
            hits: vec![RuleHit {
                rule: Arc::from("auth_without_capture"),
                outcome: Outcome::Review,
                score: 0,
            }],
            ruleset_version: Arc::from("v1"),
            trigger,
            shadow,
            decided_at_ms: 0,
            eval_latency_us: 0,
        }
    }

    #[test]
    fn only_live_timeout_decisions_count_and_each_is_taken_once() {
        let delivered = DeliveredTimeouts::new();
        delivered.record(&decision(Trigger::Event, false));
        delivered.record(&decision(Trigger::Timeout, true));
        assert!(delivered.is_empty());
        delivered.record(&decision(Trigger::Timeout, false));
        assert!(!delivered.take("other_rule", "e1"));
        assert!(delivered.take("auth_without_capture", "e1"));
        assert!(!delivered.take("auth_without_capture", "e1"));
    }
}
