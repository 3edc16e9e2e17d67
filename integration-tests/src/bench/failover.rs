//! P5: how fast retry workers drain the failover queue back into Kafka, against a raw
//! read-and-delete loop on the same SQL backend (SQLite), in the same run; and how many SQS
//! requests the gateway makes per 1,000 records during a Kafka outage (moto_server).

use super::BenchArgs;
use anyhow::Context;
use ballast_failover::envelope::{self, Envelope};
use ballast_failover::{FailoverBackend, FailoverConfig, FailoverQueue, SqlQueue, SqsConfig};
use ballast_gateway::{Gateway, GatewayConfig};
use ballast_kafka::{EmbeddedCluster, EmbeddedClusterConfig, TopicSpec};
use ballast_proto::ingest::v1 as pb;
use ballast_proto::ingest::v1::ingest_client::IngestClient;
use ballast_testkit::deps::Moto;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, serde::Serialize)]
pub struct FailoverFigures {
    pub records: usize,
    /// Rounds per backend; each figure is the median of its rounds.
    pub rounds: usize,
    /// SQLite, then PostgreSQL when it is reachable.
    pub backends: Vec<DrainRow>,
    /// Why the PostgreSQL row is missing, when it is.
    pub postgres_not_measured: Option<String>,
    /// SQS API calls per 1,000 records failed over during an outage; None without moto_server.
    pub sqs_requests_per_1000: Option<f64>,
    /// Why the SQS figure is missing, when it is.
    pub sqs_not_measured: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DrainRow {
    pub backend: &'static str,
    /// Lease 100, delete them, repeat, in as many concurrent loops as the worker runs (2):
    /// the queue's own speed at the worker's concurrency.
    pub raw_read_delete_per_sec: f64,
    /// A retry worker (2 loops, batches of 100, the default `retry.pipeline_depth`).
    pub worker_drain_per_sec: f64,
    /// worker ÷ raw; the target is ≥ 0.8.
    pub drain_ratio: f64,
    /// The same worker with `retry.pipeline_depth` 1: each loop waits for Kafka on a batch
    /// before it leases the next.
    pub unpipelined_drain_per_sec: f64,
    pub unpipelined_ratio: f64,
    /// From spawning the worker to its first drained batch (connect, metadata); not part
    /// of the drain rate. The median over the pipelined rounds.
    pub worker_startup_ms: f64,
    /// Enqueues of 100 entries (a gateway's batch), one at a time: the median over every
    /// fill of the run.
    pub enqueue_per_sec: f64,
}

fn bodies(n: usize, tag: &str) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            envelope::encode(&Envelope {
                topic: "bench".into(),
                value: vec![b'x'; 1024].into(),
                message_id: format!("{tag}-{i}"),
                first_failed_at_unix_ms: 1,
                ..Default::default()
            })
        })
        .collect()
}

/// Enqueues `n` entries in batches as large as a gateway's (`max_batch`), one batch at a
/// time; answers the enqueue rate, records/s.
async fn fill(q: &SqlQueue, n: usize, tag: &str) -> anyhow::Result<f64> {
    let bodies = bodies(n, tag);
    let start = Instant::now();
    for chunk in bodies.chunks(q.max_batch()) {
        q.enqueue(chunk, Duration::ZERO).await?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// The worker's drain loops and entries per receive; the raw baseline runs as many
/// read-and-delete loops.
const RUNNERS: usize = 2;
const BATCH: usize = 100;

pub async fn suite(args: &BenchArgs) -> anyhow::Result<FailoverFigures> {
    let n = args
        .records
        .unwrap_or(if args.quick { 2_000 } else { 20_000 });
    let rounds = if args.quick { 1 } else { 3 };
    let cluster = EmbeddedCluster::start(EmbeddedClusterConfig {
        topics: vec![TopicSpec {
            name: "bench".into(),
            partitions: 6,
            replication_factor: 3,
        }],
        ..Default::default()
    })?;
    let dir = std::env::temp_dir().join(format!("ballast-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sqlite = format!("sqlite://{}?mode=rwc", dir.join("failover.db").display());
    let mut backends = vec![
        drain_row(
            FailoverBackend::Sqlite,
            &sqlite,
            "bench",
            n,
            rounds,
            &cluster,
        )
        .await?,
    ];
    std::fs::remove_dir_all(&dir).ok();
    let queue = format!("bench-{}", std::process::id());
    let postgres_not_measured = match drain_row(
        FailoverBackend::Postgres,
        &args.database_url,
        &queue,
        n,
        rounds,
        &cluster,
    )
    .await
    {
        Ok(row) => {
            backends.push(row);
            None
        }
        Err(e) => {
            eprintln!("bench: P5 on postgresql not measured: {e:#}");
            Some(format!("{e:#}"))
        }
    };

    let (sqs, sqs_not_measured) = match sqs_requests_per_1000(args).await {
        Ok(v) => (Some(v), None),
        Err(e) => {
            eprintln!("bench: sqs requests per 1000 records not measured: {e:#}");
            (None, Some(format!("{e:#}")))
        }
    };
    Ok(FailoverFigures {
        records: n,
        rounds,
        backends,
        postgres_not_measured,
        sqs_requests_per_1000: sqs,
        sqs_not_measured,
    })
}

/// Rounds of: the raw read-and-delete loops, the worker with `pipeline_depth` 1, and the
/// worker as configured by default; each on `n` fresh entries of one queue.
async fn drain_row(
    backend: FailoverBackend,
    url: &str,
    queue_name: &str,
    n: usize,
    rounds: usize,
    cluster: &EmbeddedCluster,
) -> anyhow::Result<DrainRow> {
    let name = match backend {
        FailoverBackend::Postgres => "postgresql",
        _ => "sqlite",
    };
    // Each phase drains a queue of its own. Entries drained by an earlier phase leave dead
    // index entries in their queue's key range until a vacuum removes them (at once on a
    // server with autovacuum off); a later phase on the same queue would scan past them
    // all, so the phase that runs last would pay for every phase before it.
    let open = |phase: String| async move {
        SqlQueue::connect(url, &format!("{queue_name}-{phase}"), 4)
            .await
            .with_context(|| format!("opening {name} at {url}"))
    };
    let depth = ballast_retry_worker::RetrySettings::default().pipeline_depth;
    let (mut raw, mut flat, mut piped, mut startup, mut enqueue) =
        (vec![], vec![], vec![], vec![], vec![]);
    for round in 1..=rounds {
        eprintln!("bench: P5 {name} round {round}/{rounds}: raw read-and-delete, worker with pipeline_depth 1, worker with {depth}; {n} entries each");
        let queue = open(format!("{round}-raw")).await?;
        enqueue.push(fill(&queue, n, "raw").await?);
        eprintln!("bench: P5 {name} round {round}: raw read-and-delete");
        let start = Instant::now();
        let loops = (0..RUNNERS).map(|_| async {
            loop {
                let got = queue
                    .receive(BATCH, Duration::ZERO, Duration::from_secs(60))
                    .await?;
                if got.is_empty() {
                    return anyhow::Ok(());
                }
                queue.ack(&got).await?;
            }
        });
        for r in futures::future::join_all(loops).await {
            r?;
        }
        raw.push(n as f64 / start.elapsed().as_secs_f64());
        for (d, into) in [(1, &mut flat), (depth, &mut piped)] {
            let queue = open(format!("{round}-depth{d}")).await?;
            enqueue.push(fill(&queue, n, "drain").await?);
            eprintln!("bench: P5 {name} round {round}: worker, pipeline_depth {d}");
            let (rate, up) = worker_drain(backend, url, n, d, cluster, &queue).await?;
            into.push(rate);
            if d == depth {
                startup.push(up);
            }
        }
    }
    let (raw, flat, piped) = (
        super::median(raw),
        super::median(flat),
        super::median(piped),
    );
    Ok(DrainRow {
        backend: name,
        raw_read_delete_per_sec: raw,
        worker_drain_per_sec: piped,
        drain_ratio: piped / raw,
        unpipelined_drain_per_sec: flat,
        unpipelined_ratio: flat / raw,
        worker_startup_ms: super::median(startup),
        enqueue_per_sec: super::median(enqueue),
    })
}

/// Runs a retry worker on the filled queue until it is empty: records/s from its first
/// drained batch, and the start-up time before that batch.
async fn worker_drain(
    backend: FailoverBackend,
    url: &str,
    n: usize,
    pipeline_depth: usize,
    cluster: &EmbeddedCluster,
    queue: &SqlQueue,
) -> anyhow::Result<(f64, f64)> {
    let mut cfg = ballast_retry_worker::WorkerConfig {
        failover: FailoverConfig {
            backend,
            database_url: url.to_string(),
            queue: queue.queue().into(),
            ..FailoverConfig::default()
        },
        ..Default::default()
    };
    cfg.kafka.bootstrap_servers = cluster.bootstrap_servers().to_string();
    cfg.retry.max_number_of_messages = BATCH;
    cfg.retry.runner_count = RUNNERS;
    cfg.retry.pipeline_depth = pipeline_depth;
    cfg.retry.wait_time = Duration::from_millis(50);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let metrics = admin.local_addr()?;
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let spawned = Instant::now();
    let worker = tokio::spawn(ballast_retry_worker::run(cfg, listener, admin, async {
        let _ = rx.await;
    }));
    // Progress comes from the worker's own delivered counter, which costs the queue
    // nothing (counting rows would compete with the drain). The clock starts at the first
    // delivered batch: connecting to Kafka and loading its metadata is a one-time start-up
    // cost, reported apart.
    let delivered = || async {
        let page = super::cpu::scrape(metrics).await.unwrap_or_default();
        super::cpu::counter(&page, "ballast_retry_records_total{outcome=\"delivered\"}") as usize
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    let (start, first) = loop {
        let done = delivered().await;
        if done > 0 {
            break (Instant::now(), done);
        }
        anyhow::ensure!(
            Instant::now() < deadline && !worker.is_finished(),
            "the worker never started draining"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let startup = start - spawned;
    let cpu_start = super::cpu::cpu_seconds(std::process::id())?;
    // Each look renders the worker's whole metrics page, on the cores the drain runs on:
    // look again when about half of what remains should be done at the rate so far, and
    // every 2 ms near the end, so the clock stops within a few ms of the last batch.
    loop {
        let done = delivered().await;
        if done >= n {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline && !worker.is_finished(),
            "the worker did not drain the queue in 10 minutes"
        );
        let per_record = start.elapsed().as_secs_f64() / (done - first).max(1) as f64;
        let half_of_rest = per_record * (n - done) as f64 / 2.0;
        tokio::time::sleep(Duration::from_secs_f64(half_of_rest.clamp(0.002, 0.2))).await;
    }
    let elapsed = start.elapsed();
    let cpu = super::cpu::cpu_seconds(std::process::id())? - cpu_start;
    eprintln!(
        "bench: P5 drain: {:.1} ms of CPU per 1000 records in this process (worker, brokers)",
        cpu * 1000.0 / (n - first) as f64 * 1000.0
    );
    anyhow::ensure!(
        queue.stats().await?.depth == 0,
        "the worker reported every entry delivered, but the queue is not empty"
    );
    let rate = (n - first) as f64 / elapsed.as_secs_f64();
    let _ = stop.send(());
    worker.await??;
    Ok((rate, startup.as_secs_f64() * 1000.0))
}

/// A moto_server child process, killed on drop.
/// The SQS endpoint to use: `--sqs-endpoint`, or a moto_server started here (kept alive by
/// the returned guard).
pub(crate) async fn sqs_endpoint(args: &BenchArgs) -> anyhow::Result<(String, Option<Moto>)> {
    Ok(match &args.sqs_endpoint {
        Some(e) => (e.clone(), None),
        None => {
            let moto = tokio::task::spawn_blocking(Moto::try_start)
                .await?
                .context("no --sqs-endpoint given")?;
            (moto.endpoint(), Some(moto))
        }
    })
}

async fn sqs_requests_per_1000(args: &BenchArgs) -> anyhow::Result<f64> {
    let (endpoint, _moto) = sqs_endpoint(args).await?;
    eprintln!("bench: sqs requests during an outage, 1000 records as 100 concurrent requests");
    let cluster = EmbeddedCluster::start(EmbeddedClusterConfig {
        topics: vec![TopicSpec {
            name: "bench".into(),
            partitions: 6,
            replication_factor: 3,
        }],
        ..Default::default()
    })?;
    let name = format!("ballast-bench-{}", std::process::id());
    let mut cfg = GatewayConfig::default();
    cfg.kafka.bootstrap_servers = cluster.bootstrap_servers().to_string();
    cfg.failover = FailoverConfig {
        backend: FailoverBackend::Sqs,
        sqs: SqsConfig::local(endpoint, &name),
        // moto_server is slow (tens of ms a batch); the figure is calls, not speed.
        timeout: Duration::from_secs(60),
        ..FailoverConfig::default()
    };
    cfg.limits.request_timeout = Duration::from_secs(120);
    cfg.limits.max_record_bytes = ballast_failover::SQS_MAX_RECORD_BYTES;
    cfg.ordering = ballast_failover::OrderingConfig::unordered();
    let gateway = Gateway::new(cfg).await?;
    let handle = gateway.handle();
    // Learn the topic before the outage, as a running gateway would have.
    handle.refresh_metadata().await?;
    let queue = handle.writer().failover_queue().expect("sqs configured");
    let mut local = gateway.spawn_local().await?;
    let addr = local.addr;
    cluster.broker_down(-1).await?;
    let _ = handle.refresh_metadata().await;
    let client = IngestClient::connect(format!("http://{addr}")).await?;
    let before = queue.api_calls();
    let requests = (0..100).map(|r| {
        let mut c = client.clone();
        async move {
            let records = (0..10)
                .map(|i| pb::Record {
                    topic: "bench".into(),
                    value: vec![b'x'; 1024].into(),
                    message_id: format!("sqs-{r}-{i}"),
                    ..Default::default()
                })
                .collect();
            c.produce(pb::ProduceRequest { records }).await
        }
    });
    let mut failed_over = 0usize;
    let mut other = None;
    for resp in futures::future::join_all(requests).await {
        for r in resp?.into_inner().results {
            match r.outcome {
                Some(pb::record_result::Outcome::Failover(_)) => failed_over += 1,
                o => other = other.or(Some(o)),
            }
        }
    }
    anyhow::ensure!(
        failed_over == 1000,
        "only {failed_over} of 1000 records failed over; e.g. {other:?}"
    );
    let calls = queue.api_calls() - before;
    local.stop().await?;
    Ok(calls as f64)
}
