//! The write path: placing and writing one record. Both the ingest gateway (records from
//! gRPC) and the retry workers (records from the failover queue) write through it.
//!
//! A record goes through, in order:
//! 1. [`admit`]: validation and the in-flight byte budget;
//! 2. [`placement`]: the balancer and the cluster metadata that feeds it;
//! 3. [`attempt`]: Kafka attempts with `acks=all`, rerouted within the record's deadline;
//! 4. [`failover`]: the durable queue, when Kafka cannot take the record now.
//!
//! [`Writer`] composes them. The API speaks domain types ([`Record`], [`Produced`]); the
//! services convert their own wire types at their edges. Metrics are a [`WriteMetrics`]
//! the caller registers under its own prefix. This crate serves no network endpoint.

mod admit;
mod attempt;
pub mod failover;
mod metrics;
mod placement;
mod record;
mod writer;

pub use admit::{record_size, validate, WriteLimits};
pub use ballast_balancer::KeyPolicy;
pub use metrics::WriteMetrics;
pub use record::{key_policy_from_wire, key_policy_to_wire, Acked, Header, Produced, Record};
pub use writer::Writer;
