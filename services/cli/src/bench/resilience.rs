//! The figures about failure and placement, each against a baseline in the same run:
//!
//! - P3: while one broker is lost, the share of unkeyed records acknowledged within
//!   `write_timeout` + 200 ms, through the gateway and through a plain rdkafka producer.
//! - P6: the gateway's peak RSS (a separate process) under 10× overload while Kafka is down
//!   and failover is slow (SQS on moto_server, one batch at a time), against its RSS at
//!   steady load and its in-flight byte budget.
//! - P7: the share of unkeyed bytes written to leaders in the gateway's own zone, against
//!   a plain rdkafka producer's share on the same cluster.

use super::BenchArgs;
use anyhow::Context;
use ballast_gateway::{Gateway, GatewayConfig, GatewayHandle};
use ballast_kafka::{EmbeddedCluster, EmbeddedClusterConfig, MetadataClient, TopicSpec};
use ballast_proto::ingest::v1 as pb;
use ballast_proto::ingest::v1::ingest_client::IngestClient;
use futures::future::join_all;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOPIC: &str = "bench";
const RACK: &str = "az-a";
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

fn cluster() -> anyhow::Result<EmbeddedCluster> {
    Ok(EmbeddedCluster::start(EmbeddedClusterConfig {
        topics: vec![TopicSpec {
            name: TOPIC.into(),
            partitions: 6,
            replication_factor: 3,
        }],
        ..Default::default()
    })?)
}

/// An in-process gateway in `RACK` on `cluster`, serving on a free port.
struct InProcess {
    handle: GatewayHandle,
    client: IngestClient<tonic::transport::Channel>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    async fn start(cluster: &EmbeddedCluster) -> anyhow::Result<Self> {
        let mut cfg = GatewayConfig {
            rack: Some(RACK.into()),
            ..GatewayConfig::default()
        };
        cfg.kafka.bootstrap_servers = cluster.bootstrap_servers().to_string();
        cfg.kafka.write_timeout = WRITE_TIMEOUT;
        let gateway = Gateway::new(cfg).await?;
        let handle = gateway.handle();
        handle.refresh_metadata().await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(gateway.run(listener, admin, async {
            let _ = rx.await;
        }));
        let client = IngestClient::connect(format!("http://{addr}")).await?;
        Ok(Self {
            handle,
            client,
            stop: Some(stop),
            task,
        })
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await?
    }
}

/// A plain rdkafka producer (acks=all, idempotence) that gives up on a record after
/// `timeout`.
fn plain_producer(bootstrap: &str, timeout: Duration) -> anyhow::Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .set("message.timeout.ms", timeout.as_millis().to_string())
        .create()?)
}

fn unkeyed(n: usize, value: &[u8]) -> pb::Record {
    pb::Record {
        topic: TOPIC.into(),
        value: value.to_vec(),
        message_id: format!("b-{n}"),
        ..Default::default()
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BrokerLossFigures {
    pub victim_broker: i32,
    pub offered_records_per_sec: f64,
    pub deadline_ms: u64,
    pub gateway_records: usize,
    pub gateway_within_deadline: usize,
    /// Records acknowledged by Kafka within the deadline ÷ records sent after the loss.
    pub gateway_share: f64,
    pub plain_records: usize,
    pub plain_within_deadline: usize,
    pub plain_share: f64,
}

/// One record's outcome: sent after the loss, and acknowledged in time?
type Outcomes = Arc<Mutex<Vec<(bool, bool)>>>;

/// Offers `rate` records/s in batches of `batch` for `warm + loss`, taking `victim` down
/// after `warm`, through `send`. Returns (sent after the loss, acknowledged in time).
async fn under_loss<F, Fut>(
    cluster: &EmbeddedCluster,
    victim: i32,
    rate: f64,
    batch: usize,
    warm: Duration,
    loss: Duration,
    send: F,
) -> anyhow::Result<(usize, usize)>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<Vec<(Duration, bool)>>> + Send + 'static,
{
    let outcomes: Outcomes = Arc::default();
    let lost_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let deadline = WRITE_TIMEOUT + Duration::from_millis(200);
    let period = Duration::from_secs_f64(batch as f64 / rate);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut n = 0;
    let mut killed = false;
    while start.elapsed() < warm + loss {
        tick.tick().await;
        if !killed && start.elapsed() >= warm {
            cluster.broker_down(victim).await?;
            *lost_at.lock().expect("lock") = Some(Instant::now());
            killed = true;
        }
        let sent = Instant::now();
        let after = lost_at.lock().expect("lock").is_some_and(|t| sent >= t);
        let (send, outcomes) = (send.clone(), outcomes.clone());
        let first = n;
        n += batch;
        tasks.push(tokio::spawn(async move {
            let results = send(first).await?;
            let mut o = outcomes.lock().expect("lock");
            for (took, acked) in results {
                o.push((after, acked && took <= deadline));
            }
            anyhow::Ok(())
        }));
    }
    for t in join_all(tasks).await {
        t??;
    }
    let o = outcomes.lock().expect("lock");
    let after: Vec<_> = o.iter().filter(|(a, _)| *a).collect();
    Ok((after.len(), after.iter().filter(|(_, ok)| *ok).count()))
}

/// The broker in the gateway's zone, which takes most of its unkeyed traffic, if it leads
/// anything; else the busiest leader.
fn victim_of(md: &ballast_kafka::ClusterMetadata) -> i32 {
    let t = md.topic(TOPIC).expect("bench topic");
    let mut leads: HashMap<i32, usize> = HashMap::new();
    for p in &t.partitions {
        *leads.entry(p.leader).or_default() += 1;
    }
    let local = md
        .brokers
        .iter()
        .find(|b| b.rack.as_deref() == Some(RACK))
        .map(|b| b.id);
    match local {
        Some(id) if leads.contains_key(&id) => id,
        _ => leads
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .map(|(b, _)| b)
            .unwrap_or(1),
    }
}

/// P3.
pub async fn broker_loss(args: &BenchArgs) -> anyhow::Result<BrokerLossFigures> {
    let (warm, loss) = if args.quick {
        (Duration::from_millis(800), Duration::from_secs(2))
    } else {
        (Duration::from_secs(2), Duration::from_secs(6))
    };
    let rate = 2000.0;
    let batch = 10;
    let value = Arc::new(vec![b'p'; 512]);

    eprintln!(
        "bench: P3 broker loss through the gateway ({rate} records/s, {loss:?} after the loss)"
    );
    let c1 = cluster()?;
    let gw = InProcess::start(&c1).await?;
    let victim = victim_of(&gw.handle.metadata());
    let (client, v) = (gw.client.clone(), value.clone());
    let (gw_n, gw_ok) = under_loss(&c1, victim, rate, batch, warm, loss, move |first| {
        let (mut client, v) = (client.clone(), v.clone());
        async move {
            let records = (first..first + batch).map(|i| unkeyed(i, &v)).collect();
            let t0 = Instant::now();
            let resp = client
                .produce(pb::ProduceRequest { records })
                .await?
                .into_inner();
            // Per batch: every record counts with the batch's time, a conservative bound.
            let took = t0.elapsed();
            Ok(resp
                .results
                .iter()
                .map(|r| {
                    (
                        took,
                        matches!(r.outcome, Some(pb::record_result::Outcome::Kafka(_))),
                    )
                })
                .collect())
        }
    })
    .await?;
    gw.stop().await?;
    drop(c1);

    eprintln!("bench: P3 broker loss through a plain rdkafka producer");
    let c2 = cluster()?;
    let md = MetadataClient::new(
        vec![c2
            .bootstrap_servers()
            .split(',')
            .next()
            .unwrap_or_default()
            .to_string()],
        "ballast-bench",
        Duration::from_secs(2),
    )
    .fetch()
    .await?;
    let plain = plain_producer(c2.bootstrap_servers(), WRITE_TIMEOUT)?;
    let (p, v) = (plain.clone(), value.clone());
    let (plain_n, plain_ok) = under_loss(&c2, victim_of(&md), rate, batch, warm, loss, move |_| {
        let (p, v) = (p.clone(), v.clone());
        async move {
            let sends = (0..batch).map(|_| {
                let p = p.clone();
                let v = v.clone();
                async move {
                    let t0 = Instant::now();
                    let r = p
                        .send(
                            FutureRecord::<(), [u8]>::to(TOPIC).payload(v.as_slice()),
                            Duration::from_secs(0),
                        )
                        .await;
                    (t0.elapsed(), r.is_ok())
                }
            });
            Ok(join_all(sends).await)
        }
    })
    .await?;
    drop(plain);
    drop(c2);
    Ok(BrokerLossFigures {
        victim_broker: victim,
        offered_records_per_sec: rate,
        deadline_ms: (WRITE_TIMEOUT + Duration::from_millis(200)).as_millis() as u64,
        gateway_records: gw_n,
        gateway_within_deadline: gw_ok,
        gateway_share: gw_ok as f64 / gw_n.max(1) as f64,
        plain_records: plain_n,
        plain_within_deadline: plain_ok,
        plain_share: plain_ok as f64 / plain_n.max(1) as f64,
    })
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LocalityFigures {
    pub records: usize,
    pub gateway_local_bytes: u64,
    pub gateway_cross_az_bytes: u64,
    pub gateway_local_share: f64,
    pub plain_local_share: f64,
    /// The share of partitions whose leader is in the zone: what placement that ignores
    /// zones gets on average.
    pub local_leader_share: f64,
}

/// P7.
pub async fn locality(args: &BenchArgs) -> anyhow::Result<LocalityFigures> {
    let records = if args.quick { 5_000 } else { 50_000 };
    let value = vec![b'l'; 1024];
    eprintln!("bench: P7 az-local bytes, {records} unkeyed records from a gateway in {RACK}");
    let c = cluster()?;
    let gw = InProcess::start(&c).await?;
    let metrics = gw.handle.producer();
    let (l0, x0) = (
        metrics.metrics().bytes_local.get(),
        metrics.metrics().bytes_cross_az.get(),
    );
    let sent = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (mut client, sent, value) = (gw.client.clone(), sent.clone(), value.clone());
            tokio::spawn(async move {
                loop {
                    let first = sent.fetch_add(100, Ordering::Relaxed);
                    if first >= records {
                        return anyhow::Ok(());
                    }
                    let batch = (first..(first + 100).min(records))
                        .map(|i| unkeyed(i, &value))
                        .collect();
                    client
                        .produce(pb::ProduceRequest { records: batch })
                        .await?;
                }
            })
        })
        .collect();
    for w in join_all(workers).await {
        w??;
    }
    let local = metrics.metrics().bytes_local.get() - l0;
    let cross = metrics.metrics().bytes_cross_az.get() - x0;
    let md = gw.handle.metadata();
    gw.stop().await?;

    // The baseline: a plain producer's unkeyed placement, classified by leader zone.
    let rack_of_partition: HashMap<i32, Option<String>> = md
        .topic(TOPIC)
        .context("bench topic")?
        .partitions
        .iter()
        .map(|p| {
            (
                p.partition,
                md.broker(p.leader).and_then(|b| b.rack.clone()),
            )
        })
        .collect();
    let local_leaders = rack_of_partition
        .values()
        .filter(|r| r.as_deref() == Some(RACK))
        .count();
    // Placement is the point here, not deadlines.
    let plain = plain_producer(c.bootstrap_servers(), Duration::from_secs(30))?;
    let mut plain_local = 0usize;
    let mut done = 0;
    while done < records {
        let n = (records - done).min(1000);
        done += n;
        let sends = (0..n).map(|_| {
            plain.send(
                FutureRecord::<(), [u8]>::to(TOPIC).payload(value.as_slice()),
                Duration::from_secs(0),
            )
        });
        for r in join_all(sends).await {
            let partition = r
                .map_err(|(e, _)| anyhow::anyhow!("plain producer: {e}"))?
                .partition;
            if rack_of_partition.get(&partition).and_then(|r| r.as_deref()) == Some(RACK) {
                plain_local += 1;
            }
        }
    }
    Ok(LocalityFigures {
        records,
        gateway_local_bytes: local,
        gateway_cross_az_bytes: cross,
        gateway_local_share: local as f64 / (local + cross).max(1) as f64,
        plain_local_share: plain_local as f64 / records as f64,
        local_leader_share: local_leaders as f64 / rack_of_partition.len().max(1) as f64,
    })
}

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
    let (endpoint, _moto) = super::failover::sqs_endpoint(args).await?;
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
             limits:\n  inflight_bytes: {budget}\n  record_deadline: 2s\n\
             failover:\n  backend: sqs\n  concurrent_batches: 1\n  timeout: 5s\n  sqs:\n    queue: {name}\n    dlq: {name}-dlq\n    endpoint: {endpoint}\n    region: us-east-1\n    access_key_id: bench\n    secret_access_key: bench\n    create_queues: true\n\
             telemetry:\n  log_level: error\n",
            bootstrap = c.bootstrap_servers()
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
