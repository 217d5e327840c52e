//! A naive reference of the engine core, for differential tests: feature windows that keep
//! every counted event, a tag map, and the rules evaluated on their condition trees.
//!
//! It shares nothing with the engine's state code (no buckets, no packed records, no type
//! plans, no lowered conditions): each (feature, entity) keeps its counted events one by one
//! and follows `docs/semantics.md` ("Feature windows", "Tags") literally. It computes values
//! with the engine's fixed-point convention (1e-4 of a major unit), so equal semantics give
//! bit-identical values. `distinct` is exact here: compare against an engine whose
//! `store.distinct_exact_limit` no window outgrows (the sketch has its own error-bound tests).

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use veto::event::{Aggregate, Field, PaymentEvent, TagUpdate};
use veto::rules::compiler::{Evaluation, FeatureDef};
use veto::rules::{EvalContext, RuleSet};

/// Fixed-point scale of sums and values: 1e-4 of a major unit (`docs/semantics.md`).
const FIXED_SCALE: f64 = 10_000.0;

fn to_fixed(v: f64) -> Option<i64> {
    v.is_finite().then(|| (v * FIXED_SCALE).round() as i64)
}

fn from_fixed(v: i64) -> f64 {
    v as f64 / FIXED_SCALE
}

/// What a distinct feature counts: a string value, or a number in fixed point.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Item {
    Str(String),
    Num(i64),
}

/// One counted event.
#[derive(Debug, Clone)]
struct Counted {
    time_ms: i64,
    /// The aggregated value in fixed point (`None` for `count` and `distinct`).
    value: Option<i64>,
    item: Option<Item>,
}

/// One (feature, entity): T and every counted event still inside the window, with running
/// aggregates kept beside them.
#[derive(Debug, Default)]
struct Window {
    /// The newest event time the (feature, entity) has seen; `None` before its first event.
    latest_ms: Option<i64>,
    /// Counted events by (bucket, arrival), so the oldest leave first.
    events: BTreeMap<(i64, u64), Counted>,
    count: u64,
    sum: i128,
    /// Multiset of values (min, max).
    values: BTreeMap<i64, u32>,
    /// Values by (event time, arrival): the last entry is `last`'s.
    by_time: BTreeMap<(i64, u64), i64>,
    /// Multiset of distinct items.
    items: BTreeMap<Item, u32>,
}

impl Window {
    fn add(&mut self, key: (i64, u64), counted: Counted) {
        self.count += 1;
        if let Some(v) = counted.value {
            self.sum += i128::from(v);
            *self.values.entry(v).or_default() += 1;
            self.by_time.insert((counted.time_ms, key.1), v);
        }
        if let Some(item) = &counted.item {
            *self.items.entry(item.clone()).or_default() += 1;
        }
        self.events.insert(key, counted);
    }

    /// Drops the counted events whose bucket is at or before `cutoff`; returns how many.
    fn expire(&mut self, cutoff: i64) -> u64 {
        let mut expired = 0;
        while let Some(entry) = self.events.first_entry() {
            if entry.key().0 > cutoff {
                break;
            }
            expired += 1;
            let (key, counted) = entry.remove_entry();
            self.count -= 1;
            if let Some(v) = counted.value {
                self.sum -= i128::from(v);
                remove_one(&mut self.values, v);
                self.by_time.remove(&(counted.time_ms, key.1));
            }
            if let Some(item) = counted.item {
                remove_one(&mut self.items, item);
            }
        }
        expired
    }

    fn value(&self, agg: Aggregate) -> Option<f64> {
        match agg {
            Aggregate::Count => Some(self.count as f64),
            Aggregate::Distinct => Some(self.items.len() as f64),
            Aggregate::Sum => Some(from_fixed(self.fixed_sum())),
            Aggregate::Avg => {
                (self.count > 0).then(|| from_fixed(self.fixed_sum()) / self.count as f64)
            }
            Aggregate::Min => self.values.first_key_value().map(|(v, _)| from_fixed(*v)),
            Aggregate::Max => self.values.last_key_value().map(|(v, _)| from_fixed(*v)),
            Aggregate::Last => self.by_time.last_key_value().map(|(_, v)| from_fixed(*v)),
        }
    }

    /// The sum as the engine keeps it: saturating at the bounds of `i64`.
    fn fixed_sum(&self) -> i64 {
        i64::try_from(self.sum).unwrap_or(if self.sum < 0 { i64::MIN } else { i64::MAX })
    }
}

/// Removes one `key` from a multiset.
fn remove_one<K: Ord>(multiset: &mut BTreeMap<K, u32>, key: K) {
    if let Entry::Occupied(mut e) = multiset.entry(key) {
        *e.get_mut() -= 1;
        if *e.get() == 0 {
            e.remove();
        }
    }
}

/// Tags by entity: name → expiry (`None`: never).
type Tags = HashMap<(Field, String), HashMap<String, Option<i64>>>;

/// The reference engine for one rule set.
pub struct ReferenceEngine {
    rules: Arc<RuleSet>,
    /// Per feature (rule-file order), the windows by entity value.
    windows: Vec<HashMap<String, Window>>,
    tags: Tags,
    /// Arrival number of the next event (orders ties).
    arrival: u64,
    /// Counted events that have left their window so far.
    expired: u64,
}

/// What the reference decided for one event.
#[derive(Debug, Default)]
pub struct ReferenceDecision {
    /// Every feature's value, in rule-file order.
    pub values: Vec<Option<f64>>,
    pub eval: Evaluation,
}

impl ReferenceEngine {
    pub fn new(rules: Arc<RuleSet>) -> ReferenceEngine {
        let windows = rules.features().iter().map(|_| HashMap::new()).collect();
        ReferenceEngine {
            rules,
            windows,
            tags: HashMap::new(),
            arrival: 0,
            expired: 0,
        }
    }

    /// Counts `ev` into every feature, evaluates the rules on the condition trees, then applies
    /// the tags they set (visible from the next event on).
    pub fn decide(&mut self, ev: &PaymentEvent, out: &mut ReferenceDecision) {
        let arrival = self.arrival;
        self.arrival += 1;
        out.values.clear();
        for (def, windows) in self.rules.features().iter().zip(&mut self.windows) {
            out.values
                .push(count_event(def, windows, ev, arrival, &mut self.expired));
        }
        let ctx = Context {
            values: &out.values,
            tags: &self.tags,
            now_ms: ev.event_time_ms,
        };
        self.rules.evaluate_by_definition(ev, &ctx, &mut out.eval);
        for tag in &out.eval.tags {
            self.apply_tag(tag);
        }
    }

    /// Sets or removes a tag, as from the `entity-tags` topic.
    pub fn apply_tag(&mut self, tag: &TagUpdate) {
        let tags = self
            .tags
            .entry((tag.entity, tag.value.clone()))
            .or_default();
        if tag.remove {
            tags.remove(&tag.tag);
        } else {
            tags.insert(tag.tag.clone(), tag.expires_at_ms);
        }
    }
}

/// Advances T of the event's entity for `def`, counts the event when it passes the filter,
/// carries the value and falls inside the window, and returns the feature's value at T
/// (adding to `expired` the counted events that leave the window).
fn count_event(
    def: &FeatureDef,
    windows: &mut HashMap<String, Window>,
    ev: &PaymentEvent,
    arrival: u64,
    expired: &mut u64,
) -> Option<f64> {
    let entity = ev.str_field(def.by)?;
    let window = windows.entry(entity.to_string()).or_default();
    let t = ev.event_time_ms;
    let latest = window.latest_ms.map_or(t, |l| l.max(t));
    window.latest_ms = Some(latest);
    let resolution = i64::try_from(def.resolution_ms.max(1)).unwrap_or(i64::MAX);
    let window_ms = i64::try_from(def.window_ms).unwrap_or(i64::MAX);
    let buckets = (window_ms / resolution).max(1);
    let cutoff = latest.div_euclid(resolution).saturating_sub(buckets);
    let bucket = t.div_euclid(resolution);
    if bucket > cutoff && def.applies(ev) {
        if let Some(counted) = observe(def, ev) {
            window.add((bucket, arrival), counted);
        }
    }
    *expired += window.expire(cutoff);
    window.value(def.agg)
}

/// What the event contributes to `def`; `None` when it carries no value to aggregate.
fn observe(def: &FeatureDef, ev: &PaymentEvent) -> Option<Counted> {
    let time_ms = ev.event_time_ms;
    let (value, item) = match (def.agg, def.value) {
        (Aggregate::Count, _) => (None, None),
        (_, None) => return None,
        (Aggregate::Distinct, Some(field)) => match ev.str_field(field) {
            Some(s) => (None, Some(Item::Str(s.to_string()))),
            None => (None, Some(Item::Num(to_fixed(ev.num_field(field)?)?))),
        },
        (_, Some(field)) => (Some(to_fixed(ev.num_field(field)?)?), None),
    };
    Some(Counted {
        time_ms,
        value,
        item,
    })
}

/// The reference's feature values and tags, as the rules read them.
struct Context<'a> {
    values: &'a [Option<f64>],
    tags: &'a Tags,
    now_ms: i64,
}

impl EvalContext for Context<'_> {
    fn feature(&self, slot: usize) -> Option<f64> {
        self.values.get(slot).copied().flatten()
    }

    fn has_tag(&self, entity: Field, value: &str, tag: &str) -> bool {
        self.tags
            .get(&(entity, value.to_string()))
            .and_then(|tags| tags.get(tag))
            .is_some_and(|expires| expires.is_none_or(|at| self.now_ms < at))
    }
}

/// What a differential run compared.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DifferentialSummary {
    pub events: u64,
    /// Feature values compared (bit for bit), and how many of them were present.
    pub values: u64,
    pub present_values: u64,
    /// Rule hits, tags and timer requests the two agreed on.
    pub hits: u64,
    pub tags: u64,
    pub timer_requests: u64,
    /// Decisions that were not `allow`.
    pub flagged: u64,
    /// Counted events that left their window (the windows' expiry was exercised).
    pub expired: u64,
    /// The rules that never fired (the stream does not reach them).
    pub never_fired: Vec<String>,
}

/// Turns the synthetic stream (normal authorizations and captures, in time order, and planted
/// patterns) into one that reaches the features and rules of the shipped set: by a fixed
/// scramble of the event's position, about one event in six becomes another type (refunds,
/// payouts, logins with a result, declines, chargebacks, ...), about one in seven gets an
/// unusual field (a listed card, IP or e-mail domain, a risky country or MCC, a round, zero or
/// huge amount, a shared device or IP, a bad user agent, ...), and one in 50 arrives late by up
/// to 20 minutes (inside and beyond the shortest window).
struct Variations {
    /// The first entry of the shipped lists the rules name (none when a list is absent).
    blocked_card: Option<String>,
    tor_ip: Option<String>,
    disposable_domain: Option<String>,
}

impl Variations {
    fn new(rules: &std::path::Path) -> Variations {
        let first = |list: &str| -> Option<String> {
            let path = rules.parent()?.join("lists").join(list);
            let text = std::fs::read_to_string(path).ok()?;
            let line = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))?;
            Some(line.to_string())
        };
        Variations {
            blocked_card: first("blocked_cards.txt"),
            tor_ip: first("tor_exit_ips.txt"),
            disposable_domain: first("disposable_email_domains.txt"),
        }
    }

    fn vary(&self, n: usize, ev: &mut PaymentEvent) {
        const TYPES: [&str; 12] = [
            "refund",
            "refund",
            "payout",
            "payout",
            "login",
            "login",
            "decline",
            "chargeback",
            "password_reset",
            "card_added",
            "payout_confirmed",
            "mfa_success",
        ];
        let h = (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 16;
        if let Some(kind) = TYPES.get((h % 72) as usize) {
            ev.kind = (*kind).to_string();
            match *kind {
                "login" => {
                    let result = if h.is_multiple_of(3) {
                        "success"
                    } else {
                        "failure"
                    };
                    ev.attrs.insert("result".into(), result.into());
                }
                "refund" => {
                    let original = ev.amount_minor.unwrap_or(0) * 2;
                    ev.attrs
                        .insert("original_amount".into(), original.to_string());
                    if (h >> 8).is_multiple_of(4) {
                        ev.merchant_id = Some("m-refund-storm".into());
                    }
                }
                _ => {}
            }
        }
        let set = |field: &mut Option<String>, value: &Option<String>| {
            if let Some(value) = value {
                *field = Some(value.clone());
            }
        };
        match (h >> 12) % 100 {
            0 => set(&mut ev.card_id, &self.blocked_card),
            1 => set(&mut ev.ip, &self.tor_ip),
            2 => {
                if let Some(domain) = &self.disposable_domain {
                    ev.attrs
                        .insert("email_domain".into(), domain.to_uppercase());
                }
            }
            3 => ev.ip_country = Some("NG".into()),
            4 => {
                ev.mcc = Some("7995".into());
                ev.amount_minor = Some(100_000);
            }
            5 => {
                ev.channel = Some("moto".into());
                ev.amount_minor = Some(150_000);
            }
            6 => ev.currency = Some("XXX".into()),
            7 => ev.amount_minor = Some(0),
            8 => {
                ev.attrs
                    .insert("user_agent".into(), "python-requests/2.31".into());
            }
            9 => ev.ip = Some("not-an-ip!".into()),
            10 => ev.device_id = Some("d1".into()),
            11 => {
                ev.card_country = Some("US".into());
                ev.ip_country = Some("FR".into());
                ev.country = Some("DE".into());
                ev.amount_minor = Some(300_000);
            }
            12 => ev.device_id = Some(format!("device-shared-{}", h % 3)),
            13 => ev.ip = Some(format!("10.9.9.{}", h % 2)),
            14 => ev.amount_minor = Some(6_000_000),
            15 => ev.card_id = Some("4111111111111111".into()),
            _ => {}
        }
        if (h >> 24).is_multiple_of(50) {
            ev.event_time_ms -= ((h >> 32) % 1_200) as i64 * 1_000;
        }
    }

    /// Every 997th event, a tag from the `entity-tags` topic for its user (tags no rule sets).
    fn external_tag(n: usize, ev: &PaymentEvent) -> Option<TagUpdate> {
        if !n.is_multiple_of(997) {
            return None;
        }
        Some(TagUpdate {
            entity: Field::UserId,
            value: ev.user_id.clone()?,
            tag: if n.is_multiple_of(2) {
                "fraudster"
            } else {
                "trusted"
            }
            .into(),
            expires_at_ms: Some(ev.event_time_ms + 3_600_000),
            remove: false,
        })
    }
}

/// The synthetic stream a differential run decides.
#[derive(Debug, Clone, Copy)]
pub struct DifferentialStream {
    pub events: usize,
    pub users: u64,
    pub seed: u64,
    /// New payment flows per second of event time: lower spreads the stream over more time,
    /// so longer windows see events expire.
    pub flows_per_sec: f64,
}

/// Decides the stream with the engine for `rules` (every `distinct` exact) and with the
/// reference; the first difference in a feature value, the outcome, the score, the hits, the
/// tags or the timer requests is an error naming the event.
pub fn differential(
    rules: &std::path::Path,
    stream: DifferentialStream,
) -> Result<DifferentialSummary, super::BenchError> {
    use veto::synth::{Synth, SynthConfig};
    let timers = Arc::new(veto::decider::EventTimeTimers::default());
    let (engine, _store_dir) = super::core::engine_with_store(rules, timers, usize::MAX)?;
    let live = engine.rules();
    let mut reference = ReferenceEngine::new(live.clone());
    let mut trace = veto::decider::DecideTrace::default();
    let mut want = ReferenceDecision::default();
    let mut sum = DifferentialSummary::default();
    let mut fired = vec![false; live.rules().len()];
    let synth = Synth::new(SynthConfig {
        seed: stream.seed,
        users: stream.users,
        flows_per_sec: stream.flows_per_sec,
        ..SynthConfig::default()
    });
    let variations = Variations::new(rules);
    for (n, mut event) in synth.take(stream.events).enumerate() {
        variations.vary(n, &mut event);
        if let Some(tag) = Variations::external_tag(n, &event) {
            engine
                .apply_tag_update(&tag)
                .map_err(|e| super::BenchError::Invalid(format!("tag update: {e}")))?;
            reference.apply_tag(&tag);
        }
        let decided = engine.decide_traced(&event, event.event_time_ms, &mut trace);
        reference.decide(&event, &mut want);
        let differs = |what: String| {
            super::BenchError::Invalid(format!(
                "event {n} ({}, {} at {}): {what}",
                event.event_id, event.kind, event.event_time_ms
            ))
        };
        for (i, def) in live.features().iter().enumerate() {
            let (got, expected) = (trace.values.get(i).copied().flatten(), want.values[i]);
            if got.map(f64::to_bits) != expected.map(f64::to_bits) {
                return Err(differs(format!(
                    "feature {} = {got:?}, reference {expected:?}",
                    def.name
                )));
            }
            sum.values += 1;
            sum.present_values += u64::from(got.is_some());
        }
        let (got, expected) = (&trace.eval, &want.eval);
        let hits = |e: &Evaluation| -> Vec<(String, String, i32)> {
            e.hits
                .iter()
                .map(|h| (h.rule.to_string(), h.outcome.name().to_string(), h.score))
                .collect()
        };
        if (got.outcome, got.score, hits(got)) != (expected.outcome, expected.score, hits(expected))
        {
            return Err(differs(format!(
                "decision {} score {} hits {:?}, reference {} score {} hits {:?}",
                got.outcome,
                got.score,
                hits(got),
                expected.outcome,
                expected.score,
                hits(expected)
            )));
        }
        if (&got.tags, &got.arm, &got.cancel) != (&expected.tags, &expected.arm, &expected.cancel) {
            return Err(differs(format!(
                "tags {:?} arms {:?} cancels {:?}, reference {:?} {:?} {:?}",
                got.tags, got.arm, got.cancel, expected.tags, expected.arm, expected.cancel
            )));
        }
        for hit in &got.hits {
            if let Some(i) = live.rules().iter().position(|r| r.name == hit.rule) {
                fired[i] = true;
            }
        }
        sum.events += 1;
        sum.hits += got.hits.len() as u64;
        sum.tags += got.tags.len() as u64;
        sum.timer_requests += (got.arm.len() + got.cancel.len()) as u64;
        sum.flagged += u64::from(decided.decision.outcome != veto::event::Outcome::Allow);
    }
    sum.expired = reference.expired;
    sum.never_fired = (live.rules().iter().zip(&fired))
        .filter(|(_, fired)| !**fired)
        .map(|(rule, _)| rule.name.to_string())
        .collect();
    Ok(sum)
}
