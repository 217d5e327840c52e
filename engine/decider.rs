//! The engine core: one event in, one decision out — feature updates, rule evaluation, tags and
//! timer arm/cancel — with no Kafka in sight. Used by the pipeline, `veto test` and the benches.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::event::{Aggregate, Decision, Field, PaymentEvent, TagUpdate, Trigger};
use crate::rules::{EvalContext, Evaluation, RuleSet};
use crate::store::{FeatureInput, FeatureSpec, Observation, TagStore};

/// A compiled rule set together with the store's view of its features.
pub struct LoadedRules {
    pub rules: Arc<RuleSet>,
    pub specs: Vec<FeatureSpec>,
}

impl LoadedRules {
    pub fn new(rules: Arc<RuleSet>) -> LoadedRules {
        let specs = rules
            .features()
            .iter()
            .map(|f| FeatureSpec {
                id: f.fingerprint,
                agg: f.agg,
                by: f.by,
                window_ms: f.window_ms,
                resolution_ms: f.resolution_ms,
            })
            .collect();
        LoadedRules { rules, specs }
    }
}

/// Where the engine sends timer arm/cancel requests of sequence rules.
pub trait TimerSink: Send + Sync {
    /// Arms a timer for `rule` keyed by `key`; a duplicate arm for an armed key is ignored.
    fn arm(&self, rule: &Arc<str>, key: &str, event: &PaymentEvent, within: Duration);
    /// Cancels the timer of `rule` keyed by `key`, if armed.
    fn cancel(&self, rule: &Arc<str>, key: &str);
}

/// The result of deciding one event: the decision plus what the evaluation asked for.
pub struct Decided {
    pub decision: Decision,
    /// The rule set that decided it.
    pub rules: Arc<RuleSet>,
}

/// Per-thread scratch space so the hot path does not allocate beyond the hit list.
#[derive(Default)]
struct Scratch {
    values: Vec<Option<f64>>,
    eval: Evaluation,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Reads features from the values the store just computed and tags from the store.
struct StoreContext<'a> {
    values: &'a [Option<f64>],
    store: &'a TagStore,
    now_ms: i64,
}

impl EvalContext for StoreContext<'_> {
    fn feature(&self, slot: usize) -> Option<f64> {
        self.values.get(slot).copied().flatten()
    }

    fn has_tag(&self, entity: Field, value: &str, tag: &str) -> bool {
        self.store.has_tag(entity, value, tag, self.now_ms)
    }
}

/// The engine: the live rule set (swappable), the tag store and the timer sink.
pub struct Engine {
    live: ArcSwap<LoadedRules>,
    store: Arc<TagStore>,
    timers: Arc<dyn TimerSink>,
}

impl Engine {
    pub fn new(rules: Arc<RuleSet>, store: Arc<TagStore>, timers: Arc<dyn TimerSink>) -> Engine {
        Engine {
            live: ArcSwap::from_pointee(LoadedRules::new(rules)),
            store,
            timers,
        }
    }

    /// The live rule set.
    pub fn rules(&self) -> Arc<RuleSet> {
        self.live.load().rules.clone()
    }

    pub fn store(&self) -> &Arc<TagStore> {
        &self.store
    }

    /// Atomically replaces the live rule set; events already being decided finish on the old one.
    /// Returns the previous set.
    pub fn swap_rules(&self, rules: Arc<RuleSet>) -> Arc<RuleSet> {
        let loaded = LoadedRules::new(rules);
        let keep: ahash::AHashSet<u64> = loaded.specs.iter().map(|s| s.id).collect();
        let old = self.live.swap(Arc::new(loaded));
        self.store.retain_features(&keep);
        old.rules.clone()
    }

    /// Decides one event: counts it into every feature, evaluates the rules, then applies the
    /// tags and timers the rules asked for (tags become visible from the next event on).
    pub fn decide(&self, event: &PaymentEvent, decided_at_ms: i64) -> Decided {
        let started = Instant::now();
        let live = self.live.load_full();
        SCRATCH.with(|cell| {
            let mut guard = cell.borrow_mut();
            let scratch = &mut *guard;
            self.update_features(&live, event, &mut scratch.values);
            let ctx = StoreContext {
                values: &scratch.values,
                store: &self.store,
                now_ms: event.event_time_ms,
            };
            live.rules.evaluate(event, &ctx, &mut scratch.eval);
            self.apply_effects(&live.rules, event, &scratch.eval);
            let eval = &scratch.eval;
            let decision = Decision {
                event_id: event.event_id.clone(),
                txn_id: event.txn_id.clone(),
                outcome: eval.outcome,
                score: eval.score,
                hits: eval.hits.clone(),
                ruleset_version: live.rules.version().clone(),
                trigger: Trigger::Event,
                shadow: false,
                decided_at_ms,
                eval_latency_us: u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX),
            };
            Decided {
                decision,
                rules: live.rules.clone(),
            }
        })
    }

    fn update_features(
        &self,
        live: &LoadedRules,
        event: &PaymentEvent,
        values: &mut Vec<Option<f64>>,
    ) {
        let defs = live.rules.features();
        let inputs: Vec<FeatureInput<'_>> = defs
            .iter()
            .map(|f| FeatureInput {
                entity: event.str_field(f.by),
                counted: f.applies(event),
                observation: observe(f.agg, f.value, event),
            })
            .collect();
        values.clear();
        values.resize(defs.len(), None);
        self.store
            .update(event.event_time_ms, &live.specs, &inputs, values);
    }

    fn apply_effects(&self, rules: &RuleSet, event: &PaymentEvent, eval: &Evaluation) {
        for tag in &eval.tags {
            self.store.apply_tag(tag);
        }
        let sequences = rules.sequences();
        for cancel in &eval.cancel {
            if let Some(seq) = sequences.get(cancel.sequence) {
                self.timers.cancel(&seq.rule, &cancel.key);
            }
        }
        for arm in &eval.arm {
            if let Some(seq) = sequences.get(arm.sequence) {
                self.timers.arm(
                    &seq.rule,
                    &arm.key,
                    event,
                    Duration::from_millis(arm.within_ms),
                );
            }
        }
    }

    /// Applies a tag update from the `entity-tags` topic.
    pub fn apply_tag_update(&self, update: &TagUpdate) {
        self.store.apply_tag(update);
    }

    /// The decision published when the timer of sequence rule `rule` fires for an event.
    pub fn timeout_decision(
        &self,
        rule: &str,
        event_id: String,
        txn_id: Option<String>,
        decided_at_ms: i64,
    ) -> Option<Decision> {
        let rules = self.rules();
        let index = rules.sequences().iter().position(|s| &*s.rule == rule)?;
        let (outcome, score, hits) = rules.timeout_decision(index);
        Some(Decision {
            event_id,
            txn_id,
            outcome,
            score,
            hits,
            ruleset_version: rules.version().clone(),
            trigger: Trigger::Timeout,
            shadow: false,
            decided_at_ms,
            eval_latency_us: 0,
        })
    }
}

/// What the current event contributes to a feature of aggregate `agg` over `value`.
fn observe(agg: Aggregate, value: Option<Field>, event: &PaymentEvent) -> Observation<'_> {
    match (agg, value) {
        (Aggregate::Count, _) => Observation::Count,
        (Aggregate::Distinct, Some(field)) => event
            .str_field(field)
            .map(Observation::Item)
            .or_else(|| event.num_field(field).map(Observation::Num))
            .unwrap_or(Observation::Missing),
        (_, Some(field)) => event
            .num_field(field)
            .map(Observation::Num)
            .unwrap_or(Observation::Missing),
        (_, None) => Observation::Missing,
    }
}

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
    armed: ahash::AHashMap<(Arc<str>, String), (i64, u64)>,
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
            inner.armed.remove(&(timer.rule.clone(), timer.key.clone()));
            due.push(timer);
        }
        due
    }

    /// Number of armed timers.
    pub fn armed(&self) -> usize {
        self.inner.lock().armed.len()
    }
}

impl TimerSink for EventTimeTimers {
    fn arm(&self, rule: &Arc<str>, key: &str, event: &PaymentEvent, within: Duration) {
        let mut inner = self.inner.lock();
        let id = (rule.clone(), key.to_owned());
        if inner.armed.contains_key(&id) {
            return;
        }
        inner.seq += 1;
        let deadline_ms = event
            .event_time_ms
            .saturating_add(i64::try_from(within.as_millis()).unwrap_or(i64::MAX));
        let slot = (deadline_ms, inner.seq);
        inner.armed.insert(id, slot);
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
        if let Some(slot) = inner.armed.remove(&(rule.clone(), key.to_owned())) {
            inner.by_deadline.remove(&slot);
        }
    }
}
