//! `ballast demo --quick` end to end: the script runs, the audit adds up, nothing is lost.

use std::process::Command;

fn audit_value(out: &str, label: &str) -> u64 {
    out.lines()
        .find(|l| l.starts_with(label))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("audit line {label:?} missing:\n{out}"))
}

#[test]
fn quick_demo_loses_nothing_and_the_audit_adds_up() {
    let out = Command::new(env!("CARGO_BIN_EXE_ballast"))
        .args(["demo", "--quick", "--records", "3000"])
        .output()
        .expect("run ballast demo");
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
    assert!(delivered >= kafka, "every kafka ack is delivered: {stdout}");
    assert!(kafka > 0);
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
