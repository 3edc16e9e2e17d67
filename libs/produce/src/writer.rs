//! [`Writer`]: admission, placement, Kafka attempts and failover, composed.

use crate::admit::{self, Budget, WriteLimits};
use crate::attempt::{self, AttemptState, Attempts, Launched};
use crate::failover;
use crate::metrics::WriteMetrics;
use crate::placement::{self, Placement};
use crate::record::{Acked, Produced, Record};
use ballast_balancer::{BalancerConfig, PartitionStatus};
use ballast_core::{ErrorCode, MessageIds, RecordError};
use ballast_failover::{Diverts, Enqueuer};
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
    /// Under `ordering: partition`: which fixed partitions go to the queue (a gateway's;
    /// a retry worker writes directly whatever it drains).
    diverts: Option<Arc<Diverts>>,
    shutting_down: AtomicBool,
}

/// Where an ordered topic's fixed-partition record must go, decided before its first
/// attempt.
enum Order {
    /// Not ordered: an unordered topic, a record that may move, or no failover queue.
    Free,
    /// Ordered partition `key`, clean: written directly, diverted if that fails.
    Direct(String),
    /// Ordered partition `key`, diverted: to the queue, behind its earlier records.
    Divert(String),
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
            diverts: None,
            shutting_down: AtomicBool::new(false),
        })
    }

    /// Keeps each ordered topic's fixed-partition records in order through failover, by
    /// `diverts` (which reads its marks from this writer's failover queue).
    pub fn with_ordering(mut self, diverts: Arc<Diverts>) -> Self {
        self.diverts = Some(diverts);
        self
    }

    /// The diverted partitions this writer honours, under ordering.
    pub fn ordering(&self) -> Option<&Arc<Diverts>> {
        self.diverts.as_ref()
    }

    /// Where an ordered fixed-partition record must go (see [`Order`]); an error when its
    /// partition cannot be known yet, so its order could not be kept.
    fn order_of(&self, rec: &Record) -> Result<Order, RecordError> {
        let Some(diverts) = &self.diverts else {
            return Ok(Order::Free);
        };
        if self.failover.is_none() || !rec.pinned() || !diverts.config().ordered(&rec.topic) {
            return Ok(Order::Free);
        }
        let Some(p) = self.placement.fixed_partition(rec) else {
            return Err(RecordError::new(
                ErrorCode::Unavailable,
                format!(
                    "the partition count of topic {:?} is not known yet, so this record's order could not be kept through failover (ordering: partition); retry",
                    rec.topic
                ),
            ));
        };
        let key = ballast_failover::order_key(&rec.topic, p);
        Ok(if diverts.must_divert(&key) {
            Order::Divert(key)
        } else {
            Order::Direct(key)
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
        // A record held back for its partition's health keeps the topic's metadata fresh,
        // so that it is not held past the partition's recovery until a full refresh.
        let in_use = self
            .placement
            .could_place_in_use(&rec.pick_request(&[], true));
        self.cluster_reachable() && in_use
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
            match self.order_of(&r.rec) {
                Ok(Order::Free) => {}
                Ok(Order::Direct(key)) => r.order = Some(key),
                Ok(Order::Divert(key)) => {
                    // Behind the partition's earlier records: no attempt now. A partition
                    // that could take it is held for its drain to finish (see `finish`),
                    // so that a key written without pause does not keep it diverted.
                    r.after = if self.record_writable(&r.rec) {
                        After::Hold
                    } else {
                        After::Answer(Err(diverted(&key)))
                    };
                    r.order = Some(key);
                    continue;
                }
                // Kafka may still take it; the queue may not.
                Err(e) => r.unorderable = Some(e),
            }
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
                        After::Retry | After::Hold => true,
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
                            After::Retry | After::Hold => unreachable!("a retry goes on"),
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
                order: None,
                unorderable: None,
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
            order,
            unorderable,
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
                After::Hold => {
                    let (key, diverts) = match (&order, &self.diverts) {
                        (Some(k), Some(d)) => (k, d),
                        _ => unreachable!("only an ordered record is held"),
                    };
                    // Half the record's deadline at most, leaving the other half for its
                    // attempts once the partition is clean.
                    let until = started + self.limits.record_deadline / 2;
                    if diverts.wait_clean(key, until.into()).await {
                        state = AttemptState::new(&rec);
                        attempts
                            .run(&rec, &message_id, size, deadline, &mut state)
                            .await
                    } else {
                        Err(diverted(key))
                    }
                }
                After::Answer(answer) => answer,
            };
            match outcome {
                // Kafka cannot take it now: the failover queue may.
                Err(e) if e.code == ErrorCode::Unavailable && unorderable.is_some() => {
                    Err(unorderable.expect("checked"))
                }
                Err(e) if e.code == ErrorCode::Unavailable => match &self.failover {
                    // Boxed, as the rare path: the record's future stays small.
                    Some(queue) => {
                        let acked = Box::pin(failover::fail_over(
                            queue,
                            rec,
                            &message_id,
                            &e,
                            order.clone(),
                        ))
                        .await;
                        // The queue holds the record (or may: an outcome not known), so its
                        // partition is marked. Every gateway's lease read before the mark
                        // was visible runs out before the answer, so that the client's next
                        // record (or its resend of this one), at any gateway, is diverted.
                        let (marked, epoch) = match &acked {
                            Ok((_, epoch)) => (true, *epoch),
                            Err(e) => (e.code == ErrorCode::DeadlineExceeded, None),
                        };
                        if let (true, Some(key), Some(diverts)) = (marked, &order, &self.diverts) {
                            let at =
                                diverts.ack_not_before(key, epoch, tokio::time::Instant::now());
                            tokio::time::sleep_until(at).await;
                        }
                        acked.map(|(ack, _)| ack)
                    }
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
    /// The ordered partition of a fixed-partition record of an ordered topic.
    order: Option<String>,
    /// Why an ordered record whose partition is not known may not fail over.
    unorderable: Option<RecordError>,
}

/// Where a record stands after its first attempt.
enum After {
    Answer(Result<Acked, RecordError>),
    /// Another partition may take it.
    Retry,
    /// Its ordered partition is diverted but could take it: held until the divert ends,
    /// then written, or failed over behind the partition's earlier records.
    Hold,
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

/// The error that sends a record of a diverted partition to the queue.
fn diverted(key: &str) -> RecordError {
    RecordError::new(
        ErrorCode::Unavailable,
        format!("partition {key} is diverted: its earlier records wait in the failover queue (ordering: partition)"),
    )
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
