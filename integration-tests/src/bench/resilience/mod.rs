//! The figures about failure and placement, each against a baseline in the same run:
//!
//! - P3: while one broker is lost, the share of unkeyed records acknowledged within
//!   `write_timeout` + 200 ms, through the gateway and through a plain rdkafka producer.
//! - P6: the gateway's peak RSS (a separate process) under 10× overload while Kafka is down
//!   and failover is slow (SQS on moto_server, one batch at a time), against its RSS at
//!   steady load and its in-flight byte budget.
//! - P7: the share of unkeyed bytes written to leaders in the gateway's own zone, against
//!   a plain rdkafka producer's share on the same cluster; and with skewed leadership (the
//!   zone leading 1 or 2 of 6 partitions), the per-partition spread and the local share
//!   with zone-aware spillover, against local-only placement.
//! - P9: how long a key's partition stays diverted after its outage ends, and the key's
//!   write rate meanwhile, under `ordering: partition` against `ordering: none`.

mod broker_loss;
mod divert;
mod locality;
mod overload;
mod skew;

pub use broker_loss::broker_loss;
pub use divert::divert;
pub use locality::locality;
pub use overload::overload;
pub(super) use overload::GatewayProcess;
pub use skew::skew;

use ballast_gateway::{Gateway, GatewayConfig, GatewayHandle, LocalGateway};
use ballast_kafka::{EmbeddedCluster, EmbeddedClusterConfig, TopicSpec};
use ballast_proto::ingest::v1 as pb;
use ballast_proto::ingest::v1::ingest_client::IngestClient;
use rdkafka::config::ClientConfig;
use rdkafka::producer::FutureProducer;
use std::time::Duration;

pub(super) const TOPIC: &str = "bench";
pub(super) const RACK: &str = "az-a";
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// The bench topic's partitions on the resilience clusters.
pub(super) const PARTITIONS: i32 = 6;

pub(super) fn cluster() -> anyhow::Result<EmbeddedCluster> {
    Ok(EmbeddedCluster::start(EmbeddedClusterConfig {
        topics: vec![TopicSpec {
            name: TOPIC.into(),
            partitions: PARTITIONS,
            replication_factor: 3,
        }],
        ..Default::default()
    })?)
}

/// An in-process gateway in `RACK` on `cluster`, serving on a free port.
pub(super) struct InProcess {
    pub(super) handle: GatewayHandle,
    pub(super) client: IngestClient<tonic::transport::Channel>,
    local: LocalGateway,
}

impl InProcess {
    pub(super) async fn start(cluster: &EmbeddedCluster) -> anyhow::Result<Self> {
        Self::start_with(cluster, |_| {}).await
    }

    /// A gateway configured further by `tweak` (a failover queue, say).
    pub(super) async fn start_with(
        cluster: &EmbeddedCluster,
        tweak: impl FnOnce(&mut GatewayConfig),
    ) -> anyhow::Result<Self> {
        let mut cfg = GatewayConfig {
            rack: Some(RACK.into()),
            ..GatewayConfig::default()
        };
        cfg.kafka.bootstrap_servers = cluster.bootstrap_servers().to_string();
        cfg.kafka.write_timeout = WRITE_TIMEOUT;
        tweak(&mut cfg);
        let gateway = Gateway::new(cfg).await?;
        gateway.handle().refresh_metadata().await?;
        let local = gateway.spawn_local().await?;
        let client = IngestClient::connect(format!("http://{}", local.addr)).await?;
        Ok(Self {
            handle: local.handle.clone(),
            client,
            local,
        })
    }

    pub(super) async fn stop(mut self) -> anyhow::Result<()> {
        self.local.stop().await
    }
}

/// A plain rdkafka producer (acks=all, idempotence) that gives up on a record after
/// `timeout`.
pub(super) fn plain_producer(bootstrap: &str, timeout: Duration) -> anyhow::Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        // Java's partitioner for keyed records, as the gateway uses.
        .set("partitioner", "murmur2_random")
        .set("message.timeout.ms", timeout.as_millis().to_string())
        .create()?)
}

pub(super) fn unkeyed(n: usize, value: &[u8]) -> pb::Record {
    pb::Record {
        topic: TOPIC.into(),
        value: value.to_vec().into(),
        message_id: format!("b-{n}"),
        ..Default::default()
    }
}
