//! The gateway's Prometheus metrics.

use ballast_produce::{Produced, WriteMetrics};
use ballast_telemetry::catalog::family;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecordLabels {
    pub topic: String,
    /// `kafka`, `failover`, or an error code label.
    pub outcome: String,
}

#[derive(Debug, Clone, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Debug, Clone)]
pub struct GatewayMetrics {
    pub records: Family<RecordLabels, Counter>,
    pub latency: Family<OutcomeLabels, Histogram>,
    pub topology_connected: Gauge,
    pub topology_updates: Counter,
    pub ordering_lease_lost: Gauge,
    pub ordering_diverted_partitions: Gauge,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~8 s
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.00025, 2.0, 16,
    ))
}

impl GatewayMetrics {
    /// Registers the gateway's own series and the write path's, all as `ballast_gateway_*`.
    pub fn register(registry: &mut Registry) -> (Self, WriteMetrics) {
        let m = Self {
            records: family(Family::default()),
            latency: family(Family::new_with_constructor(latency_histogram)),
            topology_connected: Gauge::default(),
            topology_updates: Counter::default(),
            ordering_lease_lost: Gauge::default(),
            ordering_diverted_partitions: Gauge::default(),
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
            "topology_connected",
            "1 while the WatchTopology stream is open",
            m.topology_connected.clone(),
        );
        r.register(
            "topology_updates",
            "Topology snapshots applied",
            m.topology_updates.clone(),
        );
        r.register(
            "ordering_lease_lost",
            "1 while this gateway holds no read of the diverted partitions younger than ordering.lease (none yet, or the reads fail or are slow), so that its fixed-partition records of ordered topics go to the failover queue; 0 otherwise, and without ordered topics. Sampled every tenth of the lease",
            m.ordering_lease_lost.clone(),
        );
        r.register(
            "ordering_diverted_partitions",
            "Ordered partitions this gateway sends to the failover queue because they are diverted (its last read of the queue's marks, and its own enqueues since). Sampled every tenth of ordering.lease",
            m.ordering_diverted_partitions.clone(),
        );
        let write = WriteMetrics::register(r);
        (m, write)
    }

    /// Counts a batch's records by (topic, outcome) and observes their latencies, with one
    /// label lookup per distinct pair rather than per record.
    pub fn record_batch(&self, produced: &[Produced]) {
        let mut groups: Vec<(&str, &'static str, u64)> = Vec::new();
        let mut outcomes: Vec<&'static str> = Vec::new();
        for p in produced {
            // Invalid or unknown topics share one label, so clients cannot blow up metric
            // cardinality.
            let topic = if p.topic.is_empty() || p.topic_refused() {
                "_invalid"
            } else {
                p.topic.as_str()
            };
            let label = p.label();
            match groups
                .iter_mut()
                .find(|(t, o, _)| *t == topic && *o == label)
            {
                Some(g) => g.2 += 1,
                None => groups.push((topic, label, 1)),
            }
            if !outcomes.contains(&label) {
                outcomes.push(label);
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
            for p in produced.iter().filter(|p| p.label() == outcome) {
                h.observe(p.elapsed.as_secs_f64());
            }
        }
    }
}
