//! Every wait on the failover path is bounded on the gateway's side. A backend that
//! accepts connections and never answers (a black hole, as across a partition that drops
//! packets) costs a record at most `limits.record_deadline + failover.timeout +
//! failover.write_timeout`, and its answer is honest: `UNAVAILABLE` only when the queue
//! does not hold it, `DEADLINE_EXCEEDED` when it may. Against a real PostgreSQL server and
//! SQS and S3 on moto_server, each behind a relay that black-holes on command.

use ballast_balancer::BreakerConfig;
use ballast_dev::GatewayStack;
use ballast_failover::envelope;
use ballast_failover::{FailoverBackend, FailoverConfig, FailoverQueue, SqlQueue, SqsConfig};
use ballast_proto::common::v1::Code;
use ballast_proto::ingest::v1 as pb;
use ballast_testkit::deps::{hostport, require_postgres, unique, Moto};
use ballast_testkit::fault_proxy::{Fault, FaultProxy};
use ballast_testkit::record;
use sqlx::Connection;
use std::collections::HashSet;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(1);
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
const RECORD_DEADLINE: Duration = Duration::from_secs(1);
/// What the book (docs/src/guarantee.md) promises a record that fails over: its Kafka deadline, then
/// `failover.timeout + failover.write_timeout` and the backstop's grace.
const BOUND: Duration = Duration::from_millis(4500);
/// Room for a loaded machine.
const SLACK: Duration = Duration::from_secs(2);

async fn gateway(
    failover: FailoverConfig,
    max_record_bytes: usize,
) -> anyhow::Result<GatewayStack> {
    let stack = GatewayStack::start(&[("bw", 3)], move |c| {
        c.limits.record_deadline = RECORD_DEADLINE;
        c.limits.max_record_bytes = max_record_bytes;
        // The queue's breaker stays closed, so every record here reaches the backend.
        c.breaker = BreakerConfig {
            failure_threshold: 10_000,
            ..BreakerConfig::default()
        };
        c.failover = FailoverConfig {
            timeout: TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
            ..failover
        };
    })
    .await?;
    stack.cluster.broker_down(-1).await?;
    let _ = stack.handle.refresh_metadata().await;
    Ok(stack)
}

fn records(tag: &str, n: usize, bytes: usize) -> Vec<pb::Record> {
    (0..n)
        .map(|i| {
            let mut r = record("bw", None, &format!("{tag}-{i}-{}", "x".repeat(bytes)));
            r.message_id = format!("{tag}-{i}");
            r
        })
        .collect()
}

/// Sends `records` and checks the answer came within the bound: each record's code.
async fn answered_in_bound(
    stack: &GatewayStack,
    records: Vec<pb::Record>,
) -> anyhow::Result<Vec<(String, Code)>> {
    let ids: Vec<String> = records.iter().map(|r| r.message_id.clone()).collect();
    let began = Instant::now();
    let results = tokio::time::timeout(Duration::from_secs(30), stack.produce(records))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within 30 s"))??;
    let took = began.elapsed();
    anyhow::ensure!(
        took <= BOUND + SLACK,
        "answered after {took:?}; the bound is {BOUND:?}"
    );
    Ok(ids
        .into_iter()
        .zip(results)
        .map(|(id, r)| {
            let code = match &r.outcome {
                Some(pb::record_result::Outcome::Error(e)) => {
                    assert!(e.retryable, "{e:?}");
                    Code::try_from(e.code).expect("a known code")
                }
                other => panic!("{id}: acknowledged by a black-holed queue: {other:?}"),
            };
            (id, code)
        })
        .collect())
}

async fn held_ids(queue: &dyn FailoverQueue) -> anyhow::Result<HashSet<String>> {
    let mut held = HashSet::new();
    loop {
        let got = queue
            .receive(10, Duration::from_millis(500), Duration::from_secs(60))
            .await?;
        if got.is_empty() {
            return Ok(held);
        }
        for l in got {
            held.insert(envelope::decode(&l.body)?.message_id);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_postgres_answers_every_record_within_the_bound() -> anyhow::Result<()> {
    let url = require_postgres();
    let proxy = FaultProxy::start(hostport(&url)).await?;
    let upstream = hostport(&url).to_string();
    let queue = unique("bw");
    let failover = FailoverConfig {
        backend: FailoverBackend::Postgres,
        database_url: url.replacen(&upstream, &proxy.host_port(), 1),
        queue: queue.clone(),
        ..FailoverConfig::default()
    };
    let stack = std::sync::Arc::new(gateway(failover, 1024 * 1024).await?);
    // Warm: the pool holds connections, which the black hole then swallows mid-use.
    for (id, code) in answered_in_bound_ok(&stack, records("warm", 8, 10)).await? {
        anyhow::ensure!(code == "failover", "{id} not acknowledged: {code}");
    }

    // The worst case: the batch is inside its transaction, its INSERT waiting for a lock
    // another session holds, when the black hole opens. The server then finishes the
    // INSERT, but its answer never comes back; PostgreSQL's statement_timeout cannot help.
    let mut locker = sqlx::PgConnection::connect(&url).await?;
    let mut lock = locker.begin().await?;
    sqlx::query("LOCK TABLE ballast_failover_entries IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await?;
    let answers = tokio::spawn({
        let stack = stack.clone();
        async move { answered_in_bound(&stack, records("hole", 40, 100)).await }
    });
    // Only once an INSERT waits for the lock does the black hole open. (Asked outside
    // the lock's transaction, which would see one snapshot of the view throughout.)
    let mut watcher = sqlx::PgConnection::connect(&url).await?;
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let (waiting,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
             AND query LIKE 'INSERT INTO ballast_failover_entries%'",
        )
        .fetch_one(&mut watcher)
        .await?;
        if waiting > 0 {
            break;
        }
        anyhow::ensure!(Instant::now() < end, "no insert waited for the lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.set(Fault::BlackHole);
    lock.rollback().await?;
    let answers = answers.await??;
    for (id, code) in &answers {
        // COMMIT was never sent: the queue cannot hold these.
        assert_eq!(*code, Code::Unavailable, "{id}");
    }

    // The partition heals: what the relay held now arrives, and rolls back.
    proxy.set(Fault::None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let direct = SqlQueue::connect(&url, &queue, 2).await?;
    let held = held_ids(&direct).await?;
    for (id, _) in &answers {
        assert!(
            !held.contains(id),
            "{id} was answered UNAVAILABLE, yet is held"
        );
    }
    assert_eq!(held.len(), 8, "the warm-up records are held: {held:?}");
    // And the gateway's pool has recovered.
    for (id, code) in answered_in_bound_ok(&stack, records("after", 8, 10)).await? {
        anyhow::ensure!(code == "failover", "{id} not acknowledged: {code}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_sqs_and_s3_answer_every_record_within_the_bound() -> anyhow::Result<()> {
    let moto = Moto::start();
    let proxy = FaultProxy::start(hostport(&moto.endpoint())).await?;
    let (failover, direct) = sqs_with_offload(&moto, &proxy);
    let stack = gateway(failover, 512 * 1024).await?;

    proxy.set(Fault::BlackHole);
    // Large records: ten S3 puts in one batch, sent at once, none answered. Nothing was
    // sent to SQS, so the queue cannot hold them.
    let large = answered_in_bound(&stack, records("large", 10, 200 * 1024)).await?;
    for (id, code) in &large {
        assert_eq!(*code, Code::Unavailable, "{id}");
    }

    // Small records: their SendMessageBatch goes out and is never answered. SQS may have
    // stored them, so the answer says so.
    let small = answered_in_bound(&stack, records("small", 10, 10)).await?;
    for (id, code) in &small {
        assert_eq!(*code, Code::DeadlineExceeded, "{id}");
    }
    proxy.set(Fault::None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let direct = ballast_failover::SqsQueue::connect(&direct.sqs, WRITE_TIMEOUT).await?;
    let held = held_ids(&direct).await?;
    for (id, _) in &large {
        assert!(
            !held.contains(id),
            "{id} was answered UNAVAILABLE, yet is held"
        );
    }
    Ok(())
}

/// SQS with S3 offload on moto: through `proxy` (the gateway's), and direct (for looking).
fn sqs_with_offload(moto: &Moto, proxy: &FaultProxy) -> (FailoverConfig, FailoverConfig) {
    let name = unique("bw");
    let bucket = unique("bw-payloads").to_lowercase();
    let cfg = |endpoint: String| {
        let mut sqs = SqsConfig::local(endpoint, &name);
        sqs.offload.bucket = bucket.clone();
        sqs.offload.create_bucket = true;
        FailoverConfig {
            backend: FailoverBackend::Sqs,
            sqs,
            ..FailoverConfig::default()
        }
    };
    (
        cfg(format!("http://{}", proxy.host_port())),
        cfg(moto.endpoint()),
    )
}

/// A `SendMessageBatch` that went out and was never answered may have landed. Its records
/// are answered `DEADLINE_EXCEEDED`, their S3 objects stay, and once the request does
/// arrive, the retry worker delivers every record with its body: none becomes a false
/// "body lost" dead letter, as when the objects were deleted on the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_may_have_landed_keeps_its_objects_and_is_delivered() -> anyhow::Result<()> {
    let moto = Moto::start();
    let proxy = FaultProxy::start(hostport(&moto.endpoint())).await?;
    let (failover, direct) = sqs_with_offload(&moto, &proxy);
    let bucket = direct.sqs.offload.bucket.clone();
    let stack = gateway(failover, 512 * 1024).await?;

    // S3 answers; the SQS send hangs.
    proxy.set(Fault::HoldRequests("AmazonSQS.SendMessageBatch"));
    let records = records("landed", 3, 200 * 1024);
    let answers = answered_in_bound(&stack, records.clone()).await?;
    for (id, code) in &answers {
        assert_eq!(*code, Code::DeadlineExceeded, "{id}");
    }
    assert_eq!(
        moto.s3_keys(&bucket).await?.len(),
        3,
        "the objects of messages that may have landed are kept"
    );

    // The held send arrives; Kafka is back; a worker drains the queue.
    proxy.set(Fault::None);
    stack.cluster.broker_up(-1).await?;
    let worker = ballast_dev::start_worker(&stack, direct.clone(), |_| {}).await?;
    let bootstrap = stack.cluster.bootstrap_servers().to_string();
    let landed = tokio::task::spawn_blocking(move || {
        ballast_testkit::consume_unique(&bootstrap, "bw", 3, Duration::from_secs(60))
    })
    .await??;
    for r in &records {
        let l = landed
            .iter()
            .find(|l| l.message_id.as_deref() == Some(r.message_id.as_str()))
            .unwrap_or_else(|| panic!("{} never reached kafka", r.message_id));
        assert_eq!(l.value, r.value, "{}", r.message_id);
    }
    // Once the queue is empty, no copy is left to turn into a dead letter.
    let queue = ballast_failover::SqsQueue::connect(&direct.sqs, WRITE_TIMEOUT).await?;
    let end = Instant::now() + Duration::from_secs(30);
    let stats = loop {
        let s = queue.stats().await?;
        if s.depth == 0 && s.in_flight == 0 {
            break s;
        }
        anyhow::ensure!(Instant::now() < end, "the queue did not drain: {s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(stats.dead_letters, 0, "nothing dead-lettered");
    drop(worker);
    Ok(())
}

/// [`answered_in_bound`] for records expected to be acknowledged: each record's outcome
/// ("failover", or the error's code).
async fn answered_in_bound_ok(
    stack: &GatewayStack,
    records: Vec<pb::Record>,
) -> anyhow::Result<Vec<(String, String)>> {
    let ids: Vec<String> = records.iter().map(|r| r.message_id.clone()).collect();
    let results = tokio::time::timeout(BOUND + SLACK, stack.produce(records))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {:?}", BOUND + SLACK))??;
    Ok(ids
        .into_iter()
        .zip(results)
        .map(|(id, r)| {
            let outcome = match &r.outcome {
                Some(pb::record_result::Outcome::Failover(_)) => "failover".to_string(),
                other => format!("{other:?}"),
            };
            (id, outcome)
        })
        .collect())
}
