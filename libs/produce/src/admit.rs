//! Admission: a record is valid, fits `max_record_bytes`, and fits the in-flight byte
//! budget, or it fails alone with a clear error before any work.

use crate::record::Record;
use ballast_core::{
    validate_message_id, validate_topic, ErrorCode, RecordError, MESSAGE_ID_HEADER,
};
use bytes::Bytes;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The write path's limits (the gateway sets them from `limits.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteLimits {
    /// Key + value + headers of one record.
    pub max_record_bytes: usize,
    /// Memory for records in flight across all callers, each counted
    /// [`COPIES_IN_FLIGHT`] times its size; past it, RESOURCE_EXHAUSTED.
    pub inflight_bytes: usize,
    /// Kafka attempts per record (rerouted to another partition when allowed).
    pub max_attempts: u32,
    /// The total time a record may spend on Kafka attempts.
    pub record_deadline: Duration,
}

impl Default for WriteLimits {
    fn default() -> Self {
        Self {
            max_record_bytes: 1024 * 1024,
            inflight_bytes: 256 * 1024 * 1024,
            max_attempts: 3,
            record_deadline: Duration::from_secs(5),
        }
    }
}

/// Key + value + header bytes.
pub fn record_size(rec: &Record) -> usize {
    rec.key.as_ref().map_or(0, Bytes::len)
        + rec.value.len()
        + rec
            .headers
            .iter()
            .map(|h| h.key.len() + h.value.len())
            .sum::<usize>()
}

/// Checks a record and returns its size.
pub fn validate(
    rec: &Record,
    message_id: &str,
    limits: &WriteLimits,
) -> Result<usize, RecordError> {
    use ErrorCode::*;
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
    let size = record_size(rec);
    if size > limits.max_record_bytes {
        return Err(RecordError::new(
            RecordTooLarge,
            format!(
                "record is {size} bytes; the limit is {} (limits.max_record_bytes)",
                limits.max_record_bytes
            ),
        ));
    }
    Ok(size)
}

/// How many copies of a record's bytes the gateway holds while the record is in flight:
/// its own (a slice of the request buffer it was decoded from), and either librdkafka's
/// (the producer copies the payload into its queue) or the encoded failover envelope
/// (which takes the record's slices, so the two never overlap). The budget charges a
/// record this many times its size, so `limits.inflight_bytes` bounds memory, not just
/// payload. A request buffer lives until its last record is answered; the gateway bounds
/// those buffers apart (`limits.max_concurrent_requests` × `limits.max_request_bytes`).
pub const COPIES_IN_FLIGHT: usize = 2;

/// The global budget of record bytes in flight.
#[derive(Debug)]
pub(crate) struct Budget {
    bytes: Arc<Semaphore>,
    gauge: Gauge,
}

/// A record's share of the budget, given back on drop.
#[derive(Debug)]
pub(crate) struct Admitted {
    _permit: OwnedSemaphorePermit,
    gauge: Gauge,
    size: i64,
}

impl Budget {
    pub(crate) fn new(bytes: usize, gauge: Gauge) -> Self {
        Self {
            bytes: Arc::new(Semaphore::new(bytes)),
            gauge,
        }
    }

    /// Takes `size` bytes of the budget, or fails at once: never waits.
    pub(crate) fn admit(&self, size: usize) -> Result<Admitted, RecordError> {
        let permit = self
            .bytes
            .clone()
            .try_acquire_many_owned(size.max(1) as u32)
            .map_err(|_| {
                RecordError::new(
                    ErrorCode::ResourceExhausted,
                    "in-flight byte budget exhausted (limits.inflight_bytes); retry later",
                )
            })?;
        self.gauge.inc_by(size as i64);
        Ok(Admitted {
            _permit: permit,
            gauge: self.gauge.clone(),
            size: size as i64,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.gauge.dec_by(self.size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Header;

    #[test]
    fn validation_names_what_is_wrong() {
        let limits = WriteLimits {
            max_record_bytes: 10,
            ..WriteLimits::default()
        };
        let ok = Record {
            topic: "t".into(),
            value: Bytes::from_static(b"12345"),
            ..Default::default()
        };
        assert_eq!(validate(&ok, "id", &limits), Ok(5));
        let reserved = Record {
            headers: vec![Header {
                key: MESSAGE_ID_HEADER.into(),
                value: Bytes::new(),
            }],
            ..ok.clone()
        };
        let e = validate(&reserved, "id", &limits).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert!(e.message.contains("reserved"), "{e}");
        let big = Record {
            value: Bytes::from(vec![0; 11]),
            ..ok.clone()
        };
        let e = validate(&big, "id", &limits).unwrap_err();
        assert_eq!(e.code, ErrorCode::RecordTooLarge);
        assert!(e.message.contains("limits.max_record_bytes"), "{e}");
        let e = validate(
            &Record {
                topic: "a b".into(),
                ..ok
            },
            "id",
            &limits,
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
    }

    #[test]
    fn budget_is_given_back_on_drop() {
        let gauge = Gauge::default();
        let budget = Budget::new(100, gauge.clone());
        let a = budget.admit(60).unwrap();
        assert_eq!(gauge.get(), 60);
        assert_eq!(
            budget.admit(60).unwrap_err().code,
            ErrorCode::ResourceExhausted
        );
        drop(a);
        assert_eq!(gauge.get(), 0);
        budget.admit(100).unwrap();
    }
}
