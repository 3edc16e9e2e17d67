//! `ballast-retry-worker`: drains the failover queue back into Kafka.

use anyhow::Context;
use ballast_retry_worker::WorkerConfig;
use clap::Parser;
use std::path::PathBuf;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A Ballast retry worker. Run as many as the queue needs.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// YAML config file. `BALLAST_*` environment variables override it
    /// (nested keys joined by `__`, e.g. BALLAST_RETRY__MAX_ATTEMPTS).
    #[arg(long, short, env = "BALLAST_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective config as YAML and exit.
    #[arg(long)]
    dump_config: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = WorkerConfig::load(args.config.as_deref())?;
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
    ballast_retry_worker::run(
        config,
        listener,
        admin,
        ballast_telemetry::shutdown_signal(),
    )
    .await
}
