//! The dedup service: `ballast.dedup.v1.Dedup` over gRPC, backed by Redis (single node or
//! cluster) or memory. It validates input, maps store errors to gRPC codes and counts
//! claims; the semantics live in `ballast-dedup-store`.

pub mod config;
mod service;

pub use config::{Backend, DedupConfig, DedupLimits};
pub use service::{build_store, register_metrics, DedupService};

use ballast_proto::dedup::v1::dedup_server::DedupServer;
use ballast_telemetry::Host;
use prometheus_client::registry::Registry;
use std::future::Future;
use tokio::net::TcpListener;

/// Serves Dedup (with health and reflection) on `listener` and metrics on `admin` until
/// `shutdown`; then health goes NOT_SERVING and in-flight calls finish within
/// `shutdown_grace`.
pub async fn run(
    config: DedupConfig,
    listener: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let store = build_store(&config).await?;
    let mut registry = Registry::default();
    let service = DedupService::new(store, config.limits.clone(), &mut registry);
    let mut host =
        Host::start::<DedupServer<DedupService>>(admin, registry, config.shutdown_grace, shutdown)
            .await;
    host.secure(&config.tls)?;
    let access = host.access(&config.auth)?;
    let service = service.with_access(access);
    host.health().set_serving(true).await;
    tracing::info!(addr = %listener.local_addr()?, backend = config.backend.label(), "dedup listening");
    let router = host.router()?.add_service(DedupServer::new(service));
    host.serve_router(router, listener).await
}
