//! P7: the share of unkeyed bytes written to leaders in the gateway's own zone.

use super::{cluster, plain_producer, unkeyed, InProcess, PARTITIONS, RACK, TOPIC};
use crate::bench::BenchArgs;
use anyhow::Context;
use ballast_proto::ingest::v1 as pb;
use futures::future::join_all;
use rdkafka::producer::FutureRecord;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
    // The mock cluster picks leaders at random, and a run where the zone led no partition
    // would measure nothing: leaders go round the brokers (partition p on broker
    // p mod n + 1), so each zone leads an equal share.
    for p in 0..PARTITIONS {
        c.partition_leader(TOPIC, p, Some(p % c.broker_count() + 1))
            .await?;
    }
    let gw = InProcess::start(&c).await?;
    let metrics = gw.handle.writer();
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
