//! Limits a caller cannot push past: request bytes, open connections, HTTP/2 frames.

use ballast_dev::GatewayStack;
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

/// The server's HTTP/2 SETTINGS, read over a raw connection: the client preface and an
/// empty SETTINGS frame go out, and the first SETTINGS frame that comes back is parsed.
async fn server_settings(addr: std::net::SocketAddr) -> anyhow::Result<Vec<(u16, u32)>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await?;
    loop {
        let mut head = [0u8; 9];
        tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut head)).await??;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        conn.read_exact(&mut payload).await?;
        // Type 4 is SETTINGS; flag 1 is its acknowledgement, which carries nothing.
        if head[3] == 4 && head[4] & 1 == 0 {
            return Ok(payload
                .chunks_exact(6)
                .map(|e| {
                    (
                        u16::from_be_bytes([e[0], e[1]]),
                        u32::from_be_bytes([e[2], e[3], e[4], e[5]]),
                    )
                })
                .collect());
        }
    }
}

/// `limits.grpc_max_frame_bytes` is what the gateway advertises as its
/// SETTINGS_MAX_FRAME_SIZE, and a request larger than one frame still arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_advertises_grpc_max_frame_bytes() -> anyhow::Result<()> {
    const MAX_FRAME_SIZE: u16 = 5;
    let default = GatewayStack::start(&[("frames", 2)], |_| {}).await?;
    let settings = server_settings(default.addr).await?;
    assert!(
        settings.contains(&(MAX_FRAME_SIZE, 256 * 1024)),
        "{settings:?}"
    );
    let value = "f".repeat(100 * 1024);
    let answers = default
        .produce((0..4).map(|_| record("frames", None, &value)).collect())
        .await?;
    assert!(
        answers.iter().all(|a| kafka_ack(a).is_some()),
        "{answers:?}"
    );

    let large = GatewayStack::start(&[("frames", 2)], |c| {
        c.limits.grpc_max_frame_bytes = 1024 * 1024;
    })
    .await?;
    let settings = server_settings(large.addr).await?;
    assert!(
        settings.contains(&(MAX_FRAME_SIZE, 1024 * 1024)),
        "{settings:?}"
    );
    Ok(())
}
