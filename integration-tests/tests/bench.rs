//! `ballast-dev bench` smoke test: every figure is produced. Speed is not asserted here;
//! figures are read from `just bench`.

use std::process::Command;

const DEV: &str = env!("CARGO_BIN_EXE_ballast-dev");

/// Asserts that each of `keys` in `obj` is a finite, positive number.
fn positive(obj: &serde_json::Value, keys: &[&str]) {
    for key in keys {
        let x = obj[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing: {obj}"));
        assert!(x.is_finite() && x > 0.0, "{key} = {x} in {obj}");
    }
}

#[test]
fn bench_quick_produces_every_figure() {
    let dir = std::env::temp_dir().join(format!("ballast-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("bench.json");
    let moto = ballast_testkit::deps::Moto::start();
    let out = Command::new(DEV)
        .args([
            "bench",
            "--quick",
            "--records",
            "2000",
            "--concurrency",
            "4",
        ])
        .args(["--sqs-endpoint", &moto.endpoint()])
        .args(["--database-url", &ballast_testkit::deps::require_postgres()])
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run ballast-dev bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Five from the gateway suite, and the pinned row from the cpu suite (two cores here).
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("P1")).count(),
        6,
        "{stdout}"
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let p1 = &v["p1_gateway"];
    for key in [
        "direct_records_per_sec",
        "gateway_records_per_sec",
        "throughput_ratio",
        "inprocess_records_per_sec",
        "direct_p99_ms",
        "gateway_p99_ms",
        "added_p99_ms",
        "sink_p99_ms",
        "tls_records_per_sec",
        "tls_ratio",
    ] {
        let x = p1[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing: {v}"));
        assert!(x.is_finite(), "{key} = {x}");
    }
    positive(p1, &["gateway_records_per_sec", "sink_p99_ms"]);
    let p4 = &v["p4_dedup"];
    positive(
        p4,
        &[
            "raw_setnx_per_sec",
            "store_claims_per_sec",
            "store_ratio",
            "service_claims_per_sec",
            "service_ratio",
        ],
    );
    assert_eq!(p1["records"], 2000);
    let p5 = &v["p5_failover"];
    assert!(
        p5["sqs_requests_per_1000"]
            .as_f64()
            .is_some_and(|x| x > 0.0),
        "{p5}"
    );
    let backends: Vec<&str> = p5["backends"]
        .as_array()
        .expect("p5_failover.backends")
        .iter()
        .map(|b| b["backend"].as_str().unwrap())
        .collect();
    assert_eq!(backends, ["sqlite", "postgresql"], "{p5}");
    for b in p5["backends"].as_array().unwrap() {
        positive(
            b,
            &[
                "raw_read_delete_per_sec",
                "worker_drain_per_sec",
                "drain_ratio",
                "unpipelined_drain_per_sec",
                "unpipelined_ratio",
            ],
        );
    }
    // P8: three record sizes and the tls row, each with both processes' CPU measured.
    // P8's idle rows: 1 topic, then 50 (quick) with one and with all in use; metadata is
    // fetched for the topics in use only, so all in use reads more.
    let idle = v["p8_cpu"]["idle"].as_array().expect("p8_cpu.idle");
    let shape: Vec<(u64, u64)> = idle
        .iter()
        .map(|r| {
            (
                r["topics"].as_u64().unwrap(),
                r["topics_in_use"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(shape, [(1, 1), (50, 1), (50, 50)], "{v}");
    let bytes = |i: usize| idle[i]["metadata_bytes_per_sec"].as_f64().unwrap();
    assert!(bytes(1) > 0.0 && bytes(2) > bytes(1), "{idle:?}");
    let p8 = v["p8_cpu"]["rows"].as_array().expect("p8_cpu.rows");
    let sizes: Vec<(u64, bool)> = p8
        .iter()
        .map(|r| {
            (
                r["record_bytes"].as_u64().unwrap(),
                r["tls"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        sizes,
        [(100, false), (1024, false), (16384, false), (1024, true)],
        "{v}"
    );
    // P1 pinned: the gateway and the bare producer each ran alone on core 1 and did work.
    let pinned = &v["p8_cpu"]["pinned"];
    positive(
        pinned,
        &[
            "gateway_records_per_sec",
            "producer_records_per_sec",
            "gateway_core_busy",
            "producer_core_busy",
            "ratio",
        ],
    );
    // Each row also has the grpc sink's CPU (the transport floor), and a line for it.
    for r in p8 {
        positive(
            r,
            &[
                "gateway_cpu_seconds",
                "producer_cpu_seconds",
                "gateway_millicores_per_mb_per_sec",
                "producer_millicores_per_mb_per_sec",
                "ratio",
                "sink_cpu_seconds",
                "sink_mb_per_sec",
                "sink_millicores_per_mb_per_sec",
                "floor_ratio",
            ],
        );
        assert!(r["floor_ratio"].as_f64() > Some(1.0), "{r}");
    }
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("P8") && l.contains("grpc sink (no kafka)"))
            .count(),
        4,
        "{stdout}"
    );
    for figure in ["P3", "P4", "P5", "P6", "P7", "P8", "P9"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(figure)),
            "{figure} missing:\n{stdout}"
        );
    }
    let share = |x: &serde_json::Value, key: &str| {
        let f = x[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing: {v}"));
        assert!((0.0..=1.0).contains(&f), "{key} = {f} is not a share");
        f
    };
    for mix in ["unkeyed", "half_keyed"] {
        let p3 = &v["p3_broker_loss"][mix];
        share(p3, "gateway_share");
        share(p3, "plain_share");
        assert!(p3["gateway_records"].as_u64().unwrap() > 0, "{p3}");
        assert!(p3["plain_records"].as_u64().unwrap() > 0, "{p3}");
    }
    let p6 = &v["p6_overload"];
    positive(
        p6,
        &[
            "failover_capacity_per_sec",
            "offered_records_per_sec",
            "baseline_rss_mib",
            "peak_rss_mib",
        ],
    );
    assert!(
        p6["peak_rss_mib"].as_f64() >= p6["baseline_rss_mib"].as_f64(),
        "{p6}"
    );
    // The 1 MiB phase: its figures, and an answer counted for every record offered.
    let large = &p6["large"];
    for key in [
        "baseline_rss_mib",
        "peak_rss_mib",
        "inflight_budget_mib",
        "request_buffers_mib",
        "growth_over_bound",
    ] {
        let x = large[key]
            .as_f64()
            .unwrap_or_else(|| panic!("large.{key} missing: {v}"));
        assert!(x.is_finite() && x >= 0.0, "large.{key} = {x}");
    }
    let offered = large["records_offered"].as_u64().unwrap();
    let answered: u64 = large["answered"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert!(offered > 0 && answered == offered, "{large}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("P6")).count(),
        2,
        "{stdout}"
    );
    let p7 = &v["p7_locality"];
    share(p7, "gateway_local_share");
    share(p7, "plain_local_share");
    share(p7, "local_leader_share");
    // P7 with skew: both layouts, each with spillover and local-only placement; where the
    // zone leads 1 of 6, spillover evens the partitions out and keeps half local.
    let layouts = v["p7_skew"]["layouts"].as_array().expect("p7_skew layouts");
    assert_eq!(layouts.len(), 2, "{v}");
    for layout in layouts {
        for run in ["spillover", "local_only"] {
            share(&layout[run], "local_share");
            let spread = layout[run]["spread"].as_f64().unwrap();
            assert!(spread >= 1.0, "{layout}");
        }
    }
    let one = &layouts[0];
    assert_eq!(one["local_partitions"], 1, "{one}");
    assert!(
        one["spillover"]["spread"].as_f64() < one["local_only"]["spread"].as_f64(),
        "{one}"
    );
    // Local only: all of it, but for a write rerouted after a timeout.
    assert!(
        one["local_only"]["local_share"].as_f64() >= Some(0.99),
        "{one}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("P7")).count(),
        5,
        "{stdout}"
    );
    // P9: both orderings measured in the run.
    for run in ["ordered", "unordered"] {
        positive(
            &v["p9_divert"][run],
            &[
                "diverted_ms",
                "writes_per_sec_after_recovery",
                "writes_per_sec_during_outage",
            ],
        );
    }
    // And ordered on SQS FIFO (moto_server runs here).
    positive(
        &v["p9_divert"]["fifo"]["Ok"]["ordered"],
        &["diverted_ms", "writes_per_sec_during_outage"],
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("P9")).count(),
        4,
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
