//! Limits a caller cannot push past: request bytes and open connections.

use ballast_integration_tests::GatewayStack;
use ballast_proto::ingest::v1 as pb;
use ballast_proto::ingest::v1::ingest_client::IngestClient;
use ballast_testkit::{kafka_ack, record};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_max_request_bytes_fails_whole_and_others_go_on() -> anyhow::Result<()> {
    let stack = GatewayStack::start(&[("big", 2)], |c| {
        c.limits.max_request_bytes = 64 * 1024;
    })
    .await?;
    let mut client = stack.client().await?;
    let value = "x".repeat(40 * 1024);
    let too_big = client
        .produce(pb::ProduceRequest {
            records: vec![record("big", None, &value), record("big", None, &value)],
        })
        .await
        .expect_err("over limits.max_request_bytes");
    assert_eq!(too_big.code(), tonic::Code::OutOfRange, "{too_big}");
    let ok = stack.produce(vec![record("big", None, &value)]).await?;
    assert!(kafka_ack(&ok[0]).is_some(), "{ok:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_max_connections_wait_for_a_free_slot() -> anyhow::Result<()> {
    let stack = GatewayStack::start(&[("conn", 2)], |c| {
        c.limits.max_connections = 2;
    })
    .await?;
    let url = format!("http://{}", stack.addr);
    let connect = move || {
        let url = url.clone();
        async move {
            let channel = tonic::transport::Endpoint::from_shared(url)?
                .connect()
                .await?;
            anyhow::Ok(IngestClient::new(channel))
        }
    };
    let produce = |mut c: IngestClient<tonic::transport::Channel>, v: &'static str| async move {
        c.produce(pb::ProduceRequest {
            records: vec![record("conn", None, v)],
        })
        .await
    };
    // Two connections hold both slots (wait_serving's health check closed its own).
    let a = connect().await?;
    let b = connect().await?;
    assert!(produce(a.clone(), "a").await.is_ok());
    assert!(produce(b.clone(), "b").await.is_ok());
    // A third is not served while they stay open.
    let connect_third = connect.clone();
    let third = tokio::spawn(async move {
        let c = connect_third().await?;
        anyhow::Ok(produce(c, "c").await?.into_inner())
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!third.is_finished(), "a third connection was served");
    // One closes: the third gets its slot.
    drop(a);
    let answered = tokio::time::timeout(Duration::from_secs(10), third).await???;
    assert!(kafka_ack(&answered.results[0]).is_some(), "{answered:?}");
    drop(b);
    Ok(())
}

/// Requests past `limits.max_concurrent_requests` fail whole at once with
/// RESOURCE_EXHAUSTED (load shedding), and the ones in flight go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_max_concurrent_requests_are_shed_with_resource_exhausted(
) -> anyhow::Result<()> {
    let stack = GatewayStack::start(&[("busy", 2)], |c| {
        c.limits.max_concurrent_requests = 2;
        c.limits.record_deadline = Duration::from_secs(2);
    })
    .await?;
    // Kafka down: each request takes its records' deadline to answer.
    stack.cluster.broker_down(-1).await?;
    let client = stack.client().await?;
    let slow: Vec<_> = (0..2)
        .map(|i| {
            let mut c = client.clone();
            tokio::spawn(async move {
                c.produce(pb::ProduceRequest {
                    records: vec![record("busy", None, &format!("slow{i}"))],
                })
                .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shed = client
        .clone()
        .produce(pb::ProduceRequest {
            records: vec![record("busy", None, "third")],
        })
        .await
        .expect_err("a third concurrent request is shed");
    assert_eq!(shed.code(), tonic::Code::ResourceExhausted, "{shed}");
    for s in slow {
        let answered = s.await?.expect("the requests in flight are answered");
        assert_eq!(answered.into_inner().results.len(), 1);
    }
    Ok(())
}
