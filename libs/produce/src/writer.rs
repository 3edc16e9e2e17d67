//! [`Writer`]: admission, placement, Kafka attempts and failover, composed.

use crate::admit::{self, Budget, WriteLimits};
use crate::attempt::Attempts;
use crate::failover;
use crate::metrics::WriteMetrics;
use crate::placement::{self, Placement};
use crate::record::{Acked, Produced, Record};
use ballast_balancer::{BalancerConfig, PartitionStatus};
use ballast_core::{new_message_id, ErrorCode, RecordError};
use ballast_failover::Enqueuer;
use ballast_kafka::{ClusterMetadata, KafkaConfig, KafkaProducer};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// The write path shared by every caller: budget, balancer, metadata, producer and the
/// optional failover queue.
pub struct Writer {
    placement: Arc<Placement>,
    kafka: KafkaProducer,
    budget: Budget,
    limits: WriteLimits,
    metrics: WriteMetrics,
    failover: Option<Enqueuer>,
    shutting_down: AtomicBool,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl Writer {
    pub fn new(
        kafka_cfg: &KafkaConfig,
        balancer_cfg: BalancerConfig,
        limits: WriteLimits,
        metrics: WriteMetrics,
        failover: Option<Enqueuer>,
    ) -> Result<Self, ballast_kafka::Error> {
        let kafka = KafkaProducer::new(kafka_cfg)?;
        metrics
            .inflight_bytes_limit
            .set(i64::try_from(limits.inflight_bytes).unwrap_or(i64::MAX));
        Ok(Self {
            placement: Arc::new(Placement::new(kafka_cfg, balancer_cfg, metrics.clone())?),
            kafka,
            budget: Budget::new(limits.inflight_bytes, metrics.inflight_bytes.clone()),
            limits,
            metrics,
            failover,
            shutting_down: AtomicBool::new(false),
        })
    }

    /// Fetches metadata and installs it in the balancer.
    pub async fn refresh_metadata(&self) -> Result<(), ballast_kafka::Error> {
        self.placement.refresh().await
    }

    /// Keeps metadata fresh every `interval` until the returned task is aborted.
    pub fn spawn_refresher(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        placement::spawn_refresher(self.placement.clone(), interval)
    }

    /// The last metadata seen.
    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        self.placement.metadata()
    }

    /// The known topics records have been written to.
    pub fn topics_in_use(&self) -> Vec<String> {
        self.placement.topics_in_use()
    }

    /// Whether the cluster answered the last metadata refresh.
    pub fn cluster_reachable(&self) -> bool {
        self.placement.reachable()
    }

    /// Holds open the partitions led by these brokers (about to be interrupted).
    pub fn set_draining_brokers(&self, brokers: HashSet<i32>) {
        self.placement.set_draining_brokers(brokers)
    }

    /// Breaker and load state of every partition of a topic.
    pub fn partition_status(&self, topic: &str) -> Vec<PartitionStatus> {
        self.placement.status(topic)
    }

    /// Whether a record for `topic` could go to Kafka now: the cluster answered the last
    /// metadata refresh and some partition of the topic is healthy.
    pub fn topic_writable(&self, topic: &str) -> bool {
        self.cluster_reachable() && self.placement.has_healthy_partition(topic)
    }

    /// Whether this record could go to Kafka now: the cluster is reachable and the
    /// partition it may use (its STRICT key's, its explicit one, or any for the others) is
    /// healthy.
    pub fn record_writable(&self, rec: &Record) -> bool {
        self.cluster_reachable() && self.placement.could_place(&rec.pick_request(&[], true))
    }

    /// Whether the cluster says `topic` does not exist (on a healthy metadata answer).
    pub fn topic_absent(&self, topic: &str) -> bool {
        self.placement.topic_absent(topic)
    }

    /// The failover queue, when one is configured.
    pub fn failover_queue(&self) -> Option<Arc<dyn ballast_failover::FailoverQueue>> {
        self.failover.as_ref().map(Enqueuer::queue)
    }

    pub fn limits(&self) -> &WriteLimits {
        &self.limits
    }

    pub fn metrics(&self) -> &WriteMetrics {
        &self.metrics
    }

    /// New records fail with SHUTTING_DOWN from now on.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Waits for queued Kafka writes to finish (blocking).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.kafka.flush(timeout) {
            tracing::warn!(error = %e, "producer flush did not finish");
        }
    }

    /// Places and writes one record, and answers for it.
    pub async fn write(&self, rec: Record) -> Produced {
        let started = Instant::now();
        let message_id = if rec.message_id.is_empty() {
            new_message_id()
        } else {
            rec.message_id.clone()
        };
        let span = tracing::debug_span!(
            target: ballast_telemetry::trace::TARGET,
            "ballast.write",
            topic = %rec.topic,
            message_id = %message_id,
            outcome = tracing::field::Empty,
        );
        let topic = rec.topic.clone();
        let write = self.write_inner(rec, &message_id, started);
        // Spans are DEBUG: off by default, and then not worth a wrapper per record.
        let outcome = if span.is_disabled() {
            write.await
        } else {
            write.instrument(span.clone()).await
        };
        span.record(
            "outcome",
            match &outcome {
                Ok(Acked::Kafka { .. }) => "kafka",
                Ok(Acked::Failover { .. }) => "failover",
                Err(e) => e.code.label(),
            },
        );
        Produced {
            message_id,
            topic,
            outcome,
            elapsed: started.elapsed(),
        }
    }

    async fn write_inner(
        &self,
        rec: Record,
        message_id: &str,
        started: Instant,
    ) -> Result<Acked, RecordError> {
        use ErrorCode::*;
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(RecordError::new(ShuttingDown, "gateway is shutting down"));
        }
        let size = admit::validate(&rec, message_id, &self.limits)?;
        // Held until the record's fate is known, counting both copies in flight.
        let _admitted = self.budget.admit(size * admit::COPIES_IN_FLIGHT)?;
        self.placement.learn_topic(&rec.topic).await;
        let attempts = Attempts {
            placement: &self.placement,
            kafka: &self.kafka,
            metrics: &self.metrics,
            limits: &self.limits,
        };
        match attempts.write(&rec, message_id, size, started).await {
            // Kafka cannot take it now: the failover queue may.
            Err(e) if e.code == Unavailable => match &self.failover {
                // Boxed, as the rare path: the record's future stays small.
                Some(queue) => Box::pin(failover::fail_over(queue, rec, message_id, &e)).await,
                None => Err(e),
            },
            other => other,
        }
    }
}
