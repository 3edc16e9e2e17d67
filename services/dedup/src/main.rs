//! `ballast-dedup`: the dedup service for consumers, on Redis.

use ballast_dedup_service::DedupConfig;
use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Ballast dedup service.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    config: ballast_telemetry::ConfigArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ballast_telemetry::run_service::<DedupConfig, _, _>(
        &Args::parse().config,
        ballast_dedup_service::run,
    )
    .await
}
