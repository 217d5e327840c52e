//! Deciding in two stages, for replays (`veto backtest`): the feature update of every event,
//! split by entity value over partitions that may run in parallel, apart from each rule set's
//! evaluation on its own tags.
//!
//! A feature's value depends only on the earlier events of its own entity (its `where` filter
//! reads the event alone), never on tags or decisions, so the features of different entities
//! can be counted on different threads, and two rule sets that define the same feature (same
//! fingerprint) can share its value. Tags are read and written by rules of every entity kind,
//! and timers follow event time, so each set's evaluation stays sequential: [`RuleStage`]
//! decides exactly as [`Engine::decide`](super::Engine::decide) would with the values
//! [`FeatureStage`] computed.

use std::sync::Arc;

use super::{
    apply_effects, apply_tag_update, timeout_decision_of, update_features, EntityTags, Sets,
    StoreContext,
};
use super::{Decision, TimerSink};
use crate::event::{EventError, Field, PaymentEvent, TagUpdate};
use crate::rules::{Evaluation, RuleSet};
use crate::store::TagStore;

/// Fixed seeds: an entity belongs to the same partition in every run.
const PARTITION_SEEDS: ahash::RandomState = ahash::RandomState::with_seeds(
    0x1b87_3593_cc9e_2d51,
    0x85eb_ca6b_c2b2_ae35,
    0x27d4_eb2f_1656_67c5,
    0x9e37_79b9_7f4a_7c15,
);

/// The feature half of deciding: the features of one or two rule sets (shared where their
/// definitions are equal), each entity's state in the store of its partition.
pub struct FeatureStage {
    sets: Sets,
    parts: Vec<TagStore>,
    /// The entity kinds features are kept per.
    kinds: Vec<Field>,
}

impl FeatureStage {
    /// The features of `rules` and, if given, of `other`; `parts` holds one store per
    /// partition (at least one; an empty list gets no partition and counts nothing).
    pub fn new(rules: Arc<RuleSet>, other: Option<Arc<RuleSet>>, parts: Vec<TagStore>) -> Self {
        let sets = Sets::new(rules, other);
        let mut kinds: Vec<Field> = sets.specs.iter().map(|s| s.by).collect();
        kinds.sort_unstable_by_key(|k| *k as usize);
        kinds.dedup();
        FeatureStage { sets, parts, kinds }
    }

    /// The number of values one event's update writes.
    pub fn width(&self) -> usize {
        self.sets.specs.len()
    }

    /// The number of partitions.
    pub fn partitions(&self) -> usize {
        self.parts.len()
    }

    /// Where each feature of the first set (`other == false`) or of the other set finds its
    /// value in the list [`FeatureStage::update`] writes.
    pub fn slots(&self, other: bool) -> Vec<usize> {
        if other {
            self.sets
                .shadow
                .as_ref()
                .map(|plan| plan.slots.clone())
                .unwrap_or_default()
        } else {
            (0..self.sets.live.specs.len()).collect()
        }
    }

    /// The partition of an entity value.
    pub fn partition_of(&self, value: &str) -> usize {
        match self.parts.len() {
            0 | 1 => 0,
            n => (PARTITION_SEEDS.hash_one(value) % n as u64) as usize,
        }
    }

    /// Counts `event` into the features of the entities of partition `part` and writes their
    /// values to `out` (`width()` long); the values of other partitions' entities are `None`.
    /// Each partition must see the events in stream order; partitions are independent.
    pub fn update(&self, part: usize, event: &PaymentEvent, out: &mut [Option<f64>]) {
        let Some(store) = self.parts.get(part) else {
            out.iter_mut().for_each(|v| *v = None);
            return;
        };
        let mut owned = [false; Field::ALL.len()];
        for kind in &self.kinds {
            owned[*kind as usize] = event
                .str_field(*kind)
                .is_some_and(|v| self.partition_of(v) == part);
        }
        update_features(
            store,
            &self.sets,
            event,
            out,
            |kind| owned[kind as usize],
            |_, _| {},
        );
    }
}

/// The rule half of deciding for one set: evaluation on feature values computed elsewhere,
/// with the set's own tags (its rules' and external updates) and timers.
pub struct RuleStage {
    rules: Arc<RuleSet>,
    /// Index of each of the set's features in the value lists it is given.
    slots: Vec<usize>,
    tags: TagStore,
    timers: Arc<dyn TimerSink>,
    values: Vec<Option<f64>>,
    eval: Evaluation,
    seen: EntityTags,
}

impl RuleStage {
    /// `tags` holds the set's tags (its features are counted by a [`FeatureStage`]); `slots`
    /// comes from [`FeatureStage::slots`].
    pub fn new(
        rules: Arc<RuleSet>,
        slots: Vec<usize>,
        tags: TagStore,
        timers: Arc<dyn TimerSink>,
    ) -> RuleStage {
        RuleStage {
            rules,
            slots,
            tags,
            timers,
            values: Vec::new(),
            eval: Evaluation::default(),
            seen: EntityTags::default(),
        }
    }

    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// Evaluates the set on `event` with the feature values `row` (as the feature stage wrote
    /// them), then applies the tags and timers the rules asked for (tags become visible from
    /// the next event on). The evaluation stays readable until the next call.
    pub fn evaluate(&mut self, event: &PaymentEvent, row: &[Option<f64>]) -> &Evaluation {
        self.values.clear();
        self.values
            .extend(self.slots.iter().map(|&i| row.get(i).copied().flatten()));
        self.seen.clear();
        {
            let ctx = StoreContext::new(event, &self.values, &self.tags, &mut self.seen);
            self.rules.evaluate(event, &ctx, &mut self.eval);
        }
        apply_effects(&self.tags, &*self.timers, &self.rules, event, &self.eval);
        &self.eval
    }

    /// Applies a tag update from the `entity-tags` topic; an error when the entity already
    /// holds the most tags allowed.
    pub fn apply_tag_update(&self, update: &TagUpdate) -> Result<(), EventError> {
        apply_tag_update(&self.tags, update)
    }

    /// The decision published when the timer of the set's sequence rule `rule` fires (`None`
    /// when the set has no such rule).
    pub fn timeout_decision(
        &self,
        rule: &str,
        event_id: String,
        txn_id: Option<String>,
        decided_at_ms: i64,
    ) -> Option<Decision> {
        timeout_decision_of(&self.rules, rule, false, event_id, txn_id, decided_at_ms)
    }
}
