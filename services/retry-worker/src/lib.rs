//! The retry-worker fleet: drains the failover queue back into each record's original
//! topic (STRICT keys to their murmur2 partition, message ids kept), with a delay, backoff,
//! max attempts and a dead-letter store that operators browse and redrive over
//! `ballast.retry.v1.RetryAdmin`. Workers keep no state: any number can share a queue.
// The worker's decide future nests deeply (queue, producer and librdkafka context types).
#![recursion_limit = "256"]

pub mod admin;
pub mod config;
pub mod worker;

pub use config::{RetrySettings, WorkerConfig};

use anyhow::Context;
use ballast_balancer::BalancerConfig;
use ballast_produce::{WriteLimits, WriteMetrics, Writer};
use ballast_proto::retry::v1::retry_admin_server::RetryAdminServer;
use ballast_telemetry::Host;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use worker::{Worker, WorkerMetrics};

/// librdkafka's largest `message.max.bytes`.
const RDKAFKA_MAX_MESSAGE_BYTES: &str = "1000000000";

/// Registers the worker's series, `ballast_retry_*`: the queue's and the write path's.
pub fn register_metrics(registry: &mut Registry) -> (WorkerMetrics, WriteMetrics) {
    let metrics = WorkerMetrics::register(registry);
    let write = WriteMetrics::register(registry.sub_registry_with_prefix("ballast_retry"));
    (metrics, write)
}

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
    let (metrics, write_metrics) = register_metrics(&mut registry);
    // A queued record was admitted by some gateway, under limits this worker does not
    // know, and may have gained a `traceparent` header since: only Kafka may refuse it for
    // its size (dead-lettered with Kafka's reason). So the worker has no size limit of its
    // own, and librdkafka's client-side check (1,000,000 bytes by default) is lifted to its
    // maximum, leaving the broker's `message.max.bytes` to decide.
    let mut kafka = config.kafka.clone();
    kafka
        .properties
        .insert("message.max.bytes".into(), RDKAFKA_MAX_MESSAGE_BYTES.into());
    let writer = Arc::new(
        Writer::new(
            &kafka,
            BalancerConfig {
                rack: config.rack.clone(),
                breaker: config.breaker.clone(),
                sticky_records: 1,
                spillover: config.spillover.clone(),
            },
            WriteLimits {
                max_record_bytes: usize::MAX,
                // Any record a gateway took fits alone (a gateway's own budget is at most
                // u32::MAX); the worker's memory is bounded by the batches it leases.
                inflight_bytes: u32::MAX as usize,
                record_deadline: config.kafka.write_timeout * 3,
                ..WriteLimits::default()
            },
            write_metrics,
            None,
        )
        .context("creating the kafka writer")?,
    );
    if let Err(e) = writer.refresh_metadata().await {
        tracing::warn!(error = %e, "kafka is not reachable yet; waiting before draining");
    }
    let refresher = writer.spawn_refresher(config.kafka.metadata_refresh_interval);

    let mut host = Host::start::<RetryAdminServer<admin::RetryAdminService>>(
        admin,
        registry,
        config.shutdown_grace,
        shutdown,
    )
    .await;
    host.secure(&config.tls)?;
    let access = host.access(&config.auth)?;
    host.health().set_serving(true).await;
    let worker = Arc::new(Worker::new(
        queue.clone(),
        writer.clone(),
        config.retry.clone(),
        metrics.clone(),
    ));
    let runners: Vec<_> = (0..config.retry.runner_count)
        .map(|_| tokio::spawn(worker.clone().run(host.stop_signal())))
        .collect();
    // Upkeep the queue asks for (SQS FIFO: the barriers that end drained diverts).
    let upkeep = {
        let (queue, every) = (queue.clone(), config.ordering.lease);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = queue.maintain().await {
                    tracing::warn!(error = %e, "failover queue upkeep failed; tried again in one ordering.lease");
                }
            }
        })
    };
    let stats = tokio::spawn(publish_stats(
        queue.clone(),
        metrics,
        config.retry.stats_interval,
    ));
    tracing::info!(
        backend = queue.backend(),
        queue = queue.queue(),
        runners = config.retry.runner_count,
        addr = %listener.local_addr()?,
        "retry worker draining"
    );
    let mut stop = host.stop_signal();
    let router = host
        .router()?
        .add_service(RetryAdminServer::new(admin::RetryAdminService::new(
            queue.clone(),
            access,
        )));
    let served = tokio::spawn(host.serve_router(router, listener));

    let _ = stop.wait_for(|v| *v).await;
    tracing::info!("stopping: finishing batches in hand");
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
    upkeep.abort();
    refresher.abort();
    let flush = writer.clone();
    tokio::task::spawn_blocking(move || flush.flush(Duration::from_secs(5)))
        .await
        .ok();
    served.await?
}

async fn publish_stats(
    queue: Arc<dyn ballast_failover::FailoverQueue>,
    m: WorkerMetrics,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    // A count slower than the interval is followed by a full interval, not a burst.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match queue.stats().await {
            Ok(s) => m.publish(Some(&s)),
            Err(e) => {
                tracing::debug!(error = %e, "queue stats");
                m.publish(None);
            }
        }
    }
}
