//! Hot-swap benchmark: reload-to-live time of a 1,000-rule set, and event latency while swaps happen vs without.
//!
//! The rule set is the shipped `rules/payments.veto` plus generated rules in a second file up to
//! `VETO_SWAP_RULES` (default 1000) rules. "Reload to live" is what SIGUSR1 triggers after the
//! signal is seen: read, parse, check, compile, run the set's own tests, swap the `ArcSwap`.
//! Latency: one thread decides synthetic events for `VETO_SWAP_SECONDS` (default 3) without
//! swaps, then as long again while another thread reloads and swaps every 250 ms.
//! Prints a table and writes `target/swap.json`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use veto::decider::{Engine, EventTimeTimers};
use veto::reload::load_rules_blocking;
use veto::store::{StoreConfig, TagStore};
use veto_tools::kit::swap::{decide_for, write_rule_files};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Writes the generated rules next to the shipped set; returns the paths of the whole set.
fn rule_files(dir: &Path, total_rules: usize) -> Vec<PathBuf> {
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rules/payments.veto");
    write_rule_files(dir, &shipped, total_rules, 0).expect("write the rule files")
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index] as f64 / 1_000.0
}

fn summary(mut latencies: Vec<u64>) -> serde_json::Value {
    latencies.sort_unstable();
    serde_json::json!({
        "events": latencies.len(),
        "p50_us": percentile(&latencies, 0.5),
        "p99_us": percentile(&latencies, 0.99),
        "p999_us": percentile(&latencies, 0.999),
        "max_us": latencies.last().map_or(f64::NAN, |&m| m as f64 / 1_000.0),
    })
}

fn main() {
    let total_rules = env_usize("VETO_SWAP_RULES", 1000);
    let seconds = env_usize("VETO_SWAP_SECONDS", 3) as u64;
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = rule_files(dir.path(), total_rules);

    // Reload to live, 10 times.
    let first = load_rules_blocking(&paths).expect("the generated set loads");
    let rules_count = first.rules().len() + first.sequences().len();
    let store_dir = tempfile::tempdir().expect("tempdir");
    let store = TagStore::open(StoreConfig {
        data_dir: store_dir.path().to_path_buf(),
        ..StoreConfig::default()
    })
    .expect("store");
    let engine = Arc::new(Engine::new(
        first,
        Arc::new(store),
        Arc::new(EventTimeTimers::default()),
    ));
    let mut reload_ms: Vec<f64> = (0..10)
        .map(|_| {
            let started = Instant::now();
            let rules = load_rules_blocking(&paths).expect("reload");
            engine.swap_rules(rules);
            started.elapsed().as_secs_f64() * 1_000.0
        })
        .collect();
    reload_ms.sort_by(f64::total_cmp);
    // Where the time goes: parse + check + compile, then the set's own tests.
    let started = Instant::now();
    let report = veto::rules::load(&paths);
    let compile_ms = started.elapsed().as_secs_f64() * 1_000.0;
    let compiled = Arc::new(report.ruleset.expect("compiles"));
    let started = Instant::now();
    let failures = veto::ruletest::failures(&compiled);
    let tests_ms = started.elapsed().as_secs_f64() * 1_000.0;
    assert!(failures.is_empty(), "{failures:?}");

    // Event latency without, then with, swaps every 250 ms.
    let quiet = AtomicBool::new(false);
    let baseline: Vec<u64> = decide_for(&engine, Duration::from_secs(seconds), &quiet)
        .into_iter()
        .map(|s| s.latency_ns)
        .collect();
    let swapping = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (engine, swapping, stop, paths) = (
            Arc::clone(&engine),
            Arc::clone(&swapping),
            Arc::clone(&stop),
            paths.clone(),
        );
        std::thread::spawn(move || {
            let mut swaps = 0usize;
            while !stop.load(Ordering::Relaxed) {
                swapping.store(true, Ordering::Relaxed);
                if let Ok(rules) = load_rules_blocking(&paths) {
                    engine.swap_rules(rules);
                    swaps += 1;
                }
                swapping.store(false, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(250));
            }
            swaps
        })
    };
    let with_swaps = decide_for(&engine, Duration::from_secs(seconds), &swapping);
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap_or(0);
    let during: Vec<u64> = with_swaps
        .iter()
        .filter(|s| s.swapping)
        .map(|s| s.latency_ns)
        .collect();
    let all: Vec<u64> = with_swaps.iter().map(|s| s.latency_ns).collect();

    let base = summary(baseline);
    let overall = summary(all);
    let in_swap = summary(during);
    let ratio = in_swap["p99_us"].as_f64().unwrap_or(f64::NAN)
        / base["p99_us"].as_f64().unwrap_or(f64::NAN);
    println!(
        "\nhot swap, {rules_count} rules: reload to live p50 {:.1} ms, max {:.1} ms (10 reloads)",
        reload_ms[reload_ms.len() / 2],
        reload_ms[reload_ms.len() - 1]
    );
    println!(
        "  of which parse + check + compile {compile_ms:.1} ms, the set's {} tests {tests_ms:.1} ms",
        compiled.tests().len()
    );
    println!("event latency (µs)          events      p50      p99    p99.9      max");
    for (name, s) in [
        ("no swaps", &base),
        ("swaps every 250 ms, all", &overall),
        ("while a swap runs", &in_swap),
    ] {
        println!(
            "{name:<26} {:>8} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
            s["events"],
            s["p50_us"].as_f64().unwrap_or(f64::NAN),
            s["p99_us"].as_f64().unwrap_or(f64::NAN),
            s["p999_us"].as_f64().unwrap_or(f64::NAN),
            s["max_us"].as_f64().unwrap_or(f64::NAN),
        );
    }
    println!("p99 while a swap runs / p99 without swaps: {ratio:.2} ({swaps} swaps)");
    let report = serde_json::json!({
        "rules": rules_count,
        "reload_to_live_ms": reload_ms,
        "compile_ms": compile_ms,
        "rule_tests_ms": tests_ms,
        "no_swaps": base,
        "with_swaps": overall,
        "while_swapping": in_swap,
        "p99_ratio_while_swapping": ratio,
        "swaps": swaps,
    });
    let written = std::fs::create_dir_all("target").and_then(|()| {
        std::fs::write(
            "target/swap.json",
            serde_json::to_vec_pretty(&report).unwrap_or_default(),
        )
    });
    if let Err(error) = written {
        eprintln!("cannot write target/swap.json: {error}");
    }
}
