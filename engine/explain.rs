//! `veto explain`: why one event got its decision — the recorded events before it replayed
//! through the rule set (so features and tags hold real state), then that event decided with
//! every feature value, tag read, rule condition part, score and threshold it met.
//!
//! [`explain`] does the replay and returns an [`Explanation`]; [`render_human`] prints it.

mod render;

pub use render::render_human;

use std::cell::RefCell;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::backtest::{
    for_each_event, read_tags, scratch_store, BacktestError, EventFileFormat, InputError, TimedTag,
};
use crate::decider::{DecideTrace, Engine, EventTimeTimers};
use crate::event::{
    decode_event, EventError, Field, InputFormat, PaymentEvent, DEFAULT_MAX_EVENT_BYTES,
};
use crate::rules::explain::{Location, Verdict};
use crate::rules::{number, EvalContext, RuleSet};
use crate::store::StoreConfig;

/// Which event to explain, against which rules and history.
#[derive(Debug, Clone, Default)]
pub struct ExplainOptions {
    pub rules: Vec<PathBuf>,
    /// Recorded events (the history; with `event_id`, also where the event is).
    pub events: Option<PathBuf>,
    /// `None`: by the events file's extension.
    pub format: Option<EventFileFormat>,
    /// Explain the first event of the events file with this id (the events before it are
    /// replayed).
    pub event_id: Option<String>,
    /// Explain this event (JSON, `docs/wire-format.md`), decided after every event of the
    /// events file.
    pub event: Option<String>,
    /// External tag updates (`veto backtest --tags` format), applied in event time.
    pub tags: Option<PathBuf>,
}

/// Errors that stop `veto explain`.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("rule files rejected:\n{0}")]
    Rules(String),
    #[error("give the event to explain: --event-id ID (with --events) or --event JSON")]
    NoEvent,
    #[error("--event: {0}")]
    Event(EventError),
    #[error("event {id:?} is not in {path} ({events} events read, {bad} bad records)")]
    NotFound {
        id: String,
        path: String,
        events: u64,
        bad: u64,
    },
    #[error("{0}: unknown extension, expected .jsonl, .pb or .kcat (or pass --format)")]
    UnknownFormat(PathBuf),
    #[error("{0}")]
    Events(#[from] BacktestError),
    #[error("--tags {0}")]
    Tags(InputError),
}

/// Why one event got its decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub event_time_ms: i64,
    pub ruleset_version: String,
    /// Events decided before it (from the events file): the state it met.
    pub replayed_events: u64,
    /// Records of the events file read so far that could not be used (skipped).
    pub bad_records: u64,
    /// Every feature after this event was counted, in rule-file order.
    pub features: Vec<FeatureValue>,
    /// The tags the rules asked about, with the answer.
    pub tags_read: Vec<TagRead>,
    /// Every plain rule, in file order.
    pub rules: Vec<RuleExplained>,
    /// Every sequence rule: whether this event arms or cancels its timer.
    pub sequences: Vec<SequenceExplained>,
    /// The sum of the matching rules' scores.
    pub score: i32,
    /// The `decide` lines in file order, and whether the score meets each.
    pub thresholds: Vec<Threshold>,
    pub outcome: &'static str,
    /// Matching rules, in file order (the decision's hits).
    pub hits: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureValue {
    pub name: String,
    /// The entity field it is kept per, and this event's value of it.
    pub by: &'static str,
    pub entity: Option<String>,
    /// As rules read it; `None` = missing (no entity, or nothing counted in the window).
    pub value: Option<String>,
    /// This event passed the feature's `where` filter (and so was counted into it).
    pub counted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagRead {
    pub entity: &'static str,
    pub value: String,
    pub tag: String,
    pub present: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleExplained {
    pub name: String,
    pub at: Option<Location>,
    /// The engine evaluated it: its type guard admits this event's type (the type index skips
    /// the others).
    pub evaluated: bool,
    pub hit: bool,
    pub outcome: &'static str,
    pub score: i32,
    /// The condition's parts as written, evaluated.
    pub when: Option<Verdict>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SequenceExplained {
    pub name: String,
    pub at: Option<Location>,
    /// This event arms the rule's timer (`after` held).
    pub arms: bool,
    /// This event cancels the rule's timer (`expect` held).
    pub cancels: bool,
    pub within_ms: u64,
    pub after: Option<Verdict>,
    pub expect: Option<Verdict>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Threshold {
    pub outcome: &'static str,
    pub min_score: i32,
    pub met: bool,
}

/// `veto explain`: prints the explanation (JSON with `json`); 1 on an error.
pub fn run_explain(opts: &ExplainOptions, json: bool) -> i32 {
    match explain(opts) {
        Ok(explanation) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&explanation).unwrap_or_default()
                );
            } else {
                print!("{}", render_human(&explanation));
            }
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// Replays the history and explains the chosen event.
pub fn explain(opts: &ExplainOptions) -> Result<Explanation, ExplainError> {
    let inline = match &opts.event {
        Some(json) => Some(
            decode_event(json.as_bytes(), InputFormat::Json, DEFAULT_MAX_EVENT_BYTES)
                .map_err(ExplainError::Event)?,
        ),
        None => None,
    };
    if inline.is_none() && (opts.event_id.is_none() || opts.events.is_none()) {
        return Err(ExplainError::NoEvent);
    }
    let report = crate::rules::load_explained(&opts.rules);
    if report.has_errors() {
        return Err(ExplainError::Rules(report.render_human(false)));
    }
    let Some(rules) = report.ruleset.map(Arc::new) else {
        return Err(ExplainError::Rules("no rule set was produced".into()));
    };
    let tags = match &opts.tags {
        Some(path) => read_tags(path).map_err(ExplainError::Tags)?,
        None => Vec::new(),
    };
    let (store, _dir) = scratch_store(StoreConfig::default().memory_budget_bytes)?;
    let mut replay = Replay {
        timers: Arc::new(EventTimeTimers::default()),
        engine: None,
        tags,
        next_tag: 0,
        events: 0,
    };
    let engine = Engine::new(rules.clone(), Arc::new(store), replay.timers.clone());
    replay.engine = Some(engine);

    let mut bad = 0;
    let mut target = inline;
    if let Some(path) = &opts.events {
        let wanted = if target.is_none() {
            opts.event_id.as_deref()
        } else {
            None
        };
        let (found, bad_records) = replay.file(path, opts.format, wanted)?;
        bad = bad_records;
        if target.is_none() {
            target = found;
            if target.is_none() {
                return Err(ExplainError::NotFound {
                    id: opts.event_id.clone().unwrap_or_default(),
                    path: path.display().to_string(),
                    events: replay.events,
                    bad,
                });
            }
        }
    }
    let Some(event) = target else {
        return Err(ExplainError::NoEvent);
    };
    Ok(replay.explain(&event, &rules, bad))
}

/// The engine replaying the history, with its timers and the external tags still to apply.
struct Replay {
    timers: Arc<EventTimeTimers>,
    engine: Option<Engine>,
    tags: Vec<TimedTag>,
    next_tag: usize,
    /// Events decided so far.
    events: u64,
}

impl Replay {
    /// Decides the events of `path` in order; with `wanted`, stops at (and returns, undecided)
    /// the first event with that id. Returns it and the count of bad records.
    fn file(
        &mut self,
        path: &Path,
        format: Option<EventFileFormat>,
        wanted: Option<&str>,
    ) -> Result<(Option<PaymentEvent>, u64), ExplainError> {
        let format = format
            .or_else(|| EventFileFormat::from_path(path))
            .ok_or_else(|| ExplainError::UnknownFormat(path.to_path_buf()))?;
        let mut found = None;
        let stats = for_each_event(path, format, |event| {
            if wanted.is_some_and(|id| id == event.event_id) {
                found = Some(event.clone());
                return ControlFlow::Break(());
            }
            self.decide(event);
            ControlFlow::Continue(())
        })?;
        Ok((found, stats.bad_records))
    }

    fn engine(&self) -> &Engine {
        self.engine
            .as_ref()
            .unwrap_or_else(|| unreachable!("the engine is set before the replay"))
    }

    /// What happens before an event at `now_ms`: tags due are applied, timers due fire
    /// (a timeout decision changes no state, so it is dropped here).
    fn advance(&mut self, now_ms: i64) {
        while let Some(tag) = self.tags.get(self.next_tag) {
            if tag.at_ms > now_ms {
                break;
            }
            // a refused update (entity at its tag limit) is counted by the store
            let _ = self.engine().apply_tag_update(&tag.update);
            self.next_tag += 1;
        }
        self.timers.due(now_ms);
    }

    fn decide(&mut self, event: &PaymentEvent) {
        self.advance(event.event_time_ms);
        self.engine().decide(event, event.event_time_ms);
        self.events += 1;
    }

    /// Decides `event` and explains it.
    fn explain(mut self, event: &PaymentEvent, rules: &RuleSet, bad_records: u64) -> Explanation {
        self.advance(event.event_time_ms);
        let mut trace = DecideTrace::default();
        let mut seen = None;
        let decided =
            self.engine()
                .decide_inspected(event, event.event_time_ms, &mut trace, &mut |ctx| {
                    seen = Some(inspect(rules, event, ctx))
                });
        let (features, rule_verdicts, sequences, tags_read) = seen.unwrap_or_default();
        let decision = decided.decision;
        let hits: Vec<String> = decision.hits.iter().map(|h| h.rule.to_string()).collect();
        let evaluated = rules.rules_for_type(&event.kind);
        let rules_explained = rules
            .rules()
            .iter()
            .zip(rule_verdicts)
            .enumerate()
            .map(|(i, (rule, when))| RuleExplained {
                name: rule.name.to_string(),
                at: rule.explain.as_ref().map(|t| t.at.clone()),
                evaluated: evaluated.contains(&(i as u32)),
                hit: hits.iter().any(|h| *h == *rule.name),
                outcome: rule.outcome.name(),
                score: rule.score,
                when,
            })
            .collect();
        let thresholds = rules
            .decides()
            .iter()
            .map(|(outcome, min)| Threshold {
                outcome: outcome.name(),
                min_score: *min,
                met: decision.score >= *min,
            })
            .collect();
        Explanation {
            event_id: event.event_id.clone(),
            kind: event.kind.clone(),
            event_time_ms: event.event_time_ms,
            ruleset_version: decision.ruleset_version.to_string(),
            replayed_events: self.events,
            bad_records,
            features,
            tags_read,
            rules: rules_explained,
            sequences,
            score: decision.score,
            thresholds,
            outcome: decision.outcome.name(),
            hits,
        }
    }
}

type Inspected = (
    Vec<FeatureValue>,
    Vec<Option<Verdict>>,
    Vec<SequenceExplained>,
    Vec<TagRead>,
);

/// Evaluates every rule's explain tree with what the engine's rules read for `event`.
fn inspect(rules: &RuleSet, event: &PaymentEvent, ctx: &dyn EvalContext) -> Inspected {
    let ctx = Recording {
        inner: ctx,
        reads: RefCell::new(Vec::new()),
    };
    let features = rules
        .features()
        .iter()
        .enumerate()
        .map(|(slot, f)| FeatureValue {
            name: f.name.to_string(),
            by: f.by.name(),
            entity: event.str_field(f.by).map(str::to_string),
            value: ctx
                .feature(slot)
                .and_then(number::from_feature)
                .map(number::format),
            counted: f.applies(event),
        })
        .collect();
    let verdicts = rules
        .rules()
        .iter()
        .map(|r| r.explain.as_ref().map(|t| t.when.evaluate(event, &ctx)))
        .collect();
    let sequences = rules
        .sequences()
        .iter()
        .map(|s| {
            let tree = s.explain.as_ref();
            let after = tree.map(|t| t.after.evaluate(event, &ctx));
            let expect = tree.map(|t| t.expect.evaluate(event, &ctx));
            let keyed = event.str_field(s.correlate).is_some();
            SequenceExplained {
                name: s.rule.to_string(),
                at: tree.map(|t| t.at.clone()),
                arms: keyed && after.as_ref().is_some_and(|v| v.result == Some(true)),
                cancels: keyed && expect.as_ref().is_some_and(|v| v.result == Some(true)),
                within_ms: s.within_ms,
                after,
                expect,
            }
        })
        .collect();
    (features, verdicts, sequences, ctx.reads.into_inner())
}

/// The engine's view of the event's features and tags, noting each tag asked about.
struct Recording<'a> {
    inner: &'a dyn EvalContext,
    reads: RefCell<Vec<TagRead>>,
}

impl EvalContext for Recording<'_> {
    fn feature(&self, slot: usize) -> Option<f64> {
        self.inner.feature(slot)
    }

    fn has_tag(&self, entity: Field, value: &str, tag: &str) -> bool {
        let present = self.inner.has_tag(entity, value, tag);
        let mut reads = self.reads.borrow_mut();
        let read = TagRead {
            entity: entity.name(),
            value: value.to_string(),
            tag: tag.to_string(),
            present,
        };
        if !reads.contains(&read) {
            reads.push(read);
        }
        present
    }
}
