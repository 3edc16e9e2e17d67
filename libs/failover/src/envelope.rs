//! The failover envelope codec: `BLST`, a version byte, then the protobuf `Envelope`.
//! Binary-safe; decoding garbage is an error, never a panic.

pub use ballast_proto::failover::v1::{Envelope, EnvelopeHeader};

const MAGIC: &[u8; 4] = b"BLST";
pub const VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not a ballast envelope (bad magic)")]
    BadMagic,
    #[error("unsupported envelope version {0}")]
    Version(u8),
    #[error("corrupt envelope: {0}")]
    Corrupt(String),
}

pub fn encode(env: &Envelope) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + prost::Message::encoded_len(env));
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    prost::Message::encode(env, &mut out).expect("a Vec grows as needed");
    out
}

pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
    if bytes.len() < 5 || &bytes[..4] != MAGIC {
        return Err(EnvelopeError::BadMagic);
    }
    if bytes[4] != VERSION {
        return Err(EnvelopeError::Version(bytes[4]));
    }
    <Envelope as prost::Message>::decode(&bytes[5..])
        .map_err(|e| EnvelopeError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn envelope() -> impl Strategy<Value = Envelope> {
        (
            "[a-z0-9._-]{1,40}",
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
            0i32..2,
            proptest::option::of(0i32..64),
            proptest::collection::vec(any::<u8>(), 0..512),
            proptest::collection::vec(
                ("[ -~]{1,16}", proptest::collection::vec(any::<u8>(), 0..32)),
                0..4,
            ),
            "[ -~]{0,64}",
            any::<u32>(),
            any::<i64>(),
            ".{0,80}",
        )
            .prop_map(
                |(
                    topic,
                    key,
                    key_policy,
                    partition,
                    value,
                    headers,
                    message_id,
                    attempt,
                    first,
                    last_error,
                )| Envelope {
                    topic,
                    key: key.map(Into::into),
                    key_policy,
                    partition,
                    value: value.into(),
                    headers: headers
                        .into_iter()
                        .map(|(key, value)| EnvelopeHeader {
                            key,
                            value: value.into(),
                        })
                        .collect(),
                    message_id,
                    attempt,
                    first_failed_at_unix_ms: first,
                    last_error,
                },
            )
    }

    proptest! {
        #[test]
        fn round_trips(env in envelope()) {
            prop_assert_eq!(decode(&encode(&env)).unwrap(), env);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
            let mut framed = b"BLST\x01".to_vec();
            framed.extend_from_slice(&bytes);
            let _ = decode(&framed);
        }
    }

    #[test]
    fn rejects_wrong_magic_and_version() {
        assert_eq!(decode(b"nope!"), Err(EnvelopeError::BadMagic));
        assert_eq!(decode(b"BLST\x07abc"), Err(EnvelopeError::Version(7)));
        assert!(matches!(
            decode(b"BLST\x01\xff\xff\xff"),
            Err(EnvelopeError::Corrupt(_))
        ));
    }
}
