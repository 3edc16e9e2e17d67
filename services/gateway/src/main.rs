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
    let args = Args::parse();
    let config = GatewayConfig::load(args.config.config.as_deref())?;
    if args.config.dump_config {
        print!("{}", config.to_yaml());
        return Ok(());
    }
    let _telemetry = ballast_telemetry::init(&config.telemetry)?;
    let (listener, admin) =
        ballast_telemetry::bind_listeners(config.listen, config.admin_listen).await?;
    Gateway::new(config)
        .await?
        .run(listener, admin, ballast_telemetry::shutdown_signal())
        .await
}
