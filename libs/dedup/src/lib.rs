//! The dedup store: consumers claim a message id, process it, then commit it, so each id is
//! processed once per consumer group even when failover delivered it twice.
//!
//! - Claim gives a NEW id a lease and a fence token that increases strictly per group.
//! - Commit turns a claim into DONE (kept for `done_window`) only with the current fence;
//!   a consumer whose lease expired cannot commit over a newer claim.
//! - Release gives a claim up; Extend renews a lease; Check reads.
//!
//! Backends: Redis (single node or Redis Cluster; Lua compare-and-set) and memory (for the
//! embedded stack). Both pass one conformance suite. The `client` module wraps the gRPC
//! API with `process_once`; the `consumer` module is a Kafka consumer built on it that
//! processes each message id once. This crate does not serve gRPC itself.

mod memory;
mod redis_store;
mod types;

pub mod client;
pub mod consumer;

pub use memory::MemoryStore;
pub use redis_store::{RedisConfig, RedisStore};
pub use types::{
    Checked, ClaimState, Claimed, Clock, DedupStore, FenceOutcome, StoreError, SystemClock,
    REASON_DONE, REASON_NOT_CLAIMED, REASON_OWNER, REASON_STALE,
};
