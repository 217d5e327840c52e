//! `veto-bench core --instructions`: instructions per decided event. The harness re-runs itself
//! on one thread at two run lengths (N and 2N events after the same warmup) under `perf stat`
//! when the hardware counter works, else under `valgrind --tool=callgrind` collecting only
//! inside [`core_instructions_probe`], and reports Ir per decided event and the marginal ΔIr/ΔN.

use std::path::{Path, PathBuf};
use std::process::Command;

use veto::event::{Outcome, PaymentEvent};
use veto::synth::{Synth, SynthConfig};

use super::core::{load_engine, CoreArgs, CoreEngine};
use super::BenchError;

/// The callgrind `--toggle-collect` pattern: the probe's symbol only. One frame must match:
/// nested matching frames would toggle collection off again.
pub const PROBE_PATTERN: &str = "*core_instructions_probe*";

/// Which counter `--instructions` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Counter {
    /// `perf stat` when the instructions counter works, else callgrind.
    Auto,
    /// `perf stat -e instructions:u`, minus a run that builds the same engine and events but
    /// decides nothing.
    Perf,
    /// `valgrind --tool=callgrind`, collecting inside the decide probe only.
    Callgrind,
}

/// One child run: `warmup + events` decided on one thread.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CountedRun {
    pub events: usize,
    pub decided: usize,
    /// Instructions spent deciding (callgrind: inside the probe; perf: the run minus its
    /// no-decide baseline).
    pub instructions: u64,
    pub per_decided_event: f64,
}

/// What `--instructions` measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InstructionsResult {
    pub counter: Counter,
    pub warmup_events: usize,
    pub runs: Vec<CountedRun>,
    /// Instructions per decided event of the longer run (warmup included).
    pub per_event: f64,
    /// (Ir(2N) − Ir(N)) / N: the cost of one more event, setup and warmup cancelled out.
    pub marginal_per_event: f64,
}

/// The decide call whose instructions are counted; never inlined, so its symbol exists.
#[inline(never)]
pub fn core_instructions_probe(engine: &dyn CoreEngine, event: &PaymentEvent) -> Outcome {
    engine.decide(event)
}

/// Child side (`--instructions-child N`): builds the engine and `warmup + N` events of stream
/// `seed`, then decides them all on this thread (with `baseline`: decides nothing).
pub fn child(args: &CoreArgs, events: usize, baseline: bool) -> Result<(), BenchError> {
    let engine = load_engine(&args.rules)?;
    let stream: Vec<PaymentEvent> = Synth::new(SynthConfig {
        seed: args.seed,
        users: args.users,
        ..SynthConfig::default()
    })
    .take(args.warmup_events + events)
    .collect();
    if !baseline {
        for event in &stream {
            std::hint::black_box(core_instructions_probe(&*engine, event));
        }
    }
    Ok(())
}

/// Parent side: counts the child at `events` and `2 × events` and derives the figures.
pub fn measure(args: &CoreArgs, out: &Path) -> Result<InstructionsResult, BenchError> {
    let n = args.instructions_events;
    if n == 0 {
        return Err(BenchError::Invalid(
            "--instructions-events must be positive".into(),
        ));
    }
    let counter = match args.instructions_counter {
        Counter::Auto if perf_counts_instructions() => Counter::Perf,
        Counter::Auto => Counter::Callgrind,
        c => c,
    };
    let exe = std::env::current_exe().map_err(|source| BenchError::Io {
        path: PathBuf::from("veto-bench"),
        source,
    })?;
    std::fs::create_dir_all(out).map_err(|source| BenchError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let mut runs = Vec::with_capacity(2);
    for events in [n, 2 * n] {
        let child = |baseline: bool| child_args(args, events, baseline);
        let instructions = match counter {
            Counter::Perf => {
                let full = perf_count(&exe, &child(false), out)?;
                let base = perf_count(&exe, &child(true), out)?;
                full.saturating_sub(base)
            }
            _ => callgrind_count(
                &exe,
                &child(false),
                &out.join(format!("callgrind.{events}")),
            )?,
        };
        let decided = args.warmup_events + events;
        runs.push(CountedRun {
            events,
            decided,
            instructions,
            per_decided_event: instructions as f64 / decided as f64,
        });
    }
    let (short, long) = (&runs[0], &runs[1]);
    let marginal = long.instructions.saturating_sub(short.instructions) as f64 / n as f64;
    Ok(InstructionsResult {
        counter,
        warmup_events: args.warmup_events,
        per_event: long.per_decided_event,
        marginal_per_event: marginal,
        runs,
    })
}

fn child_args(args: &CoreArgs, events: usize, baseline: bool) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "core".into(),
        "--instructions-child".into(),
        events.to_string(),
        "--warmup-events".into(),
        args.warmup_events.to_string(),
        "--users".into(),
        args.users.to_string(),
        "--seed".into(),
        args.seed.to_string(),
        "--rules".into(),
        args.rules.display().to_string(),
    ];
    if baseline {
        v.push("--instructions-baseline".into());
    }
    v
}

/// Whether `perf stat` reads the instructions counter here (virtual machines often lack it).
fn perf_counts_instructions() -> bool {
    Command::new("perf")
        .args(["stat", "-x,", "-e", "instructions:u", "true"])
        .output()
        .is_ok_and(|o| {
            o.status.success() && parse_perf(&String::from_utf8_lossy(&o.stderr)).is_some()
        })
}

/// The instructions count of `perf stat -x,` output, if it was counted.
fn parse_perf(text: &str) -> Option<u64> {
    text.lines()
        .filter(|l| l.contains("instructions"))
        .find_map(|l| l.split(',').next()?.trim().parse().ok())
}

fn perf_count(exe: &Path, child: &[String], out: &Path) -> Result<u64, BenchError> {
    let file = out.join("perf-stat.csv");
    let status = Command::new("perf")
        .args(["stat", "-x,", "-e", "instructions:u", "-o"])
        .arg(&file)
        .arg("--")
        .arg(exe)
        .args(child)
        .status()
        .map_err(|e| BenchError::Invalid(format!("perf stat: {e}")))?;
    if !status.success() {
        return Err(BenchError::Invalid(format!(
            "perf stat child failed: {status}"
        )));
    }
    let text = std::fs::read_to_string(&file).map_err(|source| BenchError::Io {
        path: file.clone(),
        source,
    })?;
    parse_perf(&text).ok_or_else(|| {
        BenchError::Invalid(format!(
            "{}: perf stat counted no instructions (counter not supported here; use \
             --instructions-counter callgrind)",
            file.display()
        ))
    })
}

fn callgrind_count(exe: &Path, child: &[String], file: &Path) -> Result<u64, BenchError> {
    let output = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", file.display()))
        .arg("--dump-instr=no")
        .arg(format!("--toggle-collect={PROBE_PATTERN}"))
        .arg(exe)
        .args(child)
        .output()
        .map_err(|e| {
            BenchError::Invalid(format!(
                "--instructions needs valgrind where perf stat cannot count instructions \
                 (install it: apt-get install valgrind): {e}"
            ))
        })?;
    if !output.status.success() {
        return Err(BenchError::Invalid(format!(
            "callgrind child failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    let text = std::fs::read_to_string(file).map_err(|source| BenchError::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let ir = parse_callgrind_total(&text)
        .ok_or_else(|| BenchError::Invalid(format!("{}: no totals line", file.display())))?;
    if ir == 0 {
        return Err(BenchError::Invalid(format!(
            "{}: callgrind collected nothing: no symbol matches {PROBE_PATTERN} (stripped \
             binary?)",
            file.display()
        )));
    }
    Ok(ir)
}

/// The total Ir of a callgrind output file (`totals:` or, in older formats, `summary:`).
fn parse_callgrind_total(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l
            .strip_prefix("totals:")
            .or_else(|| l.strip_prefix("summary:"))?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counter_outputs() {
        assert_eq!(
            parse_perf("\n123456789,,instructions:u,1000,100.00,,\n"),
            Some(123_456_789)
        );
        assert_eq!(
            parse_perf("<not supported>,,instructions:u,0,100.00,,"),
            None
        );
        let cg = "version: 1\ncmd: x\nevents: Ir\nfn=(1) f\n3 10\ntotals: 4567\n";
        assert_eq!(parse_callgrind_total(cg), Some(4_567));
        assert_eq!(parse_callgrind_total("summary: 12\n"), Some(12));
        assert_eq!(parse_callgrind_total("events: Ir\n"), None);
    }
}
