//! Test harness for Ballast's tests. It starts real dependencies on free ports (Redis,
//! moto_server, processes under test), waits for services to serve, and reads back what
//! actually landed in Kafka with a real consumer.
//!
//! Only tests depend on this crate, and it depends on libs only: stacks of services are
//! assembled in `integration-tests`.

pub use ballast_kafka::Landed;
use ballast_proto::ingest::v1 as pb;
pub mod deps;
pub mod fault_proxy;
pub mod kafka_proxy;
pub mod otlp;
pub mod postgres;
pub mod process;
pub mod redis;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Waits until the gRPC health service at `addr` reports SERVING (at most 15 s).
pub async fn wait_serving(addr: SocketAddr) -> anyhow::Result<()> {
    wait_serving_with(addr, &ballast_security::ClientSecurity::default()).await
}

/// [`wait_serving`] over TLS (and mTLS) when `client` says so.
pub async fn wait_serving_with(
    addr: SocketAddr,
    client: &ballast_security::ClientSecurity,
) -> anyhow::Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let channel = client.connect(&format!("http://{addr}")).await;
        if let Ok(mut c) = channel.map(HealthClient::new) {
            if let Ok(r) = c
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
            {
                if r.into_inner().status == ServingStatus::Serving as i32 {
                    return Ok(());
                }
            }
        }
        anyhow::ensure!(
            Instant::now() < end,
            "{addr} did not become SERVING within 15s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A minimal HTTP/1.0 GET, enough to scrape `/metrics` in tests.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

/// A record with a value and optional key.
pub fn record(topic: &str, key: Option<&str>, value: &str) -> pb::Record {
    pb::Record {
        topic: topic.into(),
        key: key.map(|k| k.as_bytes().to_vec().into()),
        value: value.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

/// Reads `expected` records of `topic` from the beginning with a real Kafka consumer,
/// or whatever arrived within `timeout`.
pub fn consume_all(
    bootstrap: &str,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Landed>> {
    Ok(ballast_kafka::read_topic(
        bootstrap,
        topic,
        Some(expected),
        timeout,
    )?)
}

/// Reads `topic` until `ids` distinct message ids have arrived (or `timeout`). Failover
/// delivers at least once, so counting messages could stop at a duplicate before the last
/// id lands.
pub fn consume_unique(
    bootstrap: &str,
    topic: &str,
    ids: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Landed>> {
    let end = std::time::Instant::now() + timeout;
    let mut want = ids;
    loop {
        let left = end.saturating_duration_since(std::time::Instant::now());
        let got = consume_all(bootstrap, topic, want, left)?;
        let seen: std::collections::HashSet<_> =
            got.iter().filter_map(|l| l.message_id.as_deref()).collect();
        if seen.len() >= ids || left.is_zero() {
            return Ok(got);
        }
        want = got.len() + ids - seen.len();
    }
}

/// The outcome kind of a result, for compact assertions.
pub fn kafka_ack(r: &pb::RecordResult) -> Option<&pb::KafkaAck> {
    match &r.outcome {
        Some(pb::record_result::Outcome::Kafka(a)) => Some(a),
        _ => None,
    }
}

pub fn record_error(r: &pb::RecordResult) -> Option<&pb::RecordError> {
    match &r.outcome {
        Some(pb::record_result::Outcome::Error(e)) => Some(e),
        _ => None,
    }
}
