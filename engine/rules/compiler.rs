//! Compiler: checked declarations to an immutable `RuleSet` (folded, type-indexed), and its evaluation entry points.

use std::sync::Arc;

use ahash::AHashMap;

use super::ast::Span;
use super::by_type::ByType;
use super::eval::{EvalContext, Frame, NoContext, Pred};
use super::explain::{RuleTree, SequenceTree};
use super::lower::Code;
use crate::event::{Aggregate, Field, Outcome, PaymentEvent, RuleHit, TagUpdate};

/// A feature the store maintains; `slot` i of `EvalContext::feature` is `RuleSet::features()[i]`.
#[derive(Debug, Clone)]
pub struct FeatureDef {
    pub name: Arc<str>,
    pub agg: Aggregate,
    /// The aggregated field; `None` for `count()`.
    pub value: Option<Field>,
    /// The entity field the feature is kept per.
    pub by: Field,
    pub window_ms: u64,
    /// Bucket width: `every`, else `max(1, window / 60)`.
    pub resolution_ms: u64,
    /// Stable hash of the definition (aggregate, fields, window, resolution, filter text):
    /// equal definitions have equal fingerprints in every process and version.
    pub fingerprint: u64,
    pub(crate) filter: Option<Pred>,
}

impl FeatureDef {
    /// Whether the event passes the feature's `where` filter (true when there is none).
    pub fn applies(&self, ev: &PaymentEvent) -> bool {
        self.applies_in(&Frame::new(ev, &NoContext))
    }

    /// [`FeatureDef::applies`] with the event's per-event values already computed in `frame`.
    pub fn applies_in(&self, frame: &Frame<'_>) -> bool {
        self.filter.as_ref().is_none_or(|p| p.eval_in(frame))
    }
}

/// A sequence rule (`after … expect … with same … within …`), as the timer wheel needs it.
#[derive(Debug, Clone)]
pub struct SequenceDef {
    pub rule: Arc<str>,
    pub correlate: Field,
    pub within_ms: u64,
    pub outcome: Outcome,
    pub score: i32,
    pub(crate) after: Pred,
    pub(crate) expect: Pred,
    /// Event types `after` / `expect` are pinned to (type index); `None` = any type.
    pub(crate) after_types: Option<Box<[Arc<str>]>>,
    pub(crate) expect_types: Option<Box<[Arc<str>]>>,
    /// The conditions as written, for `veto explain` (only in sets loaded for it).
    pub explain: Option<Arc<SequenceTree>>,
}

/// A `tag <field> "<name>" for <duration>` action.
#[derive(Debug, Clone)]
pub struct TagAction {
    pub entity: Field,
    pub tag: Arc<str>,
    pub duration_ms: u64,
}

/// A plain (`when`) rule.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub name: Arc<str>,
    pub outcome: Outcome,
    pub score: i32,
    pub tags: Vec<TagAction>,
    pub(crate) cond: Pred,
    /// `cond` without type guards, used when visited through the type index.
    pub(crate) body: Pred,
    /// The condition as written, for `veto explain` (only in sets loaded for it).
    pub explain: Option<Arc<RuleTree>>,
}

/// The expected decision of a test block's last event.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedDecision {
    pub outcome: Outcome,
    /// Every matching rule, in rule-file order (exact; empty means none matched).
    pub hits: Vec<String>,
    pub score: Option<i32>,
}

impl ExpectedDecision {
    /// `None` when the actual decision matches; else "expected …, got …" for the test report.
    pub fn mismatch(&self, outcome: Outcome, score: i32, hits: &[RuleHit]) -> Option<String> {
        let got: Vec<&str> = hits.iter().map(|h| h.rule.as_ref()).collect();
        let same =
            outcome == self.outcome && got == self.hits && self.score.is_none_or(|s| s == score);
        if same {
            return None;
        }
        let want_score = self.score.map_or(String::new(), |s| format!(" score {s}"));
        Some(format!(
            "expected {} hits [{}]{want_score}, got {outcome} hits [{}] score {score}",
            self.outcome,
            self.hits.join(", "),
            got.join(", ")
        ))
    }
}

/// `expect timeout <rule> <outcome> [hits …] [score n]`: after the last event, the timer of
/// sequence `sequence` is pending and, when it fires, decides this.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedTimeout {
    pub sequence: usize,
    pub rule: String,
    pub expect: ExpectedDecision,
}

/// An in-file `test "name" { … }` block.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleTest {
    pub name: String,
    /// Events in order; `event_time_ms` = `TEST_EPOCH_MS` + `at`.
    pub events: Vec<PaymentEvent>,
    pub expect: ExpectedDecision,
    pub timeouts: Vec<ExpectedTimeout>,
    pub file: String,
    pub line: usize,
    pub span: Span,
}

/// Event time of `at: 0s` in test blocks: 2026-01-01T00:00:00Z.
pub const TEST_EPOCH_MS: i64 = 1_767_225_600_000;

/// Arm a sequence timer keyed by the event's value of the correlation field ([`ArmTimer::key`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmTimer {
    pub sequence: usize,
    /// The `with same <field>` field; the event has a value for it.
    pub correlate: Field,
    pub within_ms: u64,
}

/// Cancel the sequence timer keyed by the event's value of the correlation field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelTimer {
    pub sequence: usize,
    /// The `with same <field>` field; the event has a value for it.
    pub correlate: Field,
}

impl ArmTimer {
    /// The timer's key: `ev`'s value of the correlation field (the evaluated event's).
    pub fn key<'e>(&self, ev: &'e PaymentEvent) -> &'e str {
        ev.str_field(self.correlate).unwrap_or_default()
    }
}

impl CancelTimer {
    /// The timer's key: `ev`'s value of the correlation field (the evaluated event's).
    pub fn key<'e>(&self, ev: &'e PaymentEvent) -> &'e str {
        ev.str_field(self.correlate).unwrap_or_default()
    }
}

/// The result of evaluating one event. Reused across events: `evaluate` clears it first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    pub outcome: Outcome,
    pub score: i32,
    /// Matching rules in rule-file order.
    pub hits: Vec<RuleHit>,
    /// Tags to set after the decision; `expires_at_ms` = event time + duration.
    pub tags: Vec<TagUpdate>,
    pub arm: Vec<ArmTimer>,
    pub cancel: Vec<CancelTimer>,
    /// Rules whose condition was evaluated (the type index skips the others).
    pub rules_visited: u32,
}

impl Evaluation {
    pub fn clear(&mut self) {
        self.outcome = Outcome::Allow;
        self.score = 0;
        self.hits.clear();
        self.tags.clear();
        self.arm.clear();
        self.cancel.clear();
        self.rules_visited = 0;
    }
}

/// A compiled, immutable rule set.
#[derive(Debug)]
pub struct RuleSet {
    version: Arc<str>,
    features: Vec<FeatureDef>,
    rules: Vec<CompiledRule>,
    sequences: Vec<SequenceDef>,
    /// `(outcome, threshold)` in file order.
    decides: Vec<(Outcome, i32)>,
    tests: Vec<RuleTest>,
    list_count: usize,
    /// What an event evaluates, for each event type a type guard names.
    by_type: ByType<TypePlan>,
    /// What an event of any other type evaluates (every rule without the type index).
    other: TypePlan,
    /// Each sequence's `after` and `expect`, lowered.
    sequence_code: Box<[(Code, Code)]>,
}

/// The rules and sequence halves an event of one type evaluates.
#[derive(Debug, Default)]
struct TypePlan {
    /// Indexes of the rules visited, sorted.
    rules: Box<[u32]>,
    /// The code of each visited rule, lowered: its `body` with the type index, else `cond`.
    code: Box<[Code]>,
    /// For each sequence: whether its `expect` and its `after` may hold for the type.
    sequences: Box<[(bool, bool)]>,
}

impl TypePlan {
    /// The plan of rules `visit` (code lowered from `body` when `typed`, else from `cond`) for
    /// events of type `kind` (`None`: a type no guard names).
    fn new(
        rules: &[CompiledRule],
        visit: Vec<u32>,
        typed: bool,
        sequences: &[SequenceDef],
        kind: Option<&str>,
    ) -> TypePlan {
        let may = |types: &Option<Box<[Arc<str>]>>| {
            types
                .as_ref()
                .is_none_or(|t| kind.is_some_and(|k| t.iter().any(|t| t.as_ref() == k)))
        };
        let code = visit
            .iter()
            .map(|&i| {
                let r = &rules[i as usize];
                Code::new(if typed { &r.body } else { &r.cond })
            })
            .collect();
        TypePlan {
            rules: visit.into_boxed_slice(),
            code,
            sequences: sequences
                .iter()
                .map(|s| (may(&s.expect_types), may(&s.after_types)))
                .collect(),
        }
    }
}

/// Everything the checker produced, ready to compile.
pub struct Checked {
    pub version: Option<String>,
    pub features: Vec<FeatureDef>,
    pub rules: Vec<CompiledRule>,
    pub sequences: Vec<SequenceDef>,
    pub decides: Vec<(Outcome, i32)>,
    pub tests: Vec<RuleTest>,
    pub list_count: usize,
}

/// The stable hash of fingerprints and content versions (FNV-1a, 64 bit).
pub use crate::event::stable_hash;

/// Folds constants, builds the type index and the version.
pub fn compile(checked: Checked, content: &[&str]) -> RuleSet {
    let mut rules = checked.rules;
    for r in &mut rules {
        r.cond = std::mem::replace(&mut r.cond, Pred::Const(false))
            .fold()
            .specialize();
        r.body = r.cond.without_type_guards();
    }
    let mut sequences = checked.sequences;
    for s in &mut sequences {
        s.after = std::mem::replace(&mut s.after, Pred::Const(false))
            .fold()
            .specialize();
        s.expect = std::mem::replace(&mut s.expect, Pred::Const(false))
            .fold()
            .specialize();
        s.after_types = s.after.required_types().map(Vec::into_boxed_slice);
        s.expect_types = s.expect.required_types().map(Vec::into_boxed_slice);
    }
    let mut features = checked.features;
    for f in &mut features {
        f.filter = f.filter.take().map(|p| p.fold().specialize());
    }
    let mut typed: AHashMap<Box<str>, Vec<u32>> = AHashMap::new();
    let mut untyped = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        match r.cond.required_types() {
            Some(types) => {
                for t in types {
                    typed
                        .entry(Box::from(t.as_ref()))
                        .or_default()
                        .push(i as u32);
                }
            }
            None => untyped.push(i as u32),
        }
    }
    // a type only a sequence names gets a plan of its own too (its sequence halves)
    for s in &sequences {
        for t in [&s.expect_types, &s.after_types]
            .into_iter()
            .flatten()
            .flatten()
        {
            typed.entry(Box::from(t.as_ref())).or_default();
        }
    }
    let by_type = typed
        .into_iter()
        .map(|(t, mut list)| {
            list.extend_from_slice(&untyped);
            list.sort_unstable();
            list.dedup();
            let plan = TypePlan::new(&rules, list, true, &sequences, Some(&t));
            (t, plan)
        })
        .collect();
    let other = TypePlan::new(&rules, untyped, true, &sequences, None);
    let version = match checked.version {
        Some(v) => Arc::from(v),
        None => {
            let mut h: u64 = 0;
            for text in content {
                h = stable_hash(&[&h.to_le_bytes()[..], text.as_bytes()].concat());
            }
            Arc::from(format!("sha-fnv-{h:016x}"))
        }
    };
    RuleSet {
        version,
        features,
        sequence_code: lower_sequences(&sequences),
        rules,
        sequences,
        decides: checked.decides,
        tests: checked.tests,
        list_count: checked.list_count,
        by_type,
        other,
    }
}

fn lower_sequences(sequences: &[SequenceDef]) -> Box<[(Code, Code)]> {
    sequences
        .iter()
        .map(|s| (Code::new(&s.after), Code::new(&s.expect)))
        .collect()
}

impl RuleSet {
    /// The `version "x"` line, else a hash of the rule files' content.
    pub fn version(&self) -> &Arc<str> {
        &self.version
    }

    /// Feature definitions; slot i is `features()[i]`.
    pub fn features(&self) -> &[FeatureDef] {
        &self.features
    }

    /// Sequence rules; the index is the `sequence` of `ArmTimer`/`CancelTimer`.
    pub fn sequences(&self) -> &[SequenceDef] {
        &self.sequences
    }

    /// Plain rules in file order.
    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    /// Names of every rule (plain then sequence), in file order within each kind.
    pub fn rule_names(&self) -> Vec<Arc<str>> {
        self.rules
            .iter()
            .map(|r| r.name.clone())
            .chain(self.sequences.iter().map(|s| s.rule.clone()))
            .collect()
    }

    /// `decide` lines, `(outcome, minimum score)`, in file order.
    pub fn decides(&self) -> &[(Outcome, i32)] {
        &self.decides
    }

    /// In-file test blocks.
    pub fn tests(&self) -> &[RuleTest] {
        &self.tests
    }

    pub fn list_count(&self) -> usize {
        self.list_count
    }

    /// A copy that visits every rule for every event (to measure the type index's effect).
    pub fn without_type_index(&self) -> RuleSet {
        RuleSet {
            version: self.version.clone(),
            features: self.features.clone(),
            rules: self.rules.clone(),
            sequences: self.sequences.clone(),
            decides: self.decides.clone(),
            tests: self.tests.clone(),
            list_count: self.list_count,
            by_type: ByType::default(),
            other: TypePlan {
                // every sequence half is tested: its lowered condition keeps its type guard
                sequences: vec![(true, true); self.sequences.len()].into_boxed_slice(),
                ..TypePlan::new(
                    &self.rules,
                    (0..self.rules.len() as u32).collect(),
                    false,
                    &[],
                    None,
                )
            },
            sequence_code: lower_sequences(&self.sequences),
        }
    }

    /// The outcome of the first `decide` threshold the score meets.
    fn decide(&self, score: i32) -> Outcome {
        RuleSet::decide_with(&self.decides, score)
    }

    /// The outcome `decide` lines (`(outcome, minimum score)`, in file order) give a summed
    /// score: the first line whose threshold it meets, else allow. `veto backtest` calls it with
    /// moved thresholds for its score sweep.
    pub fn decide_with(lines: &[(Outcome, i32)], score: i32) -> Outcome {
        lines
            .iter()
            .find(|(_, threshold)| score >= *threshold)
            .map_or(Outcome::Allow, |(o, _)| *o)
    }

    /// Indexes (into [`RuleSet::rules`]) of the rules evaluated for events of type `kind`: the
    /// type index skips rules whose type guard names other types.
    pub fn rules_for_type(&self, kind: &str) -> &[u32] {
        &self.plan_for(kind).rules
    }

    fn plan_for(&self, kind: &str) -> &TypePlan {
        self.by_type.get(kind).unwrap_or(&self.other)
    }

    /// Evaluates the rules for one event. Clears and fills `out`. Never loops or does I/O;
    /// allocates only for hits, tags and timers.
    pub fn evaluate(&self, ev: &PaymentEvent, ctx: &dyn EvalContext, out: &mut Evaluation) {
        let frame = Frame::new(ev, ctx);
        let plan = self.plan_for(&ev.kind);
        let holding = plan.rules.iter().zip(&plan.code);
        self.evaluate_with(
            ev,
            plan.rules.len(),
            holding
                .filter(|(_, code)| code.holds(&frame))
                .map(|(&i, _)| i),
            |i, _| {
                let (Some(&(expect_may, after_may)), Some((after, expect))) =
                    (plan.sequences.get(i), self.sequence_code.get(i))
                else {
                    return (false, false);
                };
                (
                    expect_may && expect.holds(&frame),
                    after_may && after.holds(&frame),
                )
            },
            out,
        );
    }

    /// [`RuleSet::evaluate`] by the definition of each condition: every rule's and sequence's
    /// condition as compiled (the folded tree, [`Pred::eval_in`]) for every event, with no type
    /// index and no lowered code. Differential tests hold `evaluate` to it.
    pub fn evaluate_by_definition(
        &self,
        ev: &PaymentEvent,
        ctx: &dyn EvalContext,
        out: &mut Evaluation,
    ) {
        let frame = Frame::new(ev, ctx);
        let all = 0..self.rules.len() as u32;
        self.evaluate_with(
            ev,
            self.rules.len(),
            all.filter(|&i| self.rules[i as usize].cond.eval_in(&frame)),
            |_, s| (s.expect.eval_in(&frame), s.after.eval_in(&frame)),
            out,
        );
    }

    /// Takes the rules that hold among the `visited` rules, in rule order (`holding`), and
    /// visits every sequence (`sequence_holds(i, s)`: whether its `expect` and its `after`
    /// hold), filling `out` with the hits, tags, timer requests, outcome and score.
    fn evaluate_with(
        &self,
        ev: &PaymentEvent,
        visited: usize,
        holding: impl Iterator<Item = u32>,
        sequence_holds: impl Fn(usize, &SequenceDef) -> (bool, bool),
        out: &mut Evaluation,
    ) {
        out.clear();
        let mut outcome = Outcome::Allow;
        let mut score: i32 = 0;
        out.rules_visited = visited as u32;
        for i in holding {
            let Some(rule) = self.rules.get(i as usize) else {
                continue;
            };
            outcome = outcome.max(rule.outcome);
            score = score.saturating_add(rule.score);
            out.hits.push(RuleHit {
                rule: rule.name.clone(),
                outcome: rule.outcome,
                score: rule.score,
            });
            for t in &rule.tags {
                if let Some(value) = ev.str_field(t.entity) {
                    out.tags.push(TagUpdate {
                        entity: t.entity,
                        value: value.to_string(),
                        tag: t.tag.to_string(),
                        expires_at_ms: Some(ev.event_time_ms.saturating_add(t.duration_ms as i64)),
                        remove: false,
                    });
                }
            }
        }
        for (i, s) in self.sequences.iter().enumerate() {
            if ev.str_field(s.correlate).is_none() {
                continue;
            }
            let (expect, after) = sequence_holds(i, s);
            if expect {
                out.cancel.push(CancelTimer {
                    sequence: i,
                    correlate: s.correlate,
                });
            }
            if after {
                out.arm.push(ArmTimer {
                    sequence: i,
                    correlate: s.correlate,
                    within_ms: s.within_ms,
                });
            }
        }
        out.outcome = outcome.max(self.decide(score));
        out.score = score;
    }

    /// What a fired timer of sequence `sequence` decides: the rule's outcome and score, raised
    /// by the `decide` thresholds. An unknown index decides allow with no hits.
    pub fn timeout_decision(&self, sequence: usize) -> (Outcome, i32, Vec<RuleHit>) {
        match self.sequences.get(sequence) {
            Some(s) => (
                s.outcome.max(self.decide(s.score)),
                s.score,
                vec![RuleHit {
                    rule: s.rule.clone(),
                    outcome: s.outcome,
                    score: s.score,
                }],
            ),
            None => (Outcome::Allow, 0, Vec::new()),
        }
    }

    /// "12 rules, 8 features, 3 lists"
    pub fn summary(&self) -> String {
        let rules = self.rules.len() + self.sequences.len();
        format!(
            "{rules} rule{}, {} feature{}, {} list{}",
            if rules == 1 { "" } else { "s" },
            self.features.len(),
            if self.features.len() == 1 { "" } else { "s" },
            self.list_count,
            if self.list_count == 1 { "" } else { "s" },
        )
    }
}
