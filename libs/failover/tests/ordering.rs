//! Ordered partitions on the SQL backends (SQLite and a real PostgreSQL server): divert
//! marks written with the enqueue, head-run leases one receiver at a time, the
//! conditional clear, and dead letters that hold their partition's place.

use ballast_failover::envelope::{self, Envelope};
use ballast_failover::{
    DeadInfo, Diverts, FailoverQueue, Leased, OrderingConfig, S3OffloadConfig, SqlQueue, SqsConfig,
    SqsQueue,
};
use ballast_testkit::deps::{require_postgres, unique};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(30);

fn body(key: &str, i: usize) -> Vec<u8> {
    envelope::encode(&Envelope {
        topic: "t".into(),
        value: format!("{key}:{i}").into_bytes().into(),
        message_id: format!("{key}:{i}"),
        ..Default::default()
    })
}

fn value(l: &Leased) -> String {
    envelope::decode(&l.body).expect("decodes").message_id
}

async fn enqueue(q: &dyn FailoverQueue, key: &str, range: std::ops::Range<usize>) -> Vec<String> {
    let bodies: Vec<Vec<u8>> = range.map(|i| body(key, i)).collect();
    let order = vec![Some(key.to_string()); bodies.len()];
    q.enqueue_ordered(&bodies, &order, Duration::ZERO)
        .await
        .expect("enqueue")
        .ids
}

async fn diverted(q: &dyn FailoverQueue) -> Vec<String> {
    let mut keys: Vec<String> = q
        .diverted()
        .await
        .expect("diverted")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    keys.sort();
    keys
}

async fn receive(q: &dyn FailoverQueue, max: usize) -> Vec<Leased> {
    q.receive(max, Duration::ZERO, LEASE)
        .await
        .expect("receive")
}

fn of<'a>(got: &'a [Leased], key: &str) -> Vec<&'a Leased> {
    got.iter()
        .filter(|l| l.order.as_deref() == Some(key))
        .collect()
}

fn info(l: &Leased) -> DeadInfo {
    DeadInfo {
        topic: "t".into(),
        message_id: value(l),
        attempts: 5,
        reason: "max attempts (5) reached".into(),
        first_failed_at_unix_ms: 0,
    }
}

async fn ordered_suite(q: Arc<dyn FailoverQueue>) {
    let q = &*q;
    assert!(q.keeps_order());
    // Two ordered partitions and two unordered entries.
    enqueue(q, "t/0", 0..5).await;
    enqueue(q, "t/1", 0..3).await;
    q.enqueue(&[body("free", 0), body("free", 1)], Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(diverted(q).await, ["t/0", "t/1"], "marked with the enqueue");

    // One receive leases each partition's head run whole, in enqueue order.
    let got = receive(q, 100).await;
    let run0: Vec<String> = of(&got, "t/0").into_iter().map(value).collect();
    assert_eq!(run0, ["t/0:0", "t/0:1", "t/0:2", "t/0:3", "t/0:4"]);
    assert_eq!(of(&got, "t/1").len(), 3);
    let free: Vec<Leased> = got.iter().filter(|l| l.order.is_none()).cloned().collect();
    assert_eq!(free.len(), 2);
    q.ack(&free).await.unwrap();

    // While t/0 is leased, its new entry is not handed to anyone.
    enqueue(q, "t/0", 5..6).await;
    assert!(
        receive(q, 100).await.is_empty(),
        "a leased partition stays leased"
    );

    // A failed run keeps its place: the first two acked, the rest back, in order.
    let run = of(&got, "t/0");
    q.ack(&[run[0].clone(), run[1].clone()]).await.unwrap();
    for l in &run[2..] {
        q.retry_later(l, None, Duration::ZERO).await.unwrap();
    }
    let again = receive(q, 100).await;
    let run0: Vec<String> = of(&again, "t/0").into_iter().map(value).collect();
    assert_eq!(
        run0,
        ["t/0:2", "t/0:3", "t/0:4", "t/0:5"],
        "the run resumes at its first failure"
    );

    // Delivering the whole partition clears its mark.
    q.ack(&again).await.unwrap();
    let t1: Vec<Leased> = of(&got, "t/1").into_iter().cloned().collect();
    q.ack(&t1).await.unwrap();
    assert_eq!(
        diverted(q).await,
        Vec::<String>::new(),
        "drained partitions are clean"
    );

    // An enqueue after the lease keeps the mark (its generation moved on).
    enqueue(q, "t/2", 0..2).await;
    let run = receive(q, 100).await;
    enqueue(q, "t/2", 2..3).await;
    q.ack(&run).await.unwrap();
    assert_eq!(
        diverted(q).await,
        ["t/2"],
        "the clear finds a newer generation"
    );
    let rest = receive(q, 100).await;
    assert_eq!(rest.iter().map(value).collect::<Vec<_>>(), ["t/2:2"]);
    q.ack(&rest).await.unwrap();
    assert_eq!(diverted(q).await, Vec::<String>::new());

    // A dead letter holds its partition: nothing behind it is handed out until it is
    // redriven, and then it comes first again, under its own id.
    let ids = enqueue(q, "t/3", 0..3).await;
    let run = receive(q, 100).await;
    q.dead_letter(&run[0], &info(&run[0])).await.unwrap();
    for l in &run[1..] {
        q.retry_later(l, None, Duration::ZERO).await.unwrap();
    }
    assert!(
        receive(q, 100).await.is_empty(),
        "the dead letter blocks its partition"
    );
    assert_eq!(diverted(q).await, ["t/3"], "and keeps it diverted");
    let (dead, _) = q.list_dead_letters(10, "").await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(q.redrive(&[dead[0].id.clone()], false).await.unwrap(), 1);
    let run = receive(q, 100).await;
    assert_eq!(
        run.iter().map(value).collect::<Vec<_>>(),
        ["t/3:0", "t/3:1", "t/3:2"],
        "redriven to the head"
    );
    assert_eq!(run[0].entry_id, ids[0], "under its original id");
    q.ack(&run).await.unwrap();
    assert_eq!(diverted(q).await, Vec::<String>::new());

    // Skipping (purging) a dead letter lets the partition drain on; purging the last
    // thing a partition holds clears its mark.
    enqueue(q, "t/4", 0..2).await;
    let run = receive(q, 100).await;
    q.dead_letter(&run[0], &info(&run[0])).await.unwrap();
    q.retry_later(&run[1], None, Duration::ZERO).await.unwrap();
    let (dead, _) = q.list_dead_letters(10, "").await.unwrap();
    assert_eq!(q.purge(&[dead[0].id.clone()], false).await.unwrap(), 1);
    let run = receive(q, 100).await;
    assert_eq!(run.iter().map(value).collect::<Vec<_>>(), ["t/4:1"]);
    q.dead_letter(&run[0], &info(&run[0])).await.unwrap();
    assert_eq!(diverted(q).await, ["t/4"]);
    assert_eq!(q.purge(&[], true).await.unwrap(), 1);
    assert_eq!(
        diverted(q).await,
        Vec::<String>::new(),
        "nothing left: clean"
    );

    // A head in backoff holds its whole partition back.
    enqueue(q, "t/5", 0..2).await;
    let run = receive(q, 100).await;
    q.retry_later(&run[0], None, Duration::from_secs(60))
        .await
        .unwrap();
    q.retry_later(&run[1], None, Duration::ZERO).await.unwrap();
    assert!(
        receive(q, 100).await.is_empty(),
        "the head's backoff delays the run"
    );

    let stats = q.stats().await.unwrap();
    assert_eq!(stats.depth, 2, "t/5's two entries remain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_each_partition_in_order() {
    let dir = std::env::temp_dir().join(unique("ballast-ordered"));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("q.db").display());
    let q = SqlQueue::connect(&url, "ordered", 4).await.expect("sqlite");
    ordered_suite(Arc::new(q)).await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_each_partition_in_order() {
    let url = require_postgres();
    let q = SqlQueue::connect(&url, &unique("ordered"), 8)
        .await
        .expect("postgres");
    ordered_suite(Arc::new(q)).await;
}

/// Concurrent receivers on PostgreSQL never hold one partition at once, and each
/// partition is acknowledged in enqueue order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_receivers_take_turns_on_a_partition() {
    let url = require_postgres();
    let q = Arc::new(
        SqlQueue::connect(&url, &unique("ordered-race"), 8)
            .await
            .expect("postgres"),
    );
    let keys = ["r/0", "r/1", "r/2"];
    let per = 40;
    for key in keys {
        enqueue(&*q, key, 0..per).await;
    }
    let held: Arc<Mutex<HashSet<String>>> = Arc::default();
    let log: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (q, held, log) = (q.clone(), held.clone(), log.clone());
            tokio::spawn(async move {
                let mut idle = 0;
                while idle < 5 {
                    let got = q
                        .receive(3, Duration::from_millis(50), LEASE)
                        .await
                        .unwrap();
                    if got.is_empty() {
                        idle += 1;
                        continue;
                    }
                    idle = 0;
                    let mine: HashSet<String> =
                        got.iter().filter_map(|l| l.order.clone()).collect();
                    {
                        let mut h = held.lock().unwrap();
                        for k in &mine {
                            assert!(h.insert(k.clone()), "{k} leased to two receivers");
                        }
                        let mut log = log.lock().unwrap();
                        for l in &got {
                            log.push((l.order.clone().unwrap(), l.entry_id.parse().unwrap()));
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    {
                        let mut h = held.lock().unwrap();
                        for k in &mine {
                            h.remove(k);
                        }
                    }
                    q.ack(&got).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), keys.len() * per, "every entry once");
    for key in keys {
        let ids: Vec<i64> = log
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, i)| *i)
            .collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "{key} in order: {ids:?}"
        );
    }
    assert!(diverted(&*q).await.is_empty(), "every partition cleared");
}

/// A gateway shortens a diverted record's wait only for the mark it saw itself: a mark
/// cleared and made again since has a new epoch, which other gateways may not have seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ack_wait_counts_from_the_mark_the_gateway_saw() {
    let dir = std::env::temp_dir().join(unique("ballast-epoch"));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("q.db").display());
    let q: Arc<dyn FailoverQueue> = Arc::new(SqlQueue::connect(&url, "epoch", 4).await.unwrap());
    let lease = Duration::from_millis(200);
    let d = Diverts::new(
        OrderingConfig {
            lease,
            ..OrderingConfig::default()
        },
        q.clone(),
    );
    let key = "t/9".to_string();
    let first = q
        .enqueue_ordered(&[body("e", 0)], &[Some(key.clone())], Duration::ZERO)
        .await
        .unwrap();
    let e1 = first.epochs[0].1;
    d.refresh().await.unwrap();
    assert!(d.must_divert(&key));
    tokio::time::sleep(lease * 2).await;
    let now = tokio::time::Instant::now();
    // The same mark, seen a while ago: no wait left.
    assert!(d.ack_not_before(&key, Some(e1), now) < now + lease);
    // Drained and cleared, then made again: a new epoch, and a whole lease to wait.
    let run = receive(&*q, 10).await;
    q.ack(&run).await.unwrap();
    let again = q
        .enqueue_ordered(&[body("e", 1)], &[Some(key.clone())], Duration::ZERO)
        .await
        .unwrap();
    let e2 = again.epochs[0].1;
    assert_ne!(e1, e2, "a mark made again has a new epoch");
    let now = tokio::time::Instant::now();
    assert!(d.ack_not_before(&key, Some(e2), now) >= now + lease);
    assert!(
        d.ack_not_before(&key, None, now) >= now + lease,
        "not known: a whole lease"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// An SQS FIFO queue on moto_server, with its divert marks in a moto S3 bucket.
async fn sqs_fifo(moto: &ballast_testkit::deps::Moto, write_timeout: Duration) -> SqsQueue {
    let name = unique("ballast-ord");
    SqsQueue::connect(
        &SqsConfig {
            offload: S3OffloadConfig {
                bucket: unique("ballast-marks").to_lowercase(),
                create_bucket: true,
                ..S3OffloadConfig::default()
            },
            ..SqsConfig::local(moto.endpoint(), &format!("{name}.fifo"))
        },
        write_timeout,
    )
    .await
    .expect("sqs fifo on moto")
}

/// Runs upkeep and receives until every divert is cleared, within `within`; how long it
/// took.
async fn until_cleared(q: &SqsQueue, within: Duration) -> Duration {
    let start = std::time::Instant::now();
    loop {
        q.maintain().await.expect("upkeep");
        assert!(
            receive(q, 10).await.is_empty(),
            "a barrier is never handed out"
        );
        if diverted(q).await.is_empty() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "divert not cleared within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// On SQS FIFO: an ordered enqueue marks its partition diverted before it sends; the
/// partition is received in enqueue order and a retry keeps its place; entries given back
/// behind a head that went back wait for it, not for their lease; once drained, the
/// upkeep's barrier reaches the head and clears the mark, without waiting out
/// `failover.write_timeout` (the enqueue recorded that its sends had answered). A dead
/// head holds its partition until it is redriven (first again, under its own id) or
/// purged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_fifo_keeps_order_and_clears_a_drained_divert_with_a_barrier() {
    let moto = ballast_testkit::deps::Moto::start();
    let write_timeout = Duration::from_secs(10);
    let q = sqs_fifo(&moto, write_timeout).await;
    assert!(q.keeps_order());
    let ids = enqueue(&q, "t/0", 0..3).await;
    assert_eq!(ids.len(), 3);
    assert_eq!(diverted(&q).await, vec!["t/0".to_string()]);

    // In order; a retry with a new body keeps its place and its attempt count.
    let got = receive(&q, 10).await;
    let values: Vec<String> = got.iter().map(value).collect();
    assert_eq!(values, ["t/0:0", "t/0:1", "t/0:2"]);
    let mut env = envelope::decode(&got[0].body).unwrap();
    env.attempt = 1;
    env.last_error = "leader not available".into();
    q.retry_later(&got[0], Some(envelope::encode(&env)), Duration::ZERO)
        .await
        .expect("retry");
    // An entry behind the head, retried in the same batch, does not take the head's count.
    let mut behind = envelope::decode(&got[1].body).unwrap();
    behind.attempt = 7;
    q.retry_later(&got[1], Some(envelope::encode(&behind)), Duration::ZERO)
        .await
        .expect("retry");
    q.retry_later(&got[2], None, Duration::ZERO)
        .await
        .expect("back");
    let got = receive(&q, 10).await;
    assert_eq!(
        got.iter().map(value).collect::<Vec<_>>(),
        ["t/0:0", "t/0:1", "t/0:2"]
    );
    assert_eq!(
        got[0].entry_id, ids[0],
        "the retried entry kept its message"
    );
    let env = envelope::decode(&got[0].body).unwrap();
    assert_eq!(
        (env.attempt, env.last_error.as_str()),
        (1, "leader not available")
    );

    // The head goes back for 3 s; the entries behind it, untried, are given back at once.
    // None passes the head, and all three return with it, not a lease later.
    let back = std::time::Instant::now();
    q.retry_later(&got[0], None, Duration::from_secs(3))
        .await
        .expect("back");
    q.release(&got[1..]).await.expect("release");
    assert!(receive(&q, 10).await.is_empty(), "nothing passes the head");
    let got = loop {
        let got = receive(&q, 10).await;
        if !got.is_empty() || back.elapsed() > Duration::from_secs(10) {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        got.iter().map(value).collect::<Vec<_>>(),
        ["t/0:0", "t/0:1", "t/0:2"],
        "after {:?}",
        back.elapsed()
    );

    // The head dies: its partition stops there, still diverted.
    q.dead_letter(&got[0], &info(&got[0]))
        .await
        .expect("dead letter");
    for l in &got[1..] {
        q.retry_later(l, None, Duration::ZERO).await.expect("back");
    }
    assert!(
        receive(&q, 10).await.is_empty(),
        "nothing passes a dead head"
    );
    q.maintain().await.expect("upkeep");
    assert_eq!(diverted(&q).await, vec!["t/0".to_string()]);
    let (dead, _) = q.list_dead_letters(10, "").await.expect("list");
    assert_eq!(dead.len(), 1);
    assert_eq!(q.redrive(&[], true).await.expect("redrive"), 1);
    let got = receive(&q, 10).await;
    assert_eq!(
        got.iter().map(value).collect::<Vec<_>>(),
        ["t/0:0", "t/0:1", "t/0:2"]
    );
    assert_eq!(got[0].entry_id, ids[0], "redriven under its own id, first");
    q.ack(&got).await.expect("ack");

    // Drained: the upkeep's barrier reaches the head, and the receive settles it, well
    // before write_timeout.
    let took = until_cleared(&q, write_timeout / 2).await;
    eprintln!("drained divert cleared after {took:?}");

    // A later divert: upkeep sends no barrier while its head is dead, and purge skips
    // the dead head; then the barrier follows the rest.
    let ids = enqueue(&q, "t/0", 3..5).await;
    let got = receive(&q, 10).await;
    assert_eq!(
        got.iter().map(value).collect::<Vec<_>>(),
        ["t/0:3", "t/0:4"]
    );
    q.dead_letter(&got[0], &info(&got[0]))
        .await
        .expect("dead letter");
    q.retry_later(&got[1], None, Duration::ZERO)
        .await
        .expect("back");
    q.maintain().await.expect("upkeep");
    assert_eq!(q.purge(&[], true).await.expect("purge"), 1);
    let got = receive(&q, 10).await;
    assert_eq!(got.iter().map(value).collect::<Vec<_>>(), ["t/0:4"]);
    assert_eq!(got[0].entry_id, ids[1]);
    q.ack(&got).await.expect("ack");
    assert!(receive(&q, 10).await.is_empty());
    assert_eq!(
        diverted(&q).await,
        vec!["t/0".to_string()],
        "no barrier behind a dead head"
    );
    until_cleared(&q, write_timeout / 2).await;

    // A barrier is in the queue when another enqueue bumps the mark: the barrier, at the
    // head, finds the mark moved on and clears nothing; the next one does.
    let got = {
        enqueue(&q, "t/0", 5..6).await;
        let got = receive(&q, 10).await;
        q.ack(&got).await.expect("ack");
        got
    };
    assert_eq!(got.iter().map(value).collect::<Vec<_>>(), ["t/0:5"]);
    let start = std::time::Instant::now();
    while q.stats().await.expect("stats").depth == 0 {
        assert!(start.elapsed() < write_timeout / 2, "no barrier sent");
        q.maintain().await.expect("upkeep");
    }
    enqueue(&q, "t/0", 6..7).await;
    let got = receive(&q, 10).await;
    assert_eq!(got.iter().map(value).collect::<Vec<_>>(), ["t/0:6"]);
    assert_eq!(
        diverted(&q).await,
        vec!["t/0".to_string()],
        "a bump after the barrier keeps the mark"
    );
    q.ack(&got).await.expect("ack");
    until_cleared(&q, write_timeout / 2).await;
}

/// An enqueue that bumped its mark and never heard back from its send (its gateway died
/// mid-send, here: the send held, the enqueue dropped) may still land, so the sweep
/// sends no barrier behind it until the gateway's bound (`failover.write_timeout`) and
/// the margin have passed since its bump; then the divert clears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_fifo_waits_out_an_enqueue_that_died_mid_send() {
    use ballast_testkit::fault_proxy::{Fault, FaultProxy};
    let moto = ballast_testkit::deps::Moto::start();
    let proxy = FaultProxy::start(ballast_testkit::deps::hostport(&moto.endpoint()))
        .await
        .expect("proxy");
    let name = unique("ballast-unanswered");
    let write_timeout = Duration::from_secs(4);
    let q = SqsQueue::connect(
        &SqsConfig {
            offload: S3OffloadConfig {
                bucket: unique("ballast-marks").to_lowercase(),
                create_bucket: true,
                ..S3OffloadConfig::default()
            },
            ..SqsConfig::local(
                format!("http://{}", proxy.host_port()),
                &format!("{name}.fifo"),
            )
        },
        write_timeout,
    )
    .await
    .expect("sqs fifo on moto");
    proxy.set(Fault::HoldRequests("AmazonSQS.SendMessageBatch"));
    let bumped = std::time::Instant::now();
    let (bodies, order) = ([body("t/0", 0)], [Some("t/0".to_string())]);
    let enqueue = q.enqueue_ordered(&bodies, &order, Duration::ZERO);
    tokio::time::timeout(Duration::from_millis(500), enqueue)
        .await
        .expect_err("the send was held");
    // The held request is dropped, never applied.
    proxy.set(Fault::Cut);
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.set(Fault::None);
    assert_eq!(diverted(&q).await, vec!["t/0".to_string()]);
    q.maintain().await.expect("upkeep");
    assert!(receive(&q, 10).await.is_empty());
    assert_eq!(
        diverted(&q).await,
        vec!["t/0".to_string()],
        "no barrier while the send may still land"
    );
    assert!(
        bumped.elapsed() < write_timeout + Duration::from_secs(1),
        "checked within the bound: {:?}",
        bumped.elapsed()
    );
    until_cleared(&q, Duration::from_secs(10)).await;
    let after = bumped.elapsed();
    assert!(
        after >= write_timeout + Duration::from_secs(1),
        "cleared {after:?} after the bump"
    );
}

/// A FIFO queue with a standard dead-letter queue is refused, naming both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_fifo_refuses_a_standard_dead_letter_queue() {
    let moto = ballast_testkit::deps::Moto::start();
    let name = unique("ballast-mixed");
    let e = SqsQueue::connect(
        &SqsConfig {
            dlq: format!("{name}-dlq"),
            ..SqsConfig::local(moto.endpoint(), &format!("{name}.fifo"))
        },
        Duration::from_secs(1),
    )
    .await
    .expect_err("refused");
    let text = e.to_string();
    assert!(text.contains(".fifo") && text.contains("-dlq"), "{text}");
}
