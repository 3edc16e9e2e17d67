//! Failover: a record that Kafka cannot take now goes, as a versioned envelope, to the
//! durable queue, and is acknowledged from there. The retry worker turns envelopes back
//! into records with [`record_of`].

use crate::record::{key_policy_from_wire, key_policy_to_wire, Acked, Header, Record};
use ballast_core::unix_ms;
use ballast_core::{ErrorCode, RecordError};
use ballast_failover::envelope::{self, Envelope, EnvelopeHeader};
use ballast_failover::Enqueuer;
use ballast_telemetry::trace;
use tracing::Instrument;

/// The envelope of a record that failed on Kafka with `kafka_error`, at attempt 0. It
/// takes the record's buffers (slices of the request's), so no copy of the value is made.
pub fn envelope_of(rec: Record, message_id: &str, kafka_error: &RecordError) -> Envelope {
    Envelope {
        topic: rec.topic,
        key: rec.key,
        key_policy: key_policy_to_wire(rec.key_policy),
        partition: rec.partition,
        value: rec.value,
        headers: rec
            .headers
            .into_iter()
            .map(|h| EnvelopeHeader {
                key: h.key,
                value: h.value,
            })
            .collect(),
        message_id: message_id.to_string(),
        attempt: 0,
        first_failed_at_unix_ms: unix_ms(),
        last_error: truncate(&kafka_error.message, MAX_LAST_ERROR_BYTES).to_string(),
    }
}

/// An envelope's `last_error` is cut to this, so its size stays bounded (SQS holds 256 KiB).
pub const MAX_LAST_ERROR_BYTES: usize = 1024;

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The record an envelope carries: its original topic, key, key policy, partition,
/// headers and message id. An envelope from a newer version with a key policy this one
/// does not know is an error, never a silent change of policy.
pub fn record_of(env: &Envelope) -> Result<Record, RecordError> {
    let key_policy = key_policy_from_wire(env.key_policy).ok_or_else(|| {
        RecordError::new(
            ErrorCode::InvalidArgument,
            format!("unknown key_policy {}", env.key_policy),
        )
    })?;
    Ok(Record {
        topic: env.topic.clone(),
        key: env.key.clone(),
        value: env.value.clone(),
        headers: env
            .headers
            .iter()
            .map(|h| Header {
                key: h.key.clone(),
                value: h.value.clone(),
            })
            .collect(),
        message_id: env.message_id.clone(),
        key_policy,
        partition: env.partition,
    })
}

/// Stores the record in the failover queue and acknowledges it from there, with the
/// epoch of its ordered partition's mark. When the queue fails too, the record is not
/// acknowledged.
pub(crate) async fn fail_over(
    queue: &Enqueuer,
    rec: Record,
    message_id: &str,
    kafka_error: &RecordError,
    order: Option<String>,
) -> Result<(Acked, Option<i64>), RecordError> {
    let traced = crate::attempt::has_traceparent(&rec);
    let mut env = envelope_of(rec, message_id, kafka_error);
    // The retry worker continues the trace from the envelope's headers.
    if !traced {
        if let Some(tp) = trace::current_traceparent() {
            env.headers.push(EnvelopeHeader {
                key: trace::TRACEPARENT.into(),
                value: tp.into_bytes().into(),
            });
        }
    }
    let span =
        tracing::debug_span!(target: trace::TARGET, "failover.enqueue", backend = queue.backend());
    // The encoded body is the one copy that waits for the queue; the record's buffers go.
    let body = envelope::encode(&env);
    drop(env);
    match queue.enqueue_ordered(body, order).instrument(span).await {
        Ok((entry_id, epoch)) => Ok((
            Acked::Failover {
                backend: queue.backend().to_string(),
                queue: queue.queue_name().to_string(),
                entry_id,
            },
            epoch,
        )),
        // The queue may hold the record: say so, since UNAVAILABLE promises it does not.
        Err(e) if e.may_hold() => Err(RecordError::new(
            ErrorCode::DeadlineExceeded,
            format!(
                "kafka: {}; failover: {e}; the queue may hold the record: retry with the same message_id",
                kafka_error.message
            ),
        )),
        Err(e) => Err(RecordError::new(
            ErrorCode::Unavailable,
            format!("kafka: {}; failover: {e}", kafka_error.message),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ballast_balancer::KeyPolicy;
    use bytes::Bytes;

    #[test]
    fn a_record_survives_the_envelope() {
        let rec = Record {
            topic: "orders".into(),
            key: Some(Bytes::from_static(b"k")),
            value: Bytes::from_static(&[0, 255, 1]),
            headers: vec![Header {
                key: "h".into(),
                value: Bytes::from_static(b"v"),
            }],
            message_id: String::new(),
            key_policy: KeyPolicy::Preferred,
            partition: Some(3),
        };
        let err = RecordError::new(ErrorCode::Unavailable, "leader gone");
        let env =
            envelope::decode(&envelope::encode(&envelope_of(rec.clone(), "m-1", &err))).unwrap();
        assert_eq!(env.last_error, "leader gone");
        assert_eq!(env.attempt, 0);
        let back = record_of(&env).unwrap();
        assert_eq!(
            back,
            Record {
                message_id: "m-1".into(),
                ..rec
            }
        );
        let odd = Envelope {
            key_policy: 9,
            ..env
        };
        assert_eq!(
            record_of(&odd).unwrap_err().code,
            ErrorCode::InvalidArgument
        );
    }
}
