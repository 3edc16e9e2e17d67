//! The ingest gateway: accepts records over gRPC (`ballast.ingest.v1.Ingest`), hands each
//! to the write path (`ballast-produce`), and answers per record, in request order.
//!
//! A record is acknowledged only when Kafka has it with `acks=all`, or when the durable
//! failover queue does. Anything else is an explicit, per-record error with a code and a
//! retry hint. This crate is the gRPC adapter: per-request and per-connection limits,
//! conversion between proto and write-path types, its own metrics, and following the
//! topology service. It keeps no local state beyond bounded in-flight work, so any number
//! of gateways can run side by side.

pub mod config;
pub mod convert;
pub mod metrics;
mod server;
mod service;
mod topology;

pub use config::{GatewayConfig, Limits, TopologyClientConfig};
pub use server::{Gateway, GatewayHandle, LocalGateway};
