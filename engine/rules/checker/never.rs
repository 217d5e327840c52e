//! Rules that can never match: conjuncts that contradict each other (an error), and conditions
//! that what the decoder guarantees of every event rules out (a warning).

use std::cmp::Ordering;

use super::*;
use crate::event::MAX_TIME_MS;

/// Where a bound on a value comes from: a conjunct of the condition, or the event contract.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    Atom(usize),
    /// Why every accepted event satisfies the bound.
    Contract(&'static str),
}

#[derive(Clone, Copy)]
struct Bound {
    value: Decimal,
    inclusive: bool,
    origin: Origin,
}

/// What the conjuncts seen so far (and the contract) say about one expression.
#[derive(Default)]
struct Facts {
    lo: Option<Bound>,
    hi: Option<Bound>,
    ne_num: Vec<(Decimal, Origin)>,
    eq_str: Option<(String, Origin)>,
    ne_str: Vec<(String, Origin)>,
}

const NEGATIVE_AMOUNT: &str = "the decoder rejects negative amounts";
const EVENT_TIME_RANGE: &str =
    "the decoder accepts only event times after 1970 and up to the end of year 9999";
const HOUR_RANGE: &str = "`hour` gives 0 to 23";
const LEN_RANGE: &str = "`len` is never negative";
const REQUIRED: &str = "the decoder rejects events without `type` or `event_id`";
const CURRENCY_FORM: &str = "the decoder accepts only currencies of three upper-case letters";

impl Facts {
    /// The contract's bounds on the expression printed as `key`.
    fn known(key: &str) -> Facts {
        let bound = |value: i64, reason| {
            Some(Bound {
                value: Decimal::from(value),
                inclusive: true,
                origin: Origin::Contract(reason),
            })
        };
        let mut f = Facts::default();
        match key {
            "amount" => f.lo = bound(0, NEGATIVE_AMOUNT),
            "event_time" => {
                f.lo = bound(1, EVENT_TIME_RANGE);
                f.hi = bound(MAX_TIME_MS, EVENT_TIME_RANGE);
            }
            "type" | "event_id" => f.ne_str.push((String::new(), Origin::Contract(REQUIRED))),
            k if k.starts_with("hour(") => {
                f.lo = bound(0, HOUR_RANGE);
                f.hi = bound(23, HOUR_RANGE);
            }
            k if k.starts_with("len(") => f.lo = bound(0, LEN_RANGE),
            _ => {}
        }
        f
    }

    /// Adds `x <op> c`; returns the origins that together rule it out, if any.
    fn add_num(&mut self, op: CmpOp, c: Decimal, at: Origin) -> Option<Vec<Origin>> {
        let bound = |inclusive| Bound {
            value: c,
            inclusive,
            origin: at,
        };
        match op {
            CmpOp::Gt => tighten(&mut self.lo, bound(false), Ordering::Greater),
            CmpOp::Ge => tighten(&mut self.lo, bound(true), Ordering::Greater),
            CmpOp::Lt => tighten(&mut self.hi, bound(false), Ordering::Less),
            CmpOp::Le => tighten(&mut self.hi, bound(true), Ordering::Less),
            CmpOp::Eq => {
                tighten(&mut self.lo, bound(true), Ordering::Greater);
                tighten(&mut self.hi, bound(true), Ordering::Less);
            }
            CmpOp::Ne => self.ne_num.push((c, at)),
        }
        let (lo, hi) = (self.lo?, self.hi?);
        if lo.value > hi.value || (lo.value == hi.value && !(lo.inclusive && hi.inclusive)) {
            return Some(vec![lo.origin, hi.origin]);
        }
        if lo.value == hi.value {
            let (_, ne) = self.ne_num.iter().find(|(v, _)| *v == lo.value)?;
            return Some(vec![lo.origin, hi.origin, *ne]);
        }
        None
    }

    /// Adds `x == "s"` (`eq`) or `x != "s"`; returns the origins that rule it out, if any.
    fn add_str(&mut self, key: &str, eq: bool, s: &str, at: Origin) -> Option<Vec<Origin>> {
        if eq {
            if key == "currency" && crate::event::check_currency(s).is_err() {
                return Some(vec![at, Origin::Contract(CURRENCY_FORM)]);
            }
            if let Some((prev, origin)) = &self.eq_str {
                return (prev != s).then(|| vec![*origin, at]);
            }
            self.eq_str = Some((s.to_string(), at));
            let (_, ne) = self.ne_str.iter().find(|(v, _)| v == s)?;
            return Some(vec![*ne, at]);
        }
        self.ne_str.push((s.to_string(), at));
        match &self.eq_str {
            Some((prev, origin)) if prev == s => Some(vec![*origin, at]),
            _ => None,
        }
    }
}

/// Keeps the tighter of the current bound and `b`: `further` is the direction that tightens.
fn tighten(slot: &mut Option<Bound>, b: Bound, further: Ordering) {
    let tighter = slot.is_none_or(|cur| {
        b.value.cmp(&cur.value) == further
            || (b.value == cur.value && !b.inclusive && cur.inclusive)
            // a conjunct saying what the contract says is the reason to name
            || (b.value == cur.value
                && b.inclusive == cur.inclusive
                && matches!(cur.origin, Origin::Contract(_)))
    });
    if tighter {
        *slot = Some(b);
    }
}

fn conjuncts<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    if let ExprKind::And(a, b) = &e.kind {
        conjuncts(a, out);
        conjuncts(b, out);
    } else {
        out.push(e);
    }
}

/// A numeric constant: a literal, or a negated one.
fn constant(e: &Expr) -> Option<Decimal> {
    match &e.kind {
        ExprKind::Lit(Literal::Num(n)) => Some(*n),
        ExprKind::Neg(inner) => constant(inner).map(|n| -n),
        _ => None,
    }
}

fn is_literal(e: &Expr) -> bool {
    matches!(e.kind, ExprKind::Lit(_)) || constant(e).is_some()
}

impl Checker<'_> {
    /// Reports a rule whose top-level `and` chain of comparisons against constants cannot hold:
    /// an error when its own conjuncts contradict each other, a warning when the event contract
    /// (what the decoder guarantees of every event it accepts) rules it out. Comparisons on a
    /// missing value are false, so a ruled-out comparison is never true. Returns whether one
    /// was reported.
    pub(super) fn contradiction(&mut self, rule: &str, cond: &Expr) -> bool {
        let mut atoms = Vec::new();
        conjuncts(cond, &mut atoms);
        let mut facts: AHashMap<String, Facts> = AHashMap::new();
        for (i, atom) in atoms.iter().enumerate() {
            let ExprKind::Cmp(op, a, b) = &atom.kind else {
                continue;
            };
            let (subject, op, value) = match (is_literal(a), is_literal(b)) {
                (false, true) => (a, *op, b),
                (true, false) => (b, op.flipped(), a),
                _ => continue,
            };
            let key = subject.to_string();
            let f = facts
                .entry(key.clone())
                .or_insert_with(|| Facts::known(&key));
            let conflict = match (&value.kind, constant(value)) {
                (_, Some(c)) => f.add_num(op, c, Origin::Atom(i)),
                (ExprKind::Lit(Literal::Str(s)), _) if matches!(op, CmpOp::Eq | CmpOp::Ne) => {
                    f.add_str(&key, op == CmpOp::Eq, s, Origin::Atom(i))
                }
                _ => None,
            };
            if let Some(origins) = conflict {
                self.report_never(rule, &atoms, &origins);
                return true;
            }
        }
        false
    }

    fn report_never(&mut self, rule: &str, atoms: &[&Expr], origins: &[Origin]) {
        let mut involved: Vec<usize> = origins
            .iter()
            .filter_map(|o| match o {
                Origin::Atom(i) => Some(*i),
                Origin::Contract(_) => None,
            })
            .collect();
        involved.sort_unstable();
        involved.dedup();
        let reason = origins.iter().find_map(|o| match o {
            Origin::Contract(why) => Some(*why),
            Origin::Atom(_) => None,
        });
        let texts: Vec<String> = involved.iter().map(|&i| self.text(atoms[i].span)).collect();
        let Some(&last) = involved.last() else {
            return;
        };
        let span = atoms[last].span;
        match (reason, texts.as_slice()) {
            (None, [first, .., second]) => self.error(
                span,
                format!("rule `{rule}` can never match: `{first}` contradicts `{second}`"),
                None,
            ),
            (Some(why), [only]) => self.diags.push(Diagnostic::warning(
                span,
                format!("rule `{rule}` can never match: `{only}` is never true"),
                Some(why.to_string()),
            )),
            (Some(why), [first, .., second]) => self.diags.push(Diagnostic::warning(
                span,
                format!(
                    "rule `{rule}` can never match: `{first}` and `{second}` are never both true"
                ),
                Some(why.to_string()),
            )),
            _ => {}
        }
    }
}
