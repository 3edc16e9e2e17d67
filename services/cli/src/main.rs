//! `ballast`: the all-in-one CLI.

use ballast::{bench, chaos, dev, produce};
use clap::{Parser, Subcommand};

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
    /// Run the embedded stack (mock Kafka with racks, gateway, dev control) and print one
    /// JSON ready line.
    Dev(dev::DevOptions),
    /// Inject faults into a running `ballast dev`.
    Chaos(chaos::ChaosArgs),
    /// Send records through a gateway.
    Produce(produce::ProduceArgs),
    /// Measure Ballast against baselines in the same run.
    Bench(bench::BenchArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = ballast_telemetry::init(&ballast_telemetry::TelemetryConfig {
        log_level: "warn,ballast=info,ballast_gateway=info".into(),
        service_name: "ballast".into(),
        ..Default::default()
    })?;
    match cli.command {
        Command::Dev(opts) => dev::run(opts).await,
        Command::Chaos(args) => chaos::run(args).await,
        Command::Produce(args) => produce::run(args).await,
        Command::Bench(args) => bench::run(args).await,
    }
}
