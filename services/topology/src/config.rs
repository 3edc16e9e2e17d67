//! Topology service configuration: defaults, a YAML file, then `BALLAST_*` variables.

use ballast_telemetry::TelemetryConfig;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TopologyConfig {
    /// The gRPC listen address.
    pub listen: SocketAddr,
    /// The admin HTTP address for `/metrics` and `/healthz`.
    pub admin_listen: SocketAddr,
    pub kafka: KafkaSource,
    /// A draining mark with a deadline lapses this long after the deadline: by then the
    /// broker is gone, and a replacement that reuses its id must not start out draining.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub draining_lapse_after_deadline: Duration,
    pub limits: PlanLimits,
    /// How long open streams and calls may take to finish after a shutdown signal.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub shutdown_grace: Duration,
    /// TLS (and mTLS) on the gRPC listener.
    pub tls: ballast_security::TlsConfig,
    /// Who may call which methods.
    pub auth: ballast_security::AuthConfig,
    pub telemetry: TelemetryConfig,
}

/// Where the metadata comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSource {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// librdkafka `client.id` of the metadata client, as the brokers log and quota it.
    pub client_id: String,
    /// How often metadata is fetched; a change is published at once.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub refresh_interval: Duration,
    /// The deadline of one metadata request, per broker tried.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub metadata_timeout: Duration,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`, as for the gateway
    /// (`kafka.security_protocol`).
    pub security_protocol: ballast_kafka::SecurityProtocol,
    pub ssl: ballast_kafka::KafkaSsl,
    pub sasl: ballast_kafka::KafkaSasl,
}

impl Default for KafkaSource {
    fn default() -> Self {
        Self {
            bootstrap_servers: "localhost:9092".into(),
            client_id: "ballast-topology".into(),
            refresh_interval: Duration::from_millis(500),
            metadata_timeout: Duration::from_secs(2),
            security_protocol: ballast_kafka::SecurityProtocol::Plaintext,
            ssl: ballast_kafka::KafkaSsl::default(),
            sasl: ballast_kafka::KafkaSasl::default(),
        }
    }
}

impl KafkaSource {
    pub fn security(&self) -> ballast_kafka::KafkaSecurity {
        ballast_kafka::KafkaSecurity {
            protocol: self.security_protocol,
            ssl: self.ssl.clone(),
            sasl: self.sasl.clone(),
        }
    }

    pub fn bootstrap_list(&self) -> Vec<String> {
        ballast_kafka::bootstrap_list(&self.bootstrap_servers)
    }
}

/// Bounds on planning requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PlanLimits {
    /// A plan request may name at most this many partitions.
    pub max_partitions: usize,
    /// A plan request may name at most this many brokers.
    pub max_brokers: usize,
    /// A consumer assignment request may name at most this many consumers.
    pub max_consumers: usize,
    /// Concurrent WatchTopology streams.
    pub max_watchers: usize,
    /// Brokers marked draining at once; every mark sends traffic away, so a runaway caller
    /// cannot push everything to failover.
    pub max_draining_marks: usize,
    /// Bytes of a draining mark's `reason`.
    pub max_reason_bytes: usize,
}

impl Default for PlanLimits {
    fn default() -> Self {
        Self {
            max_partitions: 100_000,
            max_brokers: 10_000,
            max_consumers: 10_000,
            max_watchers: 10_000,
            max_draining_marks: 16,
            max_reason_bytes: 1024,
        }
    }
}

impl Default for TopologyConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:50054".parse().expect("valid"),
            admin_listen: "0.0.0.0:9467".parse().expect("valid"),
            kafka: KafkaSource::default(),
            draining_lapse_after_deadline: Duration::from_secs(300),
            limits: PlanLimits::default(),
            shutdown_grace: Duration::from_secs(5),
            tls: ballast_security::TlsConfig::default(),
            auth: ballast_security::AuthConfig::default(),
            telemetry: TelemetryConfig {
                service_name: "ballast-topology".into(),
                ..TelemetryConfig::default()
            },
        }
    }
}

impl TopologyConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        self.tls.validate()?;
        self.kafka.security().validate(&Default::default())?;
        self.auth.validate()?;
        if self.kafka.bootstrap_list().is_empty() {
            anyhow::bail!("config: kafka.bootstrap_servers is empty");
        }
        if self.kafka.refresh_interval.is_zero() || self.kafka.metadata_timeout.is_zero() {
            anyhow::bail!(
                "config: kafka.refresh_interval and kafka.metadata_timeout must be positive"
            );
        }
        let l = &self.limits;
        for (name, v) in [
            ("limits.max_partitions", l.max_partitions),
            ("limits.max_brokers", l.max_brokers),
            ("limits.max_consumers", l.max_consumers),
            ("limits.max_watchers", l.max_watchers),
            ("limits.max_draining_marks", l.max_draining_marks),
            ("limits.max_reason_bytes", l.max_reason_bytes),
        ] {
            if v == 0 {
                anyhow::bail!("config: {name} must be positive");
            }
        }
        Ok(())
    }
}

ballast_telemetry::impl_service_config!(TopologyConfig);

#[cfg(test)]
mod tests {
    use super::*;
    use ballast_telemetry::ServiceConfig;

    #[test]
    fn defaults_validate_and_round_trip() {
        let cfg = TopologyConfig::default();
        cfg.validate().unwrap();
        let back: TopologyConfig = serde_yaml::from_str(&cfg.to_yaml()).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn bad_values_name_the_field() {
        let mut cfg = TopologyConfig::default();
        cfg.kafka.bootstrap_servers = " , ".into();
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("bootstrap_servers"));
        let mut cfg = TopologyConfig::default();
        cfg.limits.max_watchers = 0;
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_watchers"));
    }
}
