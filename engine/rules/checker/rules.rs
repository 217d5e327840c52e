//! Checking rules: conditions, actions, sequence rules, conditions that can never hold and
//! the order of `decide` lines.

use super::*;
use crate::rules::explain::{RuleTree, SequenceTree};

impl Checker<'_> {
    /// Checks an expression that must be a condition.
    pub(super) fn condition(&mut self, e: &Expr, scope: Scope, what: &str) -> Option<Pred> {
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

    pub(super) fn actions(
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

    pub(super) fn rule(&mut self, r: &RuleDecl, cond: &Expr) -> Option<CompiledRule> {
        let scope = Scope {
            features: true,
            tags: true,
        };
        let pred = self.condition(cond, scope, "a rule condition");
        let actions = self.actions(r, true);
        let pred = pred?;
        self.never_matches(&r.name.name, cond, &pred);
        let (outcome, score, tags) = actions?;
        let explain = self.explain_tree(cond, scope).map(|when| {
            Arc::new(RuleTree {
                at: self.location(r.name.span),
                when,
            })
        });
        Some(CompiledRule {
            name: Arc::from(r.name.name.as_str()),
            outcome,
            score,
            tags,
            body: Pred::Const(false),
            cond: pred,
            explain,
        })
    }

    /// Reports a condition that can never hold (see [`Checker::contradiction`]) or that folds
    /// to false.
    fn never_matches(&mut self, rule: &str, cond: &Expr, pred: &Pred) {
        if !self.contradiction(rule, cond) && matches!(pred.clone().fold(), Pred::Const(false)) {
            self.error(
                cond.span,
                format!("rule `{rule}` can never match: its condition is always false"),
                None,
            );
        }
    }

    pub(super) fn sequence(
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
        let after_expr = after;
        let after = self.condition(after, scope, "an `after` condition");
        if let Some(p) = &after {
            self.never_matches(&r.name.name, after_expr, p);
        }
        let expect_expr = expect;
        let expect = self.condition(expect, scope, "an `expect` condition");
        let correlate = self.entity_field(same, "`with same`");
        let in_range = self.window(within, "`within`", MAX_WINDOW_MS);
        let actions = self.actions(r, false);
        let (outcome, score, _) = actions?;
        if !in_range {
            return None;
        }
        let explain = match (
            self.explain_tree(after_expr, scope),
            self.explain_tree(expect_expr, scope),
        ) {
            (Some(after), Some(expect)) => Some(Arc::new(SequenceTree {
                at: self.location(r.name.span),
                after,
                expect,
            })),
            _ => None,
        };
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
            explain,
        })
    }

    pub(super) fn decides(&mut self, items: &[&Item]) -> Vec<(Outcome, i32)> {
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
}
