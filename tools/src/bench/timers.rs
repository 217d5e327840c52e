//! Scenario `timers`: timer lateness and drift of Veto's timer service beside a tokio `interval`,
//! measured at once in the same run while spinning threads keep every core busy.
//!
//! The measuring code is [`crate::kit::timers`], which `tools/benches/timers.rs` runs too.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::kit::timers::{compare, quantile, LatenessSeries, LatenessSummary, Method, PERIOD};

use super::machine::MachineInfo;
use super::plot::{self, Chart, Series};
use super::report::{now_rfc3339, Report};
use super::BenchError;

/// Arguments of `veto-bench timers`.
#[derive(Debug, Clone, clap::Args)]
pub struct TimersArgs {
    /// Output folder for report.json and the plots.
    #[arg(long, default_value = "bench-out/timers")]
    pub out: PathBuf,
    /// 1 ms ticks per method; 1000000 (about 17 minutes) measures cumulative drift over 10^6 ticks.
    #[arg(long, default_value_t = 60_000)]
    pub ticks: usize,
    /// Threads spinning to keep the cores busy; default: one per core.
    #[arg(long)]
    pub busy_threads: Option<usize>,
    /// Also measure the wheel ticker without its final spin and a plain sleep(period) loop.
    #[arg(long)]
    pub all_methods: bool,
}

/// The timer service's targets (docs/benchmarks.md), checked against its measured summary.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetCheck {
    pub p99_ms_max: f64,
    pub p999_ms_max: f64,
    /// "Zero cumulative drift": the last tick may be late by at most one tick period.
    pub drift_ms_max: f64,
    pub p99_met: bool,
    pub p999_met: bool,
    pub drift_met: bool,
}

impl TargetCheck {
    pub fn of(s: &LatenessSummary) -> TargetCheck {
        let (p99, p999, drift) = (1.0, 2.0, PERIOD.as_secs_f64() * 1e3);
        TargetCheck {
            p99_ms_max: p99,
            p999_ms_max: p999,
            drift_ms_max: drift,
            p99_met: s.lateness_p99_ms <= p99,
            p999_met: s.lateness_p999_ms <= p999,
            drift_met: s.drift_ms <= drift,
        }
    }
}

/// Points of the lateness CDF (x: lateness in ms, y: fraction of ticks at most that late),
/// denser in the tail: quantiles 0..0.99 in steps of 0.01, then 1 − 10^-k/… up to the maximum.
pub fn cdf_points(sorted: &[u64]) -> Vec<(f64, f64)> {
    if sorted.is_empty() {
        return Vec::new();
    }
    let mut qs: Vec<f64> = (0..=99).map(|i| i as f64 / 100.0).collect();
    let mut tail = 0.01;
    while tail * sorted.len() as f64 >= 1.0 {
        for step in [0.8, 0.6, 0.4, 0.2] {
            qs.push(1.0 - tail * step);
        }
        tail /= 10.0;
    }
    qs.push(1.0);
    qs.sort_by(f64::total_cmp);
    qs.dedup();
    qs.into_iter()
        .map(|q| (quantile(sorted, q) as f64 / 1e6, q))
        .collect()
}

/// The complementary CDF on the same points: fraction of ticks later than x (0 points dropped).
pub fn tail_points(cdf: &[(f64, f64)], ticks: usize) -> Vec<(f64, f64)> {
    let floor = 1.0 / ticks.max(1) as f64;
    cdf.iter()
        .map(|&(x, q)| (x, (1.0 - q).max(floor)))
        .collect()
}

/// Median lateness (ms) of each second of ticks: (seconds since start, ms).
pub fn drift_points(lateness_ns: &[u64]) -> Vec<(f64, f64)> {
    let per_second = (1.0 / PERIOD.as_secs_f64()).round().max(1.0) as usize;
    lateness_ns
        .chunks(per_second)
        .enumerate()
        .map(|(i, chunk)| {
            let mut sorted = chunk.to_vec();
            sorted.sort_unstable();
            (i as f64, quantile(&sorted, 0.5) as f64 / 1e6)
        })
        .collect()
}

fn plots(out: &Path, series: &[LatenessSeries]) -> Result<Vec<String>, BenchError> {
    let measured: Vec<&LatenessSeries> = series
        .iter()
        .filter(|s| !s.lateness_ns.is_empty())
        .collect();
    // (method, CDF points, samples)
    type Cdf = (String, Vec<(f64, f64)>, usize);
    let cdfs: Vec<Cdf> = measured
        .iter()
        .map(|s| {
            (
                s.method.name().to_string(),
                cdf_points(&s.sorted()),
                s.lateness_ns.len(),
            )
        })
        .collect();
    let mut written = Vec::new();
    let file = "lateness_cdf.png";
    plot::draw(
        &out.join(file),
        &Chart {
            title: "Timer lateness CDF, 1 ms ticks, cores busy",
            x_label: "lateness (ms)",
            y_label: "fraction of ticks at most this late",
            series: cdfs
                .iter()
                .map(|(name, points, _)| Series {
                    name: name.clone(),
                    points: points.clone(),
                })
                .collect(),
            log_y: false,
            markers: Default::default(),
        },
    )?;
    written.push(file.to_string());
    let file = "lateness_tail.png";
    plot::draw(
        &out.join(file),
        &Chart {
            title: "Timer lateness tail (1 − CDF), 1 ms ticks, cores busy",
            x_label: "lateness (ms)",
            y_label: "fraction of ticks later than this (log)",
            series: cdfs
                .iter()
                .map(|(name, points, ticks)| Series {
                    name: name.clone(),
                    points: tail_points(points, *ticks),
                })
                .collect(),
            log_y: true,
            markers: Default::default(),
        },
    )?;
    written.push(file.to_string());
    let file = "drift_over_time.png";
    plot::draw(
        &out.join(file),
        &Chart {
            title: "Lateness over time (median per second; a rising line is drift)",
            x_label: "seconds",
            y_label: "median lateness (ms)",
            series: measured
                .iter()
                .map(|s| Series {
                    name: s.method.name().to_string(),
                    points: drift_points(&s.lateness_ns),
                })
                .collect(),
            log_y: false,
            markers: Default::default(),
        },
    )?;
    written.push(file.to_string());
    Ok(written)
}

/// Runs the scenario and writes the report; returns the report's path.
pub fn run(args: &TimersArgs) -> Result<PathBuf, BenchError> {
    if args.ticks == 0 {
        return Err(BenchError::Invalid("--ticks must be positive".into()));
    }
    let started = Instant::now();
    let started_at = now_rfc3339();
    let machine = MachineInfo::collect();
    let busy = args.busy_threads.unwrap_or(machine.cores);
    let methods: Vec<Method> = if args.all_methods {
        Method::ALL.to_vec()
    } else {
        vec![Method::Service, Method::WheelSpin, Method::TokioInterval]
    };
    eprintln!(
        "timers: {} ticks of 1 ms, {} methods at once, {busy} busy threads (~{:.0} s)",
        args.ticks,
        methods.len(),
        args.ticks as f64 * PERIOD.as_secs_f64()
    );
    let comparison = compare(&methods, args.ticks, busy);
    if let Some(reason) = &comparison.normal_scheduling {
        eprintln!("timers: normal scheduling (real-time FIFO refused: {reason})");
    }
    for s in &comparison.series {
        if let Some(error) = &s.error {
            return Err(BenchError::Invalid(format!("{}: {error}", s.method.name())));
        }
    }
    let summaries: Vec<LatenessSummary> = comparison.series.iter().map(|s| s.summary()).collect();
    eprintln!(
        "{:<34} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "method (lateness, ms)", "ticks", "p50", "p99", "p99.9", "max", "drift"
    );
    for s in &summaries {
        eprintln!(
            "{:<34} {:>8} {:>8.3} {:>8.3} {:>8.3} {:>9.3} {:>9.3}",
            s.name,
            s.ticks,
            s.lateness_p50_ms,
            s.lateness_p99_ms,
            s.lateness_p999_ms,
            s.lateness_max_ms,
            s.drift_ms
        );
    }
    let service = summaries.iter().find(|s| s.method == Method::Service);
    let tokio = summaries.iter().find(|s| s.method == Method::TokioInterval);
    let targets = service.map(TargetCheck::of);
    let p99_vs_tokio = match (service, tokio) {
        (Some(s), Some(t)) if t.lateness_p99_ms > 0.0 => {
            Some(s.lateness_p99_ms / t.lateness_p99_ms)
        }
        _ => None,
    };
    if let Some(t) = &targets {
        eprintln!(
            "timer service vs targets: p99 ≤ 1 ms {}, p99.9 ≤ 2 ms {}, drift ≤ 1 tick {}; p99 service / tokio interval: {}",
            met(t.p99_met),
            met(t.p999_met),
            met(t.drift_met),
            p99_vs_tokio.map_or("n/a".into(), |r| format!("{r:.2}"))
        );
    }
    std::fs::create_dir_all(&args.out).map_err(|source| BenchError::Io {
        path: args.out.clone(),
        source,
    })?;
    let plots = plots(&args.out, &comparison.series)?;
    let report = Report {
        scenario: "timers".into(),
        started_at,
        duration_seconds: started.elapsed().as_secs_f64(),
        machine,
        params: serde_json::json!({
            "ticks": args.ticks,
            "period_ms": PERIOD.as_secs_f64() * 1e3,
            "busy_threads": busy,
            "methods": methods,
        }),
        results: serde_json::json!({
            "scheduling": comparison.normal_scheduling.as_ref().map_or(
                "real-time FIFO".to_string(),
                |reason| format!("normal ({reason})"),
            ),
            "methods": summaries,
            "service_targets": targets,
            "service_p99_over_tokio_p99": p99_vs_tokio,
        }),
        plots,
    };
    report.write(&args.out)
}

/// "met" or "MISSED".
pub fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_is_monotone_and_reaches_the_maximum() {
        let sorted: Vec<u64> = (1..=100_000u64).map(|i| i * 10).collect();
        let cdf = cdf_points(&sorted);
        assert!(cdf.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1));
        assert_eq!(cdf.last(), Some(&(1.0, 1.0)));
        // the tail reaches 1 − 10^-5 with 10^5 samples
        assert!(cdf.iter().any(|&(_, q)| (1.0 - q) < 1e-4));
        let tail = tail_points(&cdf, sorted.len());
        assert!(tail.iter().all(|&(_, f)| f >= 1e-5));
        assert!(cdf_points(&[]).is_empty());
    }

    #[test]
    fn drift_is_the_median_of_each_second() {
        let lateness: Vec<u64> = (0..2500u64)
            .map(|i| (i / 1000) * 1_000_000 + i % 3)
            .collect();
        let points = drift_points(&lateness);
        assert_eq!(points.len(), 3);
        assert_eq!(points[1].0, 1.0);
        assert!((points[1].1 - 1.0).abs() < 1e-5);
        assert!((points[2].1 - 2.0).abs() < 1e-5);
    }

    #[test]
    fn short_run_writes_report_and_plots() {
        let dir = tempfile::tempdir().expect("temp dir");
        let args = TimersArgs {
            out: dir.path().join("timers"),
            ticks: 300,
            busy_threads: Some(1),
            all_methods: false,
        };
        let report = run(&args).expect("run");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(report).expect("read")).expect("json");
        let methods = json["results"]["methods"].as_array().expect("methods");
        assert_eq!(methods.len(), 3);
        assert!(methods.iter().all(|m| m["ticks"] == 300));
        assert!(json["results"]["service_targets"]["p99_met"].is_boolean());
        for plot in json["plots"].as_array().expect("plots") {
            let name = plot.as_str().expect("name");
            assert!(args.out.join(name).metadata().expect("png").len() > 1_000);
        }
    }
}
