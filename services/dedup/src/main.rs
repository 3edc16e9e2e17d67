//! `ballast-dedup`: the dedup service for consumers, on Redis.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    ballast_telemetry::service_main::<ballast_dedup_service::DedupConfig, _, _>(
        clap::command!(),
        ballast_dedup_service::run,
    )
}
