//! `veto test`: runs the in-file `test` blocks of a rule set through the real engine core
//! (a fresh tag store per test, timers in event time) and reports expected vs got.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::decider::{Engine, EventTimeTimers};
use crate::rules::{RuleSet, RuleTest};
use crate::store::{StoreConfig, TagStore};

/// Loads rule files, runs every test block, prints a report; exit code 0 when all pass.
pub fn run_tests(paths: &[PathBuf]) -> i32 {
    let report = crate::rules::load(paths);
    if report.has_errors() {
        eprint!("{}", report.render_human(true));
        return 1;
    }
    let Some(rules) = report.ruleset else {
        eprintln!("error: no rule set was produced");
        return 1;
    };
    let rules = Arc::new(rules);
    let (mut passed, mut failed) = (0usize, 0usize);
    for test in rules.tests() {
        match run_one(&rules, test) {
            Ok(()) => {
                passed += 1;
                println!("test {} ... ok", test.name);
            }
            Err(why) => {
                failed += 1;
                println!(
                    "test {} ... FAILED ({}:{})\n  {why}",
                    test.name, test.file, test.line
                );
            }
        }
    }
    println!("rule tests: {passed} passed; {failed} failed");
    i32::from(failed > 0)
}

/// Runs a rule set's own tests, in parallel (each on its own in-memory store); returns one
/// line per failing test, in file order (empty when all pass).
pub fn failures(rules: &Arc<RuleSet>) -> Vec<String> {
    failures_unless(rules, &AtomicBool::new(false)).unwrap_or_default()
}

/// [`failures`], abandoned once `cancelled` is set: tests not yet started are skipped and
/// `None` comes back (a reload past its deadline stops here instead of finishing every test).
pub fn failures_unless(rules: &Arc<RuleSet>, cancelled: &AtomicBool) -> Option<Vec<String>> {
    use rayon::prelude::*;
    let failures: Vec<String> = rules
        .tests()
        .par_iter()
        .filter_map(|t| {
            if cancelled.load(Ordering::Relaxed) {
                return None;
            }
            run_one(rules, t)
                .err()
                .map(|why| format!("{}:{}: test {}: {why}", t.file, t.line, t.name))
        })
        .collect();
    (!cancelled.load(Ordering::Relaxed)).then_some(failures)
}

/// Runs one test block; `Err` explains the mismatch (expected vs got and the rules that matched).
pub fn run_one(rules: &Arc<RuleSet>, test: &RuleTest) -> Result<(), String> {
    let store = TagStore::open(StoreConfig {
        data_dir: std::path::PathBuf::from("/veto-test-scratch"),
        in_memory: true,
        ..StoreConfig::default()
    })
    .map_err(|e| format!("cannot open a scratch store: {e}"))?;
    let timers = Arc::new(EventTimeTimers::default());
    let engine = Engine::new(rules.clone(), Arc::new(store), timers.clone());
    let mut last = None;
    for event in &test.events {
        // Timers whose deadline passed fire before the event that reveals it.
        timers.due(event.event_time_ms);
        last = Some(engine.decide(event, event.event_time_ms).decision);
    }
    let Some(last) = last else {
        return Err("the test has no events".into());
    };
    if let Some(why) = test.expect.mismatch(last.outcome, last.score, &last.hits) {
        return Err(why);
    }
    let pending = timers.due(i64::MAX);
    for expected in &test.timeouts {
        let Some(timer) = pending.iter().find(|t| *t.rule == *expected.rule) else {
            return Err(format!(
                "expected a pending timer of `{}`, none is armed",
                expected.rule
            ));
        };
        let decision = engine
            .timeout_decision(&timer.rule, timer.event_id.clone(), timer.txn_id.clone(), 0)
            .ok_or_else(|| format!("sequence rule `{}` not found", expected.rule))?;
        if let Some(why) =
            expected
                .expect
                .mismatch(decision.outcome, decision.score, &decision.hits)
        {
            return Err(format!("timeout of `{}`: {why}", expected.rule));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Arc<RuleSet> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        let report = crate::rules::load(&[dir]);
        assert!(!report.has_errors(), "{}", report.render_human(false));
        Arc::new(report.ruleset.expect("rule set"))
    }

    #[test]
    fn shipped_rule_tests_pass_on_the_real_store() {
        let rules = shipped();
        assert!(rules.tests().len() >= 5, "the shipped set carries tests");
        assert_eq!(failures(&rules), Vec::<String>::new());
    }

    #[test]
    fn a_wrong_expectation_is_reported_with_expected_and_got() {
        let src = r#"
feature card_auths_10m = count() by card_id over 10m where type == "authorization"
rule velocity when card_auths_10m > 2 then review, score 10
test "third auth" {
  event { type: "authorization", card_id: "c1", at: 0s }
  event { type: "authorization", card_id: "c1", at: 1s }
  event { type: "authorization", card_id: "c1", at: 2s }
  expect block hits velocity
}
"#;
        let report = crate::rules::compile_source("t.veto", src, std::path::Path::new("."));
        assert!(!report.has_errors(), "{}", report.render_human(false));
        let rules = Arc::new(report.ruleset.expect("rule set"));
        let failures = failures(&rules);
        assert_eq!(failures.len(), 1);
        assert!(
            failures[0].contains("expected block hits [velocity]")
                && failures[0].contains("got review hits [velocity] score 10"),
            "{}",
            failures[0]
        );
    }
}
