//! Tests of the rule pipeline: each checker error class, evaluation semantics, and the shipped rule set.
//! (Over 800 lines: one test per checker error class plus the evaluation reference, kept together.)

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::*;
use crate::event::{Aggregate, Field, Outcome, PaymentEvent};

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")
}

fn compile(src: &str) -> CheckReport {
    compile_source("t.veto", src, &rules_dir())
}

/// `(message, line, col)` of every error.
fn errors(src: &str) -> Vec<(String, usize, usize)> {
    compile(src)
        .diagnostics
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| (d.message, d.line, d.col))
        .collect()
}

fn one_error(src: &str) -> (String, usize, usize, Option<String>) {
    let report = compile(src);
    let errs: Vec<&Diagnostic> = report
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    assert_eq!(errs.len(), 1, "{:#?}", report.diagnostics);
    assert!(report.ruleset.is_none());
    let d = errs[0];
    (d.message.clone(), d.line, d.col, d.help.clone())
}

// ---------------------------------------------------------------- checker error classes

#[test]
fn unknown_field_suggests_the_closest_name() {
    let (m, l, c, h) = one_error("rule r when crad_id == \"x\" then block");
    assert_eq!(
        (m.as_str(), l, c),
        ("unknown field or feature `crad_id`", 1, 13)
    );
    assert_eq!(h.as_deref(), Some("did you mean `card_id`?"));
    let (m, l, c, h) =
        one_error("feature f = count() by card over 1h\nrule r when f > 1 then block");
    assert_eq!((m.as_str(), l, c), ("unknown field `card`", 1, 24));
    assert_eq!(h.as_deref(), Some("did you mean `card_id`?"));
}

#[test]
fn unknown_feature_and_list_suggest() {
    let src =
        "feature card_auths = count() by card_id over 1h\nrule r when card_auth > 1 then block";
    let (m, l, c, h) = one_error(src);
    assert_eq!(
        (m.as_str(), l, c),
        ("unknown field or feature `card_auth`", 2, 13)
    );
    assert_eq!(h.as_deref(), Some("did you mean `card_auths`?"));
    let src = "list bad_cards = [\"a\"]\nrule r when card_id in bad_card then block";
    let (m, l, c, h) = one_error(src);
    assert_eq!((m.as_str(), l, c), ("unknown list `bad_card`", 2, 24));
    assert_eq!(h.as_deref(), Some("did you mean `bad_cards`?"));
}

#[test]
fn type_mismatch_names_both_types() {
    let (m, l, c, _) = one_error("rule r when amount > \"5000\" then block");
    assert_eq!(
        (m.as_str(), l, c),
        (
            "type mismatch: `amount` is a number, `\"5000\"` is a string",
            1,
            22
        )
    );
    let (m, _, _, _) = one_error("rule r when amount in [\"a\"] then block");
    assert_eq!(
        m,
        "type mismatch: `amount` is a number, the list holds strings"
    );
    let (m, _, _, _) = one_error("rule r when amount + card_id > 1 then block");
    assert_eq!(m, "`+` needs a number; `card_id` is a string");
    let (m, _, _, _) = one_error("rule r when amount then block");
    assert_eq!(
        m,
        "a rule condition must be a condition; `amount` is a number"
    );
}

#[test]
fn duplicate_names_point_at_the_first_definition() {
    let (m, l, c, h) =
        one_error("rule r when amount > 1 then block\nrule r when amount > 2 then block");
    assert_eq!((m.as_str(), l, c), ("duplicate rule `r`", 2, 6));
    assert_eq!(h.as_deref(), Some("first defined on line 1"));
    let src = "feature f = count() by card_id over 1h\nfeature f = count() by user_id over 1h\nrule r when f > 1 then block";
    let (m, l, c, _) = one_error(src);
    assert_eq!((m.as_str(), l, c), ("duplicate feature `f`", 2, 9));
    let (m, l, c, _) =
        one_error("list a = [\"x\"]\nlist a = [\"y\"]\nrule r when ip in a then block");
    assert_eq!((m.as_str(), l, c), ("duplicate list `a`", 2, 6));
}

#[test]
fn window_outside_range() {
    let src = "feature f = count() by card_id over 91d\nrule r when f > 1 then block";
    let (m, l, c, _) = one_error(src);
    assert_eq!(
        (m.as_str(), l, c),
        ("window 91d is outside 1ms..90d", 1, 37)
    );
    let src = "feature f = count() by card_id over 0s\nrule r when f > 1 then block";
    assert_eq!(one_error(src).0, "window 0s is outside 1ms..90d");
}

#[test]
fn every_must_divide_the_window() {
    let src = "feature f = count() by card_id over 1h every 7m\nrule r when f > 1 then block";
    let (m, l, c, _) = one_error(src);
    assert_eq!(
        (m.as_str(), l, c),
        ("`every 7m` does not divide the window 1h", 1, 46)
    );
}

#[test]
fn every_may_not_split_the_window_into_too_many_buckets() {
    let src = "feature f = count() by card_id over 90d every 1ms\nrule r when f > 1 then block";
    let (m, l, c, _) = one_error(src);
    assert_eq!(
        (m.as_str(), l, c),
        (
            "`every 1ms` splits the window 90d into 7776000000 buckets, more than 3600",
            1,
            47
        )
    );
    // an hour of seconds is the most
    let ok = "feature f = count() by card_id over 1h every 1s\nrule r when f > 1 then block";
    assert!(errors(ok).is_empty(), "{:?}", errors(ok));
}

#[test]
fn exponents_and_digit_separators_are_named_without_a_cascade() {
    for (src, message) in [
        (
            "rule r when amount > 1e6 then block",
            "`1e6` is not a number here",
        ),
        (
            "rule r when amount > 5_000 then block",
            "`5_000` is not a number here",
        ),
        (
            "rule r when amount > 5xy then block",
            "unknown duration unit `xy`",
        ),
    ] {
        let (m, l, _, _) = one_error(src);
        assert_eq!((m.as_str(), l), (message, 1), "{src}");
    }
}

#[test]
fn a_list_file_must_be_a_regular_file() {
    let src = "list l from \"/dev/zero\"\nrule r when card_id in l then block";
    let (m, l, c, _) = one_error(src);
    assert_eq!(
        (m.as_str(), l, c),
        (
            "cannot read list file `/dev/zero`: not a regular file",
            1,
            13
        )
    );
}

#[test]
fn invalid_regex() {
    let (m, l, c, _) = one_error("rule r when card_id matches \"(\" then block");
    assert_eq!((m.as_str(), l, c), ("invalid regex: unclosed group", 1, 29));
    // Size-limited: a pattern that would compile to a huge automaton is rejected.
    let (m, _, _, _) = one_error("rule r when card_id matches \"\\\\w{1000}{1000}\" then block");
    assert!(m.starts_with("invalid regex: "), "{m}");
}

#[test]
fn missing_list_file() {
    let (m, l, c, h) = one_error("list l from \"lists/nope.txt\"\nrule r when ip in l then block");
    assert_eq!(
        (m.as_str(), l, c),
        ("list file `lists/nope.txt` not found", 1, 13)
    );
    assert!(h.is_some_and(|h| h.starts_with("looked for ")));
}

#[test]
fn decide_lines_unreachable_or_out_of_order() {
    let (m, l, c, _) = one_error("decide review when score >= 50\ndecide block when score >= 80");
    assert_eq!(
        (m.as_str(), l, c),
        ("unreachable `decide` line: score >= 80 is already decided by `decide review when score >= 50` above", 2, 1)
    );
    let (m, l, c, _) = one_error("decide review when score >= 80\ndecide block when score >= 50");
    assert_eq!(
        (m.as_str(), l, c),
        ("`decide` lines out of order: `block` at score >= 50 is more severe than `review` at score >= 80 above it", 2, 1)
    );
}

#[test]
fn statically_never_matching_rules() {
    let (m, l, c, _) = one_error("rule r when amount > 5 and amount < 3 then block");
    assert_eq!(
        (m.as_str(), l, c),
        (
            "rule `r` can never match: `amount > 5` contradicts `amount < 3`",
            1,
            28
        )
    );
    let (m, _, _, _) =
        one_error("rule r when type == \"a\" and ip != \"x\" and type == \"b\" then block");
    assert_eq!(
        m,
        "rule `r` can never match: `type == \"a\"` contradicts `type == \"b\"`"
    );
    let (m, _, _, _) = one_error("rule r when amount >= 3 and 3 > amount then block");
    assert_eq!(
        m,
        "rule `r` can never match: `amount >= 3` contradicts `3 > amount`"
    );
    let (m, _, _, _) = one_error("rule r when 1 > 2 or \"a\" == \"b\" then block");
    assert_eq!(m, "rule `r` can never match: its condition is always false");
    // Satisfiable combinations are accepted.
    assert!(
        errors("rule r when amount >= 3 and amount <= 3 and type == \"a\" then block").is_empty()
    );
}

#[test]
fn unused_features_and_lists_are_warnings() {
    let report = compile("feature f = count() by card_id over 1h\nlist l = [\"a\"]\nrule r when amount > 1 then block");
    assert!(report.ruleset.is_some());
    let w: Vec<(String, usize, usize)> = report
        .diagnostics
        .iter()
        .map(|d| {
            assert_eq!(d.severity, Severity::Warning);
            (d.message.clone(), d.line, d.col)
        })
        .collect();
    assert_eq!(
        w,
        vec![
            ("feature `f` is never used".to_string(), 1, 9),
            ("list `l` is never used".to_string(), 2, 6)
        ]
    );
}

#[test]
fn parse_errors_name_expected_and_found() {
    let (m, l, c, _) = one_error("rule r when amount > then block");
    assert_eq!(
        (m.as_str(), l, c),
        ("expected an expression, found `then`", 1, 22)
    );
    let (m, _, _, h) = one_error("rule r when amount = 5 then block");
    assert_eq!(m, "`=` is not a comparison");
    assert_eq!(h.as_deref(), Some("compare with `==`"));
}

#[test]
fn every_error_in_a_file_is_reported() {
    let src = "rule a when crad_id == \"x\" then block\nrule b when amount > \"1\" then block\nrule c when amount > then block\nfeature f = cnt() by card_id over 1h\ndecide blok when score >= 1";
    let e = errors(src);
    let lines: Vec<usize> = e.iter().map(|x| x.1).collect();
    assert_eq!(lines, vec![1, 2, 3, 4, 5], "{e:#?}");
    assert_eq!(e[3].0, "unknown aggregate `cnt`");
    assert_eq!(e[4].0, "unknown outcome `blok`");
}

#[test]
fn other_checks() {
    assert_eq!(
        one_error("rule r when amount > 1 then block, score 5000").0,
        "score 5000 is outside -1000..1000"
    );
    assert_eq!(
        one_error("rule r when amount > 1 then block, review").0,
        "rule `r` has more than one outcome"
    );
    assert_eq!(
        one_error("feature f = sum(card_id) by user_id over 1h\nrule r when f > 1 then block").0,
        "`sum` needs a numeric field; `card_id` is a string"
    );
    assert_eq!(
        one_error("feature g = count() by user_id over 1h\nfeature f = count() by user_id over 1h where g > 1\nrule r when f > 1 then block").0,
        "a `where` filter cannot read feature `g`"
    );
    assert_eq!(
        one_error("rule s after type == \"a\" expect type == \"b\" with same txn_id within 2s then review, tag user_id \"x\" for 1d").0,
        "sequence rules cannot set tags"
    );
    assert_eq!(
        one_error("rule r when lowr(ip) == \"a\" then block").0,
        "unknown function `lowr`"
    );
    assert_eq!(
        one_error("rule r when ip < \"a\" then block").0,
        "`<` compares numbers; `ip` and `\"a\"` are strings"
    );
    assert_eq!(
        one_error("rule r when amount > 1 then block\ntest \"t\" { event { type: \"a\" } expect block hits q }").0,
        "unknown rule `q`"
    );
}

// ---------------------------------------------------------------- evaluation semantics

#[derive(Default)]
struct FixedContext {
    features: Vec<Option<f64>>,
    tags: HashSet<(Field, String, String)>,
}

impl EvalContext for FixedContext {
    fn feature(&self, slot: usize) -> Option<f64> {
        self.features.get(slot).copied().flatten()
    }
    fn has_tag(&self, entity: Field, value: &str, tag: &str) -> bool {
        self.tags
            .contains(&(entity, value.to_string(), tag.to_string()))
    }
}

fn ruleset(src: &str) -> RuleSet {
    let report = compile(src);
    match report.ruleset {
        Some(r) => r,
        None => panic!("{}", report.render_human(false)),
    }
}

fn auth(amount_minor: i64) -> PaymentEvent {
    PaymentEvent {
        event_id: "e1".into(),
        kind: "authorization".into(),
        event_time_ms: 1_000,
        card_id: Some("c1".into()),
        user_id: Some("u1".into()),
        amount_minor: Some(amount_minor),
        currency: Some("EUR".into()),
        ..Default::default()
    }
}

#[test]
fn outcome_is_max_of_hits_and_first_threshold_met() {
    let rs = ruleset(
        "rule a when amount > 1 then review, score 30\nrule b when amount > 2 then score 30\nrule c when amount > 100 then challenge\ndecide block when score >= 80\ndecide review when score >= 50\n",
    );
    let ctx = FixedContext::default();
    let mut out = Evaluation::default();
    rs.evaluate(&auth(150), &ctx, &mut out);
    assert_eq!((out.outcome, out.score), (Outcome::Review, 30));
    rs.evaluate(&auth(250), &ctx, &mut out);
    assert_eq!((out.outcome, out.score), (Outcome::Review, 60));
    let names: Vec<&str> = out.hits.iter().map(|h| h.rule.as_ref()).collect();
    assert_eq!(names, vec!["a", "b"]);
    assert_eq!(out.hits[1].outcome, Outcome::Allow);
    rs.evaluate(&auth(20_000), &ctx, &mut out);
    assert_eq!((out.outcome, out.score), (Outcome::Challenge, 60));
    assert_eq!(out.hits.len(), 3);
}

#[test]
fn missing_fields_make_comparisons_false_and_not_true() {
    let rs = ruleset("rule eq when ip == \"1.2.3.4\" then review\nrule ne when ip != \"1.2.3.4\" then review\nrule neg when not ip == \"1.2.3.4\" then review\nrule feat when f < 1 then review\nfeature f = count() by ip over 1h");
    let mut out = Evaluation::default();
    rs.evaluate(&auth(100), &FixedContext::default(), &mut out);
    let names: Vec<&str> = out.hits.iter().map(|h| h.rule.as_ref()).collect();
    assert_eq!(names, vec!["neg"]);
}

#[test]
fn lists_tags_and_type_index() {
    let rs = ruleset(
        "list cards = [\"c1\", \"c2\"]\nrule in_list when type == \"authorization\" and card_id in cards then review\nrule tagged when user_id has tag \"vip\" then score 5\nrule refund_only when type == \"refund\" then block\nrule tagger when type in [\"authorization\", \"capture\"] and amount > 1 then tag card_id \"seen\" for 1h",
    );
    let mut ctx = FixedContext::default();
    let mut out = Evaluation::default();
    rs.evaluate(&auth(500), &ctx, &mut out);
    let names: Vec<&str> = out.hits.iter().map(|h| h.rule.as_ref()).collect();
    assert_eq!(names, vec!["in_list", "tagger"]);
    assert_eq!(out.rules_visited, 3, "the refund rule is not visited");
    assert_eq!(out.tags.len(), 1);
    assert_eq!(out.tags[0].value, "c1");
    assert_eq!(out.tags[0].expires_at_ms, Some(1_000 + 3_600_000));
    ctx.tags.insert((Field::UserId, "u1".into(), "vip".into()));
    rs.evaluate(&auth(500), &ctx, &mut out);
    assert_eq!(out.hits.len(), 3);
    assert_eq!(out.score, 5);
    let mut other = auth(500);
    other.kind = "login".into();
    rs.evaluate(&other, &ctx, &mut out);
    assert_eq!(out.rules_visited, 1);
    let all = rs.without_type_index();
    all.evaluate(&other, &ctx, &mut out);
    assert_eq!(out.rules_visited, 4);
}

#[test]
fn sequences_arm_cancel_and_time_out() {
    let rs = ruleset("rule s after type == \"authorization\" expect type == \"capture\" with same txn_id within 2s then review, score 60\ndecide block when score >= 50");
    let mut out = Evaluation::default();
    let ctx = FixedContext::default();
    let mut ev = auth(100);
    rs.evaluate(&ev, &ctx, &mut out);
    assert!(out.arm.is_empty(), "no txn_id, nothing to correlate");
    ev.txn_id = Some("t1".into());
    rs.evaluate(&ev, &ctx, &mut out);
    assert_eq!(
        out.arm,
        vec![ArmTimer {
            sequence: 0,
            correlate: Field::TxnId,
            within_ms: 2000
        }]
    );
    assert_eq!(out.arm[0].key(&ev), "t1");
    ev.kind = "capture".into();
    rs.evaluate(&ev, &ctx, &mut out);
    assert_eq!(
        out.cancel,
        vec![CancelTimer {
            sequence: 0,
            correlate: Field::TxnId,
        }]
    );
    assert_eq!(out.cancel[0].key(&ev), "t1");
    let (outcome, score, hits) = rs.timeout_decision(0);
    assert_eq!((outcome, score, hits.len()), (Outcome::Block, 60, 1));
    assert_eq!(rs.sequences()[0].correlate, Field::TxnId);
}

#[test]
fn feature_defs_and_fingerprints() {
    let src = "feature a = sum(amount) by card_id over 1h where type == \"authorization\"\nfeature b = distinct(ip) by user_id over 10m every 1m\nrule r when a > b then block";
    let rs = ruleset(src);
    let f = &rs.features()[0];
    assert_eq!(
        (f.agg, f.value, f.by, f.window_ms, f.resolution_ms),
        (
            Aggregate::Sum,
            Some(Field::Amount),
            Field::CardId,
            3_600_000,
            60_000
        )
    );
    assert!(f.applies(&auth(1)));
    let mut refund = auth(1);
    refund.kind = "refund".into();
    assert!(!f.applies(&refund));
    assert_eq!(rs.features()[1].resolution_ms, 60_000);
    // Same definition, other name and layout: same fingerprint; other window: different.
    let rs2 = ruleset("feature x =   sum(amount)  by card_id over 60m where type==\"authorization\"\nrule r when x > 1 then block");
    assert_eq!(rs2.features()[0].fingerprint, f.fingerprint);
    let rs3 = ruleset("feature x = sum(amount) by card_id over 2h where type == \"authorization\"\nrule r when x > 1 then block");
    assert_ne!(rs3.features()[0].fingerprint, f.fingerprint);
}

#[test]
fn version_is_explicit_or_a_content_hash() {
    assert_eq!(
        ruleset("version \"v7\"\nrule r when amount > 1 then block")
            .version()
            .as_ref(),
        "v7"
    );
    let a = ruleset("rule r when amount > 1 then block");
    let b = ruleset("rule r when amount > 1 then block");
    let c = ruleset("rule r when amount > 2 then block");
    assert_eq!(a.version(), b.version());
    assert_ne!(a.version(), c.version());
}

#[test]
fn expected_decision_mismatch_explains() {
    let want = ExpectedDecision {
        outcome: Outcome::Review,
        hits: vec!["a".into()],
        score: Some(30),
    };
    let hit = crate::event::RuleHit {
        rule: "a".into(),
        outcome: Outcome::Review,
        score: 30,
    };
    assert_eq!(
        want.mismatch(Outcome::Review, 30, std::slice::from_ref(&hit)),
        None
    );
    assert_eq!(
        want.mismatch(Outcome::Block, 30, &[]).as_deref(),
        Some("expected review hits [a] score 30, got block hits [] score 30")
    );
}

#[test]
fn ruleset_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<RuleSet>();
}

// ---------------------------------------------------------------- shipped rule set

#[test]
fn shipped_rules_check_clean() {
    let report = load(&[rules_dir()]);
    assert!(!report.has_errors(), "{}", report.render_human(false));
    assert!(
        report.diagnostics.is_empty(),
        "{}",
        report.render_human(false)
    );
    let rs = report
        .ruleset
        .as_ref()
        .map(|r| (r.rules().len() + r.sequences().len(), r.features().len()));
    let Some((rules, features)) = rs else {
        panic!("no ruleset")
    };
    assert!(rules >= 40, "{rules} rules");
    assert!(features >= 8);
    assert!(
        report.summary().ends_with("features, 8 lists"),
        "{}",
        report.summary()
    );
}

/// A naive reference of the feature semantics of docs/semantics.md ("Feature windows"), recomputed from the whole history.
struct Reference {
    /// `(feature slot, entity value)` -> newest event time seen.
    newest: HashMap<(usize, String), i64>,
    /// Events counted, in arrival order.
    counted: Vec<Counted>,
}

/// One counted event: `(slot, entity, time, numeric value, string value)`.
type Counted = (usize, String, i64, Option<f64>, Option<String>);

impl Reference {
    fn new() -> Reference {
        Reference {
            newest: HashMap::new(),
            counted: Vec::new(),
        }
    }

    fn bucket(t: i64, r: u64) -> i64 {
        t.div_euclid(r as i64)
    }

    fn in_window(def: &FeatureDef, t: i64, newest: i64) -> bool {
        let r = def.resolution_ms;
        Reference::bucket(t, r) > Reference::bucket(newest, r) - (def.window_ms / r) as i64
    }

    fn observe(&mut self, defs: &[FeatureDef], ev: &PaymentEvent) {
        for (slot, def) in defs.iter().enumerate() {
            let Some(entity) = ev.str_field(def.by) else {
                continue;
            };
            let key = (slot, entity.to_string());
            let newest = self.newest.entry(key).or_insert(i64::MIN);
            *newest = (*newest).max(ev.event_time_ms);
            let newest = *newest;
            if def.applies(ev) && ev.event_time_ms > newest - def.window_ms as i64 {
                let (num, text) = match def.value {
                    Some(f) if f.is_numeric() => (ev.num_field(f), None),
                    Some(f) => (None, ev.str_field(f).map(str::to_string)),
                    None => (None, None),
                };
                self.counted
                    .push((slot, entity.to_string(), ev.event_time_ms, num, text));
            }
        }
    }

    fn value(&self, defs: &[FeatureDef], slot: usize, ev: &PaymentEvent) -> Option<f64> {
        let def = &defs[slot];
        let entity = ev.str_field(def.by)?;
        let newest = *self.newest.get(&(slot, entity.to_string()))?;
        let rows: Vec<_> = self
            .counted
            .iter()
            .filter(|(s, e, t, _, _)| {
                *s == slot && e == entity && Reference::in_window(def, *t, newest)
            })
            .collect();
        let nums: Vec<f64> = rows.iter().filter_map(|r| r.3).collect();
        match def.agg {
            Aggregate::Count => Some(rows.len() as f64),
            Aggregate::Sum => Some(nums.iter().sum()),
            Aggregate::Avg => {
                (!nums.is_empty()).then(|| nums.iter().sum::<f64>() / nums.len() as f64)
            }
            Aggregate::Min => nums.iter().copied().reduce(f64::min),
            Aggregate::Max => nums.iter().copied().reduce(f64::max),
            Aggregate::Last => nums.last().copied(),
            Aggregate::Distinct => Some(
                rows.iter()
                    .filter_map(|r| r.4.as_ref())
                    .collect::<HashSet<_>>()
                    .len() as f64,
            ),
        }
    }
}

struct ReferenceContext<'a> {
    values: Vec<Option<f64>>,
    tags: &'a BTreeMap<(Field, String, String), i64>,
    now: i64,
}

impl EvalContext for ReferenceContext<'_> {
    fn feature(&self, slot: usize) -> Option<f64> {
        self.values.get(slot).copied().flatten()
    }
    fn has_tag(&self, entity: Field, value: &str, tag: &str) -> bool {
        self.tags
            .get(&(entity, value.to_string(), tag.to_string()))
            .is_some_and(|expires| self.now < *expires)
    }
}

/// Runs one in-file test against the reference semantics; returns a failure description.
fn run_reference(rs: &RuleSet, test: &RuleTest) -> Result<(), String> {
    let mut reference = Reference::new();
    let mut tags = BTreeMap::new();
    let mut pending: HashSet<(usize, String)> = HashSet::new();
    let mut out = Evaluation::default();
    for ev in &test.events {
        reference.observe(rs.features(), ev);
        let values = (0..rs.features().len())
            .map(|s| reference.value(rs.features(), s, ev))
            .collect();
        let ctx = ReferenceContext {
            values,
            tags: &tags,
            now: ev.event_time_ms,
        };
        rs.evaluate(ev, &ctx, &mut out);
        for t in &out.tags {
            tags.insert(
                (t.entity, t.value.clone(), t.tag.clone()),
                t.expires_at_ms.unwrap_or(i64::MAX),
            );
        }
        for c in &out.cancel {
            pending.remove(&(c.sequence, c.key(ev).to_string()));
        }
        for a in &out.arm {
            pending.insert((a.sequence, a.key(ev).to_string()));
        }
    }
    if let Some(m) = test.expect.mismatch(out.outcome, out.score, &out.hits) {
        return Err(format!("last event: {m}"));
    }
    for t in &test.timeouts {
        if !pending.iter().any(|(s, _)| *s == t.sequence) {
            return Err(format!("no pending timer of `{}`", t.rule));
        }
        let (outcome, score, hits) = rs.timeout_decision(t.sequence);
        if let Some(m) = t.expect.mismatch(outcome, score, &hits) {
            return Err(format!("timeout of `{}`: {m}", t.rule));
        }
    }
    Ok(())
}

#[test]
fn shipped_rule_tests_pass_against_the_reference_semantics() {
    let report = load(&[rules_dir()]);
    let Some(rs) = report.ruleset else {
        panic!("{}", report.render_human(false))
    };
    assert!(rs.tests().len() >= 10);
    let failures: Vec<String> = rs
        .tests()
        .iter()
        .filter_map(|t| {
            run_reference(&rs, t)
                .err()
                .map(|e| format!("{} (line {}): {e}", t.name, t.line))
        })
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn reference_window_membership_at_bucket_boundaries() {
    // 10m window, r = 10s: at T, an event at t counts iff floor(t/r) > floor(T/r) - 60.
    let rs = ruleset("feature f = count() by card_id over 10m\nrule r when f > 100 then block");
    let defs = rs.features();
    let mut reference = Reference::new();
    let mut at = |t: i64| {
        let mut e = auth(100);
        e.event_time_ms = t;
        reference.observe(defs, &e);
        reference.value(defs, 0, &e)
    };
    assert_eq!(at(0), Some(1.0));
    assert_eq!(at(9_999), Some(2.0));
    // T = 600_000: floor(T/r) - 60 = 0, bucket 0 (t = 0 and 9_999) is out.
    assert_eq!(at(600_000), Some(1.0));
    // An event older than T - window is counted nowhere.
    assert_eq!(at(-1), Some(1.0));
}

#[test]
fn longest_accepted_chains_compile_and_evaluate_without_overflow() {
    let ands = format!(
        "rule a when amount > 0{} then review",
        " and amount > 0".repeat(120)
    );
    let ors = format!(
        "rule o when ip == \"x\"{} then review",
        " or ip == \"x\"".repeat(120)
    );
    let sum = format!(
        "rule s when amount{} > 0 then review",
        " + amount".repeat(250)
    );
    let rs = ruleset(&format!("{ands}\n{ors}\n{sum}"));
    let mut out = Evaluation::default();
    rs.evaluate(&auth(100), &FixedContext::default(), &mut out);
    let names: Vec<&str> = out.hits.iter().map(|h| h.rule.as_ref()).collect();
    assert_eq!(names, vec!["a", "s"]);
}

#[test]
fn run_check_exit_codes() {
    assert_eq!(run_check(&[rules_dir()], false), 0);
    assert_eq!(run_check(&[rules_dir()], true), 0);
    let broken =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rules_corpus/02_type_mismatch.veto");
    assert_eq!(run_check(std::slice::from_ref(&broken), false), 1);
    assert_eq!(run_check(&[broken], true), 1);
    assert_eq!(
        run_check(&[rules_dir().join("no_such_file.veto")], false),
        1
    );
}

/// Pieces of the rule language (and some that are not), for the fuzz test below.
const FRAGMENTS: &[&str] = &[
    "rule ",
    "feature ",
    "list ",
    "decide ",
    "test ",
    "version ",
    "when ",
    "then ",
    "and ",
    "or ",
    "not ",
    "(",
    ")",
    "[",
    "]",
    ",",
    "==",
    "!=",
    ">",
    ">=",
    "<",
    "in ",
    "has tag ",
    "matches ",
    "\"x\"",
    "\"authorization\"",
    "/a+(/",
    "/^[a-z]+$/",
    "1.5",
    "-3",
    "99999999999999999999",
    "amount",
    "type",
    "card_id",
    "user_id",
    "count()",
    "sum(amount)",
    "distinct(device_id)",
    " by ",
    " over ",
    "10m",
    "1h",
    "0s",
    " where ",
    "block",
    "review",
    "allow",
    "challenge",
    ", score ",
    ", tag ",
    " for ",
    "7d",
    "after ",
    "expect ",
    " with same ",
    "within ",
    "2s",
    "event ",
    "expect allow",
    "\n",
    "\n  ",
    " ",
    "#",
    "\"",
    "é",
    "\u{0}",
    "card_auths_10m",
];

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::fuzz_cases(256)))]

    /// Any text, however broken, gives a report (and renders), never a panic.
    #[test]
    fn fragment_soup_never_panics(picks in proptest::collection::vec(0..FRAGMENTS.len(), 0..80)) {
        let text: String = picks.iter().map(|&i| FRAGMENTS[i]).collect();
        let report = compile_source("fuzz.veto", &text, Path::new("."));
        let _ = report.render_human(false);
    }

    /// The shipped rule file with a random slice replaced by a random fragment.
    #[test]
    fn mutated_shipped_rules_never_panic(
        at in 0.0f64..1.0,
        len in 0usize..40,
        pick in 0..FRAGMENTS.len(),
    ) {
        let shipped = std::fs::read_to_string(rules_dir().join("payments.veto")).unwrap_or_default();
        let mut start = ((shipped.len() as f64) * at) as usize;
        while !shipped.is_char_boundary(start) { start -= 1; }
        let mut end = (start + len).min(shipped.len());
        while !shipped.is_char_boundary(end) { end -= 1; }
        let text = format!("{}{}{}", &shipped[..start], FRAGMENTS[pick], &shipped[end..]);
        let report = compile_source("mutated.veto", &text, &rules_dir());
        let _ = report.render_human(false);
    }
}
