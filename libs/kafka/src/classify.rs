//! Maps librdkafka errors to the balancer's failure classes, following Kafka's own
//! retriable classification (`org.apache.kafka.common.errors.RetriableException`): an
//! error Kafka marks retriable is never a permanent answer here.

use ballast_balancer::FailureKind;
use rdkafka::error::{KafkaError, RDKafkaErrorCode as C};

/// The failure class of a producer error.
pub fn classify(err: &KafkaError) -> FailureKind {
    match err.rdkafka_error_code() {
        Some(code) => classify_code(code),
        None => FailureKind::Other,
    }
}

/// The failure class of an error code, broker (Kafka protocol) or librdkafka-local.
pub fn classify_code(code: C) -> FailureKind {
    match code {
        C::MessageTimedOut | C::RequestTimedOut | C::OperationTimedOut => FailureKind::Timeout,
        // The partition cannot take writes now: leadership moves, replicas catch up, the
        // partition is being created or reassigned (UNKNOWN_TOPIC_OR_PARTITION is
        // retriable in Kafka), or a log directory failed.
        C::NotLeaderForPartition
        | C::LeaderNotAvailable
        | C::NotEnoughReplicas
        | C::NotEnoughReplicasAfterAppend
        | C::FencedLeaderEpoch
        | C::UnknownLeaderEpoch
        | C::KafkaStorageError
        | C::ReplicaNotAvailable
        | C::UnknownTopicOrPartition
        | C::UnknownTopic
        | C::UnknownPartition
        | C::PreferredLeaderNotAvailable
        | C::EligibleLeadersNotAvailable
        | C::OffsetNotAvailable => FailureKind::Leader,
        C::BrokerTransportFailure
        | C::AllBrokersDown
        | C::NetworkException
        | C::BrokerNotAvailable
        | C::Resolve => FailureKind::Network,
        C::MessageSizeTooLarge | C::InvalidMessageSize | C::MessageBatchTooLarge => {
            FailureKind::RecordTooLarge
        }
        C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::TransactionalIdAuthorizationFailed
        | C::SaslAuthenticationFailed
        | C::Authentication => FailureKind::Authorization,
        C::InvalidTopic => FailureKind::InvalidTopic,
        // The broker refused this record for what it is; another attempt cannot help and
        // the partition is not to blame.
        C::InvalidRecord
        | C::InvalidTimestamp
        | C::PolicyViolation
        | C::UnsupportedForMessageFormat
        | C::InvalidRequiredAcks => FailureKind::Rejected,
        // CORRUPT_MESSAGE: damaged in transit, retriable in Kafka.
        C::InvalidMessage => FailureKind::Other,
        C::QueueFull => FailureKind::QueueFull,
        _ => FailureKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let prod = KafkaError::MessageProduction;
        assert_eq!(classify(&prod(C::MessageTimedOut)), FailureKind::Timeout);
        assert_eq!(
            classify(&prod(C::NotLeaderForPartition)),
            FailureKind::Leader
        );
        assert_eq!(
            classify(&prod(C::BrokerTransportFailure)),
            FailureKind::Network
        );
        assert_eq!(
            classify(&prod(C::MessageSizeTooLarge)),
            FailureKind::RecordTooLarge
        );
        assert_eq!(
            classify(&prod(C::TopicAuthorizationFailed)),
            FailureKind::Authorization
        );
        assert_eq!(classify(&prod(C::InvalidTopic)), FailureKind::InvalidTopic);
        assert!(!classify(&prod(C::MessageSizeTooLarge)).trips_breaker());
        assert!(classify(&prod(C::MessageTimedOut)).trips_breaker());
    }

    /// Every error Kafka marks retriable for a producer is retryable here.
    #[test]
    fn kafka_retriable_errors_are_retryable() {
        for code in [
            C::UnknownTopicOrPartition,
            C::NotEnoughReplicas,
            C::NotEnoughReplicasAfterAppend,
            C::RequestTimedOut,
            C::NotLeaderForPartition,
            C::LeaderNotAvailable,
            C::KafkaStorageError,
            C::FencedLeaderEpoch,
            C::UnknownLeaderEpoch,
            C::NetworkException,
            C::ReplicaNotAvailable,
            C::InvalidMessage,
        ] {
            let kind = classify_code(code);
            assert!(
                kind.retryable(),
                "{code:?} is retriable in Kafka, got {kind:?}"
            );
            assert!(
                kind.trips_breaker(),
                "{code:?} says the partition is unhealthy"
            );
        }
    }

    #[test]
    fn record_faults_are_final_and_never_trip_a_breaker() {
        for code in [
            C::InvalidRecord,
            C::InvalidTimestamp,
            C::PolicyViolation,
            C::MessageSizeTooLarge,
            C::TopicAuthorizationFailed,
            C::InvalidTopic,
        ] {
            let kind = classify_code(code);
            assert!(!kind.retryable(), "{code:?}");
            assert!(!kind.trips_breaker(), "{code:?}");
        }
    }
}
