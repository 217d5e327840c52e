//! Checking rules: conditions, actions, sequence rules, provably contradictory conditions and
//! the order of `decide` lines.

use super::*;

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
    pub(super) fn contradiction(&mut self, r: &RuleDecl, cond: &Expr) -> bool {
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
