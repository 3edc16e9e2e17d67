//! `ballast-topology`: publishes the cluster's shape and draining notices to gateways, and
//! plans replica placement.

use ballast_topology::TopologyConfig;
use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Ballast topology service.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    config: ballast_telemetry::ConfigArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ballast_telemetry::run_service::<TopologyConfig, _, _>(
        &Args::parse().config,
        ballast_topology::run,
    )
    .await
}
