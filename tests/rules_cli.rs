//! `veto check` and `veto test` as a user runs them: warnings for rules that can never match,
//! located UTF-8 errors, and exact decimal arithmetic on amounts.

use std::path::Path;
use std::process::{Command, Output};

fn veto(args: &[&str], file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_veto"))
        .args(args)
        .arg(file)
        .output()
        .expect("run veto")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn rule_file(dir: &tempfile::TempDir, content: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join("r.veto");
    std::fs::write(&path, content).expect("write rule file");
    path
}

#[test]
fn check_prints_a_located_warning_for_a_rule_the_decoder_rules_out() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = rule_file(
        &dir,
        b"rule big when amount > 100 then review\n\nrule negative\n  when amount < 0\n  then block\n",
    );
    let out = veto(&["check"], &path);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout, "ok: 2 rules, 0 features, 0 lists\n");
    assert!(
        stderr.contains("rule `negative` can never match: `amount < 0` is never true"),
        "{stderr}"
    );
    assert!(stderr.contains("r.veto:4:8"), "{stderr}");
    assert!(
        stderr.contains("the decoder rejects negative amounts"),
        "{stderr}"
    );

    let out = veto(&["check", "--format", "json"], &path);
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("veto check --format json prints JSON");
    let d = &json["diagnostics"][0];
    assert_eq!(
        (
            d["severity"].as_str(),
            d["line"].as_u64(),
            d["col"].as_u64()
        ),
        (Some("warning"), Some(4), Some(8))
    );
}

#[test]
fn check_locates_invalid_utf8() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = rule_file(
        &dir,
        b"rule a when amount > 1 then review\nrule b when ip == \"\xc3\xa9\xfe\" then review\n",
    );
    let out = veto(&["check"], &path);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: {}:2:21: invalid UTF-8 (byte 0xFE)",
            path.display()
        )),
        "{stderr}"
    );
}

#[test]
fn veto_test_sees_exact_decimal_arithmetic_on_amounts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = rule_file(
        &dir,
        br#"rule tripled when amount * 3 == 0.3 then review, score 10
rule topped_up when amount + 0.2 == 0.3 then review, score 10

test "ten cents, tripled and topped up" {
  event { type: "authorization", card_id: "c1", amount: 0.10, currency: "EUR" }
  expect review hits tripled, topped_up score 20
}
"#,
    );
    let out = veto(&["test"], &path);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("test ten cents, tripled and topped up ... ok"),
        "{stdout}"
    );
    assert!(
        stdout.contains("rule tests: 1 passed; 0 failed"),
        "{stdout}"
    );
}
