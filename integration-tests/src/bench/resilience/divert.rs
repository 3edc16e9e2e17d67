//! P9: the price of ordered failover. A key's partition loses its leader while a backlog
//! of the key's records fails over; when the leader is back, a client writes the key's
//! values one after another. Under `ordering: partition` the partition stays diverted
//! (its records held, then written directly) until a retry worker has drained the
//! backlog; under `ordering: none`, in the same run, it is written directly at once. The
//! queue is SQLite, and then, ordered again, SQS FIFO queues on moto_server (a smaller
//! backlog: moto takes ten messages a receive).

use super::{cluster, InProcess, PARTITIONS, TOPIC};
use crate::bench::BenchArgs;
use ballast_failover::{FailoverBackend, FailoverConfig, OrderingConfig, SqsConfig};
use ballast_proto::ingest::v1 as pb;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, serde::Serialize)]
pub struct DivertFigures {
    /// From the leader's return until the key's first write acknowledged by Kafka.
    pub diverted_ms: f64,
    /// The key's sequential writes acknowledged per second in the window after the
    /// leader's return.
    pub writes_per_sec_after_recovery: f64,
    /// The key's sequential writes per second while its partition had no leader (each
    /// to the queue).
    pub writes_per_sec_during_outage: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Divert {
    pub backlog: usize,
    pub window_secs: f64,
    pub ordered: DivertFigures,
    pub unordered: DivertFigures,
    /// Ordered on SQS FIFO queues (moto_server), with its own backlog.
    pub fifo: Result<FifoDivert, String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FifoDivert {
    pub backlog: usize,
    pub ordered: DivertFigures,
}

/// The failover queue of a run.
enum Queue {
    Sqlite,
    /// SQS FIFO queues and their marks' bucket on this endpoint.
    SqsFifo(String),
}

/// Writes one value of `key` until acknowledged; whether Kafka acknowledged it.
async fn write(
    client: &mut ballast_proto::ingest::v1::ingest_client::IngestClient<tonic::transport::Channel>,
    key: &str,
    n: usize,
) -> anyhow::Result<bool> {
    let rec = pb::Record {
        topic: TOPIC.into(),
        key: Some(key.as_bytes().to_vec().into()),
        value: n.to_string().into_bytes().into(),
        message_id: format!("p9-{key}-{n}"),
        ..Default::default()
    };
    let give_up = Instant::now() + Duration::from_secs(120);
    let acked = crate::send_until_acked(client, rec, Duration::from_millis(20), give_up).await?;
    Ok(acked == crate::Acked::Kafka)
}

async fn run(
    queue: Queue,
    ordered: bool,
    backlog: usize,
    window: Duration,
) -> anyhow::Result<DivertFigures> {
    let c = cluster()?;
    let dir = std::env::temp_dir().join(format!("ballast-bench-p9-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = dir.join(format!("{ordered}.db"));
    std::fs::remove_file(&db).ok();
    let failover = match queue {
        Queue::Sqlite => FailoverConfig {
            backend: FailoverBackend::Sqlite,
            database_url: format!("sqlite://{}?mode=rwc", db.display()),
            allow_node_local: true,
            ..FailoverConfig::default()
        },
        Queue::SqsFifo(endpoint) => {
            let name = format!("ballast-bench-p9-{}", std::process::id());
            let mut sqs = SqsConfig::local(endpoint, &format!("{name}.fifo"));
            sqs.offload.bucket = name;
            sqs.offload.create_bucket = true;
            FailoverConfig {
                backend: FailoverBackend::Sqs,
                sqs,
                ..FailoverConfig::default()
            }
        }
    };
    let ordering = if ordered {
        OrderingConfig::default()
    } else {
        OrderingConfig::unordered()
    };
    let (f, o) = (failover.clone(), ordering.clone());
    let gw = InProcess::start_with(&c, move |cfg| {
        cfg.failover = f;
        cfg.ordering = o;
    })
    .await?;
    let mut wcfg = ballast_retry_worker::WorkerConfig {
        failover,
        ordering,
        ..Default::default()
    };
    wcfg.kafka.bootstrap_servers = c.bootstrap_servers().to_string();
    wcfg.retry.max_number_of_messages = 100;
    // SQS counts a long poll in whole seconds, and on moto_server one made while this
    // worker's own batch holds the FIFO group returns only at its end: short polls there.
    wcfg.retry.wait_time = if wcfg.failover.backend == FailoverBackend::Sqs {
        Duration::ZERO
    } else {
        Duration::from_millis(50)
    };
    wcfg.retry.health_gate_delay = Duration::from_millis(200);
    wcfg.retry.backoff_base = Duration::from_millis(200);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(ballast_retry_worker::run(wcfg, listener, admin, async {
        let _ = stopped.await;
    }));

    let target = 0;
    let key = (0..10_000)
        .map(|i| format!("p9-{i}"))
        .find(|k| ballast_balancer::partition_for_key(k.as_bytes(), PARTITIONS as usize) == target)
        .expect("a key on the partition");
    let leader = gw
        .handle
        .metadata()
        .topic(TOPIC)
        .and_then(|t| {
            t.partitions
                .iter()
                .find(|p| p.partition == target)
                .map(|p| p.leader)
        })
        .expect("a leader");
    c.partition_leader(TOPIC, target, None).await?;
    gw.handle.refresh_metadata().await?;

    // The backlog: the key's records failed over in batches.
    let mut client = gw.client.clone();
    let mut n = 0;
    while n < backlog {
        let records: Vec<pb::Record> = (n..(n + 100).min(backlog))
            .map(|i| pb::Record {
                topic: TOPIC.into(),
                key: Some(key.as_bytes().to_vec().into()),
                value: i.to_string().into_bytes().into(),
                message_id: format!("p9-backlog-{i}"),
                ..Default::default()
            })
            .collect();
        n += records.len();
        let res = client
            .produce(pb::ProduceRequest { records })
            .await?
            .into_inner()
            .results;
        anyhow::ensure!(
            res.iter()
                .all(|r| matches!(r.outcome, Some(pb::record_result::Outcome::Failover(_)))),
            "P9: the backlog was not failed over"
        );
    }
    // The key's sequential writes while the partition has no leader.
    let t = Instant::now();
    let mut during = 0;
    let mut v = backlog;
    while t.elapsed() < window / 2 {
        write(&mut client, &key, v).await?;
        v += 1;
        during += 1;
    }
    let during_rate = during as f64 / t.elapsed().as_secs_f64();

    c.partition_leader(TOPIC, target, Some(leader)).await?;
    gw.handle.refresh_metadata().await?;
    let back = Instant::now();
    let mut diverted = None;
    let mut after = 0;
    while back.elapsed() < window || diverted.is_none() {
        let direct = write(&mut client, &key, v).await?;
        v += 1;
        if back.elapsed() < window {
            after += 1;
        }
        if direct && diverted.is_none() {
            diverted = Some(back.elapsed());
        }
        anyhow::ensure!(
            back.elapsed() < Duration::from_secs(120),
            "P9: the partition was never written directly again"
        );
    }
    let figures = DivertFigures {
        diverted_ms: diverted.expect("set").as_secs_f64() * 1000.0,
        writes_per_sec_after_recovery: after as f64 / window.as_secs_f64(),
        writes_per_sec_during_outage: during_rate,
    };
    let _ = stop.send(());
    worker.await??;
    gw.stop().await?;
    std::fs::remove_file(&db).ok();
    Ok(figures)
}

/// P9: both runs, ordered first.
pub async fn divert(args: &BenchArgs) -> anyhow::Result<Divert> {
    let (backlog, window) = if args.quick {
        (1_000, Duration::from_secs(2))
    } else {
        (10_000, Duration::from_secs(5))
    };
    eprintln!(
        "bench: P9 ordered failover: a backlog of {backlog} records of one key, then its writes for {window:?} after recovery"
    );
    let ordered = run(Queue::Sqlite, true, backlog, window).await?;
    let unordered = run(Queue::Sqlite, false, backlog, window).await?;
    let fifo = match crate::bench::failover::sqs_endpoint(args).await {
        Ok((endpoint, _moto)) => {
            let backlog = backlog / 10;
            eprintln!("bench: P9 again on SQS FIFO queues ({endpoint}), a backlog of {backlog}");
            run(Queue::SqsFifo(endpoint), true, backlog, window)
                .await
                .map(|ordered| FifoDivert { backlog, ordered })
                .map_err(|e| format!("{e:#}"))
        }
        Err(e) => Err(format!("{e:#}")),
    };
    Ok(Divert {
        backlog,
        window_secs: window.as_secs_f64(),
        ordered,
        unordered,
        fifo,
    })
}
