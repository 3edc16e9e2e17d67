//! `ballast-dedup` as operators run it: config from the environment, serving, SIGTERM.

use ballast_dedup_store::client::DedupClient;
use ballast_proto::dedup::v1 as pb;
use ballast_testkit::process::ServiceProcess;
use ballast_testkit::redis::RedisServer;
use ballast_testkit::wait_serving;
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_ballast-dedup");

#[test]
fn dump_config_and_bad_config() {
    let out = Command::new(BIN)
        .arg("--dump-config")
        .env("BALLAST_REDIS__URL", "redis://:secret@cache:6379")
        .env("BALLAST_REDIS__DONE_WINDOW", "3d")
        .output()
        .unwrap();
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        yaml.contains("url: redis://:<redacted>@cache:6379"),
        "--dump-config never prints a secret: {yaml}"
    );
    assert!(!yaml.contains("secret"), "{yaml}");
    assert!(yaml.contains("done_window: 3days"), "{yaml}");
    let out = Command::new(BIN)
        .env("BALLAST_LIMITS__MAX_BATCH", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("limits.max_batch"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_redis_and_exits_on_sigterm() -> anyhow::Result<()> {
    let redis = RedisServer::start();
    let mut svc = ServiceProcess::spawn(BIN, &[("BALLAST_REDIS__URL", &redis.url())])?;
    wait_serving(svc.grpc).await?;
    let c = DedupClient::connect(&svc.url(), "t").await?;
    let a = c
        .claim("g", vec!["x".into()], Duration::from_secs(5))
        .await?;
    let b = c
        .claim("g", vec!["x".into()], Duration::from_secs(5))
        .await?;
    assert_eq!(a[0].state, pb::ClaimState::New as i32);
    assert_eq!(b[0].state, pb::ClaimState::InProgress as i32);
    let status = svc.terminate(Duration::from_secs(20))?;
    assert!(status.success(), "{status}");
    Ok(())
}
