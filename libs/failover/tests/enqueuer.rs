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
            value: vec![7; 60 * 1024],
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
