//! Placing and writing one record: validation, the in-flight byte budget, partition choice
//! through the balancer, the Kafka write, and rerouting within the record's deadline.

use crate::config::Limits;
use crate::metrics::GatewayMetrics;
use ballast_balancer::{
    Balancer, BalancerConfig, FailureKind, KeyPolicy, PartitionStatus, PickError, PickRequest,
};
use ballast_core::{
    new_message_id, validate_message_id, validate_topic, ErrorCode, RecordError, MESSAGE_ID_HEADER,
};
use ballast_failover::envelope::{self, Envelope, EnvelopeHeader};
use ballast_failover::Enqueuer;
use ballast_kafka::{ClusterMetadata, KafkaConfig, KafkaProducer, MetadataClient, OutgoingRecord};
use ballast_proto::ingest::v1 as pb;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How often an unknown topic may force a metadata refresh.
const FORCED_REFRESH_MIN_GAP: Duration = Duration::from_millis(500);

/// The write path shared by every request: balancer, producer, metadata and budget.
pub struct Producer {
    balancer: Mutex<Balancer>,
    kafka: KafkaProducer,
    metadata_client: MetadataClient,
    metadata: RwLock<Arc<ClusterMetadata>>,
    last_forced_refresh: Mutex<Option<Instant>>,
    budget: Arc<Semaphore>,
    limits: Limits,
    metrics: GatewayMetrics,
    failover: Option<Enqueuer>,
    /// Whether the last metadata refresh reached the cluster.
    metadata_ok: AtomicBool,
    shutting_down: AtomicBool,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").finish_non_exhaustive()
    }
}

/// A record's answer plus what metrics need to know of it.
#[derive(Debug)]
pub struct Produced {
    /// Empty for invalid or unknown topics.
    pub topic: String,
    /// `kafka` or an error code label.
    pub outcome: &'static str,
    pub seconds: f64,
    pub result: pb::RecordResult,
}

/// Where an acknowledged record is.
#[derive(Debug)]
enum Acked {
    Kafka(pb::KafkaAck),
    Failover(pb::FailoverAck),
}

/// A finished record, before conversion to proto.
type Outcome = Result<Acked, RecordError>;

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Producer {
    pub fn new(
        kafka_cfg: &KafkaConfig,
        balancer_cfg: BalancerConfig,
        limits: Limits,
        metrics: GatewayMetrics,
        failover: Option<Enqueuer>,
    ) -> Result<Self, ballast_kafka::Error> {
        let kafka = KafkaProducer::new(kafka_cfg)?;
        let metadata_client = MetadataClient::new(
            kafka_cfg.bootstrap_list(),
            kafka_cfg.client_id.clone(),
            kafka_cfg.metadata_timeout,
        );
        Ok(Self {
            balancer: Mutex::new(Balancer::new(balancer_cfg)),
            kafka,
            metadata_client,
            metadata: RwLock::new(Arc::new(ClusterMetadata::default())),
            last_forced_refresh: Mutex::new(None),
            budget: Arc::new(Semaphore::new(limits.inflight_bytes)),
            limits,
            metrics,
            failover,
            metadata_ok: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
        })
    }

    /// Fetches metadata and installs it in the balancer: leaderless partitions are held
    /// open before any record fails on them.
    pub async fn refresh_metadata(&self) -> Result<(), ballast_kafka::Error> {
        let md = match self.metadata_client.fetch().await {
            Ok(md) => md,
            Err(e) => {
                self.metrics.metadata_refresh_failures.inc();
                self.metadata_ok.store(false, Ordering::Relaxed);
                self.balancer
                    .lock()
                    .expect("balancer lock")
                    .set_cluster_reachable(false);
                self.publish_breaker_metrics();
                return Err(e);
            }
        };
        {
            let mut b = self.balancer.lock().expect("balancer lock");
            b.set_cluster_reachable(true);
            let live: HashSet<&str> = md
                .topics
                .iter()
                .filter(|t| t.error_code == 0 && !t.internal)
                .map(|t| t.name.as_str())
                .collect();
            let gone: Vec<String> = b
                .topics()
                .filter(|t| !live.contains(t))
                .map(str::to_string)
                .collect();
            for t in gone {
                b.remove_topic(&t);
            }
            for t in md.topics.iter().filter(|t| live.contains(t.name.as_str())) {
                b.update_topic(&t.name, &md.balancer_view(t));
            }
        }
        *self.metadata.write().expect("metadata lock") = Arc::new(md);
        self.metadata_ok.store(true, Ordering::Relaxed);
        self.publish_breaker_metrics();
        Ok(())
    }

    /// The last metadata seen.
    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        self.metadata.read().expect("metadata lock").clone()
    }

    /// Holds open the partitions led by these brokers (about to be interrupted).
    pub fn set_draining_brokers(&self, brokers: HashSet<i32>) {
        self.balancer
            .lock()
            .expect("balancer lock")
            .set_draining_brokers(brokers);
        self.publish_breaker_metrics();
    }

    /// Breaker and load state of every partition of a topic.
    pub fn partition_status(&self, topic: &str) -> Vec<PartitionStatus> {
        self.balancer
            .lock()
            .expect("balancer lock")
            .status(topic, Instant::now())
    }

    pub fn publish_breaker_metrics(&self) {
        let now = Instant::now();
        let b = self.balancer.lock().expect("balancer lock");
        let topics: Vec<String> = b.topics().map(str::to_string).collect();
        for t in topics {
            self.metrics.publish_breakers(&t, &b.status(&t, now));
        }
    }

    /// Whether a record for `topic` could go to Kafka now: the cluster answered the last
    /// metadata refresh and some partition of the topic is healthy.
    pub fn topic_writable(&self, topic: &str) -> bool {
        self.metadata_ok.load(Ordering::Relaxed)
            && self
                .balancer
                .lock()
                .expect("balancer lock")
                .has_healthy_partition(topic, Instant::now())
    }

    /// Whether this record could go to Kafka now: the cluster is reachable and the
    /// partition it may use (its STRICT key's, its explicit one, or any for the others) is
    /// healthy.
    pub fn record_writable(&self, rec: &pb::Record) -> bool {
        let policy = match pb::KeyPolicy::try_from(rec.key_policy) {
            Ok(pb::KeyPolicy::Preferred) => KeyPolicy::Preferred,
            _ => KeyPolicy::Strict,
        };
        let req = PickRequest {
            topic: &rec.topic,
            key: rec.key.as_deref(),
            policy,
            partition: rec.partition,
            exclude: &[],
            allow_probe: true,
        };
        self.metadata_ok.load(Ordering::Relaxed)
            && self
                .balancer
                .lock()
                .expect("balancer lock")
                .could_place(&req, Instant::now())
    }

    /// The failover queue, when one is configured.
    pub fn failover_queue(&self) -> Option<Arc<dyn ballast_failover::FailoverQueue>> {
        self.failover.as_ref().map(Enqueuer::queue)
    }

    /// Whether the cluster answered the last metadata refresh.
    pub fn cluster_reachable(&self) -> bool {
        self.metadata_ok.load(Ordering::Relaxed)
    }

    /// Keeps metadata fresh every `interval` until the returned task is aborted.
    pub fn spawn_refresher(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        crate::metadata::spawn_refresher(self.clone(), interval)
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Waits for queued Kafka writes to finish.
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.kafka.flush(timeout) {
            tracing::warn!(error = %e, "producer flush did not finish");
        }
    }

    /// Answers a record that was refused before any work, e.g. over the request limit.
    pub fn reject(&self, rec: pb::Record, err: RecordError) -> Produced {
        Produced {
            topic: String::new(),
            outcome: err.code.label(),
            seconds: 0.0,
            result: pb::RecordResult {
                message_id: rec.message_id,
                outcome: Some(pb::record_result::Outcome::Error(err.to_proto())),
            },
        }
    }

    /// Places and writes one record, and answers for it. Metrics are recorded by the
    /// caller per batch (see [`GatewayMetrics::record_batch`]).
    pub async fn produce(&self, rec: pb::Record) -> Produced {
        let started = Instant::now();
        let message_id = if rec.message_id.is_empty() {
            new_message_id()
        } else {
            rec.message_id.clone()
        };
        let outcome = self.produce_inner(&rec, &message_id, started).await;
        let seconds = started.elapsed().as_secs_f64();
        // Invalid or unknown topics share one metrics label, so clients cannot blow up
        // metric cardinality.
        let topic = if outcome
            .as_ref()
            .is_err_and(|e| matches!(e.code, ErrorCode::InvalidArgument | ErrorCode::NotFound))
        {
            String::new()
        } else {
            rec.topic
        };
        let (label, outcome) = match outcome {
            Ok(Acked::Kafka(ack)) => ("kafka", pb::record_result::Outcome::Kafka(ack)),
            Ok(Acked::Failover(ack)) => ("failover", pb::record_result::Outcome::Failover(ack)),
            Err(e) => (
                e.code.label(),
                pb::record_result::Outcome::Error(e.to_proto()),
            ),
        };
        Produced {
            topic,
            outcome: label,
            seconds,
            result: pb::RecordResult {
                message_id,
                outcome: Some(outcome),
            },
        }
    }

    pub fn metrics(&self) -> &GatewayMetrics {
        &self.metrics
    }

    async fn produce_inner(&self, rec: &pb::Record, message_id: &str, started: Instant) -> Outcome {
        use ErrorCode::*;
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(RecordError::new(ShuttingDown, "gateway is shutting down"));
        }
        validate_topic(&rec.topic).map_err(|e| RecordError::new(InvalidArgument, e.to_string()))?;
        validate_message_id(message_id)
            .map_err(|e| RecordError::new(InvalidArgument, e.to_string()))?;
        if rec.headers.iter().any(|h| h.key.is_empty()) {
            return Err(RecordError::new(InvalidArgument, "header key is empty"));
        }
        if rec.headers.iter().any(|h| h.key == MESSAGE_ID_HEADER) {
            return Err(RecordError::new(
                InvalidArgument,
                "header ballast-message-id is reserved; set message_id instead",
            ));
        }
        let policy = match pb::KeyPolicy::try_from(rec.key_policy) {
            Ok(pb::KeyPolicy::Strict) => KeyPolicy::Strict,
            Ok(pb::KeyPolicy::Preferred) => KeyPolicy::Preferred,
            Err(_) => return Err(RecordError::new(InvalidArgument, "unknown key_policy")),
        };
        let size = record_size(rec);
        if size > self.limits.max_record_bytes {
            return Err(RecordError::new(
                RecordTooLarge,
                format!(
                    "record is {size} bytes; the limit is {} (limits.max_record_bytes)",
                    self.limits.max_record_bytes
                ),
            ));
        }
        let _permit = self
            .budget
            .clone()
            .try_acquire_many_owned(size.max(1) as u32)
            .map_err(|_| {
                RecordError::new(
                    ResourceExhausted,
                    "in-flight byte budget exhausted (limits.inflight_bytes); retry later",
                )
            })?;
        self.metrics.inflight_bytes.inc_by(size as i64);
        let _inflight = InflightGuard(&self.metrics, size as i64);

        if self
            .balancer
            .lock()
            .expect("balancer lock")
            .partition_count(&rec.topic)
            .is_none()
        {
            self.forced_refresh().await;
        }

        match self
            .kafka_write(rec, message_id, policy, size, started)
            .await
        {
            Ok(ack) => Ok(Acked::Kafka(ack)),
            // Kafka cannot take it now: the failover queue may.
            Err(e) if matches!(e.code, Unavailable | DeadlineExceeded) => match &self.failover {
                Some(queue) => self.fail_over(queue, rec, message_id, &e).await,
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Stores the record in the failover queue and acknowledges it from there. When the
    /// queue fails too, the record is not acknowledged.
    async fn fail_over(
        &self,
        queue: &Enqueuer,
        rec: &pb::Record,
        message_id: &str,
        kafka_error: &RecordError,
    ) -> Outcome {
        let env = Envelope {
            topic: rec.topic.clone(),
            key: rec.key.clone(),
            key_policy: rec.key_policy,
            partition: rec.partition,
            value: rec.value.clone(),
            headers: rec
                .headers
                .iter()
                .map(|h| EnvelopeHeader {
                    key: h.key.clone(),
                    value: h.value.clone(),
                })
                .collect(),
            message_id: message_id.to_string(),
            attempt: 0,
            first_failed_at_unix_ms: unix_ms(),
            last_error: kafka_error.message.clone(),
        };
        match queue.enqueue(envelope::encode(&env)).await {
            Ok(entry_id) => Ok(Acked::Failover(pb::FailoverAck {
                backend: queue.backend().to_string(),
                queue: queue.queue_name().to_string(),
                entry_id,
            })),
            Err(e) => Err(RecordError::new(
                ErrorCode::Unavailable,
                format!("kafka: {}; failover: {e}", kafka_error.message),
            )),
        }
    }

    /// Kafka attempts for one admitted record, rerouted within its deadline when allowed.
    async fn kafka_write(
        &self,
        rec: &pb::Record,
        message_id: &str,
        policy: KeyPolicy,
        size: usize,
        started: Instant,
    ) -> Result<pb::KafkaAck, RecordError> {
        use ErrorCode::*;
        let mut headers: Vec<(&str, &[u8])> = rec
            .headers
            .iter()
            .map(|h| (h.key.as_str(), h.value.as_slice()))
            .collect();
        headers.push((MESSAGE_ID_HEADER, message_id.as_bytes()));
        let deadline = started + self.limits.record_deadline;
        let mut tried: Vec<i32> = Vec::new();
        let mut last_error = String::new();
        for attempt in 0..self.limits.max_attempts {
            let now = Instant::now();
            if attempt > 0 && now >= deadline {
                break;
            }
            let req = PickRequest {
                topic: &rec.topic,
                key: rec.key.as_deref(),
                policy,
                partition: rec.partition,
                exclude: &tried,
                allow_probe: attempt == 0,
            };
            let picked = self.balancer.lock().expect("balancer lock").pick(&req, now);
            let pick = match picked {
                Ok(p) => p,
                Err(PickError::UnknownTopic) => {
                    return Err(RecordError::new(NotFound, "unknown topic"))
                }
                Err(e @ PickError::InvalidPartition { .. }) => {
                    return Err(RecordError::new(InvalidArgument, e.to_string()))
                }
                Err(e) if last_error.is_empty() => {
                    return Err(RecordError::new(Unavailable, e.to_string()))
                }
                Err(e) => {
                    return Err(RecordError::new(
                        Unavailable,
                        format!("{e}; last attempt: {last_error}"),
                    ))
                }
            };
            let remaining = deadline.saturating_duration_since(now);
            let budget = self
                .kafka
                .write_timeout()
                .min(remaining.max(Duration::from_millis(1)));
            let write = self.kafka.send(OutgoingRecord {
                topic: &rec.topic,
                partition: pick.partition,
                key: rec.key.as_deref(),
                value: &rec.value,
                headers: &headers,
            });
            let result = match tokio::time::timeout(budget, write).await {
                Ok(r) => r,
                Err(_) => Err(ballast_kafka::WriteError {
                    kind: FailureKind::Timeout,
                    message: format!("no acknowledgement within {budget:?}"),
                }),
            };
            let failure = result.as_ref().err().map(|e| e.kind);
            self.balancer.lock().expect("balancer lock").complete(
                &rec.topic,
                &pick,
                failure,
                Instant::now(),
            );
            match result {
                Ok(w) => {
                    let bytes = if pick.local {
                        &self.metrics.bytes_local
                    } else {
                        &self.metrics.bytes_cross_az
                    };
                    bytes.inc_by(size as u64);
                    return Ok(pb::KafkaAck {
                        partition: w.partition,
                        offset: w.offset,
                    });
                }
                Err(e) => {
                    self.metrics
                        .write_failures
                        .get_or_create(&crate::metrics::FailureLabels {
                            kind: e.kind.label().into(),
                        })
                        .inc();
                    if !e.kind.retryable() {
                        let code = match e.kind {
                            FailureKind::RecordTooLarge => RecordTooLarge,
                            FailureKind::Authorization => PermissionDenied,
                            FailureKind::InvalidTopic => NotFound,
                            _ => Internal,
                        };
                        return Err(RecordError::new(code, e.message));
                    }
                    last_error = format!("partition {}: {}", pick.partition, e.message);
                    // A STRICT key or an explicit partition may not move.
                    let pinned = rec.partition.is_some()
                        || (rec.key.is_some() && policy == KeyPolicy::Strict);
                    if pinned {
                        return Err(RecordError::new(Unavailable, last_error));
                    }
                    // The leader is suspect: skip its other partitions too.
                    let suspects = self
                        .balancer
                        .lock()
                        .expect("balancer lock")
                        .same_leader_partitions(&rec.topic, pick.partition);
                    tried.extend(suspects);
                    self.metrics.reroutes.inc();
                }
            }
        }
        Err(RecordError::new(
            Unavailable,
            format!("no kafka write succeeded within the record's attempts: {last_error}"),
        ))
    }

    /// Refreshes metadata for an unknown topic, at most once per `FORCED_REFRESH_MIN_GAP`.
    async fn forced_refresh(&self) {
        {
            let mut last = self.last_forced_refresh.lock().expect("refresh lock");
            if last.is_some_and(|t| t.elapsed() < FORCED_REFRESH_MIN_GAP) {
                return;
            }
            *last = Some(Instant::now());
        }
        if let Err(e) = self.refresh_metadata().await {
            tracing::debug!(error = %e, "forced metadata refresh failed");
        }
    }
}

struct InflightGuard<'a>(&'a GatewayMetrics, i64);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.inflight_bytes.dec_by(self.1);
    }
}

/// Key + value + header bytes.
pub(crate) fn record_size(rec: &pb::Record) -> usize {
    rec.key.as_ref().map_or(0, Vec::len)
        + rec.value.len()
        + rec
            .headers
            .iter()
            .map(|h| h.key.len() + h.value.len())
            .sum::<usize>()
}
