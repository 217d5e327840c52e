//! `veto explain`'s view of a rule: its condition as the tree of sub-expressions written in the
//! file, and that tree evaluated for one event (which sub-expression decided, which operand had
//! no value). Leaves are compiled and evaluated by the one evaluator (`eval`).

use std::sync::Arc;

use serde::Serialize;

use super::eval::{EvalContext, NumExpr, Pred, StrExpr};
use super::number;
use crate::event::PaymentEvent;

/// Where a rule is written: `file:line:col` of its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub col: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// A plain rule's condition as written ([`crate::rules::CompiledRule`]'s explain tree).
#[derive(Debug)]
pub struct RuleTree {
    pub at: Location,
    pub when: Node,
}

/// A sequence rule's conditions as written.
#[derive(Debug)]
pub struct SequenceTree {
    pub at: Location,
    pub after: Node,
    pub expect: Node,
}

/// A sub-expression of a condition with its source text.
#[derive(Debug)]
pub struct Node {
    /// The source text, whitespace collapsed.
    pub text: Arc<str>,
    pub kind: NodeKind,
}

#[derive(Debug)]
pub enum NodeKind {
    /// `a and b and …`: false at the first false operand.
    All(Vec<Node>),
    /// `a or b or …`: true at the first true operand.
    Any(Vec<Node>),
    Not(Box<Node>),
    /// A comparison, membership, match or tag test, compiled as the rule's condition is.
    Leaf {
        pred: Pred,
        /// The non-constant values it reads, shown beside its result.
        operands: Vec<Operand>,
    },
}

/// A value a leaf reads (a field, attribute, feature or arithmetic on them).
#[derive(Debug)]
pub struct Operand {
    pub text: Arc<str>,
    pub expr: OperandExpr,
}

#[derive(Debug)]
pub enum OperandExpr {
    Num(NumExpr),
    Str(StrExpr),
}

/// A sub-expression's result for one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub text: String,
    /// `and`, `or` or `not` for those (their parts are `children`); `None` for a leaf.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<&'static str>,
    /// `None`: not evaluated, because an earlier operand of its `and`/`or` settled the result
    /// (the engine stops there too).
    pub result: Option<bool>,
    /// This sub-expression settled its parent's result (or, at the top, the rule's).
    pub decisive: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub operands: Vec<OperandValue>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Verdict>,
}

/// An operand's value as the rule read it; `None` = missing (a comparison with a missing
/// operand is false).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperandValue {
    pub text: String,
    pub value: Option<String>,
}

impl Verdict {
    /// Operands without a value, anywhere in this sub-expression's evaluated part.
    pub fn missing(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_missing(&mut out);
        out
    }

    fn collect_missing<'a>(&'a self, out: &mut Vec<&'a str>) {
        for o in &self.operands {
            if o.value.is_none() && !out.contains(&o.text.as_str()) {
                out.push(&o.text);
            }
        }
        for c in &self.children {
            c.collect_missing(out);
        }
    }
}

impl Node {
    /// Evaluates the tree for `ev` the way the engine evaluates the compiled condition:
    /// left to right, stopping where the result is settled.
    pub fn evaluate(&self, ev: &PaymentEvent, ctx: &dyn EvalContext) -> Verdict {
        let mut v = self.verdict(ev, ctx);
        v.decisive = true;
        v
    }

    fn verdict(&self, ev: &PaymentEvent, ctx: &dyn EvalContext) -> Verdict {
        let op = match &self.kind {
            NodeKind::All(_) => Some("and"),
            NodeKind::Any(_) => Some("or"),
            NodeKind::Not(_) => Some("not"),
            NodeKind::Leaf { .. } => None,
        };
        let (result, operands, children) = match &self.kind {
            NodeKind::All(parts) => {
                let children = short_circuit(parts, ev, ctx, false);
                let result = !children.iter().any(|c| c.result == Some(false));
                (result, Vec::new(), children)
            }
            NodeKind::Any(parts) => {
                let children = short_circuit(parts, ev, ctx, true);
                let result = children.iter().any(|c| c.result == Some(true));
                (result, Vec::new(), children)
            }
            NodeKind::Not(inner) => {
                let mut child = inner.verdict(ev, ctx);
                child.decisive = true;
                (child.result != Some(true), Vec::new(), vec![child])
            }
            NodeKind::Leaf { pred, operands } => {
                let values = operands
                    .iter()
                    .map(|o| OperandValue {
                        text: o.text.to_string(),
                        value: o.expr.value(ev, ctx),
                    })
                    .collect();
                (pred.eval(ev, ctx), values, Vec::new())
            }
        };
        Verdict {
            text: self.text.to_string(),
            op,
            result: Some(result),
            decisive: false,
            operands,
            children,
        }
    }
}

/// Evaluates `parts` in order up to the first whose result is `stop_at`, which is marked
/// decisive; the rest are listed unevaluated. Without such a part every part decided together.
fn short_circuit(
    parts: &[Node],
    ev: &PaymentEvent,
    ctx: &dyn EvalContext,
    stop_at: bool,
) -> Vec<Verdict> {
    let mut out = Vec::with_capacity(parts.len());
    let mut settled = false;
    for part in parts {
        if settled {
            out.push(Verdict {
                text: part.text.to_string(),
                op: None,
                result: None,
                decisive: false,
                operands: Vec::new(),
                children: Vec::new(),
            });
            continue;
        }
        let mut v = part.verdict(ev, ctx);
        if v.result == Some(stop_at) {
            v.decisive = true;
            settled = true;
        }
        out.push(v);
    }
    if !settled {
        for v in &mut out {
            v.decisive = true;
        }
    }
    out
}

impl OperandExpr {
    fn value(&self, ev: &PaymentEvent, ctx: &dyn EvalContext) -> Option<String> {
        match self {
            OperandExpr::Num(e) => e.eval(ev, ctx).map(number::format),
            OperandExpr::Str(e) => e.eval(ev).map(|s| format!("{:?}", s.as_ref())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::event::{decode_event, Field, InputFormat, DEFAULT_MAX_EVENT_BYTES};

    /// Features and tags that vary with the event, so conditions take both values.
    struct Varied(u64);

    impl EvalContext for Varied {
        fn feature(&self, slot: usize) -> Option<f64> {
            let h = self.0.wrapping_mul(31).wrapping_add(slot as u64 * 7);
            (h % 5 != 0).then_some((h % 40) as f64)
        }
        fn has_tag(&self, _entity: Field, value: &str, tag: &str) -> bool {
            (value.len() + tag.len() + self.0 as usize) % 3 == 0
        }
    }

    /// Every rule's explain tree decides as its compiled condition does, on the shipped rules
    /// and every example event.
    #[test]
    fn trees_decide_as_the_compiled_conditions() {
        let report = crate::rules::load_explained(&[PathBuf::from("rules")]);
        let rules = report.ruleset.expect("shipped rules compile");
        let text = std::fs::read_to_string("rules/examples/events.jsonl").expect("events");
        let (mut checked, mut true_seen) = (0, 0);
        for (i, line) in text.lines().enumerate() {
            let ev = decode_event(line.as_bytes(), InputFormat::Json, DEFAULT_MAX_EVENT_BYTES)
                .expect("example event");
            let ctx = Varied(i as u64);
            for rule in rules.rules() {
                let tree = rule.explain.as_ref().expect("explain tree kept");
                let verdict = tree.when.evaluate(&ev, &ctx);
                assert_eq!(
                    verdict.result,
                    Some(rule.cond.eval(&ev, &ctx)),
                    "rule {} on event {}",
                    rule.name,
                    ev.event_id
                );
                checked += 1;
                true_seen += usize::from(verdict.result == Some(true));
            }
            for s in rules.sequences() {
                let tree = s.explain.as_ref().expect("explain tree kept");
                assert_eq!(
                    tree.after.evaluate(&ev, &ctx).result,
                    Some(s.after.eval(&ev, &ctx))
                );
                assert_eq!(
                    tree.expect.evaluate(&ev, &ctx).result,
                    Some(s.expect.eval(&ev, &ctx))
                );
            }
        }
        assert!(checked > 10_000 && true_seen > 100, "{checked} {true_seen}");
    }

    #[test]
    fn short_circuit_marks_the_deciding_part_and_skips_the_rest() {
        let src = r#"
feature n = count() by card_id over 1h
rule r when type == "authorization" and (n > 3 or card_id has tag "t") and not amount < 1
  then review
"#;
        let report = crate::rules::compile_sources_with(
            vec![("r.veto".into(), src.into(), PathBuf::new())],
            true,
        );
        let rules = report.ruleset.expect("compiles");
        let tree = &rules.rules()[0].explain.as_ref().expect("tree").when;
        let ev = decode_event(
            br#"{"event_id":"e","type":"capture","event_time_ms":1,"card_id":"c"}"#,
            InputFormat::Json,
            DEFAULT_MAX_EVENT_BYTES,
        )
        .expect("event");
        let v = tree.evaluate(&ev, &crate::rules::eval::NoContext);
        assert_eq!(v.result, Some(false));
        assert_eq!(v.op, Some("and"));
        assert_eq!(v.children.len(), 3);
        assert_eq!(v.children[0].text, r#"type == "authorization""#);
        assert!(v.children[0].decisive);
        assert_eq!(v.children[1].result, None);
        assert_eq!(v.children[2].result, None);
        assert_eq!(
            v.children[0].operands,
            vec![OperandValue {
                text: "type".into(),
                value: Some("\"capture\"".into())
            }]
        );

        let auth = decode_event(
            br#"{"event_id":"e","type":"authorization","event_time_ms":1,"card_id":"c"}"#,
            InputFormat::Json,
            DEFAULT_MAX_EVENT_BYTES,
        )
        .expect("event");
        let v = tree.evaluate(&auth, &crate::rules::eval::NoContext);
        // `n` is missing (no context), the tag absent: the `or` is false, every part decisive.
        let or = &v.children[1];
        assert_eq!(or.op, Some("or"));
        assert_eq!(or.result, Some(false));
        assert!(or.decisive && or.children.iter().all(|c| c.decisive));
        assert_eq!(v.missing(), vec!["n"]);
        assert_eq!(v.children[2].result, None);
    }
}
