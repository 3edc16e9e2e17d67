//! The write path's domain types: a record in, its outcome out.

use ballast_balancer::{KeyPolicy, PickRequest};
use ballast_core::{ErrorCode, RecordError};
use ballast_proto::ingest::v1 as wire;
use bytes::Bytes;
use std::time::Duration;

/// One record to place and write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    /// Key, value and header values are `Bytes`: records decoded from a request share its
    /// buffer.
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<Header>,
    /// Empty: the write path assigns a UUIDv7.
    pub message_id: String,
    pub key_policy: KeyPolicy,
    /// An explicit partition; such a record is never rerouted.
    pub partition: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Bytes,
}

impl Record {
    /// Whether the record may only go to one partition: a STRICT key or an explicit
    /// partition.
    pub fn pinned(&self) -> bool {
        self.partition.is_some() || (self.key.is_some() && self.key_policy == KeyPolicy::Strict)
    }

    /// What the balancer is asked to place for this record, leaving out the partitions
    /// already `tried`.
    pub fn pick_request<'a>(&'a self, tried: &'a [i32], allow_probe: bool) -> PickRequest<'a> {
        PickRequest {
            topic: &self.topic,
            key: self.key.as_deref(),
            policy: self.key_policy,
            partition: self.partition,
            exclude: tried,
            allow_probe,
        }
    }
}

/// Where an acknowledged record is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acked {
    /// Kafka has it with `acks=all`.
    Kafka { partition: i32, offset: i64 },
    /// The durable failover queue has it; a retry worker will write it to Kafka.
    Failover {
        backend: String,
        queue: String,
        entry_id: String,
    },
}

/// A record's answer, with what metrics need to know of it.
#[derive(Debug)]
pub struct Produced {
    /// The record's id: the caller's, or the one assigned.
    pub message_id: String,
    /// The record's topic, as given (it may be invalid or unknown).
    pub topic: String,
    pub outcome: Result<Acked, RecordError>,
    pub elapsed: Duration,
    /// The Kafka writes tried for the record. 0 when it was answered before any: refused
    /// at admission or by the in-flight budget, or no partition could take it (every
    /// breaker open, or a half-open partition's probes taken by other records).
    pub kafka_writes: u32,
}

impl Produced {
    /// An answer for a record refused before any work, e.g. over a request limit.
    pub fn rejected(message_id: String, topic: String, error: RecordError) -> Self {
        Self {
            message_id,
            topic,
            outcome: Err(error),
            elapsed: Duration::ZERO,
            kafka_writes: 0,
        }
    }

    /// `kafka`, `failover` or an error code label: a stable metrics label.
    pub fn label(&self) -> &'static str {
        match &self.outcome {
            Ok(Acked::Kafka { .. }) => "kafka",
            Ok(Acked::Failover { .. }) => "failover",
            Err(e) => e.code.label(),
        }
    }

    /// Whether the record was refused for its topic (invalid or unknown), so a metrics
    /// label must not carry the client's topic string.
    pub fn topic_refused(&self) -> bool {
        self.outcome
            .as_ref()
            .is_err_and(|e| matches!(e.code, ErrorCode::InvalidArgument | ErrorCode::NotFound))
    }
}

/// The key policy of a wire value (`ballast.ingest.v1.KeyPolicy`, also used in failover
/// envelopes); `None` for a value this version does not know.
pub fn key_policy_from_wire(value: i32) -> Option<KeyPolicy> {
    match wire::KeyPolicy::try_from(value) {
        Ok(wire::KeyPolicy::Strict) => Some(KeyPolicy::Strict),
        Ok(wire::KeyPolicy::Preferred) => Some(KeyPolicy::Preferred),
        Err(_) => None,
    }
}

pub fn key_policy_to_wire(policy: KeyPolicy) -> i32 {
    match policy {
        KeyPolicy::Strict => wire::KeyPolicy::Strict as i32,
        KeyPolicy::Preferred => wire::KeyPolicy::Preferred as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_policy_round_trips_and_unknown_values_are_none() {
        for p in [KeyPolicy::Strict, KeyPolicy::Preferred] {
            assert_eq!(key_policy_from_wire(key_policy_to_wire(p)), Some(p));
        }
        assert_eq!(key_policy_from_wire(7), None);
    }

    #[test]
    fn pinned_records() {
        let keyed = Record {
            key: Some(Bytes::from_static(b"k")),
            ..Default::default()
        };
        assert!(keyed.pinned());
        assert!(!Record {
            key_policy: KeyPolicy::Preferred,
            ..keyed
        }
        .pinned());
        assert!(Record {
            partition: Some(1),
            ..Default::default()
        }
        .pinned());
        assert!(!Record::default().pinned());
    }
}
