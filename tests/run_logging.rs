//! `veto run` logs as its config's `[telemetry]` says, and the `--log-*` flags win over it.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{sigterm_and_wait, start_mock_broker, wait_for_log, Killed};

/// A config logging JSON at debug level, checkpointing every second (each checkpoint logs a
/// debug line).
fn json_debug_config(dir: &Path, brokers: &str) -> PathBuf {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/payments.veto");
    let config = dir.join("veto.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"logging\"\n\n[rules]\npaths = [{rules:?}]\n\n\
             [store]\ndata_dir = {:?}\ncheckpoint_interval = \"1s\"\n\n\
             [telemetry]\nlisten = \"127.0.0.1:0\"\nlog_format = \"json\"\nlog_level = \"veto=debug\"\n",
            dir.join("state")
        ),
    )
    .expect("write config");
    config
}

fn start(config: &Path, flags: &[&str], log: &Path) -> Killed {
    let stderr = std::fs::File::create(log).expect("log file");
    Killed(
        Command::new(env!("CARGO_BIN_EXE_veto"))
            .args(flags)
            .args(["run", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .env_remove("VETO_LOG_FORMAT")
            .env_remove("VETO_LOG_LEVEL")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start veto"),
    )
}

fn is_json_object(line: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v.is_object())
}

#[test]
fn run_logs_in_the_configured_format_and_level() {
    let (_cluster, brokers) = start_mock_broker(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = json_debug_config(dir.path(), &brokers);
    let log = dir.path().join("veto.log");
    let veto = start(&config, &[], &log);
    // a debug-level line, so `log_level` applied
    wait_for_log(&log, "pipeline quiesced", Duration::from_secs(60));
    sigterm_and_wait(veto);
    let text = std::fs::read_to_string(&log).expect("read log");
    assert!(text.contains("veto running"), "{text}");
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        assert!(is_json_object(line), "not a JSON log line: {line}");
    }
}

#[test]
fn log_flags_win_over_the_config() {
    let (_cluster, brokers) = start_mock_broker(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = json_debug_config(dir.path(), &brokers);
    let log = dir.path().join("veto.log");
    let veto = start(
        &config,
        &["--log-format", "human", "--log-level", "info"],
        &log,
    );
    wait_for_log(&log, "veto running", Duration::from_secs(60));
    // two checkpoints' time: at debug level each would have logged "pipeline quiesced"
    std::thread::sleep(Duration::from_millis(2_500));
    sigterm_and_wait(veto);
    let text = std::fs::read_to_string(&log).expect("read log");
    assert!(!text.contains("pipeline quiesced"), "{text}");
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        assert!(!is_json_object(line), "a JSON log line: {line}");
    }
}
