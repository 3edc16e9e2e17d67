//! The topology service: versioned snapshots of the cluster's brokers (with racks),
//! partition leaders, ISR and offline replicas, plus draining notices, pushed to gateways
//! over `WatchTopology`; and the placement planners of [`plan`].
//!
//! It reads metadata with the protocol-level client of `ballast-kafka` (librdkafka does not
//! expose racks) every `kafka.refresh_interval` and publishes a new version only when
//! something changed.

pub mod config;
pub mod plan;
mod service;
pub mod spot;
mod state;

pub use config::{KafkaSource, PlanLimits, TopologyConfig};
pub use service::{placement_from_pb, reassignment_to_pb, TopologyService};
pub use state::TopologyState;

use ballast_kafka::MetadataClient;
use ballast_proto::topology::v1::topology_server::TopologyServer;
use ballast_telemetry::Host;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The topology service's series, `ballast_topology_*`, which the poller sets.
pub struct PollerMetrics {
    version: Gauge<i64>,
    draining: Gauge<i64>,
    watchers: Gauge<i64>,
    failures: Counter<u64>,
}

/// Registers the topology service's series.
pub fn register_metrics(registry: &mut Registry) -> PollerMetrics {
    let r = registry.sub_registry_with_prefix("ballast_topology");
    let m = PollerMetrics {
        version: Gauge::default(),
        draining: Gauge::default(),
        watchers: Gauge::default(),
        failures: Counter::default(),
    };
    r.register("version", "Current snapshot version", m.version.clone());
    r.register(
        "draining_brokers",
        "Brokers marked draining",
        m.draining.clone(),
    );
    r.register("watchers", "Open WatchTopology streams", m.watchers.clone());
    r.register(
        "metadata_failures",
        "Metadata fetches that reached no broker",
        m.failures.clone(),
    );
    m
}

/// Polls metadata into `state` until aborted; expires lapsed draining marks on the way.
pub fn spawn_poller(
    state: Arc<TopologyState>,
    kafka: &KafkaSource,
    registry: &mut Registry,
) -> Result<tokio::task::JoinHandle<()>, ballast_kafka::Error> {
    let client = MetadataClient::new(
        kafka.bootstrap_list(),
        kafka.client_id.clone(),
        kafka.metadata_timeout,
    )
    .with_security(&kafka.security())?;
    let PollerMetrics {
        version,
        draining,
        watchers,
        failures,
    } = register_metrics(registry);
    let interval = kafka.refresh_interval;
    Ok(tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_ok = true;
        loop {
            tick.tick().await;
            let md = client.fetch().await.map_err(|e| e.to_string());
            match &md {
                Err(e) => {
                    failures.inc();
                    if was_ok {
                        tracing::warn!(error = %e, "metadata fetch failed; publishing the last view as unreachable");
                    }
                }
                Ok(_) if !was_ok => tracing::info!("metadata reachable again"),
                Ok(_) => {}
            }
            was_ok = md.is_ok();
            state.apply_metadata(md);
            for b in state.expire_marks(state::unix_ms()) {
                tracing::info!(broker = b, "draining mark lapsed after its deadline");
            }
            let snap = state.snapshot();
            version.set(snap.version as i64);
            draining.set(snap.draining_brokers.len() as i64);
            watchers.set(state.watchers() as i64);
        }
    }))
}

/// Serves Topology (with health and reflection) on `listener` and metrics on `admin` until
/// `shutdown`; open watch streams end at shutdown.
pub async fn run(
    config: TopologyConfig,
    listener: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = Arc::new(TopologyState::new(config.draining_lapse_after_deadline));
    run_with_state(config, state, listener, admin, shutdown).await
}

/// [`run`] on a state the caller keeps a handle to (the dev stack, tests).
pub async fn run_with_state(
    config: TopologyConfig,
    state: Arc<TopologyState>,
    listener: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let mut registry = Registry::default();
    let poller = spawn_poller(state.clone(), &config.kafka, &mut registry)?;
    let mut host = Host::start::<TopologyServer<TopologyService>>(
        admin,
        registry,
        config.shutdown_grace,
        shutdown,
    )
    .await;
    host.secure(&config.tls)?;
    let access = host.access(&config.auth)?;
    host.health().set_serving(true).await;
    let service = TopologyService::new(state, config.limits.clone(), host.stop_signal(), access);
    tracing::info!(addr = %listener.local_addr()?, bootstrap = %config.kafka.bootstrap_servers, "topology listening");
    let router = host.router()?.add_service(TopologyServer::new(service));
    let served = host.serve_router(router, listener).await;
    poller.abort();
    served
}
