//! The enqueuer's promise: an error means the queue does not hold the record. A record a
//! batch took is answered by that batch, however long it takes; a record given up at
//! `failover.timeout` is never sent. Against a real PostgreSQL server whose table is
//! locked by another session, so inserts wait.

use ballast_balancer::BreakerConfig;
use ballast_failover::envelope::{self, Envelope};
use ballast_failover::{Enqueuer, FailoverConfig, FailoverQueue, SqlQueue};
use ballast_testkit::deps::{require_postgres, unique};
use sqlx::Connection;
use std::sync::Arc;
use std::time::Duration;

fn body(id: &str) -> Vec<u8> {
    envelope::encode(&Envelope {
        topic: "events".into(),
        message_id: id.into(),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_means_the_queue_does_not_hold_the_record() -> anyhow::Result<()> {
    let url = require_postgres();
    let queue: Arc<dyn FailoverQueue> =
        Arc::new(SqlQueue::connect(&url, &unique("held"), 4).await?);
    let cfg = FailoverConfig {
        timeout: Duration::from_millis(300),
        linger: Duration::from_millis(1),
        concurrent_batches: 1,
        ..FailoverConfig::default()
    };
    let enqueuer = Enqueuer::start(queue.clone(), &cfg, BreakerConfig::default());

    // Another session holds the table: every insert waits for it.
    let mut locker = sqlx::PgConnection::connect(&url).await?;
    let mut lock = locker.begin().await?;
    sqlx::query("LOCK TABLE ballast_failover_entries IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await?;

    // "taken" goes out in a batch at once and blocks; "waiting" queues behind it for the
    // one batch slot, and its caller gives up at failover.timeout.
    let taken = tokio::spawn({
        let e = enqueuer.clone();
        async move { e.enqueue(body("taken")).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waiting = tokio::spawn({
        let e = enqueuer.clone();
        async move { e.enqueue(body("waiting")).await }
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    lock.rollback().await?;

    let taken = taken.await?;
    let waiting = waiting.await?;
    // Let any late batch finish before looking.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held: Vec<String> = queue
        .receive(10, Duration::ZERO, Duration::from_secs(30))
        .await?
        .iter()
        .map(|l| envelope::decode(&l.body).map(|e| e.message_id))
        .collect::<Result<_, _>>()?;
    for (id, result) in [("taken", &taken), ("waiting", &waiting)] {
        assert_eq!(
            result.is_ok(),
            held.iter().any(|h| h == id),
            "{id}: answered {result:?} while the queue holds {held:?}"
        );
    }
    // The batch that took "taken" answers it once the lock is gone; "waiting" was given up
    // before any batch took it.
    assert!(taken.is_ok(), "{taken:?}");
    let err = waiting.expect_err("given up at failover.timeout");
    assert!(err.to_string().contains("does not hold it"), "{err}");
    Ok(())
}

/// Bodies waiting for a batch, or in one, are bounded in bytes, not only in count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_bodies_are_bounded_in_bytes() -> anyhow::Result<()> {
    let url = require_postgres();
    let queue: Arc<dyn FailoverQueue> =
        Arc::new(SqlQueue::connect(&url, &unique("bytes"), 4).await?);
    let cfg = FailoverConfig {
        pending_bytes: 100 * 1024,
        linger: Duration::from_millis(1),
        concurrent_batches: 1,
        ..FailoverConfig::default()
    };
    let enqueuer = Enqueuer::start(queue.clone(), &cfg, BreakerConfig::default());
    let big = |id: &str| {
        envelope::encode(&Envelope {
            topic: "events".into(),
            message_id: id.into(),
            value: vec![7; 60 * 1024].into(),
            ..Default::default()
        })
    };
    let mut locker = sqlx::PgConnection::connect(&url).await?;
    let mut lock = locker.begin().await?;
    sqlx::query("LOCK TABLE ballast_failover_entries IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await?;
    let first = tokio::spawn({
        let (e, body) = (enqueuer.clone(), big("first"));
        async move { e.enqueue(body).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // 60 KiB are held by the blocked batch: another 60 KiB would pass 100 KiB.
    let second = enqueuer.enqueue(big("second")).await;
    let err = second.expect_err("over failover.pending_bytes");
    assert!(err.to_string().contains("failover.pending_bytes"), "{err}");
    lock.rollback().await?;
    first.await??;
    // The bytes came back with the first body's fate.
    enqueuer.enqueue(big("third")).await?;
    Ok(())
}

/// A queue that, like SQS, can answer a batch entry by entry: it stores every body in a
/// real SQLite queue except those whose message id starts with "refuse", and says which
/// it holds.
#[derive(Debug)]
struct EntryByEntry(SqlQueue);

#[async_trait::async_trait]
impl FailoverQueue for EntryByEntry {
    fn backend(&self) -> &'static str {
        "sqlite"
    }
    fn queue(&self) -> &str {
        self.0.queue()
    }
    fn max_batch(&self) -> usize {
        10
    }
    async fn enqueue(
        &self,
        bodies: &[Vec<u8>],
        delay: Duration,
    ) -> Result<Vec<String>, ballast_failover::QueueError> {
        let mut stored = Vec::new();
        for b in bodies {
            let refuse = envelope::decode(b)
                .unwrap()
                .message_id
                .starts_with("refuse");
            stored.push(if refuse {
                ballast_failover::Fate::NotHeld
            } else {
                ballast_failover::Fate::Held(
                    self.0
                        .enqueue(std::slice::from_ref(b), delay)
                        .await?
                        .remove(0),
                )
            });
        }
        if stored
            .iter()
            .all(|f| matches!(f, ballast_failover::Fate::Held(_)))
        {
            return Ok(stored
                .into_iter()
                .filter_map(|f| match f {
                    ballast_failover::Fate::Held(id) => Some(id),
                    _ => None,
                })
                .collect());
        }
        Err(ballast_failover::QueueError::Partial {
            stored,
            reason: "entry refused".into(),
        })
    }
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        lease: Duration,
    ) -> Result<Vec<ballast_failover::Leased>, ballast_failover::QueueError> {
        self.0.receive(max, wait, lease).await
    }
    async fn ack(
        &self,
        e: &[ballast_failover::Leased],
    ) -> Result<(), ballast_failover::QueueError> {
        self.0.ack(e).await
    }
    async fn retry_later(
        &self,
        e: &ballast_failover::Leased,
        b: Option<Vec<u8>>,
        d: Duration,
    ) -> Result<(), ballast_failover::QueueError> {
        self.0.retry_later(e, b, d).await
    }
    async fn dead_letter(
        &self,
        e: &ballast_failover::Leased,
        i: &ballast_failover::DeadInfo,
    ) -> Result<(), ballast_failover::QueueError> {
        self.0.dead_letter(e, i).await
    }
    async fn stats(&self) -> Result<ballast_failover::QueueStats, ballast_failover::QueueError> {
        self.0.stats().await
    }
    async fn list_dead_letters(
        &self,
        n: usize,
        t: &str,
    ) -> Result<(Vec<ballast_failover::DeadLetter>, String), ballast_failover::QueueError> {
        self.0.list_dead_letters(n, t).await
    }
    async fn redrive(
        &self,
        ids: &[String],
        all: bool,
    ) -> Result<u64, ballast_failover::QueueError> {
        self.0.redrive(ids, all).await
    }
    async fn purge(&self, ids: &[String], all: bool) -> Result<u64, ballast_failover::QueueError> {
        self.0.purge(ids, all).await
    }
}

/// When the queue holds some records of a batch and not others, each record gets its own
/// answer: an id for the held ones, an error for the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_batch_answers_each_record_by_its_own_fate() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(unique("ballast-partial"));
    std::fs::create_dir_all(&dir)?;
    let url = format!("sqlite://{}?mode=rwc", dir.join("q.db").display());
    let inner = SqlQueue::connect(&url, "ballast-failover", 2).await?;
    let queue: Arc<dyn FailoverQueue> = Arc::new(EntryByEntry(inner));
    let cfg = FailoverConfig {
        linger: Duration::from_millis(50),
        ..FailoverConfig::default()
    };
    let enqueuer = Enqueuer::start(queue.clone(), &cfg, BreakerConfig::default());
    let answers = futures::future::join_all(["kept-1", "refuse-1", "kept-2"].map(|id| {
        let e = enqueuer.clone();
        async move { (id, e.enqueue(body(id)).await) }
    }))
    .await;
    for (id, answer) in &answers {
        assert_eq!(answer.is_ok(), id.starts_with("kept"), "{id}: {answer:?}");
    }
    let held = queue
        .receive(10, Duration::from_millis(200), Duration::from_secs(30))
        .await?;
    let mut ids: Vec<String> = held
        .iter()
        .map(|l| envelope::decode(&l.body).unwrap().message_id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["kept-1", "kept-2"]);
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
