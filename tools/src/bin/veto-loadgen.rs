//! `veto-loadgen`: produces synthetic payments to Kafka or writes them to a file.
use clap::Parser;

fn main() -> anyhow::Result<()> {
    veto::telemetry::init_logging(veto::telemetry::LogFormat::Human, "warn");
    let args = veto_tools::loadgen::LoadgenArgs::parse();
    let summary = veto_tools::loadgen::run(&args)?;
    println!("{summary}");
    Ok(())
}
