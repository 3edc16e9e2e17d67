//! The error-code table: every domain error of every service becomes one of these codes,
//! and each code has exactly one proto `Code`, one gRPC status code and one retry hint.
//! Handlers turn errors into `tonic::Status` only through [`ErrorCode::status`].

use ballast_proto::common::v1::Code;

/// A per-record error code. See the table in [`ErrorCode::spec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    /// The failover queue did not answer in time after it may have stored the record: it
    /// may hold it. Retrying with the same message id can store a second copy (which the
    /// dedup service absorbs), never lose one.
    DeadlineExceeded,
    RecordTooLarge,
    PermissionDenied,
    FailedPrecondition,
    Unauthenticated,
    ShuttingDown,
    Internal,
}

struct Spec {
    proto: Code,
    grpc: tonic::Code,
    retryable: bool,
    label: &'static str,
}

impl ErrorCode {
    /// Every code, for exhaustive tests and metric label pre-registration.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::InvalidArgument,
        ErrorCode::NotFound,
        ErrorCode::ResourceExhausted,
        ErrorCode::Unavailable,
        ErrorCode::DeadlineExceeded,
        ErrorCode::RecordTooLarge,
        ErrorCode::PermissionDenied,
        ErrorCode::FailedPrecondition,
        ErrorCode::Unauthenticated,
        ErrorCode::ShuttingDown,
        ErrorCode::Internal,
    ];

    const fn spec(self) -> Spec {
        use ErrorCode::*;
        let (proto, grpc, retryable, label) = match self {
            InvalidArgument => (
                Code::InvalidArgument,
                tonic::Code::InvalidArgument,
                false,
                "invalid_argument",
            ),
            NotFound => (Code::NotFound, tonic::Code::NotFound, false, "not_found"),
            ResourceExhausted => (
                Code::ResourceExhausted,
                tonic::Code::ResourceExhausted,
                true,
                "resource_exhausted",
            ),
            Unavailable => (
                Code::Unavailable,
                tonic::Code::Unavailable,
                true,
                "unavailable",
            ),
            DeadlineExceeded => (
                Code::DeadlineExceeded,
                tonic::Code::DeadlineExceeded,
                true,
                "deadline_exceeded",
            ),
            RecordTooLarge => (
                Code::RecordTooLarge,
                tonic::Code::InvalidArgument,
                false,
                "record_too_large",
            ),
            PermissionDenied => (
                Code::PermissionDenied,
                tonic::Code::PermissionDenied,
                false,
                "permission_denied",
            ),
            FailedPrecondition => (
                Code::FailedPrecondition,
                tonic::Code::FailedPrecondition,
                false,
                "failed_precondition",
            ),
            Unauthenticated => (
                Code::Unauthenticated,
                tonic::Code::Unauthenticated,
                false,
                "unauthenticated",
            ),
            ShuttingDown => (
                Code::ShuttingDown,
                tonic::Code::Unavailable,
                true,
                "shutting_down",
            ),
            Internal => (Code::Internal, tonic::Code::Internal, true, "internal"),
        };
        Spec {
            proto,
            grpc,
            retryable,
            label,
        }
    }

    /// The proto enum value sent in `RecordError.code`.
    pub const fn proto(self) -> Code {
        self.spec().proto
    }

    /// The gRPC status code used when a whole call fails with this code.
    pub const fn grpc(self) -> tonic::Code {
        self.spec().grpc
    }

    /// Whether sending the same record again may succeed.
    pub const fn retryable(self) -> bool {
        self.spec().retryable
    }

    /// A stable snake_case label for metrics and logs.
    pub const fn label(self) -> &'static str {
        self.spec().label
    }

    /// When a service answers with this code: the book's error-code table is generated
    /// from it.
    pub const fn when(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InvalidArgument => "empty or illegal topic, bad partition, bad `key_policy`, reserved header, bad `message_id`",
            NotFound => "the topic does not exist",
            RecordTooLarge => "over `limits.max_record_bytes` or the broker's limit",
            PermissionDenied => "the cluster refused the write, or the policy does not grant the caller this topic (the record fails alone) or this call",
            Unauthenticated => "(whole call) no valid bearer token or client certificate, with `auth.policy_file` set",
            ResourceExhausted => "over `limits.inflight_bytes`, or past `limits.max_records_per_request` in one request",
            Unavailable => "no partition the record may use can take it now, and no failover queue took it",
            DeadlineExceeded => "the failover queue did not answer within `failover.write_timeout` after it may have stored the record: it may hold it (and then delivers it); retry with the same `message_id`",
            ShuttingDown => "the gateway is stopping",
            FailedPrecondition => "(topology) no reassignment plan meets the requested limits",
            Internal => "an unexpected error inside Ballast",
        }
    }

    /// The whole-call gRPC status for an error of this code.
    pub fn status(self, message: impl Into<String>) -> tonic::Status {
        tonic::Status::new(self.grpc(), message.into())
    }
}

/// A per-record error: a code, a lowercase message and the retry hint of its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    pub code: ErrorCode,
    pub message: String,
}

impl RecordError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn retryable(&self) -> bool {
        self.code.retryable()
    }

    /// Converts to a whole-call gRPC status, for handler edges that fail a call.
    pub fn into_status(self) -> tonic::Status {
        self.code.status(self.message)
    }

    /// Converts to the proto `RecordError`.
    pub fn to_proto(&self) -> ballast_proto::ingest::v1::RecordError {
        ballast_proto::ingest::v1::RecordError {
            code: self.code.proto() as i32,
            message: self.message.clone(),
            retryable: self.retryable(),
        }
    }
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.label(), self.message)
    }
}

impl std::error::Error for RecordError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_codes_and_labels_are_unique() {
        let mut protos: Vec<i32> = ErrorCode::ALL.iter().map(|c| c.proto() as i32).collect();
        let mut labels: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.label()).collect();
        protos.sort();
        protos.dedup();
        labels.sort();
        labels.dedup();
        assert_eq!(protos.len(), ErrorCode::ALL.len());
        assert_eq!(labels.len(), ErrorCode::ALL.len());
        assert!(!protos.contains(&(Code::Unspecified as i32)));
    }

    #[test]
    fn only_transient_codes_are_retryable() {
        assert!(ErrorCode::Unavailable.retryable());
        assert!(ErrorCode::ResourceExhausted.retryable());
        assert!(ErrorCode::DeadlineExceeded.retryable());
        assert!(!ErrorCode::InvalidArgument.retryable());
        assert!(!ErrorCode::RecordTooLarge.retryable());
        assert!(!ErrorCode::PermissionDenied.retryable());
    }

    #[test]
    fn whole_call_statuses_come_from_the_table() {
        for code in ErrorCode::ALL {
            let status = code.status("m");
            assert_eq!(status.code(), code.grpc(), "{}", code.label());
            assert_eq!(status.message(), "m");
        }
        assert_eq!(
            ErrorCode::FailedPrecondition.grpc(),
            tonic::Code::FailedPrecondition
        );
        assert!(!ErrorCode::FailedPrecondition.retryable());
        assert_eq!(
            ErrorCode::RecordTooLarge.grpc(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn status_carries_code_and_message() {
        let status = RecordError::new(ErrorCode::NotFound, "unknown topic").into_status();
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(status.message(), "unknown topic");
    }
}
