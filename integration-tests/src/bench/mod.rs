//! `ballast-dev bench`: measures Ballast against a baseline in the same run, on the same
//! dependencies, and reports ratios.
//!
//! P4 (dedup) lives in `dedup.rs`, P5 (failover) in `failover.rs`, and P3 (broker loss),
//! P6 (overload memory) and P7 (zone locality) in `resilience.rs`.
//!
//! P8 (CPU per MB/s, the gateway process against a bare producer process) in `cpu.rs`.
//!
//! P1 (gateway): throughput of 1 KiB records in batches of 100 through the gateway, over
//! gRPC, divided by a direct rdkafka producer (acks=all, idempotence); and the p99 batch
//! latency each adds at half of the gateway's peak load.

pub mod cpu;
mod dedup;
mod failover;
mod resilience;
pub mod sink;

use anyhow::Context;
use ballast_gateway::{Gateway, GatewayConfig};
use ballast_kafka::{EmbeddedCluster, EmbeddedClusterConfig, TopicSpec};
use ballast_proto::ingest::v1 as pb;
use ballast_proto::ingest::v1::ingest_client::IngestClient;
use futures::future::join_all;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const RECORD_BYTES: usize = 1024;
const BATCH: usize = 100;
const TOPIC: &str = "bench";

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Fewer records and shorter phases (a smoke run, not a measurement).
    #[arg(long)]
    pub quick: bool,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Records per throughput phase (default 200000, quick 20000).
    #[arg(long)]
    pub records: Option<usize>,
    /// Concurrent batches in flight during throughput phases.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// gRPC connections the load is spread over.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Which figures to measure.
    #[arg(long, value_enum, default_value = "all")]
    pub suite: Suite,
    /// An SQS endpoint for the failover figure (P5); default: a moto_server started here.
    #[arg(long)]
    pub sqs_endpoint: Option<String>,
    /// The PostgreSQL used by the failover figure (P5).
    #[arg(
        long,
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        env = "BALLAST_BENCH_DATABASE_URL"
    )]
    pub database_url: String,
    /// The Redis used by the dedup figure (P4).
    #[arg(
        long,
        default_value = "redis://127.0.0.1:6379",
        env = "BALLAST_BENCH_REDIS"
    )]
    pub redis_url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    All,
    /// P1
    Gateway,
    /// P3
    BrokerLoss,
    /// P4
    Dedup,
    /// P5
    Failover,
    /// P6
    Overload,
    /// P7
    Locality,
    /// P8
    Cpu,
}

/// The middle value of a figure's rounds (the upper one of an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Round-robin over several gRPC connections.
#[derive(Clone)]
struct ClientPool {
    clients: Arc<Vec<IngestClient<tonic::transport::Channel>>>,
    next: Arc<AtomicUsize>,
}

impl ClientPool {
    fn new(clients: Vec<IngestClient<tonic::transport::Channel>>) -> Self {
        Self {
            clients: Arc::new(clients),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn next(&self) -> IngestClient<tonic::transport::Channel> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        self.clients[i].clone()
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct GatewayFigures {
    pub records: usize,
    pub record_bytes: usize,
    pub batch: usize,
    pub direct_records_per_sec: f64,
    pub gateway_records_per_sec: f64,
    /// gateway ÷ direct; the target is ≥ 0.8.
    pub throughput_ratio: f64,
    /// The gateway's write path called in process, without gRPC: where the overhead lies.
    pub inprocess_records_per_sec: f64,
    pub half_load_records_per_sec: f64,
    pub direct_p99_ms: f64,
    pub gateway_p99_ms: f64,
    /// gateway p99 − direct p99 at half load; the target is ≤ 1 ms.
    pub added_p99_ms: f64,
    /// p99 of the same batches at the same rate through `ballast-dev bench-sink` (a process
    /// that answers over gRPC without Kafka): the gRPC hop alone.
    pub sink_p99_ms: f64,
    /// A second gateway on the same cluster, serving the clients over TLS (1.3, rustls).
    pub tls_records_per_sec: f64,
    /// TLS ÷ plaintext gateway throughput, in the same run.
    pub tls_ratio: f64,
}

fn payload() -> Vec<u8> {
    (0..RECORD_BYTES).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Runs `workers` loops that each claim batch numbers until `batches` are done.
async fn closed_loop<F, Fut>(batches: usize, workers: usize, f: F) -> anyhow::Result<Duration>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let next = next.clone();
            let f = f.clone();
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < batches {
                    f().await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in join_all(tasks).await {
        t??;
    }
    Ok(start.elapsed())
}

/// Sends one batch every `1/rate` for `duration` and returns each batch's latency,
/// measured from its scheduled start, so queueing delay counts.
async fn open_loop<F, Fut>(
    batches_per_sec: f64,
    duration: Duration,
    f: F,
) -> anyhow::Result<Vec<f64>>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let period = Duration::from_secs_f64(1.0 / batches_per_sec.max(1.0));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + duration;
    let mut tasks = Vec::new();
    while Instant::now() < end {
        let scheduled = tick.tick().await;
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            f().await?;
            anyhow::Ok(scheduled.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in join_all(tasks).await {
        out.push(t??);
    }
    Ok(out)
}

fn p99(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1]
}

fn direct_producer(bootstrap: &str) -> anyhow::Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "10000")
        .create()?)
}

async fn direct_batch(p: FutureProducer, value: Arc<Vec<u8>>) -> anyhow::Result<()> {
    let sends = (0..BATCH).map(|_| {
        p.send_result(FutureRecord::<(), [u8]>::to(TOPIC).payload(value.as_slice()))
            .map_err(|(e, _)| anyhow::anyhow!("enqueue: {e}"))
    });
    let futures = sends.collect::<Result<Vec<_>, _>>()?;
    for r in join_all(futures).await {
        r.context("delivery canceled")?
            .map_err(|(e, _)| anyhow::anyhow!("delivery: {e}"))?;
    }
    Ok(())
}

async fn gateway_batch(
    mut client: IngestClient<tonic::transport::Channel>,
    value: Arc<Vec<u8>>,
) -> anyhow::Result<()> {
    let records = (0..BATCH)
        .map(|_| pb::Record {
            topic: TOPIC.into(),
            value: value.as_ref().clone().into(),
            ..Default::default()
        })
        .collect();
    let resp = client
        .produce(pb::ProduceRequest { records })
        .await?
        .into_inner();
    let acked = resp
        .results
        .iter()
        .filter(|r| matches!(r.outcome, Some(pb::record_result::Outcome::Kafka(_))))
        .count();
    anyhow::ensure!(
        acked == BATCH,
        "only {acked} of {BATCH} records acknowledged"
    );
    Ok(())
}

async fn inprocess_batch(
    writer: Arc<ballast_produce::Writer>,
    value: Arc<Vec<u8>>,
) -> anyhow::Result<()> {
    let records = (0..BATCH)
        .map(|_| ballast_produce::Record {
            topic: TOPIC.into(),
            value: value.as_ref().clone().into(),
            ..Default::default()
        })
        .collect();
    let produced = writer.write_batch(records).await;
    let acked = produced.iter().filter(|p| p.label() == "kafka").count();
    anyhow::ensure!(
        acked == BATCH,
        "only {acked} of {BATCH} records acknowledged"
    );
    Ok(())
}

/// A throwaway CA in `dir` and a server certificate for 127.0.0.1, for the TLS rows.
fn bench_pki(
    dir: &std::path::Path,
) -> anyhow::Result<(
    ballast_security::pki::Authority,
    ballast_security::pki::Issued,
)> {
    let ca = ballast_security::pki::Authority::create(dir, "bench CA")?;
    let server = ca.issue(
        "server",
        "bench",
        &[ballast_security::pki::Name::Ip(std::net::IpAddr::from([
            127, 0, 0, 1,
        ]))],
    )?;
    Ok((ca, server))
}

/// The bench gateways' Kafka settings: the cluster, and a generous write timeout.
fn bench_gateway_config(bootstrap: &str) -> GatewayConfig {
    let mut cfg = GatewayConfig {
        rack: Some("az-a".into()),
        ..GatewayConfig::default()
    };
    cfg.kafka.bootstrap_servers = bootstrap.to_string();
    cfg.kafka.write_timeout = Duration::from_secs(10);
    cfg.limits.record_deadline = Duration::from_secs(30);
    cfg
}

/// P1: gateway throughput and added p99 against a direct producer.
pub async fn gateway_suite(args: &BenchArgs) -> anyhow::Result<GatewayFigures> {
    let records = args
        .records
        .unwrap_or(if args.quick { 20_000 } else { 200_000 });
    let batches = records.div_ceil(BATCH).max(1);
    let workers = args.concurrency.max(1);
    let phase = if args.quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(6)
    };
    let cluster = EmbeddedCluster::start(EmbeddedClusterConfig {
        topics: vec![TopicSpec {
            name: TOPIC.into(),
            partitions: 6,
            replication_factor: 3,
        }],
        ..Default::default()
    })?;
    let bootstrap = cluster.bootstrap_servers().to_string();
    let value = Arc::new(payload());

    let cfg = bench_gateway_config(&bootstrap);
    let gateway = Gateway::new(cfg).await?;
    gateway.handle().refresh_metadata().await?;
    let mut local = gateway.spawn_local().await?;
    let (gateway_handle, addr) = (local.handle.clone(), local.addr);
    // Several connections, as many clients would have: one HTTP/2 connection is served
    // by one task on each side.
    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        clients.push(IngestClient::connect(format!("http://{addr}")).await?);
    }
    let pool = ClientPool::new(clients);
    let direct = direct_producer(&bootstrap)?;

    // The same gateway with TLS on the client hop, certificates from a throwaway CA.
    let pki_dir = std::env::temp_dir().join(format!("ballast-bench-tls-{}", std::process::id()));
    let (ca, server) = bench_pki(&pki_dir)?;
    let mut tls_cfg = bench_gateway_config(&bootstrap);
    tls_cfg.tls.cert_file = Some(server.cert_file);
    tls_cfg.tls.key_file = Some(server.key_file);
    let tls_gateway = Gateway::new(tls_cfg).await?;
    tls_gateway.handle().refresh_metadata().await?;
    let mut tls_local = tls_gateway.spawn_local().await?;
    let security = ballast_security::ClientSecurity {
        ca_file: Some(ca.ca_file.clone()),
        ..Default::default()
    };
    let mut tls_clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        let end = std::time::Instant::now() + Duration::from_secs(15);
        let channel = loop {
            match security
                .endpoint(&format!("http://{}", tls_local.addr))?
                .connect()
                .await
            {
                Ok(c) => break c,
                Err(e) if std::time::Instant::now() > end => {
                    anyhow::bail!("the tls gateway did not serve: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        tls_clients.push(IngestClient::new(channel));
    }
    let tls_pool = ClientPool::new(tls_clients);

    eprintln!("bench: warming up");
    {
        let (d, v) = (direct.clone(), value.clone());
        closed_loop(workers * 4, workers, move || {
            direct_batch(d.clone(), v.clone())
        })
        .await?;
        let (c, v) = (pool.clone(), value.clone());
        closed_loop(workers * 4, workers, move || {
            gateway_batch(c.next(), v.clone())
        })
        .await?;
        let (c, v) = (tls_pool.clone(), value.clone());
        closed_loop(workers * 4, workers, move || {
            gateway_batch(c.next(), v.clone())
        })
        .await?;
    }
    eprintln!("bench: direct producer, {records} records");
    let (d, v) = (direct.clone(), value.clone());
    let direct_time =
        closed_loop(batches, workers, move || direct_batch(d.clone(), v.clone())).await?;
    eprintln!("bench: gateway write path in process (no grpc), {records} records");
    let prod = gateway_handle.writer();
    let v = value.clone();
    let inproc_time = closed_loop(batches, workers, move || {
        inprocess_batch(prod.clone(), v.clone())
    })
    .await?;
    eprintln!("bench: gateway, {records} records");
    let (c, v) = (pool.clone(), value.clone());
    let gw_time = closed_loop(batches, workers, move || gateway_batch(c.next(), v.clone())).await?;
    eprintln!("bench: gateway over tls, {records} records");
    let (c, v) = (tls_pool.clone(), value.clone());
    let tls_time =
        closed_loop(batches, workers, move || gateway_batch(c.next(), v.clone())).await?;
    tls_local.stop().await?;
    let _ = std::fs::remove_dir_all(&pki_dir);
    let n = (batches * BATCH) as f64;
    let tls_rps = n / tls_time.as_secs_f64();
    let direct_rps = n / direct_time.as_secs_f64();
    let gw_rps = n / gw_time.as_secs_f64();
    let inproc_rps = n / inproc_time.as_secs_f64();

    let half = 0.5 * gw_rps.min(direct_rps);
    let bps = half / BATCH as f64;
    eprintln!("bench: half load ({half:.0} records/s), {phase:?} each");
    let (d, v) = (direct.clone(), value.clone());
    let direct_lat = open_loop(bps, phase, move || direct_batch(d.clone(), v.clone())).await?;
    let (c, v) = (pool.clone(), value.clone());
    let gw_lat = open_loop(bps, phase, move || gateway_batch(c.next(), v.clone())).await?;
    let (dp, gp) = (p99(direct_lat), p99(gw_lat));
    eprintln!("bench: the grpc hop alone (a sink process without kafka) at {half:.0} records/s");
    let sink = resilience::GatewayProcess::start_sink(
        &format!("ballast-bench-p2-sink-{}", std::process::id()),
        None,
    )?;
    let sink_pool = sink.pool(args.connections, None).await?;
    let (c, v) = (sink_pool.clone(), value.clone());
    closed_loop(workers * 4, workers, move || {
        gateway_batch(c.next(), v.clone())
    })
    .await?;
    let (c, v) = (sink_pool, value.clone());
    let sink_p99 = p99(open_loop(bps, phase, move || gateway_batch(c.next(), v.clone())).await?);
    drop(sink);

    local.stop().await?;
    Ok(GatewayFigures {
        records: batches * BATCH,
        record_bytes: RECORD_BYTES,
        batch: BATCH,
        direct_records_per_sec: direct_rps,
        gateway_records_per_sec: gw_rps,
        throughput_ratio: gw_rps / direct_rps,
        inprocess_records_per_sec: inproc_rps,
        half_load_records_per_sec: half,
        direct_p99_ms: dp,
        gateway_p99_ms: gp,
        added_p99_ms: gp - dp,
        sink_p99_ms: sink_p99,
        tls_records_per_sec: tls_rps,
        tls_ratio: tls_rps / gw_rps,
    })
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let mut json = serde_json::json!({ "command": std::env::args().collect::<Vec<_>>().join(" ") });
    let mut rows = Vec::new();
    if matches!(args.suite, Suite::All | Suite::Gateway) {
        let g = gateway_suite(&args).await?;
        rows.push(format!(
            "P1      throughput, records/s (1 KiB, batch 100)  {:>10.0}  {:>10.0}  ratio {:.2} (target >= 0.80)",
            g.gateway_records_per_sec, g.direct_records_per_sec, g.throughput_ratio
        ));
        rows.push(format!(
            "P1      same, gateway write path without grpc     {:>10.0}  {:>10.0}  ratio {:.2} (diagnostic)",
            g.inprocess_records_per_sec,
            g.direct_records_per_sec,
            g.inprocess_records_per_sec / g.direct_records_per_sec
        ));
        rows.push(format!(
            "P1      same, gateway with tls on the client hop  {:>10.0}  {:>10.0}  ratio {:.2} (baseline: the plaintext gateway)",
            g.tls_records_per_sec, g.gateway_records_per_sec, g.tls_ratio
        ));
        rows.push(format!(
            "P1      p99 batch latency at {:.0} records/s, ms  {:>10.2}  {:>10.2}  added {:+.2} ms (target <= 1.00)",
            g.half_load_records_per_sec, g.gateway_p99_ms, g.direct_p99_ms, g.added_p99_ms
        ));
        rows.push(format!(
            "P1      same, grpc sink (no kafka), ms             {:>10.2}           -  the grpc hop alone at that rate (diagnostic)",
            g.sink_p99_ms
        ));
        json["p1_gateway"] = serde_json::to_value(&g)?;
    }
    if matches!(args.suite, Suite::All | Suite::BrokerLoss) {
        let b = resilience::broker_loss(&args).await?;
        for (mix, f) in [("unkeyed", &b.unkeyed), ("half keyed", &b.half_keyed)] {
            rows.push(format!(
                "P3      acked within {} ms, broker {} lost, {mix:<10} {:>9.1}%  {:>9.1}%  {} vs {} records (plain rdkafka producer as baseline)",
                f.deadline_ms,
                f.victim_broker,
                f.gateway_share * 100.0,
                f.plain_share * 100.0,
                f.gateway_records,
                f.plain_records
            ));
        }
        json["p3_broker_loss"] = serde_json::to_value(&b)?;
    }
    if matches!(args.suite, Suite::All | Suite::Dedup) {
        let d = dedup::suite(&args).await?;
        rows.push(format!(
            "P4      dedup claims/s via grpc (batch 100)       {:>10.0}  {:>10.0}  ratio {:.2} (target >= 0.50)",
            d.service_claims_per_sec, d.raw_setnx_per_sec, d.service_ratio
        ));
        rows.push(format!(
            "P4      same, store only (pipelined SET NX PX)    {:>10.0}  {:>10.0}  ratio {:.2} (diagnostic)",
            d.store_claims_per_sec, d.raw_setnx_per_sec, d.store_ratio
        ));
        json["p4_dedup"] = serde_json::to_value(&d)?;
    }
    if matches!(args.suite, Suite::All | Suite::Failover) {
        let f = failover::suite(&args).await?;
        for b in &f.backends {
            rows.push(format!(
                "P5      retry drain, records/s ({:<10} -> kafka) {:>10.0}  {:>10.0}  ratio {:.2} (target >= 0.80); pipeline_depth 1: {:.0}, ratio {:.2}",
                b.backend, b.worker_drain_per_sec, b.raw_read_delete_per_sec, b.drain_ratio,
                b.unpipelined_drain_per_sec, b.unpipelined_ratio
            ));
        }
        for b in &f.backends {
            rows.push(format!(
                "P5      enqueue, records/s ({:<10}, batches of 100) {:>7.0}           -  (diagnostic: a gateway's failover writes)",
                b.backend, b.enqueue_per_sec
            ));
        }
        if f.postgres_not_measured.is_some() {
            rows.push(
                "P5      retry drain on postgresql                 not measured (reason on stderr)"
                    .into(),
            );
        }
        rows.push(match f.sqs_requests_per_1000 {
            // No baseline column: an unbatched gateway makes one call per record by
            // construction, so the figure is checked against its bound instead.
            Some(v) => format!(
                "P5      sqs requests per 1000 records in outage   {v:>10.0}  {:>10}  (at most 100: batches of 10)",
                "-"
            ),
            None => "P5      sqs requests per 1000 records in outage   not measured (reason on stderr)".into(),
        });
        json["p5_failover"] = serde_json::to_value(&f)?;
    }
    if matches!(args.suite, Suite::All | Suite::Overload) {
        let o = resilience::overload(&args).await?;
        rows.push(format!(
            "P6      gateway rss, MiB, 10x overload ({:.0}/s)   {:>10.1}  {:>10.1}  growth {:.2} of the {:.0} MiB in-flight budget (baseline: steady load)",
            o.offered_records_per_sec,
            o.peak_rss_mib,
            o.baseline_rss_mib,
            o.growth_over_budget,
            o.inflight_budget_mib
        ));
        let mut answered: Vec<_> = o.answered.iter().collect();
        answered.sort();
        eprintln!("bench: P6 answers under overload: {answered:?}");
        let l = &o.large;
        rows.push(format!(
            "P6      rss, MiB, 1 MiB records, {} connections   {:>10.1}  {:>10.1}  growth {:.2} of budget {:.0} + pending {:.0} + request buffers {:.0} MiB",
            l.connections,
            l.peak_rss_mib,
            l.baseline_rss_mib,
            l.growth_over_bound,
            l.inflight_budget_mib,
            l.pending_bytes_mib,
            l.request_buffers_mib
        ));
        let mut answered: Vec<_> = l.answered.iter().collect();
        answered.sort();
        eprintln!(
            "bench: P6 large records: {} offered; answers: {answered:?}",
            l.records_offered
        );
        json["p6_overload"] = serde_json::to_value(&o)?;
    }
    if matches!(args.suite, Suite::All | Suite::Locality) {
        let l = resilience::locality(&args).await?;
        rows.push(format!(
            "P7      unkeyed bytes to az-local leaders          {:>9.1}%  {:>9.1}%  plain rdkafka producer as baseline ({:.0}% of leaders are local)",
            l.gateway_local_share * 100.0,
            l.plain_local_share * 100.0,
            l.local_leader_share * 100.0
        ));
        json["p7_locality"] = serde_json::to_value(&l)?;
    }
    if matches!(args.suite, Suite::All | Suite::Cpu) {
        let c = cpu::cpu_per_mb(&args).await?;
        for r in &c.rows {
            rows.push(format!(
                "P8      millicores per MB/s, {:>5} B records{}  {:>10.2}  {:>10.2}  ratio {:.2} (target <= 1.50 at 1 KiB; {:.0} vs {:.0} MB/s)",
                r.record_bytes,
                if r.tls { ", tls" } else { "     " },
                r.gateway_millicores_per_mb_per_sec,
                r.producer_millicores_per_mb_per_sec,
                r.ratio,
                r.gateway_mb_per_sec,
                r.producer_mb_per_sec
            ));
            rows.push(format!(
                "P8      same, grpc sink (no kafka){}                {:>10.2}  {:>10.2}  floor {:.2} ((sink + producer) / producer: the lowest ratio over grpc)",
                if r.tls { ", tls" } else { "     " },
                r.sink_millicores_per_mb_per_sec,
                r.producer_millicores_per_mb_per_sec,
                r.floor_ratio,
            ));
        }
        if let Some(r) = &c.pinned {
            rows.push(format!(
                "P1      same, each process alone on core 1        {:>10.0}  {:>10.0}  ratio {:.2} (core busy: gateway {:.2}, producer {:.2}; client and cluster on core 0)",
                r.gateway_records_per_sec,
                r.producer_records_per_sec,
                r.ratio,
                r.gateway_core_busy,
                r.producer_core_busy
            ));
        }
        for r in &c.idle {
            rows.push(format!(
                "P8      idle gateway, {:>3} topics ({:>4} partitions), {:>3} in use: {:>6.1} millicores, {:>9.0} metadata bytes/s",
                r.topics, r.partitions, r.topics_in_use, r.idle_millicores, r.metadata_bytes_per_sec
            ));
        }
        json["p8_cpu"] = serde_json::to_value(&c)?;
    }
    println!("figure  measure                                  ballast      baseline     result");
    for r in rows {
        println!("{r}");
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench: figures written to {}", path.display());
    }
    Ok(())
}
