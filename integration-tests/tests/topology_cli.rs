//! `ballast topology` as a user runs it: `show` against `ballast-dev up`, the planners' JSON,
//! and `watch-spot` against a local stub that serves EC2 instance metadata (IMDSv2).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, put};
use ballast_testkit::process::ReadyProcess;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DEV: &str = env!("CARGO_BIN_EXE_ballast-dev");

/// Runs `ballast`, or `ballast-dev` for its `chaos` tool.
fn ballast(args: &[&str]) -> std::process::Output {
    let bin = match args.first() {
        Some(&"chaos") => DEV.into(),
        _ => ballast_dev::ballast_bin().unwrap(),
    };
    Command::new(bin)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("ballast runs")
}

fn stdout_of(args: &[&str]) -> String {
    let out = ballast(args);
    assert!(
        out.status.success(),
        "ballast {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn snapshot(topology: &str) -> serde_json::Value {
    serde_json::from_str(&stdout_of(&[
        "topology",
        "--topology",
        topology,
        "show",
        "--json",
    ]))
    .expect("show --json prints json")
}

#[derive(Default)]
struct Imds {
    notice: Option<String>,
    token_requests: usize,
    authorized_reads: usize,
    unauthorized_reads: usize,
}

type Shared = Arc<Mutex<Imds>>;
const TOKEN: &str = "stub-token-1";

async fn token(State(s): State<Shared>, headers: HeaderMap) -> (StatusCode, HeaderMap, String) {
    let mut h = HeaderMap::new();
    let Some(ttl) = headers.get("x-aws-ec2-metadata-token-ttl-seconds") else {
        return (StatusCode::BAD_REQUEST, h, "missing ttl".into());
    };
    s.lock().unwrap().token_requests += 1;
    h.insert("x-aws-ec2-metadata-token-ttl-seconds", ttl.clone());
    (StatusCode::OK, h, TOKEN.into())
}

async fn instance_action(State(s): State<Shared>, headers: HeaderMap) -> (StatusCode, String) {
    let mut s = s.lock().unwrap();
    if headers
        .get("x-aws-ec2-metadata-token")
        .is_none_or(|t| t != TOKEN)
    {
        s.unauthorized_reads += 1;
        return (StatusCode::UNAUTHORIZED, String::new());
    }
    s.authorized_reads += 1;
    match &s.notice {
        Some(body) => (StatusCode::OK, body.clone()),
        None => (StatusCode::NOT_FOUND, "Not Found".into()),
    }
}

async fn imds_stub() -> anyhow::Result<(String, Shared)> {
    let state: Shared = Arc::default();
    let app = axum::Router::new()
        .route("/latest/api/token", put(token))
        .route(
            "/latest/meta-data/spot/instance-action",
            get(instance_action),
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}"), state))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_against_dev_and_the_spot_watcher_marks_its_broker_draining() -> anyhow::Result<()> {
    let dev = ReadyProcess::spawn(DEV, &["up", "--gateway-addr", "127.0.0.1:0"]);
    let topology = dev.field("topology");
    let control = dev.field("control");

    let table = stdout_of(&["topology", "--topology", &topology, "show"]);
    for want in ["RACK", "az-a", "az-b", "az-c", "events", "UNDER-REPLICATED"] {
        assert!(table.contains(want), "{want:?} missing from:\n{table}");
    }
    let snap = snapshot(&topology);
    assert_eq!(snap["brokers"].as_array().unwrap().len(), 3);
    assert_eq!(snap["kafka_reachable"], true);

    // A broker that leads a partition dies: show lists that partition as offline.
    let events = snap["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "events")
        .expect("events topic")
        .clone();
    let victim = events["partitions"][0]["leader"].as_i64().unwrap();
    let victim_row = format!("\n{victim:<8} ");
    stdout_of(&[
        "chaos",
        "--control",
        &control,
        "broker-down",
        "--broker",
        &victim.to_string(),
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let table = stdout_of(&["topology", "--topology", &topology, "show"]);
        if table.lines().any(|l| l.trim_end().ends_with(" OFFLINE")) {
            assert!(
                !table.contains(&victim_row),
                "broker {victim} still listed:\n{table}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no offline partition shown after broker {victim} went down:\n{table}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The watcher runs beside a broker that is still up.
    let watched = (1..=3).find(|b| *b != victim).unwrap();
    let watched_arg = watched.to_string();

    // The spot watcher: nothing while IMDS has no notice.
    let (imds, stub) = imds_stub().await?;
    let mut watcher = Command::new(ballast_dev::ballast_bin().unwrap())
        .args([
            "topology",
            "--topology",
            &topology,
            "watch-spot",
            "--broker-id",
            &watched_arg,
            "--imds-endpoint",
            &imds,
            "--interval",
            "200ms",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while stub.lock().unwrap().authorized_reads < 3 {
        assert!(Instant::now() < deadline, "the watcher never polled IMDS");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(snapshot(&topology)["draining_brokers"]
        .as_array()
        .unwrap()
        .is_empty());

    // AWS posts the notice two minutes ahead.
    stub.lock().unwrap().notice =
        Some(r#"{"action": "terminate", "time": "2030-01-02T03:04:05Z"}"#.into());
    let deadline = Instant::now() + Duration::from_secs(10);
    let marked = loop {
        let snap = snapshot(&topology);
        let b = snap["brokers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == watched)
            .cloned()
            .unwrap();
        if b["draining"] == true {
            break b;
        }
        assert!(
            Instant::now() < deadline,
            "broker {watched} never marked draining"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // 2030-01-02T03:04:05Z
    assert_eq!(marked["draining_deadline_unix_ms"], 1_893_553_445_000i64);
    let mut line = String::new();
    BufReader::new(watcher.stdout.take().unwrap()).read_line(&mut line)?;
    let event: serde_json::Value = serde_json::from_str(&line)?;
    assert_eq!(event["event"], "draining");
    assert_eq!(event["broker_id"], watched);
    assert_eq!(event["action"], "terminate");
    watcher.kill()?;
    watcher.wait()?;
    let s = stub.lock().unwrap();
    assert!(s.token_requests >= 1, "IMDSv2: a token first");
    assert_eq!(s.unauthorized_reads, 0, "every read carried the token");
    drop(s);

    let table = stdout_of(&["topology", "--topology", &topology, "show"]);
    assert!(table.contains("yes, "), "draining with time left:\n{table}");
    drop(dev);
    Ok(())
}

#[test]
fn planners_print_json_and_refuse_bad_input() -> anyhow::Result<()> {
    // Seed 002: brokers 0,1,2 in one zone and 3,4,5 in another.
    let out = stdout_of(&[
        "topology",
        "plan-assignment",
        "--brokers",
        "0:z1,1:z1,2:z1,3:z2,4:z2,5:z2",
        "--partitions",
        "6",
        "--replication-factor",
        "2",
        "--start-index",
        "0",
    ]);
    let plan: serde_json::Value = serde_json::from_str(&out)?;
    let leaders: Vec<i64> = plan["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["replicas"][0].as_i64().unwrap())
        .collect();
    assert_eq!(leaders, vec![0, 3, 1, 4, 2, 5]);

    let bad = ballast(&[
        "topology",
        "plan-assignment",
        "--brokers",
        "0:z1,1",
        "--partitions",
        "2",
        "--replication-factor",
        "1",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not all brokers have rack"));

    let dir = std::env::temp_dir().join(format!("ballast-topology-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let input = dir.join("move.json");
    std::fs::write(
        &input,
        serde_json::json!({
            "current": (0..4).map(|p| serde_json::json!({
                "topic": "clicks", "partition": p, "replicas": [9, 2], "size_bytes": 1000
            })).collect::<Vec<_>>(),
            "brokers": [
                {"id": 1, "rack": "a", "free_disk_bytes": 10_000},
                {"id": 2, "rack": "b", "free_disk_bytes": 10_000},
                {"id": 3, "rack": "a", "free_disk_bytes": 10_000}
            ],
            "max_moves_per_broker": 1
        })
        .to_string(),
    )?;
    let stages_dir = dir.join("stages");
    let out = stdout_of(&[
        "topology",
        "plan-reassignment",
        "--input",
        input.to_str().unwrap(),
        "--output-dir",
        stages_dir.to_str().unwrap(),
    ]);
    let plan: serde_json::Value = serde_json::from_str(&out)?;
    let stages = plan["stages"].as_array().unwrap();
    assert!(stages.len() >= 2, "{plan:#}");
    assert_eq!(plan["replicas_moved"], 4);
    for s in stages {
        let file = stages_dir.join(format!("stage-{}.json", s["index"]));
        let written: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(file)?)?;
        assert_eq!(written, s["reassignment"]);
    }

    std::fs::write(
        &input,
        r#"{"current": [], "brokers": [], "max_moves_per_broker": 1}"#,
    )?;
    let bad = ballast(&[
        "topology",
        "plan-reassignment",
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("at least one target broker"));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
