//! Which failover queue to use, and how the gateway batches into it.

use crate::queue::{FailoverQueue, QueueError};
use crate::sql::SqlQueue;
use crate::sqs::{SqsConfig, SqsQueue};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// How much later than `failover.write_timeout` the batching task gives up on a backend
/// call that did not bound itself.
pub const BACKSTOP_GRACE: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FailoverBackend {
    /// No failover: records Kafka cannot take get a retryable UNAVAILABLE.
    None,
    Sqs,
    Sqlite,
    Postgres,
}

impl FailoverBackend {
    /// The name config uses: `none`, `sqs`, `sqlite` or `postgres`.
    pub fn name(self) -> &'static str {
        match self {
            FailoverBackend::None => "none",
            FailoverBackend::Sqs => "sqs",
            FailoverBackend::Sqlite => "sqlite",
            FailoverBackend::Postgres => "postgres",
        }
    }

    /// Whether the backend keeps each ordered partition's order (`ordering: partition`)
    /// whatever its settings: the SQL backends do; SQS does only with a FIFO queue (see
    /// [`FailoverConfig::keeps_order`]).
    pub fn keeps_order(self) -> bool {
        matches!(self, FailoverBackend::Sqlite | FailoverBackend::Postgres)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FailoverConfig {
    /// Where records go when Kafka cannot take them: `sqs`, `sqlite`, `postgres`, or `none` (answer UNAVAILABLE instead).
    pub backend: FailoverBackend,
    /// The queue's name inside the SQL tables.
    pub queue: String,
    /// `sqlite://PATH?mode=rwc` for sqlite, `postgres://…` for postgres.
    pub database_url: String,
    /// A file holding `database_url` (with its password), e.g. a mounted Secret; wins
    /// over `database_url`.
    pub database_url_file: Option<std::path::PathBuf>,
    /// SQL backends: the connection pool's size.
    pub max_connections: u32,
    pub sqs: SqsConfig,
    /// Enqueues from concurrent requests wait at most this long to share a batch.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub linger: Duration,
    /// Records waiting for a batch; more fail with UNAVAILABLE.
    pub pending_limit: usize,
    /// Body bytes waiting for a batch or in one; more fail with UNAVAILABLE.
    pub pending_bytes: usize,
    /// Batches sent at once.
    pub concurrent_batches: usize,
    /// How long a record waits to be taken into a batch; one not taken by then fails
    /// with UNAVAILABLE and is never sent.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub timeout: Duration,
    /// The gateway-side bound on one batch's write, everything included: S3 puts (sent
    /// at once), SQS sub-batches (one attempt each), the SQL transaction. A record that
    /// failed over has its answer within `timeout + write_timeout` and half a second; a
    /// gateway refuses a `limits.request_timeout` shorter than `limits.record_deadline`
    /// plus that.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub write_timeout: Duration,
    /// How long records wait in the queue before the first retry.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub initial_delay: Duration,
    /// A gateway refuses `backend: sqlite` unless this is true: the file lives on the
    /// gateway's own disk, which a spot interruption takes with it, so an acknowledgement
    /// from it is not off-node durability. `ballast-dev up` sets it.
    pub allow_node_local: bool,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        Self {
            backend: FailoverBackend::None,
            queue: "ballast-failover".into(),
            database_url: "sqlite://ballast-failover.db?mode=rwc".into(),
            database_url_file: None,
            max_connections: 8,
            sqs: SqsConfig::default(),
            linger: Duration::from_millis(2),
            pending_limit: 100_000,
            pending_bytes: 64 * 1024 * 1024,
            concurrent_batches: 8,
            timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            initial_delay: Duration::ZERO,
            allow_node_local: false,
        }
    }
}

impl FailoverConfig {
    /// Whether this queue keeps each ordered partition's order: the SQL backends, and SQS
    /// with FIFO queues (`.fifo` names) and an offload bucket for the divert marks.
    pub fn keeps_order(&self) -> bool {
        self.backend.keeps_order()
            || (self.backend == FailoverBackend::Sqs
                && crate::sqs::is_fifo(&self.sqs.queue)
                && crate::sqs::is_fifo(&self.sqs.dlq)
                && self.sqs.offload.enabled())
    }

    pub fn validate(&self) -> Result<(), QueueError> {
        let bad = |m: &str| Err(QueueError::Config(m.to_string()));
        if self.pending_limit == 0 || self.concurrent_batches == 0 || self.pending_bytes == 0 {
            return bad("failover.pending_limit, failover.pending_bytes and failover.concurrent_batches must be positive");
        }
        if self.timeout.is_zero() || self.write_timeout.is_zero() {
            return bad("failover.timeout and failover.write_timeout must be positive");
        }
        if self.backend == FailoverBackend::Sqs {
            self.sqs.validate()?;
        }
        let url = match self.backend {
            FailoverBackend::Sqlite | FailoverBackend::Postgres => self.database_url()?,
            _ => String::new(),
        };
        match self.backend {
            FailoverBackend::Sqlite if !url.starts_with("sqlite:") => {
                bad("failover.database_url must start with sqlite: for the sqlite backend")
            }
            FailoverBackend::Postgres if !url.starts_with("postgres") => {
                bad("failover.database_url must start with postgres:// for the postgres backend")
            }
            FailoverBackend::Sqs if self.sqs.queue.is_empty() || self.sqs.dlq.is_empty() => {
                bad("failover.sqs.queue and failover.sqs.dlq must be set for the sqs backend")
            }
            _ => Ok(()),
        }
    }

    /// The database URL, from `database_url_file` when set.
    pub fn database_url(&self) -> Result<String, QueueError> {
        match &self.database_url_file {
            Some(f) => std::fs::read_to_string(f)
                .map(|s| s.trim().to_string())
                .map_err(|e| {
                    QueueError::Config(format!("failover.database_url_file {}: {e}", f.display()))
                }),
            None => Ok(self.database_url.clone()),
        }
    }

    /// The longest a record may wait for its failover answer: to be taken into a batch,
    /// then the batch's write (and the backstop's grace). Zero for `backend: none`.
    pub fn answer_bound(&self) -> Duration {
        match self.backend {
            FailoverBackend::None => Duration::ZERO,
            _ => self.timeout + self.write_timeout + BACKSTOP_GRACE,
        }
    }

    /// Whether the queue lives on this node's disk (SQLite).
    pub fn node_local(&self) -> bool {
        self.backend == FailoverBackend::Sqlite
    }

    /// Opens the configured queue; None for `backend: none`.
    pub async fn open(&self) -> Result<Option<Arc<dyn FailoverQueue>>, QueueError> {
        self.validate()?;
        Ok(match self.backend {
            FailoverBackend::None => None,
            FailoverBackend::Sqs => Some(Arc::new(
                SqsQueue::connect(&self.sqs, self.write_timeout).await?,
            )),
            FailoverBackend::Sqlite | FailoverBackend::Postgres => Some(Arc::new(
                SqlQueue::connect(&self.database_url()?, &self.queue, self.max_connections)
                    .await?
                    .with_write_timeout(self.write_timeout),
            )),
        })
    }
}
