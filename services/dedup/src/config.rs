//! Dedup service configuration: defaults, a YAML file, then `BALLAST_*` variables.

use ballast_dedup_store::RedisConfig;
use ballast_telemetry::TelemetryConfig;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Redis,
    Memory,
}

impl Backend {
    pub fn label(self) -> &'static str {
        match self {
            Backend::Redis => "redis",
            Backend::Memory => "memory",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DedupConfig {
    /// The gRPC listen address.
    pub listen: SocketAddr,
    /// The admin HTTP address for `/metrics` and `/healthz`.
    pub admin_listen: SocketAddr,
    /// `redis` for deployments; `memory` keeps state in this process only.
    pub backend: Backend,
    pub redis: RedisConfig,
    pub limits: DedupLimits,
    /// How long in-flight calls may take to finish after a shutdown signal.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub shutdown_grace: Duration,
    /// TLS (and mTLS) on the gRPC listener.
    pub tls: ballast_security::TlsConfig,
    /// Who may call which methods.
    pub auth: ballast_security::AuthConfig,
    pub telemetry: TelemetryConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DedupLimits {
    /// Ids or entries per call.
    pub max_batch: usize,
    /// The longest message id accepted, in bytes.
    pub max_id_bytes: usize,
    /// The longest consumer group name accepted, in bytes.
    pub max_group_bytes: usize,
    /// The `owner` of a claim, stored with it.
    pub max_owner_bytes: usize,
    /// The longest lease a claim may ask for.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub max_lease: Duration,
}

impl Default for DedupLimits {
    fn default() -> Self {
        Self {
            max_batch: 1000,
            max_id_bytes: 512,
            max_group_bytes: 256,
            max_owner_bytes: 256,
            max_lease: Duration::from_secs(3600),
        }
    }
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:50053".parse().expect("valid"),
            admin_listen: "0.0.0.0:9466".parse().expect("valid"),
            backend: Backend::Redis,
            redis: RedisConfig::default(),
            limits: DedupLimits::default(),
            shutdown_grace: Duration::from_secs(10),
            tls: ballast_security::TlsConfig::default(),
            auth: ballast_security::AuthConfig::default(),
            telemetry: TelemetryConfig {
                service_name: "ballast-dedup".into(),
                ..TelemetryConfig::default()
            },
        }
    }
}

impl DedupConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        self.tls.validate()?;
        self.auth.validate()?;
        let l = &self.limits;
        anyhow::ensure!(l.max_batch > 0, "limits.max_batch must be positive");
        anyhow::ensure!(l.max_id_bytes > 0, "limits.max_id_bytes must be positive");
        anyhow::ensure!(
            l.max_group_bytes > 0,
            "limits.max_group_bytes must be positive"
        );
        anyhow::ensure!(
            l.max_owner_bytes > 0,
            "limits.max_owner_bytes must be positive"
        );
        anyhow::ensure!(!l.max_lease.is_zero(), "limits.max_lease must be positive");
        anyhow::ensure!(
            !self.redis.done_window.is_zero(),
            "redis.done_window must be positive"
        );
        if self.backend == Backend::Redis && self.redis.cluster_urls.is_empty() {
            anyhow::ensure!(
                !self.redis.url.is_empty() || self.redis.url_file.is_some(),
                "redis.url is empty"
            );
        }
        Ok(())
    }
}

ballast_telemetry::impl_service_config!(DedupConfig);
