//! `ballast-dev demo --quick` end to end: the script runs, the audit adds up, nothing is lost.

use std::process::Command;

const DEV: &str = env!("CARGO_BIN_EXE_ballast-dev");

fn audit_value(out: &str, label: &str) -> u64 {
    out.lines()
        .find(|l| l.starts_with(label))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("audit line {label:?} missing:\n{out}"))
}

#[test]
fn quick_demo_loses_nothing_and_the_audit_adds_up() {
    let report = std::env::temp_dir().join(format!("ballast-demo-{}.html", std::process::id()));
    let out = Command::new(DEV)
        .args(["demo", "--quick", "--records", "3000", "--report"])
        .arg(&report)
        .output()
        .expect("run ballast-dev demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent = audit_value(&stdout, "sent");
    let kafka = audit_value(&stdout, "acked via kafka");
    let failover = audit_value(&stdout, "acked via failover");
    let rejected = audit_value(&stdout, "rejected");
    let delivered = audit_value(&stdout, "delivered to kafka");
    let lost = audit_value(&stdout, "lost");
    assert_eq!(sent, 3000);
    assert_eq!(sent, kafka + failover + rejected, "{stdout}");
    assert_eq!(lost, 0, "{stdout}");
    assert_eq!(audit_value(&stdout, "acked at a wrong partition/offset"), 0);
    assert_eq!(audit_value(&stdout, "answered without an outcome"), 0);
    assert!(delivered >= kafka, "every kafka ack is delivered: {stdout}");
    assert!(kafka > 0);
    // The dedup-guarded consumer read every copy and processed each id once.
    let unique = audit_value(&stdout, "delivered to kafka (unique ids)");
    let read = audit_value(&stdout, "consumer: read");
    let skipped = audit_value(&stdout, "consumer: duplicates skipped");
    let processed = audit_value(&stdout, "consumer: unique processed");
    assert_eq!(read, delivered, "{stdout}");
    assert_eq!(processed, unique, "{stdout}");
    assert_eq!(processed + skipped, read, "{stdout}");
    assert!(
        unique >= kafka + failover && unique <= sent,
        "every acked id delivered: {stdout}"
    );
    // The report: one self-contained page with the timeline.
    let page = std::fs::read_to_string(&report).expect("report written");
    assert!(
        page.contains("<svg") && page.contains("<polyline"),
        "no timeline"
    );
    assert!(page.contains(">cluster outage</text>"), "phases drawn");
    assert!(page.contains("No acknowledged record was lost"));
    std::fs::remove_file(&report).ok();
    for phase in [
        "steady",
        "draining notice",
        "broker dies",
        "leaderless partition",
        "cluster outage",
        "recovery",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(phase)),
            "phase {phase} missing:\n{stdout}"
        );
    }
}
