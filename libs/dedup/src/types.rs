//! Types shared by every backend.

use std::time::Duration;

/// The state of an id within a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClaimState {
    /// Claimed by this call: process it, then commit with the fence.
    New,
    /// Someone else holds a live lease.
    InProgress,
    /// Processed and committed.
    Done,
}

/// One answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: String,
    pub state: ClaimState,
    /// The fence of a NEW claim; 0 otherwise.
    pub fence: u64,
    /// For NEW the new lease's end, for IN_PROGRESS the holder's; 0 for DONE.
    pub lease_expires_unix_ms: i64,
}

/// One answer to a commit, release or extend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceOutcome {
    pub id: String,
    pub ok: bool,
    /// Empty when `ok`.
    pub reason: String,
}

/// One answer to a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub id: String,
    /// None when the id is unknown (never claimed, or its lease expired).
    pub state: Option<ClaimState>,
    pub lease_expires_unix_ms: i64,
}

pub const REASON_STALE: &str = "stale fence";
pub const REASON_NOT_CLAIMED: &str = "not claimed (lease expired or never claimed)";
pub const REASON_DONE: &str = "already done";
pub const REASON_OWNER: &str = "claimed by another owner";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached; nothing was decided.
    #[error("dedup store unavailable: {0}")]
    Unavailable(String),
    #[error("invalid dedup request: {0}")]
    Invalid(String),
}

/// A dedup backend. Results come back in request order, one per id or entry. An id that
/// appears twice in one call is handled twice, in order.
#[async_trait::async_trait]
pub trait DedupStore: Send + Sync + std::fmt::Debug {
    fn backend(&self) -> &'static str;

    async fn claim(
        &self,
        group: &str,
        ids: &[String],
        lease: Duration,
        owner: &str,
    ) -> Result<Vec<Claimed>, StoreError>;

    /// Commit, release and extend act only on a live claim whose fence *and* owner match:
    /// if the store loses its data, fences restart, and the owner still tells a stale
    /// holder from the new one.
    async fn commit(
        &self,
        group: &str,
        entries: &[(String, u64)],
        owner: &str,
    ) -> Result<Vec<FenceOutcome>, StoreError>;

    async fn release(
        &self,
        group: &str,
        entries: &[(String, u64)],
        owner: &str,
    ) -> Result<Vec<FenceOutcome>, StoreError>;

    async fn extend(
        &self,
        group: &str,
        entries: &[(String, u64)],
        lease: Duration,
        owner: &str,
    ) -> Result<Vec<FenceOutcome>, StoreError>;

    async fn check(&self, group: &str, ids: &[String]) -> Result<Vec<Checked>, StoreError>;
}

/// Wall-clock milliseconds, injectable for tests.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> i64;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

pub(crate) fn fence_outcome(id: &str, reason: Option<&str>) -> FenceOutcome {
    FenceOutcome {
        id: id.to_string(),
        ok: reason.is_none(),
        reason: reason.unwrap_or_default().to_string(),
    }
}
