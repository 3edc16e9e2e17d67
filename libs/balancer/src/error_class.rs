//! Classification of write failures: which ones say a partition is unhealthy.

/// Why a write to a partition failed, as far as the balancer cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The leader moved or is not available.
    Leader,
    /// The connection to the leader failed.
    Network,
    /// No answer within the write deadline.
    Timeout,
    /// The record is too large for the broker.
    RecordTooLarge,
    /// The cluster refused the write for authorization reasons.
    Authorization,
    /// The topic name is invalid (INVALID_TOPIC_EXCEPTION). An unknown topic or
    /// partition is transient (`Leader`): Kafka reports it while partitions move.
    InvalidTopic,
    /// The broker refused this record for what it is (invalid record or timestamp, a
    /// policy violation): final for the record, and says nothing about the partition.
    Rejected,
    /// The producer's local queue is full.
    QueueFull,
    /// The producer itself hit a fatal error (and was rebuilt): the producer's fault, not
    /// the partition's. Retryable; never trips a breaker.
    ProducerFatal,
    /// Anything else; counts against the partition.
    Other,
}

impl FailureKind {
    /// Whether this failure counts towards opening the partition's breaker. A record that
    /// is too large or not allowed says nothing about the partition.
    pub fn trips_breaker(self) -> bool {
        matches!(
            self,
            FailureKind::Leader | FailureKind::Network | FailureKind::Timeout | FailureKind::Other
        )
    }

    /// Whether another attempt, on another partition or later, may succeed.
    pub fn retryable(self) -> bool {
        !matches!(
            self,
            FailureKind::RecordTooLarge
                | FailureKind::Authorization
                | FailureKind::InvalidTopic
                | FailureKind::Rejected
        )
    }

    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Leader => "leader",
            FailureKind::Network => "network",
            FailureKind::Timeout => "timeout",
            FailureKind::RecordTooLarge => "record_too_large",
            FailureKind::Authorization => "authorization",
            FailureKind::InvalidTopic => "invalid_topic",
            FailureKind::Rejected => "rejected",
            FailureKind::QueueFull => "queue_full",
            FailureKind::ProducerFatal => "producer_fatal",
            FailureKind::Other => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_partition_health_failures_trip() {
        assert!(FailureKind::Leader.trips_breaker());
        assert!(FailureKind::Network.trips_breaker());
        assert!(FailureKind::Timeout.trips_breaker());
        assert!(!FailureKind::RecordTooLarge.trips_breaker());
        assert!(!FailureKind::Authorization.trips_breaker());
        assert!(!FailureKind::InvalidTopic.trips_breaker());
        assert!(!FailureKind::QueueFull.trips_breaker());
        assert!(!FailureKind::Rejected.trips_breaker());
        assert!(!FailureKind::Rejected.retryable());
        assert!(!FailureKind::ProducerFatal.trips_breaker());
        assert!(FailureKind::ProducerFatal.retryable());
    }
}
