//! Running totals per set and the event-by-event comparison of the two sets.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{BatchResult, Changes, RuleDelta, SetReport, Transition};
use crate::event::{Decision, Outcome};
use crate::rules::RuleSet;

/// One set's running totals.
#[derive(Default)]
pub(super) struct SetTally {
    decisions: [u64; 4],
    timeouts: [u64; 4],
    hits: ahash::AHashMap<Arc<str>, u64>,
}

impl SetTally {
    pub(super) fn add(&mut self, batch: &BatchResult) {
        for d in &batch.decisions {
            self.decisions[d.outcome as usize] += 1;
        }
        for d in &batch.timeouts {
            self.timeouts[d.outcome as usize] += 1;
        }
        for hit in batch
            .decisions
            .iter()
            .chain(&batch.timeouts)
            .flat_map(|d| &d.hits)
        {
            *self.hits.entry(hit.rule.clone()).or_default() += 1;
        }
    }

    pub(super) fn report(&self, rules: &RuleSet) -> SetReport {
        let by_outcome = |counts: &[u64; 4]| {
            Outcome::ALL
                .iter()
                .map(|o| (o.name(), counts[*o as usize]))
                .collect()
        };
        SetReport {
            version: rules.version().to_string(),
            decisions: by_outcome(&self.decisions),
            timeout_decisions: by_outcome(&self.timeouts),
            rule_hits: self
                .hits
                .iter()
                .map(|(rule, n)| (rule.to_string(), *n))
                .collect(),
        }
    }
}

/// Event-by-event comparison of the two sets.
pub(super) struct PairTally {
    matrix: [[u64; 4]; 4],
    samples: Vec<Vec<Vec<String>>>,
    keep: usize,
    hits_changed: u64,
}

impl PairTally {
    pub(super) fn new(keep: usize) -> PairTally {
        PairTally {
            matrix: [[0; 4]; 4],
            samples: vec![vec![Vec::new(); 4]; 4],
            keep,
            hits_changed: 0,
        }
    }

    pub(super) fn add(&mut self, baseline: &[Decision], new: &[Decision]) {
        for (b, n) in baseline.iter().zip(new) {
            let (i, j) = (b.outcome as usize, n.outcome as usize);
            self.matrix[i][j] += 1;
            if i != j {
                let samples = &mut self.samples[i][j];
                if samples.len() < self.keep {
                    samples.push(n.event_id.clone());
                }
            } else if !b
                .hits
                .iter()
                .map(|h| &h.rule)
                .eq(n.hits.iter().map(|h| &h.rule))
            {
                self.hits_changed += 1;
            }
        }
    }

    pub(super) fn report(&self, baseline: &SetTally, new: &SetTally) -> Changes {
        let mut transitions = Vec::new();
        let mut matrix = BTreeMap::new();
        for from in Outcome::ALL {
            let row: &mut BTreeMap<&'static str, u64> = matrix.entry(from.name()).or_default();
            for to in Outcome::ALL {
                let events = self.matrix[from as usize][to as usize];
                row.insert(to.name(), events);
                if from != to && events > 0 {
                    transitions.push(Transition {
                        from: from.name(),
                        to: to.name(),
                        events,
                        sample_event_ids: self.samples[from as usize][to as usize].clone(),
                    });
                }
            }
        }
        transitions.sort_by_key(|t| std::cmp::Reverse(t.events));
        let rules: std::collections::BTreeSet<&Arc<str>> =
            baseline.hits.keys().chain(new.hits.keys()).collect();
        let mut rule_hit_deltas: Vec<RuleDelta> = rules
            .into_iter()
            .filter_map(|rule| {
                let b = baseline.hits.get(rule).copied().unwrap_or(0);
                let n = new.hits.get(rule).copied().unwrap_or(0);
                (b != n).then(|| RuleDelta {
                    rule: rule.to_string(),
                    baseline: b,
                    new: n,
                    delta: n as i64 - b as i64,
                })
            })
            .collect();
        rule_hit_deltas.sort_by(|a, b| {
            b.delta
                .unsigned_abs()
                .cmp(&a.delta.unsigned_abs())
                .then_with(|| a.rule.cmp(&b.rule))
        });
        Changes {
            changed_events: transitions.iter().map(|t| t.events).sum(),
            hits_changed_events: self.hits_changed,
            matrix,
            transitions,
            rule_hit_deltas,
        }
    }
}
