//! Broken rule files never panic and are each rejected with a located diagnostic; parser property tests.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use veto::rules::ast::{
    ArithOp, CmpOp, Expr, ExprKind, Ident, Item, Literal, RuleBody, Span, SpannedLiteral,
};
use veto::rules::number::Decimal;
use veto::rules::{compile_source, diagnostic::Diagnostic, load, parser, Severity};

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rules_corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn every_broken_file_is_rejected_with_a_located_diagnostic() {
    let files = corpus();
    assert!(files.len() >= 30, "only {} corpus files", files.len());
    for path in files {
        let report = load(std::slice::from_ref(&path));
        let name = path.display();
        assert!(report.has_errors(), "{name} was accepted");
        assert!(report.ruleset.is_none(), "{name} produced a rule set");
        let errors: Vec<_> = report
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .collect();
        for d in &errors {
            assert!(!d.message.is_empty(), "{name}: empty message");
            assert!(d.line >= 1 && d.col >= 1, "{name}: unlocated {d:?}");
        }
        let human = report.render_human(false);
        assert!(
            human.contains(&errors[0].message),
            "{name}: rendering lacks the message:\n{human}"
        );
        let json: serde_json::Value = match serde_json::from_str(&report.render_json()) {
            Ok(v) => v,
            Err(e) => panic!("{name}: bad json: {e}"),
        };
        assert_eq!(json["ok"], serde_json::Value::Bool(false));
    }
}

#[test]
fn invalid_utf8_is_reported_at_its_first_bad_byte() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rules_corpus/41_invalid_utf8.veto");
    let report = load(std::slice::from_ref(&path));
    let d = &report.diagnostics[0];
    assert_eq!(
        (d.line, d.col, d.message.as_str(), d.severity),
        (1, 20, "invalid UTF-8 (byte 0xFF)", Severity::Error)
    );
    assert_eq!(report.diagnostics.len(), 1, "{:?}", report.diagnostics);
    let human = report.render_human(false);
    assert!(
        human.starts_with(&format!("error: {}:1:20: invalid UTF-8", path.display())),
        "{human}"
    );
}

#[test]
fn human_rendering_shows_location_and_caret() {
    let report = compile_source(
        "t.veto",
        "rule r when crad_id == \"x\" then block\n",
        Path::new("."),
    );
    let text = report.render_human(false);
    assert!(text.contains("t.veto:1:13"), "{text}");
    assert!(
        text.contains("unknown field or feature `crad_id`"),
        "{text}"
    );
    assert!(text.contains("did you mean `card_id`?"), "{text}");
    assert!(text.contains('^') || text.contains('─'), "{text}");
}

fn parse_quiet(text: &str) -> (veto::rules::ast::File, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let file = parser::parse(0, text, &mut diags);
    (file, diags)
}

fn ident(name: &str) -> Ident {
    Ident {
        name: name.to_string(),
        span: Span::default(),
    }
}

fn leaf() -> impl Strategy<Value = Expr> {
    let kind = prop_oneof![
        (0i64..100_000).prop_map(|n| ExprKind::Lit(Literal::Num(Decimal::new(n * 25, 2)))),
        "[a-zA-Z0-9 _.\\\\\"-]{0,8}".prop_map(|s| ExprKind::Lit(Literal::Str(s))),
        prop::sample::select(vec!["amount", "card_id", "type", "f1", "ip"])
            .prop_map(|n| ExprKind::Name(n.to_string())),
        "[a-z]{1,5}".prop_map(ExprKind::Attr),
        any::<bool>().prop_map(ExprKind::Bool),
    ];
    kind.prop_map(|kind| Expr {
        kind,
        span: Span::default(),
    })
}

fn expr() -> impl Strategy<Value = Expr> {
    leaf().prop_recursive(5, 40, 2, |inner| {
        let b = |k: ExprKind| Expr {
            kind: k,
            span: Span::default(),
        };
        prop_oneof![
            (
                inner.clone(),
                inner.clone(),
                prop::sample::select(vec![CmpOp::Eq, CmpOp::Ne, CmpOp::Lt, CmpOp::Ge])
            )
                .prop_map(move |(x, y, op)| b(ExprKind::Cmp(
                    op,
                    Box::new(x),
                    Box::new(y)
                ))),
            (
                inner.clone(),
                inner.clone(),
                prop::sample::select(vec![ArithOp::Add, ArithOp::Sub, ArithOp::Mul, ArithOp::Div])
            )
                .prop_map(move |(x, y, op)| b(ExprKind::Arith(
                    op,
                    Box::new(x),
                    Box::new(y)
                ))),
            (inner.clone(), inner.clone())
                .prop_map(move |(x, y)| b(ExprKind::And(Box::new(x), Box::new(y)))),
            (inner.clone(), inner.clone())
                .prop_map(move |(x, y)| b(ExprKind::Or(Box::new(x), Box::new(y)))),
            inner
                .clone()
                .prop_map(move |x| b(ExprKind::Not(Box::new(x)))),
            inner
                .clone()
                .prop_map(move |x| b(ExprKind::Neg(Box::new(x)))),
            inner
                .clone()
                .prop_map(move |x| b(ExprKind::Call(ident("lower"), vec![x]))),
            inner
                .clone()
                .prop_map(move |x| b(ExprKind::InList(Box::new(x), ident("some_list")))),
            inner.clone().prop_map(move |x| b(ExprKind::Matches(
                Box::new(x),
                SpannedLiteral {
                    value: Literal::Str("^a.*".into()),
                    span: Span::default()
                }
            ))),
            inner.prop_map(move |x| b(ExprKind::InLiteral(
                Box::new(x),
                vec![SpannedLiteral {
                    value: Literal::Num(Decimal::new(-15, 1)),
                    span: Span::default()
                }]
            ))),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn parser_and_checker_never_panic_on_arbitrary_text(text in "\\PC{0,200}") {
        let _ = parse_quiet(&text);
        let _ = compile_source("p.veto", &text, Path::new("."));
    }

    #[test]
    fn parser_never_panics_on_token_soup(words in prop::collection::vec(prop::sample::select(vec![
        "rule", "r", "when", "then", "block", "feature", "f", "=", "count", "(", ")", "by", "card_id",
        "over", "10m", "and", "or", "not", "in", "[", "]", "\"x\"", "5", ",", "test", "{", "}", "event",
        "expect", "after", "with", "same", "within", "decide", "score", ">=", "has", "tag", "-", "attrs",
    ]), 0..60)) {
        let text = words.join(" ");
        let _ = compile_source("p.veto", &text, Path::new("."));
    }

    #[test]
    fn printing_then_parsing_gives_the_same_tree(e in expr()) {
        let src = format!("rule r when {e} then block");
        let (file, diags) = parse_quiet(&src);
        prop_assert!(diags.is_empty(), "{src}: {diags:?}");
        let Some(Item::Rule(rule)) = file.items.first() else {
            return Err(TestCaseError::fail("no rule"));
        };
        let RuleBody::When(parsed) = &rule.body else {
            return Err(TestCaseError::fail("not a when rule"));
        };
        prop_assert_eq!(parsed, &e, "{}", src);
        let reprinted = file.to_string();
        let (again, _) = parse_quiet(&reprinted);
        prop_assert_eq!(again, file);
    }
}

#[test]
fn shipped_file_round_trips_through_the_printer() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/payments.veto");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (file, diags) = parse_quiet(&text);
    assert!(diags.is_empty());
    let printed = file.to_string();
    let (again, diags) = parse_quiet(&printed);
    assert!(diags.is_empty(), "{printed}");
    assert_eq!(again, file);
}
