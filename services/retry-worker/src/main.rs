//! `ballast-retry-worker`: drains the failover queue back into Kafka.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    ballast_telemetry::service_main::<ballast_retry_worker::WorkerConfig, _, _>(
        clap::command!(),
        ballast_retry_worker::run,
    )
}
