//! `veto_rule_hits_total{rule}` through per-thread cached counter handles.

use std::collections::HashMap;
use std::sync::Arc;

use crate::event::Decision;

/// Distinct rule names whose counter handles a worker thread keeps; past it the cache starts over
/// (many hot swaps renaming rules), so it stays bounded.
const RULE_HIT_HANDLES: usize = 4096;

/// Counts `veto_rule_hits_total{rule}` for every rule that matched.
///
/// Each worker thread keeps the counter handle of every rule name it has seen: a labelled
/// `counter!` allocates the label and looks the key up in the registry on every call.
pub(super) fn rules_hit(decision: &Decision) {
    if decision.hits.is_empty() {
        return;
    }
    thread_local! {
        static HANDLES: std::cell::RefCell<HashMap<Arc<str>, metrics::Counter>> =
            std::cell::RefCell::new(HashMap::new());
    }
    HANDLES.with(|handles| {
        let mut handles = handles.borrow_mut();
        for hit in &decision.hits {
            if let Some(counter) = handles.get(&hit.rule) {
                counter.increment(1);
                continue;
            }
            if handles.len() >= RULE_HIT_HANDLES {
                handles.clear();
            }
            let counter = metrics::counter!("veto_rule_hits_total", "rule" => hit.rule.to_string());
            counter.increment(1);
            handles.insert(Arc::clone(&hit.rule), counter);
        }
    });
}
