//! Kafka attempts for one admitted record: pick a partition, write with `acks=all`, tell
//! the balancer how it went, and reroute within the record's deadline when the record
//! may move.

use crate::admit::WriteLimits;
use crate::metrics::WriteMetrics;
use crate::placement::Placement;
use crate::record::{Acked, Record};
use ballast_balancer::{FailureKind, PickError};
use ballast_core::{ErrorCode, RecordError, MESSAGE_ID_HEADER};
use ballast_kafka::{KafkaProducer, OutgoingRecord, WriteError};
use ballast_telemetry::trace::{self, TRACEPARENT};
use std::time::{Duration, Instant};
use tracing::Instrument;

pub(crate) struct Attempts<'a> {
    pub placement: &'a Placement,
    pub kafka: &'a KafkaProducer,
    pub metrics: &'a WriteMetrics,
    pub limits: &'a WriteLimits,
}

impl Attempts<'_> {
    /// Writes `rec` to Kafka or says why not. UNAVAILABLE means the cluster cannot take it
    /// now (the caller may fail over); other codes are final.
    pub(crate) async fn write(
        &self,
        rec: &Record,
        message_id: &str,
        size: usize,
        started: Instant,
    ) -> Result<Acked, RecordError> {
        use ErrorCode::*;
        let mut headers: Vec<(&str, &[u8])> = rec
            .headers
            .iter()
            .map(|h| (h.key.as_str(), h.value.as_slice()))
            .collect();
        headers.push((MESSAGE_ID_HEADER, message_id.as_bytes()));
        // The consumer continues the trace; a record that carries its own context keeps it.
        let traceparent = if has_traceparent(rec) {
            None
        } else {
            trace::current_traceparent()
        };
        if let Some(tp) = &traceparent {
            headers.push((TRACEPARENT, tp.as_bytes()));
        }
        let deadline = started + self.limits.record_deadline;
        let mut tried: Vec<i32> = Vec::new();
        let mut last_error = String::new();
        for attempt in 0..self.limits.max_attempts {
            let now = Instant::now();
            if attempt > 0 && now >= deadline {
                break;
            }
            let req = rec.pick_request(&tried, attempt == 0);
            let pick = match self.placement.pick(&req, now) {
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
            let span = tracing::debug_span!(
                target: trace::TARGET,
                "kafka.attempt",
                topic = %rec.topic,
                partition = pick.partition,
                attempt,
                local = pick.local,
                error = tracing::field::Empty,
            );
            let timed = tokio::time::timeout(budget, write);
            let timed = if span.is_disabled() {
                timed.await
            } else {
                timed.instrument(span.clone()).await
            };
            let result = match timed {
                Ok(r) => r,
                Err(_) => Err(WriteError {
                    kind: FailureKind::Timeout,
                    message: format!("no acknowledgement within {budget:?}"),
                }),
            };
            if let Err(e) = &result {
                span.record("error", e.message.as_str());
            }
            self.placement
                .complete(&rec.topic, &pick, result.as_ref().err().map(|e| e.kind));
            let e = match result {
                Ok(w) => {
                    let bytes = if pick.local {
                        &self.metrics.bytes_local
                    } else {
                        &self.metrics.bytes_cross_az
                    };
                    bytes.inc_by(size as u64);
                    return Ok(Acked::Kafka {
                        partition: w.partition,
                        offset: w.offset,
                    });
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
                return Err(RecordError::new(code, e.message));
            }
            last_error = format!("partition {}: {}", pick.partition, e.message);
            // The producer failed, not the partition: another partition cannot help now.
            if rec.pinned() || e.kind == FailureKind::ProducerFatal {
                return Err(RecordError::new(Unavailable, last_error));
            }
            // The leader is suspect: skip its other partitions too.
            tried.extend(
                self.placement
                    .same_leader_partitions(&rec.topic, pick.partition),
            );
            self.metrics.reroutes.inc();
        }
        Err(RecordError::new(
            Unavailable,
            format!("no kafka write succeeded within the record's attempts: {last_error}"),
        ))
    }
}

/// Whether the record carries its own W3C trace context.
pub(crate) fn has_traceparent(rec: &Record) -> bool {
    rec.headers
        .iter()
        .any(|h| h.key.eq_ignore_ascii_case(TRACEPARENT))
}
