//! The write path's metrics. The caller registers them under its own prefix, so the
//! gateway exports `ballast_gateway_*` and a retry worker `ballast_retry_*`.

use ballast_balancer::PartitionStatus;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LocalityLabels {
    /// `local` when the leader is in the writer's rack, else `cross_az`.
    pub locality: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub kind: String,
}

#[derive(Debug, Clone)]
pub struct WriteMetrics {
    pub breaker_state: Family<PartitionLabels, Gauge>,
    pub bytes: Family<LocalityLabels, Counter>,
    /// Handles into `bytes`, looked up once.
    pub bytes_local: Counter,
    pub bytes_cross_az: Counter,
    pub write_failures: Family<FailureLabels, Counter>,
    pub reroutes: Counter,
    pub inflight_bytes: Gauge,
    /// `limits.inflight_bytes`, so saturation is `inflight_bytes / inflight_bytes_limit`.
    pub inflight_bytes_limit: Gauge,
    pub metadata_refresh_failures: Counter,
}

impl WriteMetrics {
    /// Registers the series in `registry`, which the caller has prefixed with its own
    /// name (`registry.sub_registry_with_prefix("ballast_gateway")`).
    pub fn register(registry: &mut Registry) -> Self {
        let bytes = Family::<LocalityLabels, Counter>::default();
        let locality = |l: &str| {
            bytes
                .get_or_create(&LocalityLabels {
                    locality: l.to_string(),
                })
                .clone()
        };
        let (bytes_local, bytes_cross_az) = (locality("local"), locality("cross_az"));
        let m = Self {
            breaker_state: Family::default(),
            bytes,
            bytes_local,
            bytes_cross_az,
            write_failures: Family::default(),
            reroutes: Counter::default(),
            inflight_bytes: Gauge::default(),
            inflight_bytes_limit: Gauge::default(),
            metadata_refresh_failures: Counter::default(),
        };
        registry.register(
            "breaker_state",
            "Circuit breaker state per partition: 0 closed, 1 half-open, 2 open",
            m.breaker_state.clone(),
        );
        registry.register(
            "bytes",
            "Record bytes written to Kafka, by whether the leader was in this process's rack",
            m.bytes.clone(),
        );
        registry.register(
            "write_failures",
            "Failed Kafka write attempts, by failure class",
            m.write_failures.clone(),
        );
        registry.register(
            "reroutes",
            "Records retried on another partition after a failed attempt",
            m.reroutes.clone(),
        );
        registry.register(
            "inflight_bytes",
            "Record bytes currently held by the write path",
            m.inflight_bytes.clone(),
        );
        registry.register(
            "inflight_bytes_limit",
            "The in-flight byte budget (limits.inflight_bytes)",
            m.inflight_bytes_limit.clone(),
        );
        registry.register(
            "metadata_refresh_failures",
            "Failed cluster metadata refreshes",
            m.metadata_refresh_failures.clone(),
        );
        m
    }

    pub(crate) fn publish_breakers(&self, topic: &str, status: &[PartitionStatus]) {
        for s in status {
            self.breaker_state
                .get_or_create(&PartitionLabels {
                    topic: topic.to_string(),
                    partition: s.partition.to_string(),
                })
                .set(s.state.as_gauge());
        }
    }

    pub(crate) fn write_failure(&self, kind: &str) {
        self.write_failures
            .get_or_create(&FailureLabels { kind: kind.into() })
            .inc();
    }
}
