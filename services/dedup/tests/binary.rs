//! `ballast-dedup` as operators run it: config from the environment, serving, SIGTERM.

use ballast_dedup_store::client::DedupClient;
use ballast_proto::dedup::v1 as pb;
use ballast_testkit::redis::RedisServer;
use ballast_testkit::wait_serving;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ballast-dedup");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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
    assert!(yaml.contains("url: redis://:secret@cache:6379"), "{yaml}");
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
    let port = free_port();
    let mut child = Command::new(BIN)
        .env("BALLAST_REDIS__URL", redis.url())
        .env("BALLAST_LISTEN", format!("127.0.0.1:{port}"))
        .env("BALLAST_ADMIN_LISTEN", format!("127.0.0.1:{}", free_port()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let addr = format!("127.0.0.1:{port}");
    wait_serving(addr.parse()?).await?;
    let c = DedupClient::connect(&format!("http://{addr}"), "t").await?;
    let a = c
        .claim("g", vec!["x".into()], Duration::from_secs(5))
        .await?;
    let b = c
        .claim("g", vec!["x".into()], Duration::from_secs(5))
        .await?;
    assert_eq!(a[0].state, pb::ClaimState::New as i32);
    assert_eq!(b[0].state, pb::ClaimState::InProgress as i32);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    let end = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        anyhow::ensure!(Instant::now() < end, "ballast-dedup did not exit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success());
    Ok(())
}
