//! The failover queue abstraction shared by the gateway (enqueue) and the retry workers
//! (receive, ack, retry, dead-letter) and the admin API.

pub(crate) use ballast_core::unix_ms as now_ms;

/// An AWS SDK call's failure (SQS or S3: the SDKs share the error type), as the queue
/// reports it: `prefix` and the error with its sources.
pub(crate) fn err_sdk_in<E: std::error::Error + 'static>(
    prefix: &str,
    e: aws_sdk_sqs::error::SdkError<E>,
) -> QueueError {
    QueueError::Unavailable(format!(
        "{prefix}{}",
        aws_sdk_sqs::error::DisplayErrorContext(e)
    ))
}

/// An SQS call's failure: the error with its sources.
pub(crate) fn err_sdk<E: std::error::Error + 'static>(
    e: aws_sdk_sqs::error::SdkError<E>,
) -> QueueError {
    err_sdk_in("", e)
}
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The queue cannot be reached or refused the call; nothing was stored.
    #[error("failover queue unavailable: {0}")]
    Unavailable(String),
    #[error("failover queue config: {0}")]
    Config(String),
    #[error("failover queue: {0}")]
    Invalid(String),
    /// The call may have been applied, but its answer did not come within its bound (or
    /// the connection failed after the request went out): the queue may hold the bodies.
    /// Sending them again may store a second copy, never lose one.
    #[error("failover queue outcome unknown: {0}")]
    Ambiguous(String),
    /// An enqueue's bodies met different fates (SQS answers a batch entry by entry, and
    /// sub-batches go one after another): `stored[i]` is body `i`'s.
    #[error("failover queue stored {} of {} records: {reason}", stored.iter().filter(|f| matches!(f, Fate::Held(_))).count(), stored.len())]
    Partial { stored: Vec<Fate>, reason: String },
}

/// What became of one body of an enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// The queue holds it, under this entry id.
    Held(String),
    /// The queue does not hold it.
    NotHeld,
    /// The queue may hold it (see [`QueueError::Ambiguous`]).
    Unknown,
}

impl QueueError {
    /// Whether the queue may hold what the failed call carried.
    pub fn may_hold(&self) -> bool {
        matches!(self, QueueError::Ambiguous(_))
    }
}

/// The client-side bound on a backend call: past `deadline`, `unknown` says what the
/// caller can assume (nothing stored, or the call's outcome is not known).
pub(crate) async fn bounded<T>(
    deadline: tokio::time::Instant,
    what: &str,
    bound: Duration,
    applied: bool,
    fut: impl std::future::Future<Output = Result<T, QueueError>>,
) -> Result<T, QueueError> {
    match tokio::time::timeout_at(deadline, fut).await {
        Ok(r) => r,
        Err(_) if applied => Err(QueueError::Ambiguous(format!(
            "{what} did not answer within {bound:?} (failover.write_timeout)"
        ))),
        Err(_) => Err(QueueError::Unavailable(format!(
            "{what} did not answer within {bound:?} (failover.write_timeout); nothing was stored"
        ))),
    }
}

/// An entry handed to one worker until its lease ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leased {
    pub entry_id: String,
    /// Identifies this lease; acks with an older receipt are ignored.
    pub receipt: String,
    pub body: Vec<u8>,
    /// How many times the entry has been handed out, this time included.
    pub deliveries: u32,
    pub enqueued_at_unix_ms: i64,
    /// For an SQS entry whose body was offloaded to S3: the pointer the message carries.
    /// The object is deleted with the message.
    pub offloaded: Option<String>,
    /// The ordered partition (`topic/partition`) the entry belongs to, when it was
    /// enqueued under `ordering: partition`; None for an unordered entry.
    pub order: Option<String>,
}

/// What an ordered enqueue stored: the entry ids, in body order, and the epoch of each
/// ordered partition's mark as the enqueue left it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderedIds {
    pub ids: Vec<String>,
    pub epochs: Vec<(String, i64)>,
}

/// The ordering key of a partition: `topic/partition`.
pub fn order_key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// What the dead-letter store records besides the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadInfo {
    pub topic: String,
    pub message_id: String,
    pub attempts: u32,
    pub reason: String,
    pub first_failed_at_unix_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: String,
    pub info: DeadInfo,
    pub dead_at_unix_ms: i64,
    pub body_bytes: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub depth: u64,
    /// The age of the oldest entry: 0 when the queue is empty, None when the backend
    /// cannot tell (an SQS queue holding entries this worker has not received).
    pub oldest_age_ms: Option<u64>,
    pub in_flight: u64,
    pub redelivered: u64,
    pub dead_letters: u64,
    /// The age of the oldest dead letter, as `oldest_age_ms` is the oldest entry's.
    pub dead_letter_oldest_age_ms: Option<u64>,
    /// How long the backend keeps an entry before deleting it by itself (SQS's
    /// `MessageRetentionPeriod`); None when it keeps entries until they are deleted.
    pub retention: Option<Duration>,
    pub dead_letter_retention: Option<Duration>,
}

/// A durable queue off the node. Every method either did what it says or returned an
/// error; an error from `enqueue` means nothing may be acknowledged.
#[async_trait::async_trait]
pub trait FailoverQueue: Send + Sync + std::fmt::Debug {
    /// `sqs`, `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// The queue's name or URL.
    fn queue(&self) -> &str;
    /// The largest batch one `enqueue` call should carry.
    fn max_batch(&self) -> usize;

    /// Remote API calls made so far, for backends billed per request (SQS); 0 otherwise.
    fn api_calls(&self) -> u64 {
        0
    }

    /// Stores bodies, visible after `delay`; returns their entry ids in order, within the
    /// backend's write bound (`failover.write_timeout`). An error means no body is held,
    /// except [`QueueError::Ambiguous`] (any may be) and [`QueueError::Partial`] (which
    /// says, body by body).
    async fn enqueue(&self, bodies: &[Vec<u8>], delay: Duration)
        -> Result<Vec<String>, QueueError>;

    /// As `enqueue`, each body with its ordering key (`order[i]`, see [`order_key`]) or
    /// None. A keyed body marks its partition diverted in the same transaction, and the
    /// partition's entries are received in enqueue order, one run at a time (see
    /// `receive`). A backend that cannot keep order refuses keyed bodies.
    async fn enqueue_ordered(
        &self,
        bodies: &[Vec<u8>],
        order: &[Option<String>],
        delay: Duration,
    ) -> Result<OrderedIds, QueueError> {
        if order.iter().any(Option::is_some) {
            return Err(QueueError::Config(format!(
                "the {} failover queue does not keep order (ordering: partition)",
                self.backend()
            )));
        }
        Ok(OrderedIds {
            ids: self.enqueue(bodies, delay).await?,
            epochs: Vec::new(),
        })
    }

    /// The ordered partitions that are diverted now (those whose entries, live or
    /// dead-lettered, the queue holds), each with its mark's epoch: a mark cleared and
    /// made again has another. Empty for a backend that does not keep order.
    async fn diverted(&self) -> Result<Vec<(String, i64)>, QueueError> {
        Ok(Vec::new())
    }

    /// Whether this backend keeps each ordered partition's order (`enqueue_ordered`).
    fn keeps_order(&self) -> bool {
        false
    }

    /// Background upkeep a retry worker runs every `ordering.lease` (on SQS FIFO: the
    /// barriers that clear drained partitions' divert marks). Nothing for most backends.
    async fn maintain(&self) -> Result<(), QueueError> {
        Ok(())
    }

    /// Leases up to `max` visible entries for `lease`, waiting up to `wait` for some.
    /// An ordered partition is leased whole, to one caller at a time: its head run (its
    /// first entries in enqueue order), only when its first entry is visible and it has
    /// no dead letter. Acknowledging, retrying or dead-lettering a run's entries gives
    /// the partition back.
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        lease: Duration,
    ) -> Result<Vec<Leased>, QueueError>;

    /// Deletes delivered entries.
    async fn ack(&self, entries: &[Leased]) -> Result<(), QueueError>;

    /// Makes an entry visible again after `delay`. With a new body (attempt count, last
    /// error), the stored entry is replaced.
    async fn retry_later(
        &self,
        entry: &Leased,
        new_body: Option<Vec<u8>>,
        delay: Duration,
    ) -> Result<(), QueueError>;

    /// Gives back entries leased behind an ordered partition's head that went back
    /// untried: nothing to do where the receive leases a partition by its head (SQL); on
    /// SQS FIFO, where the group waits until its every message is out of flight, they are
    /// made visible at once, still behind the head.
    async fn release(&self, _entries: &[Leased]) -> Result<(), QueueError> {
        Ok(())
    }

    /// Moves an entry to the dead-letter store.
    async fn dead_letter(&self, entry: &Leased, info: &DeadInfo) -> Result<(), QueueError>;

    async fn stats(&self) -> Result<QueueStats, QueueError>;

    /// A page of dead letters, oldest first, and the token of the next page ("" at the end).
    async fn list_dead_letters(
        &self,
        page_size: usize,
        page_token: &str,
    ) -> Result<(Vec<DeadLetter>, String), QueueError>;

    /// Moves dead letters (these ids, or all) back to the queue with attempts reset.
    async fn redrive(&self, ids: &[String], all: bool) -> Result<u64, QueueError>;

    /// Deletes dead letters (these ids, or all).
    async fn purge(&self, ids: &[String], all: bool) -> Result<u64, QueueError>;
}
