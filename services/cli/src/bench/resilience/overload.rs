//! P6: the gateway's peak RSS under 10x overload while Kafka is down and failover is slow.

use super::{cluster, unkeyed, RACK};
use crate::bench::BenchArgs;
use anyhow::Context;
use ballast_proto::ingest::v1 as pb;
use ballast_proto::ingest::v1::ingest_client::IngestClient;
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
    let port = |_| -> anyhow::Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let (grpc, admin) = (port(())?, port(())?);
    let name = format!("ballast-bench-p6-{}", std::process::id());
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{grpc}\nadmin_listen: 127.0.0.1:{admin}\nrack: {RACK}\n\
             kafka:\n  bootstrap_servers: {bootstrap}\n  write_timeout: 1s\n\
             limits:\n  inflight_bytes: {budget}\n  record_deadline: 2s\n  max_record_bytes: {max_record}\n\
             failover:\n  backend: sqs\n  concurrent_batches: 1\n  timeout: 5s\n  sqs:\n    queue: {name}\n    dlq: {name}-dlq\n    endpoint: {endpoint}\n    region: us-east-1\n    access_key_id: bench\n    secret_access_key: bench\n    create_queues: true\n\
             telemetry:\n  log_level: error\n",
            bootstrap = c.bootstrap_servers(),
            max_record = ballast_failover::SQS_MAX_RECORD_BYTES,
        ),
    )?;
    let child = Child(
        std::process::Command::new(std::env::current_exe()?)
            .args(["gateway", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting the gateway process")?,
    );
    let pid = child.0.id();
    let addr = format!("http://127.0.0.1:{grpc}");
    let end = Instant::now() + Duration::from_secs(30);
    let client = loop {
        if let Ok(c) = IngestClient::connect(addr.clone()).await {
            break c;
        }
        anyhow::ensure!(Instant::now() < end, "the gateway process did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
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
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
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
    })
}
