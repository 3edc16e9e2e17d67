//! The short torture run CI keeps: 70,000 records on a fixed seed through every process
//! of the system under faults, and every delivery invariant checked at the end.

use std::process::Command;

const DEV: &str = env!("CARGO_BIN_EXE_ballast-dev");

#[test]
fn a_short_seeded_torture_run_keeps_every_invariant() {
    let dir = std::env::temp_dir().join(format!("ballast-torture-test-{}", std::process::id()));
    let report = dir.join("report.html");
    let out = Command::new(DEV)
        .args(["torture", "--records", "70000", "--seed", "20261123"])
        .args([
            "--rate",
            "2500",
            "--hold",
            "800ms..2s",
            "--gap",
            "200ms..600ms",
        ])
        .args(["--settle-timeout", "5m", "--dir"])
        .arg(&dir)
        .arg("--report")
        .arg(&report)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("ballast-dev torture runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("every invariant holds (seed 20261123)"),
        "{stdout}"
    );
    // What a healthy run shows, which a gateway answering every record with a retryable
    // error would not: every record acknowledged (the audit flags any given up), and
    // through Kafka more often than through the queue.
    let total = |row: &str| -> usize {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(row))
            .and_then(|rest| rest.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {row:?} total:\n{stdout}"))
    };
    let (sent, kafka, failover) = (
        total("records sent"),
        total("acked: kafka"),
        total("acked: failover"),
    );
    assert_eq!(sent, 70_000, "{stdout}");
    assert_eq!(kafka + failover, sent, "{stdout}");
    assert!(kafka > failover, "{stdout}");
    // The workers run with the shipped attempt budget, and the faults use none of it up.
    assert_eq!(total("failover queue: dead letters"), 0, "{stdout}");
    // Every fault kind was played: each has a row with the records sent during it.
    for kind in [
        "broker down",
        "leader moves",
        "leaderless partition",
        "broker rtt spike",
        "cluster outage",
        "failover backend cut",
        "gateway sigterm",
        "gateway sigkill",
        "worker sigkill",
        "consumer sigkill",
        "redis restart",
        "topology killed",
        "spot notice",
        "broker flapping",
        "failover backend black-holed",
    ] {
        assert!(stderr.contains(kind), "{kind} was not played:\n{stderr}");
    }
    // Consumers wait out a cluster outage and a Redis restart instead of exiting.
    assert!(
        !stdout
            .lines()
            .any(|l| l.starts_with("processes that exited on their own") && l.contains("consumer")),
        "{stdout}"
    );
    let html = std::fs::read_to_string(&report).expect("the report is written");
    assert!(html.contains("<svg") && html.contains("20261123"));
    let _ = std::fs::remove_dir_all(&dir);
}
