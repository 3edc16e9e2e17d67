//! `ballast-retry-worker` as a process: a worker killed with SIGKILL mid-drain loses
//! nothing (its leased entries come back when the lease ends), SIGTERM exits cleanly, and a
//! bad config is a clear startup error.

use ballast_failover::envelope::{self, Envelope};
use ballast_failover::{FailoverQueue, SqlQueue};
use ballast_kafka::{EmbeddedCluster, EmbeddedClusterConfig};
use ballast_testkit::deps::unique;
use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ballast-retry-worker");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A worker process, killed and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn worker(bootstrap: &str, db: &str, drain_rate: u32) -> Proc {
    Proc(
        Command::new(BIN)
            .env("BALLAST_FAILOVER__BACKEND", "sqlite")
            .env("BALLAST_FAILOVER__DATABASE_URL", db)
            .env("BALLAST_KAFKA__BOOTSTRAP_SERVERS", bootstrap)
            .env("BALLAST_LISTEN", format!("127.0.0.1:{}", free_port()))
            .env("BALLAST_ADMIN_LISTEN", format!("127.0.0.1:{}", free_port()))
            .env("BALLAST_RETRY__LEASE", "4s")
            .env("BALLAST_RETRY__WAIT_TIME", "200ms")
            .env("BALLAST_RETRY__MAX_NUMBER_OF_MESSAGES", "20")
            .env("BALLAST_RETRY__DRAIN_RATE", drain_rate.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ballast-retry-worker"),
    )
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
                value: format!("v{i}").into_bytes(),
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
    Command::new("kill")
        .args(["-KILL", &first.0.id().to_string()])
        .status()?;
    first.0.wait()?;
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

    // SIGTERM: a clean exit.
    Command::new("kill")
        .args(["-TERM", &second.0.id().to_string()])
        .status()?;
    let end = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = second.0.try_wait()? {
            break s;
        }
        anyhow::ensure!(Instant::now() < end, "worker did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
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
