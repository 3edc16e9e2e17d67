//! P3: acknowledged in time while one broker is lost, against a plain producer; once with
//! unkeyed records (librdkafka already steers those around a dead leader), and once with
//! half the records STRICT-keyed, which shows what the failover queue buys.

use super::{cluster, plain_producer, unkeyed, InProcess, RACK, TOPIC, WRITE_TIMEOUT};
use crate::bench::BenchArgs;
use ballast_failover::{FailoverBackend, FailoverConfig};
use ballast_kafka::{EmbeddedCluster, MetadataClient};
use ballast_proto::ingest::v1 as pb;
use futures::future::join_all;
use rdkafka::producer::FutureRecord;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Both P3 runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BrokerLoss {
    pub unkeyed: BrokerLossFigures,
    /// Half the records STRICT-keyed; the gateway fails over to SQLite, and a failover
    /// acknowledgement within the deadline counts.
    pub half_keyed: BrokerLossFigures,
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

/// P3: both runs.
pub async fn broker_loss(args: &BenchArgs) -> anyhow::Result<BrokerLoss> {
    Ok(BrokerLoss {
        unkeyed: run(args, false).await?,
        half_keyed: run(args, true).await?,
    })
}

/// Record `n` of a run: unkeyed, or every other one STRICT-keyed when `keyed`.
fn record(n: usize, value: &[u8], keyed: bool) -> pb::Record {
    let mut r = unkeyed(n, value);
    if keyed && n.is_multiple_of(2) {
        r.key = Some(format!("user-{}", n % 97).into_bytes().into());
    }
    r
}

async fn run(args: &BenchArgs, keyed: bool) -> anyhow::Result<BrokerLossFigures> {
    let (warm, loss) = if args.quick {
        (Duration::from_millis(800), Duration::from_secs(2))
    } else {
        (Duration::from_secs(2), Duration::from_secs(6))
    };
    let rate = 2000.0;
    let batch = 10;
    let value = Arc::new(vec![b'p'; 512]);

    let mix = if keyed {
        "half strict-keyed"
    } else {
        "unkeyed"
    };
    eprintln!(
        "bench: P3 broker loss through the gateway, {mix} ({rate} records/s, {loss:?} after the loss)"
    );
    let c1 = cluster()?;
    let dir = std::env::temp_dir().join(format!("ballast-bench-p3-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = format!(
        "sqlite://{}?mode=rwc",
        dir.join(format!("{mix}.db")).display()
    );
    let gw = InProcess::start_with(&c1, |c| {
        if keyed {
            c.failover = FailoverConfig {
                backend: FailoverBackend::Sqlite,
                database_url: db,
                allow_node_local: true,
                ..FailoverConfig::default()
            };
            // P3 measures how soon records are acknowledged, as a plain producer's are:
            // without the ordering wait a diverted partition's first records pay.
            c.ordering = ballast_failover::OrderingConfig::unordered();
        }
    })
    .await?;
    let victim = victim_of(&gw.handle.metadata());
    let (client, v) = (gw.client.clone(), value.clone());
    let (gw_n, gw_ok) = under_loss(&c1, victim, rate, batch, warm, loss, move |first| {
        let (mut client, v) = (client.clone(), v.clone());
        async move {
            let records = (first..first + batch)
                .map(|i| record(i, &v, keyed))
                .collect();
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
                        matches!(
                            r.outcome,
                            Some(pb::record_result::Outcome::Kafka(_))
                                | Some(pb::record_result::Outcome::Failover(_))
                        ),
                    )
                })
                .collect())
        }
    })
    .await?;
    gw.stop().await?;
    drop(c1);
    std::fs::remove_dir_all(&dir).ok();

    eprintln!("bench: P3 broker loss through a plain rdkafka producer, {mix}");
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
    let (plain_n, plain_ok) =
        under_loss(&c2, victim_of(&md), rate, batch, warm, loss, move |first| {
            let (p, v) = (p.clone(), v.clone());
            async move {
                let sends = (first..first + batch).map(|i| {
                    let p = p.clone();
                    let v = v.clone();
                    async move {
                        let r = record(i, &v, keyed);
                        let mut rec = FutureRecord::<[u8], [u8]>::to(TOPIC).payload(v.as_slice());
                        if let Some(k) = r.key.as_deref() {
                            rec = rec.key(k);
                        }
                        let t0 = Instant::now();
                        let r = p.send(rec, Duration::from_secs(0)).await;
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
