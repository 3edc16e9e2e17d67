//! `ballast-gateway`: runs the ingest gateway against a real Kafka cluster.

use ballast_gateway::{Gateway, GatewayConfig};

// Many small per-record allocations on the produce path; mimalloc handles them with less
// contention than glibc's malloc across tokio and librdkafka threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    ballast_telemetry::service_main::<GatewayConfig, _, _>(
        clap::command!(),
        |config, listener, admin, shutdown| async move {
            Gateway::new(config)
                .await?
                .run(listener, admin, shutdown)
                .await
        },
    )
}
