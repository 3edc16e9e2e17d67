//! The example consumer against `ballast-dev up`: duplicates in Kafka (the same message id
//! written twice) are read but processed once per group.

use ballast_proto::ingest::v1 as pb;
use ballast_proto::ingest::v1::ingest_client::IngestClient;
use ballast_testkit::process::ReadyProcess;
use ballast_testkit::{kafka_ack, record, wait_serving};
use std::process::Command;

const DEV: &str = env!("CARGO_BIN_EXE_ballast-dev");

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
        DEV,
        &["up", "--gateway-addr", "127.0.0.1:0", "--topic", "dups:3"],
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
        Command::new(ballast_dev::ballast_bin().unwrap())
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

/// Consumer A claims a batch and is killed mid-work; its partitions move to B, which
/// reads the same ids while A's claims are still IN_PROGRESS. B waits for A's lease to
/// lapse and processes them: every id ends processed exactly once, none skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_killed_mid_work_loses_no_id() -> anyhow::Result<()> {
    use ballast_testkit::process::{signal, wait_exit};
    use std::time::{Duration, Instant};
    let dev = ReadyProcess::spawn(
        DEV,
        &["up", "--gateway-addr", "127.0.0.1:0", "--topic", "work:2"],
    );
    let gateway = dev.field("gateway");
    wait_serving(gateway.parse()?).await?;
    let mut client = IngestClient::connect(format!("http://{gateway}")).await?;
    let n = 40;
    let records = (0..n)
        .map(|i| {
            let mut r = record("work", None, &format!("v{i}"));
            r.message_id = format!("w-{i}");
            r
        })
        .collect();
    let results = client
        .produce(pb::ProduceRequest { records })
        .await?
        .into_inner()
        .results;
    assert!(results.iter().all(|r| kafka_ack(r).is_some()));

    let dir = std::env::temp_dir().join(format!("ballast-consume-kill-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (log_a, log_b) = (dir.join("a.log"), dir.join("b.log"));
    let consumer = |log: &std::path::Path, work_delay: &str, idle: &str| {
        Command::new(ballast_dev::ballast_bin().unwrap())
            .args(["consume", "--bootstrap", &dev.field("kafka_bootstrap")])
            .args([
                "--topic",
                "work",
                "--group",
                "g",
                "--dedup",
                &dev.field("dedup"),
            ])
            .args(["--lease", "15s", "--batch", "10", "--session-timeout", "6s"])
            .args(["--work-delay", work_delay, "--idle-exit", idle])
            .args(["--start-timeout", "60s", "--processed-log"])
            .arg(log)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
    };
    let lines = |p: &std::path::Path| -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };

    // A commits a first batch, starts the next one's work, and dies holding its claims.
    let mut a = consumer(&log_a, "1500ms", "30s")?;
    let end = Instant::now() + Duration::from_secs(60);
    while lines(&log_a).is_empty() {
        anyhow::ensure!(Instant::now() < end, "consumer A processed nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(400));
    signal(a.id(), "KILL");
    a.wait()?;
    let by_a = lines(&log_a);
    assert!(by_a.len() < n, "A finished everything before it was killed");

    // B takes over the group and must not skip what A held.
    let mut b = consumer(&log_b, "0s", "8s")?;
    let status = wait_exit(&mut b, Duration::from_secs(120))?;
    assert!(status.success(), "consumer B: {status}");
    let by_b = lines(&log_b);
    let mut all: Vec<&String> = by_a.iter().chain(&by_b).collect();
    all.sort();
    let total = all.len();
    all.dedup();
    assert_eq!(
        total,
        all.len(),
        "an id was processed twice: A {by_a:?} B {by_b:?}"
    );
    assert_eq!(all.len(), n, "ids never processed: A {by_a:?} B {by_b:?}");
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// `ballast consume` on a secured Kafka: TLS with the brokers' CA and SCRAM-SHA-512, the
/// password from a file, every record read and processed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_reads_kafka_over_sasl_ssl() -> anyhow::Result<()> {
    use ballast_kafka::{KafkaSasl, SaslMechanism, SecurityProtocol};
    use ballast_testkit::kafka_proxy::{Listener, SaslUsers, SecureKafka};
    let kafka = SecureKafka::start(Listener {
        tls: true,
        sasl: Some(SaslUsers::user("reader", "s3cret")),
        ..Listener::default()
    })
    .await?;
    let password = kafka.dir.join("password");
    std::fs::write(&password, "s3cret\n")?;
    let producer = ballast_kafka::KafkaProducer::new(&ballast_kafka::KafkaConfig {
        bootstrap_servers: kafka.proxy.bootstrap.clone(),
        security_protocol: SecurityProtocol::SaslSsl,
        ssl: ballast_kafka::KafkaSsl {
            ca_file: Some(kafka.ca.ca_file.clone()),
            ..Default::default()
        },
        sasl: KafkaSasl {
            mechanism: Some(SaslMechanism::ScramSha512),
            username: Some("reader".into()),
            password_file: Some(password.clone()),
            ..Default::default()
        },
        write_timeout: std::time::Duration::from_secs(5),
        ..Default::default()
    })?;
    for i in 0..12 {
        let id = format!("sec-{i}");
        producer
            .send(ballast_kafka::OutgoingRecord {
                topic: "events",
                partition: i % 3,
                key: None,
                value: b"secured",
                headers: &[(ballast_core::MESSAGE_ID_HEADER, id.as_bytes())],
            })
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    }
    let dev = ReadyProcess::spawn(DEV, &["up", "--gateway-addr", "127.0.0.1:0"]);
    let out = Command::new(ballast_dev::ballast_bin().unwrap())
        .args(["consume", "--bootstrap", &kafka.proxy.bootstrap])
        .arg("--kafka-tls-ca")
        .arg(&kafka.ca.ca_file)
        .args([
            "--kafka-sasl-mechanism",
            "SCRAM-SHA-512",
            "--kafka-sasl-username",
            "reader",
        ])
        .arg("--kafka-sasl-password-file")
        .arg(&password)
        .args(["--topic", "events", "--group", "secured"])
        .args(["--dedup", &dev.field("dedup"), "--idle-exit", "3s"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = counts(&text);
    assert_eq!(c["read"], 12, "{text}");
    assert_eq!(c["processed (unique)"], 12, "{text}");

    // A mechanism name that is not one: a clear error before anything connects.
    let out = Command::new(ballast_dev::ballast_bin().unwrap())
        .args(["consume", "--bootstrap", &kafka.proxy.bootstrap])
        .args(["--kafka-sasl-mechanism", "SCRAM-SHA-1"])
        .args([
            "--topic",
            "events",
            "--group",
            "g",
            "--dedup",
            &dev.field("dedup"),
        ])
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expected PLAIN, SCRAM-SHA-256"), "{err}");
    Ok(())
}

/// Found by `ballast-dev torture`: the consumer stopped on the transport errors librdkafka
/// reports while the whole cluster is out, instead of waiting for it to return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_rides_out_a_cluster_outage() -> anyhow::Result<()> {
    use std::time::Duration;
    let dev = ReadyProcess::spawn(
        DEV,
        &["up", "--gateway-addr", "127.0.0.1:0", "--topic", "outage:2"],
    );
    let gateway = dev.field("gateway");
    wait_serving(gateway.parse()?).await?;
    let mut client = IngestClient::connect(format!("http://{gateway}")).await?;
    let send = |from: usize| {
        (from..from + 20)
            .map(|i| {
                let mut r = record("outage", None, &format!("v{i}"));
                r.message_id = format!("o-{i}");
                r
            })
            .collect::<Vec<_>>()
    };
    let results = client
        .produce(pb::ProduceRequest { records: send(0) })
        .await?
        .into_inner()
        .results;
    assert!(results.iter().all(|r| kafka_ack(r).is_some()));
    let log = std::env::temp_dir().join(format!("ballast-outage-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let mut consumer = Command::new(ballast_dev::ballast_bin().unwrap())
        .args(["consume", "--bootstrap", &dev.field("kafka_bootstrap")])
        .args([
            "--topic",
            "outage",
            "--group",
            "g",
            "--dedup",
            &dev.field("dedup"),
        ])
        .args(["--idle-exit", "10m", "--processed-log"])
        .arg(&log)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let chaos = |action: &str| {
        Command::new(DEV)
            .args(["chaos", "--control", &dev.field("control"), action])
            .output()
    };
    assert!(chaos("outage")?.status.success());
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(chaos("recover")?.status.success());
    let mut results = Vec::new();
    for _ in 0..50 {
        results = client
            .produce(pb::ProduceRequest { records: send(20) })
            .await?
            .into_inner()
            .results;
        if results.iter().all(|r| kafka_ack(r).is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        results.iter().all(|r| kafka_ack(r).is_some()),
        "{results:?}"
    );
    // The consumer goes on after the outage and processes the records sent after it.
    let processed = || -> Vec<String> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let end = std::time::Instant::now() + Duration::from_secs(120);
    while processed().len() < 40 && std::time::Instant::now() < end {
        assert!(
            consumer.try_wait()?.is_none(),
            "the consumer exited during or after the outage"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let still_running = consumer.try_wait()?.is_none();
    let _ = consumer.kill();
    let out = consumer.wait_with_output()?;
    assert!(
        still_running,
        "the consumer exited: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Records read before the outage may come again (their offsets were not committed
    // yet); each id is processed once.
    let ids = processed();
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), 40, "{ids:?}");
    assert_eq!(unique.len(), 40, "{ids:?}");
    Ok(())
}

/// Found by `ballast-dev torture`: after a rebalance moved a partition away mid-batch, storing
/// its offset failed with librdkafka's "Erroneous state" and the consumer exited. Offsets
/// of partitions it no longer owns are skipped; the others are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_of_partitions_no_longer_owned_are_skipped_not_fatal() -> anyhow::Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let cluster = ballast_kafka::EmbeddedCluster::start(ballast_kafka::EmbeddedClusterConfig {
        brokers: 1,
        racks: vec![],
        topics: vec![ballast_kafka::TopicSpec {
            name: "moved".into(),
            partitions: 2,
            replication_factor: 1,
        }],
        ..Default::default()
    })?;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "g")
        .set("enable.auto.offset.store", "false")
        .create()?;
    // This consumer owned both partitions; then partition 1 went elsewhere.
    let mut both = TopicPartitionList::new();
    both.add_partition_offset("moved", 0, Offset::Beginning)?;
    both.add_partition_offset("moved", 1, Offset::Beginning)?;
    consumer.assign(&both)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("moved", 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    // Assignments take effect as the consumer is polled.
    for _ in 0..10 {
        let _ = consumer.poll(std::time::Duration::from_millis(100));
    }
    // The error the consumer used to exit on.
    let refused = consumer.store_offset("moved", 1, 5).unwrap_err();
    assert!(
        matches!(
            refused,
            rdkafka::error::KafkaError::StoreOffset(rdkafka::error::RDKafkaErrorCode::State)
        ),
        "{refused:?}"
    );
    let skipped = ballast_dedup_store::consumer::store_offsets(
        &consumer,
        [("moved", 0, 3), ("moved", 1, 5)],
    )?;
    assert_eq!(skipped, 1);
    consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync)?;
    let committed = consumer.committed(std::time::Duration::from_secs(5))?;
    let p0 = committed.find_partition("moved", 0).expect("partition 0");
    assert_eq!(
        p0.offset(),
        Offset::Offset(4),
        "the owned partition's offset is stored"
    );
    Ok(())
}
