//! `ballast-dedup` as operators run it: config from the environment, serving, SIGTERM.

use ballast_dedup_store::client::DedupClient;
use ballast_proto::dedup::v1 as pb;
use ballast_testkit::process::{spawn_until_stderr, ServiceProcess};
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

/// Against a Redis that keeps nothing on disk, `ballast-dedup` says at start that the
/// guarantee needs persistence.
#[test]
fn warns_at_start_when_redis_settings_break_the_guarantee() {
    let redis = RedisServer::start();
    let mut cmd = Command::new(BIN);
    cmd.env("BALLAST_REDIS__URL", redis.url())
        .env("BALLAST_LISTEN", "127.0.0.1:0")
        .env("BALLAST_ADMIN_LISTEN", "127.0.0.1:0");
    let (mut child, warned) =
        spawn_until_stderr(cmd, "persistence is off", Duration::from_secs(20)).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let line = warned.expect("a persistence warning at start");
    assert!(line.contains("WARN"), "{line}");
}

/// Without `auth.policy_file` a service runs open, and says so at start.
#[test]
fn running_open_is_announced_at_start() {
    let port = |_| ballast_testkit::process::free_port().to_string();
    let mut cmd = Command::new(BIN);
    cmd.env("BALLAST_BACKEND", "memory")
        .env("BALLAST_LISTEN", format!("127.0.0.1:{}", port(())))
        .env("BALLAST_ADMIN_LISTEN", format!("127.0.0.1:{}", port(())));
    let (mut child, warned) =
        spawn_until_stderr(cmd, "AUTH IS OFF", Duration::from_secs(20)).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let line = warned.expect("the open-service warning within 20 s");
    assert!(line.contains("auth.policy_file"), "{line}");
}
