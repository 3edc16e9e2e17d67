//! `ballast-dev up`'s flags, and the TLS material it generates for `--tls-dir`.

use super::*;

#[derive(Debug, Clone, clap::Args)]
pub struct DevOptions {
    /// Number of mock brokers (ids 1..=N).
    #[arg(long, default_value_t = 3)]
    pub brokers: i32,
    /// Racks given to brokers in turn.
    #[arg(long, value_delimiter = ',', default_value = "az-a,az-b,az-c")]
    pub racks: Vec<String>,
    /// A topic to create, NAME:PARTITIONS[:RF]; repeatable. Default: events:6:3.
    #[arg(long = "topic")]
    pub topics: Vec<TopicSpec>,
    /// Pin a consumer group's coordinator to a broker, GROUP=BROKER; repeatable. Default:
    /// the mock hashes the group id over all brokers.
    #[arg(long = "group-coordinator", value_parser = parse_group_coordinator)]
    pub group_coordinators: Vec<(String, i32)>,
    /// The gateway's own rack.
    #[arg(long, default_value = "az-a")]
    pub rack: String,
    /// The gateway's gRPC address; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub gateway_addr: SocketAddr,
    /// The DevControl gRPC address.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub control_addr: SocketAddr,
    /// The metrics HTTP address.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub metrics_addr: SocketAddr,
    /// The dedup service's gRPC address.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub dedup_addr: SocketAddr,
    /// Where dedup keeps claims: in this process, or in Redis.
    #[arg(long, value_enum, default_value = "memory")]
    pub dedup_backend: Backend,
    /// The Redis URL for `--dedup-backend redis`.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// The failover queue: sqlite (a file in a temp dir), postgres, sqs, or none.
    #[arg(long, value_enum, default_value = "sqlite")]
    pub failover: DevFailover,
    /// The SQLite file for `--failover sqlite`; default: a new file in a temp dir.
    #[arg(long)]
    pub sqlite_path: Option<std::path::PathBuf>,
    /// The PostgreSQL URL for `--failover postgres`.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub database_url: String,
    /// An SQS endpoint for `--failover sqs` (e.g. a local moto_server); none uses AWS.
    #[arg(long)]
    pub sqs_endpoint: Option<String>,
    #[arg(long, default_value = "ballast-failover")]
    pub sqs_queue: String,
    #[arg(long, default_value = "ballast-failover-dlq")]
    pub sqs_dlq: String,
    #[arg(long, default_value = "us-east-1")]
    pub sqs_region: String,
    /// An S3 bucket for `--failover sqs` to offload large records to (created on a local
    /// endpoint): the gateway then takes records up to its 1 MiB default, not only the
    /// 176 KiB an SQS message holds.
    #[arg(long)]
    pub s3_bucket: Option<String>,
    /// The topology service's gRPC address.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub topology_addr: SocketAddr,
    /// The retry workers' RetryAdmin gRPC address.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub retry_addr: SocketAddr,
    /// Kafka attempts a retry worker makes before dead-lettering a record.
    #[arg(long, default_value_t = 5)]
    pub max_attempts: u32,
    /// The gateway's per-attempt write deadline.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub write_timeout: Duration,
    /// Serve every gRPC API over TLS: a CA, a server certificate (localhost, 127.0.0.1)
    /// and a client certificate are generated into this directory, and their paths are
    /// printed in the ready line. Plaintext without it.
    #[arg(long)]
    pub tls_dir: Option<std::path::PathBuf>,
    /// Run only the mock cluster and DevControl (for services run as their own
    /// processes, as `ballast-dev torture` does); the ready line names those two.
    #[arg(long)]
    pub cluster_only: bool,
}

/// The files `--tls-dir` generated.
#[derive(Debug, Clone)]
pub(super) struct DevTls {
    pub(super) server: TlsConfig,
    pub(super) ca_file: std::path::PathBuf,
    pub(super) client: ballast_security::pki::Issued,
}

impl DevTls {
    pub(super) fn generate(dir: &std::path::Path) -> anyhow::Result<Self> {
        use ballast_security::pki::{Authority, Name};
        let ca = Authority::create(dir, "Ballast dev CA")?;
        let server = ca.issue(
            "server",
            "ballast-dev",
            &[
                Name::Dns("localhost"),
                Name::Ip(std::net::IpAddr::from([127, 0, 0, 1])),
            ],
        )?;
        let client = ca.issue(
            "client",
            "ballast-dev-client",
            &[Name::Uri("spiffe://ballast/dev")],
        )?;
        Ok(Self {
            server: TlsConfig {
                cert_file: Some(server.cert_file),
                key_file: Some(server.key_file),
                client_ca_file: Some(ca.ca_file.clone()),
                // Clients may use the client certificate, or none.
                client_auth: ClientAuth::Optional,
                ..TlsConfig::default()
            },
            ca_file: ca.ca_file.clone(),
            client,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DevFailover {
    Sqlite,
    Postgres,
    Sqs,
    None,
}

impl DevOptions {
    /// The failover config the gateway and the retry workers share.
    pub(super) fn failover_config(&self) -> FailoverConfig {
        let mut cfg = FailoverConfig {
            linger: Duration::from_millis(2),
            ..FailoverConfig::default()
        };
        match self.failover {
            DevFailover::None => cfg.backend = FailoverBackend::None,
            DevFailover::Sqlite => {
                cfg.backend = FailoverBackend::Sqlite;
                // The embedded stack is one process on one machine by design.
                cfg.allow_node_local = true;
                let path = self.sqlite_path.clone().unwrap_or_else(|| {
                    std::env::temp_dir()
                        .join(format!("ballast-dev-{}", std::process::id()))
                        .join("failover.db")
                });
                if let Some(dir) = path.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                cfg.database_url = format!("sqlite://{}?mode=rwc", path.display());
            }
            DevFailover::Postgres => {
                cfg.backend = FailoverBackend::Postgres;
                cfg.database_url = self.database_url.clone();
            }
            DevFailover::Sqs => {
                cfg.backend = FailoverBackend::Sqs;
                cfg.sqs.queue = self.sqs_queue.clone();
                cfg.sqs.dlq = self.sqs_dlq.clone();
                cfg.sqs.endpoint = self.sqs_endpoint.clone();
                cfg.sqs.region = Some(self.sqs_region.clone());
                if self.sqs_endpoint.is_some() {
                    // A local endpoint: static credentials and queues created on demand.
                    cfg.sqs.access_key_id = Some("ballast".into());
                    cfg.sqs.secret_access_key = Some("ballast".into());
                    cfg.sqs.create_queues = true;
                    cfg.sqs.offload.create_bucket = true;
                }
                if let Some(bucket) = &self.s3_bucket {
                    cfg.sqs.offload.bucket = bucket.clone();
                }
            }
        }
        cfg
    }
}

impl Default for DevOptions {
    fn default() -> Self {
        Self {
            brokers: 3,
            racks: vec!["az-a".into(), "az-b".into(), "az-c".into()],
            topics: vec![],
            rack: "az-a".into(),
            gateway_addr: "127.0.0.1:0".parse().expect("valid"),
            control_addr: "127.0.0.1:0".parse().expect("valid"),
            metrics_addr: "127.0.0.1:0".parse().expect("valid"),
            dedup_addr: "127.0.0.1:0".parse().expect("valid"),
            failover: DevFailover::Sqlite,
            sqlite_path: None,
            database_url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            sqs_endpoint: None,
            sqs_queue: "ballast-failover".into(),
            sqs_dlq: "ballast-failover-dlq".into(),
            sqs_region: "us-east-1".into(),
            s3_bucket: None,
            retry_addr: "127.0.0.1:0".parse().expect("valid"),
            topology_addr: "127.0.0.1:0".parse().expect("valid"),
            max_attempts: 5,
            dedup_backend: Backend::Memory,
            redis_url: "redis://127.0.0.1:6379".into(),
            write_timeout: Duration::from_secs(1),
            tls_dir: None,
            cluster_only: false,
            group_coordinators: Vec::new(),
        }
    }
}

pub(super) fn parse_group_coordinator(s: &str) -> Result<(String, i32), String> {
    let (group, broker) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("expected GROUP=BROKER, got {s:?}"))?;
    let broker = broker
        .parse()
        .map_err(|_| format!("broker id {broker:?} is not a number"))?;
    if group.is_empty() {
        return Err(format!("empty group in {s:?}"));
    }
    Ok((group.to_string(), broker))
}
