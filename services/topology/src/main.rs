//! `ballast-topology`: publishes the cluster's shape and draining notices to gateways, and
//! plans replica placement.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    ballast_telemetry::service_main::<ballast_topology::TopologyConfig, _, _>(
        clap::command!(),
        ballast_topology::run,
    )
}
