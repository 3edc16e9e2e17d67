//! Kafka attempts for one admitted record: pick a partition, write with `acks=all`, tell
//! the balancer how it went, and reroute within the record's deadline when the record
//! may move.
//!
//! An attempt has two halves: [`Attempts::launch`] picks a partition and hands the record
//! to librdkafka; [`Attempts::settle`] takes the delivery report. A batch launches every
//! record's first attempt, waits for their reports together, and settles each; a record
//! that needs another attempt goes on alone through [`Attempts::run`].

use crate::admit::WriteLimits;
use crate::metrics::WriteMetrics;
use crate::placement::Placement;
use crate::record::{Acked, Record};
use ballast_balancer::{FailureKind, Pick, PickError};
use ballast_core::{ErrorCode, RecordError, MESSAGE_ID_HEADER};
use ballast_kafka::{Delivery, KafkaProducer, OutgoingRecord, WriteError, Written};
use ballast_telemetry::trace::{self, TRACEPARENT};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};
use tracing::Instrument;

pub(crate) struct Attempts<'a> {
    pub placement: &'a Placement,
    pub kafka: &'a KafkaProducer,
    pub metrics: &'a WriteMetrics,
    pub limits: &'a WriteLimits,
}

/// What one record's attempts carry from one to the next.
#[derive(Debug, Default)]
pub(crate) struct AttemptState {
    /// The attempt about to be made (0 is the first).
    pub attempt: u32,
    /// Partitions not to try again (a failed one and the others of its leader).
    tried: Vec<i32>,
    /// Attempts librdkafka took the record for: the Kafka writes tried.
    pub kafka_writes: u32,
    last_error: String,
    /// The W3C trace context written into the record's headers, when the record does not
    /// carry its own.
    traceparent: Option<String>,
}

impl AttemptState {
    /// The state before the first attempt. Called in the record's span, whose trace
    /// context the consumer continues (a record that carries its own context keeps it).
    pub(crate) fn new(rec: &Record) -> Self {
        Self {
            traceparent: if has_traceparent(rec) {
                None
            } else {
                trace::current_traceparent()
            },
            ..Self::default()
        }
    }
}

/// An attempt in librdkafka's hands.
pub(crate) struct Launched<'a> {
    pick: Pick,
    /// The delivery report to come, or the error librdkafka refused the record with.
    pub delivery: Result<Delivery<'a>, WriteError>,
    /// How long this attempt may wait for its report.
    pub budget: Duration,
    span: tracing::Span,
}

impl<'a> Launched<'a> {
    /// Waits for the report, at most `budget`.
    async fn wait(&mut self) -> Result<Written, WriteError> {
        let delivery = match &mut self.delivery {
            Ok(d) => d,
            Err(e) => return Err(e.clone()),
        };
        let timed = tokio::time::timeout(self.budget, delivery);
        // Spans are DEBUG: off by default, and then not worth a wrapper per record.
        let timed = if self.span.is_disabled() {
            timed.await
        } else {
            timed.instrument(self.span.clone()).await
        };
        timed.unwrap_or_else(|_| Err(timed_out(self.budget)))
    }
}

/// The failure of an attempt with no report within `budget`.
pub(crate) fn timed_out(budget: Duration) -> WriteError {
    WriteError {
        kind: FailureKind::Timeout,
        message: format!("no acknowledgement within {budget:?}"),
    }
}

impl<'a> Attempts<'a> {
    /// Writes `rec` to Kafka from attempt `state.attempt` on, or says why not.
    /// UNAVAILABLE means the cluster cannot take it now (the caller may fail over); other
    /// codes are final.
    pub(crate) async fn run(
        &self,
        rec: &Record,
        message_id: &str,
        size: usize,
        deadline: Instant,
        state: &mut AttemptState,
    ) -> Result<Acked, RecordError> {
        while state.attempt < self.limits.max_attempts {
            let now = Instant::now();
            if state.attempt > 0 && now >= deadline {
                break;
            }
            let mut launched = self.launch(rec, message_id, state, now, deadline)?;
            let result = launched.wait().await;
            let settled = Instant::now();
            if let ControlFlow::Break(answer) =
                self.settle(rec, size, state, launched, result, settled)
            {
                return answer;
            }
        }
        Err(RecordError::new(
            ErrorCode::Unavailable,
            format!(
                "no kafka write succeeded within the record's attempts: {}",
                state.last_error
            ),
        ))
    }

    /// Picks a partition for attempt `state.attempt` and hands the record to librdkafka.
    /// An error is the record's answer: no partition can take it.
    pub(crate) fn launch(
        &self,
        rec: &Record,
        message_id: &str,
        state: &AttemptState,
        now: Instant,
        deadline: Instant,
    ) -> Result<Launched<'a>, RecordError> {
        use ErrorCode::*;
        let req = rec.pick_request(&state.tried, state.attempt == 0);
        let pick =
            match self.placement.pick(&req, now) {
                Ok(p) => p,
                Err(PickError::UnknownTopic) if self.placement.topic_absent(&rec.topic) => {
                    return Err(RecordError::new(NotFound, "unknown topic"))
                }
                // No healthy answer about the topic yet: not a permanent answer.
                Err(PickError::UnknownTopic) => return Err(RecordError::new(
                    Unavailable,
                    "no metadata for the topic yet (cluster unreachable or topic metadata error)",
                )),
                Err(e @ PickError::InvalidPartition { .. }) => {
                    return Err(RecordError::new(InvalidArgument, e.to_string()))
                }
                Err(e) if state.last_error.is_empty() => {
                    return Err(RecordError::new(Unavailable, e.to_string()))
                }
                Err(e) => {
                    return Err(RecordError::new(
                        Unavailable,
                        format!("{e}; last attempt: {}", state.last_error),
                    ))
                }
            };
        let budget = self.budget(now, deadline);
        let span = tracing::debug_span!(
            target: trace::TARGET,
            "kafka.attempt",
            topic = %rec.topic,
            partition = pick.partition,
            attempt = state.attempt,
            local = pick.local,
            error = tracing::field::Empty,
        );
        let mut headers: Vec<(&str, &[u8])> = Vec::with_capacity(rec.headers.len() + 2);
        headers.extend(rec.headers.iter().map(|h| (h.key.as_str(), &h.value[..])));
        headers.push((MESSAGE_ID_HEADER, message_id.as_bytes()));
        if let Some(tp) = &state.traceparent {
            headers.push((TRACEPARENT, tp.as_bytes()));
        }
        let delivery = self.kafka.enqueue(OutgoingRecord {
            topic: &rec.topic,
            partition: pick.partition,
            key: rec.key.as_deref(),
            value: &rec.value,
            headers: &headers,
        });
        Ok(Launched {
            pick,
            delivery,
            budget,
            span,
        })
    }

    /// How long an attempt made at `now` may wait: the producer's write timeout, cut to
    /// what is left of the record's deadline.
    pub(crate) fn budget(&self, now: Instant, deadline: Instant) -> Duration {
        let remaining = deadline.saturating_duration_since(now);
        self.kafka
            .write_timeout()
            .min(remaining.max(Duration::from_millis(1)))
    }

    /// Takes an attempt's result: the balancer hears how its partition did (at `now`), and
    /// the record has its answer (`Break`) or may try another partition (`Continue`).
    pub(crate) fn settle(
        &self,
        rec: &Record,
        size: usize,
        state: &mut AttemptState,
        launched: Launched<'_>,
        result: Result<Written, WriteError>,
        now: Instant,
    ) -> ControlFlow<Result<Acked, RecordError>> {
        use ErrorCode::*;
        if launched.delivery.is_ok() {
            state.kafka_writes += 1;
        }
        let Launched { pick, span, .. } = launched;
        if let Err(e) = &result {
            span.record("error", e.message.as_str());
        }
        drop(span);
        self.placement.complete(
            &rec.topic,
            &pick,
            result.as_ref().err().map(|e| e.kind),
            now,
        );
        let e = match result {
            Ok(w) => {
                let bytes = if pick.local {
                    &self.metrics.bytes_local
                } else {
                    &self.metrics.bytes_cross_az
                };
                bytes.inc_by(size as u64);
                return ControlFlow::Break(Ok(Acked::Kafka {
                    partition: w.partition,
                    offset: w.offset,
                }));
            }
            Err(e) => e,
        };
        self.metrics.write_failure(e.kind.label());
        if !e.kind.retryable() {
            let code = match e.kind {
                FailureKind::RecordTooLarge => RecordTooLarge,
                FailureKind::Authorization => PermissionDenied,
                FailureKind::InvalidTopic | FailureKind::Rejected => InvalidArgument,
                _ => Internal,
            };
            return ControlFlow::Break(Err(RecordError::new(code, e.message)));
        }
        state.last_error = format!("partition {}: {}", pick.partition, e.message);
        // The producer failed, not the partition: another partition cannot help now.
        if rec.pinned() || e.kind == FailureKind::ProducerFatal {
            return ControlFlow::Break(Err(RecordError::new(
                Unavailable,
                state.last_error.clone(),
            )));
        }
        // The leader is suspect: skip its other partitions too.
        state.tried.extend(
            self.placement
                .same_leader_partitions(&rec.topic, pick.partition),
        );
        self.metrics.reroutes.inc();
        state.attempt += 1;
        ControlFlow::Continue(())
    }
}

/// Whether the record carries its own W3C trace context.
pub(crate) fn has_traceparent(rec: &Record) -> bool {
    rec.headers
        .iter()
        .any(|h| h.key.eq_ignore_ascii_case(TRACEPARENT))
}
