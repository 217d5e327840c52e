//! The compiled program (typed, slot-resolved expression trees), constant folding, and its evaluator.

use std::borrow::Cow;
use std::sync::Arc;

use ahash::AHashSet;
use regex::Regex;

use super::ast::{ArithOp, CmpOp};
use super::bound::{compare, AmountBound, FeatureBound};
use super::number::{self, Decimal};
use crate::event::{currency_exponent, Field, PaymentEvent};

/// What the evaluator may read besides the event: feature values and entity tags.
/// The store implements it; evaluation never does I/O beyond these calls.
pub trait EvalContext {
    /// Value of feature `slot` (`RuleSet::features()[slot]`) for this event; `None` = missing.
    /// Rules read it as the decimal it stands for ([`number::from_feature`]).
    fn feature(&self, slot: usize) -> Option<f64>;
    /// Whether the entity `entity = value` carries `tag`, unexpired at this event's time.
    fn has_tag(&self, entity: Field, value: &str, tag: &str) -> bool;
    /// Whether the entity `event` names as `entity` carries `tag`: `<entity> has tag` in a
    /// rule. A context may answer it from what it read for the event before.
    fn has_event_tag(&self, event: &PaymentEvent, entity: Field, tag: &str) -> bool {
        event
            .str_field(entity)
            .is_some_and(|v| self.has_tag(entity, v, tag))
    }
}

/// A context with no features and no tags (for feature `where` filters).
pub struct NoContext;

impl EvalContext for NoContext {
    fn feature(&self, _slot: usize) -> Option<f64> {
        None
    }
    fn has_tag(&self, _entity: Field, _value: &str, _tag: &str) -> bool {
        false
    }
}

/// One event being evaluated, with values computed once per event.
pub struct Frame<'a> {
    pub ev: &'a PaymentEvent,
    pub ctx: &'a dyn EvalContext,
    /// `ev.amount()` (for the store's aggregates).
    amount: Option<f64>,
    /// The amount as rules read it: exactly `amount_minor` minor units of the currency.
    amount_exact: Option<Decimal>,
    /// The currency's exponent (decimals of its minor unit).
    exponent: u32,
}

impl<'a> Frame<'a> {
    pub fn new(ev: &'a PaymentEvent, ctx: &'a dyn EvalContext) -> Frame<'a> {
        let exponent = currency_exponent(ev.currency.as_deref().unwrap_or(""));
        Frame {
            ev,
            ctx,
            amount: ev.amount(),
            amount_exact: ev.amount_minor.map(|m| number::from_minor(m, exponent)),
            exponent,
        }
    }

    /// `ev.num_field(field)`, with the amount computed once.
    pub fn num_field(&self, field: Field) -> Option<f64> {
        match field {
            Field::Amount => self.amount,
            _ => self.ev.num_field(field),
        }
    }

    /// The decimals of the event currency's minor unit.
    pub(super) fn exponent(&self) -> u32 {
        self.exponent
    }

    /// A numeric field as rules read it: exact.
    fn number(&self, field: Field) -> Option<Decimal> {
        match field {
            Field::Amount => self.amount_exact,
            Field::EventTime => Some(number::from_int(self.ev.event_time_ms)),
            _ => None,
        }
    }
}

/// Values of a list, built once at compile time.
#[derive(Debug)]
pub enum ListValues {
    Str(StrSet),
    Num(Vec<Decimal>),
}

/// Lists up to this size are scanned linearly (faster than hashing for a handful of codes).
const SMALL_LIST: usize = 8;

/// A set of strings: an ahash set, plus a flat copy when small.
pub struct StrSet {
    small: Option<Box<[Box<str>]>>,
    /// When small and every value is short (codes: countries, currencies, MCCs): the values
    /// packed ([`pack`]), so a lookup compares integers instead of calling `memcmp`.
    packed: Option<Box<[u64]>>,
    set: AHashSet<Box<str>>,
}

/// A string of at most 7 bytes as one integer: its bytes in the low 7 bytes (little-endian),
/// its length in the top byte. Two strings pack alike iff they are equal; `None` when longer.
#[inline]
pub fn pack(s: &str) -> Option<u64> {
    let bytes = s.as_bytes();
    if bytes.len() > 7 {
        return None;
    }
    let mut v = (bytes.len() as u64) << 56;
    for (i, &b) in bytes.iter().enumerate() {
        v |= u64::from(b) << (8 * i);
    }
    Some(v)
}

/// Sorted, so two sets with the same values print alike (the reload diff compares printed rules).
impl std::fmt::Debug for StrSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut values: Vec<&str> = self.iter().collect();
        values.sort_unstable();
        f.debug_set().entries(values).finish()
    }
}

impl StrSet {
    pub fn new(set: AHashSet<Box<str>>) -> StrSet {
        let small = (set.len() <= SMALL_LIST).then(|| set.iter().cloned().collect());
        let packed = (set.len() <= SMALL_LIST)
            .then(|| set.iter().map(|v| pack(v)).collect::<Option<Box<[u64]>>>())
            .flatten();
        StrSet { small, packed, set }
    }

    pub fn contains(&self, value: &str) -> bool {
        if let Some(packed) = &self.packed {
            // every value is short: a longer one is not in the set
            return pack(value).is_some_and(|v| packed.contains(&v));
        }
        match &self.small {
            Some(values) => values.iter().any(|v| v.as_ref() == value),
            None => self.set.contains(value),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.set.iter().map(|s| s.as_ref())
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

/// A numeric expression; `None` means missing.
#[derive(Debug, Clone)]
pub enum NumExpr {
    Const(Decimal),
    Field(Field),
    Feature(u32),
    Neg(Box<NumExpr>),
    Arith(ArithOp, Box<NumExpr>, Box<NumExpr>),
    /// Length in characters of a string.
    Len(Box<StrExpr>),
    /// Hour of day (UTC, 0..=23) of an epoch-milliseconds value.
    Hour(Box<NumExpr>),
}

/// A string expression; `None` means missing.
#[derive(Debug, Clone)]
pub enum StrExpr {
    Const(Arc<str>),
    Field(Field),
    Attr(Arc<str>),
    Lower(Box<StrExpr>),
}

/// A condition. Comparisons with a missing operand are false; `not` of false is true.
#[derive(Debug, Clone)]
pub enum Pred {
    Const(bool),
    And(Vec<Pred>),
    Or(Vec<Pred>),
    Not(Box<Pred>),
    Num(CmpOp, NumExpr, NumExpr),
    /// `==` / `!=` on strings.
    Str(CmpOp, StrExpr, StrExpr),
    InStr(StrExpr, Arc<ListValues>),
    InNum(NumExpr, Arc<ListValues>),
    Matches(StrExpr, Arc<Regex>),
    StartsWith(StrExpr, Arc<str>),
    HasTag(Field, Arc<str>),
    // Specialized forms produced by `specialize` (faster, same meaning):
    /// `field == "c"` (`eq`) or `field != "c"`.
    FieldStr {
        field: Field,
        value: Arc<str>,
        eq: bool,
    },
    /// `field in list` for a string field.
    FieldIn(Field, Arc<ListValues>),
    /// `x <op> constant`.
    NumConst(CmpOp, NumExpr, Decimal),
    /// `feature <op> constant`.
    FeatureConst(u32, Box<FeatureBound>),
    /// `amount <op> constant`.
    AmountConst(Box<AmountBound>),
}

/// `len(s)`: the characters of `s` (its bytes when it is ASCII, as ids and codes are).
pub fn char_len(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().count()
    }
}

impl NumExpr {
    pub fn eval(&self, ev: &PaymentEvent, ctx: &dyn EvalContext) -> Option<Decimal> {
        self.eval_in(&Frame::new(ev, ctx))
    }

    fn eval_in(&self, f: &Frame<'_>) -> Option<Decimal> {
        match self {
            NumExpr::Const(v) => Some(*v),
            NumExpr::Field(field) => f.number(*field),
            NumExpr::Feature(slot) => f.ctx.feature(*slot as usize).and_then(number::from_feature),
            NumExpr::Neg(e) => e.eval_in(f).map(|v| -v),
            NumExpr::Arith(op, a, b) => number::arith(*op, a.eval_in(f)?, b.eval_in(f)?),
            NumExpr::Len(s) => s.eval(f.ev).map(|s| Decimal::from(char_len(&s))),
            NumExpr::Hour(e) => e.eval_in(f).and_then(number::hour_of),
        }
    }

    /// Folds constant sub-expressions.
    pub fn fold(self) -> NumExpr {
        match self {
            NumExpr::Neg(e) => match e.fold() {
                NumExpr::Const(v) => NumExpr::Const(-v),
                e => NumExpr::Neg(Box::new(e)),
            },
            NumExpr::Arith(op, a, b) => match (a.fold(), b.fold()) {
                (NumExpr::Const(x), NumExpr::Const(y)) => match number::arith(op, x, y) {
                    Some(v) => NumExpr::Const(v.normalize()),
                    None => {
                        NumExpr::Arith(op, Box::new(NumExpr::Const(x)), Box::new(NumExpr::Const(y)))
                    }
                },
                (a, b) => NumExpr::Arith(op, Box::new(a), Box::new(b)),
            },
            NumExpr::Hour(e) => match e.fold() {
                NumExpr::Const(v) => match number::hour_of(v) {
                    Some(h) => NumExpr::Const(h),
                    None => NumExpr::Hour(Box::new(NumExpr::Const(v))),
                },
                e => NumExpr::Hour(Box::new(e)),
            },
            NumExpr::Len(s) => match s.fold() {
                StrExpr::Const(c) => NumExpr::Const(Decimal::from(char_len(&c))),
                s => NumExpr::Len(Box::new(s)),
            },
            e => e,
        }
    }
}

impl StrExpr {
    pub fn eval<'a>(&'a self, ev: &'a PaymentEvent) -> Option<Cow<'a, str>> {
        match self {
            StrExpr::Const(s) => Some(Cow::Borrowed(s)),
            StrExpr::Field(f) => ev.str_field(*f).map(Cow::Borrowed),
            StrExpr::Attr(k) => ev.attr(k).map(Cow::Borrowed),
            StrExpr::Lower(e) => e.eval(ev).map(|s| {
                if s.chars().any(char::is_uppercase) {
                    Cow::Owned(s.to_lowercase())
                } else {
                    s
                }
            }),
        }
    }

    pub fn fold(self) -> StrExpr {
        match self {
            StrExpr::Lower(e) => match e.fold() {
                StrExpr::Const(c) => StrExpr::Const(Arc::from(c.to_lowercase())),
                e => StrExpr::Lower(Box::new(e)),
            },
            e => e,
        }
    }
}

impl Pred {
    pub fn eval(&self, ev: &PaymentEvent, ctx: &dyn EvalContext) -> bool {
        self.eval_in(&Frame::new(ev, ctx))
    }

    /// Evaluates with per-event values (the amount) computed once in `f`.
    pub fn eval_in(&self, f: &Frame<'_>) -> bool {
        match self {
            Pred::Const(b) => *b,
            Pred::And(ps) => ps.iter().all(|p| p.eval_in(f)),
            Pred::Or(ps) => ps.iter().any(|p| p.eval_in(f)),
            Pred::Not(p) => !p.eval_in(f),
            Pred::Num(op, a, b) => match (a.eval_in(f), b.eval_in(f)) {
                (Some(x), Some(y)) => compare(*op, &x, &y),
                _ => false,
            },
            Pred::Str(op, a, b) => match (a.eval(f.ev), b.eval(f.ev)) {
                (Some(x), Some(y)) => compare(*op, x.as_ref(), y.as_ref()),
                _ => false,
            },
            Pred::InStr(e, list) => match (e.eval(f.ev), list.as_ref()) {
                (Some(v), ListValues::Str(set)) => set.contains(v.as_ref()),
                _ => false,
            },
            Pred::InNum(e, list) => match (e.eval_in(f), list.as_ref()) {
                (Some(v), ListValues::Num(values)) => values.contains(&v),
                _ => false,
            },
            Pred::Matches(e, re) => e.eval(f.ev).is_some_and(|s| re.is_match(&s)),
            Pred::StartsWith(e, prefix) => {
                e.eval(f.ev).is_some_and(|s| s.starts_with(prefix.as_ref()))
            }
            Pred::HasTag(entity, tag) => {
                f.ev.str_field(*entity)
                    .is_some_and(|v| f.ctx.has_tag(*entity, v, tag))
            }
            Pred::FieldStr { field, value, eq } => match f.ev.str_field(*field) {
                Some(v) => (v == value.as_ref()) == *eq,
                None => false,
            },
            Pred::FieldIn(field, list) => match (f.ev.str_field(*field), list.as_ref()) {
                (Some(v), ListValues::Str(set)) => set.contains(v),
                _ => false,
            },
            Pred::NumConst(op, a, c) => a.eval_in(f).is_some_and(|x| compare(*op, &x, c)),
            Pred::FeatureConst(slot, bound) => bound.holds(f.ctx.feature(*slot as usize)),
            Pred::AmountConst(bound) => {
                f.ev.amount_minor
                    .is_some_and(|minor| bound.holds(minor, f.exponent))
            }
        }
    }

    /// Folds constants: comparisons of constants, `and`/`or` with constant operands, `not` of a constant.
    pub fn fold(self) -> Pred {
        match self {
            Pred::And(ps) => {
                let mut kept = Vec::with_capacity(ps.len());
                for p in ps {
                    match p.fold() {
                        Pred::Const(true) => {}
                        Pred::Const(false) => return Pred::Const(false),
                        Pred::And(inner) => kept.extend(inner),
                        p => kept.push(p),
                    }
                }
                match kept.len() {
                    0 => Pred::Const(true),
                    1 => kept.pop().unwrap_or(Pred::Const(true)),
                    _ => Pred::And(kept),
                }
            }
            Pred::Or(ps) => {
                let mut kept = Vec::with_capacity(ps.len());
                for p in ps {
                    match p.fold() {
                        Pred::Const(false) => {}
                        Pred::Const(true) => return Pred::Const(true),
                        Pred::Or(inner) => kept.extend(inner),
                        p => kept.push(p),
                    }
                }
                match kept.len() {
                    0 => Pred::Const(false),
                    1 => kept.pop().unwrap_or(Pred::Const(false)),
                    _ => Pred::Or(kept),
                }
            }
            Pred::Not(p) => match p.fold() {
                Pred::Const(b) => Pred::Const(!b),
                p => Pred::Not(Box::new(p)),
            },
            Pred::Num(op, a, b) => match (a.fold(), b.fold()) {
                (NumExpr::Const(x), NumExpr::Const(y)) => Pred::Const(compare(op, &x, &y)),
                (a, b) => Pred::Num(op, a, b),
            },
            Pred::Str(op, a, b) => match (a.fold(), b.fold()) {
                (StrExpr::Const(x), StrExpr::Const(y)) => {
                    Pred::Const(compare(op, x.as_ref(), y.as_ref()))
                }
                (a, b) => Pred::Str(op, a, b),
            },
            Pred::InStr(e, l) => match e.fold() {
                StrExpr::Const(c) => {
                    Pred::Const(matches!(l.as_ref(), ListValues::Str(s) if s.contains(c.as_ref())))
                }
                e => Pred::InStr(e, l),
            },
            Pred::InNum(e, l) => match e.fold() {
                NumExpr::Const(c) => {
                    Pred::Const(matches!(l.as_ref(), ListValues::Num(v) if v.contains(&c)))
                }
                e => Pred::InNum(e, l),
            },
            Pred::Matches(e, re) => match e.fold() {
                StrExpr::Const(c) => Pred::Const(re.is_match(&c)),
                e => Pred::Matches(e, re),
            },
            Pred::StartsWith(e, p) => match e.fold() {
                StrExpr::Const(c) => Pred::Const(c.starts_with(p.as_ref())),
                e => Pred::StartsWith(e, p),
            },
            p => p,
        }
    }

    /// Rewrites common shapes (field vs constant, field in list) into specialized nodes.
    /// Call after `fold`.
    pub fn specialize(self) -> Pred {
        match self {
            Pred::And(ps) => Pred::And(ps.into_iter().map(Pred::specialize).collect()),
            Pred::Or(ps) => Pred::Or(ps.into_iter().map(Pred::specialize).collect()),
            Pred::Not(p) => Pred::Not(Box::new(p.specialize())),
            Pred::Str(
                op @ (CmpOp::Eq | CmpOp::Ne),
                StrExpr::Field(field),
                StrExpr::Const(value),
            )
            | Pred::Str(
                op @ (CmpOp::Eq | CmpOp::Ne),
                StrExpr::Const(value),
                StrExpr::Field(field),
            ) => Pred::FieldStr {
                field,
                value,
                eq: op == CmpOp::Eq,
            },
            Pred::InStr(StrExpr::Field(field), list) => Pred::FieldIn(field, list),
            Pred::Num(op, a, NumExpr::Const(c)) => Pred::num_const(op, a, c),
            Pred::Num(op, NumExpr::Const(c), b) => Pred::num_const(op.flipped(), b, c),
            p => p,
        }
    }

    /// `a <op> c`, prepared for a feature or the amount (see `bound`).
    fn num_const(op: CmpOp, a: NumExpr, c: Decimal) -> Pred {
        match a {
            NumExpr::Feature(slot) => Pred::FeatureConst(slot, Box::new(FeatureBound::new(op, c))),
            NumExpr::Field(Field::Amount) => Pred::AmountConst(Box::new(AmountBound::new(op, c))),
            a => Pred::NumConst(op, a, c),
        }
    }

    /// The condition without its top-level type guards, for rules visited only through the
    /// type index (where every guard is known to hold).
    pub fn without_type_guards(&self) -> Pred {
        match self {
            Pred::And(ps) => {
                let kept: Vec<Pred> = ps
                    .iter()
                    .filter(|p| type_guard(p).is_none())
                    .cloned()
                    .collect();
                match kept.len() {
                    0 => Pred::Const(true),
                    1 => kept.into_iter().next().unwrap_or(Pred::Const(true)),
                    _ => Pred::And(kept),
                }
            }
            p if type_guard(p).is_some() => Pred::Const(true),
            p => p.clone(),
        }
    }

    /// The event types this condition requires through a top-level `type == "x"` or
    /// `type in [...]` conjunct; `None` when it does not pin the type.
    pub fn required_types(&self) -> Option<Vec<Arc<str>>> {
        match self {
            Pred::And(ps) => {
                let mut result: Option<Vec<Arc<str>>> = None;
                for p in ps {
                    if let Some(types) = type_guard(p) {
                        result = Some(match result {
                            None => types,
                            Some(prev) => prev.into_iter().filter(|t| types.contains(t)).collect(),
                        });
                    }
                }
                result
            }
            p => type_guard(p),
        }
    }
}

/// The event types a single conjunct pins (`type == "x"`, `type in [...]`, or an `or` of those).
fn type_guard(p: &Pred) -> Option<Vec<Arc<str>>> {
    match p {
        Pred::FieldStr {
            field: Field::Type,
            value,
            eq: true,
        } => Some(vec![value.clone()]),
        Pred::FieldIn(Field::Type, list) => match list.as_ref() {
            ListValues::Str(set) => {
                let mut v: Vec<Arc<str>> = set.iter().map(Arc::from).collect();
                v.sort();
                Some(v)
            }
            ListValues::Num(_) => None,
        },
        Pred::Str(CmpOp::Eq, StrExpr::Field(Field::Type), StrExpr::Const(c))
        | Pred::Str(CmpOp::Eq, StrExpr::Const(c), StrExpr::Field(Field::Type)) => {
            Some(vec![c.clone()])
        }
        Pred::InStr(StrExpr::Field(Field::Type), list) => match list.as_ref() {
            ListValues::Str(set) => {
                let mut v: Vec<Arc<str>> = set.iter().map(Arc::from).collect();
                v.sort();
                Some(v)
            }
            ListValues::Num(_) => None,
        },
        Pred::Or(ps) => {
            let mut all = Vec::new();
            for p in ps {
                all.extend(type_guard(p)?);
            }
            all.sort();
            all.dedup();
            Some(all)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn len_counts_characters_ascii_or_not() {
        for s in ["", "abc", "card-42", "é", "naïve", "日本", "a\u{1F600}b"] {
            assert_eq!(char_len(s), s.chars().count(), "{s:?}");
        }
    }

    fn n(v: i64) -> NumExpr {
        NumExpr::Const(Decimal::from(v))
    }

    struct Ctx(Vec<Option<f64>>);
    impl EvalContext for Ctx {
        fn feature(&self, slot: usize) -> Option<f64> {
            self.0.get(slot).copied().flatten()
        }
        fn has_tag(&self, _e: Field, value: &str, tag: &str) -> bool {
            value == "u1" && tag == "trusted"
        }
    }

    fn ev() -> PaymentEvent {
        PaymentEvent {
            kind: "authorization".into(),
            user_id: Some("u1".into()),
            amount_minor: Some(1250),
            currency: Some("EUR".into()),
            event_time_ms: 7_200_000 + 5,
            ..Default::default()
        }
    }

    #[test]
    fn missing_operand_makes_comparison_false_and_not_true() {
        let cmp = Pred::Str(
            CmpOp::Eq,
            StrExpr::Field(Field::CardId),
            StrExpr::Const("c".into()),
        );
        let ne = Pred::Str(
            CmpOp::Ne,
            StrExpr::Field(Field::CardId),
            StrExpr::Const("c".into()),
        );
        let ctx = Ctx(vec![None]);
        assert!(!cmp.eval(&ev(), &ctx));
        assert!(!ne.eval(&ev(), &ctx));
        assert!(Pred::Not(Box::new(cmp)).eval(&ev(), &ctx));
        let feat = Pred::Num(CmpOp::Lt, NumExpr::Feature(0), n(1));
        assert!(!feat.eval(&ev(), &ctx));
    }

    #[test]
    fn arithmetic_hour_len_and_tags() {
        let ctx = Ctx(vec![Some(2.0)]);
        let e = ev();
        let sum = NumExpr::Arith(
            ArithOp::Mul,
            Box::new(NumExpr::Field(Field::Amount)),
            Box::new(NumExpr::Feature(0)),
        );
        assert_eq!(sum.eval(&e, &ctx), Some(Decimal::from(25)));
        assert_eq!(
            NumExpr::Hour(Box::new(NumExpr::Field(Field::EventTime))).eval(&e, &ctx),
            Some(Decimal::from(2))
        );
        let div0 = NumExpr::Arith(ArithOp::Div, Box::new(n(1)), Box::new(n(0)));
        assert_eq!(div0.eval(&e, &ctx), None);
        assert_eq!(
            NumExpr::Len(Box::new(StrExpr::Field(Field::UserId))).eval(&e, &ctx),
            Some(Decimal::from(2))
        );
        assert!(Pred::HasTag(Field::UserId, "trusted".into()).eval(&e, &ctx));
        assert!(!Pred::HasTag(Field::CardId, "trusted".into()).eval(&e, &ctx));
    }

    #[test]
    fn short_strings_pack_alike_only_when_equal() {
        let values = [
            "",
            "a",
            "a\0",
            "\0",
            "KP",
            "PK",
            "EUR",
            "7995",
            "abcdefg",
            "abcdef\u{1}",
        ];
        for a in values {
            for b in values {
                assert_eq!(pack(a) == pack(b), a == b, "{a:?} {b:?}");
            }
            assert!(pack(a).is_some());
        }
        assert_eq!(pack("abcdefgh"), None);
        let set = StrSet::new(["KP", "IR", "SY"].into_iter().map(Box::from).collect());
        assert!(set.contains("IR") && !set.contains("I") && !set.contains("IRAN"));
        let mixed = StrSet::new(["KP", "long value"].into_iter().map(Box::from).collect());
        assert!(mixed.contains("long value") && mixed.contains("KP") && !mixed.contains("IR"));
    }

    #[test]
    fn folding_reduces_constants() {
        let p = Pred::And(vec![
            Pred::Num(
                CmpOp::Gt,
                NumExpr::Arith(ArithOp::Add, Box::new(n(1)), Box::new(n(2))),
                n(2),
            ),
            Pred::Num(CmpOp::Gt, NumExpr::Field(Field::Amount), n(2)),
        ]);
        assert!(matches!(
            p.fold(),
            Pred::Num(CmpOp::Gt, NumExpr::Field(Field::Amount), NumExpr::Const(_))
        ));
        let q = Pred::Not(Box::new(Pred::Str(
            CmpOp::Eq,
            StrExpr::Lower(Box::new(StrExpr::Const("AB".into()))),
            StrExpr::Const("ab".into()),
        )));
        assert!(matches!(q.fold(), Pred::Const(false)));
    }
}
