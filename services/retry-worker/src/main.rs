//! `ballast-retry-worker`: drains the failover queue back into Kafka.

use ballast_retry_worker::WorkerConfig;
use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A Ballast retry worker. Run as many as the queue needs.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    config: ballast_telemetry::ConfigArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ballast_telemetry::run_service::<WorkerConfig, _, _>(
        &Args::parse().config,
        ballast_retry_worker::run,
    )
    .await
}
