//! Test harness for Ballast's integration tests. It starts real parts on free ports: the
//! librdkafka mock cluster (real Kafka protocol over TCP) and an in-process gateway, and
//! reads back what actually landed in Kafka with a real consumer.
//!
//! Only tests depend on this crate.

use ballast_gateway::{Gateway, GatewayConfig, GatewayHandle};
pub use ballast_kafka::Landed;
use ballast_kafka::{EmbeddedCluster, EmbeddedClusterConfig, TopicSpec};
use ballast_proto::ingest::v1 as pb;
use ballast_proto::ingest::v1::ingest_client::IngestClient;
pub mod deps;
pub mod process;
pub mod redis;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A mock cluster plus an in-process gateway serving on a free port.
#[derive(Debug)]
pub struct GatewayStack {
    pub cluster: Arc<EmbeddedCluster>,
    pub handle: GatewayHandle,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl GatewayStack {
    /// Starts a 3-broker cluster (racks az-a/az-b/az-c) with `topics`, and a gateway in
    /// rack az-a configured by `tweak`.
    pub async fn start(
        topics: &[(&str, i32)],
        tweak: impl FnOnce(&mut GatewayConfig),
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
        let gateway = Gateway::new(cfg).await?;
        let handle = gateway.handle();
        handle.refresh_metadata().await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let admin_addr = admin.local_addr()?;
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway.run(listener, admin, async {
            let _ = rx.await;
        }));
        wait_serving(addr).await?;
        Ok(Self {
            cluster,
            handle,
            addr,
            admin_addr,
            stop: Some(stop),
            task: Some(task),
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
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }

    pub fn trigger_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub async fn metrics_text(&self) -> anyhow::Result<String> {
        http_get(self.admin_addr, "/metrics").await
    }
}

impl Drop for GatewayStack {
    fn drop(&mut self) {
        self.trigger_shutdown();
    }
}

/// Waits until the gRPC health service at `addr` reports SERVING (at most 15 s).
pub async fn wait_serving(addr: SocketAddr) -> anyhow::Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await;
        if let Ok(mut c) = channel.map(HealthClient::new) {
            if let Ok(r) = c
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
            {
                if r.into_inner().status == ServingStatus::Serving as i32 {
                    return Ok(());
                }
            }
        }
        anyhow::ensure!(
            Instant::now() < end,
            "{addr} did not become SERVING within 15s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A minimal HTTP/1.0 GET, enough to scrape `/metrics` in tests.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

/// A record with a value and optional key.
pub fn record(topic: &str, key: Option<&str>, value: &str) -> pb::Record {
    pb::Record {
        topic: topic.into(),
        key: key.map(|k| k.as_bytes().to_vec()),
        value: value.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// Reads `expected` records of `topic` from the beginning with a real Kafka consumer,
/// or whatever arrived within `timeout`.
pub fn consume_all(
    bootstrap: &str,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Landed>> {
    Ok(ballast_kafka::read_topic(
        bootstrap,
        topic,
        Some(expected),
        timeout,
    )?)
}

/// Reads `topic` until `ids` distinct message ids have arrived (or `timeout`). Failover
/// delivers at least once, so counting messages could stop at a duplicate before the last
/// id lands.
pub fn consume_unique(
    bootstrap: &str,
    topic: &str,
    ids: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Landed>> {
    let end = std::time::Instant::now() + timeout;
    let mut want = ids;
    loop {
        let left = end.saturating_duration_since(std::time::Instant::now());
        let got = consume_all(bootstrap, topic, want, left)?;
        let seen: std::collections::HashSet<_> =
            got.iter().filter_map(|l| l.message_id.as_deref()).collect();
        if seen.len() >= ids || left.is_zero() {
            return Ok(got);
        }
        want = got.len() + ids - seen.len();
    }
}

/// The outcome kind of a result, for compact assertions.
pub fn kafka_ack(r: &pb::RecordResult) -> Option<&pb::KafkaAck> {
    match &r.outcome {
        Some(pb::record_result::Outcome::Kafka(a)) => Some(a),
        _ => None,
    }
}

pub fn record_error(r: &pb::RecordResult) -> Option<&pb::RecordError> {
    match &r.outcome {
        Some(pb::record_result::Outcome::Error(e)) => Some(e),
        _ => None,
    }
}
