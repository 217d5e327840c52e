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
use super::number::{self, Decimal};
use crate::event::{currency_exponent, Aggregate, Field, Outcome, PaymentEvent};

mod explain;
mod exprs;
mod never;
mod rules;
mod test_blocks;

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
    /// Build `veto explain`'s trees of each rule's conditions.
    explain: bool,
}

fn outcome_names() -> impl Iterator<Item = &'static str> {
    Outcome::ALL.into_iter().map(Outcome::name)
}

fn field_names() -> impl Iterator<Item = &'static str> {
    Field::ALL.into_iter().map(Field::name)
}

/// Checks parsed files (`files[i]` was parsed from `sources[i]`, list paths relative to
/// `base_dirs[i]`). Pushes every problem to `diags`; the result is only valid without errors.
/// With `explain`, each rule keeps the tree of its conditions as written (`veto explain`).
pub fn check(
    files: &[File],
    sources: &[SourceFile],
    base_dirs: &[PathBuf],
    diags: &mut Vec<Diagnostic>,
    explain: bool,
) -> Checked {
    let mut c = Checker {
        sources,
        base_dirs,
        diags,
        features: AHashMap::new(),
        lists: AHashMap::new(),
        strings: AHashMap::new(),
        regexes: AHashMap::new(),
        explain,
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
        let text = self.full_text(span);
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
}
