//! `ballast`: the all-in-one CLI.

use ballast::{bench, chaos, consume, demo, dev, dlq, produce, topology, torture};
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
    /// Run the embedded stack (mock Kafka with racks, gateway, retry workers, dedup,
    /// topology, dev control) and print one JSON ready line.
    Dev(Box<dev::DevOptions>),
    /// Play a spot-interruption script against the dev stack under load and audit that
    /// no acknowledged record is lost.
    Demo(demo::DemoArgs),
    /// Inject faults into a running `ballast dev`.
    Chaos(chaos::ChaosArgs),
    /// Read a topic as a consumer group, processing each message id once via dedup.
    Consume(Box<consume::ConsumeArgs>),
    /// The failover queue's statistics and dead letters (list, redrive, purge).
    Dlq(dlq::DlqArgs),
    /// Send records through a gateway.
    Produce(produce::ProduceArgs),
    /// Measure Ballast against baselines in the same run.
    Bench(bench::BenchArgs),
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
    /// The whole system as separate processes under seeded faults, then the delivery
    /// invariants checked.
    Torture(torture::TortureArgs),
    /// P8's baseline: a bare rdkafka producer process that reports its own CPU.
    #[command(hide = true)]
    BenchProducer(bench::cpu::ProducerArgs),
    /// P8's transport floor: a gRPC ingest server that answers without Kafka.
    #[command(hide = true)]
    BenchSink(bench::sink::SinkArgs),
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
    // The demo draws progress bars and breaks things on purpose: only errors interrupt it.
    let log_level = match cli.command {
        Command::Demo(_) => "error,librdkafka=off,rdkafka=off",
        // librdkafka reports every refused connection during chaos; RUST_LOG shows them.
        _ => "warn,ballast=info,ballast_gateway=info,librdkafka=off,rdkafka=off",
    };
    let _telemetry = ballast_telemetry::init(&ballast_telemetry::TelemetryConfig {
        log_level: log_level.into(),
        service_name: "ballast".into(),
        ..Default::default()
    })?;
    match cli.command {
        Command::Dev(opts) => dev::run(*opts).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Chaos(args) => chaos::run(args).await,
        Command::Produce(args) => produce::run(args).await,
        Command::Consume(args) => consume::run(*args).await,
        Command::Dlq(args) => dlq::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::BenchProducer(args) => bench::cpu::producer_process(args).await,
        Command::BenchSink(args) => bench::sink::sink_process(args).await,
        Command::Topology(args) => topology::run(args).await,
        Command::Torture(args) => torture::run(args).await,
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
