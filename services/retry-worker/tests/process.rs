//! `ballast-retry-worker` as a process: a worker killed with SIGKILL mid-drain loses
//! nothing (its leased entries come back when the lease ends), SIGTERM exits cleanly, and a
//! bad config is a clear startup error.

use ballast_failover::envelope::{self, Envelope};
use ballast_failover::{FailoverQueue, SqlQueue};
use ballast_kafka::{EmbeddedCluster, EmbeddedClusterConfig};
use ballast_testkit::deps::unique;
use ballast_testkit::process::ServiceProcess;
use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ballast-retry-worker");

/// A worker process, killed and reaped on drop.
fn worker(bootstrap: &str, db: &str, drain_rate: u32) -> ServiceProcess {
    let rate = drain_rate.to_string();
    ServiceProcess::spawn(
        BIN,
        &[
            ("BALLAST_FAILOVER__BACKEND", "sqlite"),
            ("BALLAST_FAILOVER__DATABASE_URL", db),
            ("BALLAST_KAFKA__BOOTSTRAP_SERVERS", bootstrap),
            ("BALLAST_RETRY__LEASE", "4s"),
            ("BALLAST_RETRY__WAIT_TIME", "200ms"),
            ("BALLAST_RETRY__MAX_NUMBER_OF_MESSAGES", "20"),
            ("BALLAST_RETRY__DRAIN_RATE", &rate),
        ],
    )
    .expect("spawn ballast-retry-worker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_drain_loses_nothing() -> anyhow::Result<()> {
    let cluster = EmbeddedCluster::start(EmbeddedClusterConfig::default())?;
    let bootstrap = cluster.bootstrap_servers().to_string();
    let dir = std::env::temp_dir().join(unique("ballast-kill"));
    std::fs::create_dir_all(&dir)?;
    let db = format!("sqlite://{}?mode=rwc", dir.join("q.db").display());
    let queue = SqlQueue::connect(&db, "ballast-failover", 2).await?;
    let n = 300;
    let bodies: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            envelope::encode(&Envelope {
                topic: "events".into(),
                value: format!("v{i}").into_bytes().into(),
                message_id: format!("kill-{i}"),
                first_failed_at_unix_ms: 1,
                ..Default::default()
            })
        })
        .collect();
    queue.enqueue(&bodies, Duration::ZERO).await?;

    // A slow worker, killed while it holds leases.
    let mut first = worker(&bootstrap, &db, 100);
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let s = queue.stats().await?;
        if s.depth < n as u64 - 40 && s.in_flight > 0 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < end,
            "the first worker never got going: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.signal("KILL");
    first.child.wait()?;
    let stranded = queue.stats().await?;
    assert!(stranded.depth > 0, "entries remain: {stranded:?}");

    // Another worker picks everything up, the killed worker's leases included.
    let mut second = worker(&bootstrap, &db, 0);
    let end = Instant::now() + Duration::from_secs(40);
    while queue.stats().await?.depth > 0 {
        anyhow::ensure!(Instant::now() < end, "queue did not drain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Everything is in Kafka now; duplicates (written, then killed before the ack) allowed.
    let b = bootstrap.clone();
    let landed = tokio::task::spawn_blocking(move || {
        ballast_kafka::read_topic(&b, "events", None, Duration::from_secs(60))
    })
    .await??;
    let ids: HashSet<String> = landed.iter().filter_map(|l| l.message_id.clone()).collect();
    for i in 0..n {
        assert!(ids.contains(&format!("kill-{i}")), "kill-{i} was lost");
    }
    eprintln!("records in kafka: {}, unique: {}", landed.len(), ids.len());

    // The worker names its own series, the write path's included, and no gateway's.
    let metrics = ballast_testkit::http_get(second.admin, "/metrics").await?;
    assert!(
        metrics.contains("ballast_retry_records_total{outcome=\"delivered\"}"),
        "{metrics}"
    );
    for series in [
        "ballast_retry_bytes_total{locality=",
        "ballast_retry_breakers{state=\"closed\"}",
        "ballast_retry_inflight_bytes",
        "ballast_retry_metadata_refresh_failures_total",
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }
    assert!(!metrics.contains("ballast_gateway_"), "{metrics}");

    // SIGTERM: a clean exit.
    let status = second.terminate(Duration::from_secs(20))?;
    assert!(status.success(), "{status}");
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

#[test]
fn bad_config_is_a_clear_startup_error() {
    let out = Command::new(BIN)
        .env("BALLAST_FAILOVER__BACKEND", "none")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("failover.backend must be sqs, sqlite or postgres"),
        "{err}"
    );

    let out = Command::new(BIN)
        .env("BALLAST_FAILOVER__BACKEND", "postgres")
        .env("BALLAST_FAILOVER__DATABASE_URL", "sqlite://x.db")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("postgres://"));

    let out = Command::new(BIN)
        .env("BALLAST_RETRY__BACKOFF_MULTIPLIER", "0.5")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("retry.backoff_multiplier"));

    let out = Command::new(BIN)
        .env("BALLAST_RETRY__MAX_ATTEMPS", "3")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("max_attemps"),
        "unknown keys are named"
    );
}

/// A record that failed over keeps its trace: the worker's span continues the
/// `traceparent` its envelope carries, is exported over OTLP/gRPC, and the record reaches
/// Kafka with that context.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continues_the_trace_a_failed_over_record_carries() -> anyhow::Result<()> {
    use ballast_failover::envelope::EnvelopeHeader;
    use ballast_testkit::otlp::Collector;

    let collector = Collector::start().await?;
    let cluster = EmbeddedCluster::start(EmbeddedClusterConfig::default())?;
    let bootstrap = cluster.bootstrap_servers().to_string();
    let dir = std::env::temp_dir().join(unique("ballast-trace"));
    std::fs::create_dir_all(&dir)?;
    let db = format!("sqlite://{}?mode=rwc", dir.join("q.db").display());
    let queue = SqlQueue::connect(&db, "ballast-failover", 2).await?;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    queue
        .enqueue(
            &[envelope::encode(&Envelope {
                topic: "events".into(),
                value: b"traced".to_vec().into(),
                message_id: "traced-1".into(),
                headers: vec![EnvelopeHeader {
                    key: "traceparent".into(),
                    value: traceparent.as_bytes().to_vec().into(),
                }],
                first_failed_at_unix_ms: 1,
                ..Default::default()
            })],
            Duration::ZERO,
        )
        .await?;
    let mut svc = ServiceProcess::spawn(
        BIN,
        &[
            ("BALLAST_FAILOVER__BACKEND", "sqlite"),
            ("BALLAST_FAILOVER__DATABASE_URL", &db),
            ("BALLAST_KAFKA__BOOTSTRAP_SERVERS", &bootstrap),
            ("BALLAST_RETRY__WAIT_TIME", "200ms"),
            ("BALLAST_TELEMETRY__OTLP_ENDPOINT", &collector.endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )?;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let spans = collector
        .wait_for(Duration::from_secs(30), |spans| {
            ["ballast.retry", "ballast.write", "kafka.attempt"]
                .iter()
                .all(|name| {
                    spans
                        .iter()
                        .any(|s| s.name == *name && s.trace_id == trace_id)
                })
        })
        .await?;
    let retry = spans.iter().find(|s| s.name == "ballast.retry").unwrap();
    assert_eq!(retry.service, "ballast-retry-worker");
    assert_eq!(retry.parent_span_id, "b7ad6b7169203331", "{retry:?}");
    assert_eq!(retry.attribute("message_id"), Some("traced-1"));
    let write = spans.iter().find(|s| s.name == "ballast.write").unwrap();
    assert_eq!(write.parent_span_id, retry.span_id, "{write:?}");

    let landed = tokio::task::spawn_blocking(move || {
        ballast_kafka::read_topic(&bootstrap, "events", Some(1), Duration::from_secs(30))
    })
    .await??;
    assert_eq!(
        landed[0].header("traceparent").as_deref(),
        Some(traceparent)
    );

    let status = svc.terminate(Duration::from_secs(20))?;
    assert!(status.success(), "{status}");
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
