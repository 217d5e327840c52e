//! Typing expressions: operators, membership, names, function calls, and the messages for a
//! wrong or mismatched type.

use super::*;

impl Checker<'_> {
    pub(super) fn mismatch(&mut self, a: &Expr, ta: &Typed, b: &Expr, tb: &Typed) {
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

    pub(super) fn need_num(&mut self, e: &Expr, t: Typed, what: &str) -> Option<NumExpr> {
        match t {
            Typed::Num(n) => Some(n),
            t => self.wrong_type(e, &t, what, "a number"),
        }
    }

    pub(super) fn need_str(&mut self, e: &Expr, t: Typed, what: &str) -> Option<StrExpr> {
        match t {
            Typed::Str(s) => Some(s),
            t => self.wrong_type(e, &t, what, "a string"),
        }
    }

    pub(super) fn need_bool(&mut self, e: &Expr, t: Typed, what: &str) -> Option<Pred> {
        match t {
            Typed::Bool(p) => Some(p),
            t => self.wrong_type(e, &t, what, "a condition"),
        }
    }

    /// Reports that `e` (of type `t`) is not the `wanted` kind `what` needs; silent for
    /// `Typed::Error`, which was reported where it arose.
    pub(super) fn wrong_type<T>(
        &mut self,
        e: &Expr,
        t: &Typed,
        what: &str,
        wanted: &str,
    ) -> Option<T> {
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

    pub(super) fn expr(&mut self, e: &Expr, scope: Scope) -> Typed {
        self.typed_expr(e, scope).unwrap_or(Typed::Error)
    }

    /// `None` after reporting an error.
    pub(super) fn typed_expr(&mut self, e: &Expr, scope: Scope) -> Option<Typed> {
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

    pub(super) fn membership(
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

    pub(super) fn name(&mut self, name: &str, span: Span, scope: Scope) -> Option<Typed> {
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

    pub(super) fn call(
        &mut self,
        f: &Ident,
        args: &[Expr],
        span: Span,
        scope: Scope,
    ) -> Option<Typed> {
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
