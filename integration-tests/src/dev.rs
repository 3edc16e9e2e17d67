//! `ballast-dev up`: the embedded stack in one process: a mock Kafka cluster with racks, the
//! ingest gateway, the retry workers, dedup, topology, DevControl, and a metrics endpoint.
//! It prints one JSON ready line.

use crate::control::DevControlService;
use anyhow::Context;
use ballast_dedup_service::{Backend, DedupConfig};
use ballast_failover::{FailoverBackend, FailoverConfig};
use ballast_gateway::{Gateway, GatewayConfig, GatewayHandle};
use ballast_kafka::{EmbeddedCluster, EmbeddedClusterConfig, TopicSpec};
use ballast_proto::dev::v1::dev_control_server::DevControlServer;
use ballast_retry_worker::WorkerConfig;
use ballast_security::{AuthConfig, ClientAuth, TlsConfig};
use ballast_topology::{TopologyConfig, TopologyState};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

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
struct DevTls {
    server: TlsConfig,
    ca_file: std::path::PathBuf,
    client: ballast_security::pki::Issued,
}

impl DevTls {
    fn generate(dir: &std::path::Path) -> anyhow::Result<Self> {
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
    fn failover_config(&self) -> FailoverConfig {
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

fn parse_group_coordinator(s: &str) -> Result<(String, i32), String> {
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

/// A running dev stack.
#[derive(Debug)]
pub struct DevStack {
    pub cluster: Arc<EmbeddedCluster>,
    pub gateway: GatewayHandle,
    pub gateway_addr: SocketAddr,
    pub control_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub dedup_addr: SocketAddr,
    pub topology_addr: SocketAddr,
    /// The topology service's state: draining marks set here reach the gateway.
    pub topology: Arc<TopologyState>,
    /// None when `--failover none`.
    pub retry_addr: Option<SocketAddr>,
    /// Every service's admin address (`/metrics`, `/healthz`, `/readyz`), by service.
    pub admin_addrs: Vec<(&'static str, SocketAddr)>,
    tls: Option<DevTls>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl DevStack {
    pub async fn start(opts: DevOptions) -> anyhow::Result<Self> {
        let topics = if opts.topics.is_empty() {
            EmbeddedClusterConfig::default().topics
        } else {
            opts.topics.clone()
        };
        let cluster = EmbeddedCluster::start(EmbeddedClusterConfig {
            brokers: opts.brokers,
            racks: opts.racks.clone(),
            topics,
            group_coordinators: opts.group_coordinators.clone(),
        })
        .context("starting the mock kafka cluster")?;
        let cluster = Arc::new(cluster);

        let gw_listener = TcpListener::bind(opts.gateway_addr)
            .await
            .with_context(|| format!("binding gateway address {}", opts.gateway_addr))?;
        let metrics_listener = TcpListener::bind(opts.metrics_addr)
            .await
            .with_context(|| format!("binding metrics address {}", opts.metrics_addr))?;
        let control_listener = TcpListener::bind(opts.control_addr)
            .await
            .with_context(|| format!("binding control address {}", opts.control_addr))?;
        let dedup_listener = TcpListener::bind(opts.dedup_addr)
            .await
            .with_context(|| format!("binding dedup address {}", opts.dedup_addr))?;
        let dedup_admin = TcpListener::bind("127.0.0.1:0").await?;
        let mut admin_addrs = vec![("dedup", dedup_admin.local_addr()?)];
        let topology_listener = TcpListener::bind(opts.topology_addr)
            .await
            .with_context(|| format!("binding topology address {}", opts.topology_addr))?;
        let topology_admin = TcpListener::bind("127.0.0.1:0").await?;
        admin_addrs.push(("topology", topology_admin.local_addr()?));
        let topology_addr = topology_listener.local_addr()?;
        let dedup_addr = dedup_listener.local_addr()?;
        let gateway_addr = gw_listener.local_addr()?;
        let metrics_addr = metrics_listener.local_addr()?;
        admin_addrs.push(("gateway", metrics_addr));
        let control_addr = control_listener.local_addr()?;

        let tls = opts
            .tls_dir
            .as_deref()
            .map(DevTls::generate)
            .transpose()
            .context("--tls-dir: generating the dev certificates")?;
        let server_tls = tls.as_ref().map(|t| t.server.clone()).unwrap_or_default();
        // The dev stack runs without auth by design: no warning about it.
        let quiet = AuthConfig {
            quiet_when_open: true,
            ..AuthConfig::default()
        };
        let failover = opts.failover_config();
        let mut cfg = GatewayConfig {
            tls: server_tls.clone(),
            auth: quiet.clone(),
            rack: Some(opts.rack.clone()),
            failover: failover.clone(),
            ..GatewayConfig::default()
        };
        cfg.kafka.bootstrap_servers = cluster.bootstrap_servers().to_string();
        cfg.kafka.write_timeout = opts.write_timeout;
        cfg.limits.record_deadline = cfg.limits.record_deadline.max(opts.write_timeout * 3);
        cfg.shutdown_grace = Duration::from_secs(5);
        cfg.topology.endpoint = Some(format!("http://{topology_addr}"));
        cfg.topology.client.ca_file = tls.as_ref().map(|t| t.ca_file.clone());
        if cfg.failover.backend == FailoverBackend::Sqs && !cfg.failover.sqs.offload.enabled() {
            // Never accept a record the failover queue cannot hold.
            cfg.limits.max_record_bytes = ballast_failover::SQS_MAX_RECORD_BYTES;
        }
        let gateway = Gateway::new(cfg).await?;
        let handle = gateway.handle();
        handle
            .refresh_metadata()
            .await
            .context("reading metadata from the mock cluster")?;

        let (stop, stop_rx) = watch::channel(false);
        let wait = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|v| *v).await;
        };
        let mut tasks = Vec::new();
        let mut tcfg = TopologyConfig {
            tls: server_tls.clone(),
            auth: quiet.clone(),
            ..TopologyConfig::default()
        };
        tcfg.kafka.bootstrap_servers = cluster.bootstrap_servers().to_string();
        tcfg.kafka.refresh_interval = Duration::from_millis(250);
        tcfg.kafka.metadata_timeout = Duration::from_millis(500);
        let topology = Arc::new(TopologyState::new(tcfg.draining_lapse_after_deadline));
        tasks.push(tokio::spawn(ballast_topology::run_with_state(
            tcfg,
            topology.clone(),
            topology_listener,
            topology_admin,
            wait(stop_rx.clone()),
        )));
        // The ready line promises a topology with the cluster in it.
        let mut rx = topology.subscribe();
        tokio::time::timeout(
            Duration::from_secs(10),
            rx.wait_for(|s| s.version >= 1 && s.kafka_reachable),
        )
        .await
        .context("the topology service saw no metadata within 10 s")?
        .context("topology service stopped")?;
        drop(rx);
        tasks.push(tokio::spawn(gateway.run(
            gw_listener,
            metrics_listener,
            wait(stop_rx.clone()),
        )));
        let mut dedup_cfg = DedupConfig {
            backend: opts.dedup_backend,
            tls: server_tls.clone(),
            auth: quiet.clone(),
            ..DedupConfig::default()
        };
        dedup_cfg.redis.url = opts.redis_url.clone();
        // Fail now, with the reason, rather than inside the task.
        ballast_dedup_service::build_store(&dedup_cfg)
            .await
            .context("starting the dedup store")?;
        tasks.push(tokio::spawn(ballast_dedup_service::run(
            dedup_cfg,
            dedup_listener,
            dedup_admin,
            wait(stop_rx.clone()),
        )));
        let retry_addr = if failover.backend == FailoverBackend::None {
            None
        } else {
            let listener = TcpListener::bind(opts.retry_addr)
                .await
                .with_context(|| format!("binding retry admin address {}", opts.retry_addr))?;
            let addr = listener.local_addr()?;
            let mut wcfg = WorkerConfig {
                rack: Some(opts.rack.clone()),
                failover,
                shutdown_grace: Duration::from_secs(5),
                tls: server_tls.clone(),
                auth: quiet.clone(),
                ..WorkerConfig::default()
            };
            wcfg.kafka.bootstrap_servers = cluster.bootstrap_servers().to_string();
            wcfg.kafka.write_timeout = opts.write_timeout;
            wcfg.retry.max_attempts = opts.max_attempts;
            wcfg.retry.lease = (opts.write_timeout * 10).max(Duration::from_secs(10));
            wcfg.retry.backoff_base = Duration::from_millis(500);
            wcfg.retry.backoff_max = Duration::from_secs(5);
            wcfg.retry.wait_time = Duration::from_millis(500);
            let metrics = TcpListener::bind("127.0.0.1:0").await?;
            admin_addrs.push(("retry_worker", metrics.local_addr()?));
            tasks.push(tokio::spawn(ballast_retry_worker::run(
                wcfg,
                listener,
                metrics,
                wait(stop_rx.clone()),
            )));
            Some(addr)
        };
        let control = DevControlServer::new(DevControlService::new(cluster.clone()));
        let control_stop = wait(stop_rx.clone());
        let control_tls = tls
            .as_ref()
            .map(|t| ballast_security::TlsServer::load(&t.server))
            .transpose()?;
        tasks.push(tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(control)
                .serve_with_incoming_shutdown(
                    ballast_telemetry::incoming(control_listener, None, control_tls),
                    control_stop,
                )
                .await
                .context("dev control server")
        }));
        Ok(Self {
            cluster,
            gateway: handle,
            gateway_addr,
            control_addr,
            metrics_addr,
            dedup_addr,
            topology_addr,
            topology,
            retry_addr,
            admin_addrs,
            tls,
            stop,
            tasks,
        })
    }

    /// The single JSON line printed when the stack is ready.
    pub fn ready_line(&self) -> String {
        serde_json::json!({
            "ready": true,
            "gateway": self.gateway_addr.to_string(),
            "control": self.control_addr.to_string(),
            "dedup": self.dedup_addr.to_string(),
            "retry_admin": self.retry_addr.map(|a| a.to_string()),
            "topology": self.topology_addr.to_string(),
            "kafka_bootstrap": self.cluster.bootstrap_servers(),
            "metrics": format!("http://{}/metrics", self.metrics_addr),
            "admin": self.admin_addrs.iter()
                .map(|(name, addr)| (name.to_string(), serde_json::Value::String(addr.to_string())))
                .collect::<serde_json::Map<_, _>>(),
            "tls": self.tls.as_ref().map(|t| serde_json::json!({
                "ca_file": t.ca_file,
                "client_cert_file": t.client.cert_file,
                "client_key_file": t.client.key_file,
            })),
        })
        .to_string()
    }

    /// Stops every service, draining in-flight work.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        for t in self.tasks {
            t.await.context("dev stack task panicked")??;
        }
        Ok(())
    }
}

/// Runs `ballast-dev up` until a shutdown signal.
pub async fn run(opts: DevOptions) -> anyhow::Result<()> {
    if opts.cluster_only {
        return run_cluster_only(opts).await;
    }
    let stack = DevStack::start(opts).await?;
    println!("{}", stack.ready_line());
    ballast_telemetry::shutdown_signal().await;
    stack.stop().await
}

/// `ballast-dev up --cluster-only`: the mock cluster and DevControl, until a shutdown signal.
async fn run_cluster_only(opts: DevOptions) -> anyhow::Result<()> {
    anyhow::ensure!(
        opts.tls_dir.is_none(),
        "--cluster-only serves DevControl in plaintext; drop --tls-dir"
    );
    let topics = if opts.topics.is_empty() {
        EmbeddedClusterConfig::default().topics
    } else {
        opts.topics.clone()
    };
    let cluster = Arc::new(
        EmbeddedCluster::start(EmbeddedClusterConfig {
            brokers: opts.brokers,
            racks: opts.racks.clone(),
            topics,
            group_coordinators: opts.group_coordinators.clone(),
        })
        .context("starting the mock kafka cluster")?,
    );
    let control_listener = TcpListener::bind(opts.control_addr)
        .await
        .with_context(|| format!("binding control address {}", opts.control_addr))?;
    println!(
        "{}",
        serde_json::json!({
            "ready": true,
            "control": control_listener.local_addr()?.to_string(),
            "kafka_bootstrap": cluster.bootstrap_servers(),
        })
    );
    tonic::transport::Server::builder()
        .add_service(DevControlServer::new(DevControlService::new(cluster)))
        .serve_with_incoming_shutdown(
            ballast_telemetry::incoming(control_listener, None, None),
            ballast_telemetry::shutdown_signal(),
        )
        .await
        .context("dev control server")
}

/// `ballast-dev up --cluster-only` as a child process (a fresh librdkafka mock cluster of its
/// own), killed on drop.
#[derive(Debug)]
pub struct ClusterProcess {
    pub bootstrap: String,
    /// The DevControl address.
    pub control: String,
    _child: JoinHandle<()>,
}

impl ClusterProcess {
    /// Starts the cluster with these `--topic` specs (`name:partitions:replication`) and
    /// waits (up to `ready_within`) for its ready line; its stderr goes to `log`.
    pub async fn start(
        topics: &[String],
        extra_args: &[String],
        log: std::process::Stdio,
        ready_within: Duration,
    ) -> anyhow::Result<Self> {
        use tokio::io::AsyncBufReadExt;
        let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
        cmd.args(["up", "--cluster-only"]);
        for t in topics {
            cmd.args(["--topic", t]);
        }
        cmd.args(extra_args);
        let mut cluster = cmd
            .env("RUST_LOG", "warn,librdkafka=off,rdkafka=off")
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting the mock cluster")?;
        let mut lines = tokio::io::BufReader::new(cluster.stdout.take().expect("piped")).lines();
        let ready = tokio::time::timeout(ready_within, lines.next_line())
            .await
            .with_context(|| {
                format!("the mock cluster printed no ready line within {ready_within:?}")
            })??
            .context("the mock cluster exited before it was ready")?;
        let ready: serde_json::Value = serde_json::from_str(&ready)?;
        let field = |k: &str| ready[k].as_str().unwrap_or_default().to_string();
        let (bootstrap, control) = (field("kafka_bootstrap"), field("control"));
        let child = tokio::spawn(async move {
            // Keep the pipe drained and the child owned while this handle lives.
            while let Ok(Some(_)) = lines.next_line().await {}
            let _ = cluster.wait().await;
        });
        Ok(Self {
            bootstrap,
            control,
            _child: child,
        })
    }
}

impl Drop for ClusterProcess {
    fn drop(&mut self) {
        // Dropping the task drops the child, which kills it.
        self._child.abort();
    }
}
