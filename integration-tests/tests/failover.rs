//! The delivery promise end to end: during a Kafka outage every record is acknowledged
//! through the failover queue, and after recovery the retry workers put every one of them
//! in Kafka (STRICT keys on their murmur2 partition, message ids kept). Against SQLite, a
//! real PostgreSQL server and SQS on moto_server.

use ballast_balancer::partition_for_key;
use ballast_dev::{start_worker, GatewayStack, Worker};
use ballast_failover::{FailoverBackend, FailoverConfig, SqsConfig};
use ballast_proto::common::v1::Code;
use ballast_proto::ingest::v1 as pb;
use ballast_proto::retry::v1 as rpb;
use ballast_proto::retry::v1::retry_admin_client::RetryAdminClient;
use ballast_retry_worker::WorkerConfig;
use ballast_testkit::deps::{require_postgres, unique, Moto};
use ballast_testkit::{consume_all, consume_unique, kafka_ack, record, record_error};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 6;

fn sqlite() -> (FailoverConfig, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(unique("ballast-it"));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = FailoverConfig {
        backend: FailoverBackend::Sqlite,
        database_url: format!("sqlite://{}?mode=rwc", dir.join("q.db").display()),
        allow_node_local: true,
        ..FailoverConfig::default()
    };
    (cfg, dir)
}

/// PostgreSQL, its URL read from a file as from a mounted Secret.
fn postgres() -> FailoverConfig {
    let queue = unique("it");
    let url_file = std::env::temp_dir().join(format!("{queue}.url"));
    std::fs::write(&url_file, format!("{}\n", require_postgres())).expect("url file");
    FailoverConfig {
        backend: FailoverBackend::Postgres,
        database_url: "postgres://not-this-one.invalid/ballast".into(),
        database_url_file: Some(url_file),
        queue,
        ..FailoverConfig::default()
    }
}

fn sqs(moto: &Moto) -> FailoverConfig {
    let name = unique("it");
    FailoverConfig {
        backend: FailoverBackend::Sqs,
        sqs: SqsConfig::local(moto.endpoint(), &name),
        ..FailoverConfig::default()
    }
}

async fn gateway_with(failover: FailoverConfig) -> anyhow::Result<GatewayStack> {
    GatewayStack::start(&[("fo", PARTITIONS)], move |c| {
        if failover.backend == FailoverBackend::Sqs {
            c.limits.max_record_bytes = ballast_failover::SQS_MAX_RECORD_BYTES;
        }
        c.failover = failover
    })
    .await
}

fn outage_batch(tag: &str) -> Vec<pb::Record> {
    (0..40)
        .map(|i| {
            let key = (i % 2 == 0).then(|| format!("user-{i}"));
            let mut r = record("fo", key.as_deref(), &format!("{tag}-{i}"));
            r.message_id = format!("{tag}-{i}");
            r
        })
        .collect()
}

/// Kafka down: all acked via failover. Kafka back: all in Kafka, keys on their partition.
async fn outage_and_recovery(failover: FailoverConfig) -> anyhow::Result<()> {
    let backend = format!("{:?}", failover.backend).to_lowercase();
    let stack = gateway_with(failover.clone()).await?;
    let _worker = start_worker(&stack, failover, |_| {}).await?;
    stack.cluster.broker_down(-1).await?;
    let _ = stack.handle.refresh_metadata().await; // notices the outage at once
    let records = outage_batch(&backend);
    let results = stack.produce(records.clone()).await?;
    for r in &results {
        match &r.outcome {
            Some(pb::record_result::Outcome::Failover(f)) => {
                assert_eq!(f.backend, backend);
                assert!(!f.entry_id.is_empty());
            }
            other => panic!("{backend}: not acked through failover: {other:?}"),
        }
    }
    stack.cluster.broker_up(-1).await?;
    let bootstrap = stack.cluster.bootstrap_servers().to_string();
    let landed = tokio::task::spawn_blocking(move || {
        consume_unique(&bootstrap, "fo", 40, Duration::from_secs(60))
    })
    .await??;
    let by_id: HashMap<String, _> = landed
        .iter()
        .filter_map(|l| Some((l.message_id.clone()?, l)))
        .collect();
    for r in &records {
        let l = by_id
            .get(&r.message_id)
            .unwrap_or_else(|| panic!("{backend}: {} never reached kafka", r.message_id));
        assert_eq!(l.value, r.value);
        if let Some(key) = &r.key {
            assert_eq!(
                l.partition,
                partition_for_key(key, PARTITIONS as usize),
                "{backend}: STRICT key moved"
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_and_recovery_on_sqlite() -> anyhow::Result<()> {
    let (cfg, dir) = sqlite();
    outage_and_recovery(cfg).await?;
    std::fs::remove_dir_all(dir).ok();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_and_recovery_on_postgres() -> anyhow::Result<()> {
    outage_and_recovery(postgres()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_and_recovery_on_sqs() -> anyhow::Result<()> {
    let moto = Moto::start();
    outage_and_recovery(sqs(&moto)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_down_too_means_no_acknowledgement() -> anyhow::Result<()> {
    let mut moto = Moto::start();
    let stack = gateway_with(sqs(&moto)).await?;
    moto.kill();
    stack.cluster.broker_down(-1).await?;
    let _ = stack.handle.refresh_metadata().await;
    let results = stack.produce(outage_batch("down")).await?;
    for r in &results {
        let e =
            record_error(r).unwrap_or_else(|| panic!("acknowledged without kafka or queue: {r:?}"));
        assert_eq!(e.code, Code::Unavailable as i32);
        assert!(e.retryable);
        assert!(e.message.contains("failover"), "{}", e.message);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_attempts_dead_letters_then_redrive_delivers() -> anyhow::Result<()> {
    let (cfg, dir) = sqlite();
    let stack = gateway_with(cfg.clone()).await?;
    let worker = start_worker(&stack, cfg, |w| w.retry.max_attempts = 2).await?;
    // A STRICT key whose partition has no leader: the gateway fails it over.
    let target = 3;
    let key = (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| partition_for_key(k.as_bytes(), PARTITIONS as usize) == target)
        .unwrap();
    let leader = stack.leader_of("fo", target).unwrap();
    stack.cluster.partition_leader("fo", target, None).await?;
    stack.handle.refresh_metadata().await?;
    let mut rec = record("fo", Some(&key), "doomed");
    rec.message_id = "doomed-1".into();
    let results = stack.produce(vec![rec]).await?;
    assert!(
        matches!(
            results[0].outcome,
            Some(pb::record_result::Outcome::Failover(_))
        ),
        "{results:?}"
    );

    let mut admin = RetryAdminClient::connect(format!("http://{}", worker.admin)).await?;
    // The health gate: while its partition has no leader, the record waits in the queue
    // without spending attempts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats = admin.stats(rpb::StatsRequest {}).await?.into_inner();
    assert_eq!((stats.depth, stats.dead_letters), (1, 0), "{stats:?}");

    // The leader returns but answers too slowly: each attempt times out, and after
    // max_attempts the record is dead-lettered with its last error.
    stack
        .cluster
        .partition_leader("fo", target, Some(leader))
        .await?;
    stack
        .cluster
        .broker_rtt(leader, Duration::from_secs(3))
        .await?;
    let dead = first_dead_letter(
        &mut admin,
        Duration::from_secs(40),
        "the record never reached the dead-letter store",
    )
    .await?;
    assert_eq!(dead.message_id, "doomed-1");
    assert_eq!(dead.attempts, 2);
    assert!(dead.reason.contains("max attempts"), "{}", dead.reason);
    let stats = admin.stats(rpb::StatsRequest {}).await?.into_inner();
    assert_eq!((stats.depth, stats.dead_letters), (0, 1));

    // Fix the broker and redrive: the record reaches its partition.
    stack.cluster.broker_rtt(leader, Duration::ZERO).await?;
    // Let the worker's breaker for the partition go half-open again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let n = admin
        .redrive(rpb::RedriveRequest {
            ids: vec![dead.id.clone()],
            all: false,
        })
        .await?
        .into_inner()
        .redriven;
    assert_eq!(n, 1);
    let bootstrap = stack.cluster.bootstrap_servers().to_string();
    let landed = tokio::task::spawn_blocking(move || {
        consume_all(&bootstrap, "fo", 1, Duration::from_secs(30))
    })
    .await??;
    assert_eq!(landed.len(), 1);
    assert_eq!(landed[0].message_id.as_deref(), Some("doomed-1"));
    assert_eq!(landed[0].partition, target);
    let bad = admin
        .redrive(rpb::RedriveRequest {
            ids: vec![],
            all: false,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    std::fs::remove_dir_all(dir).ok();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_one_queue_deliver_everything() -> anyhow::Result<()> {
    let cfg = postgres();
    let stack = gateway_with(cfg.clone()).await?;
    stack.cluster.broker_down(-1).await?;
    let _ = stack.handle.refresh_metadata().await;
    let mut all = Vec::new();
    for round in 0..5 {
        let batch = outage_batch(&format!("two{round}"));
        let results = stack.produce(batch.clone()).await?;
        assert!(results
            .iter()
            .all(|r| matches!(r.outcome, Some(pb::record_result::Outcome::Failover(_)))));
        all.extend(batch);
    }
    let _w1 = start_worker(&stack, cfg.clone(), |w| w.retry.runner_count = 2).await?;
    let _w2 = start_worker(&stack, cfg, |w| w.retry.runner_count = 2).await?;
    stack.cluster.broker_up(-1).await?;
    let bootstrap = stack.cluster.bootstrap_servers().to_string();
    let n = all.len();
    let landed = tokio::task::spawn_blocking(move || {
        consume_unique(&bootstrap, "fo", n, Duration::from_secs(60))
    })
    .await??;
    let ids: std::collections::HashSet<_> =
        landed.iter().filter_map(|l| l.message_id.clone()).collect();
    for r in &all {
        assert!(ids.contains(&r.message_id), "{} missing", r.message_id);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_shutdown_during_an_outage_loses_no_acknowledged_record() -> anyhow::Result<()> {
    let (cfg, dir) = sqlite();
    let mut stack = gateway_with(cfg.clone()).await?;
    stack.cluster.broker_down(-1).await?;
    // In flight when shutdown starts: each waits out a Kafka write timeout first.
    let mut client = stack.client().await?;
    let batch = outage_batch("term");
    let sent = batch.clone();
    let in_flight =
        tokio::spawn(async move { client.produce(pb::ProduceRequest { records: sent }).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack.shutdown().await?;
    let results = in_flight.await??.into_inner().results;
    let acked: Vec<&str> = results
        .iter()
        .filter(|r| {
            matches!(r.outcome, Some(pb::record_result::Outcome::Failover(_)))
                || kafka_ack(r).is_some()
        })
        .map(|r| r.message_id.as_str())
        .collect();
    assert_eq!(
        acked.len(),
        batch.len(),
        "every in-flight record was answered with an ack: {results:?}"
    );
    // A worker started after the gateway is gone drains them all.
    let _worker = start_worker(&stack, cfg, |_| {}).await?;
    stack.cluster.broker_up(-1).await?;
    let bootstrap = stack.cluster.bootstrap_servers().to_string();
    let landed = tokio::task::spawn_blocking(move || {
        consume_unique(&bootstrap, "fo", 40, Duration::from_secs(60))
    })
    .await??;
    let ids: std::collections::HashSet<_> =
        landed.iter().filter_map(|l| l.message_id.clone()).collect();
    for id in acked {
        assert!(ids.contains(id), "acknowledged {id} was lost");
    }
    std::fs::remove_dir_all(dir).ok();
    Ok(())
}

/// A record larger than an SQS message fails over through S3 (the extended-client
/// pattern): acknowledged during the outage, delivered byte for byte after it, and its
/// object deleted once it is in Kafka. Before offload, the gateway refused such records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_records_fail_over_through_s3_and_their_objects_go_once_delivered(
) -> anyhow::Result<()> {
    let moto = Moto::start();
    let bucket = unique("it-payloads").to_lowercase();
    let mut failover = sqs(&moto);
    failover.sqs.offload.bucket = bucket.clone();
    failover.sqs.offload.create_bucket = true;
    // Kafka's own default limit (message.max.bytes) is about 1 MB.
    let stack = GatewayStack::start(&[("fo", PARTITIONS)], {
        let failover = failover.clone();
        move |c| {
            c.limits.max_record_bytes = 900 * 1024;
            c.failover = failover
        }
    })
    .await?;
    let _worker = start_worker(&stack, failover, |_| {}).await?;
    stack.cluster.broker_down(-1).await?;
    let _ = stack.handle.refresh_metadata().await;
    let big: String = (0..800 * 1024)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let mut records = vec![record("fo", None, &big), record("fo", None, "small")];
    records[0].message_id = "big".into();
    records[1].message_id = "small".into();
    let results = stack.produce(records).await?;
    for r in &results {
        assert!(
            matches!(r.outcome, Some(pb::record_result::Outcome::Failover(_))),
            "{r:?}"
        );
    }
    assert_eq!(
        moto.s3_keys(&bucket).await?.len(),
        1,
        "the large body is an object"
    );

    stack.cluster.broker_up(-1).await?;
    let bootstrap = stack.cluster.bootstrap_servers().to_string();
    let landed = tokio::task::spawn_blocking(move || {
        consume_unique(&bootstrap, "fo", 2, Duration::from_secs(60))
    })
    .await??;
    let delivered = landed
        .iter()
        .find(|l| l.message_id.as_deref() == Some("big"))
        .expect("the large record reached kafka");
    assert_eq!(delivered.value, big.as_bytes());
    let end = Instant::now() + Duration::from_secs(20);
    while !moto.s3_keys(&bucket).await?.is_empty() {
        anyhow::ensure!(Instant::now() < end, "the object outlived its delivery");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// The highest `in_flight` (leased) count seen over `window`.
async fn most_leased(q: &dyn ballast_failover::FailoverQueue, window: Duration) -> u64 {
    let end = Instant::now() + window;
    let mut most = 0;
    while Instant::now() < end {
        most = most.max(q.stats().await.map(|s| s.in_flight).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    most
}

/// `retry.pipeline_depth`: while Kafka is slow to acknowledge, a drain loop with depth 1
/// holds one batch at a time, and with depth 3 it leases the next batches while the first
/// is still in Kafka. Everything is delivered either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_loop_leases_the_next_batch_while_kafka_holds_the_last() -> anyhow::Result<()> {
    let (cfg, dir) = sqlite();
    let stack = gateway_with(cfg.clone()).await?;
    let queue = cfg.open().await?.expect("a queue");
    let n = 300;
    let bodies: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            ballast_failover::envelope::encode(&ballast_failover::envelope::Envelope {
                topic: "fo".into(),
                value: format!("p-{i}").into_bytes().into(),
                message_id: format!("pipe-{i}"),
                first_failed_at_unix_ms: 1,
                ..Default::default()
            })
        })
        .collect();
    queue.enqueue(&bodies, Duration::ZERO).await?;
    for broker in 1..=3 {
        stack
            .cluster
            .broker_rtt(broker, Duration::from_millis(300))
            .await?;
    }
    let one_loop = |depth: usize| {
        move |w: &mut WorkerConfig| {
            w.retry.runner_count = 1;
            w.retry.max_number_of_messages = 10;
            w.retry.pipeline_depth = depth;
        }
    };
    let flat = start_worker(&stack, cfg.clone(), one_loop(1)).await?;
    let most = most_leased(queue.as_ref(), Duration::from_secs(3)).await;
    assert!(
        (1..=10).contains(&most),
        "depth 1 holds one batch of 10 at a time, and holds one: at most {most} leased"
    );
    drop(flat);
    let _piped = start_worker(&stack, cfg, one_loop(3)).await?;
    let most = most_leased(queue.as_ref(), Duration::from_secs(3)).await;
    assert!(
        most > 20,
        "depth 3 leases a third batch while two are in Kafka: at most {most} leased"
    );
    for broker in 1..=3 {
        stack.cluster.broker_rtt(broker, Duration::ZERO).await?;
    }
    let bootstrap = stack.cluster.bootstrap_servers().to_string();
    let landed = tokio::task::spawn_blocking(move || {
        consume_unique(&bootstrap, "fo", n, Duration::from_secs(60))
    })
    .await??;
    // Every record is delivered. The first worker stops with a batch in a slow Kafka, so
    // an attempt that timed out yet landed may have a duplicate (at least once).
    let ids: std::collections::HashSet<_> =
        landed.iter().filter_map(|l| l.message_id.clone()).collect();
    let expected: std::collections::HashSet<_> = (0..n).map(|i| format!("pipe-{i}")).collect();
    assert_eq!(ids, expected);
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// The value of the unlabelled series `name` on a worker's `/metrics` page.
async fn gauge(worker: &Worker, name: &str) -> anyhow::Result<Option<i64>> {
    let page = ballast_testkit::http_get(worker.metrics, "/metrics").await?;
    Ok(page.lines().find_map(|l| {
        let (series, value) = l.split_once(' ')?;
        (series == name).then(|| value.trim().parse().ok())?
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_gauges_are_counted_every_retry_stats_interval() -> anyhow::Result<()> {
    let (failover, dir) = sqlite();
    let stack = gateway_with(failover.clone()).await?;
    // Both workers count the empty queue as they start. Neither drains what fails over
    // later: the cluster is down, and no entry is due for an hour.
    let fast = start_worker(&stack, failover.clone(), |c| {
        c.retry.after = Duration::from_secs(3600);
        c.retry.stats_interval = Duration::from_millis(200);
    })
    .await?;
    let slow = start_worker(&stack, failover, |c| {
        c.retry.after = Duration::from_secs(3600);
        c.retry.stats_interval = Duration::from_secs(3600);
    })
    .await?;
    let depth = "ballast_retry_queue_depth";
    let deadline = Instant::now() + Duration::from_secs(10);
    while gauge(&slow, depth).await? != Some(0) || gauge(&fast, depth).await? != Some(0) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no first count of the empty queue"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stack.cluster.broker_down(-1).await?;
    let _ = stack.handle.refresh_metadata().await;
    let results = stack.produce(outage_batch("gauges")).await?;
    assert!(results
        .iter()
        .all(|r| matches!(r.outcome, Some(pb::record_result::Outcome::Failover(_)))));
    let counted = Instant::now();
    while gauge(&fast, depth).await? != Some(40) {
        anyhow::ensure!(
            counted.elapsed() < Duration::from_secs(5),
            "a 200ms stats_interval never counted the 40 entries: {:?}",
            gauge(&fast, depth).await?
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Long enough for several counts at any interval of a second or two.
    tokio::time::sleep_until((counted + Duration::from_secs(3)).into()).await;
    assert_eq!(
        gauge(&slow, depth).await?,
        Some(0),
        "a worker counting hourly still shows its first count"
    );
    std::fs::remove_dir_all(dir).ok();
    Ok(())
}

type Admin = RetryAdminClient<tonic::transport::Channel>;

/// The first page of the worker's dead letters.
async fn dead_letters(admin: &mut Admin) -> anyhow::Result<Vec<rpb::DeadLetter>> {
    Ok(admin
        .list_dead_letters(rpb::ListDeadLettersRequest {
            page_size: 10,
            page_token: String::new(),
        })
        .await?
        .into_inner()
        .dead_letters)
}

/// The first dead letter to appear within `within`; fails with `never` otherwise.
async fn first_dead_letter(
    admin: &mut Admin,
    within: Duration,
    never: &str,
) -> anyhow::Result<rpb::DeadLetter> {
    let end = Instant::now() + within;
    loop {
        if let Some(d) = dead_letters(admin).await?.into_iter().next() {
            return Ok(d);
        }
        anyhow::ensure!(Instant::now() < end, "{never}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the worker's queue is empty, failing at once with the dead letters' reasons
/// when anything is dead-lettered.
async fn drained_without_dead_letters(worker: &Worker) -> anyhow::Result<()> {
    let mut admin = RetryAdminClient::connect(format!("http://{}", worker.admin)).await?;
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let s = admin.stats(rpb::StatsRequest {}).await?.into_inner();
        if s.dead_letters > 0 {
            anyhow::bail!("dead-lettered: {:?}", dead_letters(&mut admin).await?);
        }
        if s.depth == 0 {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < end, "never drained: {s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A worker with the default config delivers every record a gateway took, whatever the
/// gateway's `limits.max_record_bytes`: a 1.5 MiB record from a gateway that allows 2 MiB,
/// and one at exactly the default limit that gained a `traceparent` when it failed over.
/// What the broker itself refuses is dead-lettered with the broker's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_delivers_every_record_a_gateway_took_and_only_kafka_refuses_size(
) -> anyhow::Result<()> {
    use ballast_failover::envelope::{self, Envelope, EnvelopeHeader};
    const MIB: usize = 1024 * 1024;
    const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let (cfg, dir) = sqlite();
    let stack = GatewayStack::start(&[("fo", PARTITIONS)], {
        let cfg = cfg.clone();
        move |c| {
            c.limits.max_record_bytes = 2 * MIB;
            c.kafka
                .properties
                .insert("message.max.bytes".into(), (4 * MIB).to_string());
            c.failover = cfg;
        }
    })
    .await?;
    stack.cluster.broker_down(-1).await?;
    let _ = stack.handle.refresh_metadata().await;
    let big = "b".repeat(MIB + MIB / 2);
    let mut rec = record("fo", None, &big);
    rec.message_id = "big-1".into();
    let results = stack.produce(vec![rec]).await?;
    assert!(
        matches!(
            results[0].outcome,
            Some(pb::record_result::Outcome::Failover(_))
        ),
        "{:?}",
        results[0]
            .outcome
            .as_ref()
            .map(|_| record_error(&results[0]))
    );
    stack.cluster.broker_up(-1).await?;
    let at_limit = vec![b'x'; ballast_produce::WriteLimits::default().max_record_bytes];
    let queue = cfg.open().await?.expect("a queue");
    queue
        .enqueue(
            &[envelope::encode(&Envelope {
                topic: "fo".into(),
                value: at_limit.clone().into(),
                message_id: "at-limit-1".into(),
                headers: vec![EnvelopeHeader {
                    key: "traceparent".into(),
                    value: TRACEPARENT.as_bytes().to_vec().into(),
                }],
                first_failed_at_unix_ms: 1,
                ..Default::default()
            })],
            Duration::ZERO,
        )
        .await?;
    let worker = start_worker(&stack, cfg, |_| {}).await?;
    drained_without_dead_letters(&worker).await?;
    let bootstrap = stack.cluster.bootstrap_servers().to_string();
    let landed = tokio::task::spawn_blocking(move || {
        consume_unique(&bootstrap, "fo", 2, Duration::from_secs(30))
    })
    .await??;
    let by_id: HashMap<_, _> = landed
        .iter()
        .map(|l| (l.message_id.clone().unwrap_or_default(), l))
        .collect();
    assert_eq!(by_id["big-1"].value, big.as_bytes());
    assert_eq!(by_id["at-limit-1"].value, at_limit);
    assert!(
        by_id["at-limit-1"]
            .headers
            .iter()
            .any(|(k, v)| k == "traceparent" && v == TRACEPARENT.as_bytes()),
        "{:?}",
        by_id["at-limit-1"].headers
    );

    // The broker refuses the next write for its size: a dead letter with Kafka's reason.
    stack
        .cluster
        .inject_request_errors(ballast_kafka::MockApi::Produce, &["MESSAGE_TOO_LARGE"])
        .await?;
    queue
        .enqueue(
            &[envelope::encode(&Envelope {
                topic: "fo".into(),
                value: b"small".to_vec().into(),
                message_id: "refused-1".into(),
                first_failed_at_unix_ms: 1,
                ..Default::default()
            })],
            Duration::ZERO,
        )
        .await?;
    let mut admin = RetryAdminClient::connect(format!("http://{}", worker.admin)).await?;
    let dead = first_dead_letter(
        &mut admin,
        Duration::from_secs(30),
        "the broker's refusal was never dead-lettered",
    )
    .await?;
    assert_eq!(dead.message_id, "refused-1");
    assert!(
        dead.reason.to_lowercase().contains("too large")
            && !dead.reason.contains("limits.max_record_bytes"),
        "{}",
        dead.reason
    );
    std::fs::remove_dir_all(dir).ok();
    Ok(())
}

/// A broker that goes down and up every 2 s for 2 minutes, with `retry.max_attempts: 5`.
/// Each time it comes back its partitions' breakers go half-open, and only a probe may
/// write (the old worker charged an attempt to every other record of the batch); the records that could not get one were never written, so they spend no
/// attempt, and nothing is dead-lettered. Every record the gateway acknowledged, through
/// Kafka or the queue, is in Kafka on its STRICT key's partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_broker_dead_letters_nothing() -> anyhow::Result<()> {
    let (cfg, dir) = sqlite();
    let stack = gateway_with(cfg.clone()).await?;
    // Five probes close a breaker, an open one tries again within 2 s, and the leader
    // answers in 150 ms: after each return the partition is half-open for over a second
    // (a reconnect, then five probes one after another), while the worker leases batches
    // of 50, of which one may probe.
    let worker = start_worker(&stack, cfg.clone(), |w| {
        w.retry.max_attempts = 5;
        w.retry.max_number_of_messages = 50;
        w.retry.backoff_base = Duration::from_millis(100);
        w.breaker.close_after_successes = 5;
        w.breaker.open_max = Duration::from_secs(2);
        // A write in flight when the leader goes down outlives its 2 s away: librdkafka
        // sends it again once it is back (a reconnect at its latency, then the write), so
        // only the flapping's probes and refusals are in play, not writes that could
        // never have been answered.
        w.kafka.write_timeout = Duration::from_secs(5);
        w.retry.lease = Duration::from_secs(30);
    })
    .await?;
    let target = 2;
    let keys: Vec<String> = (0..10_000)
        .map(|i| format!("flap-{i}"))
        .filter(|k| partition_for_key(k.as_bytes(), PARTITIONS as usize) == target)
        .take(20)
        .collect();
    let leader = stack.leader_of("fo", target).expect("a leader");
    stack
        .cluster
        .broker_rtt(leader, Duration::from_millis(150))
        .await?;
    // A backlog for the partition, waiting when the flapping starts.
    let queue = cfg.open().await?.expect("a queue");
    let seeded: Vec<Vec<u8>> = (0..200)
        .map(|i| {
            ballast_failover::envelope::encode(&ballast_failover::envelope::Envelope {
                topic: "fo".into(),
                key: Some(keys[i % keys.len()].clone().into_bytes().into()),
                value: format!("seeded-{i}").into_bytes().into(),
                message_id: format!("seeded-{i}"),
                first_failed_at_unix_ms: 1,
                ..Default::default()
            })
        })
        .collect();
    queue.enqueue(&seeded, Duration::ZERO).await?;
    let mut expected: std::collections::HashSet<String> =
        (0..200).map(|i| format!("seeded-{i}")).collect();

    let flapping = Duration::from_secs(120);
    let start = Instant::now();
    let flap = async {
        while start.elapsed() < flapping {
            stack.cluster.broker_down(leader).await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            stack.cluster.broker_up(leader).await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        anyhow::Ok(())
    };
    // Meanwhile producers go on writing to the partition: acknowledged by Kafka, or by
    // the queue while the leader is down.
    let feed = async {
        let mut acked = Vec::new();
        let mut i = 0;
        while start.elapsed() < flapping {
            let batch: Vec<pb::Record> = (0..2)
                .map(|j| {
                    let id = format!("fed-{}", i + j);
                    let mut r = record("fo", Some(&keys[(i + j) % keys.len()]), &id);
                    r.message_id = id;
                    r
                })
                .collect();
            i += 2;
            for r in stack.produce(batch).await? {
                if record_error(&r).is_none() {
                    acked.push(r.message_id.clone());
                }
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        anyhow::Ok(acked)
    };
    let (flapped, fed) = tokio::join!(flap, feed);
    flapped?;
    stack.cluster.broker_rtt(leader, Duration::ZERO).await?;
    let fed = fed?;
    assert!(
        fed.len() > 100,
        "the producers were acknowledged: {}",
        fed.len()
    );
    expected.extend(fed);
    drained_without_dead_letters(&worker).await?;
    let bootstrap = stack.cluster.bootstrap_servers().to_string();
    let n = expected.len();
    let landed = tokio::task::spawn_blocking(move || {
        consume_unique(&bootstrap, "fo", n, Duration::from_secs(60))
    })
    .await??;
    let mut ids = std::collections::HashSet::new();
    for l in &landed {
        assert_eq!(l.partition, target, "{:?} left its partition", l.message_id);
        if let Some(id) = &l.message_id {
            ids.insert(id.clone());
        }
    }
    let missing: Vec<_> = expected.difference(&ids).take(10).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not in kafka: {missing:?}"
    );
    std::fs::remove_dir_all(dir).ok();
    Ok(())
}

/// A worker that starts during a partition's outage learns the partition's leader as soon
/// as it returns: a topic whose records the health gate holds back is kept in the
/// periodic metadata refresh (`kafka.metadata_refresh_interval`), not left for the full
/// refresh (here ten minutes away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_during_an_outage_delivers_soon_after_recovery() -> anyhow::Result<()> {
    let (cfg, dir) = sqlite();
    let stack = gateway_with(cfg.clone()).await?;
    let target = 2;
    let key = (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| partition_for_key(k.as_bytes(), PARTITIONS as usize) == target)
        .unwrap();
    let leader = stack.leader_of("fo", target).expect("leader");
    stack.cluster.partition_leader("fo", target, None).await?;
    stack.handle.refresh_metadata().await?;
    let mut rec = record("fo", Some(&key), "held");
    rec.message_id = "held-1".into();
    let results = stack.produce(vec![rec]).await?;
    assert!(
        matches!(
            results[0].outcome,
            Some(pb::record_result::Outcome::Failover(_))
        ),
        "{results:?}"
    );

    // The worker's first (full) refresh sees the partition leaderless; the next full
    // one is ten minutes away.
    let worker = start_worker(&stack, cfg, |w| {
        w.kafka.metadata_refresh_interval = Duration::from_millis(300);
        w.kafka.metadata_full_refresh_interval = Duration::from_secs(600);
    })
    .await?;
    let mut admin = RetryAdminClient::connect(format!("http://{}", worker.admin)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats = admin.stats(rpb::StatsRequest {}).await?.into_inner();
    assert_eq!(
        (stats.depth, stats.dead_letters),
        (1, 0),
        "held back while leaderless: {stats:?}"
    );

    stack
        .cluster
        .partition_leader("fo", target, Some(leader))
        .await?;
    let bootstrap = stack.cluster.bootstrap_servers().to_string();
    let landed = tokio::task::spawn_blocking(move || {
        consume_all(&bootstrap, "fo", 1, Duration::from_secs(20))
    })
    .await??;
    assert_eq!(landed.len(), 1, "delivered within 20 s of recovery");
    assert_eq!(landed[0].message_id.as_deref(), Some("held-1"));
    assert_eq!(landed[0].partition, target);
    drained_without_dead_letters(&worker).await?;
    std::fs::remove_dir_all(dir).ok();
    Ok(())
}
