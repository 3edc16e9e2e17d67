//! Every service's default config is valid on its own, and the four services listen on
//! their own default ports, so they can share a host without overrides.

use ballast_dedup_service::DedupConfig;
use ballast_gateway::GatewayConfig;
use ballast_retry_worker::WorkerConfig;
use ballast_telemetry::ServiceConfig;
use ballast_topology::TopologyConfig;
use std::collections::HashSet;

#[test]
fn services_have_distinct_default_ports() {
    let addrs = [
        GatewayConfig::default().listen_addrs(),
        WorkerConfig::default().listen_addrs(),
        DedupConfig::default().listen_addrs(),
        TopologyConfig::default().listen_addrs(),
    ];
    let ports: HashSet<u16> = addrs
        .iter()
        .flat_map(|(grpc, admin)| [grpc.port(), admin.port()])
        .collect();
    assert_eq!(ports.len(), 8, "{addrs:?}");
}

/// The example configs in deploy/ load and validate, and the gateway's has a durable,
/// off-node failover queue.
#[test]
fn example_configs_load() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let gateway = GatewayConfig::load(Some(&deploy.join("gateway.yaml"))).expect("gateway.yaml");
    assert_eq!(
        gateway.failover.backend,
        ballast_failover::FailoverBackend::Sqs
    );
    assert!(!gateway.failover.node_local());
    TopologyConfig::load(Some(&deploy.join("topology.yaml"))).expect("topology.yaml");
}
