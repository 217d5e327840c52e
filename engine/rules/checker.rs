//! Checker: resolves names, types and ranges of parsed files into typed declarations, reporting every error.

use std::path::PathBuf;
use std::sync::Arc;

use ahash::{AHashMap, AHashSet};

use super::ast::*;
use super::compiler::{
    Checked, CompiledRule, ExpectedDecision, ExpectedTimeout, FeatureDef, RuleTest, SequenceDef,
    TagAction, TEST_EPOCH_MS,
};
use super::diagnostic::{did_you_mean, Diagnostic, SourceFile};
use super::eval::{ListValues, NumExpr, Pred, StrExpr, StrSet};
use crate::event::{currency_exponent, Aggregate, Field, Outcome, PaymentEvent};

const MAX_WINDOW_MS: u64 = 90 * 86_400_000;
/// Most buckets a window may have (window / `every`): reading a feature sums its live
/// buckets on every event, so this bounds a rule's work per event.
const MAX_BUCKETS: u64 = 3_600;
const MAX_TAG_MS: u64 = 365 * 86_400_000;
const MAX_SCORE: i64 = 1000;
const MAX_THRESHOLD: i64 = 1_000_000;
/// Largest list file (bytes): a list is held in memory by every loaded rule set.
const MAX_LIST_FILE_BYTES: u64 = 64 << 20;
/// Reads a list file: a regular file (not a device or a pipe, which would never end) of at
/// most [`MAX_LIST_FILE_BYTES`].
fn read_list_file(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    if meta.len() > MAX_LIST_FILE_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{} bytes, more than the limit of 64 MiB", meta.len()),
        ));
    }
    let mut text = String::new();
    file.take(MAX_LIST_FILE_BYTES + 1)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// Compiled-size limit for one regex (bytes), so a pattern cannot blow up memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
const FUNCTIONS: [&str; 3] = ["lower", "len", "hour"];

/// A checked expression with its type.
enum Typed {
    Num(NumExpr),
    Str(StrExpr),
    Bool(Pred),
    /// Already reported; suppresses follow-up errors.
    Error,
}

impl Typed {
    fn type_name(&self) -> &'static str {
        match self {
            Typed::Num(_) => "a number",
            Typed::Str(_) => "a string",
            Typed::Bool(_) => "a condition",
            Typed::Error => "invalid",
        }
    }
}

/// Where an expression appears, and so what it may read.
#[derive(Clone, Copy)]
struct Scope {
    features: bool,
    tags: bool,
}

struct ListEntry {
    span: Span,
    values: Option<Arc<ListValues>>,
    used: bool,
}

struct FeatureEntry {
    slot: u32,
    span: Span,
    used: bool,
}

struct Checker<'a> {
    sources: &'a [SourceFile],
    base_dirs: &'a [PathBuf],
    diags: &'a mut Vec<Diagnostic>,
    features: AHashMap<String, FeatureEntry>,
    lists: AHashMap<String, ListEntry>,
    strings: AHashMap<String, Arc<str>>,
    regexes: AHashMap<String, Arc<regex::Regex>>,
}

fn outcome_names() -> impl Iterator<Item = &'static str> {
    Outcome::ALL.into_iter().map(Outcome::name)
}

fn field_names() -> impl Iterator<Item = &'static str> {
    Field::ALL.into_iter().map(Field::name)
}

/// Checks parsed files (`files[i]` was parsed from `sources[i]`, list paths relative to
/// `base_dirs[i]`). Pushes every problem to `diags`; the result is only valid without errors.
pub fn check(
    files: &[File],
    sources: &[SourceFile],
    base_dirs: &[PathBuf],
    diags: &mut Vec<Diagnostic>,
) -> Checked {
    let mut c = Checker {
        sources,
        base_dirs,
        diags,
        features: AHashMap::new(),
        lists: AHashMap::new(),
        strings: AHashMap::new(),
        regexes: AHashMap::new(),
    };
    c.run(files)
}

impl Checker<'_> {
    fn error(&mut self, span: Span, message: impl Into<String>, help: Option<String>) {
        self.diags.push(Diagnostic::error(span, message, help));
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.strings.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.strings.insert(s.to_string(), a.clone());
        a
    }

    /// The source text of a span, shortened for messages.
    fn text(&self, span: Span) -> String {
        let Some(src) = self.sources.get(span.file as usize) else {
            return String::new();
        };
        let text = src.text.get(span.range()).unwrap_or("");
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.chars().count() > 40 {
            format!("{}…", text.chars().take(39).collect::<String>())
        } else {
            text
        }
    }

    /// "first defined on line N" (same file) or "first defined at file:N".
    fn first_defined(&self, first: Span, here: Span) -> String {
        let line = self.line_of(first);
        if first.file == here.file {
            format!("first defined on line {line}")
        } else {
            let file = self
                .sources
                .get(first.file as usize)
                .map_or("", |s| s.name.as_str());
            format!("first defined at {file}:{line}")
        }
    }

    fn line_of(&self, span: Span) -> usize {
        self.sources
            .get(span.file as usize)
            .and_then(|s| s.text.get(..span.start as usize))
            .map_or(0, |t| t.matches('\n').count() + 1)
    }

    fn run(&mut self, files: &[File]) -> Checked {
        let items: Vec<&Item> = files.iter().flat_map(|f| f.items.iter()).collect();
        let mut version: Option<(String, Span)> = None;
        let mut feature_decls = Vec::new();
        let mut rule_spans: AHashMap<String, Span> = AHashMap::new();
        let mut sequence_names = AHashMap::new();
        let mut plain_names = AHashSet::new();

        // Pass 1: names, so declarations may be used before they appear.
        for item in &items {
            match item {
                Item::Version(v) => {
                    if let Some((_, first)) = &version {
                        let line = self.line_of(*first);
                        self.error(
                            v.span,
                            "duplicate `version` line",
                            Some(format!("the version is already set on line {line}")),
                        );
                    } else if let Literal::Str(s) = &v.value {
                        version = Some((s.clone(), v.span));
                    }
                }
                Item::List(l) => self.declare_list(l),
                Item::Feature(f) => {
                    if self.declare_feature(f, feature_decls.len() as u32) {
                        feature_decls.push(f);
                    }
                }
                Item::Rule(r) => {
                    if let Some(first) = rule_spans.get(&r.name.name) {
                        let help = self.first_defined(*first, r.name.span);
                        self.error(
                            r.name.span,
                            format!("duplicate rule `{}`", r.name.name),
                            Some(help),
                        );
                    } else {
                        rule_spans.insert(r.name.name.clone(), r.name.span);
                        match r.body {
                            RuleBody::When(_) => {
                                plain_names.insert(r.name.name.clone());
                            }
                            RuleBody::Sequence { .. } => {
                                sequence_names.insert(r.name.name.clone(), sequence_names.len());
                            }
                        }
                    }
                }
                Item::Decide(_) | Item::Test(_) => {}
            }
        }

        // Pass 2: bodies.
        let features: Vec<FeatureDef> = feature_decls.iter().map(|f| self.feature(f)).collect();
        let mut rules = Vec::new();
        let mut sequences = Vec::new();
        let mut seen_rules = AHashSet::new();
        for item in &items {
            if let Item::Rule(r) = item {
                if !seen_rules.insert(r.name.name.as_str()) {
                    continue;
                }
                match &r.body {
                    RuleBody::When(e) => {
                        if let Some(rule) = self.rule(r, e) {
                            rules.push(rule);
                        }
                    }
                    RuleBody::Sequence {
                        after,
                        expect,
                        same,
                        within,
                    } => {
                        if let Some(s) = self.sequence(r, after, expect, same, within) {
                            sequences.push(s);
                        }
                    }
                }
            }
        }
        let decides = self.decides(&items);
        let mut tests = Vec::new();
        for item in &items {
            if let Item::Test(t) = item {
                if let Some(test) = self.test(t, &plain_names, &sequence_names) {
                    tests.push(test);
                }
            }
        }
        self.warn_unused();
        Checked {
            version: version.map(|(v, _)| v),
            features,
            rules,
            sequences,
            decides,
            tests,
            list_count: self.lists.len(),
        }
    }

    fn check_new_name(&mut self, name: &Ident, kind: &str) -> bool {
        if Field::from_name(&name.name).is_some() || name.name == "attrs" {
            self.error(
                name.span,
                format!("{kind} `{}` has the name of an event field", name.name),
                Some("choose another name".into()),
            );
            return false;
        }
        if FUNCTIONS.contains(&name.name.as_str()) {
            self.error(
                name.span,
                format!("{kind} `{}` has the name of a function", name.name),
                Some("choose another name".into()),
            );
            return false;
        }
        true
    }

    fn declare_list(&mut self, l: &ListDecl) {
        if let Some(first) = self.lists.get(&l.name.name) {
            let help = self.first_defined(first.span, l.name.span);
            self.error(
                l.name.span,
                format!("duplicate list `{}`", l.name.name),
                Some(help),
            );
            return;
        }
        if !self.check_new_name(&l.name, "list") {
            return;
        }
        let values = match &l.source {
            ListSource::Inline(lits) => self.literal_set(lits),
            ListSource::File(path) => self.list_file(path),
        };
        self.lists.insert(
            l.name.name.clone(),
            ListEntry {
                span: l.name.span,
                values: values.map(Arc::new),
                used: false,
            },
        );
    }

    fn literal_set(&mut self, lits: &[SpannedLiteral]) -> Option<ListValues> {
        match lits.first().map(|l| &l.value) {
            None | Some(Literal::Str(_)) => {
                let mut set = AHashSet::with_capacity(lits.len());
                for l in lits {
                    match &l.value {
                        Literal::Str(s) => {
                            set.insert(Box::from(s.as_str()));
                        }
                        Literal::Num(_) => {
                            self.error(
                                l.span,
                                "list mixes strings and numbers",
                                Some("a list holds only strings or only numbers".into()),
                            );
                            return None;
                        }
                    }
                }
                Some(ListValues::Str(StrSet::new(set)))
            }
            Some(Literal::Num(_)) => {
                let mut values = Vec::with_capacity(lits.len());
                for l in lits {
                    match &l.value {
                        Literal::Num(n) => values.push(*n),
                        Literal::Str(_) => {
                            self.error(
                                l.span,
                                "list mixes strings and numbers",
                                Some("a list holds only strings or only numbers".into()),
                            );
                            return None;
                        }
                    }
                }
                Some(ListValues::Num(values))
            }
        }
    }

    fn list_file(&mut self, path: &SpannedLiteral) -> Option<ListValues> {
        let Literal::Str(rel) = &path.value else {
            return None;
        };
        let base = self
            .base_dirs
            .get(path.span.file as usize)
            .cloned()
            .unwrap_or_default();
        let full = base.join(rel);
        match read_list_file(&full) {
            Ok(text) => Some(ListValues::Str(StrSet::new(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(Box::from)
                    .collect(),
            ))),
            Err(e) => {
                let (message, help) = if e.kind() == std::io::ErrorKind::NotFound {
                    (
                        format!("list file `{rel}` not found"),
                        format!("looked for {}", full.display()),
                    )
                } else {
                    (
                        format!("cannot read list file `{rel}`: {e}"),
                        format!("looked for {}", full.display()),
                    )
                };
                self.error(path.span, message, Some(help));
                None
            }
        }
    }

    fn declare_feature(&mut self, f: &FeatureDecl, slot: u32) -> bool {
        if let Some(first) = self.features.get(&f.name.name) {
            let help = self.first_defined(first.span, f.name.span);
            self.error(
                f.name.span,
                format!("duplicate feature `{}`", f.name.name),
                Some(help),
            );
            return false;
        }
        if !self.check_new_name(&f.name, "feature") {
            return false;
        }
        self.features.insert(
            f.name.name.clone(),
            FeatureEntry {
                slot,
                span: f.name.span,
                used: false,
            },
        );
        true
    }

    /// Resolves a field name, reporting unknown ones with a suggestion.
    fn field(&mut self, name: &Ident) -> Option<Field> {
        let f = Field::from_name(&name.name);
        if f.is_none() {
            self.error(
                name.span,
                format!("unknown field `{}`", name.name),
                did_you_mean(&name.name, field_names()),
            );
        }
        f
    }

    /// A field naming an entity (a string field).
    fn entity_field(&mut self, name: &Ident, role: &str) -> Option<Field> {
        let f = self.field(name)?;
        if f.is_numeric() {
            self.error(
                name.span,
                format!("{role} needs a string field; `{}` is a number", name.name),
                None,
            );
            return None;
        }
        Some(f)
    }

    fn window(&mut self, d: &Duration, what: &str, max: u64) -> bool {
        if d.ms == 0 || d.ms > max {
            let text = self.text(d.span);
            self.error(
                d.span,
                format!("{what} {text} is outside 1ms..{}", format_duration(max)),
                None,
            );
            return false;
        }
        true
    }

    fn feature(&mut self, f: &FeatureDecl) -> FeatureDef {
        let agg = Aggregate::from_name(&f.agg.name);
        if agg.is_none() {
            self.error(
                f.agg.span,
                format!("unknown aggregate `{}`", f.agg.name),
                did_you_mean(&f.agg.name, Aggregate::ALL.into_iter().map(Aggregate::name)),
            );
        }
        let agg = agg.unwrap_or(Aggregate::Count);
        let value = match (&f.arg, agg) {
            (Some(arg), Aggregate::Count) => {
                self.error(
                    arg.span,
                    "`count()` takes no field",
                    Some("write `count()`".into()),
                );
                None
            }
            (None, Aggregate::Count) => None,
            (None, a) => {
                self.error(
                    f.agg.span,
                    format!("`{}` needs a field, e.g. `{}(amount)`", a.name(), a.name()),
                    None,
                );
                None
            }
            (Some(arg), a) => {
                let field = self.field(arg);
                if let Some(field) = field {
                    if a != Aggregate::Distinct && !field.is_numeric() {
                        self.error(
                            arg.span,
                            format!(
                                "`{}` needs a numeric field; `{}` is a string",
                                a.name(),
                                arg.name
                            ),
                            Some("only `distinct` and `count` work on string fields".into()),
                        );
                    }
                }
                field
            }
        };
        let by = self.entity_field(&f.by, "`by`").unwrap_or(Field::UserId);
        self.window(&f.window, "window", MAX_WINDOW_MS);
        let mut resolution_ms = (f.window.ms / 60).max(1);
        if let Some(every) = &f.every {
            if every.ms == 0 || f.window.ms % every.ms != 0 || every.ms > f.window.ms {
                let (e, w) = (self.text(every.span), self.text(f.window.span));
                self.error(
                    every.span,
                    format!("`every {e}` does not divide the window {w}"),
                    Some("pick a resolution that divides the window exactly".into()),
                );
            } else if f.window.ms / every.ms > MAX_BUCKETS {
                let (e, w) = (self.text(every.span), self.text(f.window.span));
                self.error(
                    every.span,
                    format!(
                        "`every {e}` splits the window {w} into {} buckets, more than {MAX_BUCKETS}",
                        f.window.ms / every.ms
                    ),
                    Some(format!(
                        "use a coarser resolution: at least {} ms",
                        f.window.ms.div_ceil(MAX_BUCKETS)
                    )),
                );
            } else {
                resolution_ms = every.ms;
            }
        }
        let filter = f.filter.as_ref().and_then(|w| {
            let scope = Scope {
                features: false,
                tags: false,
            };
            self.condition(w, scope, "a `where` filter")
        });
        let canonical = format!(
            "{}|{}|{}|{}|{}|{}",
            agg.name(),
            value.map_or("", Field::name),
            by.name(),
            f.window.ms,
            resolution_ms,
            f.filter
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default()
        );
        FeatureDef {
            name: Arc::from(f.name.name.as_str()),
            agg,
            value,
            by,
            window_ms: f.window.ms,
            resolution_ms,
            fingerprint: super::compiler::stable_hash(canonical.as_bytes()),
            filter,
        }
    }

    /// Checks an expression that must be a condition.
    fn condition(&mut self, e: &Expr, scope: Scope, what: &str) -> Option<Pred> {
        match self.expr(e, scope) {
            Typed::Bool(p) => Some(p),
            Typed::Error => None,
            t => {
                let text = self.text(e.span);
                self.error(
                    e.span,
                    format!("{what} must be a condition; `{text}` is {}", t.type_name()),
                    Some("compare it, e.g. `amount > 100`".into()),
                );
                None
            }
        }
    }

    fn actions(
        &mut self,
        r: &RuleDecl,
        allow_tags: bool,
    ) -> Option<(Outcome, i32, Vec<TagAction>)> {
        let mut outcome: Option<Outcome> = None;
        let mut score: Option<i32> = None;
        let mut tags = Vec::new();
        let mut ok = true;
        for a in &r.actions {
            match a {
                Action::Outcome(o) => match Outcome::from_name(&o.name) {
                    Some(_) if outcome.is_some() => {
                        self.error(
                            o.span,
                            format!("rule `{}` has more than one outcome", r.name.name),
                            None,
                        );
                        ok = false;
                    }
                    Some(v) => outcome = Some(v),
                    None => {
                        self.error(
                            o.span,
                            format!("unknown outcome `{}`", o.name),
                            did_you_mean(&o.name, outcome_names()).or(Some(
                                "outcomes are allow, review, challenge and block".into(),
                            )),
                        );
                        ok = false;
                    }
                },
                Action::Score(s, span) => {
                    if score.is_some() {
                        self.error(
                            *span,
                            format!("rule `{}` has more than one score", r.name.name),
                            None,
                        );
                        ok = false;
                    } else if s.abs() > MAX_SCORE {
                        self.error(
                            *span,
                            format!("score {s} is outside -{MAX_SCORE}..{MAX_SCORE}"),
                            None,
                        );
                        ok = false;
                    } else {
                        score = Some(*s as i32);
                    }
                }
                Action::Tag {
                    entity,
                    tag,
                    duration,
                } => {
                    if !allow_tags {
                        self.error(
                            entity.span.to(duration.span),
                            "sequence rules cannot set tags",
                            Some("tag from a plain `when` rule instead".into()),
                        );
                        ok = false;
                        continue;
                    }
                    let field = self.entity_field(entity, "`tag`");
                    let in_range = self.window(duration, "tag duration", MAX_TAG_MS);
                    if let (Some(field), true, Literal::Str(name)) = (field, in_range, &tag.value) {
                        let tag = self.intern(name);
                        tags.push(TagAction {
                            entity: field,
                            tag,
                            duration_ms: duration.ms,
                        });
                    } else {
                        ok = false;
                    }
                }
            }
        }
        ok.then(|| (outcome.unwrap_or(Outcome::Allow), score.unwrap_or(0), tags))
    }

    fn rule(&mut self, r: &RuleDecl, cond: &Expr) -> Option<CompiledRule> {
        let scope = Scope {
            features: true,
            tags: true,
        };
        let pred = self.condition(cond, scope, "a rule condition");
        let actions = self.actions(r, true);
        let pred = pred?;
        if !self.contradiction(r, cond) {
            let folded = pred.clone().fold();
            if matches!(folded, Pred::Const(false)) {
                self.error(
                    cond.span,
                    format!(
                        "rule `{}` can never match: its condition is always false",
                        r.name.name
                    ),
                    None,
                );
            }
        }
        let (outcome, score, tags) = actions?;
        Some(CompiledRule {
            name: Arc::from(r.name.name.as_str()),
            outcome,
            score,
            tags,
            body: Pred::Const(false),
            cond: pred,
        })
    }

    fn sequence(
        &mut self,
        r: &RuleDecl,
        after: &Expr,
        expect: &Expr,
        same: &Ident,
        within: &Duration,
    ) -> Option<SequenceDef> {
        let scope = Scope {
            features: true,
            tags: true,
        };
        let after = self.condition(after, scope, "an `after` condition");
        let expect = self.condition(expect, scope, "an `expect` condition");
        let correlate = self.entity_field(same, "`with same`");
        let in_range = self.window(within, "`within`", MAX_WINDOW_MS);
        let actions = self.actions(r, false);
        let (outcome, score, _) = actions?;
        if !in_range {
            return None;
        }
        Some(SequenceDef {
            rule: Arc::from(r.name.name.as_str()),
            correlate: correlate?,
            within_ms: within.ms,
            outcome,
            score,
            after: after?,
            expect: expect?,
            after_types: None,
            expect_types: None,
        })
    }

    /// Reports a top-level conjunction whose comparisons against constants cannot all hold.
    /// Returns whether one was reported.
    fn contradiction(&mut self, r: &RuleDecl, cond: &Expr) -> bool {
        fn conjuncts<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
            if let ExprKind::And(a, b) = &e.kind {
                conjuncts(a, out);
                conjuncts(b, out);
            } else {
                out.push(e);
            }
        }
        fn flip(op: CmpOp) -> CmpOp {
            match op {
                CmpOp::Lt => CmpOp::Gt,
                CmpOp::Le => CmpOp::Ge,
                CmpOp::Gt => CmpOp::Lt,
                CmpOp::Ge => CmpOp::Le,
                o => o,
            }
        }
        #[derive(Clone, Copy)]
        struct Bound {
            value: f64,
            inclusive: bool,
            atom: usize,
        }
        #[derive(Default)]
        struct Facts<'e> {
            lo: Option<Bound>,
            hi: Option<Bound>,
            ne_num: Vec<(f64, usize)>,
            eq_str: Option<(&'e str, usize)>,
            ne_str: Vec<(&'e str, usize)>,
        }
        let mut atoms = Vec::new();
        conjuncts(cond, &mut atoms);
        let mut facts: AHashMap<&str, Facts> = AHashMap::new();
        for (i, atom) in atoms.iter().enumerate() {
            let ExprKind::Cmp(op, a, b) = &atom.kind else {
                continue;
            };
            let (name, op, lit) = match (&a.kind, &b.kind) {
                (ExprKind::Name(n), ExprKind::Lit(l)) => (n.as_str(), *op, l),
                (ExprKind::Lit(l), ExprKind::Name(n)) => (n.as_str(), flip(*op), l),
                _ => continue,
            };
            let f = facts.entry(name).or_default();
            let conflict = match lit {
                Literal::Num(c) => {
                    let c = *c;
                    let tighten_lo = |lo: &mut Option<Bound>, b: Bound| {
                        if lo.is_none_or(|l| {
                            b.value > l.value || (b.value == l.value && !b.inclusive)
                        }) {
                            *lo = Some(b);
                        }
                    };
                    let tighten_hi = |hi: &mut Option<Bound>, b: Bound| {
                        if hi.is_none_or(|h| {
                            b.value < h.value || (b.value == h.value && !b.inclusive)
                        }) {
                            *hi = Some(b);
                        }
                    };
                    let bound = |inclusive| Bound {
                        value: c,
                        inclusive,
                        atom: i,
                    };
                    match op {
                        CmpOp::Gt => tighten_lo(&mut f.lo, bound(false)),
                        CmpOp::Ge => tighten_lo(&mut f.lo, bound(true)),
                        CmpOp::Lt => tighten_hi(&mut f.hi, bound(false)),
                        CmpOp::Le => tighten_hi(&mut f.hi, bound(true)),
                        CmpOp::Eq => {
                            tighten_lo(&mut f.lo, bound(true));
                            tighten_hi(&mut f.hi, bound(true));
                        }
                        CmpOp::Ne => f.ne_num.push((c, i)),
                    }
                    match (f.lo, f.hi) {
                        (Some(lo), Some(hi))
                            if lo.value > hi.value
                                || (lo.value == hi.value && !(lo.inclusive && hi.inclusive)) =>
                        {
                            Some((lo.atom.min(hi.atom), lo.atom.max(hi.atom)))
                        }
                        (Some(lo), Some(hi)) if lo.value == hi.value => {
                            f.ne_num.iter().find(|(v, _)| *v == lo.value).map(|(_, a)| {
                                (*a.min(&lo.atom.max(hi.atom)), *a.max(&lo.atom.max(hi.atom)))
                            })
                        }
                        _ => None,
                    }
                }
                Literal::Str(s) => match op {
                    CmpOp::Eq => match f.eq_str {
                        Some((prev, a)) if prev != s.as_str() => Some((a, i)),
                        _ => {
                            f.eq_str = Some((s.as_str(), i));
                            f.ne_str
                                .iter()
                                .find(|(v, _)| *v == s.as_str())
                                .map(|(_, a)| (*a, i))
                        }
                    },
                    CmpOp::Ne => {
                        f.ne_str.push((s.as_str(), i));
                        match f.eq_str {
                            Some((prev, a)) if prev == s.as_str() => Some((a, i)),
                            _ => None,
                        }
                    }
                    _ => None,
                },
            };
            if let Some((first, second)) = conflict {
                let (ta, tb) = (self.text(atoms[first].span), self.text(atoms[second].span));
                self.error(
                    atoms[second].span,
                    format!(
                        "rule `{}` can never match: `{ta}` contradicts `{tb}`",
                        r.name.name
                    ),
                    None,
                );
                return true;
            }
        }
        false
    }

    fn decides(&mut self, items: &[&Item]) -> Vec<(Outcome, i32)> {
        let mut out: Vec<(Outcome, i32, Span)> = Vec::new();
        for item in items {
            let Item::Decide(d) = item else { continue };
            let Some(outcome) = Outcome::from_name(&d.outcome.name) else {
                self.error(
                    d.outcome.span,
                    format!("unknown outcome `{}`", d.outcome.name),
                    did_you_mean(&d.outcome.name, outcome_names()).or(Some(
                        "outcomes are allow, review, challenge and block".into(),
                    )),
                );
                continue;
            };
            if d.threshold.abs() > MAX_THRESHOLD {
                self.error(
                    d.span,
                    format!(
                        "threshold {} is outside -{MAX_THRESHOLD}..{MAX_THRESHOLD}",
                        d.threshold
                    ),
                    None,
                );
                continue;
            }
            let threshold = d.threshold as i32;
            if let Some((o, t, _)) = out.iter().find(|(_, t, _)| *t <= threshold) {
                let (o, t) = (*o, *t);
                self.error(d.span, format!("unreachable `decide` line: score >= {threshold} is already decided by `decide {o} when score >= {t}` above"), Some("order `decide` lines from the highest threshold down".into()));
                continue;
            }
            if let Some((o, t, _)) = out.iter().find(|(o, _, _)| *o < outcome) {
                let (o, t) = (*o, *t);
                self.error(d.span, format!("`decide` lines out of order: `{outcome}` at score >= {threshold} is more severe than `{o}` at score >= {t} above it"), Some("a higher score must never give a milder outcome".into()));
                continue;
            }
            out.push((outcome, threshold, d.span));
        }
        out.into_iter().map(|(o, t, _)| (o, t)).collect()
    }

    fn test(
        &mut self,
        t: &TestDecl,
        plain: &AHashSet<String>,
        sequences: &AHashMap<String, usize>,
    ) -> Option<RuleTest> {
        let Literal::Str(name) = &t.name.value else {
            return None;
        };
        let mut ok = true;
        let mut events = Vec::new();
        let mut at_ms: u64 = 0;
        for (n, e) in t.events.iter().enumerate() {
            let mut ev = PaymentEvent {
                event_id: format!("{name}#{}", n + 1),
                ..Default::default()
            };
            let mut amount: Option<(f64, Span)> = None;
            for (key, value) in &e.fields {
                match (key.name.as_str(), value) {
                    ("at", TestValue::Duration(d)) => at_ms = d.ms,
                    ("at", TestValue::Lit(l)) => {
                        self.error(l.span, "`at` needs a duration, e.g. `at: 5s`", None);
                        ok = false;
                    }
                    (
                        "amount",
                        TestValue::Lit(SpannedLiteral {
                            value: Literal::Num(a),
                            span,
                        }),
                    ) => amount = Some((*a, *span)),
                    (
                        k,
                        TestValue::Lit(SpannedLiteral {
                            value: Literal::Str(s),
                            ..
                        }),
                    ) if k.starts_with("attrs.") => {
                        ev.attrs.insert(k["attrs.".len()..].to_string(), s.clone());
                    }
                    (
                        k,
                        TestValue::Lit(SpannedLiteral {
                            value: Literal::Str(s),
                            span,
                        }),
                    ) => match Field::from_name(k) {
                        Some(Field::Type) => ev.kind = s.clone(),
                        Some(Field::EventId) => ev.event_id = s.clone(),
                        Some(Field::EventTime) | Some(Field::Amount) => {
                            self.error(
                                *span,
                                format!("`{k}` needs a number"),
                                Some(if k == "event_time" {
                                    "set event times with `at:`".into()
                                } else {
                                    "write e.g. `amount: 12.50`".into()
                                }),
                            );
                            ok = false;
                        }
                        Some(f) => {
                            if let Some(slot) = str_field_mut(&mut ev, f) {
                                *slot = Some(s.clone());
                            }
                        }
                        None => {
                            self.error(
                                key.span,
                                format!("unknown event field `{k}`"),
                                did_you_mean(k, field_names().chain(["at"])),
                            );
                            ok = false;
                        }
                    },
                    (k, v) => {
                        let span = match v {
                            TestValue::Lit(l) => l.span,
                            TestValue::Duration(d) => d.span,
                        };
                        if Field::from_name(k).is_none() && !k.starts_with("attrs.") {
                            self.error(
                                key.span,
                                format!("unknown event field `{k}`"),
                                did_you_mean(k, field_names().chain(["at"])),
                            );
                        } else {
                            self.error(span, format!("wrong value type for `{k}`"), Some("`amount` takes a number, `at` a duration, other fields a string".into()));
                        }
                        ok = false;
                    }
                }
            }
            ev.event_time_ms = TEST_EPOCH_MS.saturating_add(at_ms as i64);
            if let Some((a, span)) = amount {
                let exp = currency_exponent(ev.currency.as_deref().unwrap_or(""));
                let minor = a * 10f64.powi(exp as i32);
                if (minor - minor.round()).abs() > 1e-6 || minor.abs() > 9e15 {
                    self.error(
                        span,
                        format!("amount {a} has more decimals than its currency allows"),
                        None,
                    );
                    ok = false;
                } else {
                    ev.amount_minor = Some(minor.round() as i64);
                }
            }
            events.push(ev);
        }
        if events.is_empty() {
            self.error(
                t.name.span,
                format!("test \"{name}\" has no events"),
                Some("add `event { type: \"authorization\", ... }`".into()),
            );
            ok = false;
        }
        let mut expect: Option<ExpectedDecision> = None;
        let mut timeouts = Vec::new();
        for x in &t.expects {
            let Some(outcome) = Outcome::from_name(&x.outcome.name) else {
                self.error(
                    x.outcome.span,
                    format!("unknown outcome `{}`", x.outcome.name),
                    did_you_mean(&x.outcome.name, outcome_names()),
                );
                ok = false;
                continue;
            };
            let known: Vec<&str> = plain
                .iter()
                .map(String::as_str)
                .chain(sequences.keys().map(String::as_str))
                .collect();
            let mut hits = Vec::new();
            for h in &x.hits {
                if !plain.contains(&h.name) && !sequences.contains_key(&h.name) {
                    self.error(
                        h.span,
                        format!("unknown rule `{}`", h.name),
                        did_you_mean(&h.name, known.iter().copied()),
                    );
                    ok = false;
                }
                hits.push(h.name.clone());
            }
            let decision = ExpectedDecision {
                outcome,
                hits,
                score: x
                    .score
                    .map(|s| s.clamp(i32::MIN as i64, i32::MAX as i64) as i32),
            };
            match &x.timeout_of {
                Some(rule) => match sequences.get(&rule.name) {
                    Some(&sequence) => timeouts.push(ExpectedTimeout {
                        sequence,
                        rule: rule.name.clone(),
                        expect: decision,
                    }),
                    None => {
                        let help = if plain.contains(&rule.name) {
                            Some("only `after … expect …` rules have timeouts".to_string())
                        } else {
                            did_you_mean(&rule.name, sequences.keys().map(String::as_str))
                        };
                        self.error(
                            rule.span,
                            format!("`{}` is not a sequence rule", rule.name),
                            help,
                        );
                        ok = false;
                    }
                },
                None if expect.is_some() => {
                    self.error(
                        x.span,
                        format!("test \"{name}\" has more than one `expect` for its last event"),
                        None,
                    );
                    ok = false;
                }
                None => expect = Some(decision),
            }
        }
        let Some(expect) = expect else {
            self.error(
                t.name.span,
                format!("test \"{name}\" has no `expect <outcome>` line"),
                Some("add e.g. `expect review hits card_velocity`".into()),
            );
            return None;
        };
        ok.then(|| RuleTest {
            name: name.clone(),
            events,
            expect,
            timeouts,
            file: self
                .sources
                .get(t.span.file as usize)
                .map(|s| s.name.clone())
                .unwrap_or_default(),
            line: self.line_of(t.span),
            span: t.span,
        })
    }

    fn warn_unused(&mut self) {
        let mut unused: Vec<(Span, String)> = Vec::new();
        for (name, f) in &self.features {
            if !f.used {
                unused.push((f.span, format!("feature `{name}` is never used")));
            }
        }
        for (name, l) in &self.lists {
            if !l.used {
                unused.push((l.span, format!("list `{name}` is never used")));
            }
        }
        unused.sort_by_key(|(s, _)| (s.file, s.start));
        for (span, message) in unused {
            self.diags.push(Diagnostic::warning(span, message, None));
        }
    }

    // ---- expressions ----

    fn mismatch(&mut self, a: &Expr, ta: &Typed, b: &Expr, tb: &Typed) {
        let (xa, xb) = (self.text(a.span), self.text(b.span));
        self.error(
            b.span,
            format!(
                "type mismatch: `{xa}` is {}, `{xb}` is {}",
                ta.type_name(),
                tb.type_name()
            ),
            None,
        );
    }

    fn need_num(&mut self, e: &Expr, t: Typed, what: &str) -> Option<NumExpr> {
        match t {
            Typed::Num(n) => Some(n),
            t => self.wrong_type(e, &t, what, "a number"),
        }
    }

    fn need_str(&mut self, e: &Expr, t: Typed, what: &str) -> Option<StrExpr> {
        match t {
            Typed::Str(s) => Some(s),
            t => self.wrong_type(e, &t, what, "a string"),
        }
    }

    fn need_bool(&mut self, e: &Expr, t: Typed, what: &str) -> Option<Pred> {
        match t {
            Typed::Bool(p) => Some(p),
            t => self.wrong_type(e, &t, what, "a condition"),
        }
    }

    /// Reports that `e` (of type `t`) is not the `wanted` kind `what` needs; silent for
    /// `Typed::Error`, which was reported where it arose.
    fn wrong_type<T>(&mut self, e: &Expr, t: &Typed, what: &str, wanted: &str) -> Option<T> {
        if !matches!(t, Typed::Error) {
            let text = self.text(e.span);
            self.error(
                e.span,
                format!("{what} needs {wanted}; `{text}` is {}", t.type_name()),
                None,
            );
        }
        None
    }

    fn expr(&mut self, e: &Expr, scope: Scope) -> Typed {
        self.typed_expr(e, scope).unwrap_or(Typed::Error)
    }

    /// `None` after reporting an error.
    fn typed_expr(&mut self, e: &Expr, scope: Scope) -> Option<Typed> {
        match &e.kind {
            ExprKind::Lit(Literal::Num(n)) => Some(Typed::Num(NumExpr::Const(*n))),
            ExprKind::Lit(Literal::Str(s)) => Some(Typed::Str(StrExpr::Const(self.intern(s)))),
            ExprKind::Bool(b) => Some(Typed::Bool(Pred::Const(*b))),
            ExprKind::Name(name) => self.name(name, e.span, scope),
            ExprKind::Attr(k) => Some(Typed::Str(StrExpr::Attr(self.intern(k)))),
            ExprKind::Call(f, args) => self.call(f, args, e.span, scope),
            ExprKind::Neg(inner) => {
                let t = self.expr(inner, scope);
                self.need_num(inner, t, "`-`")
                    .map(|n| Typed::Num(NumExpr::Neg(Box::new(n))))
            }
            ExprKind::Arith(op, a, b) => {
                let (ta, tb) = (self.expr(a, scope), self.expr(b, scope));
                let what = format!("`{}`", op.symbol());
                let na = self.need_num(a, ta, &what);
                let nb = self.need_num(b, tb, &what);
                Some(Typed::Num(NumExpr::Arith(
                    *op,
                    Box::new(na?),
                    Box::new(nb?),
                )))
            }
            ExprKind::Cmp(op, a, b) => {
                let (ta, tb) = (self.expr(a, scope), self.expr(b, scope));
                match (ta, tb) {
                    (Typed::Error, _) | (_, Typed::Error) => None,
                    (Typed::Num(x), Typed::Num(y)) => Some(Typed::Bool(Pred::Num(*op, x, y))),
                    (Typed::Str(x), Typed::Str(y)) if matches!(op, CmpOp::Eq | CmpOp::Ne) => {
                        Some(Typed::Bool(Pred::Str(*op, x, y)))
                    }
                    (Typed::Str(_), Typed::Str(_)) => {
                        self.error(
                            e.span,
                            format!(
                                "`{}` compares numbers; `{}` and `{}` are strings",
                                op.symbol(),
                                self.text(a.span),
                                self.text(b.span)
                            ),
                            Some(
                                "strings support `==`, `!=`, `in`, `matches` and `starts_with`"
                                    .into(),
                            ),
                        );
                        None
                    }
                    (Typed::Bool(_), _) | (_, Typed::Bool(_)) => {
                        self.error(
                            e.span,
                            format!("`{}` cannot compare conditions", op.symbol()),
                            Some("combine conditions with `and`, `or`, `not`".into()),
                        );
                        None
                    }
                    (ta, tb) => {
                        self.mismatch(a, &ta, b, &tb);
                        None
                    }
                }
            }
            ExprKind::And(a, b) | ExprKind::Or(a, b) => {
                let what = if matches!(e.kind, ExprKind::And(..)) {
                    "`and`"
                } else {
                    "`or`"
                };
                let (ta, tb) = (self.expr(a, scope), self.expr(b, scope));
                let pa = self.need_bool(a, ta, what);
                let pb = self.need_bool(b, tb, what);
                let (pa, pb) = (pa?, pb?);
                Some(Typed::Bool(if matches!(e.kind, ExprKind::And(..)) {
                    Pred::And(vec![pa, pb])
                } else {
                    Pred::Or(vec![pa, pb])
                }))
            }
            ExprKind::Not(inner) => {
                let t = self.expr(inner, scope);
                self.need_bool(inner, t, "`not`")
                    .map(|p| Typed::Bool(Pred::Not(Box::new(p))))
            }
            ExprKind::InList(x, list) => {
                let t = self.expr(x, scope);
                let values = match self.lists.get_mut(&list.name) {
                    Some(entry) => {
                        entry.used = true;
                        entry.values.clone()
                    }
                    None => {
                        let help = did_you_mean(
                            &list.name,
                            self.lists.keys().map(String::as_str).collect::<Vec<_>>(),
                        );
                        self.error(list.span, format!("unknown list `{}`", list.name), help);
                        None
                    }
                };
                self.membership(x, t, values?, &format!("list `{}`", list.name))
            }
            ExprKind::InLiteral(x, lits) => {
                let t = self.expr(x, scope);
                let values = self.literal_set(lits).map(Arc::new);
                self.membership(x, t, values?, "the list")
            }
            ExprKind::Matches(x, re) => {
                let t = self.expr(x, scope);
                let s = self.need_str(x, t, "`matches`");
                let Literal::Str(pattern) = &re.value else {
                    return None;
                };
                if let Some(r) = self.regexes.get(pattern) {
                    return s.map(|s| Typed::Bool(Pred::Matches(s, r.clone())));
                }
                let compiled = regex::RegexBuilder::new(pattern)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build();
                match compiled {
                    Ok(r) => {
                        let r = Arc::new(r);
                        self.regexes.insert(pattern.clone(), r.clone());
                        s.map(|s| Typed::Bool(Pred::Matches(s, r)))
                    }
                    Err(err) => {
                        let detail = err.to_string();
                        let detail = detail
                            .lines()
                            .rev()
                            .find(|l| !l.trim().is_empty())
                            .unwrap_or("")
                            .trim()
                            .trim_start_matches("error: ")
                            .to_string();
                        self.error(re.span, format!("invalid regex: {detail}"), None);
                        None
                    }
                }
            }
            ExprKind::StartsWith(x, prefix) => {
                let t = self.expr(x, scope);
                let s = self.need_str(x, t, "`starts_with`");
                let Literal::Str(p) = &prefix.value else {
                    return None;
                };
                let p = self.intern(p);
                s.map(|s| Typed::Bool(Pred::StartsWith(s, p)))
            }
            ExprKind::HasTag(entity, tag) => {
                if !scope.tags {
                    self.error(
                        e.span,
                        "a `where` filter cannot read tags",
                        Some("tags can be read in rule conditions".into()),
                    );
                    return None;
                }
                let field = self.entity_field(entity, "`has tag`");
                let Literal::Str(t) = &tag.value else {
                    return None;
                };
                let t = self.intern(t);
                field.map(|f| Typed::Bool(Pred::HasTag(f, t)))
            }
        }
    }

    fn membership(
        &mut self,
        x: &Expr,
        t: Typed,
        values: Arc<ListValues>,
        list_desc: &str,
    ) -> Option<Typed> {
        match (t, values.as_ref()) {
            (Typed::Error, _) => None,
            (Typed::Str(s), ListValues::Str(_)) => Some(Typed::Bool(Pred::InStr(s, values))),
            (Typed::Num(n), ListValues::Num(_)) => Some(Typed::Bool(Pred::InNum(n, values))),
            (t, v) => {
                let held = match v {
                    ListValues::Str(_) => "strings",
                    ListValues::Num(_) => "numbers",
                };
                let text = self.text(x.span);
                self.error(
                    x.span,
                    format!(
                        "type mismatch: `{text}` is {}, {list_desc} holds {held}",
                        t.type_name()
                    ),
                    None,
                );
                None
            }
        }
    }

    fn name(&mut self, name: &str, span: Span, scope: Scope) -> Option<Typed> {
        if let Some(f) = Field::from_name(name) {
            return Some(if f.is_numeric() {
                Typed::Num(NumExpr::Field(f))
            } else {
                Typed::Str(StrExpr::Field(f))
            });
        }
        if let Some(entry) = self.features.get_mut(name) {
            if !scope.features {
                self.error(
                    span,
                    format!("a `where` filter cannot read feature `{name}`"),
                    Some("filters see only the event's own fields".into()),
                );
                return None;
            }
            entry.used = true;
            return Some(Typed::Num(NumExpr::Feature(entry.slot)));
        }
        if self.lists.contains_key(name) {
            self.error(
                span,
                format!("`{name}` is a list, not a value"),
                Some(format!("test membership with `<field> in {name}`")),
            );
            return None;
        }
        let candidates: Vec<String> = field_names()
            .map(String::from)
            .chain(self.features.keys().cloned())
            .collect();
        let help = did_you_mean(name, candidates.iter().map(String::as_str));
        let message = if scope.features {
            format!("unknown field or feature `{name}`")
        } else {
            format!("unknown field `{name}`")
        };
        self.error(span, message, help);
        None
    }

    fn call(&mut self, f: &Ident, args: &[Expr], span: Span, scope: Scope) -> Option<Typed> {
        if !FUNCTIONS.contains(&f.name.as_str()) {
            let help = did_you_mean(&f.name, FUNCTIONS)
                .or(Some("functions are lower(), len() and hour()".into()));
            self.error(f.span, format!("unknown function `{}`", f.name), help);
            return None;
        }
        if args.len() != 1 {
            self.error(
                span,
                format!("`{}` takes 1 argument, found {}", f.name, args.len()),
                None,
            );
            return None;
        }
        let arg = &args[0];
        let t = self.expr(arg, scope);
        let what = format!("`{}`", f.name);
        match f.name.as_str() {
            "lower" => self
                .need_str(arg, t, &what)
                .map(|s| Typed::Str(StrExpr::Lower(Box::new(s)))),
            "len" => self
                .need_str(arg, t, &what)
                .map(|s| Typed::Num(NumExpr::Len(Box::new(s)))),
            _ => self
                .need_num(arg, t, &what)
                .map(|n| Typed::Num(NumExpr::Hour(Box::new(n)))),
        }
    }
}

fn str_field_mut(ev: &mut PaymentEvent, f: Field) -> Option<&mut Option<String>> {
    Some(match f {
        Field::TxnId => &mut ev.txn_id,
        Field::UserId => &mut ev.user_id,
        Field::CardId => &mut ev.card_id,
        Field::DeviceId => &mut ev.device_id,
        Field::Ip => &mut ev.ip,
        Field::MerchantId => &mut ev.merchant_id,
        Field::Currency => &mut ev.currency,
        Field::Country => &mut ev.country,
        Field::IpCountry => &mut ev.ip_country,
        Field::CardCountry => &mut ev.card_country,
        Field::Mcc => &mut ev.mcc,
        Field::Channel => &mut ev.channel,
        Field::EventId | Field::Type | Field::EventTime | Field::Amount => return None,
    })
}
