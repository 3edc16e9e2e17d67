//! `ballast-gateway`: runs the ingest gateway against a real Kafka cluster.

use ballast_gateway::{Gateway, GatewayConfig};
use clap::Parser;

// Many small per-record allocations on the produce path; mimalloc handles them with less
// contention than glibc's malloc across tokio and librdkafka threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Ballast ingest gateway.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    config: ballast_telemetry::ConfigArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ballast_telemetry::run_service::<GatewayConfig, _, _>(
        &Args::parse().config,
        |config, listener, admin, shutdown| async move {
            Gateway::new(config)
                .await?
                .run(listener, admin, shutdown)
                .await
        },
    )
    .await
}
