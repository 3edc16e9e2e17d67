//! Maps librdkafka errors to the balancer's failure classes.

use ballast_balancer::FailureKind;
use rdkafka::error::{KafkaError, RDKafkaErrorCode as C};

/// The failure class of a producer error.
pub fn classify(err: &KafkaError) -> FailureKind {
    match err.rdkafka_error_code() {
        Some(code) => classify_code(code),
        None => FailureKind::Other,
    }
}

fn classify_code(code: C) -> FailureKind {
    match code {
        C::MessageTimedOut | C::RequestTimedOut | C::OperationTimedOut => FailureKind::Timeout,
        C::NotLeaderForPartition
        | C::LeaderNotAvailable
        | C::NotEnoughReplicas
        | C::NotEnoughReplicasAfterAppend
        | C::FencedLeaderEpoch
        | C::UnknownLeaderEpoch
        | C::KafkaStorageError
        | C::ReplicaNotAvailable => FailureKind::Leader,
        C::BrokerTransportFailure
        | C::AllBrokersDown
        | C::NetworkException
        | C::BrokerNotAvailable
        | C::Resolve => FailureKind::Network,
        C::MessageSizeTooLarge | C::InvalidMessageSize | C::InvalidRecord => {
            FailureKind::RecordTooLarge
        }
        C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::SaslAuthenticationFailed
        | C::Authentication => FailureKind::Authorization,
        C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition | C::InvalidTopic => {
            FailureKind::InvalidTopic
        }
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
        assert_eq!(classify(&prod(C::UnknownTopic)), FailureKind::InvalidTopic);
        assert!(!classify(&prod(C::MessageSizeTooLarge)).trips_breaker());
        assert!(classify(&prod(C::MessageTimedOut)).trips_breaker());
    }
}
