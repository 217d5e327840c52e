//! Conditions lowered to nested closures for evaluation: each node calls its children
//! directly, with no dispatch on the tree's variant per node.
//!
//! [`Pred`] stays the one definition of what a condition means: the common forms (connectives,
//! field against constant, feature and amount bounds, tags) are lowered to closures that do
//! what [`Pred::eval_in`] does for them; every other form is evaluated by `Pred::eval_in` itself
//! inside its closure. A property test checks that both agree on generated conditions.

use std::sync::Arc;

use super::eval::{pack, Frame, ListValues, Pred};

type Node = Box<dyn Fn(&Frame<'_>) -> bool + Send + Sync>;

/// A condition ready to evaluate; cheap to clone (shared).
#[derive(Clone)]
pub struct Code(Arc<dyn Fn(&Frame<'_>) -> bool + Send + Sync>);

impl Code {
    /// Lowers `pred` (folded and specialized, as the compiler leaves it).
    pub fn new(pred: &Pred) -> Code {
        Code(Arc::from(lower(pred)))
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
            Box::new(move |f| {
                f.ev.str_field(entity)
                    .is_some_and(|v| f.ctx.has_tag(entity, v, &tag))
            })
        }
        other => {
            let pred = other.clone();
            Box::new(move |f| pred.eval_in(f))
        }
    }
}

fn lower_all(ps: &[Pred]) -> Vec<Node> {
    ps.iter().map(lower).collect()
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
            ev.device_id = Some("dev".into());
        }
        if pick & 128 != 0 {
            ev.attrs.insert("email".into(), "alice@x".into());
        }
        ev
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
