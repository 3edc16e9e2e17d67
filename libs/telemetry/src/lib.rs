//! Telemetry and the one service bootstrap shared by every Ballast binary: structured
//! logs, optional OTLP traces, the Prometheus `/metrics` endpoint on an admin port, config
//! loading and `--dump-config`, gRPC health and reflection, accepted connections with
//! TCP_NODELAY, and shutdown on a signal.
//!
//! It owns no service metrics itself; each service registers its own in a
//! `prometheus_client` registry and hands it to [`Host::start`].

mod admin;
pub mod catalog;
mod config;
mod host;
mod logs;
pub mod reference;
mod signal;
pub mod trace;

#[doc(hidden)]
pub use anyhow;

pub use admin::serve_admin;
pub use config::{load_config, redact, ConfigArgs, ServiceConfig, REDACTED};
pub use host::{
    bind_listeners, grpc_reflection, incoming, run_service, service_main, Accepted, Conn, Health,
    Host, Shutdown,
};
pub use logs::{init, LogFormat, TelemetryConfig, TelemetryGuard};
pub use signal::shutdown_signal;
