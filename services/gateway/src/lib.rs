//! The ingest gateway: accepts records over gRPC (`ballast.ingest.v1.Ingest`), places each
//! on a partition through the active partition balancer, writes it to Kafka with
//! `acks=all`, and answers per record, in request order.
//!
//! A record is acknowledged only when Kafka has it. Anything else is an explicit,
//! per-record error with a code and a retry hint. The gateway keeps no local state
//! beyond bounded in-flight work, so any number of them can run side by side.

pub mod config;
mod metadata;
pub mod metrics;
mod produce;
mod server;
mod service;
mod topology;

pub use config::{GatewayConfig, Limits, TopologyClientConfig};
pub use produce::Producer;
pub use server::{Gateway, GatewayHandle};
