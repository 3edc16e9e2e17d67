//! The retry-worker fleet: drains the failover queue back into each record's original
//! topic (STRICT keys to their murmur2 partition, message ids kept), with a delay, backoff,
//! max attempts and a dead-letter store that operators browse and redrive over
//! `ballast.retry.v1.RetryAdmin`. Workers keep no state: any number can share a queue.

pub mod admin;
pub mod config;
pub mod worker;

pub use config::{RetrySettings, WorkerConfig};

use anyhow::Context;
use ballast_balancer::BalancerConfig;
use ballast_gateway::metrics::GatewayMetrics;
use ballast_gateway::{Limits, Producer};
use ballast_proto::retry::v1::retry_admin_server::RetryAdminServer;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use worker::{Worker, WorkerMetrics};

/// Runs `retry.runner_count` drain loops, RetryAdmin on `listener` and metrics on `admin`
/// until `shutdown`; then stops pulling, finishes the batches in hand, and exits.
pub async fn run(
    config: WorkerConfig,
    listener: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let queue = config
        .failover
        .open()
        .await
        .context("opening the failover queue")?
        .context("no failover queue configured")?;
    let mut registry = Registry::default();
    let producer_metrics = GatewayMetrics::register(&mut registry);
    let metrics = WorkerMetrics::register(&mut registry);
    let producer = Arc::new(
        Producer::new(
            &config.kafka,
            BalancerConfig {
                rack: config.rack.clone(),
                breaker: config.breaker.clone(),
                sticky_records: 1,
            },
            Limits {
                record_deadline: config.kafka.write_timeout * 3,
                ..Limits::default()
            },
            producer_metrics,
            None,
        )
        .context("creating the kafka producer")?,
    );
    if let Err(e) = producer.refresh_metadata().await {
        tracing::warn!(error = %e, "kafka is not reachable yet; waiting before draining");
    }
    let refresher = producer.spawn_refresher(config.kafka.metadata_refresh_interval);

    let (stop_tx, stop_rx) = watch::channel(false);
    let worker = Arc::new(Worker::new(
        queue.clone(),
        producer.clone(),
        config.retry.clone(),
        metrics.clone(),
    ));
    let runners: Vec<_> = (0..config.retry.runner_count)
        .map(|_| tokio::spawn(worker.clone().run(stop_rx.clone())))
        .collect();
    let stats = tokio::spawn(publish_stats(queue.clone(), metrics));

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<RetryAdminServer<admin::RetryAdminService>>()
        .await;
    let reflection = ballast_telemetry::grpc_reflection()?;
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let admin_task = tokio::spawn(ballast_telemetry::serve_admin(
        admin,
        Arc::new(registry),
        stopped(stop_rx.clone()),
    ));
    tracing::info!(
        backend = queue.backend(),
        queue = queue.queue(),
        runners = config.retry.runner_count,
        addr = %listener.local_addr()?,
        "retry worker draining"
    );
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .add_service(reflection)
            .add_service(RetryAdminServer::new(admin::RetryAdminService::new(
                queue.clone(),
            )))
            .serve_with_incoming_shutdown(
                ballast_telemetry::incoming_nodelay(listener),
                stopped(stop_rx.clone()),
            ),
    );

    shutdown.await;
    tracing::info!("stopping: finishing batches in hand");
    let _ = stop_tx.send(true);
    let drain = async {
        for r in runners {
            let _ = r.await;
        }
    };
    if tokio::time::timeout(config.shutdown_grace, drain)
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace elapsed; unfinished entries return when their leases end");
    }
    stats.abort();
    refresher.abort();
    let flush = producer.clone();
    tokio::task::spawn_blocking(move || flush.flush(Duration::from_secs(5)))
        .await
        .ok();
    server.await.ok();
    admin_task.await.ok();
    Ok(())
}

async fn publish_stats(queue: Arc<dyn ballast_failover::FailoverQueue>, m: WorkerMetrics) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        match queue.stats().await {
            Ok(s) => {
                m.depth.set(s.depth as i64);
                m.oldest_age_seconds.set((s.oldest_age_ms / 1000) as i64);
                m.in_flight.set(s.in_flight as i64);
                m.dead_letters.set(s.dead_letters as i64);
            }
            Err(e) => tracing::debug!(error = %e, "queue stats"),
        }
    }
}
