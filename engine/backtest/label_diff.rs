//! How the labels met the replay, and the candidate against the baseline on the labels.

use std::collections::BTreeMap;

use serde::Serialize;

use super::labels::Label;
use super::quality::{add_amount, Amounts, LabelTally, LabelledSet, RuleQuality};
use crate::event::Outcome;

/// The labels file and how it met the replay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelsSummary {
    pub file: String,
    /// Label lines (units).
    pub units: u64,
    pub fraud: u64,
    pub legit: u64,
    /// Fraud units no decision named (not in the events file).
    pub fraud_not_in_events: u64,
    /// Legit units no decision named.
    pub legit_not_in_events: u64,
    /// Units whose `reported_at_ms` is after their first decision (they count like any other).
    pub reported_after_decision: u64,
}

impl LabelsSummary {
    pub(super) fn new(file: String, tally: &LabelTally) -> LabelsSummary {
        let count = |label| {
            tally
                .labels
                .units
                .iter()
                .filter(|u| u.label == label)
                .count() as u64
        };
        LabelsSummary {
            file,
            units: tally.labels.units.len() as u64,
            fraud: count(Label::Fraud),
            legit: count(Label::Legit),
            fraud_not_in_events: tally.units_not_seen(Label::Fraud),
            legit_not_in_events: tally.units_not_seen(Label::Legit),
            reported_after_decision: tally.reported_after_decision(),
        }
    }
}

/// The candidate against the baseline on the labels (candidate minus baseline).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelDiff {
    pub fraud_caught: i64,
    pub fraud_caught_amount: Amounts,
    pub legit_hurt: i64,
    pub flagged: i64,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    /// Fraud units the candidate flags and the baseline does not.
    pub newly_caught: u64,
    /// Fraud units the baseline flags and the candidate does not.
    pub no_longer_caught: u64,
    /// Legit units the candidate flags and the baseline does not.
    pub newly_hurt: u64,
    /// Legit units the baseline flags and the candidate does not.
    pub no_longer_hurt: u64,
    /// Rules whose labelled or unknown matches changed, by name.
    pub rules: Vec<RuleQualityDelta>,
}

/// One rule, candidate minus baseline (a rule missing from a set counts as matching nothing).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleQualityDelta {
    pub rule: String,
    pub fraud: i64,
    pub legit: i64,
    pub legit_hurt: i64,
    pub unknown: i64,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
}

fn delta(new: u64, base: u64) -> i64 {
    (new as i64).saturating_sub(base as i64)
}

fn delta_ratio(new: Option<f64>, base: Option<f64>) -> Option<f64> {
    Some(new? - base?)
}

impl LabelDiff {
    pub(super) fn new(
        new_tally: &LabelTally,
        new: &LabelledSet,
        base_tally: &LabelTally,
        base: &LabelledSet,
    ) -> LabelDiff {
        let mut diff = LabelDiff {
            fraud_caught: delta(new.fraud_caught.count, base.fraud_caught.count),
            fraud_caught_amount: new.fraud_caught.amount.clone(),
            legit_hurt: delta(new.legit_hurt.count, base.legit_hurt.count),
            flagged: delta(new.flagged.count, base.flagged.count),
            precision: delta_ratio(new.precision, base.precision),
            recall: delta_ratio(new.recall, base.recall),
            newly_caught: 0,
            no_longer_caught: 0,
            newly_hurt: 0,
            no_longer_hurt: 0,
            rules: Vec::new(),
        };
        for (currency, amount) in &base.fraud_caught.amount {
            add_amount(
                &mut diff.fraud_caught_amount,
                currency,
                amount.saturating_neg(),
            );
        }
        diff.fraud_caught_amount.retain(|_, a| *a != 0);
        let outcomes = new_tally
            .unit_outcomes()
            .zip(base_tally.unit_outcomes())
            .zip(&new_tally.labels.units);
        for ((n, b), unit) in outcomes {
            let n = n.is_some_and(|o| o != Outcome::Allow);
            let b = b.is_some_and(|o| o != Outcome::Allow);
            let (gained, lost) = match unit.label {
                Label::Fraud => (&mut diff.newly_caught, &mut diff.no_longer_caught),
                Label::Legit => (&mut diff.newly_hurt, &mut diff.no_longer_hurt),
            };
            match (n, b) {
                (true, false) => *gained += 1,
                (false, true) => *lost += 1,
                _ => {}
            }
        }
        let by_name = |set: &LabelledSet| -> BTreeMap<String, RuleQuality> {
            set.rules
                .iter()
                .map(|q| (q.rule.clone(), q.clone()))
                .collect()
        };
        let (new_rules, base_rules) = (by_name(new), by_name(base));
        let names: std::collections::BTreeSet<&String> =
            new_rules.keys().chain(base_rules.keys()).collect();
        for name in names {
            let (n, b) = (new_rules.get(name), base_rules.get(name));
            let get = |q: Option<&RuleQuality>, f: fn(&RuleQuality) -> u64| q.map_or(0, f);
            let d = RuleQualityDelta {
                rule: name.clone(),
                fraud: delta(get(n, |q| q.fraud.count), get(b, |q| q.fraud.count)),
                legit: delta(get(n, |q| q.legit), get(b, |q| q.legit)),
                legit_hurt: delta(
                    get(n, |q| q.legit_hurt.count),
                    get(b, |q| q.legit_hurt.count),
                ),
                unknown: delta(get(n, |q| q.unknown), get(b, |q| q.unknown)),
                precision: delta_ratio(n.and_then(|q| q.precision), b.and_then(|q| q.precision)),
                recall: delta_ratio(n.and_then(|q| q.recall), b.and_then(|q| q.recall)),
            };
            if d.fraud != 0 || d.legit != 0 || d.legit_hurt != 0 || d.unknown != 0 {
                diff.rules.push(d);
            }
        }
        diff
    }
}
