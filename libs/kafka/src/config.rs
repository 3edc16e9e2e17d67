//! Kafka connection and producer settings.

use crate::sasl::KafkaSasl;
use crate::security::{KafkaSecurity, KafkaSsl, SecurityProtocol};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    pub client_id: String,
    /// The deadline of one write attempt. librdkafka's `message.timeout.ms` is set to it,
    /// so no record waits longer on one partition.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// librdkafka `linger.ms`.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// How often leader and rack metadata is refreshed.
    #[serde(with = "humantime_serde")]
    pub metadata_refresh_interval: Duration,
    /// How often metadata for every topic is fetched, to discover topics and drop deleted
    /// ones. Between these, each refresh asks only for the topics in use, so a large
    /// cluster costs the gateway and the brokers no more than the topics it writes. Never
    /// shorter than `metadata_refresh_interval` (a shorter value acts as it). Explicit
    /// refreshes (startup, an unknown topic) always fetch every topic.
    #[serde(with = "humantime_serde")]
    pub metadata_full_refresh_interval: Duration,
    /// The deadline of one metadata request, per broker tried.
    #[serde(with = "humantime_serde")]
    pub metadata_timeout: Duration,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`, for the producer and the
    /// metadata client alike.
    pub security_protocol: SecurityProtocol,
    /// The CA (and client certificate, for mTLS) of `ssl` and `sasl_ssl`.
    pub ssl: KafkaSsl,
    /// The mechanism and credentials of `sasl_plaintext` and `sasl_ssl`.
    pub sasl: KafkaSasl,
    /// Extra librdkafka producer properties (compression: `compression.type` gzip, lz4,
    /// zstd or snappy; batching, ...). They override Ballast's own settings except `acks`
    /// and `enable.idempotence`; security is set only by `security_protocol`, `ssl` and `sasl`.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            client_id: "ballast".into(),
            write_timeout: Duration::from_secs(1),
            linger: Duration::from_millis(2),
            metadata_refresh_interval: Duration::from_secs(1),
            metadata_full_refresh_interval: Duration::from_secs(30),
            metadata_timeout: Duration::from_secs(2),
            security_protocol: SecurityProtocol::Plaintext,
            ssl: KafkaSsl::default(),
            sasl: KafkaSasl::default(),
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    pub fn validate(&self) -> Result<(), crate::Error> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(crate::Error::Config(
                "kafka.bootstrap_servers is empty".into(),
            ));
        }
        if self.write_timeout < Duration::from_millis(10) {
            return Err(crate::Error::Config(
                "kafka.write_timeout must be at least 10ms".into(),
            ));
        }
        if self.linger >= self.write_timeout {
            return Err(crate::Error::Config(
                "kafka.linger must be shorter than kafka.write_timeout".into(),
            ));
        }
        if self.metadata_refresh_interval.is_zero() || self.metadata_timeout.is_zero() {
            return Err(crate::Error::Config(
                "kafka.metadata_refresh_interval and kafka.metadata_timeout must be positive"
                    .into(),
            ));
        }
        self.security().validate(&self.properties)?;
        for key in ["acks", "enable.idempotence"] {
            if self.properties.contains_key(key) {
                return Err(crate::Error::Config(format!(
                    "kafka.properties may not override {key}: ballast always writes with acks=all and idempotence"
                )));
            }
        }
        Ok(())
    }

    pub fn bootstrap_list(&self) -> Vec<String> {
        bootstrap_list(&self.bootstrap_servers)
    }

    pub fn security(&self) -> KafkaSecurity {
        KafkaSecurity {
            protocol: self.security_protocol,
            ssl: self.ssl.clone(),
            sasl: self.sasl.clone(),
        }
    }
}

/// A comma-separated `host:port` list as its non-empty entries.
pub fn bootstrap_list(servers: &str) -> Vec<String> {
    servers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}
