//! `ballast`: the operator CLI and the four services. Development and test tools are in
//! `ballast-dev`.

use ballast::{consume, dlq, produce, topology};
use clap::{Parser, Subcommand};

// Many small per-record allocations on the produce path; mimalloc handles them with less
// contention than glibc's malloc across tokio and librdkafka threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Ballast: Kafka produce path that survives spot interruptions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read a topic as a consumer group, processing each message id once via dedup.
    Consume(Box<consume::ConsumeArgs>),
    /// The failover queue's statistics and dead letters (list, redrive, purge).
    Dlq(dlq::DlqArgs),
    /// Send records through a gateway.
    Produce(produce::ProduceArgs),
    /// The cluster's shape, draining marks, placement planners and the spot watcher.
    Topology(topology::TopologyArgs),
    /// Run the ingest gateway (the same as `ballast-gateway`).
    Gateway(ballast_telemetry::ConfigArgs),
    /// Run the retry worker (the same as `ballast-retry-worker`).
    RetryWorker(ballast_telemetry::ConfigArgs),
    /// Run the dedup service (the same as `ballast-dedup`).
    Dedup(ballast_telemetry::ConfigArgs),
    /// Run the topology service (the same as `ballast-topology`).
    TopologyService(ballast_telemetry::ConfigArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Gateway(args) => return run_gateway(args).await,
        Command::RetryWorker(args) => {
            return ballast_telemetry::run_service::<ballast_retry_worker::WorkerConfig, _, _>(
                args,
                ballast_retry_worker::run,
            )
            .await
        }
        Command::Dedup(args) => {
            return ballast_telemetry::run_service::<ballast_dedup_service::DedupConfig, _, _>(
                args,
                ballast_dedup_service::run,
            )
            .await
        }
        Command::TopologyService(args) => {
            return ballast_telemetry::run_service::<ballast_topology::TopologyConfig, _, _>(
                args,
                ballast_topology::run,
            )
            .await
        }
        _ => {}
    }
    let _telemetry = ballast_telemetry::init(&ballast_telemetry::TelemetryConfig {
        log_level: "warn,ballast=info,ballast_topology=info,librdkafka=off,rdkafka=off".into(),
        service_name: "ballast".into(),
        ..Default::default()
    })?;
    match cli.command {
        Command::Produce(args) => produce::run(args).await,
        Command::Consume(args) => consume::run(*args).await,
        Command::Dlq(args) => dlq::run(args).await,
        Command::Topology(args) => topology::run(args).await,
        Command::Gateway(_)
        | Command::RetryWorker(_)
        | Command::Dedup(_)
        | Command::TopologyService(_) => unreachable!("handled before logging starts"),
    }
}

/// `ballast gateway`: the gateway with its own config and logging.
async fn run_gateway(args: &ballast_telemetry::ConfigArgs) -> anyhow::Result<()> {
    ballast_telemetry::run_service::<ballast_gateway::GatewayConfig, _, _>(
        args,
        |config, listener, admin, shutdown| async move {
            ballast_gateway::Gateway::new(config)
                .await?
                .run(listener, admin, shutdown)
                .await
        },
    )
    .await
}
