//! Where a record may go: the balancer (breakers, rack preference, key hashing) and the
//! cluster metadata that keeps it current.

use crate::metrics::WriteMetrics;
use ballast_balancer::FailureKind;
use ballast_balancer::{Balancer, BalancerConfig, PartitionStatus, Pick, PickError, PickRequest};
use ballast_kafka::{ClusterMetadata, KafkaConfig, MetadataClient};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How often an unknown topic may force a metadata refresh.
const FORCED_REFRESH_MIN_GAP: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub(crate) struct Placement {
    balancer: Mutex<Balancer>,
    client: MetadataClient,
    metadata: RwLock<Arc<ClusterMetadata>>,
    /// Whether the last metadata refresh reached the cluster.
    reachable: AtomicBool,
    last_forced_refresh: Mutex<Option<Instant>>,
    /// When every topic was last fetched, and how often that is due.
    last_full_refresh: Mutex<Option<Instant>>,
    full_refresh_every: Duration,
    metrics: WriteMetrics,
    /// The metadata client's byte count already added to `metrics.metadata_bytes`.
    counted_bytes: std::sync::atomic::AtomicU64,
}

impl Placement {
    pub(crate) fn new(
        kafka: &KafkaConfig,
        cfg: BalancerConfig,
        metrics: WriteMetrics,
    ) -> Result<Self, ballast_kafka::Error> {
        Ok(Self {
            balancer: Mutex::new(Balancer::new(cfg)),
            client: MetadataClient::new(
                kafka.bootstrap_list(),
                kafka.client_id.clone(),
                kafka.metadata_timeout,
            )
            .with_security(&kafka.security())?,
            metadata: RwLock::new(Arc::new(ClusterMetadata::default())),
            reachable: AtomicBool::new(false),
            last_forced_refresh: Mutex::new(None),
            last_full_refresh: Mutex::new(None),
            full_refresh_every: kafka
                .metadata_full_refresh_interval
                .max(kafka.metadata_refresh_interval),
            metrics,
            counted_bytes: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn balancer(&self) -> std::sync::MutexGuard<'_, Balancer> {
        self.balancer.lock().expect("balancer lock")
    }

    /// Fetches metadata for every topic and installs it in the balancer: leaderless
    /// partitions are held open before any record fails on them.
    pub(crate) async fn refresh(&self) -> Result<(), ballast_kafka::Error> {
        self.refresh_with(true).await
    }

    /// The periodic refresh: only the topics in use, and every topic when a full refresh
    /// is due (`kafka.metadata_full_refresh_interval`).
    pub(crate) async fn refresh_periodic(&self) -> Result<(), ballast_kafka::Error> {
        let due = self
            .last_full_refresh
            .lock()
            .expect("refresh lock")
            .is_none_or(|t| t.elapsed() >= self.full_refresh_every);
        self.refresh_with(due).await
    }

    pub(crate) fn topics_in_use(&self) -> Vec<String> {
        self.balancer()
            .topics_in_use()
            .map(str::to_string)
            .collect()
    }

    async fn refresh_with(&self, full: bool) -> Result<(), ballast_kafka::Error> {
        let in_use: Option<Vec<String>> = (!full).then(|| self.topics_in_use());
        let fetched = self.client.fetch_topics(in_use.as_deref()).await;
        let total = self.client.bytes_received();
        let before = self.counted_bytes.swap(total, Ordering::Relaxed);
        self.metrics
            .metadata_bytes
            .inc_by(total.saturating_sub(before));
        let mut md = match fetched {
            Ok(md) => md,
            Err(e) => {
                self.metrics.metadata_refresh_failures.inc();
                self.reachable.store(false, Ordering::Relaxed);
                self.balancer().set_cluster_reachable(false);
                self.publish_breakers();
                return Err(e);
            }
        };
        if full {
            *self.last_full_refresh.lock().expect("refresh lock") = Some(Instant::now());
        }
        {
            let mut b = self.balancer();
            b.set_cluster_reachable(true);
            let racks: HashSet<&str> = md
                .brokers
                .iter()
                .filter_map(|b| b.rack.as_deref())
                .collect();
            b.set_zones(racks.len());
            // A topic leaves only when the cluster, answering a full refresh, no longer
            // lists it. A topic listed with an error (LEADER_NOT_AVAILABLE,
            // UNKNOWN_TOPIC_OR_PARTITION while partitions move) keeps its last good view:
            // the error is transient.
            if full {
                let listed: HashSet<&str> = md.topics.iter().map(|t| t.name.as_str()).collect();
                let gone: Vec<String> = b
                    .topics()
                    .filter(|t| !listed.contains(t))
                    .map(str::to_string)
                    .collect();
                for t in gone {
                    b.remove_topic(&t);
                }
            }
            for t in md.topics.iter() {
                if t.internal {
                    continue;
                }
                if t.error_code == 0 {
                    b.update_topic(&t.name, &md.balancer_view(t));
                } else {
                    tracing::debug!(topic = %t.name, error_code = t.error_code, "topic metadata error; keeping the last view");
                }
            }
        }
        if !full {
            // The topics not asked for keep their view from the last full refresh.
            let previous = self.metadata();
            let asked: HashSet<&str> = md.topics.iter().map(|t| t.name.as_str()).collect();
            let kept: Vec<_> = previous
                .topics
                .iter()
                .filter(|t| !asked.contains(t.name.as_str()))
                .cloned()
                .collect();
            md.topics.extend(kept);
            md.topics.sort_by(|a, b| a.name.cmp(&b.name));
        }
        *self.metadata.write().expect("metadata lock") = Arc::new(md);
        self.reachable.store(true, Ordering::Relaxed);
        self.publish_breakers();
        Ok(())
    }

    /// Refreshes metadata for a topic the balancer does not know, at most once per
    /// `FORCED_REFRESH_MIN_GAP`.
    pub(crate) async fn learn_topic(&self, topic: &str) {
        // Known topics are marked in use: the periodic refresh asks for them.
        if self.balancer().touch(topic).is_some() {
            return;
        }
        {
            let mut last = self.last_forced_refresh.lock().expect("refresh lock");
            if last.is_some_and(|t| t.elapsed() < FORCED_REFRESH_MIN_GAP) {
                return;
            }
            *last = Some(Instant::now());
        }
        // Boxed: the metadata fetch (connect, TLS, SASL) is a large future, and inlining it
        // would make every record's write future carry it.
        if let Err(e) = Box::pin(self.refresh_with(true)).await {
            tracing::debug!(error = %e, "forced metadata refresh failed");
        }
        self.balancer().touch(topic);
    }

    pub(crate) fn metadata(&self) -> Arc<ClusterMetadata> {
        self.metadata.read().expect("metadata lock").clone()
    }

    pub(crate) fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Whether the cluster says `topic` does not exist: the last metadata refresh reached
    /// it, and its answer (with brokers in it) does not list the topic. Anything less
    /// certain (no answer yet, an unreachable cluster, a topic-level error) is not absence.
    pub(crate) fn topic_absent(&self, topic: &str) -> bool {
        let md = self.metadata();
        self.reachable() && !md.brokers.is_empty() && md.topic(topic).is_none()
    }

    pub(crate) fn set_draining_brokers(&self, brokers: HashSet<i32>) {
        self.balancer().set_draining_brokers(brokers);
        self.publish_breakers();
    }

    pub(crate) fn status(&self, topic: &str) -> Vec<PartitionStatus> {
        self.balancer().status(topic, Instant::now())
    }

    pub(crate) fn has_healthy_partition(&self, topic: &str) -> bool {
        self.balancer().has_healthy_partition(topic, Instant::now())
    }

    /// The partition a record may only go to (its explicit one, or its STRICT key's), when
    /// the topic's partition count is known.
    pub(crate) fn fixed_partition(&self, rec: &crate::Record) -> Option<i32> {
        if let Some(p) = rec.partition {
            return Some(p);
        }
        let key = rec.key.as_deref()?;
        let n = self.balancer().partition_count(&rec.topic)?;
        (n > 0).then(|| ballast_balancer::partition_for_key(key, n))
    }

    /// Whether the balancer could place `req` now. It also keeps the topic's metadata
    /// fresh from now on (the periodic refresh reads the topics in use), as if a record
    /// had been written to it; one lock for both.
    pub(crate) fn could_place_in_use(&self, req: &PickRequest<'_>) -> bool {
        let mut b = self.balancer();
        b.touch(req.topic);
        b.could_place(req, Instant::now())
    }

    pub(crate) fn pick(&self, req: &PickRequest<'_>, now: Instant) -> Result<Pick, PickError> {
        self.balancer().pick(req, now)
    }

    pub(crate) fn complete(
        &self,
        topic: &str,
        pick: &Pick,
        failure: Option<FailureKind>,
        now: Instant,
    ) {
        self.balancer().complete(topic, pick, failure, now);
    }

    /// The partitions of `topic` led by the leader of `partition`.
    pub(crate) fn same_leader_partitions(&self, topic: &str, partition: i32) -> Vec<i32> {
        self.balancer().same_leader_partitions(topic, partition)
    }

    fn publish_breakers(&self) {
        let now = Instant::now();
        let b = self.balancer();
        let topics: Vec<(String, Vec<PartitionStatus>)> = b
            .topics()
            .map(|t| (t.to_string(), b.status(t, now)))
            .collect();
        drop(b);
        self.metrics.publish_breakers(&topics);
    }
}

/// Refreshes metadata every `interval` until the task is aborted.
pub(crate) fn spawn_refresher(
    placement: Arc<Placement>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; the startup refresh already covers it.
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = placement.refresh_periodic().await {
                tracing::warn!(error = %e, "metadata refresh failed; keeping the last view");
            }
        }
    })
}
