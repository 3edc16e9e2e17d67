//! Ordered failover end to end (`ordering: partition`), against the mock cluster over TCP,
//! on a real PostgreSQL server and on SQS FIFO queues (moto_server, divert marks in its
//! S3): once a key's partition has failed over, the key's later records follow it into
//! the queue, at any gateway (one started after the outage included), until the retry
//! worker has delivered the earlier ones; the partition's last value in Kafka is then the
//! last one acknowledged. Under `ordering: none` the same run writes directly again as
//! soon as the partition recovers.

use ballast_balancer::partition_for_key;
use ballast_dev::{send_until_acked, start_worker, Acked as Via, GatewayStack};
use ballast_failover::{FailoverBackend, FailoverConfig, OrderingConfig, SqsConfig};
use ballast_gateway::{Gateway, GatewayConfig, LocalGateway};
use ballast_proto::ingest::v1 as pb;
use ballast_proto::ingest::v1::ingest_client::IngestClient;
use ballast_testkit::deps::{hostport, require_postgres, unique, Moto};
use ballast_testkit::{consume_all, record};
use std::time::{Duration, Instant};

const TOPIC: &str = "profiles";
const PARTITIONS: i32 = 3;
const LEASE: Duration = Duration::from_millis(500);
const RECORD_DEADLINE: Duration = Duration::from_secs(1);
/// On SQS a divert ends only once a barrier has gone through the group after the last
/// send (a sweep, a receive, a gateway's read of the marks: about three leases), so a
/// record is held long enough for that.
const SQS_RECORD_DEADLINE: Duration = Duration::from_secs(6);

fn postgres() -> FailoverConfig {
    FailoverConfig {
        backend: FailoverBackend::Postgres,
        database_url: require_postgres(),
        queue: unique("ordered-it"),
        ..FailoverConfig::default()
    }
}

/// FIFO queues on moto_server, with the divert marks in its S3.
fn sqs_fifo(moto: &Moto) -> FailoverConfig {
    let mut sqs = SqsConfig::local(moto.endpoint(), &format!("{}.fifo", unique("ordered-it")));
    sqs.offload.bucket = unique("ordered-it").to_lowercase();
    sqs.offload.create_bucket = true;
    FailoverConfig {
        backend: FailoverBackend::Sqs,
        sqs,
        write_timeout: Duration::from_secs(2),
        ..FailoverConfig::default()
    }
}

fn deadline(failover: &FailoverConfig) -> Duration {
    if failover.backend == FailoverBackend::Sqs {
        SQS_RECORD_DEADLINE
    } else {
        RECORD_DEADLINE
    }
}

fn ordering(ordered: bool) -> OrderingConfig {
    let mut o = if ordered {
        OrderingConfig::default()
    } else {
        OrderingConfig::unordered()
    };
    o.lease = LEASE;
    o
}

fn tune(c: &mut GatewayConfig, failover: &FailoverConfig, ordered: bool) {
    c.failover = failover.clone();
    c.ordering = ordering(ordered);
    c.kafka.write_timeout = Duration::from_millis(500);
    c.limits.record_deadline = deadline(failover);
}

/// A second gateway on the stack's cluster and queue.
async fn another_gateway(
    stack: &GatewayStack,
    failover: &FailoverConfig,
    ordered: bool,
) -> anyhow::Result<LocalGateway> {
    let mut c = GatewayConfig::default();
    c.kafka.bootstrap_servers = stack.cluster.bootstrap_servers().to_string();
    tune(&mut c, failover, ordered);
    let g = Gateway::new(c).await?;
    g.handle().refresh_metadata().await?;
    let local = g.spawn_local().await?;
    ballast_testkit::wait_serving(local.addr).await?;
    Ok(local)
}

/// Waits until the gateway's unlabelled gauge `name` reads `want`.
async fn wait_gauge(admin: std::net::SocketAddr, name: &str, want: i64) -> anyhow::Result<()> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let page = ballast_testkit::http_get(admin, "/metrics").await?;
        let got: Option<i64> = page.lines().find_map(|l| {
            let (series, value) = l.split_once(' ')?;
            (series == name).then(|| value.trim().parse().ok())?
        });
        if got == Some(want) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < end, "{name} is {got:?}, not {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes one value of `key` and waits for its acknowledgement, resending on a
/// retryable error, as a client that writes a key's values one after another does.
async fn write(addr: std::net::SocketAddr, key: &str, value: usize) -> anyhow::Result<Via> {
    let mut client = IngestClient::connect(format!("http://{addr}")).await?;
    let mut rec = record(TOPIC, Some(key), &value.to_string());
    rec.message_id = format!("{key}-{value}");
    let give_up = Instant::now() + Duration::from_secs(30);
    send_until_acked(&mut client, rec, Duration::from_millis(100), give_up).await
}

fn key_on(partition: i32) -> String {
    (0..1000)
        .map(|i| format!("user-{i}"))
        .find(|k| partition_for_key(k.as_bytes(), PARTITIONS as usize) == partition)
        .unwrap()
}

/// The values of `key` in Kafka, by offset.
async fn values_in_kafka(
    stack: &GatewayStack,
    key: &str,
    at_least: usize,
) -> anyhow::Result<Vec<usize>> {
    let bootstrap = stack.cluster.bootstrap_servers().to_string();
    let landed = tokio::task::spawn_blocking(move || {
        consume_all(&bootstrap, TOPIC, at_least, Duration::from_secs(30))
    })
    .await??;
    let mut mine: Vec<_> = landed
        .into_iter()
        .filter(|l| l.key.as_deref() == Some(key.as_bytes()))
        .collect();
    mine.sort_by_key(|l| (l.partition, l.offset));
    Ok(mine
        .iter()
        .map(|l| String::from_utf8_lossy(&l.value).parse().unwrap())
        .collect())
}

/// Whether each value's last copy comes after the last copy of every smaller value: the
/// acknowledged order, duplicates allowed.
fn last_copies_in_order(values: &[usize]) -> bool {
    let last = |v: usize| values.iter().rposition(|x| *x == v);
    let max = values.iter().copied().max().unwrap_or(0);
    (1..=max).all(|v| match (last(v - 1), last(v)) {
        (Some(a), Some(b)) => a < b,
        _ => false,
    })
}

struct Run {
    record_deadline: Duration,
    /// On SQS, the objects in the offload bucket while the partition was diverted.
    marks_seen: Vec<String>,
    /// How each value was acknowledged, by phase.
    outage: Vec<Via>,
    after_recovery_no_worker: Vec<Via>,
    /// How long each of those took to be acknowledged.
    after_recovery_took: Vec<Duration>,
    /// Values written once the worker runs, until one went directly to Kafka.
    until_direct: usize,
    in_kafka: Vec<usize>,
}

/// Values 0..10 go directly; the key's partition loses its leader and 10..20 fail over
/// through gateway A; the leader returns, gateway B starts, and 20..25 go through B with
/// no worker running; then a worker drains the queue while the client keeps writing.
async fn outage_run(
    failover: FailoverConfig,
    ordered: bool,
    moto: Option<&Moto>,
) -> anyhow::Result<Run> {
    let f = failover.clone();
    let stack = GatewayStack::start(&[(TOPIC, PARTITIONS)], move |c| tune(c, &f, ordered)).await?;
    let target = 1;
    let key = key_on(target);
    for v in 0..10 {
        assert_eq!(write(stack.addr, &key, v).await?, Via::Kafka, "value {v}");
    }
    let leader = stack.leader_of(TOPIC, target).expect("leader");
    stack.cluster.partition_leader(TOPIC, target, None).await?;
    stack.handle.refresh_metadata().await?;
    let mut outage = Vec::new();
    for v in 10..20 {
        outage.push(write(stack.addr, &key, v).await?);
    }
    if ordered {
        wait_gauge(
            stack.admin_addr,
            "ballast_gateway_ordering_diverted_partitions",
            1,
        )
        .await?;
    }
    let marks_seen = match moto {
        Some(m) => m.s3_keys(&failover.sqs.offload.bucket).await?,
        None => Vec::new(),
    };
    stack
        .cluster
        .partition_leader(TOPIC, target, Some(leader))
        .await?;
    stack.handle.refresh_metadata().await?;
    let b = another_gateway(&stack, &failover, ordered).await?;
    let mut after = Vec::new();
    let mut took = Vec::new();
    for v in 20..25 {
        let addr = if v % 2 == 0 { b.addr } else { stack.addr };
        let start = Instant::now();
        after.push(write(addr, &key, v).await?);
        took.push(start.elapsed());
    }
    let _worker = start_worker(&stack, failover.clone(), |w| {
        w.ordering = ordering(ordered);
        w.kafka.write_timeout = Duration::from_millis(500);
        w.retry.lease = Duration::from_secs(5);
        // SQS long-polls in whole seconds, and on moto a long poll made while this
        // worker's own batch holds the FIFO group returns only at its end.
        if w.failover.backend == FailoverBackend::Sqs {
            w.retry.wait_time = Duration::ZERO;
        }
    })
    .await?;
    let mut v = 25;
    let drain = Instant::now();
    let until_direct = loop {
        let addr = if v % 2 == 0 { b.addr } else { stack.addr };
        let via = write(addr, &key, v).await?;
        v += 1;
        if via == Via::Kafka {
            break v - 25;
        }
        anyhow::ensure!(
            v < 400 && drain.elapsed() < Duration::from_secs(90),
            "the partition never went direct again ({} values in {:?})",
            v - 25,
            drain.elapsed()
        );
    };
    // A few more directly, then the last value.
    for _ in 0..5 {
        write(stack.addr, &key, v).await?;
        v += 1;
    }
    let in_kafka = values_in_kafka(&stack, &key, v).await?;
    Ok(Run {
        record_deadline: deadline(&failover),
        marks_seen,
        outage,
        after_recovery_no_worker: after,
        after_recovery_took: took,
        until_direct,
        in_kafka,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_keeps_its_order_through_failover_at_every_gateway() -> anyhow::Result<()> {
    assert_ordered(outage_run(postgres(), true, None).await?, "postgres")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_keeps_its_order_through_failover_on_sqs_fifo() -> anyhow::Result<()> {
    let moto = Moto::start();
    let failover = sqs_fifo(&moto);
    let run = outage_run(failover.clone(), true, Some(&moto)).await?;
    // The drained partition's mark is gone, and the marks sit outside the offload prefix.
    let keys = moto.s3_keys(&failover.sqs.offload.bucket).await?;
    assert!(
        keys.iter().all(|k| !k.starts_with("ballast-diverts/")),
        "divert cleared: {keys:?}"
    );
    let seen = run.marks_seen.clone();
    let queue = failover.sqs.queue.clone();
    assert_eq!(
        seen,
        vec![format!("ballast-diverts/{queue}/{TOPIC}/1")],
        "the mark, while diverted"
    );
    assert!(!seen[0].starts_with(&failover.sqs.offload.prefix));
    assert_ordered(run, "sqs fifo")
}

fn assert_ordered(run: Run, on: &str) -> anyhow::Result<()> {
    assert!(
        run.outage.iter().all(|v| *v == Via::Queue),
        "{:?}",
        run.outage
    );
    // The partition is healthy again, but its earlier records wait in the queue: the
    // key's later records follow them, at a gateway that started after the outage too.
    assert!(
        run.after_recovery_no_worker
            .iter()
            .all(|v| *v == Via::Queue),
        "sticky divert: {:?}",
        run.after_recovery_no_worker
    );
    // With no worker draining, each was held half its deadline, waiting for the divert to
    // end, before it went to the queue.
    assert!(
        run.after_recovery_took
            .iter()
            .all(|t| *t >= run.record_deadline / 2),
        "held for half the deadline: {:?}",
        run.after_recovery_took
    );
    let last = *run.in_kafka.last().expect("values in kafka");
    let max = run.in_kafka.iter().copied().max().unwrap();
    assert_eq!(
        last, max,
        "the last value in Kafka is the last acknowledged"
    );
    assert!(
        last_copies_in_order(&run.in_kafka),
        "acknowledged order: {:?}",
        run.in_kafka
    );
    eprintln!(
        "ordered ({on}): direct again after {} more values; {} copies for {} values",
        run.until_direct,
        run.in_kafka.len(),
        max + 1
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unordered_topics_write_directly_as_soon_as_the_partition_recovers() -> anyhow::Result<()> {
    let run = outage_run(postgres(), false, None).await?;
    assert!(
        run.outage.iter().all(|v| *v == Via::Queue),
        "{:?}",
        run.outage
    );
    assert!(
        run.after_recovery_no_worker
            .iter()
            .all(|v| *v == Via::Kafka),
        "no divert under ordering: none: {:?}",
        run.after_recovery_no_worker
    );
    // Values 20..25 reached Kafka before the queue's 10..20: out of order.
    assert!(!last_copies_in_order(&run.in_kafka), "{:?}", run.in_kafka);
    Ok(())
}

/// The price of ordering: a gateway that cannot read the diverted partitions for a lease
/// sends ordered fixed-partition records to the queue, and with the queue down too they
/// get a retryable UNAVAILABLE although Kafka is healthy; unkeyed records still go to
/// Kafka, and once the database is back, keyed records do too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_writes_depend_on_the_failover_database() -> anyhow::Result<()> {
    use ballast_testkit::fault_proxy::{Fault, FaultProxy};
    let url = require_postgres();
    let proxy = FaultProxy::start(hostport(&url)).await?;
    let upstream = hostport(&url).to_string();
    let failover = FailoverConfig {
        database_url: url.replacen(&upstream, &proxy.host_port(), 1),
        ..postgres()
    };
    let f = failover.clone();
    let stack = GatewayStack::start(&[(TOPIC, PARTITIONS)], move |c| tune(c, &f, true)).await?;
    let key = key_on(0);
    assert_eq!(
        write(stack.addr, &key, 0).await?,
        Via::Kafka,
        "read before serving"
    );

    proxy.set(Fault::Cut);
    tokio::time::sleep(LEASE * 2).await;
    let mut rec = record(TOPIC, Some(&key), "1");
    rec.message_id = "cut-1".into();
    let unkeyed = record(TOPIC, None, "unkeyed");
    let start = Instant::now();
    // A quarter of the deadline in, the held record still holds its in-flight bytes.
    let held_bytes = async {
        tokio::time::sleep(RECORD_DEADLINE / 4).await;
        let page = ballast_testkit::http_get(stack.admin_addr, "/metrics").await?;
        anyhow::Ok(page.lines().find_map(|l| {
            let (series, value) = l.split_once(' ')?;
            (series == "ballast_gateway_inflight_bytes")
                .then(|| value.trim().parse::<i64>().ok())?
        }))
    };
    let (res, held_bytes) = tokio::join!(stack.produce(vec![rec, unkeyed]), held_bytes);
    let (res, held_bytes) = (res?, held_bytes?);
    let took = start.elapsed();
    assert!(
        held_bytes.is_some_and(|b| b > 0),
        "in-flight bytes while held: {held_bytes:?}"
    );
    let e = ballast_testkit::record_error(&res[0])
        .unwrap_or_else(|| panic!("acknowledged without the database: {:?}", res[0]));
    assert_eq!(
        e.code,
        ballast_proto::common::v1::Code::Unavailable as i32,
        "{e:?}"
    );
    assert!(
        e.retryable && e.message.contains("diverted"),
        "{}",
        e.message
    );
    assert!(
        matches!(res[1].outcome, Some(pb::record_result::Outcome::Kafka(_))),
        "unkeyed records do not depend on it: {:?}",
        res[1]
    );
    // Held half its deadline for a clean read of the marks, then refused by the queue.
    assert!(took >= RECORD_DEADLINE / 2, "answered after {took:?}");

    assert_eq!(stack.handle.ordering_lease_held(), Some(false));
    wait_gauge(stack.admin_addr, "ballast_gateway_ordering_lease_lost", 1).await?;
    proxy.set(Fault::None);
    let end = Instant::now() + Duration::from_secs(20);
    while stack.handle.ordering_lease_held() != Some(true) {
        anyhow::ensure!(Instant::now() < end, "the lease was never renewed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_gauge(stack.admin_addr, "ballast_gateway_ordering_lease_lost", 0).await?;
    assert_eq!(
        write(stack.addr, &key, 2).await?,
        Via::Kafka,
        "direct again"
    );
    Ok(())
}
