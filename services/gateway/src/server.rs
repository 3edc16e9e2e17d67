//! Assembles the gateway: producer, metadata refresher, the gRPC stack (ingest, health,
//! reflection, with tower limits) and the admin endpoint; and shuts it down in order.

use crate::config::GatewayConfig;
use crate::metrics::GatewayMetrics;
use crate::produce::Producer;
use crate::service::IngestService;
use anyhow::Context;
use ballast_balancer::{BalancerConfig, PartitionStatus};
use ballast_failover::Enqueuer;
use ballast_kafka::ClusterMetadata;
use ballast_proto::ingest::v1::ingest_server::IngestServer;
use futures::FutureExt;
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// A gateway ready to serve.
#[derive(Debug)]
pub struct Gateway {
    config: GatewayConfig,
    producer: Arc<Producer>,
    registry: Arc<Registry>,
}

/// A cheap handle for inspecting and steering a running gateway (tests, the dev stack).
#[derive(Debug, Clone)]
pub struct GatewayHandle {
    producer: Arc<Producer>,
}

impl GatewayHandle {
    pub fn partition_status(&self, topic: &str) -> Vec<PartitionStatus> {
        self.producer.partition_status(topic)
    }

    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        self.producer.metadata()
    }

    pub async fn refresh_metadata(&self) -> Result<(), ballast_kafka::Error> {
        self.producer.refresh_metadata().await
    }

    pub fn set_draining_brokers(&self, brokers: HashSet<i32>) {
        self.producer.set_draining_brokers(brokers)
    }

    pub fn producer(&self) -> Arc<Producer> {
        self.producer.clone()
    }
}

impl Gateway {
    /// Builds the gateway: the producer, and the failover queue when one is configured.
    pub async fn new(config: GatewayConfig) -> anyhow::Result<Self> {
        config.validate()?;
        let mut registry = Registry::default();
        let metrics = GatewayMetrics::register(&mut registry);
        let failover = config
            .failover
            .open()
            .await
            .context("opening the failover queue")?
            .map(|queue| {
                tracing::info!(
                    backend = queue.backend(),
                    queue = queue.queue(),
                    "failover queue ready"
                );
                Enqueuer::start(queue, &config.failover, config.breaker.clone())
            });
        let producer = Producer::new(
            &config.kafka,
            BalancerConfig {
                rack: config.rack.clone(),
                breaker: config.breaker.clone(),
                sticky_records: config.sticky_records,
            },
            config.limits.clone(),
            metrics,
            failover,
        )
        .context("creating the kafka producer")?;
        Ok(Self {
            config,
            producer: Arc::new(producer),
            registry: Arc::new(registry),
        })
    }

    pub fn handle(&self) -> GatewayHandle {
        GatewayHandle {
            producer: self.producer.clone(),
        }
    }

    /// Serves gRPC on `listener` and metrics on `admin` until `shutdown` resolves, then:
    /// health goes NOT_SERVING, no new work is accepted, in-flight work drains within
    /// `shutdown_grace`, and the producer is flushed.
    pub async fn run(
        self,
        listener: TcpListener,
        admin: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let shutdown = shutdown.shared();
        let producer = self.producer.clone();
        let grace = self.config.shutdown_grace;

        let (reporter, health) = tonic_health::server::health_reporter();
        set_health(&reporter, false).await;

        // Serving once the first metadata arrives; Kafka may come up after the gateway.
        let first = {
            let producer = producer.clone();
            let reporter = reporter.clone();
            tokio::spawn(async move {
                loop {
                    match producer.refresh_metadata().await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "waiting for kafka metadata");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
                set_health(&reporter, true).await;
                tracing::info!("kafka metadata loaded; serving");
            })
        };
        let refresher = crate::metadata::spawn_refresher(
            producer.clone(),
            self.config.kafka.metadata_refresh_interval,
        );

        let topology = self.config.topology.endpoint.clone().map(|endpoint| {
            crate::topology::spawn_watcher(producer.clone(), self.config.topology.clone(), endpoint)
        });

        let reflection = ballast_telemetry::grpc_reflection()?;

        let limits = &self.config.limits;
        let admin_task = tokio::spawn(ballast_telemetry::serve_admin(
            admin,
            self.registry.clone(),
            shutdown.clone(),
        ));
        let signal = {
            let shutdown = shutdown.clone();
            let reporter = reporter.clone();
            async move {
                shutdown.await;
                set_health(&reporter, false).await;
                tracing::info!("not serving; draining in-flight requests");
            }
        };
        tracing::info!(addr = %listener.local_addr()?, "ingest gateway listening");
        let server = tonic::transport::Server::builder()
            // Batches of 100 KiB and more: windows that fit them avoid a WINDOW_UPDATE
            // round trip per request.
            .initial_stream_window_size(Some(limits.grpc_stream_window_bytes))
            .initial_connection_window_size(Some(limits.grpc_stream_window_bytes.saturating_mul(8)))
            .timeout(limits.request_timeout)
            .load_shed(true)
            .concurrency_limit_per_connection(limits.max_concurrent_requests_per_connection)
            // Across all connections, requests past the limit wait for a slot (bounded by
            // request_timeout) instead of adding work.
            .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                limits.max_concurrent_requests,
            ))
            .add_service(health)
            .add_service(reflection)
            .add_service(IngestServer::new(IngestService::new(producer.clone())))
            .serve_with_incoming_shutdown(ballast_telemetry::incoming_nodelay(listener), signal);
        tokio::pin!(server);
        let deadline = async {
            shutdown.clone().await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            res = &mut server => res.context("grpc server")?,
            _ = deadline => tracing::warn!(?grace, "shutdown grace elapsed; dropping unfinished requests"),
        }
        producer.begin_shutdown();
        first.abort();
        refresher.abort();
        if let Some(t) = topology {
            t.abort();
        }
        let flush = producer.clone();
        tokio::task::spawn_blocking(move || flush.flush(Duration::from_secs(5)))
            .await
            .ok();
        match admin_task.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "admin server"),
            Err(e) => tracing::warn!(error = %e, "admin server task"),
            Ok(Ok(())) => {}
        }
        tracing::info!("gateway stopped");
        Ok(())
    }
}

/// Sets the health of the ingest service and of the server as a whole ("").
async fn set_health(reporter: &tonic_health::server::HealthReporter, serving: bool) {
    use tonic_health::ServingStatus;
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    reporter.set_service_status("", status).await;
    if serving {
        reporter.set_serving::<IngestServer<IngestService>>().await;
    } else {
        reporter
            .set_not_serving::<IngestServer<IngestService>>()
            .await;
    }
}
