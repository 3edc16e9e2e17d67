//! Transient Kafka errors are never permanent answers: a topic-level metadata error keeps
//! a known topic, and records that cannot go to Kafka now fail over (or get a retryable
//! error) instead of NOT_FOUND. Errors are injected into librdkafka's mock cluster.

use ballast_dev::GatewayStack;
use ballast_failover::{FailoverBackend, FailoverConfig};
use ballast_kafka::MockApi;
use ballast_proto::common::v1::Code;
use ballast_proto::ingest::v1 as pb;
use ballast_testkit::deps::unique;
use ballast_testkit::{consume_unique, kafka_ack, record, record_error};
use std::time::Duration;

fn sqlite() -> FailoverConfig {
    let dir = std::env::temp_dir().join(unique("ballast-transient"));
    std::fs::create_dir_all(&dir).unwrap();
    FailoverConfig {
        backend: FailoverBackend::Sqlite,
        database_url: format!("sqlite://{}?mode=rwc", dir.join("q.db").display()),
        allow_node_local: true,
        ..FailoverConfig::default()
    }
}

fn acknowledged(r: &pb::RecordResult) -> bool {
    matches!(
        r.outcome,
        Some(pb::record_result::Outcome::Kafka(_)) | Some(pb::record_result::Outcome::Failover(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_metadata_error_keeps_the_topic_and_records_fail_over() -> anyhow::Result<()> {
    let stack = GatewayStack::start(&[("moving", 4)], |c| c.failover = sqlite()).await?;
    assert_eq!(stack.handle.partition_status("moving").len(), 4);

    // During a replacement the cluster answers UNKNOWN_TOPIC_OR_PARTITION for the topic.
    stack
        .cluster
        .set_topic_error("moving", "UNKNOWN_TOPIC_OR_PARTITION")
        .await?;
    stack.handle.refresh_metadata().await?;
    assert_eq!(
        stack.handle.partition_status("moving").len(),
        4,
        "a topic-level metadata error must not forget the topic"
    );
    let records: Vec<pb::Record> = (0..20)
        .map(|i| {
            let key = format!("k{i}");
            record(
                "moving",
                (i % 2 == 0).then_some(key.as_str()),
                &format!("v{i}"),
            )
        })
        .collect();
    let results = stack.produce(records).await?;
    for r in &results {
        assert!(
            acknowledged(r),
            "a transient topic error must not become an answer: {r:?}"
        );
    }

    // The error clears; the same topic takes records again (through failover while the
    // breakers it opened cool down), and every record acknowledged by Kafka is there.
    stack.cluster.set_topic_error("moving", "NONE").await?;
    stack.handle.refresh_metadata().await?;
    let after = stack
        .produce(
            (0..5)
                .map(|i| record("moving", None, &format!("after{i}")))
                .collect(),
        )
        .await?;
    assert!(after.iter().all(acknowledged), "{after:?}");
    let in_kafka = results
        .iter()
        .chain(&after)
        .filter(|r| kafka_ack(r).is_some())
        .count();
    assert!(in_kafka > 0, "kafka took nothing: {results:?} {after:?}");
    let landed = consume_unique(
        stack.cluster.bootstrap_servers(),
        "moving",
        in_kafka,
        Duration::from_secs(20),
    )?;
    let ids: std::collections::HashSet<_> =
        landed.iter().filter_map(|l| l.message_id.clone()).collect();
    for r in results
        .iter()
        .chain(&after)
        .filter(|r| kafka_ack(r).is_some())
    {
        assert!(
            ids.contains(&r.message_id),
            "{} acked but not in kafka",
            r.message_id
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_failover_a_transient_topic_error_is_retryable_not_not_found() -> anyhow::Result<()>
{
    let stack = GatewayStack::start(&[("shaky", 2)], |_| {}).await?;
    stack
        .cluster
        .set_topic_error("shaky", "LEADER_NOT_AVAILABLE")
        .await?;
    stack.handle.refresh_metadata().await?;
    let results = stack
        .produce(vec![
            record("shaky", Some("k"), "v"),
            record("shaky", None, "u"),
        ])
        .await?;
    // The topic has no leader and there is no failover queue: no record can be
    // acknowledged, and each one's error says a retry can help.
    for r in &results {
        let e = record_error(r).unwrap_or_else(|| panic!("acknowledged without a leader: {r:?}"));
        assert_ne!(e.code, Code::NotFound as i32, "{r:?}");
        assert!(e.retryable, "{r:?}");
    }
    // A topic the cluster does not list is still NOT_FOUND.
    let missing = stack
        .produce(vec![record("never-created", None, "x")])
        .await?;
    assert_eq!(
        record_error(&missing[0]).map(|e| e.code),
        Some(Code::NotFound as i32)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_produce_errors_are_retried_not_answered() -> anyhow::Result<()> {
    let stack = GatewayStack::start(&[("busy", 6)], |_| {}).await?;
    for error in [
        "UNKNOWN_TOPIC_OR_PARTITION",
        "NOT_ENOUGH_REPLICAS",
        "NOT_LEADER_OR_FOLLOWER",
        "LEADER_NOT_AVAILABLE",
        "KAFKA_STORAGE_ERROR",
        "REQUEST_TIMED_OUT",
    ] {
        stack
            .cluster
            .inject_request_errors(MockApi::Produce, &[error, error])
            .await?;
        let results = stack
            .produce(vec![
                record("busy", Some("key"), error),
                record("busy", None, error),
            ])
            .await?;
        // A transient error costs a retry, not the record.
        for r in &results {
            assert!(kafka_ack(r).is_some(), "{error}: {r:?}");
        }
    }
    Ok(())
}

/// A sequence desynchronization makes librdkafka raise a fatal error: the producer can no
/// longer write. The gateway rebuilds it; records caught in it get a retryable error (or
/// fail over), later records reach Kafka again, and no partition breaker opened for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_producer_error_rebuilds_the_producer() -> anyhow::Result<()> {
    let stack = GatewayStack::start(&[("fatal", 3)], |_| {}).await?;
    let first = stack.produce(vec![record("fatal", None, "before")]).await?;
    assert!(kafka_ack(&first[0]).is_some(), "{first:?}");

    stack
        .cluster
        .inject_request_errors(MockApi::Produce, &["OUT_OF_ORDER_SEQUENCE_NUMBER"])
        .await?;
    let caught = stack.produce(vec![record("fatal", None, "caught")]).await?;
    if let Some(e) = record_error(&caught[0]) {
        assert!(e.retryable, "{caught:?}");
        assert_ne!(e.code, Code::NotFound as i32);
    }

    // The next records go through a new producer.
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let after = stack
            .produce(
                (0..6)
                    .map(|i| record("fatal", None, &format!("after{i}")))
                    .collect(),
            )
            .await?;
        if after.iter().all(|r| kafka_ack(r).is_some()) {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < end,
            "the gateway stays broken after a fatal producer error: {after:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = stack.metrics_text().await?;
    assert!(
        metrics.contains("ballast_gateway_write_failures_total{kind=\"producer_fatal\"}"),
        "the fatal error was seen: {metrics}"
    );
    for s in stack.handle.partition_status("fatal") {
        assert_eq!(
            s.state,
            ballast_balancer::BreakerState::Closed,
            "partition {} breaker opened for the producer's fault",
            s.partition
        );
    }
    Ok(())
}
