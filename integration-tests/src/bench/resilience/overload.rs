//! P6: the gateway's peak RSS under 10x overload while Kafka is down and failover is slow;
//! then a second gateway under 1 MiB records from many connections.

use super::{cluster, unkeyed, RACK};
use crate::bench::BenchArgs;
use anyhow::Context;
use ballast_proto::ingest::v1 as pb;
use ballast_proto::ingest::v1::ingest_client::IngestClient;
use ballast_testkit::process::free_port;
use futures::future::join_all;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, serde::Serialize)]
pub struct OverloadFigures {
    /// Records/s the slowed failover absorbed with Kafka down.
    pub failover_capacity_per_sec: f64,
    pub offered_records_per_sec: f64,
    pub overload_factor: f64,
    pub baseline_rss_mib: f64,
    pub peak_rss_mib: f64,
    pub inflight_budget_mib: f64,
    /// (peak − baseline) ÷ budget: at most 1 when the budget bounds memory.
    pub growth_over_budget: f64,
    pub answered: HashMap<String, usize>,
    pub large: LargeFigures,
}

/// 1 MiB records, two a request, from many connections at once, with Kafka down and the
/// failover (SQS with S3 offload on moto_server) one batch at a time.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LargeFigures {
    pub connections: usize,
    pub record_bytes: usize,
    pub records_offered: usize,
    pub baseline_rss_mib: f64,
    pub peak_rss_mib: f64,
    pub inflight_budget_mib: f64,
    pub pending_bytes_mib: f64,
    /// limits.max_concurrent_requests × limits.max_request_bytes × 2 (the wire bytes and
    /// the decoded request), plus limits.max_connections × limits.grpc_max_frame_bytes
    /// (each connection's read buffer holds up to one HTTP/2 frame).
    pub request_buffers_mib: f64,
    /// (peak − baseline) ÷ (budget + pending bytes + request buffers): at most 1 when the
    /// configured limits bound memory.
    pub growth_over_bound: f64,
    pub answered: HashMap<String, usize>,
}

/// A gateway process on free ports (or P8's gRPC sink), killed on drop.
pub(in crate::bench) struct GatewayProcess {
    child: Child,
    pub(in crate::bench) pid: u32,
    addr: String,
    /// The admin (metrics) address; a sink has none.
    pub(in crate::bench) admin: Option<std::net::SocketAddr>,
    dir: std::path::PathBuf,
}

impl GatewayProcess {
    /// Starts `ballast gateway` with `config` (YAML after the listen addresses).
    pub(in crate::bench) async fn start(name: &str, config: &str) -> anyhow::Result<Self> {
        let (grpc, admin) = (free_port(), free_port());
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("gateway.yaml");
        std::fs::write(
            &path,
            format!("listen: 127.0.0.1:{grpc}\nadmin_listen: 127.0.0.1:{admin}\n{config}"),
        )?;
        let mut cmd = std::process::Command::new(crate::ballast_bin()?);
        cmd.args(["gateway", "--config"])
            .arg(&path)
            .stderr(std::process::Stdio::null());
        let admin = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
        Self::spawn(cmd, "the gateway process", grpc, Some(admin), dir)
    }

    /// Starts `ballast-dev bench-sink` on a free port, serving TLS with `tls` (certificate
    /// and key files).
    pub(in crate::bench) fn start_sink(
        name: &str,
        tls: Option<(&std::path::Path, &std::path::Path)>,
    ) -> anyhow::Result<Self> {
        let grpc = free_port();
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&dir)?;
        let mut cmd = std::process::Command::new(std::env::current_exe()?);
        cmd.args(["bench-sink", "--listen", &format!("127.0.0.1:{grpc}")]);
        if let Some((cert, key)) = tls {
            cmd.arg("--cert-file").arg(cert).arg("--key-file").arg(key);
        }
        Self::spawn(cmd, "the grpc sink process", grpc, None, dir)
    }

    fn spawn(
        mut cmd: std::process::Command,
        what: &str,
        grpc: u16,
        admin: Option<std::net::SocketAddr>,
        dir: std::path::PathBuf,
    ) -> anyhow::Result<Self> {
        let child = Child(
            cmd.stdout(std::process::Stdio::null())
                .spawn()
                .with_context(|| format!("starting {what}"))?,
        );
        let pid = child.0.id();
        Ok(Self {
            child,
            pid,
            addr: format!("http://127.0.0.1:{grpc}"),
            admin,
            dir,
        })
    }

    /// `connections` connections to it (at least one), over TLS when given the CA file.
    pub(in crate::bench) async fn pool(
        &self,
        connections: usize,
        ca_file: Option<&std::path::Path>,
    ) -> anyhow::Result<crate::bench::ClientPool> {
        let security = ballast_security::ClientSecurity {
            ca_file: ca_file.map(std::path::Path::to_path_buf),
            ..Default::default()
        };
        let mut clients = Vec::new();
        for _ in 0..connections.max(1) {
            clients.push(self.connect_with(&security).await?);
        }
        Ok(crate::bench::ClientPool::new(clients))
    }

    /// A new connection to it (waits up to 30 s for the process to listen).
    pub(in crate::bench) async fn connect(
        &self,
    ) -> anyhow::Result<IngestClient<tonic::transport::Channel>> {
        self.connect_with(&ballast_security::ClientSecurity::default())
            .await
    }

    /// A new connection as `security` says (TLS when it has a CA).
    pub(in crate::bench) async fn connect_with(
        &self,
        security: &ballast_security::ClientSecurity,
    ) -> anyhow::Result<IngestClient<tonic::transport::Channel>> {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(channel) = security.endpoint(&self.addr)?.connect().await {
                return Ok(IngestClient::new(channel)
                    .max_decoding_message_size(64 * 1024 * 1024)
                    .max_encoding_message_size(64 * 1024 * 1024));
            }
            anyhow::ensure!(Instant::now() < end, "the gateway process did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sqs_section(name: &str, endpoint: &str) -> String {
    format!(
        "  sqs:\n    queue: {name}\n    dlq: {name}-dlq\n    endpoint: {endpoint}\n    region: us-east-1\n    access_key_id: bench\n    secret_access_key: bench\n    create_queues: true\n    offload:\n      bucket: {name}\n      create_bucket: true\n"
    )
}

fn rss_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{field} not in /proc/{pid}/status"))
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn outcome_label(r: &pb::RecordResult) -> String {
    match &r.outcome {
        Some(pb::record_result::Outcome::Kafka(_)) => "kafka".into(),
        Some(pb::record_result::Outcome::Failover(_)) => "failover".into(),
        Some(pb::record_result::Outcome::Error(e)) => {
            ballast_proto::common::v1::Code::try_from(e.code)
                .map(|c| c.as_str_name().trim_start_matches("CODE_").to_lowercase())
                .unwrap_or_else(|_| "unknown".into())
        }
        None => "empty".into(),
    }
}

/// P6.
pub async fn overload(args: &BenchArgs) -> anyhow::Result<OverloadFigures> {
    let (endpoint, _moto) = crate::bench::failover::sqs_endpoint(args).await?;
    let c = cluster()?;
    let budget: usize = 64 * 1024 * 1024;
    let name = format!("ballast-bench-p6-{}", std::process::id());
    let gateway = GatewayProcess::start(
        &name,
        &format!(
            "rack: {RACK}\n\
             kafka:\n  bootstrap_servers: {bootstrap}\n  write_timeout: 1s\n\
             limits:\n  inflight_bytes: {budget}\n  record_deadline: 2s\n  max_record_bytes: {max_record}\n\
             ordering:\n  default: none\nfailover:\n  backend: sqs\n  concurrent_batches: 1\n  timeout: 5s\n{sqs}\
             telemetry:\n  log_level: error\n",
            bootstrap = c.bootstrap_servers(),
            max_record = ballast_failover::SQS_MAX_RECORD_BYTES,
            sqs = sqs_section(&name, &endpoint),
        ),
    )
    .await?;
    let pid = gateway.pid;
    let client = gateway.connect().await?;
    let value = Arc::new(vec![b'o'; 1024]);
    let seq = Arc::new(AtomicUsize::new(0));
    let send = {
        let (client, value, seq) = (client.clone(), value.clone(), seq.clone());
        move |batch: usize| {
            let (mut client, value, seq) = (client.clone(), value.clone(), seq.clone());
            async move {
                let first = seq.fetch_add(batch, Ordering::Relaxed);
                let records = (first..first + batch).map(|i| unkeyed(i, &value)).collect();
                let r = client.produce(pb::ProduceRequest { records }).await;
                Ok::<_, anyhow::Error>(match r {
                    Ok(r) => r.into_inner().results.iter().map(outcome_label).collect(),
                    Err(s) => vec![format!("whole request refused: {:?}", s.code()); batch],
                })
            }
        }
    };
    // Wait until the gateway writes to Kafka, then hold a steady 1,000 records/s: baseline.
    let end = Instant::now() + Duration::from_secs(30);
    while send(1).await?.first().map(String::as_str) != Some("kafka") {
        anyhow::ensure!(Instant::now() < end, "the gateway never reached kafka");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let phase = if args.quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(5)
    };
    eprintln!("bench: P6 steady load with kafka up (baseline rss)");
    let start = Instant::now();
    while start.elapsed() < phase {
        let batch: Vec<_> = (0..10).map(|_| send(10)).collect();
        join_all(batch).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let baseline_kib = rss_kib(pid, "VmRSS:")?;

    // Kafka goes down; measure what the slowed failover absorbs.
    c.broker_down(-1).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    eprintln!("bench: P6 failover capacity with kafka down");
    let t0 = Instant::now();
    let mut absorbed = 0;
    while t0.elapsed() < phase {
        let rounds: Vec<_> = (0..4).map(|_| send(10)).collect();
        for r in join_all(rounds).await {
            absorbed += r?.iter().filter(|o| *o == "failover").count();
        }
    }
    let capacity = absorbed as f64 / t0.elapsed().as_secs_f64();
    anyhow::ensure!(capacity > 0.0, "no record failed over with kafka down");

    // 10× that, open loop, sampling RSS.
    let offered = capacity * 10.0;
    eprintln!("bench: P6 {offered:.0} records/s offered (10x what failover absorbs), {phase:?}");
    let answered: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let batch = 20;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(batch as f64 / offered));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::new();
    let mut peak_kib = 0;
    let t0 = Instant::now();
    while t0.elapsed() < phase * 2 {
        tick.tick().await;
        let (send, answered) = (send.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            let outcomes = send(batch).await?;
            let mut a = answered.lock().expect("lock");
            for o in outcomes {
                *a.entry(o).or_default() += 1;
            }
            anyhow::Ok(())
        }));
        peak_kib = peak_kib.max(rss_kib(pid, "VmRSS:")?);
    }
    for t in join_all(tasks).await {
        t??;
    }
    peak_kib = peak_kib.max(rss_kib(pid, "VmHWM:")?);
    drop(gateway);
    let large = large_records(args, &c, &endpoint).await?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let budget_mib = budget as f64 / (1024.0 * 1024.0);
    let answered = answered.lock().expect("lock").clone();
    Ok(OverloadFigures {
        failover_capacity_per_sec: capacity,
        offered_records_per_sec: offered,
        overload_factor: 10.0,
        baseline_rss_mib: mib(baseline_kib),
        peak_rss_mib: mib(peak_kib),
        inflight_budget_mib: budget_mib,
        growth_over_budget: (mib(peak_kib) - mib(baseline_kib)).max(0.0) / budget_mib,
        answered,
        large,
    })
}

/// P6, large records: a second gateway, limits set for 1 MiB records, under two 1 MiB
/// records a request from many connections at once while Kafka is down.
async fn large_records(
    args: &BenchArgs,
    c: &ballast_kafka::EmbeddedCluster,
    endpoint: &str,
) -> anyhow::Result<LargeFigures> {
    const MIB: usize = 1024 * 1024;
    let record_bytes = MIB;
    let connections = 64;
    let budget = 64 * MIB;
    let pending = 16 * MIB;
    let max_concurrent = 16;
    let max_request = 2 * MIB + 64 * 1024;
    let max_connections = connections / 2;
    let frame = ballast_gateway::Limits::default().grpc_max_frame_bytes as usize;
    let name = format!("ballast-bench-p6l-{}", std::process::id());
    let _ = c.broker_up(-1).await;
    let gateway = GatewayProcess::start(
        &name,
        &format!(
            "rack: {RACK}\n\
             kafka:\n  bootstrap_servers: {bootstrap}\n  write_timeout: 1s\n  properties:\n    message.max.bytes: \"4194304\"\n\
             limits:\n  inflight_bytes: {budget}\n  record_deadline: 2s\n  max_record_bytes: {max_record}\n  \
             max_request_bytes: {max_request}\n  max_concurrent_requests: {max_concurrent}\n  max_connections: {max_connections}\n  \
             grpc_stream_window_bytes: {window}\n  grpc_max_frame_bytes: {frame}\n\
             ordering:\n  default: none\nfailover:\n  backend: sqs\n  concurrent_batches: 1\n  timeout: 5s\n  pending_bytes: {pending}\n{sqs}\
             telemetry:\n  log_level: error\n",
            bootstrap = c.bootstrap_servers(),
            max_record = record_bytes + 1024,
            window = MIB,
            sqs = sqs_section(&name, endpoint),
        ),
    )
    .await?;
    let pid = gateway.pid;
    let value = Arc::new(vec![b'L'; record_bytes]);
    let seq = Arc::new(AtomicUsize::new(0));
    let request = {
        let (value, seq) = (value.clone(), seq.clone());
        move |n: usize| {
            let first = seq.fetch_add(n, Ordering::Relaxed);
            pb::ProduceRequest {
                records: (first..first + n).map(|i| unkeyed(i, &value)).collect(),
            }
        }
    };
    let mut first = gateway.connect().await?;
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let r = first.produce(request(1)).await;
        let answer = match &r {
            Ok(r) => format!("{:?}", r.get_ref().results.first()),
            Err(s) => format!("{s:?}"),
        };
        if matches!(r.as_ref().map(|r| r.get_ref().results.first().map(outcome_label)), Ok(Some(l)) if l == "kafka")
        {
            break;
        }
        anyhow::ensure!(
            Instant::now() < end,
            "the large-record gateway never reached kafka; last answer: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let phase = if args.quick {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(8)
    };
    eprintln!("bench: P6 large records: steady 1 MiB records with kafka up (baseline rss)");
    let t0 = Instant::now();
    while t0.elapsed() < phase / 2 {
        first.produce(request(2)).await?;
    }
    let baseline_kib = rss_kib(pid, "VmRSS:")?;

    c.broker_down(-1).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    eprintln!(
        "bench: P6 large records: {connections} connections, two 1 MiB records a request, kafka down, {phase:?}"
    );
    let answered: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let offered = Arc::new(AtomicUsize::new(0));
    let stop = Instant::now() + phase;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (request, answered, offered) = (request.clone(), answered.clone(), offered.clone());
        let addr = gateway.addr.clone();
        tasks.push(tokio::spawn(async move {
            // Connections past limits.max_connections wait in the listen backlog.
            let Ok(client) = IngestClient::connect(addr).await else {
                *answered
                    .lock()
                    .expect("lock")
                    .entry("connect failed".into())
                    .or_default() += 1;
                return;
            };
            let mut client = client.max_encoding_message_size(64 * 1024 * 1024);
            while Instant::now() < stop {
                offered.fetch_add(2, Ordering::Relaxed);
                let labels = match tokio::time::timeout(phase, client.produce(request(2))).await {
                    Ok(Ok(r)) => r.into_inner().results.iter().map(outcome_label).collect(),
                    Ok(Err(s)) => vec![format!("whole request refused: {:?}", s.code()); 2],
                    Err(_) => vec!["no answer within the phase".to_string(); 2],
                };
                let mut a = answered.lock().expect("lock");
                for l in labels {
                    *a.entry(l).or_default() += 1;
                }
            }
        }));
    }
    let mut peak_kib = 0;
    while tasks.iter().any(|t| !t.is_finished()) {
        peak_kib = peak_kib.max(rss_kib(pid, "VmRSS:")?);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in tasks {
        t.await?;
    }
    peak_kib = peak_kib.max(rss_kib(pid, "VmHWM:")?);
    let _ = c.broker_up(-1).await;
    drop(gateway);
    let mib = |bytes: usize| bytes as f64 / MIB as f64;
    let kib_mib = |kib: u64| kib as f64 / 1024.0;
    let request_buffers = max_concurrent * max_request * 2 + max_connections * frame;
    let bound = mib(budget) + mib(pending) + mib(request_buffers);
    let growth = (kib_mib(peak_kib) - kib_mib(baseline_kib)).max(0.0);
    let answered = answered.lock().expect("lock").clone();
    Ok(LargeFigures {
        connections,
        record_bytes,
        records_offered: offered.load(Ordering::Relaxed),
        baseline_rss_mib: kib_mib(baseline_kib),
        peak_rss_mib: kib_mib(peak_kib),
        inflight_budget_mib: mib(budget),
        pending_bytes_mib: mib(pending),
        request_buffers_mib: mib(request_buffers),
        growth_over_bound: growth / bound,
        answered,
    })
}
