//! Retry-worker configuration (seed 001's retry block, made complete): defaults, a YAML
//! file, then `BALLAST_*` variables.

use ballast_balancer::{BreakerConfig, SpilloverConfig};
use ballast_failover::{FailoverBackend, FailoverConfig, OrderingConfig};
use ballast_kafka::KafkaConfig;
use ballast_telemetry::TelemetryConfig;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RetrySettings {
    /// How long a record stays in the queue, counted from its first failure, before the
    /// first retry.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub after: Duration,
    /// Kafka attempts before a record goes to the dead-letter store.
    pub max_attempts: u32,
    /// Entries leased per receive.
    pub max_number_of_messages: usize,
    /// How long a receive waits for entries.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub wait_time: Duration,
    /// Concurrent receive-and-publish loops per worker.
    pub runner_count: usize,
    /// Leased batches each loop holds at once: the next batch is leased while earlier ones
    /// are being written to Kafka. 1 handles one batch at a time.
    pub pipeline_depth: usize,
    /// How long a leased entry stays hidden from other workers; a worker that dies returns
    /// its entries when this runs out.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub lease: Duration,
    /// The wait before attempt n+1 is `backoff_base * backoff_multiplier^(n-1)`, capped.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub backoff_base: Duration,
    /// Each retry waits this many times longer than the one before.
    pub backoff_multiplier: f64,
    /// The longest wait between two attempts.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub backoff_max: Duration,
    /// Records per second this worker may publish; 0 is unlimited.
    pub drain_rate: u32,
    /// How long a record waits when its topic has no healthy partition (not an attempt).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub health_gate_delay: Duration,
    /// How often the worker counts the queue for its `ballast_retry_queue_*` gauges (at
    /// least 100ms). On SQL a count reads every entry of the queue, so its cost grows with
    /// the backlog.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub stats_interval: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            after: Duration::ZERO,
            max_attempts: 5,
            max_number_of_messages: 10,
            wait_time: Duration::from_secs(1),
            runner_count: 2,
            pipeline_depth: 2,
            lease: Duration::from_secs(30),
            backoff_base: Duration::from_secs(1),
            backoff_multiplier: 2.0,
            backoff_max: Duration::from_secs(300),
            drain_rate: 0,
            health_gate_delay: Duration::from_secs(1),
            stats_interval: Duration::from_secs(10),
        }
    }
}

impl RetrySettings {
    /// The wait after the `attempt`-th failed attempt (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .backoff_multiplier
            .powi(attempt.saturating_sub(1).min(64) as i32);
        let secs = self.backoff_base.as_secs_f64() * exp;
        Duration::from_secs_f64(secs.min(self.backoff_max.as_secs_f64()))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// The RetryAdmin gRPC address.
    pub listen: SocketAddr,
    /// `/metrics` and `/healthz`.
    pub admin_listen: SocketAddr,
    /// This worker's rack, for AZ-local publishing of unkeyed records.
    pub rack: Option<String>,
    /// As the gateway's: unkeyed records spill to other zones' partitions when the zone's
    /// own cannot carry its share.
    pub spillover: SpilloverConfig,
    pub kafka: KafkaConfig,
    pub breaker: BreakerConfig,
    pub failover: FailoverConfig,
    /// The gateways' `ordering`. A worker drains each ordered partition in order whatever
    /// this says (an entry carries its partition); it refuses, as a gateway does, an
    /// ordered topic on a failover queue that cannot keep order.
    pub ordering: OrderingConfig,
    pub retry: RetrySettings,
    /// How long in-flight work may take to finish after a shutdown signal.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub shutdown_grace: Duration,
    /// TLS (and mTLS) on the gRPC listener.
    pub tls: ballast_security::TlsConfig,
    /// Who may call which methods.
    pub auth: ballast_security::AuthConfig,
    pub telemetry: TelemetryConfig,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:50052".parse().expect("valid"),
            admin_listen: "0.0.0.0:9465".parse().expect("valid"),
            rack: None,
            spillover: SpilloverConfig::default(),
            kafka: KafkaConfig::default(),
            breaker: BreakerConfig::default(),
            failover: FailoverConfig {
                backend: FailoverBackend::Sqlite,
                ..FailoverConfig::default()
            },
            ordering: OrderingConfig::default(),
            retry: RetrySettings::default(),
            shutdown_grace: Duration::from_secs(30),
            tls: ballast_security::TlsConfig::default(),
            auth: ballast_security::AuthConfig::default(),
            telemetry: TelemetryConfig {
                service_name: "ballast-retry-worker".into(),
                ..TelemetryConfig::default()
            },
        }
    }
}

impl WorkerConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        self.tls.validate()?;
        self.auth.validate()?;
        let r = &self.retry;
        anyhow::ensure!(
            self.failover.backend != FailoverBackend::None,
            "failover.backend must be sqs, sqlite or postgres: a retry worker needs a queue"
        );
        self.failover
            .validate()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        self.ordering
            .validate(&self.failover)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        self.kafka.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        self.breaker
            .validate()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        self.spillover
            .validate()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::ensure!(r.max_attempts > 0, "retry.max_attempts must be positive");
        anyhow::ensure!(
            (1..=10_000).contains(&r.max_number_of_messages),
            "retry.max_number_of_messages must be between 1 and 10000"
        );
        anyhow::ensure!(r.runner_count > 0, "retry.runner_count must be positive");
        anyhow::ensure!(
            (1..=64).contains(&r.pipeline_depth),
            "retry.pipeline_depth must be between 1 and 64"
        );
        anyhow::ensure!(!r.lease.is_zero(), "retry.lease must be positive");
        anyhow::ensure!(
            r.stats_interval >= Duration::from_millis(100),
            "retry.stats_interval must be at least 100ms"
        );
        anyhow::ensure!(
            r.backoff_multiplier >= 1.0 && r.backoff_multiplier.is_finite(),
            "retry.backoff_multiplier must be at least 1"
        );
        anyhow::ensure!(
            r.lease > self.kafka.write_timeout * 3,
            "retry.lease must exceed three kafka.write_timeout, or entries come back while still being written"
        );
        Ok(())
    }
}

ballast_telemetry::impl_service_config!(WorkerConfig);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let r = RetrySettings {
            backoff_base: Duration::from_secs(1),
            backoff_multiplier: 2.0,
            backoff_max: Duration::from_secs(10),
            ..RetrySettings::default()
        };
        let waits: Vec<u64> = (1..=6).map(|a| r.backoff(a).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn a_stats_interval_under_100ms_is_refused() {
        let mut c = WorkerConfig::default();
        assert_eq!(c.retry.stats_interval, Duration::from_secs(10));
        c.retry.stats_interval = Duration::from_millis(50);
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("retry.stats_interval must be at least 100ms"));
        c.retry.stats_interval = Duration::from_millis(100);
        c.validate().unwrap();
    }

    #[test]
    fn defaults_are_valid_and_none_backend_is_refused() {
        WorkerConfig::default().validate().unwrap();
        let mut c = WorkerConfig::default();
        c.failover.backend = FailoverBackend::None;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("failover.backend"));
    }
}
