//! Message ids. A client may supply its own; otherwise the gateway assigns a UUIDv7,
//! which sorts by creation time.

/// The Kafka header that carries a record's message id, on every Kafka write and in
/// every failover envelope.
pub const MESSAGE_ID_HEADER: &str = "ballast-message-id";

/// A new time-ordered message id (UUIDv7, hyphenated).
pub fn new_message_id() -> String {
    encode(uuid::Uuid::now_v7())
}

/// Ids for the records of one batch. The clock is read once, when the batch begins; each
/// id after the first counts up within that millisecond (UUIDv7's counter), so the ids
/// are unique and sort in the batch's order. `new_message_id` reads the clock, and takes
/// a process-wide lock, for every id.
#[derive(Debug)]
pub struct MessageIds {
    context: uuid::ContextV7,
    seconds: u64,
    nanos: u32,
}

impl MessageIds {
    pub fn new() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            context: uuid::ContextV7::new(),
            seconds: now.as_secs(),
            nanos: now.subsec_nanos(),
        }
    }

    /// The batch's next id.
    pub fn next_id(&self) -> String {
        encode(uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
            &self.context,
            self.seconds,
            self.nanos,
        )))
    }
}

impl Default for MessageIds {
    fn default() -> Self {
        Self::new()
    }
}

fn encode(id: uuid::Uuid) -> String {
    // Encoded into a stack buffer and copied once: `to_string` would grow a `String`
    // through the formatter, on every record without a client id.
    let mut buf = uuid::Uuid::encode_buffer();
    id.hyphenated().encode_lower(&mut buf).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v7_and_unique() {
        let a = new_message_id();
        let b = new_message_id();
        assert_ne!(a, b);
        let parsed = uuid::Uuid::parse_str(&a).expect("valid uuid");
        assert_eq!(parsed.get_version_num(), 7);
    }

    #[test]
    fn a_batch_s_ids_are_v7_unique_and_in_order() {
        let ids = MessageIds::new();
        let batch: Vec<String> = (0..10_000).map(|_| ids.next_id()).collect();
        for id in &batch {
            let parsed = uuid::Uuid::parse_str(id).expect("valid uuid");
            assert_eq!(parsed.get_version_num(), 7);
        }
        assert!(
            batch.windows(2).all(|w| w[0] < w[1]),
            "ids sort in batch order"
        );
        // Another batch begun at once, most likely in the same millisecond, has other ids.
        let other = MessageIds::new();
        let more: std::collections::HashSet<String> =
            (0..10_000).map(|_| other.next_id()).collect();
        assert!(batch.iter().all(|id| !more.contains(id)));
        // Each id carries the batch's millisecond, within a second of the clock.
        let ms = |id: &str| {
            let (secs, nanos) = uuid::Uuid::parse_str(id)
                .unwrap()
                .get_timestamp()
                .unwrap()
                .to_unix();
            secs * 1000 + u64::from(nanos) / 1_000_000
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(now.abs_diff(ms(&batch[0])) < 1000);
    }
}
