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
    let args = Args::parse();
    let config = TopologyConfig::load(args.config.config.as_deref())?;
    if args.config.dump_config {
        print!("{}", config.to_yaml());
        return Ok(());
    }
    let _telemetry = ballast_telemetry::init(&config.telemetry)?;
    let (listener, admin) =
        ballast_telemetry::bind_listeners(config.listen, config.admin_listen).await?;
    ballast_topology::run(
        config,
        listener,
        admin,
        ballast_telemetry::shutdown_signal(),
    )
    .await
}
