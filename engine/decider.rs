//! The engine core: one event in, one decision out — feature updates, rule evaluation, tags and
//! timer arm/cancel, plus an optional shadow set — with no Kafka in sight. Used by the pipeline,
//! `veto test`, `veto backtest` and the benches. The event-time timers of replays are in
//! `event_time`.

mod context;
mod event_time;
mod live_timers;
mod staged;

pub use event_time::{DueTimer, EventTimeTimers};
pub use staged::{FeatureStage, RuleStage};

use context::{EntityTags, StoreContext};

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::event::{
    Aggregate, Decision, EventError, Field, Outcome, PaymentEvent, TagUpdate, Trigger,
};
use crate::rules::eval::{Frame, NoContext};
use crate::rules::filters::FeatureFilters;
use crate::rules::{EvalContext, Evaluation, FeatureDef, RuleSet};
use crate::store::{FeaturePlan, FeatureSpec, Observation, TagStore};

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

/// The decisions of one event. Kept by a caller from event to event and passed to
/// [`Engine::decide_reusing`], its buffers are overwritten in place: no allocation once warm.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decided {
    pub decision: Decision,
    /// The shadow set's decision of the same event (`shadow = true`), when one is loaded.
    pub shadow: Option<Decision>,
}

/// What [`Engine::decide_traced`] copies out of one decision.
#[derive(Debug, Clone, Default)]
pub struct DecideTrace {
    /// Every feature value computed for the event: the live set's features in rule-file order,
    /// then the features only a shadow set defines.
    pub values: Vec<Option<f64>>,
    /// The live set's evaluation: outcome, score, hits, and the tags and timer arm/cancel
    /// requests it made.
    pub eval: Evaluation,
}

/// The (live) decision of `event` from its evaluation by `rules`.
pub(crate) fn event_decision(
    event: &PaymentEvent,
    eval: &Evaluation,
    rules: &RuleSet,
    decided_at_ms: i64,
    eval_latency_us: u32,
) -> Decision {
    let mut decision = Decision::default();
    write_event_decision(
        &mut decision,
        event,
        eval,
        rules,
        decided_at_ms,
        eval_latency_us,
    );
    decision
}

/// [`event_decision`] into `out`, reusing its buffers (`clone_from`) and leaving the rule-set
/// version's shared count alone when it is the same version.
fn write_event_decision(
    out: &mut Decision,
    event: &PaymentEvent,
    eval: &Evaluation,
    rules: &RuleSet,
    decided_at_ms: i64,
    eval_latency_us: u32,
) {
    out.event_id.clone_from(&event.event_id);
    out.txn_id.clone_from(&event.txn_id);
    out.outcome = eval.outcome;
    out.score = eval.score;
    out.hits.clone_from(&eval.hits);
    if !Arc::ptr_eq(&out.ruleset_version, rules.version()) {
        out.ruleset_version = rules.version().clone();
    }
    out.trigger = Trigger::Event;
    out.shadow = false;
    out.decided_at_ms = decided_at_ms;
    out.eval_latency_us = eval_latency_us;
}

/// Called by [`Engine::decide_inspected`] with what the rules read.
pub type Inspect<'a> = &'a mut dyn FnMut(&dyn EvalContext);

/// The name a shadow set's sequence rule arms its timers under, so they never collide with the
/// live set's timers of the same rule (`:` cannot appear in a rule name).
pub const SHADOW_TIMER_PREFIX: &str = "shadow:";

/// The shadow set and how its feature slots map onto the values the live update computed.
struct ShadowPlan {
    loaded: LoadedRules,
    /// `slots[i]`: index of shadow feature `i` in the combined value list.
    slots: Vec<usize>,
    /// Shadow features the live set does not define, appended after the live features.
    extra: Vec<usize>,
    /// Timer names of the shadow set's sequence rules (`SHADOW_TIMER_PREFIX` + rule).
    timer_names: Vec<Arc<str>>,
}

/// What the engine evaluates: the live set, an optional shadow set, and the features the store
/// updates for both (live features first, then features only the shadow defines): their specs,
/// the store's plan of them, the field each aggregates and their filters per event type.
struct Sets {
    live: LoadedRules,
    shadow: Option<ShadowPlan>,
    specs: Vec<FeatureSpec>,
    plan: FeaturePlan,
    /// `FeatureDef::value` of each spec.
    values: Vec<Option<Field>>,
    filters: FeatureFilters,
}

impl Sets {
    fn new(live: Arc<RuleSet>, shadow: Option<Arc<RuleSet>>) -> Sets {
        let live = LoadedRules::new(live);
        let mut specs = live.specs.clone();
        let shadow = shadow.map(|rules| {
            let loaded = LoadedRules::new(rules);
            let mut slots = Vec::with_capacity(loaded.specs.len());
            let mut extra = Vec::new();
            for (i, spec) in loaded.specs.iter().enumerate() {
                match specs.iter().position(|s| s.id == spec.id) {
                    Some(slot) => slots.push(slot),
                    None => {
                        slots.push(specs.len());
                        specs.push(*spec);
                        extra.push(i);
                    }
                }
            }
            let timer_names = loaded
                .rules
                .sequences()
                .iter()
                .map(|s| Arc::from(format!("{SHADOW_TIMER_PREFIX}{}", s.rule)))
                .collect();
            ShadowPlan {
                loaded,
                slots,
                extra,
                timer_names,
            }
        });
        let live_defs = live.rules.features().iter();
        let shadow_defs = shadow.iter().flat_map(|plan| {
            let defs = plan.loaded.rules.features();
            plan.extra.iter().filter_map(move |&i| defs.get(i))
        });
        let defs: Vec<&FeatureDef> = live_defs.chain(shadow_defs).collect();
        Sets {
            plan: FeaturePlan::new(&specs),
            filters: FeatureFilters::new(defs.iter().copied()),
            values: defs.iter().map(|f| f.value).collect(),
            live,
            shadow,
            specs,
        }
    }

    fn feature_ids(&self) -> ahash::AHashSet<u64> {
        self.specs.iter().map(|s| s.id).collect()
    }
}

/// Agreement between live and shadow outcomes, `[live][shadow]`, since start.
#[derive(Default)]
struct AgreementTally([[AtomicU64; 4]; 4]);

/// Counts of (live outcome, shadow outcome) pairs over the events both sets decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShadowAgreement {
    /// `counts[live as usize][shadow as usize]`, outcomes in `Outcome::ALL` order.
    pub counts: [[u64; 4]; 4],
}

impl ShadowAgreement {
    /// Events on which the two sets reached the same outcome.
    pub fn agreed(&self) -> u64 {
        (0..4).map(|i| self.counts[i][i]).sum()
    }

    /// Events on which the outcomes differ.
    pub fn disagreed(&self) -> u64 {
        self.counts.iter().flatten().sum::<u64>() - self.agreed()
    }

    pub fn get(&self, live: Outcome, shadow: Outcome) -> u64 {
        self.counts[live as usize][shadow as usize]
    }
}

/// Per-thread scratch space so the hot path does not allocate beyond the hit list.
#[derive(Default)]
struct Scratch {
    values: Vec<Option<f64>>,
    eval: Evaluation,
    shadow_values: Vec<Option<f64>>,
    shadow_eval: Evaluation,
    tags: EntityTags,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// The engine: the live rule set and an optional shadow set (both swappable), the tag store
/// and the timer sink.
pub struct Engine {
    sets: ArcSwap<Sets>,
    /// Serializes swaps of the live and the shadow set (each rebuilds `Sets` from the other).
    swap_lock: parking_lot::Mutex<()>,
    store: Arc<TagStore>,
    timers: Arc<dyn TimerSink>,
    agreement: AgreementTally,
}

impl Engine {
    pub fn new(rules: Arc<RuleSet>, store: Arc<TagStore>, timers: Arc<dyn TimerSink>) -> Engine {
        let sets = Sets::new(rules, None);
        // Drops restored state of features this set does not have, and records the set's
        // features, so the first swap that keeps them skips the walk over every entity.
        store.retain_features(&sets.feature_ids());
        Engine {
            sets: ArcSwap::from_pointee(sets),
            swap_lock: parking_lot::Mutex::new(()),
            store,
            timers,
            agreement: AgreementTally::default(),
        }
    }

    /// The live rule set.
    pub fn rules(&self) -> Arc<RuleSet> {
        self.sets.load().live.rules.clone()
    }

    /// The shadow rule set, if one is loaded.
    pub fn shadow_rules(&self) -> Option<Arc<RuleSet>> {
        self.sets
            .load()
            .shadow
            .as_ref()
            .map(|s| s.loaded.rules.clone())
    }

    pub fn store(&self) -> &Arc<TagStore> {
        &self.store
    }

    /// Atomically replaces the live rule set; events already being decided finish on the old one.
    /// Returns the previous set.
    pub fn swap_rules(&self, rules: Arc<RuleSet>) -> Arc<RuleSet> {
        let _guard = self.swap_lock.lock();
        let current = self.sets.load_full();
        let shadow = current.shadow.as_ref().map(|s| s.loaded.rules.clone());
        self.install(Sets::new(rules, shadow));
        current.live.rules.clone()
    }

    /// Atomically replaces (or, with `None`, removes) the shadow set. Features the shadow
    /// shares with the live set (same definition) read the live set's values; features only
    /// the shadow defines are kept beside them, starting empty. Returns the previous shadow.
    pub fn swap_shadow(&self, rules: Option<Arc<RuleSet>>) -> Option<Arc<RuleSet>> {
        let _guard = self.swap_lock.lock();
        let current = self.sets.load_full();
        self.install(Sets::new(current.live.rules.clone(), rules));
        current.shadow.as_ref().map(|s| s.loaded.rules.clone())
    }

    fn install(&self, sets: Sets) {
        let keep = sets.feature_ids();
        self.sets.store(Arc::new(sets));
        self.store.retain_features(&keep);
    }

    /// Live/shadow outcome pairs counted since the engine started.
    pub fn shadow_agreement(&self) -> ShadowAgreement {
        let mut out = ShadowAgreement::default();
        for (i, row) in self.agreement.0.iter().enumerate() {
            for (j, cell) in row.iter().enumerate() {
                out.counts[i][j] = cell.load(Ordering::Relaxed);
            }
        }
        out
    }

    /// Decides one event: counts it into every feature, evaluates the rules, then applies the
    /// tags and timers the rules asked for (tags become visible from the next event on).
    /// With a shadow set, it is evaluated on the same feature values and tags; its tags are
    /// never applied and its decision comes back in `Decided::shadow`.
    pub fn decide(&self, event: &PaymentEvent, decided_at_ms: i64) -> Decided {
        let mut out = Decided::default();
        self.decide_into(event, decided_at_ms, None, None, &mut out);
        out
    }

    /// [`Engine::decide`] into `out`, overwriting the previous event's decisions in place (the
    /// pipeline's workers keep one `Decided` each).
    pub fn decide_reusing(&self, event: &PaymentEvent, decided_at_ms: i64, out: &mut Decided) {
        self.decide_into(event, decided_at_ms, None, None, out);
    }

    /// [`Engine::decide`], also copying into `trace` the feature values computed for the event
    /// and the live set's evaluation (the check that a changed engine decides as before).
    pub fn decide_traced(
        &self,
        event: &PaymentEvent,
        decided_at_ms: i64,
        trace: &mut DecideTrace,
    ) -> Decided {
        let mut out = Decided::default();
        self.decide_into(event, decided_at_ms, Some(trace), None, &mut out);
        out
    }

    /// [`Engine::decide_traced`], also calling `inspect` with what the live set's rules read
    /// (the event's feature values and tags) after they were evaluated and before the decision's
    /// tags and timers are applied (`veto explain` evaluates each rule's parts there).
    pub fn decide_inspected(
        &self,
        event: &PaymentEvent,
        decided_at_ms: i64,
        trace: &mut DecideTrace,
        inspect: Inspect<'_>,
    ) -> Decided {
        let mut out = Decided::default();
        self.decide_into(event, decided_at_ms, Some(trace), Some(inspect), &mut out);
        out
    }

    fn decide_into(
        &self,
        event: &PaymentEvent,
        decided_at_ms: i64,
        trace: Option<&mut DecideTrace>,
        inspect: Option<Inspect<'_>>,
        out: &mut Decided,
    ) {
        let started = Instant::now();
        // a guard, not a clone of the Arc: no write to the count all deciders share
        let sets = self.sets.load();
        SCRATCH.with(|cell| {
            let mut guard = cell.borrow_mut();
            let scratch = &mut *guard;
            scratch.tags.clear();
            // sized for the set; `update_features` writes every value
            scratch.values.resize(sets.specs.len(), None);
            let tags = &mut scratch.tags;
            update_features(
                &self.store,
                &sets,
                event,
                &mut scratch.values,
                |_| true,
                |kind, live| tags.set(kind, live.names()),
            );
            let live = &sets.live;
            {
                let ctx = StoreContext::new(event, &scratch.values, &self.store, &mut scratch.tags);
                live.rules.evaluate(event, &ctx, &mut scratch.eval);
                if let Some(inspect) = inspect {
                    inspect(&ctx);
                }
            }
            if let Some(trace) = trace {
                trace.values.clone_from(&scratch.values);
                trace.eval.clone_from(&scratch.eval);
            }
            let eval_latency_us = micros(started.elapsed());
            // The shadow reads the tags as the live set saw them: before the live effects.
            match &sets.shadow {
                Some(plan) => {
                    let started = Instant::now();
                    scratch.shadow_values.clear();
                    scratch
                        .shadow_values
                        .extend(plan.slots.iter().map(|&i| scratch.values[i]));
                    let ctx = StoreContext::new(
                        event,
                        &scratch.shadow_values,
                        &self.store,
                        &mut scratch.tags,
                    );
                    plan.loaded
                        .rules
                        .evaluate(event, &ctx, &mut scratch.shadow_eval);
                    self.apply_shadow_timers(plan, event, &scratch.shadow_eval);
                    let shadow = out.shadow.get_or_insert_with(Decision::default);
                    write_event_decision(
                        shadow,
                        event,
                        &scratch.shadow_eval,
                        &plan.loaded.rules,
                        decided_at_ms,
                        micros(started.elapsed()),
                    );
                    shadow.shadow = true;
                    self.shadow_compared(scratch.eval.outcome, shadow.outcome);
                }
                None => out.shadow = None,
            }
            self.apply_effects(&live.rules, event, &scratch.eval);
            write_event_decision(
                &mut out.decision,
                event,
                &scratch.eval,
                &live.rules,
                decided_at_ms,
                eval_latency_us,
            );
        })
    }

    /// Counts one live/shadow outcome pair: `veto_shadow_agreement_total{live, shadow}`.
    fn shadow_compared(&self, live: Outcome, shadow: Outcome) {
        self.agreement.0[live as usize][shadow as usize].fetch_add(1, Ordering::Relaxed);
        metrics::counter!(
            "veto_shadow_agreement_total",
            "live" => live.name(),
            "shadow" => shadow.name()
        )
        .increment(1);
        if live != shadow {
            tracing::trace!(%live, %shadow, "shadow set disagrees with the live set");
        }
    }

    fn apply_effects(&self, rules: &RuleSet, event: &PaymentEvent, eval: &Evaluation) {
        apply_effects(&self.store, &*self.timers, rules, event, eval);
    }

    /// The shadow set's timers, under their prefixed names; its tags are never applied.
    fn apply_shadow_timers(&self, plan: &ShadowPlan, event: &PaymentEvent, eval: &Evaluation) {
        for cancel in &eval.cancel {
            if let Some(name) = plan.timer_names.get(cancel.sequence) {
                self.timers.cancel(name, cancel.key(event));
            }
        }
        for arm in &eval.arm {
            if let Some(name) = plan.timer_names.get(arm.sequence) {
                self.timers.arm(
                    name,
                    arm.key(event),
                    event,
                    Duration::from_millis(arm.within_ms),
                );
            }
        }
    }

    /// Applies a tag update from the entity-tags topic; an error when the entity already
    /// holds the most tags allowed (the update is then dead-lettered).
    pub fn apply_tag_update(&self, update: &TagUpdate) -> Result<(), EventError> {
        apply_tag_update(&self.store, update)
    }

    /// The decision published when the timer of sequence rule `rule` fires for an event; a
    /// timer named `SHADOW_TIMER_PREFIX` + rule belongs to the shadow set (`shadow = true`).
    /// `None` when the rule is no longer in its set.
    pub fn timeout_decision(
        &self,
        rule: &str,
        event_id: String,
        txn_id: Option<String>,
        decided_at_ms: i64,
    ) -> Option<Decision> {
        let (rules, rule, shadow) = match rule.strip_prefix(SHADOW_TIMER_PREFIX) {
            Some(rule) => (self.shadow_rules()?, rule, true),
            None => (self.rules(), rule, false),
        };
        timeout_decision_of(&rules, rule, shadow, event_id, txn_id, decided_at_ms)
    }
}

/// Counts the event into every feature whose entity kind `owns` accepts, writing their values
/// to `values` (one per spec; the others stay `None`), and hands `seen` the live tags of each
/// entity it updated (the engine caches them: rules then read them without a lookup).
// Out of line: inlined into `decide_into` beside the rule evaluation, its per-feature loop
// kept its state on the stack (measured: 52 more instructions per decided event).
#[inline(never)]
fn update_features(
    store: &TagStore,
    sets: &Sets,
    event: &PaymentEvent,
    values: &mut [Option<f64>],
    owns: impl Fn(Field) -> bool,
    seen: impl FnMut(Field, crate::store::LiveTags<'_>),
) {
    let frame = Frame::new(event, &NoContext);
    let filters = sets.filters.for_type(&event.kind);
    store.update_planned(
        event.event_time_ms,
        &sets.plan,
        |kind| event.str_field(kind).filter(|_| owns(kind)),
        |i| {
            // an event the filter rejects contributes nothing: skip reading the value
            if filters.get(i).is_some_and(|filter| filter.holds(&frame)) {
                observe(sets.specs[i].agg, sets.values[i], &frame)
            } else {
                Observation::Missing
            }
        },
        values,
        seen,
    );
}

/// Applies what an evaluation asked for: its tags to `store`, its timer cancels and arms to
/// `timers`.
fn apply_effects(
    store: &TagStore,
    timers: &dyn TimerSink,
    rules: &RuleSet,
    event: &PaymentEvent,
    eval: &Evaluation,
) {
    for tag in &eval.tags {
        // a refusal (entity at its tag limit) is logged and counted by the store
        let _ = store.apply_tag(tag);
    }
    let sequences = rules.sequences();
    for cancel in &eval.cancel {
        if let Some(seq) = sequences.get(cancel.sequence) {
            timers.cancel(&seq.rule, cancel.key(event));
        }
    }
    for arm in &eval.arm {
        if let Some(seq) = sequences.get(arm.sequence) {
            timers.arm(
                &seq.rule,
                arm.key(event),
                event,
                Duration::from_millis(arm.within_ms),
            );
        }
    }
}

/// Applies a tag update to `store`; an error when the entity already holds the most tags
/// allowed.
fn apply_tag_update(store: &TagStore, update: &TagUpdate) -> Result<(), EventError> {
    if store.apply_tag(update) {
        Ok(())
    } else {
        Err(EventError::TooManyTags {
            max: crate::store::MAX_TAGS,
        })
    }
}

/// The timeout decision of sequence rule `rule` of `rules` (`None` when the set lacks it).
fn timeout_decision_of(
    rules: &RuleSet,
    rule: &str,
    shadow: bool,
    event_id: String,
    txn_id: Option<String>,
    decided_at_ms: i64,
) -> Option<Decision> {
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
        shadow,
        decided_at_ms,
        eval_latency_us: 0,
    })
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// What the current event contributes to a feature of aggregate `agg` over `value`.
fn observe<'e>(agg: Aggregate, value: Option<Field>, event: &Frame<'e>) -> Observation<'e> {
    match (agg, value) {
        (Aggregate::Count, _) => Observation::Count,
        (Aggregate::Distinct, Some(field)) => event
            .ev
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    fn compile(src: &str) -> Arc<RuleSet> {
        let report = crate::rules::compile_source("t.veto", src, std::path::Path::new("."));
        assert!(!report.has_errors(), "{}", report.render_human(false));
        Arc::new(report.ruleset.expect("rule set"))
    }

    fn auth(id: &str, at_ms: i64, amount_minor: i64) -> PaymentEvent {
        PaymentEvent {
            event_id: id.into(),
            kind: "authorization".into(),
            event_time_ms: at_ms,
            user_id: Some("u1".into()),
            card_id: Some("c1".into()),
            amount_minor: Some(amount_minor),
            currency: Some("EUR".into()),
            ..PaymentEvent::default()
        }
    }

    const LIVE: &str = r#"
version "live-1"
feature card_auths = count() by card_id over 10m
rule velocity when card_auths > 1 then review
rule tagged when user_id has tag "bad" then block
"#;

    const SHADOW: &str = r#"
version "shadow-1"
feature card_auths = count() by card_id over 10m
feature user_auths = count() by user_id over 10m
rule velocity when card_auths > 0 then review
rule tagger when amount > 100 then review, tag user_id "bad" for 1h
rule user_many when user_auths > 1 then challenge
"#;

    #[test]
    fn features_defined_alike_under_two_names_count_each_event_once() {
        let rules = compile(
            r#"
feature a = count() by card_id over 10m
feature b = count() by card_id over 10m
rule two when a > 1 or b > 1 then review
"#,
        );
        let dir = tempfile::tempdir().expect("dir");
        let store = TagStore::open(StoreConfig {
            data_dir: dir.path().to_path_buf(),
            ..StoreConfig::default()
        })
        .expect("store");
        let engine = Engine::new(rules, Arc::new(store), Arc::new(EventTimeTimers::default()));
        let mut trace = DecideTrace::default();
        let decided = engine.decide_traced(&auth("e1", 1_000, 100), 1_000, &mut trace);
        assert_eq!(trace.values, [Some(1.0), Some(1.0)]);
        assert_eq!(decided.decision.outcome, Outcome::Allow);
        let decided = engine.decide_traced(&auth("e2", 2_000, 100), 2_000, &mut trace);
        assert_eq!(trace.values, [Some(2.0), Some(2.0)]);
        assert_eq!(decided.decision.outcome, Outcome::Review);
    }

    #[test]
    fn deciding_into_reused_buffers_equals_fresh_decisions() {
        let engine = |dir: &std::path::Path| {
            let store = TagStore::open(StoreConfig {
                data_dir: dir.to_path_buf(),
                ..StoreConfig::default()
            })
            .expect("store");
            let engine = Engine::new(
                compile(LIVE),
                Arc::new(store),
                Arc::new(EventTimeTimers::default()),
            );
            engine.swap_shadow(Some(compile(SHADOW)));
            engine
        };
        let (a, b) = (
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        );
        let (fresh, reusing) = (engine(a.path()), engine(b.path()));
        let mut reused = Decided::default();
        for i in 0..40i64 {
            if i == 25 {
                // the shadow goes away: no shadow decision may linger in the buffers
                fresh.swap_shadow(None);
                reusing.swap_shadow(None);
            }
            let mut event = auth(&format!("event-{i}"), i * 1_000, 5_000 + i * 997 % 20_000);
            event.txn_id = (i % 3 != 0).then(|| format!("t{}", i * 7));
            let mut expected = fresh.decide(&event, i);
            reusing.decide_reusing(&event, i, &mut reused);
            // the time spent is the only thing that differs
            for d in std::iter::once(&mut expected.decision).chain(&mut expected.shadow) {
                d.eval_latency_us = 0;
            }
            reused.decision.eval_latency_us = 0;
            if let Some(shadow) = &mut reused.shadow {
                shadow.eval_latency_us = 0;
            }
            assert_eq!(reused, expected, "event {i}");
        }
    }

    #[test]
    fn shadow_decisions_are_marked_share_features_set_no_tags_and_count_agreement() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TagStore::open(StoreConfig {
            data_dir: dir.path().to_path_buf(),
            ..StoreConfig::default()
        })
        .expect("store");
        let timers = Arc::new(EventTimeTimers::default());
        let engine = Engine::new(compile(LIVE), Arc::new(store), timers);
        assert!(engine.decide(&auth("e0", 0, 100), 0).shadow.is_none());
        assert!(engine.swap_shadow(Some(compile(SHADOW))).is_none());

        let first = engine.decide(&auth("e1", 1_000, 50_000), 1);
        let second = engine.decide(&auth("e2", 2_000, 1_000), 2);

        // Live: the card's third authorization is velocity; the shadow's tag never lands.
        assert_eq!(first.decision.outcome, Outcome::Review);
        assert!(!first.decision.shadow);
        assert_eq!(second.decision.outcome, Outcome::Review);
        let live_hits: Vec<&str> = second.decision.hits.iter().map(|h| &*h.rule).collect();
        assert_eq!(live_hits, ["velocity"], "the shadow's tag was applied");
        assert!(!engine.store().has_tag(Field::UserId, "u1", "bad", 2_000));

        // Shadow: marked, its own version; the shared feature was counted once (3 events, not
        // 5); the shadow-only feature started empty when the shadow was loaded (2 events).
        let s1 = first.shadow.expect("shadow decision");
        let s2 = second.shadow.expect("shadow decision");
        assert!(s1.shadow && s2.shadow);
        assert_eq!(&*s2.ruleset_version, "shadow-1");
        assert_eq!(s1.outcome, Outcome::Review);
        assert_eq!(s2.outcome, Outcome::Challenge);
        let shadow_hits: Vec<&str> = s2.hits.iter().map(|h| &*h.rule).collect();
        assert_eq!(shadow_hits, ["velocity", "user_many"]);
        let live_rules = engine.rules();
        let card = &live_rules.features()[0];
        let spec = FeatureSpec {
            id: card.fingerprint,
            agg: card.agg,
            by: card.by,
            window_ms: card.window_ms,
            resolution_ms: card.resolution_ms,
        };
        assert_eq!(engine.store().feature_value(&spec, "c1", 2_000), Some(3.0));

        let agreement = engine.shadow_agreement();
        assert_eq!(agreement.get(Outcome::Review, Outcome::Review), 1);
        assert_eq!(agreement.get(Outcome::Review, Outcome::Challenge), 1);
        assert_eq!((agreement.agreed(), agreement.disagreed()), (1, 1));

        // Removing the shadow stops shadow decisions.
        assert!(engine.swap_shadow(None).is_some());
        assert!(engine.decide(&auth("e3", 3_000, 100), 3).shadow.is_none());
    }

    #[test]
    fn shadow_sequence_timers_are_separate_and_time_out_as_shadow() {
        let seq = r#"
rule no_capture after type == "authorization" expect type == "capture" with same txn_id within 2s then review
"#;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TagStore::open(StoreConfig {
            data_dir: dir.path().to_path_buf(),
            ..StoreConfig::default()
        })
        .expect("store");
        let timers = Arc::new(EventTimeTimers::default());
        let engine = Engine::new(compile(seq), Arc::new(store), timers.clone());
        engine.swap_shadow(Some(compile(seq)));
        let mut event = auth("e1", 0, 100);
        event.txn_id = Some("t1".into());
        engine.decide(&event, 0);
        let mut due = timers.due(i64::MAX);
        due.sort_by(|a, b| a.rule.cmp(&b.rule));
        let names: Vec<&str> = due.iter().map(|t| &*t.rule).collect();
        assert_eq!(names, ["no_capture", "shadow:no_capture"]);
        let live = engine
            .timeout_decision(&due[0].rule, "e1".into(), None, 0)
            .expect("live timeout");
        let shadow = engine
            .timeout_decision(&due[1].rule, "e1".into(), None, 0)
            .expect("shadow timeout");
        assert!(!live.shadow && shadow.shadow);
    }
}
