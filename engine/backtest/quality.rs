//! Labels joined onto one rule set's decisions: fraud caught, legit hurt, precision and recall
//! for the set and per rule, and the score sweep of each `decide` line.
//!
//! A labelled unit (an event or a transaction, `labels`) collects every decision that names it,
//! timeout decisions included, whenever they come: its outcome is the most severe of them. An
//! event without a label is an unknown unit of its own; it is kept only until its sequence
//! timers can no longer fire (event time), so memory follows the labels, not the stream.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;

use ahash::AHashMap;
use serde::Serialize;

use super::labels::{Label, Labels};
use super::BatchResult;
use crate::event::{Decision, Outcome, PaymentEvent};
use crate::rules::RuleSet;

/// Amounts in minor units by ISO 4217 currency (`XXX`: the event had none).
pub type Amounts = BTreeMap<String, i64>;

/// Units and their amount.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Total {
    pub count: u64,
    pub amount: Amounts,
}

/// Units flagged (outcome review, challenge or block), their amount and the split by outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Flagged {
    pub count: u64,
    pub amount: Amounts,
    pub block: u64,
    pub challenge: u64,
    pub review: u64,
}

/// One rule set judged against the labels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelledSet {
    /// Labelled fraud units that appeared in the replay.
    pub fraud: Total,
    /// Labelled legit units that appeared in the replay.
    pub legit: Total,
    /// Events without a label (never guessed).
    pub unknown_events: u64,
    /// Every flagged unit: labelled units and unknown events.
    pub flagged: Flagged,
    /// Fraud units flagged.
    pub fraud_caught: Flagged,
    /// Legit units flagged (false positives), by outcome.
    pub legit_hurt: Flagged,
    /// Unknown events flagged.
    pub unknown_flagged: Flagged,
    /// fraud caught / (fraud caught + legit hurt); `null` when nothing labelled was flagged.
    pub precision: Option<f64>,
    /// fraud caught / fraud; `null` without fraud labels.
    pub recall: Option<f64>,
    /// Every rule of the set, in file order (plain rules, then sequence rules).
    pub rules: Vec<RuleQuality>,
    /// One sweep per `decide` line, in file order.
    pub sweeps: Vec<Sweep>,
}

/// One rule judged against the labels: the units it matched (whatever the final outcome).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleQuality {
    pub rule: String,
    /// Units matched: labelled units and unknown events.
    pub matched: Total,
    /// Fraud units matched.
    pub fraud: Total,
    /// Legit units matched.
    pub legit: u64,
    /// Legit units matched that the set flagged, by the set's outcome.
    pub legit_hurt: Flagged,
    /// Unknown events matched.
    pub unknown: u64,
    /// fraud / (fraud + legit) of the labelled units matched.
    pub precision: Option<f64>,
    /// fraud matched / every fraud unit.
    pub recall: Option<f64>,
}

/// What moving the threshold of one `decide <outcome> when score >= N` line would do, the
/// other lines unchanged. Exact: rules, scores and tags do not depend on the thresholds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sweep {
    pub outcome: &'static str,
    /// The threshold in the rule files.
    pub threshold: i32,
    /// Thresholds that keep the lines in order, the current one included, ascending.
    pub points: Vec<SweepPoint>,
}

/// The set's totals had the line's threshold been `threshold`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepPoint {
    pub threshold: i32,
    pub flagged: u64,
    pub fraud_caught: Flagged,
    pub legit_hurt: Flagged,
    pub unknown_flagged: u64,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
}

impl Total {
    fn add(&mut self, amount: i64, currency: &str) {
        self.count += 1;
        add_amount(&mut self.amount, currency, amount);
    }
}

impl Flagged {
    fn add(&mut self, outcome: Outcome, amount: i64, currency: &str) {
        match outcome {
            Outcome::Allow => return,
            Outcome::Review => self.review += 1,
            Outcome::Challenge => self.challenge += 1,
            Outcome::Block => self.block += 1,
        }
        self.count += 1;
        add_amount(&mut self.amount, currency, amount);
    }

    fn merge(&mut self, other: &Flagged) {
        self.count += other.count;
        self.block += other.block;
        self.challenge += other.challenge;
        self.review += other.review;
        for (currency, amount) in &other.amount {
            add_amount(&mut self.amount, currency, *amount);
        }
    }
}

pub(super) fn add_amount(amounts: &mut Amounts, currency: &str, amount: i64) {
    match amounts.get_mut(currency) {
        Some(sum) => *sum = sum.saturating_add(amount),
        None => {
            amounts.insert(currency.to_string(), amount);
        }
    }
}

/// a / b, `None` when b is 0.
pub(super) fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// The currency of an event without one.
const NO_CURRENCY: &str = "XXX";

/// What the decisions of one unit add up to.
#[derive(Debug, Clone, Copy)]
struct Mark {
    seen: bool,
    outcome: Outcome,
    /// The most severe outcome of a matching rule (before thresholds).
    rule_max: Outcome,
    /// The highest score of its decisions.
    score: i32,
    /// Time of its first decision (the event time).
    first_at_ms: i64,
    amount: i64,
    currency: u32,
}

impl Default for Mark {
    fn default() -> Mark {
        Mark {
            seen: false,
            outcome: Outcome::Allow,
            rule_max: Outcome::Allow,
            score: i32::MIN,
            first_at_ms: i64::MAX,
            amount: 0,
            currency: 0,
        }
    }
}

impl Mark {
    fn merge(&mut self, d: &Decision) {
        self.seen = true;
        self.outcome = self.outcome.max(d.outcome);
        self.score = self.score.max(d.score);
        self.first_at_ms = self.first_at_ms.min(d.decided_at_ms);
        for hit in &d.hits {
            self.rule_max = self.rule_max.max(hit.outcome);
        }
    }

    /// The outcome under `lines`: thresholds only ever raise the rules' outcome, and a higher
    /// score never gives a lower outcome, so the unit's highest score decides.
    fn outcome_under(&self, lines: &[(Outcome, i32)]) -> Outcome {
        self.rule_max.max(RuleSet::decide_with(lines, self.score))
    }
}

/// An unknown event still waiting for timeout decisions.
struct Pending {
    mark: Mark,
    rules: Vec<u32>,
}

/// Unknown events, once final.
#[derive(Default)]
struct Unknown {
    events: u64,
    flagged: Flagged,
    /// Matches per rule id.
    rules: Vec<Total>,
    /// Events by (rule_max, score), for the sweeps.
    by_score: AHashMap<(Outcome, i32), u64>,
}

/// Joins one set's decisions to the labels as the replay goes.
pub(super) struct LabelTally {
    pub(super) labels: Arc<Labels>,
    rule_names: Vec<Arc<str>>,
    rule_ids: AHashMap<Arc<str>, u32>,
    decides: Vec<(Outcome, i32)>,
    /// The longest `within` of the set's sequence rules; `None` without sequence rules.
    max_within_ms: Option<i64>,
    units: Vec<Mark>,
    /// (unit, rule id) for every match on a labelled unit.
    unit_rules: Vec<(u32, u32)>,
    currencies: Vec<Box<str>>,
    currency_ids: AHashMap<Box<str>, u32>,
    pending: AHashMap<Arc<str>, Pending>,
    /// Pending unknown events by the event time after which no timer of theirs can fire.
    expiry: BinaryHeap<Reverse<(i64, Arc<str>)>>,
    due: Vec<Arc<str>>,
    unknown: Unknown,
}

impl LabelTally {
    pub(super) fn new(labels: Arc<Labels>, rules: &RuleSet) -> LabelTally {
        let rule_names = rules.rule_names();
        let rule_ids = rule_names
            .iter()
            .enumerate()
            .map(|(i, r)| (r.clone(), i as u32))
            .collect();
        let max_within_ms = rules
            .sequences()
            .iter()
            .map(|s| i64::try_from(s.within_ms).unwrap_or(i64::MAX))
            .max();
        LabelTally {
            units: vec![Mark::default(); labels.units.len()],
            labels,
            unknown: Unknown {
                rules: vec![Total::default(); rule_names.len()],
                ..Unknown::default()
            },
            rule_names,
            rule_ids,
            decides: rules.decides().to_vec(),
            max_within_ms,
            unit_rules: Vec::new(),
            currencies: vec![NO_CURRENCY.into()],
            currency_ids: std::iter::once((NO_CURRENCY.into(), 0)).collect(),
            pending: AHashMap::new(),
            expiry: BinaryHeap::new(),
            due: Vec::new(),
        }
    }

    fn currency(&mut self, code: Option<&str>) -> u32 {
        let code = code.unwrap_or(NO_CURRENCY);
        if let Some(&id) = self.currency_ids.get(code) {
            return id;
        }
        let id = self.currencies.len() as u32;
        self.currencies.push(code.into());
        self.currency_ids.insert(code.into(), id);
        id
    }

    /// One batch of the set's decisions (`events[i]` decided `decisions[i]`).
    pub(super) fn add(&mut self, batch: &BatchResult) {
        let labels = self.labels.clone();
        for (ev, d) in batch.events.events.iter().zip(&batch.decisions) {
            if self.max_within_ms.is_some() {
                // Every timer armed before this event and due by its time has fired by now.
                while let Some(Reverse((at, _))) = self.expiry.peek() {
                    if *at > ev.event_time_ms {
                        break;
                    }
                    if let Some(Reverse((_, id))) = self.expiry.pop() {
                        self.due.push(id);
                    }
                }
            }
            match labels.unit_of(&d.event_id, d.txn_id.as_deref()) {
                Some(unit) => self.mark_unit(unit, d, Some(ev)),
                None => self.unknown_event(ev, d),
            }
        }
        for d in &batch.timeouts {
            match labels.unit_of(&d.event_id, d.txn_id.as_deref()) {
                Some(unit) => self.mark_unit(unit, d, None),
                None => self.unknown_timeout(d),
            }
        }
        // Their timeouts (if any) were in this batch or an earlier one.
        for id in std::mem::take(&mut self.due) {
            if let Some(p) = self.pending.remove(&id) {
                self.finish_unknown(p);
            }
        }
    }

    fn mark_unit(&mut self, unit: u32, d: &Decision, ev: Option<&PaymentEvent>) {
        let labels = self.labels.clone();
        let Some(label) = labels.units.get(unit as usize) else {
            return;
        };
        let first = !self.units[unit as usize].seen;
        if first {
            let (amount, currency) = match (label.amount_minor, ev) {
                (Some(amount), _) => (
                    amount,
                    label
                        .currency
                        .as_deref()
                        .or(ev.and_then(|e| e.currency.as_deref())),
                ),
                (None, Some(ev)) => (ev.amount_minor.unwrap_or(0), ev.currency.as_deref()),
                (None, None) => (0, None),
            };
            let currency = self.currency(currency);
            let mark = &mut self.units[unit as usize];
            mark.amount = amount;
            mark.currency = currency;
        }
        self.units[unit as usize].merge(d);
        for hit in &d.hits {
            if let Some(&rule) = self.rule_ids.get(&hit.rule) {
                self.unit_rules.push((unit, rule));
            }
        }
    }

    fn rules_of<'a>(&'a self, d: &'a Decision) -> impl Iterator<Item = u32> + 'a {
        d.hits
            .iter()
            .filter_map(|h| self.rule_ids.get(&h.rule).copied())
    }

    fn unknown_event(&mut self, ev: &PaymentEvent, d: &Decision) {
        let mut mark = Mark {
            amount: ev.amount_minor.unwrap_or(0),
            currency: self.currency(ev.currency.as_deref()),
            ..Mark::default()
        };
        mark.merge(d);
        let rules: Vec<u32> = self.rules_of(d).collect();
        let Some(max_within) = self.max_within_ms else {
            self.finish_unknown(Pending { mark, rules });
            return;
        };
        let id: Arc<str> = d.event_id.as_str().into();
        match self.pending.get_mut(&id) {
            // The same event id again: one unit.
            Some(p) => {
                p.mark.merge(d);
                p.rules.extend(rules);
            }
            None => {
                self.pending.insert(id.clone(), Pending { mark, rules });
            }
        }
        self.expiry
            .push(Reverse((ev.event_time_ms.saturating_add(max_within), id)));
    }

    fn unknown_timeout(&mut self, d: &Decision) {
        let rules: Vec<u32> = self.rules_of(d).collect();
        if let Some(p) = self.pending.get_mut(d.event_id.as_str()) {
            p.mark.merge(d);
            p.rules.extend(rules);
            return;
        }
        // Only a repeated event id whose first copy was already final gets here.
        let mut mark = Mark::default();
        mark.merge(d);
        self.finish_unknown(Pending { mark, rules });
    }

    fn finish_unknown(&mut self, mut p: Pending) {
        let currency = &self.currencies[p.mark.currency as usize];
        self.unknown.events += 1;
        self.unknown
            .flagged
            .add(p.mark.outcome, p.mark.amount, currency);
        p.rules.sort_unstable();
        p.rules.dedup();
        for r in p.rules {
            if let Some(total) = self.unknown.rules.get_mut(r as usize) {
                total.add(p.mark.amount, currency);
            }
        }
        *self
            .unknown
            .by_score
            .entry((p.mark.rule_max, p.mark.score))
            .or_default() += 1;
    }

    /// Ends the replay: every unknown event still pending is final.
    pub(super) fn finish(&mut self) {
        let pending: Vec<Pending> = self.pending.drain().map(|(_, p)| p).collect();
        for p in pending {
            self.finish_unknown(p);
        }
        self.expiry.clear();
    }

    /// Each labelled unit's outcome; `None` for a unit no decision named.
    pub(super) fn unit_outcomes(&self) -> impl Iterator<Item = Option<Outcome>> + '_ {
        self.units.iter().map(|m| m.seen.then_some(m.outcome))
    }

    /// Labelled units that no decision named, by label.
    pub(super) fn units_not_seen(&self, label: Label) -> u64 {
        self.units
            .iter()
            .zip(&self.labels.units)
            .filter(|(m, l)| !m.seen && l.label == label)
            .count() as u64
    }

    /// Labelled units whose label was reported after their first decision.
    pub(super) fn reported_after_decision(&self) -> u64 {
        self.units
            .iter()
            .zip(&self.labels.units)
            .filter(|(m, l)| m.seen && l.reported_at_ms.is_some_and(|t| t > m.first_at_ms))
            .count() as u64
    }

    /// The set's totals, per rule, and the sweeps with thresholds `step` apart.
    pub(super) fn report(&mut self, step: u32) -> LabelledSet {
        let mut out = LabelledSet {
            fraud: Total::default(),
            legit: Total::default(),
            unknown_events: self.unknown.events,
            flagged: Flagged::default(),
            fraud_caught: Flagged::default(),
            legit_hurt: Flagged::default(),
            unknown_flagged: self.unknown.flagged.clone(),
            precision: None,
            recall: None,
            rules: Vec::new(),
            sweeps: Vec::new(),
        };
        for (mark, unit) in self.units.iter().zip(&self.labels.units) {
            if !mark.seen {
                continue;
            }
            let currency = &self.currencies[mark.currency as usize];
            let (total, flagged) = match unit.label {
                Label::Fraud => (&mut out.fraud, &mut out.fraud_caught),
                Label::Legit => (&mut out.legit, &mut out.legit_hurt),
            };
            total.add(mark.amount, currency);
            flagged.add(mark.outcome, mark.amount, currency);
        }
        out.flagged.merge(&out.fraud_caught);
        out.flagged.merge(&out.legit_hurt);
        out.flagged.merge(&out.unknown_flagged);
        out.precision = ratio(
            out.fraud_caught.count,
            out.fraud_caught.count + out.legit_hurt.count,
        );
        out.recall = ratio(out.fraud_caught.count, out.fraud.count);
        out.rules = self.rule_quality(out.fraud.count);
        out.sweeps = (0..self.decides.len())
            .map(|line| self.sweep(line, step))
            .collect();
        out
    }

    fn rule_quality(&mut self, fraud_units: u64) -> Vec<RuleQuality> {
        self.unit_rules.sort_unstable();
        self.unit_rules.dedup();
        let mut rules: Vec<RuleQuality> = self
            .rule_names
            .iter()
            .zip(&self.unknown.rules)
            .map(|(name, unknown)| RuleQuality {
                rule: name.to_string(),
                matched: unknown.clone(),
                fraud: Total::default(),
                legit: 0,
                legit_hurt: Flagged::default(),
                unknown: unknown.count,
                precision: None,
                recall: None,
            })
            .collect();
        for &(unit, rule) in &self.unit_rules {
            let (Some(mark), Some(label), Some(q)) = (
                self.units.get(unit as usize),
                self.labels.units.get(unit as usize),
                rules.get_mut(rule as usize),
            ) else {
                continue;
            };
            let currency = &self.currencies[mark.currency as usize];
            q.matched.add(mark.amount, currency);
            match label.label {
                Label::Fraud => q.fraud.add(mark.amount, currency),
                Label::Legit => {
                    q.legit += 1;
                    q.legit_hurt.add(mark.outcome, mark.amount, currency);
                }
            }
        }
        for q in &mut rules {
            q.precision = ratio(q.fraud.count, q.fraud.count + q.legit);
            q.recall = ratio(q.fraud.count, fraud_units);
        }
        rules
    }

    fn sweep(&self, line: usize, step: u32) -> Sweep {
        let (outcome, threshold) = self.decides[line];
        // Lines run from the highest threshold down; stay strictly between the neighbours.
        let above = line
            .checked_sub(1)
            .and_then(|i| self.decides.get(i))
            .map_or(i64::MAX, |(_, t)| i64::from(*t));
        let below = self
            .decides
            .get(line + 1)
            .map_or(i64::MIN, |(_, t)| i64::from(*t));
        let mut thresholds: Vec<i32> = (-3i64..=3)
            .map(|k| i64::from(threshold) + k * i64::from(step))
            .filter(|t| *t > below && *t < above)
            .filter_map(|t| i32::try_from(t).ok())
            .collect();
        thresholds.dedup();
        let fraud_units = self
            .units
            .iter()
            .zip(&self.labels.units)
            .filter(|(m, l)| m.seen && l.label == Label::Fraud)
            .count() as u64;
        let mut lines = self.decides.clone();
        let points = thresholds
            .into_iter()
            .map(|t| {
                lines[line].1 = t;
                let mut fraud_caught = Flagged::default();
                let mut legit_hurt = Flagged::default();
                for (mark, unit) in self.units.iter().zip(&self.labels.units) {
                    if !mark.seen {
                        continue;
                    }
                    let currency = &self.currencies[mark.currency as usize];
                    let flagged = match unit.label {
                        Label::Fraud => &mut fraud_caught,
                        Label::Legit => &mut legit_hurt,
                    };
                    flagged.add(mark.outcome_under(&lines), mark.amount, currency);
                }
                let unknown_flagged: u64 = self
                    .unknown
                    .by_score
                    .iter()
                    .filter(|((rule_max, score), _)| {
                        (*rule_max).max(RuleSet::decide_with(&lines, *score)) != Outcome::Allow
                    })
                    .map(|(_, n)| n)
                    .sum();
                SweepPoint {
                    threshold: t,
                    flagged: fraud_caught.count + legit_hurt.count + unknown_flagged,
                    precision: ratio(fraud_caught.count, fraud_caught.count + legit_hurt.count),
                    recall: ratio(fraud_caught.count, fraud_units),
                    fraud_caught,
                    legit_hurt,
                    unknown_flagged,
                }
            })
            .collect();
        Sweep {
            outcome: outcome.name(),
            threshold,
            points,
        }
    }
}
