//! Message ids. A client may supply its own; otherwise the gateway assigns a UUIDv7,
//! which sorts by creation time.

/// The Kafka header that carries a record's message id, on every Kafka write and in
/// every failover envelope.
pub const MESSAGE_ID_HEADER: &str = "ballast-message-id";

/// A new time-ordered message id (UUIDv7, hyphenated).
pub fn new_message_id() -> String {
    // Encoded into a stack buffer and copied once: `to_string` would grow a `String`
    // through the formatter, on every record without a client id.
    let mut buf = uuid::Uuid::encode_buffer();
    uuid::Uuid::now_v7()
        .hyphenated()
        .encode_lower(&mut buf)
        .to_owned()
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
}
