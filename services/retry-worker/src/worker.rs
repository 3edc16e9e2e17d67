//! The drain loop: lease entries, hold back what is not due or whose topic has no healthy
//! partition, publish the rest through the write path, and ack,
//! back off or dead-letter each entry.

use crate::config::RetrySettings;
use ballast_core::unix_ms;
use ballast_failover::envelope::{self, Envelope};
use ballast_failover::{DeadInfo, FailoverQueue, Leased};
use ballast_produce::{failover::record_of, Acked, Record, Writer};
use ballast_telemetry::trace;
use futures::stream::{FuturesUnordered, StreamExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Debug, Clone, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// The worker's metrics.
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    records: Family<OutcomeLabels, Counter>,
    pub depth: Gauge,
    pub oldest_age_seconds: OptionalGauge,
    pub in_flight: Gauge,
    pub dead_letters: Gauge,
    pub dead_letters_oldest_age_seconds: OptionalGauge,
    pub queue_retention_seconds: OptionalGauge,
    pub dead_letters_retention_seconds: OptionalGauge,
}

/// A gauge with no series while its value is unknown, so that "unknown" is never read
/// as a measurement of 0.
#[derive(Debug, Clone)]
pub struct OptionalGauge(Arc<std::sync::Mutex<Option<f64>>>);

impl Default for OptionalGauge {
    /// Unknown; with a value while the metrics reference is generated, so it shows there.
    fn default() -> Self {
        let shown = ballast_telemetry::catalog::describing().then_some(0.0);
        Self(Arc::new(std::sync::Mutex::new(shown)))
    }
}

impl OptionalGauge {
    pub fn set(&self, v: Option<f64>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = v;
    }

    fn get(&self) -> Option<f64> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl prometheus_client::encoding::EncodeMetric for OptionalGauge {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        match self.get() {
            Some(v) => encoder.encode_gauge(&v),
            None => Ok(()),
        }
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Gauge
    }

    fn is_empty(&self) -> bool {
        self.get().is_none()
    }
}

impl WorkerMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            records: ballast_telemetry::catalog::family(Family::default()),
            depth: Gauge::default(),
            oldest_age_seconds: OptionalGauge::default(),
            in_flight: Gauge::default(),
            dead_letters: Gauge::default(),
            dead_letters_oldest_age_seconds: OptionalGauge::default(),
            queue_retention_seconds: OptionalGauge::default(),
            dead_letters_retention_seconds: OptionalGauge::default(),
        };
        let r = registry.sub_registry_with_prefix("ballast_retry");
        r.register(
            "records",
            "Queue entries handled: delivered, retried, deferred, dead_lettered",
            m.records.clone(),
        );
        r.register(
            "queue_depth",
            "Entries in the failover queue",
            m.depth.clone(),
        );
        r.register(
            "queue_oldest_age_seconds",
            "Age of the oldest entry in the failover queue (no series while unknown)",
            m.oldest_age_seconds.clone(),
        );
        r.register(
            "dead_letters_oldest_age_seconds",
            "Age of the oldest entry in the dead-letter store (no series while unknown)",
            m.dead_letters_oldest_age_seconds.clone(),
        );
        r.register(
            "queue_retention_seconds",
            "How long the failover queue keeps an entry before deleting it by itself (SQS)",
            m.queue_retention_seconds.clone(),
        );
        r.register(
            "dead_letters_retention_seconds",
            "How long the dead-letter store keeps an entry before deleting it by itself (SQS)",
            m.dead_letters_retention_seconds.clone(),
        );
        r.register(
            "queue_in_flight",
            "Entries leased by workers",
            m.in_flight.clone(),
        );
        r.register(
            "dead_letters",
            "Entries in the dead-letter store",
            m.dead_letters.clone(),
        );
        m
    }

    /// Sets the queue gauges from one count; unknown values (or every value, on an error)
    /// leave their series out.
    pub fn publish(&self, stats: Option<&ballast_failover::QueueStats>) {
        let secs = |ms: Option<u64>| ms.map(|ms| ms as f64 / 1000.0);
        let Some(s) = stats else {
            self.oldest_age_seconds.set(None);
            self.dead_letters_oldest_age_seconds.set(None);
            return;
        };
        self.depth.set(s.depth as i64);
        self.oldest_age_seconds.set(secs(s.oldest_age_ms));
        self.in_flight.set(s.in_flight as i64);
        self.dead_letters.set(s.dead_letters as i64);
        self.dead_letters_oldest_age_seconds
            .set(secs(s.dead_letter_oldest_age_ms));
        self.queue_retention_seconds
            .set(s.retention.map(|d| d.as_secs_f64()));
        self.dead_letters_retention_seconds
            .set(s.dead_letter_retention.map(|d| d.as_secs_f64()));
    }

    fn count(&self, outcome: &str, n: u64) {
        if n > 0 {
            self.records
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.into(),
                })
                .inc_by(n);
        }
    }
}

#[derive(Debug)]
pub struct Worker {
    pub queue: Arc<dyn FailoverQueue>,
    pub writer: Arc<Writer>,
    pub settings: RetrySettings,
    pub metrics: WorkerMetrics,
    /// When the next record may be published, for `drain_rate`.
    pace: tokio::sync::Mutex<Instant>,
}

/// An entry before its write: decided already, or to be written.
enum Prepared {
    Decided(Decision),
    Write(Box<Ready>),
}

struct Ready {
    env: Envelope,
    record: Record,
    span: tracing::Span,
}

enum Decision {
    /// Delivered, at this offset when Kafka has it.
    Ack(Option<i64>),
    Later(Option<Vec<u8>>, Duration),
    Dead(DeadInfo),
}

/// The least time between two receives that found nothing.
const EMPTY_PAUSE: Duration = Duration::from_millis(50);

impl Worker {
    pub fn new(
        queue: Arc<dyn FailoverQueue>,
        writer: Arc<Writer>,
        settings: RetrySettings,
        metrics: WorkerMetrics,
    ) -> Self {
        Self {
            queue,
            writer,
            settings,
            metrics,
            pace: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    /// One receive-and-publish loop, until `stop` turns true. Up to
    /// `retry.pipeline_depth` leased batches are in hand at once: the next batch is leased
    /// while earlier ones are in Kafka. At stop, batches in hand are finished first;
    /// entries never handled go back to the queue when their lease ends.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let depth = self.settings.pipeline_depth.max(1);
        let mut in_hand = FuturesUnordered::new();
        let mut idle = false;
        while !*stop.borrow() {
            if in_hand.len() >= depth {
                in_hand.next().await;
                continue;
            }
            // The health gate: during a cluster outage, leave the queue alone. And after an
            // empty receive that did not wait (`retry.wait_time` under EMPTY_PAUSE), pause
            // rather than ask again at once.
            let pause_for = if !self.writer.cluster_reachable() {
                Some(self.settings.health_gate_delay)
            } else if std::mem::take(&mut idle) {
                Some(EMPTY_PAUSE - self.settings.wait_time)
            } else {
                None
            };
            if let Some(d) = pause_for {
                let pause = tokio::time::sleep(d);
                tokio::pin!(pause);
                loop {
                    tokio::select! {
                        _ = &mut pause => break,
                        _ = stop.changed() => break,
                        Some(()) = in_hand.next(), if !in_hand.is_empty() => {}
                    }
                }
                continue;
            }
            // Batches in hand go on while the next receive waits; a finished batch never
            // cancels a receive (that would strand its leased entries until the lease ends).
            let receive = self.queue.receive(
                self.settings.max_number_of_messages,
                self.settings.wait_time,
                self.settings.lease,
            );
            tokio::pin!(receive);
            let received = loop {
                tokio::select! {
                    r = &mut receive => break Some(r),
                    _ = stop.changed() => break None,
                    Some(()) = in_hand.next(), if !in_hand.is_empty() => {}
                }
            };
            match received {
                None => break,
                Some(Ok(batch)) if !batch.is_empty() => in_hand.push(self.handle(batch)),
                Some(Ok(_)) => idle = self.settings.wait_time < EMPTY_PAUSE,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "receive from the failover queue failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        while in_hand.next().await.is_some() {}
    }

    /// Writes one leased batch and settles each of its entries: acked, back in the queue
    /// for later, or dead-lettered.
    pub(crate) async fn handle(&self, batch: Vec<Leased>) {
        let mut prepared: Vec<Prepared> = batch.iter().map(|l| self.prepare(l)).collect();
        self.hold_behind_held(&batch, &mut prepared);
        let mut decisions = self.write_ready(prepared).await;
        keep_runs_in_place(&batch, &mut decisions);
        let mut acks = Vec::new();
        let mut rest = Vec::new();
        // Ordered partitions whose run stopped: behind its first entry that goes back,
        // the run's entries need no update of their own (the receive leases a partition
        // by its head, and takes the run again whole), unless they carry a new body.
        let mut stopped: Vec<String> = Vec::new();
        let mut untried = Vec::new();
        for (leased, decision) in batch.into_iter().zip(decisions) {
            if let Some(key) = &leased.order {
                if stopped.contains(key) {
                    if let Decision::Later(None, _) = decision {
                        self.metrics.count("deferred", 1);
                        untried.push(leased);
                        continue;
                    }
                } else if !matches!(decision, Decision::Ack(_)) {
                    stopped.push(key.clone());
                }
            }
            match decision {
                Decision::Ack(_) => acks.push(leased),
                other => rest.push((leased, other)),
            }
        }
        // Acknowledged first, while this worker still holds the runs' partitions: an
        // ordered entry is deleted only under its partition's lease.
        if !acks.is_empty() {
            let n = acks.len() as u64;
            match self.queue.ack(&acks).await {
                Ok(()) => self.metrics.count("delivered", n),
                // Already in Kafka; the entries come back and are written again (duplicates,
                // which consumers remove with dedup).
                Err(e) => tracing::warn!(error = %e, "ack failed; entries will be redelivered"),
            }
        }
        for (leased, decision) in rest {
            let result = match decision {
                Decision::Ack(_) => unreachable!("acknowledged above"),
                Decision::Later(body, delay) => {
                    self.metrics.count(
                        if body.is_some() {
                            "retried"
                        } else {
                            "deferred"
                        },
                        1,
                    );
                    self.queue.retry_later(&leased, body, delay).await
                }
                Decision::Dead(info) => {
                    tracing::warn!(message_id = %info.message_id, reason = %info.reason, "dead-lettered");
                    self.metrics.count("dead_lettered", 1);
                    self.queue.dead_letter(&leased, &info).await
                }
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, entry = %leased.entry_id, "queue update failed; the entry returns when its lease ends");
            }
        }
        if !untried.is_empty() {
            if let Err(e) = self.queue.release(&untried).await {
                tracing::warn!(error = %e, "could not give back entries behind a stopped partition; they return when their lease ends");
            }
        }
    }

    /// Decides what an entry needs before any write: dead (poison, not retryable), held
    /// back (not due, or its partition cannot take it now), or written.
    fn prepare(&self, leased: &Leased) -> Prepared {
        let env = match envelope::decode(&leased.body) {
            Ok(env) => env,
            Err(e) => {
                return Prepared::Decided(Decision::Dead(DeadInfo {
                    topic: String::new(),
                    message_id: String::new(),
                    attempts: 0,
                    reason: format!("poison entry: {e}"),
                    first_failed_at_unix_ms: leased.enqueued_at_unix_ms,
                }))
            }
        };
        // The record's trace goes on here, from the context its envelope carries.
        let span = tracing::debug_span!(
            target: trace::TARGET,
            "ballast.retry",
            topic = %env.topic,
            message_id = %env.message_id,
            attempt = env.attempt,
            deliveries = leased.deliveries,
        );
        trace::continue_from_headers(
            &span,
            env.headers.iter().map(|h| (h.key.as_str(), &h.value[..])),
        );
        let due = env.first_failed_at_unix_ms + self.settings.after.as_millis() as i64;
        let now = unix_ms();
        if now < due {
            return Prepared::Decided(Decision::Later(
                None,
                Duration::from_millis((due - now) as u64),
            ));
        }
        // The health gate: a record whose partition cannot take it now waits, without
        // spending an attempt (a STRICT key waits for its own partition).
        let record = match record_of(&env) {
            Ok(r) => r,
            Err(e) => {
                return Prepared::Decided(dead(
                    &env,
                    env.attempt,
                    format!("not retryable: {}", e.message),
                ))
            }
        };
        // A topic the cluster says does not exist goes on to the write, which answers
        // NOT_FOUND and dead-letters it, rather than waiting forever.
        if !self.writer.record_writable(&record) && !self.writer.topic_absent(&record.topic) {
            return Prepared::Decided(Decision::Later(None, self.settings.health_gate_delay));
        }
        Prepared::Write(Box::new(Ready { env, record, span }))
    }

    /// Writes the entries that need it, and decides every entry, in batch order. Without
    /// `drain_rate` the batch's records go through the write path together, as a
    /// gateway's request does; with it, each record waits for its own slot.
    async fn write_ready(&self, prepared: Vec<Prepared>) -> Vec<Decision> {
        let mut writes = Vec::new();
        let mut envs = Vec::new();
        let mut decisions: Vec<Option<Decision>> = Vec::with_capacity(prepared.len());
        for p in prepared {
            match p {
                Prepared::Decided(d) => decisions.push(Some(d)),
                Prepared::Write(ready) => {
                    let Ready { env, record, span } = *ready;
                    decisions.push(None);
                    writes.push((record, span));
                    envs.push(env);
                }
            }
        }
        let produced = if self.settings.drain_rate == 0 {
            self.writer.write_batch_under(writes).await
        } else {
            futures::future::join_all(writes.into_iter().map(|w| async move {
                self.pace().await;
                let mut one = self.writer.write_batch_under(vec![w]).await;
                one.pop().expect("one answer per record")
            }))
            .await
        };
        let mut outcomes = envs.into_iter().zip(produced);
        decisions
            .into_iter()
            .map(|d| {
                d.unwrap_or_else(|| {
                    let (env, p) = outcomes.next().expect("one answer per written record");
                    self.settle(env, p)
                })
            })
            .collect()
    }

    /// What a written record's answer means for its entry. An attempt is spent only when
    /// a Kafka write was tried and failed: a record answered before any write (the
    /// in-flight budget, a half-open partition whose probe another record holds, a
    /// partition that went unhealthy since `prepare`) is held back as the health gate
    /// holds it, so a flapping broker cannot use up `max_attempts`.
    fn settle(&self, env: Envelope, p: ballast_produce::Produced) -> Decision {
        let tried = p.kafka_writes > 0;
        match p.outcome {
            Ok(Acked::Kafka { offset, .. }) => Decision::Ack(Some(offset)),
            Ok(Acked::Failover { .. }) => Decision::Ack(None),
            Err(e) if e.retryable() && !tried => {
                Decision::Later(None, self.settings.health_gate_delay)
            }
            Err(e) => {
                let attempt = env.attempt + u32::from(tried);
                if !e.retryable() || attempt >= self.settings.max_attempts {
                    let reason = if e.retryable() {
                        format!("max attempts ({attempt}) reached: {}", e.message)
                    } else {
                        format!("not retryable: {}", e.message)
                    };
                    return dead(&env, attempt, reason);
                }
                let next = Envelope {
                    attempt,
                    last_error: e.message,
                    ..env
                };
                Decision::Later(
                    Some(envelope::encode(&next)),
                    self.settings.backoff(attempt),
                )
            }
        }
    }

    /// An ordered partition's entries are written in order or not at all: behind an
    /// entry held back before its write (not due, its partition unhealthy, poison), the
    /// partition's later entries of the batch are held back too, unwritten.
    fn hold_behind_held(&self, batch: &[Leased], prepared: &mut [Prepared]) {
        let mut held: Vec<&str> = Vec::new();
        for (leased, p) in batch.iter().zip(prepared.iter_mut()) {
            let Some(key) = leased.order.as_deref() else {
                continue;
            };
            if held.contains(&key) {
                if let Prepared::Write(_) = p {
                    *p = Prepared::Decided(Decision::Later(None, self.settings.health_gate_delay));
                }
            } else if let Prepared::Decided(_) = p {
                held.push(key);
            }
        }
    }

    /// Waits for this record's slot under `drain_rate`.
    async fn pace(&self) {
        if self.settings.drain_rate == 0 {
            return;
        }
        let gap = Duration::from_secs_f64(1.0 / self.settings.drain_rate as f64);
        let slot = {
            let mut next = self.pace.lock().await;
            let slot = (*next).max(Instant::now());
            *next = slot + gap;
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }
}

/// A run of an ordered partition keeps its place: only the longest prefix that reached
/// Kafka in order (each entry at a higher offset than the one before) is acknowledged.
/// From the first entry that did not (failed, held back, dead-lettered, or landed below
/// an earlier entry after a retry), every later entry of the partition goes back to the
/// queue to be written again in order, even one already delivered: a duplicate, which
/// consumers' dedup removes and a compacted topic's last value survives. A dead letter
/// stays the partition's head, stopping its drain until it is redriven or skipped.
fn keep_runs_in_place(batch: &[Leased], decisions: &mut [Decision]) {
    // Per partition: the last offset of the prefix, or the delay it broke with.
    let mut runs: Vec<(&str, Result<i64, Duration>)> = Vec::new();
    for (leased, d) in batch.iter().zip(decisions.iter_mut()) {
        let Some(key) = leased.order.as_deref() else {
            continue;
        };
        let i = match runs.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                runs.push((key, Ok(i64::MIN)));
                runs.len() - 1
            }
        };
        match (runs[i].1, &*d) {
            (Err(delay), _) => {
                let body = match std::mem::replace(d, Decision::Ack(None)) {
                    Decision::Later(body, _) => body,
                    _ => None,
                };
                *d = Decision::Later(body, delay);
            }
            (Ok(last), Decision::Ack(Some(offset))) if *offset > last => {
                runs[i].1 = Ok(*offset);
            }
            (Ok(_), Decision::Ack(None)) => {}
            (Ok(_), Decision::Ack(Some(_))) => {
                // Landed below an earlier entry of the run: written again, at once.
                runs[i].1 = Err(Duration::ZERO);
                *d = Decision::Later(None, Duration::ZERO);
            }
            (Ok(_), Decision::Later(_, delay)) => runs[i].1 = Err(*delay),
            (Ok(_), Decision::Dead(_)) => runs[i].1 = Err(Duration::ZERO),
        }
    }
}

fn dead(env: &Envelope, attempts: u32, reason: String) -> Decision {
    Decision::Dead(DeadInfo {
        topic: env.topic.clone(),
        message_id: env.message_id.clone(),
        attempts,
        reason,
        first_failed_at_unix_ms: env.first_failed_at_unix_ms,
    })
}

#[cfg(test)]
mod tests {
    //! Against the mock cluster over TCP and a SQLite queue file: what a batch costs in
    //! attempts depends on which of its writes Kafka was actually asked to take.
    use super::*;
    use ballast_balancer::{BalancerConfig, BreakerState};
    use ballast_failover::SqlQueue;
    use ballast_kafka::{EmbeddedCluster, EmbeddedClusterConfig, KafkaConfig};
    use ballast_produce::{WriteLimits, WriteMetrics};
    use std::collections::HashSet;

    const PARTITION: i32 = 3;

    /// An age the backend cannot tell has no series, never a 0; a known one is exported
    /// in seconds with its fraction, beside the queue's retention.
    #[test]
    fn an_unknown_age_exports_no_series() {
        let mut registry = Registry::default();
        let m = WorkerMetrics::register(&mut registry);
        let text = |registry: &Registry| {
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
            out
        };
        let mut stats = ballast_failover::QueueStats {
            depth: 3,
            oldest_age_ms: None,
            retention: Some(Duration::from_secs(1_209_600)),
            ..Default::default()
        };
        m.publish(Some(&stats));
        let page = text(&registry);
        assert!(
            !page.contains("ballast_retry_queue_oldest_age_seconds"),
            "{page}"
        );
        assert!(
            page.contains("ballast_retry_queue_retention_seconds 1209600"),
            "{page}"
        );
        assert!(page.contains("ballast_retry_queue_depth 3"), "{page}");
        stats.oldest_age_ms = Some(1_500);
        m.publish(Some(&stats));
        let page = text(&registry);
        assert!(
            page.contains("ballast_retry_queue_oldest_age_seconds 1.5"),
            "{page}"
        );
        // A failed count leaves no stale age behind.
        m.publish(None);
        assert!(!text(&registry).contains("ballast_retry_queue_oldest_age_seconds"));
    }

    async fn setup(
        n: usize,
        settings: RetrySettings,
        limits: WriteLimits,
    ) -> (EmbeddedCluster, Arc<SqlQueue>, Worker, std::path::PathBuf) {
        let cluster = EmbeddedCluster::start(EmbeddedClusterConfig::default()).unwrap();
        let dir = std::env::temp_dir().join(ballast_testkit::deps::unique("ballast-attempts"));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("q.db").display());
        let queue = Arc::new(SqlQueue::connect(&url, "q", 2).await.unwrap());
        let bodies: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                envelope::encode(&Envelope {
                    topic: "events".into(),
                    partition: Some(PARTITION),
                    value: format!("v{i}").into_bytes().into(),
                    message_id: format!("m-{i}"),
                    first_failed_at_unix_ms: 1,
                    ..Default::default()
                })
            })
            .collect();
        queue.enqueue(&bodies, Duration::ZERO).await.unwrap();
        let kafka = KafkaConfig {
            bootstrap_servers: cluster.bootstrap_servers().to_string(),
            ..KafkaConfig::default()
        };
        let mut registry = Registry::default();
        let writer = Writer::new(
            &kafka,
            BalancerConfig {
                sticky_records: 1,
                ..BalancerConfig::default()
            },
            limits,
            WriteMetrics::register(&mut registry),
            None,
        )
        .unwrap();
        writer.refresh_metadata().await.unwrap();
        let metrics = WorkerMetrics::register(&mut registry);
        let worker = Worker::new(queue.clone(), Arc::new(writer), settings, metrics);
        (cluster, queue, worker, dir)
    }

    fn settings() -> RetrySettings {
        RetrySettings {
            backoff_base: Duration::ZERO,
            health_gate_delay: Duration::ZERO,
            ..RetrySettings::default()
        }
    }

    /// The partition's leader, and its breaker left half-open: held (as for a draining
    /// leader), then released.
    async fn half_open(cluster: &EmbeddedCluster, worker: &Worker) -> i32 {
        let status = worker.writer.partition_status("events");
        let leader = status[PARTITION as usize].leader.expect("a leader");
        worker.writer.set_draining_brokers(HashSet::from([leader]));
        worker.writer.set_draining_brokers(HashSet::new());
        let state = worker.writer.partition_status("events")[PARTITION as usize].state;
        assert_eq!(state, BreakerState::HalfOpen);
        // The probe's write goes unanswered past its deadline.
        cluster
            .broker_rtt(leader, Duration::from_secs(3))
            .await
            .unwrap();
        leader
    }

    /// Every entry, decoded, once it is visible again.
    async fn entries(queue: &SqlQueue, n: usize) -> Vec<Envelope> {
        let got = queue
            .receive(n, Duration::from_secs(5), Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(got.len(), n, "every entry is still queued");
        got.iter()
            .map(|l| envelope::decode(&l.body).unwrap())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_entries_whose_write_was_tried_spend_an_attempt() {
        let n = 20;
        let (cluster, queue, worker, dir) = setup(n, settings(), WriteLimits::default()).await;
        half_open(&cluster, &worker).await;
        let batch = queue
            .receive(n, Duration::ZERO, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(batch.len(), n);
        worker.handle(batch).await;
        let after = entries(&queue, n).await;
        let charged: Vec<_> = after.iter().filter(|e| e.attempt > 0).collect();
        // One probe was written (and timed out); the others never reached Kafka.
        assert_eq!(charged.len(), 1, "{after:?}");
        assert_eq!(charged[0].attempt, 1);
        assert!(charged[0].last_error.contains("partition 3"), "{charged:?}");
        for e in after.iter().filter(|e| e.attempt == 0) {
            assert!(e.last_error.is_empty(), "{e:?}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_half_open_partition_dead_letters_only_its_probe() {
        let n = 20;
        let s = RetrySettings {
            max_attempts: 1,
            ..settings()
        };
        let (cluster, queue, worker, dir) = setup(n, s, WriteLimits::default()).await;
        half_open(&cluster, &worker).await;
        let batch = queue
            .receive(n, Duration::ZERO, Duration::from_secs(30))
            .await
            .unwrap();
        worker.handle(batch).await;
        let (dead, _) = queue.list_dead_letters(100, "").await.unwrap();
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(dead[0].info.attempts, 1);
        entries(&queue, n - 1).await;
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The worker's own in-flight budget refuses records before any write: not an attempt.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_the_budget_refuses_spend_no_attempt() {
        let n = 10;
        let limits = WriteLimits {
            // Each record is 2 bytes ("v0"), held twice while in flight: room for one.
            inflight_bytes: 5,
            ..WriteLimits::default()
        };
        let (cluster, queue, worker, dir) = setup(n, settings(), limits).await;
        let status = worker.writer.partition_status("events");
        let leader = status[PARTITION as usize].leader.expect("a leader");
        cluster
            .broker_rtt(leader, Duration::from_secs(3))
            .await
            .unwrap();
        let batch = queue
            .receive(n, Duration::ZERO, Duration::from_secs(30))
            .await
            .unwrap();
        worker.handle(batch).await;
        let after = entries(&queue, n).await;
        let charged = after.iter().filter(|e| e.attempt > 0).count();
        assert_eq!(charged, 1, "{after:?}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
