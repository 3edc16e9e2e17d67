//! A writer that has never had a metadata answer does not call a topic unknown: the
//! record fails over to the durable queue (here SQLite), or gets a retryable error when no
//! queue is configured. Only a healthy answer that lacks the topic makes it NOT_FOUND.

use ballast_balancer::BalancerConfig;
use ballast_core::ErrorCode;
use ballast_failover::envelope;
use ballast_failover::{Enqueuer, FailoverBackend, FailoverConfig};
use ballast_kafka::KafkaConfig;
use ballast_produce::{Acked, Record, WriteLimits, WriteMetrics, Writer};
use ballast_testkit::deps::unique;
use ballast_testkit::process::free_port;
use prometheus_client::registry::Registry;
use std::time::Duration;

fn unreachable_kafka() -> KafkaConfig {
    KafkaConfig {
        // Nothing listens here: no metadata answer ever arrives.
        bootstrap_servers: format!("127.0.0.1:{}", free_port()),
        metadata_timeout: Duration::from_millis(300),
        ..KafkaConfig::default()
    }
}

fn writer(failover: Option<Enqueuer>) -> Writer {
    Writer::new(
        &unreachable_kafka(),
        BalancerConfig::default(),
        WriteLimits {
            record_deadline: Duration::from_secs(2),
            ..WriteLimits::default()
        },
        WriteMetrics::register(&mut Registry::default()),
        failover,
    )
    .expect("writer")
}

fn event(value: &str) -> Record {
    Record {
        topic: "events".into(),
        value: value.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_metadata_yet_fails_over_instead_of_not_found() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(unique("ballast-nomd"));
    std::fs::create_dir_all(&dir)?;
    let cfg = FailoverConfig {
        backend: FailoverBackend::Sqlite,
        database_url: format!("sqlite://{}?mode=rwc", dir.join("q.db").display()),
        ..FailoverConfig::default()
    };
    let queue = cfg.open().await?.expect("sqlite queue");
    let w = writer(Some(Enqueuer::start(
        queue.clone(),
        &cfg,
        Default::default(),
    )));
    assert!(w.refresh_metadata().await.is_err(), "nothing listens");
    let produced = w.write(event("held")).await;
    match &produced.outcome {
        Ok(Acked::Failover { backend, .. }) => assert_eq!(backend, "sqlite"),
        other => panic!("expected a failover ack, got {other:?}"),
    }
    // The queue holds the record, under its message id.
    let leased = queue
        .receive(10, Duration::ZERO, Duration::from_secs(30))
        .await?;
    assert_eq!(leased.len(), 1);
    let env = envelope::decode(&leased[0].body)?;
    assert_eq!(env.message_id, produced.message_id);
    assert_eq!(env.value, &b"held"[..]);
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_metadata_and_no_queue_is_a_retryable_error() {
    let w = writer(None);
    let produced = w.write(event("x")).await;
    let e = produced.outcome.expect_err("kafka is unreachable");
    assert_eq!(e.code, ErrorCode::Unavailable, "{e}");
    assert!(e.retryable());
}
