//! Running totals per set, the event-by-event comparison of the two sets, and the pairing of
//! their timeout decisions by rule and key.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use ahash::AHashMap;

use super::{BatchResult, Changes, RuleDelta, SetReport, TimeoutChanges, Transition};
use crate::event::{Decision, Outcome};
use crate::rules::RuleSet;

/// One set's running totals.
#[derive(Default)]
pub(super) struct SetTally {
    decisions: [u64; 4],
    timeouts: [u64; 4],
    hits: AHashMap<Arc<str>, u64>,
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
            labels: None,
        }
    }
}

/// Outcome pairs (baseline, new) with sample ids of the changed ones.
struct OutcomeMatrix {
    cells: [[u64; 4]; 4],
    samples: Vec<Vec<Vec<String>>>,
    keep: usize,
}

/// Rows by baseline outcome, columns by new outcome, as in the JSON report.
type Matrix = BTreeMap<&'static str, BTreeMap<&'static str, u64>>;

impl OutcomeMatrix {
    fn new(keep: usize) -> OutcomeMatrix {
        OutcomeMatrix {
            cells: [[0; 4]; 4],
            samples: vec![vec![Vec::new(); 4]; 4],
            keep,
        }
    }

    /// Counts a pair; true when the outcome changed.
    fn add(&mut self, baseline: Outcome, new: Outcome, event_id: &str) -> bool {
        let (i, j) = (baseline as usize, new as usize);
        self.cells[i][j] += 1;
        if i != j {
            let samples = &mut self.samples[i][j];
            if samples.len() < self.keep {
                samples.push(event_id.to_string());
            }
        }
        i != j
    }

    /// The full matrix and its off-diagonal cells, largest first.
    fn report(&self) -> (Matrix, Vec<Transition>) {
        let mut transitions = Vec::new();
        let mut matrix = BTreeMap::new();
        for from in Outcome::ALL {
            let row: &mut BTreeMap<&'static str, u64> = matrix.entry(from.name()).or_default();
            for to in Outcome::ALL {
                let events = self.cells[from as usize][to as usize];
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
        (matrix, transitions)
    }
}

/// A timeout decision waiting for its counterpart in the other set: (outcome, event id).
type Waiting = AHashMap<(Arc<str>, String), VecDeque<(Outcome, String)>>;

/// Timeout decisions of the two sets, paired by (rule, key): the n-th firing of a rule for a
/// key in one set with the n-th in the other, whichever batch each fired in.
struct TimeoutPairs {
    matrix: OutcomeMatrix,
    /// Sequence rules of each set: a rule the other set lacks is never waited for.
    rules_base: BTreeSet<Arc<str>>,
    rules_new: BTreeSet<Arc<str>>,
    waiting_base: Waiting,
    waiting_new: Waiting,
    only_base: BTreeMap<Arc<str>, u64>,
    only_new: BTreeMap<Arc<str>, u64>,
}

impl TimeoutPairs {
    /// One side's timeouts of a batch: each pairs with the other side's oldest waiting one,
    /// or waits itself (or is counted as unpaired at once when the other set lacks the rule).
    fn add(&mut self, decisions: &[Decision], keys: &[String], baseline_side: bool) {
        for (d, key) in decisions.iter().zip(keys) {
            let Some(rule) = d.hits.first().map(|h| h.rule.clone()) else {
                continue;
            };
            let (other_rules, other_waiting, own_waiting, own_only) = if baseline_side {
                (
                    &self.rules_new,
                    &mut self.waiting_new,
                    &mut self.waiting_base,
                    &mut self.only_base,
                )
            } else {
                (
                    &self.rules_base,
                    &mut self.waiting_base,
                    &mut self.waiting_new,
                    &mut self.only_new,
                )
            };
            if !other_rules.contains(&rule) {
                *own_only.entry(rule).or_default() += 1;
                continue;
            }
            let id = (rule, key.clone());
            let paired = match other_waiting.get_mut(&id) {
                Some(queue) => {
                    let front = queue.pop_front();
                    if queue.is_empty() {
                        other_waiting.remove(&id);
                    }
                    front
                }
                None => None,
            };
            match paired {
                Some((outcome, _)) if baseline_side => {
                    self.matrix.add(d.outcome, outcome, &d.event_id);
                }
                Some((outcome, event_id)) => {
                    self.matrix.add(outcome, d.outcome, &event_id);
                }
                None => own_waiting
                    .entry(id)
                    .or_default()
                    .push_back((d.outcome, d.event_id.clone())),
            }
        }
    }

    fn report(&self) -> TimeoutChanges {
        let (matrix, transitions) = self.matrix.report();
        let only = |only: &BTreeMap<Arc<str>, u64>, waiting: &Waiting| {
            let mut counts: BTreeMap<String, u64> =
                only.iter().map(|(r, n)| (r.to_string(), *n)).collect();
            for ((rule, _), queue) in waiting {
                *counts.entry(rule.to_string()).or_default() += queue.len() as u64;
            }
            counts
        };
        TimeoutChanges {
            paired: self.matrix.cells.iter().flatten().sum(),
            changed: transitions.iter().map(|t| t.events).sum(),
            only_new: only(&self.only_new, &self.waiting_new),
            only_baseline: only(&self.only_base, &self.waiting_base),
            matrix,
            transitions,
        }
    }
}

/// Event-by-event comparison of the two sets, and their timeouts paired by rule and key.
pub(super) struct PairTally {
    events: OutcomeMatrix,
    hits_changed: u64,
    timeouts: TimeoutPairs,
}

impl PairTally {
    pub(super) fn new(keep: usize, baseline: &RuleSet, new: &RuleSet) -> PairTally {
        let sequences =
            |rules: &RuleSet| rules.sequences().iter().map(|s| s.rule.clone()).collect();
        PairTally {
            events: OutcomeMatrix::new(keep),
            hits_changed: 0,
            timeouts: TimeoutPairs {
                matrix: OutcomeMatrix::new(keep),
                rules_base: sequences(baseline),
                rules_new: sequences(new),
                waiting_base: AHashMap::new(),
                waiting_new: AHashMap::new(),
                only_base: BTreeMap::new(),
                only_new: BTreeMap::new(),
            },
        }
    }

    pub(super) fn add(&mut self, baseline: &BatchResult, new: &BatchResult) {
        for (b, n) in baseline.decisions.iter().zip(&new.decisions) {
            let changed = self.events.add(b.outcome, n.outcome, &n.event_id);
            if !changed
                && !b
                    .hits
                    .iter()
                    .map(|h| &h.rule)
                    .eq(n.hits.iter().map(|h| &h.rule))
            {
                self.hits_changed += 1;
            }
        }
        self.timeouts
            .add(&baseline.timeouts, &baseline.timeout_keys, true);
        self.timeouts.add(&new.timeouts, &new.timeout_keys, false);
    }

    pub(super) fn report(&self, baseline: &SetTally, new: &SetTally) -> Changes {
        let (matrix, transitions) = self.events.report();
        let rules: BTreeSet<&Arc<str>> = baseline.hits.keys().chain(new.hits.keys()).collect();
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
            timeouts: self.timeouts.report(),
            labels: None,
        }
    }
}
