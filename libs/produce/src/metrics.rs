//! The write path's metrics. The caller registers them under its own prefix, so the
//! gateway exports `ballast_gateway_*` and a retry worker `ballast_retry_*`.

use ballast_balancer::{BreakerState, PartitionStatus};
use ballast_telemetry::catalog::family;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: String,
}

#[derive(Debug, Clone, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Debug, Clone, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LocalityLabels {
    /// `local` when the leader is in the writer's rack, else `cross_az`.
    pub locality: String,
}

#[derive(Debug, Clone, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub kind: String,
}

#[derive(Debug, Clone)]
pub struct WriteMetrics {
    /// Per partition, only while its breaker is not closed: a cluster of 50k partitions
    /// does not become 50k series per writer.
    pub breaker_state: Family<PartitionLabels, Gauge>,
    /// Partitions by breaker state, over every topic.
    pub breakers: Family<StateLabels, Gauge>,
    /// The partitions `breaker_state` holds a series for.
    exported: Arc<Mutex<HashSet<(String, i32)>>>,
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
    /// Metadata response bytes read from brokers.
    pub metadata_bytes: Counter,
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
            breaker_state: family(Family::default()),
            breakers: family(Family::default()),
            exported: Arc::default(),
            bytes,
            bytes_local,
            bytes_cross_az,
            write_failures: family(Family::default()),
            reroutes: Counter::default(),
            inflight_bytes: Gauge::default(),
            inflight_bytes_limit: Gauge::default(),
            metadata_bytes: Counter::default(),
            metadata_refresh_failures: Counter::default(),
        };
        registry.register(
            "breaker_state",
            "Circuit breaker state of each partition whose breaker is not closed: 1 half-open, 2 open",
            m.breaker_state.clone(),
        );
        registry.register(
            "breakers",
            "Partitions by circuit breaker state (closed, half_open, open)",
            m.breakers.clone(),
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
        registry.register(
            "metadata_bytes",
            "Metadata response bytes read from brokers",
            m.metadata_bytes.clone(),
        );
        m
    }

    /// Publishes every topic's breakers: totals by state, and a series per partition
    /// whose breaker is not closed (removed once it closes).
    pub(crate) fn publish_breakers(&self, topics: &[(String, Vec<PartitionStatus>)]) {
        let mut counts = [0i64; 3];
        let mut exported = self.exported.lock().expect("breaker series lock");
        for (topic, status) in topics {
            for s in status {
                counts[s.state.as_gauge() as usize] += 1;
                let closed = s.state == BreakerState::Closed;
                let key = (topic.clone(), s.partition);
                if closed && !exported.contains(&key) {
                    continue;
                }
                let labels = PartitionLabels {
                    topic: topic.clone(),
                    partition: s.partition.to_string(),
                };
                if closed {
                    self.breaker_state.remove(&labels);
                    exported.remove(&key);
                } else {
                    self.breaker_state
                        .get_or_create(&labels)
                        .set(s.state.as_gauge());
                    exported.insert(key);
                }
            }
        }
        for state in [
            BreakerState::Closed,
            BreakerState::HalfOpen,
            BreakerState::Open,
        ] {
            self.breakers
                .get_or_create(&StateLabels {
                    state: state.label().to_string(),
                })
                .set(counts[state.as_gauge() as usize]);
        }
    }

    pub(crate) fn write_failure(&self, kind: &str) {
        self.write_failures
            .get_or_create(&FailureLabels { kind: kind.into() })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(partition: i32, state: BreakerState) -> PartitionStatus {
        PartitionStatus {
            partition,
            leader: Some(1),
            leader_rack: None,
            state,
            in_flight: 0,
            draining: false,
        }
    }

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn only_breakers_that_are_not_closed_get_a_series_and_totals_count_every_state() {
        let mut registry = Registry::default();
        let m = WriteMetrics::register(registry.sub_registry_with_prefix("w"));
        let closed: Vec<_> = (0..1000).map(|p| status(p, BreakerState::Closed)).collect();
        m.publish_breakers(&[("big".into(), closed.clone())]);
        let t = text(&registry);
        assert!(!t.contains("w_breaker_state{"), "{t}");
        assert!(t.contains("w_breakers{state=\"closed\"} 1000"), "{t}");

        let mut some_open = closed.clone();
        some_open[7] = status(7, BreakerState::Open);
        some_open[9] = status(9, BreakerState::HalfOpen);
        m.publish_breakers(&[("big".into(), some_open)]);
        let t = text(&registry);
        assert!(
            t.contains("w_breaker_state{topic=\"big\",partition=\"7\"} 2"),
            "{t}"
        );
        assert!(
            t.contains("w_breaker_state{topic=\"big\",partition=\"9\"} 1"),
            "{t}"
        );
        assert_eq!(t.matches("w_breaker_state{").count(), 2, "{t}");
        assert!(t.contains("w_breakers{state=\"open\"} 1"), "{t}");
        assert!(t.contains("w_breakers{state=\"half_open\"} 1"), "{t}");
        assert!(t.contains("w_breakers{state=\"closed\"} 998"), "{t}");

        // Closed again: the series go.
        m.publish_breakers(&[("big".into(), closed)]);
        let t = text(&registry);
        assert!(!t.contains("w_breaker_state{"), "{t}");
        assert!(t.contains("w_breakers{state=\"open\"} 0"), "{t}");
    }
}
