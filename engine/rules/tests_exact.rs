//! Tests of conditions the event contract rules out (warnings) and of exact decimal numbers in
//! rules: arithmetic, constant folding, feature values and test-block amounts.

use std::path::Path;

use super::*;
use crate::event::{Field, PaymentEvent};

fn compile(src: &str) -> CheckReport {
    compile_source("t.veto", src, Path::new("."))
}

/// `(severity, message, line, col, help)` of every diagnostic.
fn diagnostics(src: &str) -> Vec<(Severity, String, usize, usize, Option<String>)> {
    compile(src)
        .diagnostics
        .into_iter()
        .map(|d| (d.severity, d.message, d.line, d.col, d.help))
        .collect()
}

fn one_warning(src: &str) -> (String, usize, usize, Option<String>) {
    let report = compile(src);
    assert!(report.ruleset.is_some(), "{}", report.render_human(false));
    match report.diagnostics.as_slice() {
        [d] if d.severity == Severity::Warning => {
            (d.message.clone(), d.line, d.col, d.help.clone())
        }
        other => panic!("expected one warning, got {other:#?}"),
    }
}

#[test]
fn conditions_the_contract_rules_out_are_warnings() {
    let (m, l, c, h) = one_warning("rule ok when amount > 1 then review\nrule neg\n  when type == \"refund\" and amount < 0\n  then block");
    assert_eq!(
        (m.as_str(), l, c),
        (
            "rule `neg` can never match: `amount < 0` is never true",
            3,
            29
        )
    );
    assert_eq!(h.as_deref(), Some("the decoder rejects negative amounts"));
    for (src, message, help) in [
        (
            "rule r when -1 >= amount then block",
            "rule `r` can never match: `-1 >= amount` is never true",
            "the decoder rejects negative amounts",
        ),
        (
            "rule r when amount <= 0 and amount != 0 then block",
            "rule `r` can never match: `amount <= 0` and `amount != 0` are never both true",
            "the decoder rejects negative amounts",
        ),
        (
            "rule r when event_time < 0 then block",
            "rule `r` can never match: `event_time < 0` is never true",
            "the decoder accepts only event times after 1970 and up to the end of year 9999",
        ),
        (
            "rule r when hour(event_time) >= 24 then block",
            "rule `r` can never match: `hour(event_time) >= 24` is never true",
            "`hour` gives 0 to 23",
        ),
        (
            "rule r when len(ip) < 0 then block",
            "rule `r` can never match: `len(ip) < 0` is never true",
            "`len` is never negative",
        ),
        (
            "rule r when type == \"\" then block",
            "rule `r` can never match: `type == \"\"` is never true",
            "the decoder rejects events without `type` or `event_id`",
        ),
        (
            "rule r when currency == \"eur\" then block",
            "rule `r` can never match: `currency == \"eur\"` is never true",
            "the decoder accepts only currencies of three upper-case letters",
        ),
        (
            "rule r after amount < 0 expect type == \"capture\" with same txn_id within 1m then review",
            "rule `r` can never match: `amount < 0` is never true",
            "the decoder rejects negative amounts",
        ),
    ] {
        let (m, l, _, h) = one_warning(src);
        assert_eq!((m.as_str(), l, h.as_deref()), (message, 1, Some(help)), "{src}");
    }
}

#[test]
fn conditions_the_contract_allows_are_accepted() {
    for src in [
        "rule r when amount == 0 then review",
        "rule r when amount >= 0 and amount <= 0 then review",
        "rule r when amount < 0 or amount > 5 then review",
        "rule r when not amount < 0 then review",
        "rule r when hour(event_time) >= 23 and hour(event_time) <= 23 then review",
        "rule r when currency == \"EUR\" and currency != \"USD\" then review",
        "rule r when event_time > 1767225600000 then review",
    ] {
        assert_eq!(diagnostics(src), vec![], "{src}");
    }
}

#[test]
fn own_contradictions_stay_errors_even_where_the_contract_agrees() {
    let d = diagnostics("rule r when amount >= 0 and amount < 0 then block");
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(
        (d[0].0, d[0].1.as_str()),
        (
            Severity::Error,
            "rule `r` can never match: `amount >= 0` contradicts `amount < 0`"
        )
    );
    let d = diagnostics("rule r when attrs[\"k\"] == \"a\" and attrs[\"k\"] == \"b\" then block");
    assert_eq!(d[0].0, Severity::Error, "{d:#?}");
    let d = diagnostics("rule r when amount * 2 > 10 and amount * 2 < -1 then block");
    assert_eq!(
        d[0].1,
        "rule `r` can never match: `amount * 2 > 10` contradicts `amount * 2 < -1`"
    );
}

// ---------------------------------------------------------------- exact numbers

struct Features(Vec<Option<f64>>);

impl EvalContext for Features {
    fn feature(&self, slot: usize) -> Option<f64> {
        self.0.get(slot).copied().flatten()
    }
    fn has_tag(&self, _entity: Field, _value: &str, _tag: &str) -> bool {
        false
    }
}

fn hits(src: &str, ev: &PaymentEvent, features: Vec<Option<f64>>) -> Vec<String> {
    let report = compile(src);
    let rs = match report.ruleset {
        Some(rs) => rs,
        None => panic!("{}", report.render_human(false)),
    };
    let mut out = Evaluation::default();
    rs.evaluate(ev, &Features(features), &mut out);
    out.hits.iter().map(|h| h.rule.to_string()).collect()
}

fn payment(minor: i64, currency: &str) -> PaymentEvent {
    PaymentEvent {
        event_id: "e".into(),
        kind: "authorization".into(),
        event_time_ms: 1_000,
        amount_minor: Some(minor),
        currency: Some(currency.into()),
        ..Default::default()
    }
}

#[test]
fn money_arithmetic_gives_the_decimal_answer() {
    let src = "rule times when amount * 3 == 0.3 then review
rule plus when amount + 0.2 == 0.3 then review
rule minus when 0.3 - amount == 0.2 then review
rule ratio when amount / 3 * 3 == amount then review
rule ordered when amount * 3 <= 0.3 and amount * 3 >= 0.30 then review
rule binary_float_would_say when amount * 3 > 0.3 then review";
    // `ratio` does not match: a quotient is rounded to 28 digits (0.0333…3 * 3 = 0.0999…9).
    assert_eq!(
        hits(src, &payment(10, "EUR"), vec![]),
        vec!["times", "plus", "minus", "ordered"]
    );
    // Three decimals (KWD): 0.100 is the same amount as 0.1.
    assert_eq!(
        hits(src, &payment(100, "KWD"), vec![]),
        vec!["times", "plus", "minus", "ordered"]
    );
    // Whole-unit currency: 1 JPY.
    let yen = "rule r when amount * 0.1 == 0.1 and amount / 10 == 0.1 then review";
    assert_eq!(hits(yen, &payment(1, "JPY"), vec![]), vec!["r"]);
}

#[test]
fn sums_from_the_store_compare_as_decimals() {
    // The store reports a sum of 0.10 + 0.20 as k / 1e4 in f64; rules read 0.3 exactly.
    let src = "feature spent = sum(amount) by card_id over 1h
rule exact when spent == 0.3 and spent - amount == 0.2 then review
rule tripled when spent * 3 == 0.9 then review";
    let mut ev = payment(10, "EUR");
    ev.card_id = Some("c".into());
    assert_eq!(
        hits(src, &ev, vec![Some(3_000_f64 / 10_000.0)]),
        vec!["exact", "tripled"]
    );
    assert_eq!(hits(src, &ev, vec![None]), Vec::<String>::new());
}

#[test]
fn constant_folding_agrees_with_evaluation() {
    let report = compile("rule r when 0.1 + 0.2 == 0.3 and amount > 0 then review");
    assert!(report.diagnostics.is_empty(), "{:#?}", report.diagnostics);
    let report = compile("rule r when 0.1 + 0.2 != 0.3 then review");
    assert_eq!(
        report.diagnostics[0].message,
        "rule `r` can never match: its condition is always false"
    );
    assert_eq!(
        hits(
            "rule r when amount > 0.1 * 3 - 0.2 then review",
            &payment(11, "EUR"),
            vec![]
        ),
        vec!["r"]
    );
    assert_eq!(
        hits(
            "rule r when amount > 0.1 * 3 - 0.2 then review",
            &payment(10, "EUR"),
            vec![]
        ),
        Vec::<String>::new()
    );
}

#[test]
fn overflow_and_division_by_zero_are_missing() {
    let src = "rule big when amount * 99999999999999999999 * 99999999999999999999 > 0 then review
rule not_big when not amount * 99999999999999999999 * 99999999999999999999 > 0 then review
rule div when amount / (amount - amount) > 0 then review";
    assert_eq!(hits(src, &payment(10, "EUR"), vec![]), vec!["not_big"]);
}

#[test]
fn test_block_amounts_are_exact() {
    let report = compile(
        "rule r when amount == 0.1 then review
test \"t\" { event { type: \"a\", amount: 0.10, currency: \"EUR\" } expect review hits r }",
    );
    let rs = match report.ruleset {
        Some(rs) => rs,
        None => panic!("{}", report.render_human(false)),
    };
    assert_eq!(rs.tests()[0].events[0].amount_minor, Some(10));
    let d = diagnostics(
        "rule r when amount > 1 then review
test \"t\" { event { type: \"a\", amount: 0.105, currency: \"EUR\" } expect allow }
test \"u\" { event { type: \"a\", amount: -5, currency: \"EUR\" } expect allow }",
    );
    let d: Vec<(String, usize)> = d.into_iter().map(|d| (d.1, d.2)).collect();
    assert_eq!(
        d,
        vec![
            (
                "amount 0.105 has more decimals than its currency allows".to_string(),
                2
            ),
            ("amount -5 is negative".to_string(), 3)
        ]
    );
}

#[test]
fn literals_print_as_written_without_trailing_zeros() {
    let mut diags = Vec::new();
    let file = parser::parse(
        0,
        "rule r when amount >= 5000.00 and amount != 0.50 then review",
        &mut diags,
    );
    assert!(diags.is_empty());
    assert!(
        file.to_string()
            .contains("when amount >= 5000 and amount != 0.5"),
        "{file}"
    );
    let report = compile("rule r when amount > 1.5 then review");
    assert!(report.diagnostics.is_empty());
    let big = compile("rule r when amount > 123456789012345678901234567890 then review");
    assert_eq!(big.diagnostics[0].message, "number is too large");
}
