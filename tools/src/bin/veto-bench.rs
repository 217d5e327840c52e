//! `veto-bench <scenario> --out DIR`: runs a benchmark scenario, writes report.json and PNG plots.
use clap::Parser;

fn main() -> anyhow::Result<()> {
    veto::telemetry::init_logging(veto::telemetry::LogFormat::Human, "warn");
    let args = veto_tools::bench::BenchArgs::parse();
    let report = veto_tools::bench::run(args)?;
    println!("report: {}", report.display());
    Ok(())
}
