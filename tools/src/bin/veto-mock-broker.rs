//! `veto-mock-broker`: librdkafka's mock cluster as a standalone Kafka-protocol broker process.
//!
//! Serves the default config's topics on 127.0.0.1 and prints the bootstrap address on the
//! first line of stdout; runs until SIGTERM or SIGINT. Used by `tools/soak.py --broker mock`.
//! Like every mock cluster it keeps only the newest few MB of each partition in memory and
//! implements no transactions' visibility rules (see docs/pipeline.md).
use std::io::Write;

use anyhow::Context;
use clap::Parser;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

#[derive(Parser)]
#[command(about = "librdkafka's mock Kafka cluster as a standalone broker process")]
struct Args {
    /// Partitions of the payments topic (the other topics get one).
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Topics to create, comma-separated; the first one gets `--partitions`.
    #[arg(
        long,
        default_value = "payments,entity-tags,decisions,dead-letters,decisions-shadow,veto-control"
    )]
    topics: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cluster: MockCluster<'static, DefaultProducerContext> =
        MockCluster::new(1).context("start the mock cluster")?;
    for (index, topic) in args.topics.split(',').map(str::trim).enumerate() {
        let partitions = if index == 0 { args.partitions } else { 1 };
        cluster
            .create_topic(topic, partitions, 1)
            .with_context(|| format!("create topic {topic}"))?;
    }
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{}", cluster.bootstrap_servers()).context("print the address")?;
    stdout.flush().context("print the address")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the runtime")?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        anyhow::Ok(())
    })?;
    drop(cluster);
    Ok(())
}
