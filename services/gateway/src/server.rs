//! Assembles the gateway: writer, metadata refresher, the gRPC stack (ingest, health,
//! reflection, with tower limits) and the admin endpoint; and shuts it down in order.

use crate::config::GatewayConfig;
use crate::metrics::GatewayMetrics;
use crate::service::IngestService;
use anyhow::Context;
use ballast_balancer::{BalancerConfig, PartitionStatus};
use ballast_failover::{Diverts, Enqueuer};
use ballast_kafka::ClusterMetadata;
use ballast_produce::Writer;
use ballast_proto::ingest::v1::ingest_server::IngestServer;
use ballast_telemetry::Host;
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
    /// Under ordering: the diverted partitions, read from the failover queue.
    diverts: Option<Arc<Diverts>>,
    writer: Arc<Writer>,
    metrics: GatewayMetrics,
    registry: Registry,
}

/// A cheap handle for inspecting and steering a running gateway (tests, the dev stack).
#[derive(Debug, Clone)]
pub struct GatewayHandle {
    writer: Arc<Writer>,
}

impl GatewayHandle {
    pub fn partition_status(&self, topic: &str) -> Vec<PartitionStatus> {
        self.writer.partition_status(topic)
    }

    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        self.writer.metadata()
    }

    pub async fn refresh_metadata(&self) -> Result<(), ballast_kafka::Error> {
        self.writer.refresh_metadata().await
    }

    /// Under ordering: whether this gateway holds a clean lease (a read of the diverted
    /// partitions less than `ordering.lease` old). None without ordering.
    pub fn ordering_lease_held(&self) -> Option<bool> {
        self.writer.ordering().map(|d| d.lease_held())
    }

    pub fn set_draining_brokers(&self, brokers: HashSet<i32>) {
        self.writer.set_draining_brokers(brokers)
    }

    /// The gateway's write path.
    pub fn writer(&self) -> Arc<Writer> {
        self.writer.clone()
    }
}

/// A gateway serving in this process on free loopback ports (tests, the bench's
/// in-process figures). Dropping it signals shutdown.
#[derive(Debug)]
pub struct LocalGateway {
    pub handle: GatewayHandle,
    /// The gRPC address.
    pub addr: std::net::SocketAddr,
    /// The `/metrics` address.
    pub admin_addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl LocalGateway {
    /// Signals shutdown without waiting.
    pub fn trigger_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Signals shutdown and waits for the gateway to drain and stop.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.trigger_stop();
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }
}

impl Drop for LocalGateway {
    fn drop(&mut self) {
        self.trigger_stop();
    }
}

impl Gateway {
    /// Serves on free loopback ports in this process until the returned handle stops.
    pub async fn spawn_local(self) -> anyhow::Result<LocalGateway> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let admin = TcpListener::bind("127.0.0.1:0").await?;
        let (addr, admin_addr) = (listener.local_addr()?, admin.local_addr()?);
        let handle = self.handle();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(self.run(listener, admin, async {
            let _ = rx.await;
        }));
        Ok(LocalGateway {
            handle,
            addr,
            admin_addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Builds the gateway: the writer, and the failover queue when one is configured.
    pub async fn new(config: GatewayConfig) -> anyhow::Result<Self> {
        config.validate()?;
        let mut registry = Registry::default();
        let (metrics, write_metrics) = GatewayMetrics::register(&mut registry);
        if config.failover.node_local() {
            tracing::warn!(
                database_url = %config.failover.database_url,
                "failover queue is node-local (sqlite): records acknowledged from it are lost with this node"
            );
        }
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
        let diverts = failover
            .as_ref()
            .filter(|_| config.ordering.any_ordered())
            .map(|f| Arc::new(Diverts::new(config.ordering.clone(), f.queue())));
        let writer = Writer::new(
            &config.kafka,
            BalancerConfig {
                rack: config.rack.clone(),
                breaker: config.breaker.clone(),
                sticky_records: config.sticky_records,
                spillover: config.spillover.clone(),
            },
            config.limits.write_path(),
            write_metrics,
            failover,
        )
        .context("creating the kafka writer")?;
        let writer = match &diverts {
            Some(d) => writer.with_ordering(d.clone()),
            None => writer,
        };
        Ok(Self {
            config,
            diverts,
            writer: Arc::new(writer),
            metrics,
            registry,
        })
    }

    pub fn handle(&self) -> GatewayHandle {
        GatewayHandle {
            writer: self.writer.clone(),
        }
    }

    /// Serves gRPC on `listener` and metrics on `admin` until `shutdown` resolves, then:
    /// health goes NOT_SERVING, no new work is accepted, in-flight work drains within
    /// `shutdown_grace`, and the writer is flushed.
    pub async fn run(
        self,
        listener: TcpListener,
        admin: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let writer = self.writer.clone();
        let mut host = Host::start::<IngestServer<IngestService>>(
            admin,
            self.registry,
            self.config.shutdown_grace,
            shutdown,
        )
        .await;
        host.secure(&self.config.tls)?;
        let access = host.access(&self.config.auth)?;

        // Serving once the first metadata arrives; Kafka may come up after the gateway.
        // Under ordering, the diverted partitions are read first: until they are, every
        // ordered fixed-partition record would go to the queue.
        let diverts = self.diverts.clone().map(|d| {
            let lease = d.config().lease;
            (d, lease)
        });
        let divert_reader = diverts.as_ref().map(|(d, _)| d.clone());
        let first = {
            let writer = writer.clone();
            let health = host.health();
            tokio::spawn(async move {
                if let Some((d, lease)) = &diverts {
                    match tokio::time::timeout(*lease, d.refresh()).await {
                        Ok(Ok(n)) => tracing::info!(diverted = n, "diverted partitions read"),
                        Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the diverted partitions yet; ordered fixed-partition records go to the failover queue until they are read"),
                        Err(_) => tracing::warn!("the diverted partitions were not read within ordering.lease; ordered fixed-partition records go to the failover queue until they are read"),
                    }
                }
                loop {
                    match writer.refresh_metadata().await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "waiting for kafka metadata");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
                health.set_serving(true).await;
                tracing::info!("kafka metadata loaded; serving");
            })
        };
        let refresher = writer.spawn_refresher(self.config.kafka.metadata_refresh_interval);
        // The ordering gauges follow the lease as it runs out between reads (a slow
        // read, one that fails), not only as each read ends: sampled every tenth of it.
        let divert_gauges = divert_reader.clone().map(|d| {
            let m = self.metrics.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(d.config().lease / 10);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    m.ordering_lease_lost.set(i64::from(!d.lease_held()));
                    m.ordering_diverted_partitions.set(d.count() as i64);
                }
            })
        });
        let divert_refresher = divert_reader.map(Diverts::spawn_refresher);

        let topology = self.config.topology.endpoint.clone().map(|endpoint| {
            crate::topology::spawn_watcher(
                writer.clone(),
                self.metrics.clone(),
                self.config.topology.clone(),
                endpoint,
            )
        });

        let limits = &self.config.limits;
        let (reflection, reflection_v1alpha) = ballast_telemetry::grpc_reflection()?;
        tracing::info!(addr = %listener.local_addr()?, "ingest gateway listening");
        let server = tonic::transport::Server::builder()
            // Batches of 100 KiB and more: windows that fit them avoid a WINDOW_UPDATE
            // round trip per request.
            .initial_stream_window_size(Some(limits.grpc_stream_window_bytes))
            .initial_connection_window_size(Some(limits.grpc_stream_window_bytes.saturating_mul(8)))
            // A batch that fits one frame is read in one piece.
            .max_frame_size(Some(limits.grpc_max_frame_bytes))
            .timeout(limits.request_timeout)
            .load_shed(true)
            .concurrency_limit_per_connection(limits.max_concurrent_requests_per_connection)
            // Across all connections: with load shedding on, a request past the limit fails
            // at once with RESOURCE_EXHAUSTED instead of adding work.
            .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                limits.max_concurrent_requests,
            ))
            .add_service(host.health_service())
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(
                IngestServer::new(IngestService::new(
                    writer.clone(),
                    limits.clone(),
                    self.metrics.clone(),
                    access,
                ))
                .max_decoding_message_size(limits.max_request_bytes),
            )
            .serve_with_incoming_shutdown(
                host.incoming(listener, Some(limits.max_connections)),
                host.stopping(),
            );
        let served = host.serve(server).await;
        writer.begin_shutdown();
        first.abort();
        refresher.abort();
        for t in [divert_refresher, divert_gauges].into_iter().flatten() {
            t.abort();
        }
        if let Some(t) = topology {
            t.abort();
        }
        let flush = writer.clone();
        tokio::task::spawn_blocking(move || flush.flush(Duration::from_secs(5)))
            .await
            .ok();
        tracing::info!("gateway stopped");
        served
    }
}
