//! `ballast-gateway` as operators run it: YAML config plus `BALLAST_*` overrides,
//! `--dump-config`, clear startup errors, serving a cluster, and SIGTERM.

use ballast_kafka::{EmbeddedCluster, EmbeddedClusterConfig};
use ballast_testkit::process::ServiceProcess;
use ballast_testkit::{kafka_ack, record, wait_serving};
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_ballast-gateway");

#[test]
fn dump_config_shows_file_and_env_layers() {
    let dir = std::env::temp_dir().join(format!("ballast-gw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gw.yaml");
    std::fs::write(&file, "rack: az-b\nkafka:\n  write_timeout: 2s\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&file)
        .arg("--dump-config")
        .env("BALLAST_KAFKA__BOOTSTRAP_SERVERS", "b1:9092,b2:9092")
        .output()
        .unwrap();
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(yaml.contains("rack: az-b"), "{yaml}");
    assert!(yaml.contains("write_timeout: 2s"), "{yaml}");
    assert!(
        yaml.contains("bootstrap_servers: b1:9092,b2:9092"),
        "{yaml}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_config_fails_at_startup_with_the_field_named() {
    let out = Command::new(BIN)
        .env("BALLAST_LIMITS__MAX_ATTEMPTS", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("limits.max_attempts must be positive"),
        "{err}"
    );

    // A record SQS cannot hold is never accepted: the limit is checked at startup.
    let out = Command::new(BIN)
        .env("BALLAST_FAILOVER__BACKEND", "sqs")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("limits.max_record_bytes is 1048576") && err.contains("180224"),
        "{err}"
    );

    // Node-local failover is not failover: refused unless explicitly accepted.
    let out = Command::new(BIN)
        .env("BALLAST_FAILOVER__BACKEND", "sqlite")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("failover.allow_node_local"), "{err}");
    let out = Command::new(BIN)
        .arg("--dump-config")
        .env("BALLAST_FAILOVER__BACKEND", "sqlite")
        .env("BALLAST_FAILOVER__ALLOW_NODE_LOCAL", "true")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("allow_node_local: true"));

    let out = Command::new(BIN)
        .env("BALLAST_KAFKA__WRITE_TIMEOUT", "soon")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("kafka.write_timeout") && err.contains("duration"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_a_cluster_and_exits_cleanly_on_sigterm() -> anyhow::Result<()> {
    let cluster = EmbeddedCluster::start(EmbeddedClusterConfig::default())?;
    let mut svc = ServiceProcess::spawn(
        BIN,
        &[
            (
                "BALLAST_KAFKA__BOOTSTRAP_SERVERS",
                cluster.bootstrap_servers(),
            ),
            ("BALLAST_RACK", "az-b"),
        ],
    )?;
    wait_serving(svc.grpc).await?;
    let mut client =
        ballast_proto::ingest::v1::ingest_client::IngestClient::connect(svc.url()).await?;
    let results = client
        .produce(ballast_proto::ingest::v1::ProduceRequest {
            records: (0..10)
                .map(|i| record("events", None, &format!("{i}")))
                .collect(),
        })
        .await?
        .into_inner()
        .results;
    assert!(
        results.iter().all(|r| kafka_ack(r).is_some()),
        "{results:?}"
    );
    let metrics = ballast_testkit::http_get(svc.admin, "/metrics").await?;
    assert!(
        metrics.contains("ballast_gateway_records_total{topic=\"events\",outcome=\"kafka\"} 10"),
        "{metrics}"
    );

    let status = svc.terminate(Duration::from_secs(20))?;
    assert!(status.success(), "{status}");
    Ok(())
}
