//! Recursive-descent parser: tokens to the syntax tree, recovering at the next item after an error.
//! (Over 800 lines: one function per grammar rule, kept in one file so the grammar reads top to bottom.)

use super::ast::*;
use super::diagnostic::Diagnostic;
use super::lexer::{lex, Tok, Token};
use super::number::Decimal;
use rust_decimal::prelude::ToPrimitive;

/// Words that cannot name a list, feature or rule.
pub const RESERVED: [&str; 23] = [
    "when",
    "then",
    "after",
    "expect",
    "with",
    "same",
    "within",
    "by",
    "over",
    "where",
    "every",
    "from",
    "and",
    "or",
    "not",
    "in",
    "matches",
    "starts_with",
    "has",
    "tag",
    "true",
    "false",
    "score",
];

const ITEM_KEYWORDS: [&str; 6] = ["version", "list", "feature", "rule", "decide", "test"];

/// Deepest expression nesting accepted; deeper input is rejected instead of overflowing the stack.
const MAX_DEPTH: usize = 64;

/// Most operators in one expression: bounds the tree depth that later passes recurse on.
const MAX_OPERATORS: usize = 256;

/// Marker for "a diagnostic was already pushed; recover".
struct Failed;

type PResult<T> = Result<T, Failed>;

struct Parser<'d> {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
    /// Operators in the current top-level expression.
    operators: usize,
    diags: &'d mut Vec<Diagnostic>,
}

/// Parses one file. Never panics; every problem becomes a diagnostic in `diags`.
pub fn parse(file: u32, text: &str, diags: &mut Vec<Diagnostic>) -> File {
    let tokens = lex(file, text, diags);
    let mut p = Parser {
        tokens,
        pos: 0,
        depth: 0,
        operators: 0,
        diags,
    };
    let mut items = Vec::new();
    while !p.at_eof() {
        match p.item() {
            Ok(item) => items.push(item),
            Err(Failed) => p.recover(),
        }
    }
    File { items }
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        self.tokens.get(self.pos).map_or(&Tok::Eof, |t| &t.tok)
    }

    fn peek_at(&self, ahead: usize) -> &Tok {
        self.tokens
            .get(self.pos + ahead)
            .map_or(&Tok::Eof, |t| &t.tok)
    }

    fn span(&self) -> Span {
        self.tokens
            .get(self.pos)
            .or(self.tokens.last())
            .map_or_else(Span::default, |t| t.span)
    }

    fn prev_span(&self) -> Span {
        self.pos
            .checked_sub(1)
            .and_then(|i| self.tokens.get(i))
            .map_or_else(|| self.span(), |t| t.span)
    }

    fn at_eof(&self) -> bool {
        matches!(self.peek(), Tok::Eof)
    }

    fn bump(&mut self) -> Token {
        let t = self.tokens.get(self.pos).cloned().unwrap_or(Token {
            tok: Tok::Eof,
            span: self.span(),
        });
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        t
    }

    fn is_word(&self, word: &str) -> bool {
        matches!(self.peek(), Tok::Ident(w) if w == word)
    }

    fn eat_word(&mut self, word: &str) -> bool {
        if self.is_word(word) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek() == tok {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn fail<T>(&mut self, expected: &str) -> PResult<T> {
        let found = self.peek().describe();
        let help = match self.peek() {
            Tok::Ident(w) if w == "&&" => Some("use `and`".to_string()),
            Tok::Eq if expected.contains("operator") || expected.contains("expression") => {
                Some("compare with `==`".to_string())
            }
            _ => None,
        };
        self.diags.push(Diagnostic::error(
            self.span(),
            format!("expected {expected}, found {found}"),
            help,
        ));
        Err(Failed)
    }

    fn expect_word(&mut self, word: &str) -> PResult<Span> {
        if self.eat_word(word) {
            Ok(self.prev_span())
        } else {
            self.fail(&format!("`{word}`"))
        }
    }

    fn expect(&mut self, tok: Tok, what: &str) -> PResult<Span> {
        if self.eat(&tok) {
            Ok(self.prev_span())
        } else {
            self.fail(what)
        }
    }

    /// A name: an identifier that is not a reserved word.
    fn ident(&mut self, what: &str) -> PResult<Ident> {
        match self.peek().clone() {
            Tok::Ident(name) => {
                let span = self.span();
                if RESERVED.contains(&name.as_str()) || ITEM_KEYWORDS.contains(&name.as_str()) {
                    self.diags.push(Diagnostic::error(
                        span,
                        format!("`{name}` is a reserved word and cannot be used as {what}"),
                        None,
                    ));
                    self.pos += 1;
                    return Err(Failed);
                }
                self.pos += 1;
                Ok(Ident { name, span })
            }
            _ => self.fail(what),
        }
    }

    fn string(&mut self, what: &str) -> PResult<SpannedLiteral> {
        match self.peek().clone() {
            Tok::Str(s) => {
                let span = self.span();
                self.pos += 1;
                Ok(SpannedLiteral {
                    value: Literal::Str(s),
                    span,
                })
            }
            _ => self.fail(what),
        }
    }

    fn duration(&mut self, what: &str) -> PResult<Duration> {
        match self.peek().clone() {
            Tok::Duration(ms) => {
                let span = self.span();
                self.pos += 1;
                Ok(Duration { ms, span })
            }
            Tok::Num(_) => {
                self.diags.push(Diagnostic::error(
                    self.span(),
                    format!("expected {what}, found a number without unit"),
                    Some("add a unit: ms, s, m, h or d".into()),
                ));
                Err(Failed)
            }
            _ => self.fail(what),
        }
    }

    fn integer(&mut self, what: &str) -> PResult<(i64, Span)> {
        let negative = self.eat(&Tok::Minus);
        let start = self.prev_span();
        match self.peek().clone() {
            Tok::Num(n) if n.is_integer() && n.abs() < Decimal::from(1_000_000_000_000i64) => {
                let span = if negative {
                    start.to(self.span())
                } else {
                    self.span()
                };
                self.pos += 1;
                let n = n.to_i64().unwrap_or(0);
                Ok((if negative { -n } else { n }, span))
            }
            _ => self.fail(what),
        }
    }

    /// Skips to the next item keyword so one error does not hide the rest of the file.
    fn recover(&mut self) {
        if !self.at_eof() {
            self.pos += 1;
        }
        while !self.at_eof() {
            if let Tok::Ident(w) = self.peek() {
                if ITEM_KEYWORDS.contains(&w.as_str()) {
                    return;
                }
            }
            self.pos += 1;
        }
    }

    fn item(&mut self) -> PResult<Item> {
        let start = self.span();
        let word = match self.peek() {
            Tok::Ident(w) => w.clone(),
            _ => return self.fail("`rule`, `feature`, `list`, `decide`, `test` or `version`"),
        };
        match word.as_str() {
            "version" => {
                self.pos += 1;
                Ok(Item::Version(self.string("a version string")?))
            }
            "list" => self.list(start).map(Item::List),
            "feature" => self.feature(start).map(Item::Feature),
            "rule" => self.rule(start).map(Item::Rule),
            "decide" => self.decide(start).map(Item::Decide),
            "test" => self.test(start).map(Item::Test),
            _ => self.fail("`rule`, `feature`, `list`, `decide`, `test` or `version`"),
        }
    }

    fn literal(&mut self) -> PResult<SpannedLiteral> {
        let start = self.span();
        let negative = self.eat(&Tok::Minus);
        match self.peek().clone() {
            Tok::Str(s) if !negative => {
                self.pos += 1;
                Ok(SpannedLiteral {
                    value: Literal::Str(s),
                    span: start,
                })
            }
            Tok::Num(n) => {
                let span = start.to(self.span());
                self.pos += 1;
                Ok(SpannedLiteral {
                    value: Literal::Num(if negative { -n } else { n }),
                    span,
                })
            }
            _ => self.fail("a string or number"),
        }
    }

    fn literal_list(&mut self) -> PResult<Vec<SpannedLiteral>> {
        self.expect(Tok::LBracket, "`[`")?;
        let mut values = Vec::new();
        while !self.eat(&Tok::RBracket) {
            values.push(self.literal()?);
            if !self.eat(&Tok::Comma) {
                self.expect(Tok::RBracket, "`,` or `]`")?;
                break;
            }
        }
        Ok(values)
    }

    fn list(&mut self, start: Span) -> PResult<ListDecl> {
        self.pos += 1;
        let name = self.ident("a list name")?;
        let source = if self.eat(&Tok::Eq) {
            ListSource::Inline(self.literal_list()?)
        } else if self.eat_word("from") {
            ListSource::File(self.string("a file path string")?)
        } else {
            return self.fail("`=` or `from`");
        };
        Ok(ListDecl {
            name,
            source,
            span: start.to(self.prev_span()),
        })
    }

    fn feature(&mut self, start: Span) -> PResult<FeatureDecl> {
        self.pos += 1;
        let name = self.ident("a feature name")?;
        self.expect(Tok::Eq, "`=`")?;
        let agg = self.ident("an aggregate (count, sum, avg, min, max, distinct, last)")?;
        self.expect(Tok::LParen, "`(`")?;
        let arg = if matches!(self.peek(), Tok::Ident(_)) {
            Some(self.ident("a field")?)
        } else {
            None
        };
        self.expect(Tok::RParen, "`)`")?;
        self.expect_word("by")?;
        let by = self.ident("a field")?;
        self.expect_word("over")?;
        let window = self.duration("a window duration")?;
        let mut filter = None;
        let mut every = None;
        loop {
            if filter.is_none() && self.eat_word("where") {
                filter = Some(self.expr()?);
            } else if every.is_none() && self.eat_word("every") {
                every = Some(self.duration("a resolution duration")?);
            } else {
                break;
            }
        }
        Ok(FeatureDecl {
            name,
            agg,
            arg,
            by,
            window,
            filter,
            every,
            span: start.to(self.prev_span()),
        })
    }

    fn rule(&mut self, start: Span) -> PResult<RuleDecl> {
        self.pos += 1;
        let name = self.ident("a rule name")?;
        let description = match self.peek().clone() {
            Tok::Str(s) => {
                self.pos += 1;
                Some(s)
            }
            _ => None,
        };
        let body = if self.eat_word("when") {
            RuleBody::When(self.expr()?)
        } else if self.eat_word("after") {
            let after = self.expr()?;
            self.expect_word("expect")?;
            let expect = self.expr()?;
            self.expect_word("with")?;
            self.expect_word("same")?;
            let same = self.ident("a field")?;
            self.expect_word("within")?;
            let within = self.duration("a duration")?;
            RuleBody::Sequence {
                after,
                expect,
                same,
                within,
            }
        } else {
            return self.fail("`when` or `after`");
        };
        self.expect_word("then")?;
        let mut actions = vec![self.action()?];
        while self.eat(&Tok::Comma) {
            actions.push(self.action()?);
        }
        Ok(RuleDecl {
            name,
            description,
            body,
            actions,
            span: start.to(self.prev_span()),
        })
    }

    fn action(&mut self) -> PResult<Action> {
        if self.eat_word("score") {
            let (n, span) = self.integer("a whole score")?;
            Ok(Action::Score(n, span))
        } else if self.eat_word("tag") {
            let entity = self.ident("a field")?;
            let tag = self.string("a tag name string")?;
            self.expect_word("for")?;
            let duration = self.duration("a duration")?;
            Ok(Action::Tag {
                entity,
                tag,
                duration,
            })
        } else if matches!(self.peek(), Tok::Ident(_)) {
            Ok(Action::Outcome(self.ident("an outcome")?))
        } else {
            self.fail("an outcome, `score` or `tag`")
        }
    }

    fn decide(&mut self, start: Span) -> PResult<DecideDecl> {
        self.pos += 1;
        let outcome = self.ident("an outcome")?;
        self.expect_word("when")?;
        self.expect_word("score")?;
        self.expect(Tok::Ge, "`>=`")?;
        let (threshold, _) = self.integer("a whole score")?;
        Ok(DecideDecl {
            outcome,
            threshold,
            span: start.to(self.prev_span()),
        })
    }

    fn test(&mut self, start: Span) -> PResult<TestDecl> {
        self.pos += 1;
        let name = self.string("a test name string")?;
        self.expect(Tok::LBrace, "`{`")?;
        let mut events = Vec::new();
        let mut expects = Vec::new();
        loop {
            if self.eat(&Tok::RBrace) {
                break;
            }
            let item_start = self.span();
            if self.eat_word("event") {
                events.push(self.test_event(item_start)?);
            } else if self.eat_word("expect") {
                expects.push(self.test_expect(item_start)?);
            } else {
                return self.fail("`event`, `expect` or `}`");
            }
        }
        Ok(TestDecl {
            name,
            events,
            expects,
            span: start.to(self.prev_span()),
        })
    }

    fn test_event(&mut self, start: Span) -> PResult<TestEventDecl> {
        self.expect(Tok::LBrace, "`{`")?;
        let mut fields = Vec::new();
        while !self.eat(&Tok::RBrace) {
            let key_start = self.span();
            let mut key = match self.bump().tok {
                Tok::Ident(k) => k,
                _ => {
                    self.pos -= 1;
                    return self.fail("a field name");
                }
            };
            if key == "attrs" && self.eat(&Tok::Dot) {
                let sub = self.ident("an attribute name")?;
                key = format!("attrs.{}", sub.name);
            }
            let key = Ident {
                name: key,
                span: key_start.to(self.prev_span()),
            };
            self.expect(Tok::Colon, "`:`")?;
            let value = if let Tok::Duration(ms) = self.peek() {
                let d = Duration {
                    ms: *ms,
                    span: self.span(),
                };
                self.pos += 1;
                TestValue::Duration(d)
            } else {
                TestValue::Lit(self.literal()?)
            };
            fields.push((key, value));
            if !self.eat(&Tok::Comma) {
                self.expect(Tok::RBrace, "`,` or `}`")?;
                break;
            }
        }
        Ok(TestEventDecl {
            fields,
            span: start.to(self.prev_span()),
        })
    }

    fn test_expect(&mut self, start: Span) -> PResult<ExpectDecl> {
        let timeout_of = if self.eat_word("timeout") {
            Some(self.ident("a sequence rule name")?)
        } else {
            None
        };
        let outcome = self.ident("an outcome")?;
        let mut hits = Vec::new();
        if self.eat_word("hits") {
            hits.push(self.ident("a rule name")?);
            while self.eat(&Tok::Comma) {
                hits.push(self.ident("a rule name")?);
            }
        }
        let score = if self.eat_word("score") {
            Some(self.integer("a whole score")?.0)
        } else {
            None
        };
        Ok(ExpectDecl {
            timeout_of,
            outcome,
            hits,
            score,
            span: start.to(self.prev_span()),
        })
    }

    // ---- expressions: or < and < not < comparison < + - < * / < unary < primary ----

    /// Counts one operator node; fails past `MAX_OPERATORS`.
    fn operator(&mut self, span: Span) -> PResult<()> {
        self.operators += 1;
        if self.operators > MAX_OPERATORS {
            self.diags.push(Diagnostic::error(
                span,
                format!("expression has more than {MAX_OPERATORS} operators"),
                Some("split the rule, or put alternatives in a `list`".into()),
            ));
            return Err(Failed);
        }
        Ok(())
    }

    pub fn expr(&mut self) -> PResult<Expr> {
        if self.depth == 0 {
            self.operators = 0;
        }
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            self.depth -= 1;
            self.diags.push(Diagnostic::error(
                self.span(),
                format!("expression nested more than {MAX_DEPTH} levels deep"),
                None,
            ));
            return Err(Failed);
        }
        let result = self.or_expr();
        self.depth -= 1;
        result
    }

    fn or_expr(&mut self) -> PResult<Expr> {
        let mut left = self.and_expr()?;
        while self.eat_word("or") {
            let right = self.and_expr()?;
            let span = left.span.to(right.span);
            self.operator(span)?;
            left = Expr {
                kind: ExprKind::Or(Box::new(left), Box::new(right)),
                span,
            };
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> PResult<Expr> {
        let mut left = self.not_expr()?;
        while self.eat_word("and") {
            let right = self.not_expr()?;
            let span = left.span.to(right.span);
            self.operator(span)?;
            left = Expr {
                kind: ExprKind::And(Box::new(left), Box::new(right)),
                span,
            };
        }
        Ok(left)
    }

    /// A prefix operator (the current token) applied to what `operand` parses, nesting bounded
    /// by `MAX_DEPTH`.
    fn prefix(
        &mut self,
        operand: fn(&mut Self) -> PResult<Expr>,
        wrap: fn(Box<Expr>) -> ExprKind,
    ) -> PResult<Expr> {
        let start = self.span();
        self.pos += 1;
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            self.depth -= 1;
            return self.fail("a shallower expression");
        }
        let inner = operand(self);
        self.depth -= 1;
        let inner = inner?;
        let span = start.to(inner.span);
        self.operator(span)?;
        Ok(Expr {
            kind: wrap(Box::new(inner)),
            span,
        })
    }

    fn not_expr(&mut self) -> PResult<Expr> {
        if self.is_word("not") {
            return self.prefix(Self::not_expr, ExprKind::Not);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> PResult<Expr> {
        // `field has tag "x"`
        if let (Tok::Ident(_), Tok::Ident(h)) = (self.peek(), self.peek_at(1)) {
            if h == "has" {
                let entity = self.ident("a field")?;
                self.pos += 1;
                self.expect_word("tag")?;
                let tag = self.string("a tag name string")?;
                let span = entity.span.to(tag.span);
                return Ok(Expr {
                    kind: ExprKind::HasTag(entity, tag),
                    span,
                });
            }
        }
        let left = self.additive()?;
        let op = match self.peek() {
            Tok::EqEq => Some(CmpOp::Eq),
            Tok::Ne => Some(CmpOp::Ne),
            Tok::Lt => Some(CmpOp::Lt),
            Tok::Le => Some(CmpOp::Le),
            Tok::Gt => Some(CmpOp::Gt),
            Tok::Ge => Some(CmpOp::Ge),
            _ => None,
        };
        if let Some(op) = op {
            self.pos += 1;
            let right = self.additive()?;
            let span = left.span.to(right.span);
            self.operator(span)?;
            return Ok(Expr {
                kind: ExprKind::Cmp(op, Box::new(left), Box::new(right)),
                span,
            });
        }
        if self.eat_word("in") {
            if matches!(self.peek(), Tok::LBracket) {
                let values = self.literal_list()?;
                let span = left.span.to(self.prev_span());
                return Ok(Expr {
                    kind: ExprKind::InLiteral(Box::new(left), values),
                    span,
                });
            }
            let list = self.ident("a list name or `[`")?;
            let span = left.span.to(list.span);
            return Ok(Expr {
                kind: ExprKind::InList(Box::new(left), list),
                span,
            });
        }
        if self.eat_word("matches") {
            let re = self.string("a regex string")?;
            let span = left.span.to(re.span);
            return Ok(Expr {
                kind: ExprKind::Matches(Box::new(left), re),
                span,
            });
        }
        if self.eat_word("starts_with") {
            let prefix = self.string("a prefix string")?;
            let span = left.span.to(prefix.span);
            return Ok(Expr {
                kind: ExprKind::StartsWith(Box::new(left), prefix),
                span,
            });
        }
        if matches!(self.peek(), Tok::Eq) {
            self.diags.push(Diagnostic::error(
                self.span(),
                "`=` is not a comparison".to_string(),
                Some("compare with `==`".into()),
            ));
            return Err(Failed);
        }
        Ok(left)
    }

    fn additive(&mut self) -> PResult<Expr> {
        let mut left = self.multiplicative()?;
        loop {
            let op = match self.peek() {
                Tok::Plus => ArithOp::Add,
                Tok::Minus => ArithOp::Sub,
                _ => return Ok(left),
            };
            self.pos += 1;
            let right = self.multiplicative()?;
            let span = left.span.to(right.span);
            self.operator(span)?;
            left = Expr {
                kind: ExprKind::Arith(op, Box::new(left), Box::new(right)),
                span,
            };
        }
    }

    fn multiplicative(&mut self) -> PResult<Expr> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek() {
                Tok::Star => ArithOp::Mul,
                Tok::Slash => ArithOp::Div,
                _ => return Ok(left),
            };
            self.pos += 1;
            let right = self.unary()?;
            let span = left.span.to(right.span);
            self.operator(span)?;
            left = Expr {
                kind: ExprKind::Arith(op, Box::new(left), Box::new(right)),
                span,
            };
        }
    }

    fn unary(&mut self) -> PResult<Expr> {
        if matches!(self.peek(), Tok::Minus) {
            return self.prefix(Self::unary, ExprKind::Neg);
        }
        self.primary()
    }

    fn primary(&mut self) -> PResult<Expr> {
        let span = self.span();
        match self.peek().clone() {
            Tok::Num(n) => {
                self.pos += 1;
                Ok(Expr {
                    kind: ExprKind::Lit(Literal::Num(n)),
                    span,
                })
            }
            Tok::Str(s) => {
                self.pos += 1;
                Ok(Expr {
                    kind: ExprKind::Lit(Literal::Str(s)),
                    span,
                })
            }
            Tok::Duration(ms) => {
                // A duration in an expression is its number of milliseconds.
                self.pos += 1;
                Ok(Expr {
                    kind: ExprKind::Lit(Literal::Num(Decimal::from(ms))),
                    span,
                })
            }
            Tok::LParen => {
                self.pos += 1;
                let inner = self.expr()?;
                self.expect(Tok::RParen, "`)`")?;
                Ok(inner)
            }
            Tok::Ident(word) if word == "true" || word == "false" => {
                self.pos += 1;
                Ok(Expr {
                    kind: ExprKind::Bool(word == "true"),
                    span,
                })
            }
            Tok::Ident(word) if word == "attrs" => {
                self.pos += 1;
                self.expect(Tok::LBracket, "`[` after `attrs`")?;
                let key = self.string("an attribute name string")?;
                self.expect(Tok::RBracket, "`]`")?;
                let Literal::Str(key) = key.value else {
                    return self.fail("an attribute name string");
                };
                Ok(Expr {
                    kind: ExprKind::Attr(key),
                    span: span.to(self.prev_span()),
                })
            }
            Tok::Ident(word)
                if RESERVED.contains(&word.as_str()) || ITEM_KEYWORDS.contains(&word.as_str()) =>
            {
                self.fail("an expression")
            }
            Tok::Ident(_) => {
                let name = self.ident("a field, feature or value")?;
                if self.eat(&Tok::LParen) {
                    let mut args = Vec::new();
                    while !self.eat(&Tok::RParen) {
                        args.push(self.expr()?);
                        if !self.eat(&Tok::Comma) {
                            self.expect(Tok::RParen, "`,` or `)`")?;
                            break;
                        }
                    }
                    let span = name.span.to(self.prev_span());
                    return Ok(Expr {
                        kind: ExprKind::Call(name, args),
                        span,
                    });
                }
                Ok(Expr {
                    span: name.span,
                    kind: ExprKind::Name(name.name),
                })
            }
            _ => self.fail("an expression"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(src: &str) -> File {
        let mut d = Vec::new();
        let f = parse(0, src, &mut d);
        assert!(d.is_empty(), "{d:?}");
        f
    }

    #[test]
    fn parses_every_item_kind() {
        let f = parse_ok(
            r#"
version "2026-01"
list bad = ["a", "b"]
list cards from "lists/cards.txt"
feature n = count() by card_id over 10m where type == "authorization" every 1m
rule r "desc" when n > 5 and not user_id has tag "trusted" then review, score 30, tag user_id "x" for 1d
rule s after type == "authorization" expect type == "capture" with same txn_id within 2s then review
decide block when score >= 80
test "t" {
  event { type: "authorization", card_id: "c1", amount: 12.5, at: 0s }
  expect review hits r score 30
  expect timeout s review
}
"#,
        );
        assert_eq!(f.items.len(), 8);
    }

    #[test]
    fn precedence_is_or_and_not_cmp_arith() {
        let f = parse_ok("rule r when a or b == 1 + 2 * 3 and not c then block");
        let Item::Rule(r) = &f.items[0] else {
            panic!("not a rule")
        };
        let RuleBody::When(e) = &r.body else {
            panic!("not when")
        };
        assert_eq!(e.to_string(), "a or b == 1 + 2 * 3 and not c");
        assert!(matches!(e.kind, ExprKind::Or(..)));
    }

    #[test]
    fn recovers_and_reports_every_item_error() {
        let mut d = Vec::new();
        let f = parse(
            0,
            "rule a when then block\nrule b when x > 1 then block\nfeature = count()",
            &mut d,
        );
        assert_eq!(f.items.len(), 1);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].message, "expected an expression, found `then`");
    }

    #[test]
    fn long_operator_chains_are_an_error_not_a_crash() {
        let src = format!("rule r when a{} then block", " and a".repeat(100_000));
        let mut d = Vec::new();
        parse(0, &src, &mut d);
        assert_eq!(d[0].message, "expression has more than 256 operators");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let src = format!(
            "rule r when {}a{} then block",
            "(".repeat(10_000),
            ")".repeat(10_000)
        );
        let mut d = Vec::new();
        parse(0, &src, &mut d);
        assert!(d[0].message.starts_with("expression nested more than"));
    }
}
