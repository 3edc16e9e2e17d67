//! `ballast-gateway`: runs the ingest gateway against a real Kafka cluster.

use anyhow::Context;
use ballast_gateway::{Gateway, GatewayConfig};
use clap::Parser;
use std::path::PathBuf;

// Many small per-record allocations on the produce path; mimalloc handles them with less
// contention than glibc's malloc across tokio and librdkafka threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Ballast ingest gateway.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// YAML config file. `BALLAST_*` environment variables override it
    /// (nested keys joined by `__`, e.g. BALLAST_KAFKA__BOOTSTRAP_SERVERS).
    #[arg(long, short, env = "BALLAST_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective config as YAML and exit.
    #[arg(long)]
    dump_config: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = GatewayConfig::load(args.config.as_deref())?;
    if args.dump_config {
        print!("{}", config.to_yaml());
        return Ok(());
    }
    let _telemetry = ballast_telemetry::init(&config.telemetry)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding listen address {}", config.listen))?;
    let admin = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("binding admin_listen address {}", config.admin_listen))?;
    Gateway::new(config)
        .await?
        .run(listener, admin, ballast_telemetry::shutdown_signal())
        .await
}
