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
    let args = Args::parse();
    let config = WorkerConfig::load(args.config.config.as_deref())?;
    if args.config.dump_config {
        print!("{}", config.to_yaml());
        return Ok(());
    }
    let _telemetry = ballast_telemetry::init(&config.telemetry)?;
    let (listener, admin) =
        ballast_telemetry::bind_listeners(config.listen, config.admin_listen).await?;
    ballast_retry_worker::run(
        config,
        listener,
        admin,
        ballast_telemetry::shutdown_signal(),
    )
    .await
}
