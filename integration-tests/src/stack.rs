//! Stacks of Ballast services for the end-to-end tests in `tests/`: a mock Kafka cluster
//! with an in-process gateway on free ports.

use ballast_gateway::{Gateway, GatewayConfig, GatewayHandle, LocalGateway};
use ballast_kafka::{EmbeddedCluster, EmbeddedClusterConfig, TopicSpec};
use ballast_proto::ingest::v1 as pb;
use ballast_proto::ingest::v1::ingest_client::IngestClient;
use ballast_security::ClientSecurity;
use ballast_testkit::{http_get, wait_serving_with};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A mock cluster plus an in-process gateway serving on a free port.
#[derive(Debug)]
pub struct GatewayStack {
    pub cluster: Arc<EmbeddedCluster>,
    pub handle: GatewayHandle,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    local: LocalGateway,
}

impl GatewayStack {
    /// Starts a 3-broker cluster (racks az-a/az-b/az-c) with `topics`, and a gateway in
    /// rack az-a configured by `tweak`.
    pub async fn start(
        topics: &[(&str, i32)],
        tweak: impl FnOnce(&mut GatewayConfig),
    ) -> anyhow::Result<Self> {
        Self::start_secured(topics, tweak, &ClientSecurity::default()).await
    }

    /// [`GatewayStack::start`] for a gateway configured with TLS: `client` is how the
    /// readiness check reaches it.
    pub async fn start_secured(
        topics: &[(&str, i32)],
        tweak: impl FnOnce(&mut GatewayConfig),
        client: &ClientSecurity,
    ) -> anyhow::Result<Self> {
        let cluster = Arc::new(EmbeddedCluster::start(EmbeddedClusterConfig {
            topics: topics
                .iter()
                .map(|(name, partitions)| TopicSpec {
                    name: name.to_string(),
                    partitions: *partitions,
                    replication_factor: 3,
                })
                .collect(),
            ..Default::default()
        })?);
        let mut cfg = GatewayConfig {
            rack: Some("az-a".into()),
            ..GatewayConfig::default()
        };
        cfg.kafka.bootstrap_servers = cluster.bootstrap_servers().to_string();
        cfg.shutdown_grace = Duration::from_secs(5);
        tweak(&mut cfg);
        sqs_unordered(&cfg.failover, &mut cfg.ordering);
        let gateway = Gateway::new(cfg).await?;
        gateway.handle().refresh_metadata().await?;
        let local = gateway.spawn_local().await?;
        wait_serving_with(local.addr, client).await?;
        Ok(Self {
            cluster,
            handle: local.handle.clone(),
            addr: local.addr,
            admin_addr: local.admin_addr,
            local,
        })
    }

    pub async fn client(&self) -> anyhow::Result<IngestClient<tonic::transport::Channel>> {
        Ok(IngestClient::connect(format!("http://{}", self.addr)).await?)
    }

    /// Sends one batch and returns the per-record results.
    pub async fn produce(&self, records: Vec<pb::Record>) -> anyhow::Result<Vec<pb::RecordResult>> {
        let mut client = self.client().await?;
        Ok(client
            .produce(pb::ProduceRequest { records })
            .await?
            .into_inner()
            .results)
    }

    /// The broker that leads `topic/partition` according to the gateway's metadata.
    pub fn leader_of(&self, topic: &str, partition: i32) -> Option<i32> {
        let md = self.handle.metadata();
        let t = md.topic(topic)?;
        let p = t.partitions.iter().find(|p| p.partition == partition)?;
        md.live_leader(p)
    }

    /// Signals shutdown and waits for the gateway to drain and stop.
    pub async fn shutdown(&mut self) -> anyhow::Result<()> {
        self.local.stop().await
    }

    pub fn trigger_shutdown(&mut self) {
        self.local.trigger_stop()
    }

    pub async fn metrics_text(&self) -> anyhow::Result<String> {
        http_get(self.admin_addr, "/metrics").await
    }
}

/// Runs the topology service with `config` until its state shows the cluster reachable
/// with `brokers` brokers (within 10 s), then stops it.
/// A standard SQS failover queue keeps no order: a stack on one whose ordering was left at
/// its default runs unordered (`ordering.default: none`), as the shipped SQS configs do.
pub fn sqs_unordered(
    failover: &ballast_failover::FailoverConfig,
    ordering: &mut ballast_failover::OrderingConfig,
) {
    if failover.backend == ballast_failover::FailoverBackend::Sqs
        && !failover.keeps_order()
        && *ordering == ballast_failover::OrderingConfig::default()
    {
        *ordering = ballast_failover::OrderingConfig::unordered();
    }
}

/// An in-process retry worker; stops when dropped.
#[derive(Debug)]
pub struct Worker {
    pub admin: SocketAddr,
    pub metrics: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Starts a worker on `failover` against `stack`'s cluster, with short waits and
/// backoffs, then `tweak`.
pub async fn start_worker(
    stack: &GatewayStack,
    failover: ballast_failover::FailoverConfig,
    tweak: impl FnOnce(&mut ballast_retry_worker::WorkerConfig),
) -> anyhow::Result<Worker> {
    let mut cfg = ballast_retry_worker::WorkerConfig {
        failover,
        ..ballast_retry_worker::WorkerConfig::default()
    };
    cfg.kafka.bootstrap_servers = stack.cluster.bootstrap_servers().to_string();
    cfg.retry.wait_time = Duration::from_millis(200);
    cfg.retry.backoff_base = Duration::from_millis(200);
    cfg.retry.health_gate_delay = Duration::from_millis(300);
    cfg.retry.lease = Duration::from_secs(10);
    tweak(&mut cfg);
    sqs_unordered(&cfg.failover, &mut cfg.ordering);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let admin = listener.local_addr()?;
    let metrics_addr = metrics.local_addr()?;
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(ballast_retry_worker::run(cfg, listener, metrics, async {
        let _ = rx.await;
    }));
    ballast_testkit::wait_serving(admin).await?;
    Ok(Worker {
        admin,
        metrics: metrics_addr,
        _stop: stop,
    })
}

pub async fn topology_sees_brokers(
    config: ballast_topology::TopologyConfig,
    brokers: usize,
) -> anyhow::Result<()> {
    let state = Arc::new(ballast_topology::TopologyState::new(
        std::time::Duration::from_secs(60),
    ));
    let (grpc, admin) = (
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
    );
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(ballast_topology::run_with_state(
        config,
        state.clone(),
        grpc,
        admin,
        async {
            let _ = rx.await;
        },
    ));
    let mut watch = state.subscribe();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        watch.wait_for(|s| s.kafka_reachable && s.brokers.len() == brokers),
    )
    .await??;
    drop(watch);
    let _ = stop.send(());
    served.await??;
    Ok(())
}

/// Where a record's acknowledgement came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acked {
    Kafka,
    Queue,
}

/// Sends one record and waits for its acknowledgement, sending it again (same message
/// id) `pause` after a retryable error, as a client that writes a key's values one after
/// another does; a record still unacknowledged at `give_up` is an error, as is any
/// other answer.
pub async fn send_until_acked(
    client: &mut IngestClient<tonic::transport::Channel>,
    rec: pb::Record,
    pause: Duration,
    give_up: std::time::Instant,
) -> anyhow::Result<Acked> {
    loop {
        let res = client
            .produce(pb::ProduceRequest {
                records: vec![rec.clone()],
            })
            .await?
            .into_inner()
            .results;
        match res.first().and_then(|r| r.outcome.as_ref()) {
            Some(pb::record_result::Outcome::Kafka(_)) => return Ok(Acked::Kafka),
            Some(pb::record_result::Outcome::Failover(_)) => return Ok(Acked::Queue),
            Some(pb::record_result::Outcome::Error(e))
                if e.retryable && std::time::Instant::now() < give_up =>
            {
                tokio::time::sleep(pause).await;
            }
            other => anyhow::bail!("{} not acknowledged: {other:?}", rec.message_id),
        }
    }
}
