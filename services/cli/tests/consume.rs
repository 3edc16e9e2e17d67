//! The example consumer against `ballast dev`: duplicates in Kafka (the same message id
//! written twice) are read but processed once per group.

use ballast_proto::ingest::v1 as pb;
use ballast_proto::ingest::v1::ingest_client::IngestClient;
use ballast_testkit::process::ReadyProcess;
use ballast_testkit::{kafka_ack, record, wait_serving};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ballast");

fn counts(out: &str) -> std::collections::HashMap<String, u64> {
    out.lines()
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(char::is_whitespace)?;
            Some((k.trim().to_string(), v.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_processed_equals_unique_ids_despite_duplicates() -> anyhow::Result<()> {
    let dev = ReadyProcess::spawn(
        BIN,
        &["dev", "--gateway-addr", "127.0.0.1:0", "--topic", "dups:3"],
    );
    let gateway = dev.field("gateway");
    wait_serving(gateway.parse()?).await?;
    let mut client = IngestClient::connect(format!("http://{gateway}")).await?;
    // 30 ids; 10 of them sent twice, as failover plus a late Kafka write would.
    let mut records = Vec::new();
    for i in 0..30 {
        let mut r = record("dups", None, &format!("v{i}"));
        r.message_id = format!("id-{i}");
        records.push(r);
    }
    for i in 0..10 {
        let mut r = record("dups", None, &format!("again{i}"));
        r.message_id = format!("id-{i}");
        records.push(r);
    }
    let results = client
        .produce(pb::ProduceRequest { records })
        .await?
        .into_inner()
        .results;
    assert_eq!(
        results.iter().filter(|r| kafka_ack(r).is_some()).count(),
        40
    );

    let run = |group: &str| {
        Command::new(BIN)
            .args([
                "consume",
                "--bootstrap",
                &dev.field("kafka_bootstrap"),
                "--topic",
                "dups",
            ])
            .args([
                "--group",
                group,
                "--dedup",
                &dev.field("dedup"),
                "--idle-exit",
                "3s",
            ])
            .output()
    };
    let out = run("billing")?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = counts(&text);
    assert_eq!(c["read"], 40, "{text}");
    assert_eq!(c["unique ids seen"], 30, "{text}");
    assert_eq!(c["processed (unique)"], 30, "{text}");
    assert_eq!(c["duplicates skipped"], 10, "{text}");

    // Another group processes everything once too.
    let out = run("analytics")?;
    let c = counts(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(c["processed (unique)"], 30);
    Ok(())
}
