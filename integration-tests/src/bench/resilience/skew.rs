//! P7 with skewed leadership: one gateway per zone, the bench zone (`az-a`) leading 1 or 2
//! of the 6 partitions, unkeyed records from every gateway. Per-partition spread (max ÷
//! mean of records per partition) and the bench zone's AZ-local share, with zone-aware
//! spillover and without it (every unkeyed record to a local leader), in the same run.

use super::{cluster, unkeyed, InProcess, PARTITIONS, RACK};
use crate::bench::BenchArgs;
use anyhow::Context;
use ballast_proto::ingest::v1 as pb;
use futures::future::join_all;

/// The zones of the mock cluster's brokers 1, 2 and 3.
const ZONES: [&str; 3] = ["az-a", "az-b", "az-c"];

#[derive(Debug, Clone, serde::Serialize)]
pub struct SkewFigures {
    pub records_per_gateway: usize,
    pub layouts: Vec<SkewLayout>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SkewLayout {
    /// Partitions of 6 led in the bench zone.
    pub local_partitions: i32,
    /// The most of its records the bench zone can keep local with an even spread: its
    /// share of the partitions over its share of the records (a third), at most 1.
    pub best_local_share: f64,
    pub spillover: SkewRun,
    /// Today's placement before spillover: every unkeyed record to a local leader.
    pub local_only: SkewRun,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SkewRun {
    /// Records per partition, all gateways together.
    pub per_partition: Vec<u64>,
    /// Max ÷ mean of `per_partition`.
    pub spread: f64,
    /// The share of the bench zone's gateway's records written to leaders in its zone.
    pub local_share: f64,
}

/// P7 with skew.
pub async fn skew(args: &BenchArgs) -> anyhow::Result<SkewFigures> {
    let records = if args.quick { 3_000 } else { 15_000 };
    let mut layouts = Vec::new();
    for local_partitions in [1, 2] {
        eprintln!(
            "bench: P7 skew, {RACK} leads {local_partitions} of {PARTITIONS}; {records} unkeyed records from a gateway in each zone, with spillover and without"
        );
        layouts.push(SkewLayout {
            local_partitions,
            best_local_share: (f64::from(local_partitions) / f64::from(PARTITIONS) * 3.0).min(1.0),
            spillover: run(local_partitions, true, records).await?,
            local_only: run(local_partitions, false, records).await?,
        });
    }
    Ok(SkewFigures {
        records_per_gateway: records,
        layouts,
    })
}

/// One run on a fresh cluster: `local` partitions led in az-a (broker 1), the others by
/// the brokers of az-b and az-c in turn.
async fn run(local: i32, spillover: bool, records: usize) -> anyhow::Result<SkewRun> {
    let c = cluster()?;
    for p in 0..PARTITIONS {
        let broker = if p < local { 1 } else { 2 + (p - local) % 2 };
        c.partition_leader(super::TOPIC, p, Some(broker)).await?;
    }
    let mut gateways = Vec::new();
    for zone in ZONES {
        gateways.push(
            InProcess::start_with(&c, |cfg| {
                cfg.rack = Some(zone.into());
                cfg.spillover.enabled = spillover;
            })
            .await?,
        );
    }
    let value = vec![b's'; 1024];
    let sends = gateways.iter().enumerate().map(|(g, gw)| {
        let (client, value) = (gw.client.clone(), value.clone());
        async move {
            // Four connections per gateway, 100 records a request.
            let loops = (0..4).map(|w| {
                let (mut client, value) = (client.clone(), value.clone());
                async move {
                    let mut partitions = Vec::new();
                    let mut i = w * 100;
                    while i < records {
                        let batch = (i..(i + 100).min(records))
                            .map(|n| unkeyed(g * records + n, &value))
                            .collect();
                        let res = client
                            .produce(pb::ProduceRequest { records: batch })
                            .await?
                            .into_inner();
                        for r in res.results {
                            match r.outcome {
                                Some(pb::record_result::Outcome::Kafka(k)) => {
                                    partitions.push(k.partition)
                                }
                                other => anyhow::bail!("not written to Kafka: {other:?}"),
                            }
                        }
                        i += 400;
                    }
                    anyhow::Ok(partitions)
                }
            });
            let mut all = Vec::new();
            for l in join_all(loops).await {
                all.extend(l?);
            }
            anyhow::Ok(all)
        }
    });
    let placed = join_all(sends).await;
    for gw in gateways {
        gw.stop().await?;
    }
    let mut per_partition = vec![0u64; PARTITIONS as usize];
    let mut local_share = 0.0;
    for (g, p) in placed.into_iter().enumerate() {
        let p = p.with_context(|| format!("gateway in {}", ZONES[g]))?;
        for &partition in &p {
            per_partition[partition as usize] += 1;
        }
        if g == 0 {
            let local_records = p.iter().filter(|&&partition| partition < local).count();
            local_share = local_records as f64 / p.len().max(1) as f64;
        }
    }
    let max = *per_partition.iter().max().unwrap_or(&0) as f64;
    let mean = per_partition.iter().sum::<u64>() as f64 / per_partition.len() as f64;
    Ok(SkewRun {
        spread: if mean > 0.0 { max / mean } else { 0.0 },
        per_partition,
        local_share,
    })
}
