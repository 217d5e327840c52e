//! Building `veto explain`'s trees: each condition's `and`/`or`/`not` structure as written, its
//! leaves compiled by the same checker code as the whole condition.

use super::*;
use crate::rules::diagnostic::line_col;
use crate::rules::explain::{Location, Node, NodeKind, Operand, OperandExpr};

impl Checker<'_> {
    /// The explain tree of a condition that compiled; `None` when explain trees are not
    /// wanted. Compiling its parts again reports nothing new: what they would report was
    /// reported for the whole condition, so it is dropped.
    pub(super) fn explain_tree(&mut self, e: &Expr, scope: Scope) -> Option<Node> {
        if !self.explain {
            return None;
        }
        let reported = self.diags.len();
        let tree = self.node(e, scope);
        self.diags.truncate(reported);
        tree
    }

    /// `file:line:col` of a span.
    pub(super) fn location(&self, span: Span) -> Location {
        let (file, (line, col)) = match self.sources.get(span.file as usize) {
            Some(src) => (src.name.clone(), line_col(&src.text, span.start as usize)),
            None => (String::new(), (0, 0)),
        };
        Location { file, line, col }
    }

    fn node(&mut self, e: &Expr, scope: Scope) -> Option<Node> {
        let kind = match &e.kind {
            ExprKind::And(..) => NodeKind::All(self.chain(e, scope)?),
            ExprKind::Or(..) => NodeKind::Any(self.chain(e, scope)?),
            ExprKind::Not(inner) => NodeKind::Not(Box::new(self.node(inner, scope)?)),
            _ => NodeKind::Leaf {
                pred: self.condition(e, scope, "a condition")?.fold().specialize(),
                operands: self.operands(e, scope),
            },
        };
        Some(Node {
            text: Arc::from(self.full_text(e.span)),
            kind,
        })
    }

    /// The operands of `a and b and c` (or `or`) as one list.
    fn chain(&mut self, e: &Expr, scope: Scope) -> Option<Vec<Node>> {
        let mut parts = Vec::new();
        let mut pending = vec![e];
        let is_and = matches!(e.kind, ExprKind::And(..));
        while let Some(x) = pending.pop() {
            match &x.kind {
                ExprKind::And(a, b) if is_and => pending.extend([&**b, &**a]),
                ExprKind::Or(a, b) if !is_and => pending.extend([&**b, &**a]),
                _ => parts.push(self.node(x, scope)?),
            }
        }
        Some(parts)
    }

    /// The values a leaf reads that are not constants.
    fn operands(&mut self, e: &Expr, scope: Scope) -> Vec<Operand> {
        let subjects: Vec<&Expr> = match &e.kind {
            ExprKind::Cmp(_, a, b) => vec![a, b],
            ExprKind::InList(x, _)
            | ExprKind::InLiteral(x, _)
            | ExprKind::Matches(x, _)
            | ExprKind::StartsWith(x, _) => vec![x],
            ExprKind::HasTag(entity, _) => {
                return self
                    .field(entity)
                    .map(|f| Operand {
                        text: Arc::from(entity.name.as_str()),
                        expr: OperandExpr::Str(StrExpr::Field(f)),
                    })
                    .into_iter()
                    .collect();
            }
            _ => Vec::new(),
        };
        let mut out = Vec::new();
        for s in subjects {
            let expr = match self.expr(s, scope) {
                Typed::Num(n) => match n.fold() {
                    NumExpr::Const(_) => continue,
                    n => OperandExpr::Num(n),
                },
                Typed::Str(x) => match x.fold() {
                    StrExpr::Const(_) => continue,
                    x => OperandExpr::Str(x),
                },
                Typed::Bool(_) | Typed::Error => continue,
            };
            out.push(Operand {
                text: Arc::from(self.full_text(s.span)),
                expr,
            });
        }
        out
    }

    /// The source text of a span with its whitespace collapsed (not shortened).
    pub(super) fn full_text(&self, span: Span) -> String {
        self.sources
            .get(span.file as usize)
            .and_then(|src| src.text.get(span.range()))
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }
}
