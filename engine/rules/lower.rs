//! Conditions lowered to nested closures for evaluation: each node calls its children
//! directly, with no dispatch on the tree's variant per node.
//!
//! [`Pred`] stays the one definition of what a condition means: the common forms (connectives,
//! field against a constant or a list, two fields compared, feature and amount bounds, `amount
//! in [...]`, `len` and `hour(event_time)` against a constant, patterns, prefixes, string lists,
//! tags) are lowered to closures that give what [`Pred::eval_in`] gives for them; every other
//! form is evaluated by `Pred::eval_in` itself inside its closure. Property tests check that
//! both agree.

use super::ast::CmpOp;
use super::bound::{compare, AmountBound, FeatureBound};
use super::eval::{char_len, pack, Frame, ListValues, NumExpr, Pred, StrExpr};
use crate::event::Field;

type Node = Box<dyn Fn(&Frame<'_>) -> bool + Send + Sync>;

/// A condition ready to evaluate, owned by one plan: a direct call (a shared `Arc` would add
/// finding the closure behind the counts to every evaluation).
pub struct Code(Node);

impl Code {
    /// Lowers `pred` (folded and specialized, as the compiler leaves it).
    pub fn new(pred: &Pred) -> Code {
        Code(lower(pred))
    }

    /// Whether the condition holds for the event in `frame`: the same answer as
    /// `pred.eval_in(frame)` for the `pred` it was lowered from.
    #[inline]
    pub fn holds(&self, frame: &Frame<'_>) -> bool {
        (self.0)(frame)
    }
}

impl std::fmt::Debug for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Code")
    }
}

fn lower(pred: &Pred) -> Node {
    match pred {
        &Pred::Const(b) => Box::new(move |_| b),
        Pred::And(ps) => match <[Node; 2]>::try_from(lower_all(ps)) {
            Ok([a, b]) => Box::new(move |f| a(f) && b(f)),
            Err(nodes) => {
                let nodes = nodes.into_boxed_slice();
                Box::new(move |f| nodes.iter().all(|n| n(f)))
            }
        },
        Pred::Or(ps) => match <[Node; 2]>::try_from(lower_all(ps)) {
            Ok([a, b]) => Box::new(move |f| a(f) || b(f)),
            Err(nodes) => {
                let nodes = nodes.into_boxed_slice();
                Box::new(move |f| nodes.iter().any(|n| n(f)))
            }
        },
        Pred::Not(p) => {
            let p = lower(p);
            Box::new(move |f| !p(f))
        }
        &Pred::FieldStr {
            field,
            ref value,
            eq,
        } => {
            if let Some(packed) = pack(value) {
                return if eq {
                    Box::new(move |f| f.ev.str_field(field).and_then(pack) == Some(packed))
                } else {
                    Box::new(move |f| {
                        f.ev.str_field(field)
                            .is_some_and(|v| pack(v) != Some(packed))
                    })
                };
            }
            let value = value.clone();
            if eq {
                Box::new(move |f| f.ev.str_field(field) == Some(&*value))
            } else {
                Box::new(move |f| f.ev.str_field(field).is_some_and(|v| v != &*value))
            }
        }
        Pred::FieldIn(field, list) => {
            let field = *field;
            let list = list.clone();
            Box::new(move |f| match (f.ev.str_field(field), list.as_ref()) {
                (Some(v), ListValues::Str(set)) => set.contains(v),
                _ => false,
            })
        }
        Pred::FeatureConst(slot, bound) => {
            let (slot, bound) = (*slot as usize, bound.clone());
            Box::new(move |f| bound.holds(f.ctx.feature(slot)))
        }
        Pred::AmountConst(bound) => {
            let bound = bound.clone();
            Box::new(move |f| {
                f.ev.amount_minor
                    .is_some_and(|minor| bound.holds(minor, f.exponent()))
            })
        }
        Pred::HasTag(entity, tag) => {
            let (entity, tag) = (*entity, tag.clone());
            Box::new(move |f| f.ctx.has_event_tag(f.ev, entity, &tag))
        }
        Pred::InNum(NumExpr::Field(Field::Amount), list) => {
            let ListValues::Num(values) = list.as_ref() else {
                return Box::new(|_| false);
            };
            // the exact comparisons of `amount == c`, one per value
            let bounds: Box<[AmountBound]> = values
                .iter()
                .map(|&c| AmountBound::new(CmpOp::Eq, c))
                .collect();
            Box::new(move |f| {
                f.ev.amount_minor
                    .is_some_and(|minor| bounds.iter().any(|b| b.holds(minor, f.exponent())))
            })
        }
        // a whole number computed without decimals, compared as a feature value is
        Pred::NumConst(op, NumExpr::Len(s), c) => {
            let (s, bound) = ((**s).clone(), FeatureBound::new(*op, *c));
            Box::new(move |f| bound.holds(s.eval(f.ev).map(|s| char_len(&s) as f64)))
        }
        Pred::NumConst(op, NumExpr::Hour(e), c)
            if matches!(**e, NumExpr::Field(Field::EventTime)) =>
        {
            let bound = FeatureBound::new(*op, *c);
            Box::new(move |f| bound.holds(Some(hour_of_ms(f.ev.event_time_ms) as f64)))
        }
        Pred::Matches(s, re) => {
            let s = s.clone();
            match ByteClass::of(re.as_str()) {
                Some(class) => Box::new(move |f| s.eval(f.ev).is_some_and(|s| class.matches(&s))),
                None => {
                    let re = re.clone();
                    Box::new(move |f| s.eval(f.ev).is_some_and(|s| re.is_match(&s)))
                }
            }
        }
        // two fields compared (`card_country != ip_country`): both present, no copies
        &Pred::Str(op, StrExpr::Field(a), StrExpr::Field(b)) => {
            Box::new(move |f| match (f.ev.str_field(a), f.ev.str_field(b)) {
                (Some(x), Some(y)) => compare(op, x, y),
                _ => false,
            })
        }
        Pred::InStr(s, list) => {
            let (s, list) = (s.clone(), list.clone());
            Box::new(move |f| match (s.eval(f.ev), list.as_ref()) {
                (Some(v), ListValues::Str(set)) => set.contains(&v),
                _ => false,
            })
        }
        Pred::StartsWith(s, prefix) => {
            let (s, prefix) = (s.clone(), prefix.clone());
            Box::new(move |f| s.eval(f.ev).is_some_and(|v| v.starts_with(&*prefix)))
        }
        other => tree(other),
    }
}

/// A form not lowered: the tree evaluates it.
fn tree(pred: &Pred) -> Node {
    let pred = pred.clone();
    Box::new(move |f| pred.eval_in(f))
}

fn lower_all(ps: &[Pred]) -> Vec<Node> {
    ps.iter().map(lower).collect()
}

/// `hour(event_time)`: the hour of day (UTC) of epoch milliseconds, as [`super::number::hour_of`]
/// computes it in decimals (floor division, then the non-negative remainder).
fn hour_of_ms(ms: i64) -> i64 {
    ms.div_euclid(3_600_000).rem_euclid(24)
}

/// A pattern `^[class]+$` (or `*`) whose class holds ASCII characters only: a string matches
/// when each of its bytes is in the class (a non-ASCII character never is), and, for `+`, it
/// is not empty. Checked with a table instead of running the regex.
struct ByteClass {
    table: [bool; 256],
    nonempty: bool,
}

impl ByteClass {
    /// The class of `pattern` (as `regex` reads it with its default flags), when the pattern has
    /// that shape.
    fn of(pattern: &str) -> Option<ByteClass> {
        use regex_syntax::hir::{Class, HirKind, Look};
        let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
        let HirKind::Concat(parts) = hir.kind() else {
            return None;
        };
        let [start, repeated, end] = parts.as_slice() else {
            return None;
        };
        let anchored = matches!(start.kind(), HirKind::Look(Look::Start))
            && matches!(end.kind(), HirKind::Look(Look::End));
        let HirKind::Repetition(rep) = repeated.kind() else {
            return None;
        };
        if !anchored || rep.min > 1 || rep.max.is_some() {
            return None;
        }
        let ranges: Vec<(u32, u32)> = match rep.sub.kind() {
            HirKind::Class(Class::Unicode(c)) => c
                .iter()
                .map(|r| (r.start() as u32, r.end() as u32))
                .collect(),
            HirKind::Class(Class::Bytes(c)) => c
                .iter()
                .map(|r| (u32::from(r.start()), u32::from(r.end())))
                .collect(),
            _ => return None,
        };
        let mut table = [false; 256];
        for (start, end) in ranges {
            if end > 0x7f {
                return None;
            }
            for b in start..=end {
                table[b as usize] = true;
            }
        }
        Some(ByteClass {
            table,
            nonempty: rep.min == 1,
        })
    }

    fn matches(&self, s: &str) -> bool {
        (!self.nonempty || !s.is_empty()) && s.bytes().all(|b| self.table[usize::from(b)])
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::event::{Field, PaymentEvent};
    use crate::rules::eval::EvalContext;

    struct Ctx;
    impl EvalContext for Ctx {
        fn feature(&self, slot: usize) -> Option<f64> {
            [Some(3.0), None, Some(2.5), Some(0.0)]
                .get(slot)
                .copied()
                .flatten()
        }
        fn has_tag(&self, entity: Field, value: &str, tag: &str) -> bool {
            entity == Field::UserId && value == "u1" && tag == "vip"
        }
    }

    /// Rule sources whose conditions cover every lowered form and the fallback.
    const ATOMS: &[&str] = &[
        r#"type == "authorization""#,
        r#"type != "refund""#,
        r#"card_id == "c1""#,
        r#"card_id != "c1""#,
        r#"ip_country in ["KP", "IR"]"#,
        r#"currency in supported"#,
        "f0 > 2",
        "f1 > 0",
        "f2 >= 2.5",
        "f3 == 0",
        "amount > 10",
        "amount <= 12.5",
        "amount == 0.1",
        r#"user_id has tag "vip""#,
        r#"card_id has tag "vip""#,
        "len(device_id) < 6",
        "f0 * 2 > amount",
        r#"attrs["email"] matches "^a.*""#,
        r#"card_id starts_with "test_""#,
        "amount in [5, 12.5, 0.1]",
        "len(card_id) >= 2.5",
        "hour(event_time) < 1",
        r#"card_id matches "^[a-z0-9]+$""#,
        r#"not user_id matches "^[0-9]*$""#,
        "card_id != user_id",
        "ip_country == card_country",
        r#"lower(attrs["email"]) in ["alice@x", "bob@y"]"#,
        r#"attrs["email"] starts_with "ali""#,
        r#"attrs["email"] matches "(?i)(ALICE|bob)""#,
    ];

    fn condition() -> impl Strategy<Value = String> {
        let atom = proptest::sample::select(ATOMS).prop_map(String::from);
        atom.prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 2..4)
                    .prop_map(|ps| format!("({})", ps.join(" and "))),
                proptest::collection::vec(inner.clone(), 2..4)
                    .prop_map(|ps| format!("({})", ps.join(" or "))),
                inner.prop_map(|p| format!("not ({p})")),
            ]
        })
    }

    fn event(pick: u8) -> PaymentEvent {
        let kinds = ["authorization", "refund", "login"];
        let mut ev = PaymentEvent {
            event_id: "e".into(),
            kind: kinds[usize::from(pick % 3)].into(),
            ..PaymentEvent::default()
        };
        if pick & 4 != 0 {
            ev.card_id = Some(if pick & 8 != 0 { "c1" } else { "test_9" }.into());
            ev.user_id = Some("u1".into());
        }
        if pick & 16 != 0 {
            ev.amount_minor = Some(i64::from(pick) * 37 % 2_000);
            ev.currency = Some(if pick & 32 != 0 { "EUR" } else { "JPY" }.into());
            ev.ip_country = Some(if pick & 64 != 0 { "KP" } else { "DE" }.into());
            ev.card_country = Some(if pick & 2 != 0 { "KP" } else { "DE" }.into());
            ev.device_id = Some("dev".into());
        }
        if pick & 128 != 0 {
            let email = if pick & 1 != 0 { "Alice@x" } else { "alice@x" };
            ev.attrs.insert("email".into(), email.into());
        }
        ev
    }

    #[test]
    fn hours_agree_with_the_decimal_hour() {
        for ms in [
            0,
            1,
            3_599_999,
            3_600_000,
            86_399_999,
            -1,
            -3_600_000,
            -3_600_001,
            i64::MIN,
            i64::MAX,
        ] {
            let decimal = crate::rules::number::hour_of(crate::rules::number::from_int(ms));
            assert_eq!(decimal, Some(hour_of_ms(ms).into()), "{ms}");
        }
    }

    #[test]
    fn byte_classes_are_read_only_from_anchored_ascii_class_repetitions() {
        for pattern in [
            r"^[0-9a-fA-F:.]+$",
            "^[a-z]*$",
            r"(?-u)^\d+$",
            "(?i)^[a-f_]+$",
        ] {
            assert!(ByteClass::of(pattern).is_some(), "{pattern}");
        }
        // unanchored, bounded, non-ASCII, alternation, Unicode `\d`, `\w`, a case-insensitive
        // class with non-ASCII case variants (`k`: KELVIN SIGN), a negated class
        for pattern in [
            r"^\d+$",
            "(?i)^[a-z]+$",
            "[a-z]+$",
            "^[a-z]+",
            "^[a-z]{2,3}$",
            "^[a-zé]+$",
            "^(a|b)+$",
            r"(?u)^\w+$",
            "^[^a]+$",
        ] {
            assert!(ByteClass::of(pattern).is_none(), "{pattern}");
        }
    }

    proptest! {
        #[test]
        fn byte_classes_match_as_the_regex_does(
            s in "[0-9a-fA-F:._ éΩ\\-]{0,12}",
            pattern in proptest::sample::select(&[r"^[0-9a-fA-F:.]+$", "^[a-z]*$", "(?i)^[a-f_]+$", r"^[\-.]+$"][..]),
        ) {
            let class = ByteClass::of(pattern).expect("a byte class");
            let re = regex::Regex::new(pattern).expect("regex");
            prop_assert_eq!(class.matches(&s), re.is_match(&s), "{} on {:?}", pattern, s);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: crate::fuzz_cases(256),
            max_global_rejects: 64,
            ..ProptestConfig::default()
        })]

        #[test]
        fn lowered_conditions_agree_with_the_tree(cond in condition(), picks in proptest::collection::vec(any::<u8>(), 8)) {
            let src = format!(
                "list supported = [\"EUR\", \"USD\"]\n\
                 feature f0 = count() by card_id over 1h\n\
                 feature f1 = count() by user_id over 1h\n\
                 feature f2 = avg(amount) by card_id over 1h\n\
                 feature f3 = count() by ip over 1h\n\
                 rule r when {cond} then review\n"
            );
            let report = crate::rules::compile_source("t.veto", &src, std::path::Path::new("."));
            // a condition that is always false is an error (at most a few cases: see the config)
            prop_assume!(!report.has_errors());
            let rules = report.ruleset.expect("rule set");
            let rule = &rules.rules()[0];
            let (cond, body) = (Code::new(&rule.cond), Code::new(&rule.body));
            for pick in picks {
                let ev = event(pick);
                let frame = Frame::new(&ev, &Ctx);
                prop_assert_eq!(cond.holds(&frame), rule.cond.eval_in(&frame), "{:?} on {:?}", rule.cond, ev);
                prop_assert_eq!(body.holds(&frame), rule.body.eval_in(&frame), "{:?} on {:?}", rule.body, ev);
            }
        }
    }
}
