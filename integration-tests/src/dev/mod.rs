//! `ballast-dev up`: the embedded stack in one process: a mock Kafka cluster with racks, the
//! ingest gateway, the retry workers, dedup, topology, DevControl, and a metrics endpoint.
//! It prints one JSON ready line.
//!
//! Its flags are in `options.rs`; `--cluster-only`, and the cluster as a child process that
//! the torture run and the bench start, in `cluster.rs`.

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

mod cluster;
mod options;

pub use cluster::ClusterProcess;
use cluster::*;
use options::*;
pub use options::{DevFailover, DevOptions};

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
        crate::stack::sqs_unordered(&cfg.failover, &mut cfg.ordering);
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
            crate::stack::sqs_unordered(&wcfg.failover, &mut wcfg.ordering);
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
