//! `ballast-dev demo`: the dev stack under load while a spot-interruption script plays, then an
//! audit of every acknowledged record against what Kafka actually holds.
//!
//! Phases: steady load; a draining notice for one broker; that broker dies; a partition
//! loses its leader; the whole cluster goes out; recovery. Records are mixed: unkeyed,
//! STRICT keyed and PREFERRED keyed. Records Kafka cannot take go to the failover queue
//! (SQLite) and the retry workers put them back after recovery. The exit code is non-zero
//! if any acknowledged record is missing from Kafka. A dedup-guarded consumer group then
//! reads the topic, and the run is written up as a self-contained HTML report with an SVG
//! timeline.
//!
//! This file holds the script and the audit's report; `load.rs` holds the load that runs
//! through it and what it records.

mod load;
pub(crate) mod report;

use crate::dev::{DevOptions, DevStack};
use ballast_balancer::BreakerState;
use ballast_dedup_store::client::DedupClient;
use ballast_dedup_store::consumer::{self, ConsumeCounts, ConsumerOptions};
use ballast_proto::common::v1::Code;
use ballast_proto::ingest::v1 as pb;
use ballast_proto::ingest::v1::ingest_client::IngestClient;
use ballast_proto::retry::v1 as rpb;
use ballast_proto::retry::v1::retry_admin_client::RetryAdminClient;
use ballast_proto::topology::v1 as tpb;
use ballast_proto::topology::v1::topology_client::TopologyClient;
use indicatif::{ProgressBar, ProgressStyle};
use load::*;
use report::{Phase, Report, Sample};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
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
    /// Where to write the HTML report.
    #[arg(long, default_value = "ballast-demo-report.html")]
    pub report: PathBuf,
}

pub(crate) fn percentile(v: &[f64], q: f64) -> f64 {
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
    anyhow::ensure!(total > 0, "--records must be positive");
    let rate = total as f64 / (phase_len.as_secs_f64() * phases as f64);

    eprintln!("demo: starting the dev stack (mock kafka: 3 brokers in az-a/az-b/az-c, gateway, retry workers, dedup, topology)");
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
    let mut topology = TopologyClient::connect(format!("http://{}", stack.topology_addr)).await?;
    let audit = Arc::new(Mutex::new(Audit::default()));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let begin = Instant::now();
    let (stop_sampling, sampling) = tokio::sync::watch::channel(false);
    let sampler = spawn_sampler(
        stack.gateway.clone(),
        audit.clone(),
        samples.clone(),
        begin,
        sampling,
    );
    let begin_phase = |name: &str| {
        let mut a = audit.lock().expect("audit lock");
        a.phases.push((
            name.to_string(),
            PhaseStats {
                start: begin.elapsed().as_secs_f64(),
                ..PhaseStats::default()
            },
        ));
    };
    // Runs one phase for `phase_len` with a progress bar of its time and live counts.
    let play = |name: &'static str| {
        let audit = audit.clone();
        async move {
            let pb = bar(phase_len.as_millis() as u64, name);
            if pb.is_hidden() {
                eprintln!("demo: phase {name}");
            }
            let start = Instant::now();
            while start.elapsed() < phase_len {
                tokio::time::sleep(Duration::from_millis(100)).await;
                pb.set_position(start.elapsed().as_millis().min(phase_len.as_millis()) as u64);
                pb.set_message(audit.lock().expect("audit lock").progress());
            }
            pb.finish();
        }
    };

    let md = stack.gateway.metadata();
    let leader_of = |p: i32| {
        md.topic(TOPIC)
            .and_then(|t| t.partitions.iter().find(|x| x.partition == p))
            .map(|x| x.leader)
    };
    // The spot broker: the one leading the most partitions, so its notice matters.
    let victim = (1..=3)
        .max_by_key(|b| {
            (0..PARTITIONS)
                .filter(|p| leader_of(*p) == Some(*b))
                .count()
        })
        .unwrap_or(2);
    let orphan = (0..PARTITIONS)
        .find(|p| leader_of(*p).is_some_and(|l| l != victim))
        .unwrap_or(0);
    let orphan_leader = leader_of(orphan).unwrap_or(1);

    begin_phase("steady");
    let loader = tokio::spawn(load(client, audit.clone(), next.clone(), total, rate));
    play("steady").await;

    // The spot notice goes where `ballast topology watch-spot` would send it; the gateway
    // learns it from its WatchTopology stream.
    begin_phase("draining notice");
    topology
        .mark_broker_draining(tpb::MarkBrokerDrainingRequest {
            broker_id: victim,
            deadline_unix_ms: Some(
                (std::time::SystemTime::now() + phase_len)
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_millis() as i64,
            ),
            reason: "demo: spot interruption notice".into(),
        })
        .await?;
    play("draining notice").await;
    begin_phase("broker dies");
    stack.cluster.broker_down(victim).await?;
    play("broker dies").await;
    begin_phase("leaderless partition");
    stack.cluster.partition_leader(TOPIC, orphan, None).await?;
    play("leaderless partition").await;
    begin_phase("cluster outage");
    stack.cluster.broker_down(-1).await?;
    play("cluster outage").await;
    begin_phase("recovery");
    stack.cluster.broker_up(-1).await?;
    stack
        .cluster
        .partition_leader(TOPIC, orphan, Some(orphan_leader))
        .await?;
    topology
        .clear_broker_draining(tpb::ClearBrokerDrainingRequest { broker_id: victim })
        .await?;
    play("recovery").await;
    loader.await??;

    if let Some(addr) = stack.retry_addr {
        let mut admin = RetryAdminClient::connect(format!("http://{addr}")).await?;
        let first = admin.stats(rpb::StatsRequest {}).await?.into_inner().depth;
        let pb = bar(first.max(1) as u64, "failover drain");
        if pb.is_hidden() {
            eprintln!("demo: retry workers draining {first} failover records back into kafka");
        }
        let end = Instant::now() + Duration::from_secs(120);
        loop {
            let s = admin.stats(rpb::StatsRequest {}).await?.into_inner();
            pb.set_position(first.saturating_sub(s.depth) as u64);
            pb.set_message(format!("{} left in the queue", s.depth));
            if s.depth == 0 {
                break;
            }
            anyhow::ensure!(
                Instant::now() < end,
                "the failover queue still holds {} records after 120 s",
                s.depth
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        pb.finish();
    }
    // Let the timeline show the drain settle.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let end_t = begin.elapsed().as_secs_f64();
    let _ = stop_sampling.send(true);
    sampler.await?;

    eprintln!("demo: reading everything back from kafka");
    let bootstrap = stack.cluster.bootstrap_servers().to_string();
    let landed = {
        let bootstrap = bootstrap.clone();
        tokio::task::spawn_blocking(move || {
            ballast_kafka::read_topic(&bootstrap, TOPIC, None, Duration::from_secs(60))
        })
        .await??
    };

    // A consumer group that processes each message id once, through the dedup service.
    let pb = bar(landed.len() as u64, "dedup consumer");
    if pb.is_hidden() {
        eprintln!("demo: a dedup-guarded consumer reads the topic");
    }
    let dedup = DedupClient::connect(
        &ballast_security::service_url(&stack.dedup_addr.to_string()),
        "ballast-demo",
    )
    .await?;
    let consumed = consumer::consume(
        &ConsumerOptions {
            bootstrap: bootstrap.clone(),
            security: Default::default(),
            topic: TOPIC.into(),
            group: "ballast-demo".into(),
            lease: Duration::from_secs(30),
            idle_exit: Duration::from_secs(5),
            start_timeout: Duration::from_secs(30),
            max_records: Some(landed.len() as u64),
            batch: 500,
            session_timeout: Duration::from_secs(10),
            dedup_retry_for: Duration::from_secs(60),
            processed_log: None,
            duplicates_log: None,
        },
        &dedup,
        // The demo's processing is the counting.
        |_record| async { Ok::<_, std::convert::Infallible>(()) },
        |c: &ConsumeCounts| {
            pb.set_position(c.read);
            pb.set_message(format!(
                "processed {}  duplicates skipped {}",
                c.processed, c.duplicates
            ));
        },
    )
    .await?;
    pb.finish();
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
    // Each record Kafka acknowledged is where the acknowledgement said, with its payload.
    let by_place: HashMap<(i32, i64), &ballast_kafka::Landed> = landed
        .iter()
        .map(|l| ((l.partition, l.offset), l))
        .collect();
    let misplaced: Vec<String> = a
        .acked_kafka
        .iter()
        .filter(|(id, place)| {
            let expected = id
                .strip_prefix("demo-")
                .and_then(|n| n.parse::<usize>().ok())
                .map(|n| make_record(n).value.to_vec());
            !by_place.get(place).is_some_and(|l| {
                l.message_id.as_deref() == Some(id.as_str()) && Some(&l.value) == expected.as_ref()
            })
        })
        .map(|(id, (p, o))| format!("{id} (acked at {p}/{o})"))
        .collect();
    let delivered_acked = a
        .acked_kafka
        .keys()
        .chain(a.acked_failover.keys())
        .filter(|id| seen.contains(*id))
        .count();
    let acked = a.acked_kafka.len() + a.acked_failover.len();
    let lost = acked - delivered_acked;
    let rejected = a.rejected_total();

    let mut rows: Vec<(String, String)> = vec![
        ("sent".into(), a.sent.to_string()),
        ("acked via kafka".into(), a.acked_kafka.len().to_string()),
        (
            "acked via failover".into(),
            a.acked_failover.len().to_string(),
        ),
        (
            "rejected (explicit, retryable)".into(),
            rejected.to_string(),
        ),
    ];
    for (code, n) in &a.rejected {
        rows.push((format!("  {code}"), n.to_string()));
    }
    rows.extend([
        (
            "delivered to kafka (records)".into(),
            landed.len().to_string(),
        ),
        (
            "delivered to kafka (unique ids)".into(),
            seen.len().to_string(),
        ),
        ("duplicates in kafka".into(), duplicates.to_string()),
        ("consumer: read".into(), consumed.read.to_string()),
        (
            "consumer: duplicates skipped".into(),
            consumed.duplicates.to_string(),
        ),
        (
            "consumer: unique processed".into(),
            consumed.processed.to_string(),
        ),
        (
            "acked at a wrong partition/offset".into(),
            misplaced.len().to_string(),
        ),
        (
            "answered without an outcome".into(),
            a.unanswered.len().to_string(),
        ),
        ("lost (acked - delivered unique)".into(), lost.to_string()),
    ]);
    println!();
    println!("{:<34} {:>10}", "audit", "records");
    for (k, v) in &rows {
        println!("{k:<34} {v:>10}");
    }
    println!();
    println!(
        "{:<22} {:>8} {:>14} {:>14}",
        "phase", "sent", "p50 batch ms", "p99 batch ms"
    );
    let phases: Vec<Phase> = a
        .phases
        .iter()
        .map(|(name, p)| Phase {
            name: name.clone(),
            start: p.start,
            sent: p.sent,
            p50_ms: percentile(&p.latencies_ms, 0.5),
            p99_ms: percentile(&p.latencies_ms, 0.99),
        })
        .collect();
    for p in &phases {
        println!(
            "{:<22} {:>8} {:>14.1} {:>14.1}",
            p.name, p.sent, p.p50_ms, p.p99_ms
        );
    }
    let page = report::html(&Report {
        rows,
        lost,
        phases,
        samples: samples.lock().expect("samples lock").clone(),
        end: end_t,
    });
    std::fs::write(&args.report, page)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", args.report.display()))?;
    println!("\nreport: {}", args.report.display());

    anyhow::ensure!(
        a.unanswered.is_empty(),
        "{} record(s) got no outcome, e.g. {:?}",
        a.unanswered.len(),
        &a.unanswered[..a.unanswered.len().min(10)]
    );
    anyhow::ensure!(
        misplaced.is_empty(),
        "{} record(s) are not where their acknowledgement said, e.g. {:?}",
        misplaced.len(),
        &misplaced[..misplaced.len().min(10)]
    );
    anyhow::ensure!(
        a.sent == acked + rejected,
        "audit does not add up: sent {} != acked {acked} + rejected {rejected}",
        a.sent
    );
    anyhow::ensure!(
        consumed.read == landed.len() as u64
            && consumed.processed + consumed.duplicates == consumed.read
            && consumed.processed == seen.len() as u64,
        "the dedup consumer does not add up: {consumed:?} for {} records with {} unique ids",
        landed.len(),
        seen.len()
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
    println!("no acknowledged record was lost");
    Ok(())
}
