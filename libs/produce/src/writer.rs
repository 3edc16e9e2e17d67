//! [`Writer`]: admission, placement, Kafka attempts and failover, composed.

use crate::admit::{self, Budget, WriteLimits};
use crate::attempt::{self, AttemptState, Attempts, Launched};
use crate::failover;
use crate::metrics::WriteMetrics;
use crate::placement::{self, Placement};
use crate::record::{Acked, Produced, Record};
use ballast_balancer::{BalancerConfig, PartitionStatus};
use ballast_core::{ErrorCode, MessageIds, RecordError};
use ballast_failover::Enqueuer;
use ballast_kafka::{ClusterMetadata, KafkaConfig, KafkaProducer, WriteError, Written};
use futures::FutureExt;
use std::collections::HashSet;
use std::ops::ControlFlow;
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
        let mut answers = self.write_batch(vec![rec]).await;
        answers.pop().expect("one answer per record")
    }

    /// Places and writes records, and answers for each, in their order.
    ///
    /// Each record is admitted, placed and handed to librdkafka in turn, so records of one
    /// key reach their partition in order. Their first attempts share the batch's start,
    /// hence its deadline, and are awaited together under one timer. A record whose first
    /// attempt fails goes on alone: other partitions within its deadline, then the
    /// failover queue. Every record has its own answer; one failing never fails another.
    pub async fn write_batch(&self, recs: Vec<Record>) -> Vec<Produced> {
        self.write_records(recs.into_iter().map(|r| (r, None)))
            .await
    }

    /// As `write_batch`, each record's `ballast.write` span a child of the span given with
    /// it (a retry worker's span for the record, which continues the record's own trace).
    pub async fn write_batch_under(&self, recs: Vec<(Record, tracing::Span)>) -> Vec<Produced> {
        self.write_records(recs.into_iter().map(|(r, parent)| (r, Some(parent))))
            .await
    }

    async fn write_records(
        &self,
        recs: impl Iterator<Item = (Record, Option<tracing::Span>)>,
    ) -> Vec<Produced> {
        let started = Instant::now();
        let deadline = started + self.limits.record_deadline;
        let attempts = Attempts {
            placement: &self.placement,
            kafka: &self.kafka,
            metrics: &self.metrics,
            limits: &self.limits,
        };
        let mut slots: Vec<Slot> = {
            let ids = MessageIds::new();
            recs.map(|(rec, parent)| self.admit(rec, parent.as_ref(), &ids))
                .collect()
        };

        // A topic the balancer does not know yet is learnt once for the batch.
        let mut topics: Vec<&str> = Vec::new();
        for slot in &slots {
            if let Slot::Admitted(r) = slot {
                if !topics.contains(&r.rec.topic.as_str()) {
                    topics.push(&r.rec.topic);
                }
            }
        }
        for topic in topics {
            self.placement.learn_topic(topic).await;
        }

        // First attempts: launched in order, then awaited together.
        let now = Instant::now();
        let mut launched = Vec::new();
        for (i, slot) in slots.iter_mut().enumerate() {
            let Slot::Admitted(r) = slot else { continue };
            if self.limits.max_attempts == 0 {
                // No attempt allowed: `run` answers that none succeeded.
                continue;
            }
            let a = r.span.in_scope(|| {
                r.state = AttemptState::new(&r.rec);
                attempts.launch(&r.rec, &r.message_id, &r.state, now, deadline)
            });
            match a {
                Ok(a) => launched.push((i, a)),
                Err(e) => r.after = After::Answer(Err(e)),
            }
        }
        let budget = attempts.budget(now, deadline);
        let mut reports = await_reports(&mut launched, now + budget).await;
        let settled = Instant::now();
        for ((i, a), report) in launched.into_iter().zip(reports.drain(..)) {
            let Slot::Admitted(r) = &mut slots[i] else {
                unreachable!("only admitted records are launched")
            };
            let report = report.unwrap_or_else(|| Err(attempt::timed_out(a.budget)));
            r.after = match attempts.settle(&r.rec, r.size, &mut r.state, a, report, settled) {
                ControlFlow::Break(answer) => After::Answer(answer),
                ControlFlow::Continue(()) => After::Retry,
            };
        }
        let first_done = started.elapsed();

        // The rest: more attempts, or the failover queue, each record on its own.
        let mut answers: Vec<Option<Produced>> = Vec::with_capacity(slots.len());
        let mut rest = Vec::new();
        for (i, slot) in slots.into_iter().enumerate() {
            match slot {
                Slot::Answered(p) => answers.push(Some(p)),
                Slot::Admitted(mut r) => {
                    let more = match &r.after {
                        After::Retry => true,
                        After::Answer(Err(e)) => {
                            e.code == ErrorCode::Unavailable && self.failover.is_some()
                        }
                        After::Answer(Ok(_)) => false,
                    };
                    if more {
                        answers.push(None);
                        rest.push((i, r));
                    } else {
                        let answer = match std::mem::replace(&mut r.after, After::Retry) {
                            After::Answer(answer) => answer,
                            After::Retry => unreachable!("a retry goes on"),
                        };
                        answers.push(Some(r.answer(answer, first_done)));
                    }
                }
            }
        }
        if !rest.is_empty() {
            let finished = futures::future::join_all(rest.into_iter().map(|(i, r)| {
                let attempts = &attempts;
                async move { (i, self.finish(attempts, r, deadline, started).await) }
            }))
            .await;
            for (i, p) in finished {
                answers[i] = Some(p);
            }
        }
        answers
            .into_iter()
            .map(|p| p.expect("every record is answered"))
            .collect()
    }

    /// Assigns the record's id and admits it (or answers it at once).
    fn admit(&self, mut rec: Record, parent: Option<&tracing::Span>, ids: &MessageIds) -> Slot {
        let message_id = if rec.message_id.is_empty() {
            ids.next_id()
        } else {
            std::mem::take(&mut rec.message_id)
        };
        let new_span = || {
            tracing::debug_span!(
                target: ballast_telemetry::trace::TARGET,
                "ballast.write",
                topic = %rec.topic,
                message_id = %message_id,
                outcome = tracing::field::Empty,
            )
        };
        // The span's parent is the current span, or the one given (entered to make it).
        let span = match parent {
            None => new_span(),
            Some(parent) => parent.in_scope(new_span),
        };
        let admitted = if self.shutting_down.load(Ordering::Relaxed) {
            Err(RecordError::new(
                ErrorCode::ShuttingDown,
                "gateway is shutting down",
            ))
        } else {
            admit::validate(&rec, &message_id, &self.limits).and_then(|size| {
                // Held until the record's fate is known, counting both copies in flight.
                let held = self.budget.admit(size * admit::COPIES_IN_FLIGHT)?;
                Ok((size, held))
            })
        };
        match admitted {
            Ok((size, held)) => Slot::Admitted(Box::new(InFlight {
                rec,
                message_id,
                span,
                size,
                _held: held,
                state: AttemptState::default(),
                after: After::Retry,
            })),
            Err(e) => {
                let p = Produced {
                    message_id,
                    topic: rec.topic,
                    outcome: Err(e),
                    elapsed: Duration::ZERO,
                    kafka_writes: 0,
                };
                record_outcome(&span, &p);
                Slot::Answered(p)
            }
        }
    }

    /// A record past its first attempt: more attempts when it may have them, then the
    /// failover queue when Kafka cannot take it now.
    async fn finish(
        &self,
        attempts: &Attempts<'_>,
        r: Box<InFlight>,
        deadline: Instant,
        started: Instant,
    ) -> Produced {
        let InFlight {
            rec,
            message_id,
            span,
            size,
            _held,
            mut state,
            after,
        } = *r;
        // The rare path (a record past its first attempt): the record itself may go to the
        // failover queue, so its answer keeps a copy of the topic.
        let topic = rec.topic.clone();
        let rest = async {
            let outcome = match after {
                After::Retry => {
                    attempts
                        .run(&rec, &message_id, size, deadline, &mut state)
                        .await
                }
                After::Answer(answer) => answer,
            };
            match outcome {
                // Kafka cannot take it now: the failover queue may.
                Err(e) if e.code == ErrorCode::Unavailable => match &self.failover {
                    // Boxed, as the rare path: the record's future stays small.
                    Some(queue) => Box::pin(failover::fail_over(queue, rec, &message_id, &e)).await,
                    None => Err(e),
                },
                other => other,
            }
        };
        let outcome = if span.is_disabled() {
            rest.await
        } else {
            rest.instrument(span.clone()).await
        };
        let p = Produced {
            message_id,
            topic,
            outcome,
            elapsed: started.elapsed(),
            kafka_writes: state.kafka_writes,
        };
        record_outcome(&span, &p);
        p
    }
}

/// A record of a batch: answered before any attempt, or admitted.
enum Slot {
    Answered(Produced),
    Admitted(Box<InFlight>),
}

/// An admitted record and what its attempts have come to.
struct InFlight {
    /// The record, without its message id (held apart).
    rec: Record,
    message_id: String,
    span: tracing::Span,
    size: usize,
    /// Its share of the in-flight budget, given back when it is answered.
    _held: admit::Admitted,
    state: AttemptState,
    after: After,
}

/// Where a record stands after its first attempt.
enum After {
    Answer(Result<Acked, RecordError>),
    /// Another partition may take it.
    Retry,
}

impl InFlight {
    fn answer(self, outcome: Result<Acked, RecordError>, elapsed: Duration) -> Produced {
        let p = Produced {
            message_id: self.message_id,
            topic: self.rec.topic,
            outcome,
            elapsed,
            kafka_writes: self.state.kafka_writes,
        };
        record_outcome(&self.span, &p);
        p
    }
}

fn record_outcome(span: &tracing::Span, p: &Produced) {
    if !span.is_disabled() {
        span.record("outcome", p.label());
    }
}

/// The delivery reports of launched attempts, in their order, waiting for them until
/// `until` at most (one timer for all); `None` for a report that did not come in time.
///
/// Reports are awaited in launch order: one future polled at a time, and when it is in,
/// the reports that came before it are taken without waiting. Once the timer fires, the
/// reports already in are still taken.
async fn await_reports(
    launched: &mut [(usize, Launched<'_>)],
    until: Instant,
) -> Vec<Option<Result<Written, WriteError>>> {
    let timer = tokio::time::sleep_until(until.into());
    tokio::pin!(timer);
    let mut expired = false;
    let mut reports = Vec::with_capacity(launched.len());
    for (_, a) in launched.iter_mut() {
        let report = match &mut a.delivery {
            Err(e) => Some(Err(e.clone())),
            Ok(d) if expired => d.now_or_never(),
            Ok(d) => tokio::select! {
                biased;
                report = d => Some(report),
                () = &mut timer => {
                    expired = true;
                    None
                }
            },
        };
        reports.push(report);
    }
    reports
}
