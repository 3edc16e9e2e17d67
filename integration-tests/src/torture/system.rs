//! The system under test as separate processes: the mock cluster, Redis with persistence,
//! topology, dedup, two gateways in two racks, two retry workers and a consumer group,
//! plus a TCP proxy in front of PostgreSQL that the harness can cut.

use anyhow::Context;
use ballast_testkit::process::free_port;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

pub const TOPIC: &str = "torture";
pub const GROUP: &str = "torture";
/// The broker that coordinates `GROUP`.
pub const COORDINATOR: i32 = 1;

/// How to start one process again after it dies.
#[derive(Debug, Clone)]
struct Recipe {
    args: Vec<String>,
    env: Vec<(String, String)>,
    program: PathBuf,
    log: PathBuf,
}

/// One supervised process.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    recipe: Recipe,
    child: Option<Child>,
    /// Whether the supervisor should bring it back when it exits.
    pub wanted: bool,
    pub starts: u32,
    /// Exits the harness did not cause.
    pub unexpected_exits: u32,
    incarnation: u32,
}

impl Proc {
    async fn start(&mut self) -> anyhow::Result<()> {
        self.incarnation += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.recipe.log)?;
        let args: Vec<String> = self
            .recipe
            .args
            .iter()
            .map(|a| a.replace("{incarnation}", &self.incarnation.to_string()))
            .collect();
        let child = Command::new(&self.recipe.program)
            .args(&args)
            .envs(
                self.recipe
                    .env
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.name))?;
        self.child = Some(child);
        self.wanted = true;
        self.starts += 1;
        Ok(())
    }

    /// Sends `signal` and waits for the exit (SIGKILL after 20 s).
    pub async fn stop(&mut self, signal: &str) {
        self.wanted = false;
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                ballast_testkit::process::signal(pid, signal);
            }
            if tokio::time::timeout(Duration::from_secs(20), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }

    /// Waits up to 60 s for it to listen on `addr`. Fails at once if it exits first, and
    /// either way names the process and shows the end of its log.
    async fn wait_listening(&mut self, addr: SocketAddr) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            let exited = match self.child.as_mut() {
                Some(c) => c.try_wait()?,
                None => None,
            };
            let why = match exited {
                Some(status) => {
                    format!("{} exited ({status}) before listening on {addr}", self.name)
                }
                None if tokio::time::Instant::now() >= deadline => {
                    format!("nothing listens on {addr} after 60 s ({})", self.name)
                }
                None => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            anyhow::bail!(
                "{why}; the end of {}:\n{}",
                self.recipe.log.display(),
                log_tail(&self.recipe.log, 20)
            );
        }
    }

    /// Restarts it if it should run and has exited.
    async fn supervise(&mut self) -> anyhow::Result<()> {
        if !self.wanted {
            return Ok(());
        }
        let exited = match self.child.as_mut() {
            Some(c) => c.try_wait()?.is_some(),
            None => true,
        };
        if exited {
            self.unexpected_exits += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
            self.start().await?;
        }
        Ok(())
    }
}

/// Every process, by name, and the addresses the load and the faults use.
#[derive(Debug)]
pub struct System {
    pub procs: BTreeMap<String, Proc>,
    pub dir: PathBuf,
    /// The mock cluster, a child process; killed with the system.
    pub _cluster: crate::dev::ClusterProcess,
    pub bootstrap: String,
    pub control: String,
    pub gateways: Vec<SocketAddr>,
    pub workers: Vec<SocketAddr>,
    pub dedup: SocketAddr,
    pub topology: SocketAddr,
    pub proxy: ballast_testkit::fault_proxy::FaultProxy,
    pub consumers: usize,
    pub partitions: i32,
    pub supervising: Arc<AtomicBool>,
}

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

fn env(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// What the system is built from.
#[derive(Debug, Clone)]
pub struct Plan {
    pub dir: PathBuf,
    pub database_url: String,
    pub queue: String,
    pub consumers: usize,
    pub partitions: i32,
}

impl System {
    pub async fn start(plan: &Plan) -> anyhow::Result<Self> {
        let exe = crate::ballast_bin()?;
        let dir = plan.dir.clone();
        std::fs::create_dir_all(dir.join("logs"))?;
        std::fs::create_dir_all(dir.join("redis"))?;
        let mut procs = BTreeMap::new();
        let mut add =
            |name: &str, program: &Path, args: Vec<String>, env: Vec<(String, String)>| {
                procs.insert(
                    name.to_string(),
                    Proc {
                        name: name.to_string(),
                        recipe: Recipe {
                            args,
                            env,
                            program: program.to_path_buf(),
                            log: dir.join("logs").join(format!("{name}.log")),
                        },
                        child: None,
                        wanted: false,
                        starts: 0,
                        unexpected_exits: 0,
                        incarnation: 0,
                    },
                );
            };

        // Redis with an append-only file fsynced at every write: a restart keeps claims.
        let redis_port = free_port();
        let redis = which("redis-server")?;
        add(
            "redis",
            &redis,
            [
                "--port",
                &redis_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--dir",
                &dir.join("redis").display().to_string(),
            ]
            .map(String::from)
            .to_vec(),
            vec![],
        );
        let redis_url = format!("redis://127.0.0.1:{redis_port}");

        // The cluster: started first, its ready line gives the bootstrap servers.
        // The group's coordinator is pinned to broker 1, which the flapping fault leaves
        // alone: librdkafka 2.12's mock aborts the whole cluster process
        // (rdkafka_mock_cgrp.c, `!member->resp`) when a coordinator flaps while a join is
        // pending, as after a consumer SIGKILL.
        let cluster = crate::dev::ClusterProcess::start(
            &[
                format!("{TOPIC}:{}:3", plan.partitions),
                format!("{}:{}:3", super::compact::TOPIC, super::compact::PARTITIONS),
            ],
            &[
                "--group-coordinator".into(),
                format!("{GROUP}={COORDINATOR}"),
            ],
            std::fs::File::create(dir.join("logs").join("cluster.log"))?.into(),
            Duration::from_secs(60),
        )
        .await?;
        let (bootstrap, control) = (cluster.bootstrap.clone(), cluster.control.clone());

        let upstream = database_addr(&plan.database_url)?;
        let proxy = ballast_testkit::fault_proxy::FaultProxy::start(upstream).await?;
        let proxied_url = plan
            .database_url
            .replacen(&upstream.to_string(), &proxy.addr.to_string(), 1)
            .replacen(
                &format!("localhost:{}", upstream.port()),
                &proxy.addr.to_string(),
                1,
            );

        let common = |listen: SocketAddr| {
            vec![
                ("BALLAST_LISTEN", listen.to_string()),
                ("BALLAST_ADMIN_LISTEN", addr().to_string()),
                ("RUST_LOG", "warn,librdkafka=off,rdkafka=off".into()),
            ]
        };
        let topology = addr();
        let mut e = common(topology);
        e.extend([
            ("BALLAST_KAFKA__BOOTSTRAP_SERVERS", bootstrap.clone()),
            ("BALLAST_KAFKA__REFRESH_INTERVAL", "250ms".into()),
            ("BALLAST_KAFKA__METADATA_TIMEOUT", "500ms".into()),
        ]);
        add("topology", &exe, vec!["topology-service".into()], env(&e));

        let dedup = addr();
        let mut e = common(dedup);
        e.extend([
            ("BALLAST_BACKEND", "redis".into()),
            ("BALLAST_REDIS__URL", redis_url.clone()),
        ]);
        add("dedup", &exe, vec!["dedup".into()], env(&e));

        let failover = |e: &mut Vec<(&str, String)>| {
            e.extend([
                ("BALLAST_KAFKA__BOOTSTRAP_SERVERS", bootstrap.clone()),
                ("BALLAST_KAFKA__WRITE_TIMEOUT", "1s".into()),
                ("BALLAST_FAILOVER__BACKEND", "postgres".into()),
                ("BALLAST_FAILOVER__DATABASE_URL", proxied_url.clone()),
                ("BALLAST_FAILOVER__QUEUE", plan.queue.clone()),
                ("BALLAST_FAILOVER__TIMEOUT", "3s".into()),
                ("BALLAST_FAILOVER__WRITE_TIMEOUT", "3s".into()),
                ("BALLAST_SHUTDOWN_GRACE", "5s".into()),
            ]);
        };
        let mut gateways = Vec::new();
        for (name, rack) in [("gateway-a", "az-a"), ("gateway-b", "az-b")] {
            let listen = addr();
            let mut e = common(listen);
            failover(&mut e);
            e.extend([
                ("BALLAST_RACK", rack.to_string()),
                ("BALLAST_TOPOLOGY__ENDPOINT", format!("http://{topology}")),
            ]);
            add(name, &exe, vec!["gateway".into()], env(&e));
            gateways.push(listen);
        }
        let mut workers = Vec::new();
        for (name, rack) in [("worker-a", "az-a"), ("worker-b", "az-b")] {
            let listen = addr();
            let mut e = common(listen);
            failover(&mut e);
            e.extend([
                ("BALLAST_RACK", rack.to_string()),
                // The shipped attempt budget and backoff (retry.max_attempts 5): the faults
                // must not use it up, since an attempt is spent only on a Kafka write that
                // was tried and failed. The audit flags every dead letter.
                ("BALLAST_RETRY__LEASE", "10s".into()),
            ]);
            add(name, &exe, vec!["retry-worker".into()], env(&e));
            workers.push(listen);
        }
        for c in 0..plan.consumers {
            let name = format!("consumer-{c}");
            let log = |kind: &str| {
                dir.join("logs")
                    .join(format!("{name}.{{incarnation}}.{kind}"))
                    .display()
                    .to_string()
            };
            add(
                &name,
                &exe,
                vec![
                    "consume".into(),
                    "--bootstrap".into(),
                    bootstrap.clone(),
                    "--topic".into(),
                    TOPIC.into(),
                    "--group".into(),
                    GROUP.into(),
                    "--dedup".into(),
                    dedup.to_string(),
                    "--lease".into(),
                    "10s".into(),
                    "--idle-exit".into(),
                    "1h".into(),
                    "--start-timeout".into(),
                    "1h".into(),
                    "--session-timeout".into(),
                    "6s".into(),
                    "--processed-log".into(),
                    log("processed"),
                    "--duplicates-log".into(),
                    log("duplicates"),
                ],
                env(&[("RUST_LOG", "warn,librdkafka=off,rdkafka=off".into())]),
            );
        }

        let mut system = Self {
            procs,
            dir,
            _cluster: cluster,
            bootstrap,
            control,
            gateways,
            workers,
            dedup,
            topology,
            proxy,
            consumers: plan.consumers,
            partitions: plan.partitions,
            supervising: Arc::new(AtomicBool::new(true)),
        };
        system.proc("redis").start().await?;
        system
            .proc("redis")
            .wait_listening(SocketAddr::from(([127, 0, 0, 1], redis_port)))
            .await?;
        for name in [
            "topology",
            "dedup",
            "gateway-a",
            "gateway-b",
            "worker-a",
            "worker-b",
        ] {
            system.proc(name).start().await?;
        }
        let listening = [("topology", topology), ("dedup", dedup)]
            .into_iter()
            .chain(
                ["gateway-a", "gateway-b"]
                    .into_iter()
                    .zip(system.gateways.clone()),
            )
            .chain(
                ["worker-a", "worker-b"]
                    .into_iter()
                    .zip(system.workers.clone()),
            );
        for (name, a) in listening {
            system.proc(name).wait_listening(a).await?;
        }
        for c in 0..plan.consumers {
            system.proc(&format!("consumer-{c}")).start().await?;
        }
        Ok(system)
    }

    pub fn proc(&mut self, name: &str) -> &mut Proc {
        self.procs.get_mut(name).expect("a known process")
    }

    pub async fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        let p = self.proc(name);
        if p.child.is_none() {
            p.start().await?;
        }
        Ok(())
    }

    /// Brings back every process that should run and has exited.
    pub async fn supervise(&mut self) -> anyhow::Result<()> {
        if !self.supervising.load(Ordering::Relaxed) {
            return Ok(());
        }
        for p in self.procs.values_mut() {
            p.supervise().await?;
        }
        Ok(())
    }

    /// Every consumer's processed and duplicate ids, one per line, over every incarnation.
    pub fn consumer_logs(&self, kind: &str) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(self.dir.join("logs"))? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with("consumer-") && name.ends_with(&format!(".{kind}")) {
                ids.extend(std::fs::read_to_string(&path)?.lines().map(String::from));
            }
        }
        Ok(ids)
    }

    pub async fn stop(mut self) {
        for name in self.procs.keys().cloned().collect::<Vec<_>>() {
            self.proc(&name).stop("TERM").await;
        }
    }
}

fn which(program: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("{program} is not on PATH (Debian package redis-server)"))
}

/// The host:port of a postgres:// URL.
fn database_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .split_once("://")
        .map(|(_, r)| r)
        .context("--database-url: expected postgres://user@host:port/db")?;
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host_port = host_port.split(['/', '?']).next().unwrap_or(host_port);
    let host_port = host_port.replace("localhost", "127.0.0.1");
    let with_port = if host_port.contains(':') {
        host_port
    } else {
        format!("{host_port}:5432")
    };
    with_port
        .parse()
        .with_context(|| format!("--database-url: {with_port} is not an IP address and port"))
}

/// The last `lines` lines of a log file, for an error message.
fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
