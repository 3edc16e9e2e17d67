//! Conversion at the gRPC edge: `ballast.ingest.v1` records in, write-path records out,
//! and outcomes back into per-record results.

use ballast_core::{new_message_id, ErrorCode, RecordError};
use ballast_produce::{key_policy_from_wire, Acked, Header, Produced, Record};
use ballast_proto::ingest::v1 as pb;

/// The write-path record of a proto record, or the answer for one that is malformed on
/// the wire (an unknown key policy).
pub fn record(rec: pb::Record) -> Result<Record, Box<Produced>> {
    let Some(key_policy) = key_policy_from_wire(rec.key_policy) else {
        let message_id = if rec.message_id.is_empty() {
            new_message_id()
        } else {
            rec.message_id
        };
        return Err(Box::new(Produced::rejected(
            message_id,
            rec.topic,
            RecordError::new(ErrorCode::InvalidArgument, "unknown key_policy"),
        )));
    };
    Ok(Record {
        topic: rec.topic,
        key: rec.key,
        value: rec.value,
        headers: rec
            .headers
            .into_iter()
            .map(|h| Header {
                key: h.key,
                value: h.value,
            })
            .collect(),
        message_id: rec.message_id,
        key_policy,
        partition: rec.partition,
    })
}

/// The per-record result of an outcome.
pub fn result(p: Produced) -> pb::RecordResult {
    use pb::record_result::Outcome;
    let outcome = match p.outcome {
        Ok(Acked::Kafka { partition, offset }) => {
            Outcome::Kafka(pb::KafkaAck { partition, offset })
        }
        Ok(Acked::Failover {
            backend,
            queue,
            entry_id,
        }) => Outcome::Failover(pb::FailoverAck {
            backend,
            queue,
            entry_id,
        }),
        Err(e) => Outcome::Error(e.to_proto()),
    };
    pb::RecordResult {
        message_id: p.message_id,
        outcome: Some(outcome),
    }
}
