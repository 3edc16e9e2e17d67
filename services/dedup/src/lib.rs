//! The dedup service: `ballast.dedup.v1.Dedup` over gRPC, backed by Redis (single node or
//! cluster) or memory. It validates input, maps store errors to gRPC codes and counts
//! claims; the semantics live in `ballast-dedup-store`.

pub mod config;
mod service;

pub use config::{Backend, DedupConfig, DedupLimits};
pub use service::{build_store, DedupService};

use anyhow::Context;
use ballast_proto::dedup::v1::dedup_server::DedupServer;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Turns a shutdown future into a signal several tasks can await.
fn shared(
    fut: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        fut.await;
        let _ = tx.send(true);
    });
    rx
}

async fn fired(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

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
    let stop = shared(shutdown);
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<DedupServer<DedupService>>().await;
    let reflection = ballast_telemetry::grpc_reflection()?;
    let admin_task = tokio::spawn(ballast_telemetry::serve_admin(
        admin,
        Arc::new(registry),
        fired(stop.clone()),
    ));
    let signal = {
        let stop = stop.clone();
        async move {
            fired(stop).await;
            reporter
                .set_not_serving::<DedupServer<DedupService>>()
                .await;
        }
    };
    tracing::info!(addr = %listener.local_addr()?, backend = config.backend.label(), "dedup listening");
    let server = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(DedupServer::new(service))
        .serve_with_incoming_shutdown(ballast_telemetry::incoming_nodelay(listener), signal);
    tokio::pin!(server);
    let grace = config.shutdown_grace;
    tokio::select! {
        res = &mut server => res.context("grpc server")?,
        _ = async { fired(stop.clone()).await; tokio::time::sleep(grace).await } => {
            tracing::warn!(?grace, "shutdown grace elapsed");
        }
    }
    admin_task.await.ok();
    Ok(())
}
