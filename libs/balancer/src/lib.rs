//! The active partition balancer: which partition a record goes to, and whether it can go
//! to Kafka at all.
//!
//! Pure logic. It does no IO, spawns nothing and never reads the clock: every method that
//! depends on time takes `now`, so breakers and routing are tested without sleeping.
//! Callers (the gateway, the retry worker) feed it metadata and write outcomes.

mod balancer;
mod breaker;
mod config;
mod error_class;
mod murmur2;

pub use balancer::{
    Balancer, KeyPolicy, PartitionMeta, PartitionStatus, Pick, PickError, PickRequest,
};
pub use breaker::{Admission, Breaker, BreakerState};
pub use config::{BalancerConfig, BreakerConfig, SpilloverConfig};
pub use error_class::FailureKind;
pub use murmur2::{murmur2, partition_for_key, to_positive};
