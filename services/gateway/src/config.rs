//! Gateway configuration: defaults, then a YAML file, then `BALLAST_`-prefixed environment
//! variables (nested keys joined by `__`, e.g. `BALLAST_KAFKA__BOOTSTRAP_SERVERS`).

use ballast_balancer::{BreakerConfig, SpilloverConfig};
use ballast_failover::{FailoverBackend, FailoverConfig, OrderingConfig};
use ballast_kafka::KafkaConfig;
use ballast_produce::WriteLimits;
use ballast_security::{AuthConfig, TlsConfig};
use ballast_telemetry::TelemetryConfig;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// The gRPC listen address.
    pub listen: SocketAddr,
    /// The admin HTTP address for `/metrics` and `/healthz`.
    pub admin_listen: SocketAddr,
    /// This gateway's rack (availability zone). Unkeyed records prefer partitions whose
    /// leader is in it.
    pub rack: Option<String>,
    /// Unkeyed records placed on one partition in a row before the least-loaded healthy
    /// partition is chosen again (larger producer batches). 1 disables stickiness.
    pub sticky_records: u32,
    /// When the gateway's zone leads too few healthy partitions of a topic to carry its
    /// share of the unkeyed records, the excess goes to the other zones' partitions.
    pub spillover: SpilloverConfig,
    pub kafka: KafkaConfig,
    pub breaker: BreakerConfig,
    pub limits: Limits,
    /// Where records go when Kafka cannot take them. `backend: none` answers UNAVAILABLE.
    pub failover: FailoverConfig,
    /// Which topics keep each partition's order through failover (`partition`, the
    /// default, or `none`), and the lease that lets a gateway write a partition directly.
    pub ordering: OrderingConfig,
    /// The topology service to follow for draining notices and leader changes. Optional:
    /// without it, or while it is unreachable, the gateway steers by its own metadata.
    pub topology: TopologyClientConfig,
    /// How long in-flight requests may take to finish after a shutdown signal.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub shutdown_grace: Duration,
    /// TLS (and mTLS) on the gRPC listener.
    pub tls: TlsConfig,
    /// Who may produce to which topics.
    pub auth: AuthConfig,
    pub telemetry: TelemetryConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:50051".parse().expect("valid"),
            admin_listen: "0.0.0.0:9464".parse().expect("valid"),
            rack: None,
            sticky_records: 100,
            spillover: SpilloverConfig::default(),
            kafka: KafkaConfig::default(),
            breaker: BreakerConfig::default(),
            limits: Limits::default(),
            failover: FailoverConfig::default(),
            ordering: OrderingConfig::default(),
            topology: TopologyClientConfig::default(),
            shutdown_grace: Duration::from_secs(10),
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
            telemetry: TelemetryConfig {
                service_name: "ballast-gateway".into(),
                ..TelemetryConfig::default()
            },
        }
    }
}

/// How the gateway follows the topology service's `WatchTopology` stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TopologyClientConfig {
    /// e.g. `http://topology:50054`; unset: do not subscribe.
    pub endpoint: Option<String>,
    /// The deadline of one connection attempt to the topology service.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub connect_timeout: Duration,
    /// The wait between reconnection attempts.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub reconnect_backoff: Duration,
    /// Draining marks learned from the service are dropped when it has been unreachable
    /// this long (the gateway's own metadata still holds leaderless partitions).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub stale_after: Duration,
    /// HTTP/2 keep-alive pings on the stream, so a dead service is noticed while idle.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub keepalive_interval: Duration,
    /// How to reach a secured topology service: `ca_file` (turns TLS on), `cert_file` and
    /// `key_file` (mTLS), `token_file` (a bearer token).
    pub client: ballast_security::ClientSecurity,
}

impl Default for TopologyClientConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            connect_timeout: Duration::from_secs(1),
            reconnect_backoff: Duration::from_millis(500),
            stale_after: Duration::from_secs(15),
            keepalive_interval: Duration::from_secs(5),
            client: ballast_security::ClientSecurity::default(),
        }
    }
}

/// Limits that keep a gateway's memory bounded during long elections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Records beyond this many in one request fail with RESOURCE_EXHAUSTED.
    pub max_records_per_request: usize,
    /// Key + value + headers of one record.
    pub max_record_bytes: usize,
    /// The budget of record bytes in flight across all requests. Records past it fail with
    /// RESOURCE_EXHAUSTED rather than being buffered.
    pub inflight_bytes: usize,
    /// Kafka attempts per record (rerouted to another partition when allowed).
    pub max_attempts: u32,
    /// The total time a record may spend on Kafka attempts.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub record_deadline: Duration,
    /// Requests handled at once per client connection; past it, a request fails whole at
    /// once with RESOURCE_EXHAUSTED.
    pub max_concurrent_requests_per_connection: usize,
    /// Requests handled at once across all connections; past it, a request fails whole at
    /// once with RESOURCE_EXHAUSTED, before its body is decoded.
    pub max_concurrent_requests: usize,
    /// Batches of one ProduceStream processed at once (answers stay in order).
    pub stream_inflight_batches: usize,
    /// The whole-request timeout. At least `limits.record_deadline` plus, with
    /// failover, `failover.timeout + failover.write_timeout` and half a second (refused
    /// at startup otherwise), so the gateway never cancels a record whose batch may
    /// still commit.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub request_timeout: Duration,
    /// HTTP/2 receive window per stream (the connection's is 8 times larger).
    pub grpc_stream_window_bytes: u32,
    /// The largest HTTP/2 frame a client may send (SETTINGS_MAX_FRAME_SIZE, from 16 KiB to
    /// 16 MiB − 1). A request that fits one frame arrives in one piece; each connection may
    /// buffer up to one frame while reading it.
    pub grpc_max_frame_bytes: u32,
    /// The largest encoded request (one `Produce` call or one `ProduceStream` message);
    /// larger ones fail whole with OUT_OF_RANGE before they are decoded.
    pub max_request_bytes: usize,
    /// Client connections open at once; more wait in the listen backlog until one closes.
    pub max_connections: usize,
}

/// The frame sizes HTTP/2 allows a peer to advertise (RFC 9113, SETTINGS_MAX_FRAME_SIZE).
pub const GRPC_FRAME_BYTES: std::ops::RangeInclusive<u32> = 16_384..=16_777_215;

impl Limits {
    /// The limits the write path enforces per record.
    pub fn write_path(&self) -> WriteLimits {
        WriteLimits {
            max_record_bytes: self.max_record_bytes,
            inflight_bytes: self.inflight_bytes,
            max_attempts: self.max_attempts,
            record_deadline: self.record_deadline,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        let write = WriteLimits::default();
        Self {
            max_records_per_request: 1000,
            max_record_bytes: write.max_record_bytes,
            inflight_bytes: write.inflight_bytes,
            max_attempts: write.max_attempts,
            record_deadline: write.record_deadline,
            max_concurrent_requests_per_connection: 256,
            max_concurrent_requests: 4096,
            stream_inflight_batches: 8,
            request_timeout: Duration::from_secs(30),
            grpc_stream_window_bytes: 4 * 1024 * 1024,
            grpc_max_frame_bytes: 256 * 1024,
            max_request_bytes: 4 * 1024 * 1024,
            max_connections: 4096,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {0}")]
    Invalid(String),
}

impl GatewayConfig {
    /// How long the first diverted record of an ordered partition waits for its
    /// acknowledgement after its enqueue: zero without failover or ordered topics.
    pub fn ordered_wait(&self) -> Duration {
        if self.failover.backend == FailoverBackend::None || !self.ordering.any_ordered() {
            Duration::ZERO
        } else {
            self.ordering.lease + self.ordering.margin()
        }
    }

    /// Checks every setting, naming the bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.kafka
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        self.breaker.validate().map_err(ConfigError::Invalid)?;
        self.spillover.validate().map_err(ConfigError::Invalid)?;
        self.tls
            .validate()
            .and_then(|()| self.auth.validate())
            .map_err(|e| ConfigError::Invalid(format!("{e:#}")))?;
        self.failover
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if self.failover.backend != FailoverBackend::None {
            self.ordering
                .validate(&self.failover)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        if self.failover.backend == ballast_failover::FailoverBackend::Sqs
            && !self.failover.sqs.offload.enabled()
            && self.limits.max_record_bytes > ballast_failover::SQS_MAX_RECORD_BYTES
        {
            return Err(ConfigError::Invalid(format!(
                "limits.max_record_bytes is {}, but an SQS failover message holds records of at most {} bytes (256 KiB after base64 and the envelope): lower limits.max_record_bytes, offload large bodies to S3 (failover.sqs.offload.bucket), or fail over to postgres",
                self.limits.max_record_bytes,
                ballast_failover::SQS_MAX_RECORD_BYTES
            )));
        }
        if self.failover.node_local() && !self.failover.allow_node_local {
            return Err(ConfigError::Invalid(
                "failover.backend sqlite keeps acknowledged records on this node's disk, which a spot interruption takes with it: use sqs or postgres, or set failover.allow_node_local: true to accept that".into(),
            ));
        }
        let l = &self.limits;
        let positive = [
            ("sticky_records", self.sticky_records as usize),
            ("limits.max_records_per_request", l.max_records_per_request),
            ("limits.max_record_bytes", l.max_record_bytes),
            ("limits.inflight_bytes", l.inflight_bytes),
            ("limits.max_attempts", l.max_attempts as usize),
            (
                "limits.max_concurrent_requests_per_connection",
                l.max_concurrent_requests_per_connection,
            ),
            ("limits.max_concurrent_requests", l.max_concurrent_requests),
            ("limits.stream_inflight_batches", l.stream_inflight_batches),
            ("limits.max_request_bytes", l.max_request_bytes),
            ("limits.max_connections", l.max_connections),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(ConfigError::Invalid(format!("{name} must be positive")));
            }
        }
        if !GRPC_FRAME_BYTES.contains(&l.grpc_max_frame_bytes) {
            return Err(ConfigError::Invalid(format!(
                "limits.grpc_max_frame_bytes is {}; HTTP/2 allows {} to {}",
                l.grpc_max_frame_bytes,
                GRPC_FRAME_BYTES.start(),
                GRPC_FRAME_BYTES.end()
            )));
        }
        if l.max_record_bytes > l.inflight_bytes {
            return Err(ConfigError::Invalid(
                "limits.max_record_bytes may not exceed limits.inflight_bytes".into(),
            ));
        }
        if l.inflight_bytes > u32::MAX as usize {
            return Err(ConfigError::Invalid(
                "limits.inflight_bytes may be at most 4 GiB".into(),
            ));
        }
        if l.record_deadline < self.kafka.write_timeout {
            return Err(ConfigError::Invalid(
                "limits.record_deadline must be at least kafka.write_timeout".into(),
            ));
        }
        // The handler is cancelled at `request_timeout`: the client would see CANCELLED for a
        // record whose failover batch may still commit.
        let ordered_wait = self.ordered_wait();
        let needs = l.record_deadline + self.failover.answer_bound() + ordered_wait;
        if l.request_timeout < needs {
            return Err(ConfigError::Invalid(format!(
                "limits.request_timeout is {:?}, shorter than what a record may need: {:?} (limits.record_deadline {:?}{}); raise limits.request_timeout or lower those",
                l.request_timeout,
                needs,
                l.record_deadline,
                if self.failover.backend == ballast_failover::FailoverBackend::None {
                    String::new()
                } else {
                    format!(
                        " + failover.timeout {:?} + failover.write_timeout {:?} + {:?}{}",
                        self.failover.timeout,
                        self.failover.write_timeout,
                        ballast_failover::BACKSTOP_GRACE,
                        if ordered_wait.is_zero() {
                            String::new()
                        } else {
                            format!(
                                " + ordering.lease {:?} and its margin {:?}",
                                self.ordering.lease,
                                self.ordering.margin()
                            )
                        }
                    )
                }
            )));
        }
        let t = &self.topology;
        if let Some(e) = &t.endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!(
                    "topology.endpoint must start with http:// or https://, got {e:?}"
                )));
            }
            t.client
                .check_token_transport(e)
                .map_err(|err| ConfigError::Invalid(format!("topology.client: {err}")))?;
        }
        if t.connect_timeout.is_zero()
            || t.reconnect_backoff.is_zero()
            || t.stale_after.is_zero()
            || t.keepalive_interval.is_zero()
        {
            return Err(ConfigError::Invalid(
                "topology.connect_timeout, reconnect_backoff, stale_after and keepalive_interval must be positive".into(),
            ));
        }
        if let Some(r) = &self.rack {
            if r.trim().is_empty() {
                return Err(ConfigError::Invalid("rack may not be blank".into()));
            }
        }
        Ok(())
    }
}

ballast_telemetry::impl_service_config!(GatewayConfig);

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;
    use ballast_telemetry::ServiceConfig;
    use std::path::Path;

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let cfg = GatewayConfig::default();
        cfg.validate().unwrap();
        let back: GatewayConfig = serde_yaml::from_str(&cfg.to_yaml()).unwrap();
        assert_eq!(back, cfg);
        assert_eq!(cfg.kafka.write_timeout, Duration::from_secs(1));
    }

    #[test]
    fn file_then_env_layering() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "gw.yaml",
                "rack: az-b\nkafka:\n  bootstrap_servers: k1:9092\n  write_timeout: 2s\nlimits:\n  max_attempts: 5\n",
            )?;
            jail.set_env("BALLAST_KAFKA__WRITE_TIMEOUT", "750ms");
            jail.set_env("BALLAST_LIMITS__INFLIGHT_BYTES", "1048576");
            let cfg = GatewayConfig::load(Some(Path::new("gw.yaml"))).expect("loads");
            assert_eq!(cfg.rack.as_deref(), Some("az-b"));
            assert_eq!(cfg.kafka.bootstrap_servers, "k1:9092");
            assert_eq!(cfg.kafka.write_timeout, Duration::from_millis(750));
            assert_eq!(cfg.limits.max_attempts, 5);
            assert_eq!(cfg.limits.inflight_bytes, 1_048_576);
            Ok(())
        });
    }

    #[test]
    fn a_request_timeout_shorter_than_a_record_may_need_is_refused() {
        let mut cfg = GatewayConfig::default();
        cfg.limits.request_timeout = Duration::from_secs(5);
        cfg.validate()
            .expect("record_deadline 5 s fits without failover");
        cfg.failover.backend = ballast_failover::FailoverBackend::Postgres;
        cfg.failover.database_url = "postgres://localhost/ballast".into();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("limits.request_timeout is 5s")
                && err.contains("21.55s")
                && err.contains("failover.write_timeout 10s")
                && err.contains("ordering.lease 1s and its margin 50ms"),
            "{err}"
        );
        cfg.limits.request_timeout = Duration::from_millis(21_500);
        assert!(
            cfg.validate().is_err(),
            "21.5 s misses the ordering wait's margin"
        );
        cfg.limits.request_timeout = Duration::from_millis(21_550);
        cfg.validate()
            .expect("5 s + 5 s + 10 s + 0.5 s + 1 s + 0.05 s fits 21.55 s");
        // Without ordered topics, no ordering wait.
        cfg.ordering = ballast_failover::OrderingConfig::unordered();
        cfg.limits.request_timeout = Duration::from_secs(20);
        assert!(cfg.validate().is_err(), "20 s misses the backstop's grace");
        cfg.limits.request_timeout = Duration::from_millis(20_500);
        cfg.validate()
            .expect("5 s + 5 s + 10 s + 0.5 s fits 20.5 s");
    }

    #[test]
    fn an_ordered_topic_on_sqs_is_refused_naming_both_ways_out() {
        let mut cfg = GatewayConfig::default();
        cfg.failover.backend = ballast_failover::FailoverBackend::Sqs;
        cfg.failover.sqs.queue = "q".into();
        cfg.failover.sqs.dlq = "q-dlq".into();
        cfg.limits.max_record_bytes = ballast_failover::SQS_MAX_RECORD_BYTES;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("ordering.default is partition")
                && err.contains("backend: postgres")
                && err.contains("ordering.default: none"),
            "{err}"
        );
        cfg.ordering = ballast_failover::OrderingConfig::unordered();
        cfg.ordering.topics.insert(
            "profiles".into(),
            ballast_failover::TopicOrdering::Partition,
        );
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("ordering.topics sets partition for profiles"),
            "{err}"
        );
        cfg.ordering.topics.clear();
        cfg.validate()
            .expect("an unordered gateway may fail over to SQS");
        // FIFO queues with a bucket for the divert marks keep order; either alone does not.
        cfg.ordering = ballast_failover::OrderingConfig::default();
        cfg.failover.sqs.queue = "q.fifo".into();
        cfg.failover.sqs.dlq = "q-dlq.fifo".into();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("failover.sqs.offload.bucket"), "{err}");
        cfg.failover.sqs.offload.bucket = "marks".into();
        cfg.validate()
            .expect("an ordered gateway may fail over to SQS FIFO");
        cfg.failover.sqs.dlq = "q-dlq".into();
        assert!(cfg.validate().is_err(), "a standard dead-letter queue");
    }

    #[test]
    fn bad_config_names_the_field() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.yaml", "limits:\n  max_attempts: 0\n")?;
            let err = GatewayConfig::load(Some(Path::new("bad.yaml"))).unwrap_err();
            assert!(err.to_string().contains("limits.max_attempts"), "{err}");
            jail.create_file("typo.yaml", "kafka:\n  bootstrap: x\n")?;
            let err = GatewayConfig::load(Some(Path::new("typo.yaml"))).unwrap_err();
            assert!(err.to_string().contains("bootstrap"), "{err}");
            let err = GatewayConfig::load(Some(Path::new("missing.yaml"))).unwrap_err();
            assert!(err.to_string().contains("does not exist"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_topology_token_in_plaintext_to_another_host_is_refused() {
        let with = |endpoint: &str, allow: bool| {
            let mut cfg = GatewayConfig::default();
            cfg.topology.endpoint = Some(endpoint.into());
            cfg.topology.client.token_file = Some("/run/secrets/topology-token".into());
            cfg.topology.client.allow_plaintext_token = allow;
            cfg.validate()
        };
        let err = with("http://topology:50054", false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("topology.client") && err.contains("allow_plaintext_token"),
            "{err}"
        );
        with("http://topology:50054", true).unwrap();
        with("http://127.0.0.1:50054", false).unwrap();
    }

    #[test]
    fn a_frame_size_outside_http2_s_range_is_refused() {
        let with = |bytes: u32| GatewayConfig {
            limits: Limits {
                grpc_max_frame_bytes: bytes,
                ..Limits::default()
            },
            ..GatewayConfig::default()
        };
        assert_eq!(Limits::default().grpc_max_frame_bytes, 256 * 1024);
        for bad in [16_383, 16_777_216] {
            let err = with(bad).validate().unwrap_err().to_string();
            assert!(
                err.contains("limits.grpc_max_frame_bytes") && err.contains("16384 to 16777215"),
                "{err}"
            );
        }
        for good in [16_384, 16_777_215] {
            with(good).validate().unwrap();
        }
    }
}
