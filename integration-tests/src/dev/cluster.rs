//! The mock cluster alone: `ballast-dev up --cluster-only`, and that command as a child
//! process (a fresh librdkafka mock cluster per process).

use super::*;

/// `ballast-dev up --cluster-only`: the mock cluster and DevControl, until a shutdown signal.
pub(super) async fn run_cluster_only(opts: DevOptions) -> anyhow::Result<()> {
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
