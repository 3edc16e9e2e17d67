//! The gateway's Prometheus metrics.

use ballast_balancer::PartitionStatus;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecordLabels {
    pub topic: String,
    /// `kafka`, `failover`, or an error code label.
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LocalityLabels {
    /// `local` when the leader is in the gateway's rack, else `cross_az`.
    pub locality: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub kind: String,
}

#[derive(Debug, Clone)]
pub struct GatewayMetrics {
    pub records: Family<RecordLabels, Counter>,
    pub latency: Family<OutcomeLabels, Histogram>,
    pub breaker_state: Family<PartitionLabels, Gauge>,
    pub bytes: Family<LocalityLabels, Counter>,
    /// Handles into `bytes`, looked up once.
    pub bytes_local: Counter,
    pub bytes_cross_az: Counter,
    pub write_failures: Family<FailureLabels, Counter>,
    pub reroutes: Counter,
    pub inflight_bytes: Gauge,
    pub metadata_refresh_failures: Counter,
    pub topology_connected: Gauge,
    pub topology_updates: Counter,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~8 s
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.00025, 2.0, 16,
    ))
}

impl GatewayMetrics {
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
            records: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            breaker_state: Family::default(),
            bytes,
            bytes_local,
            bytes_cross_az,
            write_failures: Family::default(),
            reroutes: Counter::default(),
            inflight_bytes: Gauge::default(),
            metadata_refresh_failures: Counter::default(),
            topology_connected: Gauge::default(),
            topology_updates: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("ballast_gateway");
        r.register(
            "records",
            "Records answered, by topic and outcome",
            m.records.clone(),
        );
        r.register(
            "produce_latency_seconds",
            "Time from receiving a record to answering it, by outcome",
            m.latency.clone(),
        );
        r.register(
            "breaker_state",
            "Circuit breaker state per partition: 0 closed, 1 half-open, 2 open",
            m.breaker_state.clone(),
        );
        r.register(
            "bytes",
            "Record bytes written to Kafka, by whether the leader was in this gateway's rack",
            m.bytes.clone(),
        );
        r.register(
            "write_failures",
            "Failed Kafka write attempts, by failure class",
            m.write_failures.clone(),
        );
        r.register(
            "reroutes",
            "Records retried on another partition after a failed attempt",
            m.reroutes.clone(),
        );
        r.register(
            "inflight_bytes",
            "Record bytes currently held by the gateway",
            m.inflight_bytes.clone(),
        );
        r.register(
            "metadata_refresh_failures",
            "Failed cluster metadata refreshes",
            m.metadata_refresh_failures.clone(),
        );
        r.register(
            "topology_connected",
            "1 while the WatchTopology stream is open",
            m.topology_connected.clone(),
        );
        r.register(
            "topology_updates",
            "Topology snapshots applied",
            m.topology_updates.clone(),
        );
        m
    }

    /// Counts a batch's records by (topic, outcome) and observes their latencies, with one
    /// label lookup per distinct pair rather than per record.
    pub fn record_batch(&self, produced: &[crate::produce::Produced]) {
        let mut groups: Vec<(&str, &'static str, u64)> = Vec::new();
        let mut outcomes: Vec<&'static str> = Vec::new();
        for p in produced {
            let topic = if p.topic.is_empty() {
                "_invalid"
            } else {
                p.topic.as_str()
            };
            match groups
                .iter_mut()
                .find(|(t, o, _)| *t == topic && *o == p.outcome)
            {
                Some(g) => g.2 += 1,
                None => groups.push((topic, p.outcome, 1)),
            }
            if !outcomes.contains(&p.outcome) {
                outcomes.push(p.outcome);
            }
        }
        for (topic, outcome, n) in groups {
            self.records
                .get_or_create(&RecordLabels {
                    topic: topic.to_string(),
                    outcome: outcome.to_string(),
                })
                .inc_by(n);
        }
        for outcome in outcomes {
            let h = self.latency.get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            });
            for p in produced.iter().filter(|p| p.outcome == outcome) {
                h.observe(p.seconds);
            }
        }
    }

    pub fn publish_breakers(&self, topic: &str, status: &[PartitionStatus]) {
        for s in status {
            self.breaker_state
                .get_or_create(&PartitionLabels {
                    topic: topic.to_string(),
                    partition: s.partition.to_string(),
                })
                .set(s.state.as_gauge());
        }
    }
}
