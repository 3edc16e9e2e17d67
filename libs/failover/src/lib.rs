//! The durable failover queue: when Kafka cannot take a record, the gateway stores it here
//! (off the node) and acknowledges it; retry workers drain it back to Kafka.
//!
//! - `envelope`: the versioned, binary-safe record format.
//! - `FailoverQueue`: enqueue, lease, ack, retry later, dead-letter, statistics, and the
//!   dead-letter store's list, redrive and purge.
//! - Backends: SQS (`aws-sdk-sqs`, with large bodies offloaded to S3 by `aws-sdk-s3`), SQLite and PostgreSQL (`sqlx`, with migrations).
//! - `Enqueuer`: the gateway's micro-batching enqueuer with a breaker on the queue.
//!
//! This crate never talks to Kafka.

mod batcher;
mod config;
pub mod envelope;
mod offload;
pub mod ordering;
mod queue;
mod seen;
mod sql;
mod sqs;

pub use batcher::Enqueuer;
pub use config::{FailoverBackend, FailoverConfig, BACKSTOP_GRACE};
pub use offload::{S3OffloadConfig, MAX_INLINE_BODY_BYTES};
pub use ordering::{Diverts, OrderingConfig, TopicOrdering};
pub use queue::{
    order_key, DeadInfo, DeadLetter, FailoverQueue, Fate, Leased, OrderedIds, QueueError,
    QueueStats,
};
pub use sql::SqlQueue;
pub use sqs::{SqsConfig, SqsQueue, SQS_MAX_RECORD_BYTES, SQS_MAX_RETENTION};
