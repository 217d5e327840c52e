//! Syntax tree of a `.veto` file, with source spans, and its pretty-printer.

use std::fmt;

use super::number::{self, Decimal};

/// A byte range in one source file. Spans never take part in equality, so two trees that
/// differ only in layout compare equal (the pretty-printer round trip relies on this).
#[derive(Debug, Clone, Copy, Default)]
pub struct Span {
    pub file: u32,
    pub start: u32,
    pub end: u32,
}

impl PartialEq for Span {
    fn eq(&self, _other: &Span) -> bool {
        true
    }
}

impl Span {
    pub fn new(file: u32, start: usize, end: usize) -> Span {
        Span {
            file,
            start: start as u32,
            end: end as u32,
        }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span {
            file: self.file,
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }

    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// A name with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A duration literal (`10m`), kept in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Duration {
    pub ms: u64,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    /// A number, exact (`0.1` is one tenth); equal by value (`1.50 == 1.5`).
    Num(Decimal),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpannedLiteral {
    pub value: Literal,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// The operator with its operands swapped: `a < b` is `b > a`.
    pub fn flipped(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
            o => o,
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl ArithOp {
    pub fn symbol(self) -> &'static str {
        match self {
            ArithOp::Add => "+",
            ArithOp::Sub => "-",
            ArithOp::Mul => "*",
            ArithOp::Div => "/",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Lit(Literal),
    Bool(bool),
    /// A field or a feature (resolved by the checker).
    Name(String),
    /// `attrs["key"]`
    Attr(String),
    /// `lower(x)`, `len(x)`, `hour(x)`
    Call(Ident, Vec<Expr>),
    Neg(Box<Expr>),
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    /// `x in list_name`
    InList(Box<Expr>, Ident),
    /// `x in ["a", "b"]`
    InLiteral(Box<Expr>, Vec<SpannedLiteral>),
    /// `x matches "regex"`
    Matches(Box<Expr>, SpannedLiteral),
    /// `x starts_with "prefix"`
    StartsWith(Box<Expr>, SpannedLiteral),
    /// `field has tag "name"`
    HasTag(Ident, SpannedLiteral),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ListSource {
    Inline(Vec<SpannedLiteral>),
    File(SpannedLiteral),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListDecl {
    pub name: Ident,
    pub source: ListSource,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FeatureDecl {
    pub name: Ident,
    pub agg: Ident,
    pub arg: Option<Ident>,
    pub by: Ident,
    pub window: Duration,
    pub filter: Option<Expr>,
    pub every: Option<Duration>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Outcome(Ident),
    Score(i64, Span),
    Tag {
        entity: Ident,
        tag: SpannedLiteral,
        duration: Duration,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum RuleBody {
    When(Expr),
    Sequence {
        after: Expr,
        expect: Expr,
        same: Ident,
        within: Duration,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RuleDecl {
    pub name: Ident,
    pub description: Option<String>,
    pub body: RuleBody,
    pub actions: Vec<Action>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DecideDecl {
    pub outcome: Ident,
    pub threshold: i64,
    pub span: Span,
}

/// One `event { ... }` of a test block.
#[derive(Debug, Clone, PartialEq)]
pub struct TestEventDecl {
    /// `(key, value)` pairs; keys are field names, `at`, or `attrs["k"]` written as `attrs.k`.
    pub fields: Vec<(Ident, TestValue)>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TestValue {
    Lit(SpannedLiteral),
    Duration(Duration),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExpectDecl {
    /// `Some(rule)` for `expect timeout <rule> ...`.
    pub timeout_of: Option<Ident>,
    pub outcome: Ident,
    pub hits: Vec<Ident>,
    pub score: Option<i64>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TestDecl {
    pub name: SpannedLiteral,
    pub events: Vec<TestEventDecl>,
    pub expects: Vec<ExpectDecl>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Version(SpannedLiteral),
    List(ListDecl),
    Feature(FeatureDecl),
    Rule(RuleDecl),
    Decide(DecideDecl),
    Test(TestDecl),
}

/// A parsed file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct File {
    pub items: Vec<Item>,
}

/// Writes a duration with the largest unit that divides it exactly.
pub fn format_duration(ms: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ];
    for (size, unit) in UNITS {
        if ms != 0 && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

fn format_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Str(s) => f.write_str(&format_string(s)),
            Literal::Num(n) => f.write_str(&number::format(*n)),
        }
    }
}

fn write_literals(f: &mut fmt::Formatter<'_>, lits: &[SpannedLiteral]) -> fmt::Result {
    f.write_str("[")?;
    for (i, l) in lits.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{}", l.value)?;
    }
    f.write_str("]")
}

/// Binding strength, used to print the fewest parentheses that keep the tree.
fn precedence(kind: &ExprKind) -> u8 {
    match kind {
        ExprKind::Or(..) => 1,
        ExprKind::And(..) => 2,
        ExprKind::Not(..) => 3,
        ExprKind::Cmp(..)
        | ExprKind::InList(..)
        | ExprKind::InLiteral(..)
        | ExprKind::Matches(..)
        | ExprKind::StartsWith(..)
        | ExprKind::HasTag(..) => 4,
        ExprKind::Arith(ArithOp::Add | ArithOp::Sub, ..) => 5,
        ExprKind::Arith(ArithOp::Mul | ArithOp::Div, ..) => 6,
        ExprKind::Neg(..) => 7,
        _ => 8,
    }
}

struct Prec<'a>(&'a Expr, u8);

impl fmt::Display for Prec<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if precedence(&self.0.kind) < self.1 {
            write!(f, "({})", self.0)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = precedence(&self.kind);
        match &self.kind {
            ExprKind::Lit(l) => write!(f, "{l}"),
            ExprKind::Bool(b) => write!(f, "{b}"),
            ExprKind::Name(n) => f.write_str(n),
            ExprKind::Attr(k) => write!(f, "attrs[{}]", format_string(k)),
            ExprKind::Call(name, args) => {
                write!(f, "{}(", name.name)?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
            ExprKind::Neg(e) => write!(f, "-{}", Prec(e, p)),
            // Left-associative: the right operand needs one level more.
            ExprKind::Arith(op, a, b) => {
                write!(f, "{} {} {}", Prec(a, p), op.symbol(), Prec(b, p + 1))
            }
            // Comparisons do not chain: both operands bind tighter.
            ExprKind::Cmp(op, a, b) => {
                write!(f, "{} {} {}", Prec(a, p + 1), op.symbol(), Prec(b, p + 1))
            }
            ExprKind::And(a, b) => write!(f, "{} and {}", Prec(a, p), Prec(b, p + 1)),
            ExprKind::Or(a, b) => write!(f, "{} or {}", Prec(a, p), Prec(b, p + 1)),
            ExprKind::Not(e) => write!(f, "not {}", Prec(e, p)),
            ExprKind::InList(e, list) => write!(f, "{} in {}", Prec(e, p + 1), list.name),
            ExprKind::InLiteral(e, lits) => {
                write!(f, "{} in ", Prec(e, p + 1))?;
                write_literals(f, lits)
            }
            ExprKind::Matches(e, re) => write!(f, "{} matches {}", Prec(e, p + 1), re.value),
            ExprKind::StartsWith(e, s) => {
                write!(f, "{} starts_with {}", Prec(e, p + 1), s.value)
            }
            ExprKind::HasTag(entity, tag) => write!(f, "{} has tag {}", entity.name, tag.value),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Outcome(o) => f.write_str(&o.name),
            Action::Score(s, _) => write!(f, "score {s}"),
            Action::Tag {
                entity,
                tag,
                duration,
            } => write!(
                f,
                "tag {} {} for {}",
                entity.name,
                tag.value,
                format_duration(duration.ms)
            ),
        }
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::Version(v) => writeln!(f, "version {}", v.value),
            Item::List(l) => match &l.source {
                ListSource::Inline(values) => {
                    write!(f, "list {} = ", l.name.name)?;
                    write_literals(f, values)?;
                    writeln!(f)
                }
                ListSource::File(path) => writeln!(f, "list {} from {}", l.name.name, path.value),
            },
            Item::Feature(d) => {
                write!(
                    f,
                    "feature {} = {}({}) by {} over {}",
                    d.name.name,
                    d.agg.name,
                    d.arg.as_ref().map_or("", |a| a.name.as_str()),
                    d.by.name,
                    format_duration(d.window.ms)
                )?;
                if let Some(w) = &d.filter {
                    write!(f, " where {w}")?;
                }
                if let Some(e) = &d.every {
                    write!(f, " every {}", format_duration(e.ms))?;
                }
                writeln!(f)
            }
            Item::Rule(r) => {
                write!(f, "rule {}", r.name.name)?;
                if let Some(d) = &r.description {
                    write!(f, " {}", format_string(d))?;
                }
                writeln!(f)?;
                match &r.body {
                    RuleBody::When(e) => writeln!(f, "  when {e}")?,
                    RuleBody::Sequence {
                        after,
                        expect,
                        same,
                        within,
                    } => {
                        writeln!(f, "  after {after}")?;
                        writeln!(
                            f,
                            "  expect {expect} with same {} within {}",
                            same.name,
                            format_duration(within.ms)
                        )?;
                    }
                }
                f.write_str("  then ")?;
                for (i, a) in r.actions.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                writeln!(f)
            }
            Item::Decide(d) => {
                writeln!(f, "decide {} when score >= {}", d.outcome.name, d.threshold)
            }
            Item::Test(t) => {
                writeln!(f, "test {} {{", t.name.value)?;
                for e in &t.events {
                    f.write_str("  event {")?;
                    for (i, (k, v)) in e.fields.iter().enumerate() {
                        f.write_str(if i > 0 { ", " } else { " " })?;
                        match v {
                            TestValue::Lit(l) => write!(f, "{}: {}", k.name, l.value)?,
                            TestValue::Duration(d) => {
                                write!(f, "{}: {}", k.name, format_duration(d.ms))?
                            }
                        }
                    }
                    writeln!(f, " }}")?;
                }
                for x in &t.expects {
                    f.write_str("  expect ")?;
                    if let Some(r) = &x.timeout_of {
                        write!(f, "timeout {} ", r.name)?;
                    }
                    f.write_str(&x.outcome.name)?;
                    if !x.hits.is_empty() {
                        f.write_str(" hits ")?;
                        for (i, h) in x.hits.iter().enumerate() {
                            if i > 0 {
                                f.write_str(", ")?;
                            }
                            f.write_str(&h.name)?;
                        }
                    }
                    if let Some(s) = x.score {
                        write!(f, " score {s}")?;
                    }
                    writeln!(f)?;
                }
                writeln!(f, "}}")
            }
        }
    }
}

impl fmt::Display for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 && matches!(item, Item::Rule(_) | Item::Test(_)) {
                writeln!(f)?;
            }
            write!(f, "{item}")?;
        }
        Ok(())
    }
}
