//! `ballast demo`: the dev stack under load while a spot-interruption script plays, then an
//! audit of every acknowledged record against what Kafka actually holds.
//!
//! Phases: steady load; a draining notice for one broker; that broker dies; a partition
//! loses its leader; the whole cluster goes out; recovery. Records are mixed: unkeyed,
//! STRICT keyed and PREFERRED keyed. Records Kafka cannot take go to the failover queue
//! (SQLite) and the retry workers put them back after recovery. The exit code is non-zero
//! if any acknowledged record is missing from Kafka.

use crate::dev::{DevOptions, DevStack};
use ballast_proto::common::v1::Code;
use ballast_proto::ingest::v1 as pb;
use ballast_proto::ingest::v1::ingest_client::IngestClient;
use ballast_proto::retry::v1 as rpb;
use ballast_proto::retry::v1::retry_admin_client::RetryAdminClient;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOPIC: &str = "events";
const PARTITIONS: i32 = 6;
const BATCH: usize = 50;

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Records to send over the whole script.
    #[arg(long)]
    pub records: Option<usize>,
    /// A short run (under a minute).
    #[arg(long)]
    pub quick: bool,
}

#[derive(Debug, Default)]
struct PhaseStats {
    sent: usize,
    latencies_ms: Vec<f64>,
}

#[derive(Debug, Default)]
struct Audit {
    sent: usize,
    acked_kafka: BTreeMap<String, (i32, i64)>,
    acked_failover: BTreeMap<String, String>,
    rejected: BTreeMap<String, usize>,
    phases: Vec<(String, PhaseStats)>,
}

fn make_record(n: usize) -> pb::Record {
    let (key, policy) = match n % 10 {
        0..=3 => (Some(format!("user-{}", n % 500)), pb::KeyPolicy::Strict),
        4 => (Some(format!("user-{}", n % 500)), pb::KeyPolicy::Preferred),
        _ => (None, pb::KeyPolicy::Strict),
    };
    pb::Record {
        topic: TOPIC.into(),
        key: key.map(String::into_bytes),
        value: format!("demo record {n}").into_bytes(),
        message_id: format!("demo-{n:08}"),
        key_policy: policy as i32,
        ..Default::default()
    }
}

/// Sends batches at `rate` records/s until `stop` is set.
async fn load(
    mut client: IngestClient<tonic::transport::Channel>,
    audit: Arc<Mutex<Audit>>,
    next: Arc<std::sync::atomic::AtomicUsize>,
    total: usize,
    rate: f64,
) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(BATCH as f64 / rate));
    loop {
        tick.tick().await;
        let start = next.fetch_add(BATCH, Ordering::SeqCst);
        if start >= total {
            return Ok(());
        }
        let end = (start + BATCH).min(total);
        let records: Vec<_> = (start..end).map(make_record).collect();
        let t0 = Instant::now();
        let resp = client
            .produce(pb::ProduceRequest { records })
            .await?
            .into_inner();
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        let mut a = audit.lock().expect("audit lock");
        a.sent += resp.results.len();
        if let Some((_, phase)) = a.phases.last_mut() {
            phase.sent += resp.results.len();
            phase.latencies_ms.push(ms);
        }
        for r in resp.results {
            match r.outcome {
                Some(pb::record_result::Outcome::Kafka(k)) => {
                    a.acked_kafka.insert(r.message_id, (k.partition, k.offset));
                }
                Some(pb::record_result::Outcome::Failover(f)) => {
                    a.acked_failover.insert(r.message_id, f.entry_id);
                }
                Some(pb::record_result::Outcome::Error(e)) => {
                    let code = Code::try_from(e.code)
                        .map(|c| c.as_str_name().trim_start_matches("CODE_").to_lowercase())
                        .unwrap_or_else(|_| "unknown".into());
                    *a.rejected.entry(code).or_insert(0) += 1;
                }
                None => *a.rejected.entry("empty".into()).or_insert(0) += 1,
            }
        }
    }
}

fn percentile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1]
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let phase_len = if args.quick {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(8)
    };
    let phases = 6;
    let total = args
        .records
        .unwrap_or(if args.quick { 9_000 } else { 24_000 });
    let rate = total as f64 / (phase_len.as_secs_f64() * phases as f64);

    eprintln!("demo: starting the dev stack (mock kafka: 3 brokers in az-a/az-b/az-c)");
    let stack = DevStack::start(DevOptions {
        topics: vec![ballast_kafka::TopicSpec {
            name: TOPIC.into(),
            partitions: PARTITIONS,
            replication_factor: 3,
        }],
        ..DevOptions::default()
    })
    .await?;
    let client = IngestClient::connect(format!("http://{}", stack.gateway_addr)).await?;
    let audit = Arc::new(Mutex::new(Audit::default()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let begin_phase = |name: &str| {
        eprintln!("demo: phase {name}");
        audit
            .lock()
            .expect("audit lock")
            .phases
            .push((name.to_string(), PhaseStats::default()));
    };
    begin_phase("steady");
    let loader = tokio::spawn(load(client, audit.clone(), next.clone(), total, rate));

    let md = stack.gateway.metadata();
    let leader_of = |p: i32| {
        md.topic(TOPIC)
            .and_then(|t| t.partitions.iter().find(|x| x.partition == p))
            .map(|x| x.leader)
    };
    let victim = 2;
    let orphan = (0..PARTITIONS)
        .find(|p| leader_of(*p).is_some_and(|l| l != victim))
        .unwrap_or(0);
    let orphan_leader = leader_of(orphan).unwrap_or(1);

    tokio::time::sleep(phase_len).await;
    begin_phase("draining notice");
    stack.gateway.set_draining_brokers(HashSet::from([victim]));
    tokio::time::sleep(phase_len).await;
    begin_phase("broker dies");
    stack.cluster.broker_down(victim).await?;
    tokio::time::sleep(phase_len).await;
    begin_phase("leaderless partition");
    stack.cluster.partition_leader(TOPIC, orphan, None).await?;
    tokio::time::sleep(phase_len).await;
    begin_phase("cluster outage");
    stack.cluster.broker_down(-1).await?;
    tokio::time::sleep(phase_len).await;
    begin_phase("recovery");
    stack.cluster.broker_up(-1).await?;
    stack
        .cluster
        .partition_leader(TOPIC, orphan, Some(orphan_leader))
        .await?;
    stack.gateway.set_draining_brokers(HashSet::new());
    loader.await??;

    if let Some(addr) = stack.retry_addr {
        eprintln!("demo: retry workers draining the failover queue back into kafka");
        let mut admin = RetryAdminClient::connect(format!("http://{addr}")).await?;
        let end = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let s = admin.stats(rpb::StatsRequest {}).await?.into_inner();
            if s.depth == 0 {
                break;
            }
            anyhow::ensure!(
                std::time::Instant::now() < end,
                "the failover queue still holds {} records after 120 s",
                s.depth
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    eprintln!("demo: reading everything back from kafka");
    let bootstrap = stack.cluster.bootstrap_servers().to_string();
    let landed = tokio::task::spawn_blocking(move || {
        ballast_kafka::read_topic(&bootstrap, TOPIC, None, Duration::from_secs(60))
    })
    .await??;
    stack.stop().await?;

    let a = audit.lock().expect("audit lock");
    let mut seen = HashSet::new();
    let mut duplicates = 0;
    for l in &landed {
        if let Some(id) = &l.message_id {
            if !seen.insert(id.clone()) {
                duplicates += 1;
            }
        }
    }
    let delivered_acked = a
        .acked_kafka
        .keys()
        .chain(a.acked_failover.keys())
        .filter(|id| seen.contains(*id))
        .count();
    let acked = a.acked_kafka.len() + a.acked_failover.len();
    let lost = acked - delivered_acked;
    let rejected: usize = a.rejected.values().sum();

    println!();
    println!("{:<34} {:>10}", "audit", "records");
    println!("{:<34} {:>10}", "sent", a.sent);
    println!("{:<34} {:>10}", "acked via kafka", a.acked_kafka.len());
    println!(
        "{:<34} {:>10}",
        "acked via failover",
        a.acked_failover.len()
    );
    println!("{:<34} {:>10}", "rejected (explicit, retryable)", rejected);
    for (code, n) in &a.rejected {
        println!("{:<34} {:>10}", format!("  {code}"), n);
    }
    println!("{:<34} {:>10}", "delivered to kafka (unique)", seen.len());
    println!("{:<34} {:>10}", "duplicates seen", duplicates);
    println!("{:<34} {:>10}", "lost (acked - delivered)", lost);
    println!();
    println!(
        "{:<22} {:>8} {:>14} {:>14}",
        "phase", "sent", "p50 batch ms", "p99 batch ms"
    );
    for (name, p) in &a.phases {
        println!(
            "{:<22} {:>8} {:>14.1} {:>14.1}",
            name,
            p.sent,
            percentile(&p.latencies_ms, 0.5),
            percentile(&p.latencies_ms, 0.99)
        );
    }
    anyhow::ensure!(
        a.sent == acked + rejected,
        "audit does not add up: sent {} != acked {acked} + rejected {rejected}",
        a.sent
    );
    if lost > 0 {
        let missing: Vec<String> = a
            .acked_kafka
            .iter()
            .map(|(id, (p, o))| (id, format!("kafka {p}/{o}")))
            .chain(
                a.acked_failover
                    .iter()
                    .map(|(id, e)| (id, format!("failover entry {e}"))),
            )
            .filter(|(id, _)| !seen.contains(*id))
            .take(10)
            .map(|(id, how)| format!("{id} ({how})"))
            .collect();
        anyhow::bail!(
            "{lost} acknowledged record(s) are missing from kafka, e.g. {}",
            missing.join(", ")
        );
    }
    println!("\nno acknowledged record was lost");
    Ok(())
}
