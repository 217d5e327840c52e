//! `veto demo` as a user runs it: the real binary, embedded broker, synthetic payments; within a
//! few seconds the live summary shows decisions of every outcome.

use std::process::Command;

#[test]
fn demo_shows_every_outcome_within_seconds() {
    let output = Command::new(env!("CARGO_BIN_EXE_veto"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["demo", "--seconds", "12", "--listen", "127.0.0.1:0"])
        .output()
        .expect("run veto demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.contains("decisions") && l.contains("allow"))
        .unwrap_or_else(|| panic!("no summary line in: {stdout}"));
    for outcome in ["allow", "review", "challenge", "block"] {
        let count: u64 = last
            .split(&format!("{outcome} "))
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(count > 0, "no {outcome} decision in: {last}");
    }
    assert!(stdout.contains("events decided"), "{stdout}");
}
