//! Input validation with the same rules as Kafka, so a bad record fails early with a clear
//! message instead of deep inside the producer.

/// Kafka's limit on topic name length.
pub const MAX_TOPIC_LEN: usize = 249;
/// Ballast's limit on a client-supplied message id.
pub const MAX_MESSAGE_ID_LEN: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("topic is empty")]
    EmptyTopic,
    #[error("topic name is longer than 249 characters")]
    TopicTooLong,
    #[error("topic name may not be '.' or '..'")]
    TopicDots,
    #[error("topic name may only contain ascii letters, digits, '.', '_' and '-'")]
    TopicChars,
    #[error("message id is longer than 256 bytes")]
    MessageIdTooLong,
    #[error("message id contains control characters")]
    MessageIdChars,
}

/// Checks a topic name against Kafka's rules (`org.apache.kafka.common.internals.Topic`).
pub fn validate_topic(topic: &str) -> Result<(), ValidationError> {
    if topic.is_empty() {
        return Err(ValidationError::EmptyTopic);
    }
    if topic == "." || topic == ".." {
        return Err(ValidationError::TopicDots);
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(ValidationError::TopicTooLong);
    }
    if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(ValidationError::TopicChars);
    }
    Ok(())
}

/// Checks a client-supplied message id. An empty id is valid: the gateway assigns one.
pub fn validate_message_id(id: &str) -> Result<(), ValidationError> {
    if id.len() > MAX_MESSAGE_ID_LEN {
        return Err(ValidationError::MessageIdTooLong);
    }
    if id.chars().any(char::is_control) {
        return Err(ValidationError::MessageIdChars);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kafka_topic_rules() {
        assert_eq!(validate_topic(""), Err(ValidationError::EmptyTopic));
        assert_eq!(validate_topic("."), Err(ValidationError::TopicDots));
        assert_eq!(validate_topic(".."), Err(ValidationError::TopicDots));
        assert_eq!(validate_topic("a b"), Err(ValidationError::TopicChars));
        assert_eq!(validate_topic("ä"), Err(ValidationError::TopicChars));
        assert_eq!(
            validate_topic(&"x".repeat(250)),
            Err(ValidationError::TopicTooLong)
        );
        assert_eq!(validate_topic(&"x".repeat(249)), Ok(()));
        assert_eq!(validate_topic("events.v1_raw-2"), Ok(()));
    }

    #[test]
    fn message_id_rules() {
        assert_eq!(validate_message_id(""), Ok(()));
        assert_eq!(validate_message_id("order-42"), Ok(()));
        assert_eq!(
            validate_message_id("a\nb"),
            Err(ValidationError::MessageIdChars)
        );
        assert_eq!(
            validate_message_id(&"x".repeat(257)),
            Err(ValidationError::MessageIdTooLong)
        );
    }

    proptest! {
        #[test]
        fn legal_topics_pass(t in "[a-zA-Z0-9._-]{1,249}") {
            prop_assume!(t != "." && t != "..");
            prop_assert_eq!(validate_topic(&t), Ok(()));
        }
    }
}
