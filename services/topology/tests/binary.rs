//! `ballast-topology` as operators run it: config from the environment, serving snapshots
//! from the mock cluster, and ending open watch streams on SIGTERM.

use ballast_kafka::{EmbeddedCluster, EmbeddedClusterConfig};
use ballast_proto::topology::v1 as pb;
use ballast_proto::topology::v1::topology_client::TopologyClient;
use ballast_testkit::process::{wait_exit, ServiceProcess};
use ballast_testkit::wait_serving;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ballast-topology");

#[test]
fn dump_config_and_bad_config() {
    let out = Command::new(BIN)
        .arg("--dump-config")
        .env("BALLAST_KAFKA__BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
        .env("BALLAST_DRAINING_LAPSE_AFTER_DEADLINE", "10m")
        .output()
        .unwrap();
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        yaml.contains("bootstrap_servers: k1:9092,k2:9092"),
        "{yaml}"
    );
    assert!(
        yaml.contains("draining_lapse_after_deadline: 10m"),
        "{yaml}"
    );
    let out = Command::new(BIN)
        .env("BALLAST_KAFKA__REFRESH_INTERVAL", "0s")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refresh_interval"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_cluster_and_ends_watches_on_sigterm() -> anyhow::Result<()> {
    let cluster = EmbeddedCluster::start(EmbeddedClusterConfig::default())?;
    let mut svc = ServiceProcess::spawn(
        BIN,
        &[(
            "BALLAST_KAFKA__BOOTSTRAP_SERVERS",
            cluster.bootstrap_servers(),
        )],
    )?;
    wait_serving(svc.grpc).await?;
    let mut client = TopologyClient::connect(svc.url()).await?;
    let end = Instant::now() + Duration::from_secs(10);
    let snap = loop {
        let s = client
            .get_topology(pb::GetTopologyRequest::default())
            .await?
            .into_inner();
        if s.kafka_reachable {
            break s;
        }
        anyhow::ensure!(Instant::now() < end, "no metadata: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(snap.brokers.len(), 3);
    assert!(snap.brokers.iter().all(|b| b.rack.starts_with("az-")));

    let mut watch = client
        .watch_topology(pb::WatchTopologyRequest::default())
        .await?
        .into_inner();
    assert!(watch.message().await?.is_some());
    svc.signal("TERM");
    // The stream ends rather than holding the shutdown for its grace period.
    let ended = tokio::time::timeout(Duration::from_secs(3), async {
        while let Ok(Some(_)) = watch.message().await {}
    })
    .await;
    assert!(ended.is_ok(), "watch stream still open after SIGTERM");
    let status = wait_exit(&mut svc.child, Duration::from_secs(10))?;
    assert!(status.success(), "{status}");
    Ok(())
}
