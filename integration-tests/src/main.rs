//! `ballast-dev`: the development and test binary. Production runs `ballast`.

use ballast_dev::{bench, chaos, demo, dev, torture};
use clap::{Parser, Subcommand};

// The same allocator as the production binary, so benchmarks measure what ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Ballast's development and test tools: the embedded stack, chaos, the demo, benchmarks and the torture run"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the embedded stack (mock Kafka with racks, gateway, retry workers, dedup,
    /// topology, dev control) and print one JSON ready line.
    Up(Box<dev::DevOptions>),
    /// Play a spot-interruption script against the embedded stack under load and audit
    /// that no acknowledged record is lost.
    Demo(demo::DemoArgs),
    /// Inject faults into a running `ballast-dev up`.
    Chaos(chaos::ChaosArgs),
    /// Measure Ballast against baselines in the same run.
    Bench(bench::BenchArgs),
    /// The whole system as separate `ballast` processes under seeded faults, then the
    /// delivery invariants checked.
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
    // The demo draws progress bars and breaks things on purpose: only errors interrupt it.
    let log_level = match cli.command {
        Command::Demo(_) => "error,librdkafka=off,rdkafka=off",
        // librdkafka reports every refused connection during chaos; RUST_LOG shows them.
        _ => "warn,ballast_dev=info,ballast_gateway=info,librdkafka=off,rdkafka=off",
    };
    let _telemetry = ballast_telemetry::init(&ballast_telemetry::TelemetryConfig {
        log_level: log_level.into(),
        service_name: "ballast-dev".into(),
        ..Default::default()
    })?;
    match cli.command {
        Command::Up(opts) => dev::run(*opts).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Chaos(args) => chaos::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::BenchProducer(args) => bench::cpu::producer_process(args).await,
        Command::BenchSink(args) => bench::sink::sink_process(args).await,
        Command::Torture(args) => torture::run(args).await,
    }
}
