//! Kafka connection and producer settings.

use crate::sasl::KafkaSasl;
use crate::security::{KafkaSecurity, KafkaSsl, SecurityProtocol};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// librdkafka `client.id`, as the brokers log and quota it.
    pub client_id: String,
    /// The deadline of one write attempt. librdkafka's `message.timeout.ms` is set to it,
    /// so no record waits longer on one partition.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub write_timeout: Duration,
    /// librdkafka `linger.ms`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub linger: Duration,
    /// How often leader and rack metadata is refreshed.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub metadata_refresh_interval: Duration,
    /// How often metadata for every topic is fetched, to discover topics and drop deleted
    /// ones. Between these, each refresh asks only for the topics in use, so a large
    /// cluster costs the gateway and the brokers no more than the topics it writes. Never
    /// shorter than `metadata_refresh_interval` (a shorter value acts as it). Explicit
    /// refreshes (startup, an unknown topic) always fetch every topic.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub metadata_full_refresh_interval: Duration,
    /// The deadline of one metadata request, per broker tried.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub metadata_timeout: Duration,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`, for the producer and the
    /// metadata client alike.
    pub security_protocol: SecurityProtocol,
    /// The CA (and client certificate, for mTLS) of `ssl` and `sasl_ssl`.
    pub ssl: KafkaSsl,
    /// The mechanism and credentials of `sasl_plaintext` and `sasl_ssl`.
    pub sasl: KafkaSasl,
    /// Extra librdkafka producer properties (compression: `compression.type` gzip, lz4,
    /// zstd or snappy; batching, ...). None of [`FIXED_PROPERTIES`] (timeouts, linger, acks,
    /// idempotence, bootstrap) may be set here; security is set only by
    /// `security_protocol`, `ssl` and `sasl`.
    pub properties: BTreeMap<String, String>,
}

/// librdkafka properties that the write path's deadlines, in-flight budget,
/// acknowledgements or placement depend on, in every spelling librdkafka takes (aliases
/// included), with what sets each. `kafka.properties` may set none of them: a longer
/// `message.timeout.ms`, say, lets librdkafka keep writing a record that the write path has
/// already rerouted or failed over, after its share of `limits.inflight_bytes` was freed.
pub const FIXED_PROPERTIES: &[(&[&str], &str)] = &[
    (
        &["message.timeout.ms", "delivery.timeout.ms", "request.timeout.ms"],
        "kafka.write_timeout sets it, so librdkafka gives a record up when the write path's attempt does",
    ),
    (
        &["linger.ms", "queue.buffering.max.ms"],
        "use kafka.linger, which must stay shorter than kafka.write_timeout",
    ),
    (
        &["acks", "request.required.acks", "enable.idempotence", "transactional.id"],
        "ballast always writes with acks=all and idempotence, outside transactions",
    ),
    (
        &["delivery.report.only.error"],
        "every attempt waits for its delivery report",
    ),
    (
        &["bootstrap.servers", "metadata.broker.list"],
        "use kafka.bootstrap_servers, which the producer and the metadata client share",
    ),
];

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
        for key in self.properties.keys() {
            // librdkafka takes a topic-level property with or without a `topic.` prefix.
            let name = key.strip_prefix("topic.").unwrap_or(key);
            if let Some((_, why)) = FIXED_PROPERTIES
                .iter()
                .find(|(names, _)| names.contains(&name))
            {
                return Err(crate::Error::Config(format!(
                    "kafka.properties may not set {key}: {why}"
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with(key: &str, value: &str) -> KafkaConfig {
        let mut c = KafkaConfig::default();
        c.properties.insert(key.into(), value.into());
        c
    }

    #[test]
    fn properties_the_write_path_depends_on_are_refused() {
        for key in [
            "message.timeout.ms",
            "delivery.timeout.ms",
            "request.timeout.ms",
            "topic.message.timeout.ms",
            "linger.ms",
            "queue.buffering.max.ms",
            "acks",
            "request.required.acks",
            "topic.acks",
            "enable.idempotence",
            "transactional.id",
            "delivery.report.only.error",
            "bootstrap.servers",
            "metadata.broker.list",
        ] {
            let err = with(key, "1").validate().unwrap_err().to_string();
            assert!(
                err.contains(&format!("kafka.properties may not set {key}:")),
                "{key}: {err}"
            );
        }
        let err = with("delivery.timeout.ms", "600000")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("kafka.write_timeout"), "{err}");
        for (key, value) in [
            ("compression.type", "zstd"),
            ("batch.size", "100000"),
            ("message.max.bytes", "4194304"),
            ("socket.timeout.ms", "5000"),
            ("retries", "10"),
            ("max.in.flight", "5"),
            ("queue.buffering.max.kbytes", "65536"),
            ("topic.metadata.refresh.interval.ms", "5000"),
        ] {
            with(key, value)
                .validate()
                .unwrap_or_else(|e| panic!("{key} is allowed: {e}"));
        }
    }
}
