//! `ballast-dev bench`: measures Ballast against a baseline in the same run, on the same
//! dependencies, and reports ratios.
//!
//! P4 (dedup) lives in `dedup.rs`, P5 (failover) in `failover.rs`, and P3 (broker loss),
//! P6 (overload memory) and P7 (zone locality) in `resilience/`.
//!
//! P8 (CPU per MB/s, the gateway process against a bare producer process) in `cpu.rs`.
//! P9 (the price of ordered failover) in `resilience/divert.rs`.
//!
//! P1 (gateway, in `gateway.rs`): throughput of 1 KiB records in batches of 100 through the
//! gateway, over gRPC, divided by a direct rdkafka producer (acks=all, idempotence); and
//! the p99 batch latency each adds at half of the gateway's peak load.
//!
//! This file holds the arguments, the load loops and statistics the suites share, and
//! `run`, which runs the chosen suites and writes the table and the JSON.

pub mod cpu;
mod dedup;
mod failover;
mod gateway;
mod resilience;
pub mod sink;

use gateway::*;
pub use gateway::{gateway_suite, GatewayFigures};

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
    /// P9
    Divert,
}

/// The middle value of a figure's rounds (the upper one of an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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
        let sk = resilience::skew(&args).await?;
        for layout in &sk.layouts {
            let (on, off) = (&layout.spillover, &layout.local_only);
            rows.push(format!(
                "P7      skew {}/6 local: spread (max/mean)          {:>10.2}  {:>10.2}  spillover vs local only; per partition {:?} vs {:?}",
                layout.local_partitions, on.spread, off.spread, on.per_partition, off.per_partition
            ));
            rows.push(format!(
                "P7      skew {}/6 local: az-local share            {:>9.1}%  {:>9.1}%  at most {:.0}% with an even spread",
                layout.local_partitions,
                on.local_share * 100.0,
                off.local_share * 100.0,
                layout.best_local_share * 100.0
            ));
        }
        json["p7_skew"] = serde_json::to_value(&sk)?;
    }
    if matches!(args.suite, Suite::All | Suite::Divert) {
        let d = resilience::divert(&args).await?;
        rows.push(format!(
            "P9      ms until direct after recovery, backlog {:<6} {:>10.0}  {:>10.0}  ordering: partition vs none (the drain of the backlog)",
            d.backlog, d.ordered.diverted_ms, d.unordered.diverted_ms
        ));
        rows.push(format!(
            "P9      one key's writes/s, {:.0} s after recovery       {:>10.1}  {:>10.1}  ratio {:.2} (sequential writes; none as baseline)",
            d.window_secs,
            d.ordered.writes_per_sec_after_recovery,
            d.unordered.writes_per_sec_after_recovery,
            d.ordered.writes_per_sec_after_recovery / d.unordered.writes_per_sec_after_recovery
        ));
        rows.push(format!(
            "P9      same, during the outage (to the queue)     {:>10.1}  {:>10.1}  ratio {:.2}",
            d.ordered.writes_per_sec_during_outage,
            d.unordered.writes_per_sec_during_outage,
            d.ordered.writes_per_sec_during_outage / d.unordered.writes_per_sec_during_outage
        ));
        match &d.fifo {
            Ok(f) => rows.push(format!(
                "P9      same on SQS FIFO (moto), backlog {:<6}   {:>10.0}  {:>10.0}  ordering: partition on FIFO vs none (SQLite, above); {:.1} writes/s after recovery",
                f.backlog,
                f.ordered.diverted_ms,
                d.unordered.diverted_ms,
                f.ordered.writes_per_sec_after_recovery
            )),
            Err(e) => rows.push(format!("P9      SQS FIFO: not measured: {e}")),
        }
        json["p9_divert"] = serde_json::to_value(&d)?;
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
