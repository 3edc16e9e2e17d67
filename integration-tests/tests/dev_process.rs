//! `ballast-dev up` as a user runs it: a separate process that prints one JSON ready line,
//! takes records over gRPC, serves any Kafka client, obeys `ballast-dev chaos`, and drains
//! on SIGTERM.

use ballast_proto::ingest::v1 as pb;
use ballast_proto::ingest::v1::ingest_client::IngestClient;
use ballast_testkit::process::ReadyProcess;
use ballast_testkit::{consume_all, kafka_ack, record, wait_serving};
use std::process::Command;
use std::time::Duration;

const DEV: &str = env!("CARGO_BIN_EXE_ballast-dev");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_serves_grpc_kafka_clients_chaos_and_drains_on_sigterm() -> anyhow::Result<()> {
    let mut dev = ReadyProcess::spawn(
        DEV,
        &[
            "up",
            "--gateway-addr",
            "127.0.0.1:0",
            "--topic",
            "orders:4:3",
            "--topic",
            "events:6",
        ],
    );
    assert_eq!(dev.ready["ready"], true);
    let gateway = dev.field("gateway");
    let control = dev.field("control");
    let bootstrap = dev.field("kafka_bootstrap");
    assert!(dev.field("metrics").starts_with("http://127.0.0.1:"));
    assert!(dev.field("dedup").starts_with("127.0.0.1:"));
    assert!(dev.field("topology").starts_with("127.0.0.1:"));
    let retry_admin = dev.field("retry_admin");
    wait_serving(gateway.parse()?).await?;

    // Reflection lists the services, as grpcurl would.
    for services in [
        reflected_services(&gateway).await?,
        reflected_services_v1alpha(&gateway).await?,
        reflected_services_v1alpha(&retry_admin).await?,
    ] {
        for want in ["ballast.ingest.v1.Ingest", "grpc.health.v1.Health"] {
            assert!(
                services.iter().any(|s| s == want),
                "{want} not in {services:?}"
            );
        }
    }

    let mut client = IngestClient::connect(format!("http://{gateway}")).await?;
    let results = client
        .produce(pb::ProduceRequest {
            records: (0..8)
                .map(|i| record("orders", None, &format!("o{i}")))
                .collect(),
        })
        .await?
        .into_inner()
        .results;
    assert!(
        results.iter().all(|r| kafka_ack(r).is_some()),
        "{results:?}"
    );
    let landed = consume_all(&bootstrap, "orders", 8, Duration::from_secs(15))?;
    assert_eq!(landed.len(), 8);
    let ids: std::collections::HashSet<_> = results.iter().map(|r| r.message_id.clone()).collect();
    assert!(landed
        .iter()
        .all(|l| ids.contains(l.message_id.as_deref().unwrap_or(""))));

    // Another Kafka client, in another process, sees the records with their header.
    let kcat = which("kcat").unwrap_or_else(|| {
        panic!("kcat is not installed: run scripts/dev-deps.sh (apt-get install kcat)")
    });
    let out = Command::new(kcat)
        .args([
            "-b",
            &bootstrap,
            "-C",
            "-t",
            "orders",
            "-o",
            "beginning",
            "-e",
            "-q",
        ])
        .args(["-f", "%p %h\\n"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kcat failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("ballast-message-id="))
            .count(),
        8,
        "kcat output:\n{text}"
    );

    // Chaos through the CLI.
    let out = Command::new(DEV)
        .args([
            "chaos",
            "--control",
            &control,
            "broker-down",
            "--broker",
            "2",
        ])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "broker 2 down");
    let out = Command::new(DEV)
        .args([
            "chaos",
            "--control",
            &control,
            "broker-down",
            "--broker",
            "9",
        ])
        .output()?;
    assert!(!out.status.success(), "an unknown broker is an error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));

    // Unkeyed records still go through with broker 2 down.
    let out = Command::new(ballast_dev::ballast_bin().unwrap())
        .args([
            "produce",
            "--gateway",
            &gateway,
            "--topic",
            "events",
            "--count",
            "12",
        ])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches(" kafka ")
            .count(),
        12
    );

    // A whole-cluster outage: records are acknowledged through the SQLite failover queue,
    // and `ballast dlq stats` shows them until the retry workers drain them.
    let chaos = |args: &[&str]| {
        Command::new(DEV)
            .args(["chaos", "--control", &control])
            .args(args)
            .output()
    };
    let produce = |topic: &str| {
        Command::new(ballast_dev::ballast_bin().unwrap())
            .args(["produce", "--gateway", &gateway, "--topic", topic])
            .args(["--count", "5"])
            .output()
    };
    assert!(chaos(&["outage"])?.status.success());
    let out = produce("orders")?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches(" failover ").count(), 5, "{text}");
    assert!(chaos(&["recover"])?.status.success());
    let out = Command::new(ballast_dev::ballast_bin().unwrap())
        .args(["dlq", "--admin", &retry_admin, "stats"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("backend        sqlite"), "{text}");
    let landed = consume_all(&bootstrap, "orders", 13, Duration::from_secs(30))?;
    assert_eq!(
        landed.len(),
        13,
        "the 5 failed-over records reached kafka too"
    );

    // Transient errors through `ballast-dev chaos`: the cluster answers the topic's metadata
    // with UNKNOWN_TOPIC_OR_PARTITION and fails produce requests with NOT_ENOUGH_REPLICAS,
    // as it does while brokers are replaced. Every record is still acknowledged.
    let out = chaos(&["inject-errors", "--error", "NOPE"])?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("UNKNOWN_TOPIC_OR_PARTITION"), "{err}");
    let out = chaos(&[
        "topic-error",
        "--topic",
        "events",
        "--error",
        "UNKNOWN_TOPIC_OR_PARTITION",
    ])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = chaos(&[
        "inject-errors",
        "--api",
        "produce",
        "--error",
        "NOT_ENOUGH_REPLICAS",
        "--count",
        "2",
    ])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("next 2 produce requests fail"));
    // Past the gateway's next metadata refresh, so it has seen the topic error.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let out = produce("events")?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(
        text.matches("  kafka  ").count() + text.matches("  failover  ").count(),
        5,
        "{text}"
    );
    let out = chaos(&["topic-error", "--topic", "events", "--error", "NONE"])?;
    assert!(out.status.success());

    // SIGTERM: a clean, prompt exit.
    let status = dev.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit status {status}");
    Ok(())
}

fn which(cmd: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(cmd))
            .find(|p| p.is_file())
    })
}

/// The services a reflection client of version `$v` (v1 or v1alpha) lists at `$addr`.
macro_rules! reflected {
    ($v:ident, $addr:expr) => {{
        use tonic_reflection::pb::$v::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$v::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$v::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::$v::ServerReflectionRequest;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", $addr))?
            .connect()
            .await?;
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let resp = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await?
            .into_inner()
            .message()
            .await?
            .ok_or_else(|| anyhow::anyhow!("no reflection response"))?;
        match resp.message_response {
            Some(MessageResponse::ListServicesResponse(list)) => {
                anyhow::Ok(list.service.into_iter().map(|s| s.name).collect::<Vec<_>>())
            }
            other => anyhow::bail!("unexpected reflection response {other:?}"),
        }
    }};
}

async fn reflected_services(addr: &str) -> anyhow::Result<Vec<String>> {
    reflected!(v1, addr)
}

/// The same through reflection v1alpha, the only version grpcurl 1.8 speaks.
async fn reflected_services_v1alpha(addr: &str) -> anyhow::Result<Vec<String>> {
    reflected!(v1alpha, addr)
}

/// `ballast-dev up --tls-dir` serves every API over TLS with generated certificates, and
/// every client command reaches it with `--tls-ca` (and `--tls-cert`/`--tls-key`); a
/// client without the CA is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_dir_serves_every_api_over_tls_and_clients_follow() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(ballast_testkit::deps::unique("ballast-dev-tls"));
    let dir_arg = dir.display().to_string();
    let mut dev = ReadyProcess::spawn(
        DEV,
        &["up", "--gateway-addr", "127.0.0.1:0", "--tls-dir", &dir_arg],
    );
    let tls = dev.ready["tls"].clone();
    let file = |k: &str| {
        tls[k]
            .as_str()
            .unwrap_or_else(|| panic!("ready line tls.{k}: {tls}"))
            .to_string()
    };
    let (ca, cert, key) = (
        file("ca_file"),
        file("client_cert_file"),
        file("client_key_file"),
    );
    let security = ballast_security::ClientSecurity {
        ca_file: Some(ca.clone().into()),
        ..Default::default()
    };
    ballast_testkit::wait_serving_with(dev.field("gateway").parse()?, &security).await?;
    let run = |bin: &std::path::Path, args: &[&str]| {
        Command::new(bin)
            .args(args)
            .env_remove("BALLAST_TLS_CA")
            .output()
            .expect("run the binary")
    };
    let ballast = ballast_dev::ballast_bin()?;
    let cli = |args: &[&str]| run(&ballast, args);
    let gateway = dev.field("gateway");
    let out = cli(&[
        "produce",
        "--gateway",
        &gateway,
        "--tls-ca",
        &ca,
        "--topic",
        "events",
        "over tls",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("kafka"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = cli(&[
        "produce",
        "--gateway",
        &gateway,
        "--topic",
        "events",
        "plaintext",
    ]);
    assert!(!out.status.success(), "a plaintext client was served");

    let mtls = [
        "--tls-ca",
        ca.as_str(),
        "--tls-cert",
        cert.as_str(),
        "--tls-key",
        key.as_str(),
    ];
    let admin = dev.field("retry_admin");
    let mut args = vec!["dlq", "--admin", admin.as_str()];
    args.extend(mtls);
    args.push("stats");
    let out = cli(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let topology = dev.field("topology");
    let mut args = vec!["topology", "--topology", topology.as_str()];
    args.extend(mtls);
    args.push("show");
    let out = cli(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The gateway follows the topology service over TLS too.
    let metrics = dev.field("metrics");
    let admin_addr: std::net::SocketAddr = metrics
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .parse()?;
    let end = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let text = ballast_testkit::http_get(admin_addr, "/metrics").await?;
        if text.contains("ballast_gateway_topology_connected 1") {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < end,
            "the gateway never followed the topology service over tls"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let control = dev.field("control");
    let out = run(
        DEV.as_ref(),
        &[
            "chaos",
            "--control",
            &control,
            "--tls-ca",
            &ca,
            "broker-up",
            "--broker",
            "1",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert!(dev.terminate(Duration::from_secs(20)).success());
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// `ballast-dev up --failover sqs --s3-bucket`: on a local SQS and S3 (moto), a record larger
/// than an SQS message can hold fails over through S3 during an outage and reaches Kafka
/// after it, whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_on_sqs_offloads_large_records_to_s3() -> anyhow::Result<()> {
    let moto = ballast_testkit::deps::Moto::start();
    let queue = ballast_testkit::deps::unique("dev-s3");
    let bucket = queue.to_lowercase();
    let endpoint = moto.endpoint();
    let dev = ReadyProcess::spawn(
        DEV,
        &[
            "up",
            "--gateway-addr",
            "127.0.0.1:0",
            "--topic",
            "big:3:3",
            "--failover",
            "sqs",
            "--sqs-endpoint",
            &endpoint,
            "--sqs-queue",
            &queue,
            "--sqs-dlq",
            &format!("{queue}-dlq"),
            "--s3-bucket",
            &bucket,
        ],
    );
    let gateway = dev.field("gateway");
    let control = dev.field("control");
    let bootstrap = dev.field("kafka_bootstrap");
    wait_serving(gateway.parse()?).await?;
    let out = Command::new(DEV)
        .args(["chaos", "--control", &control, "outage"])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value = "L".repeat(400 * 1024);
    let mut rec = record("big", None, &value);
    rec.message_id = "large-1".into();
    let mut client = IngestClient::connect(format!("http://{gateway}")).await?;
    let results = client
        .produce(pb::ProduceRequest { records: vec![rec] })
        .await?
        .into_inner()
        .results;
    assert!(
        matches!(
            results[0].outcome,
            Some(pb::record_result::Outcome::Failover(_))
        ),
        "{:?}",
        results[0].outcome
    );
    assert_eq!(moto.s3_keys(&bucket).await?.len(), 1, "the body is in S3");
    let out = Command::new(DEV)
        .args(["chaos", "--control", &control, "recover"])
        .output()?;
    assert!(out.status.success());
    let landed = tokio::task::spawn_blocking(move || {
        consume_all(&bootstrap, "big", 1, Duration::from_secs(60))
    })
    .await??;
    assert_eq!(landed.len(), 1);
    assert_eq!(landed[0].message_id.as_deref(), Some("large-1"));
    assert_eq!(landed[0].value.len(), value.len());
    Ok(())
}

/// A CLI command refuses to send its bearer token in plaintext to another host, and says
/// how to use TLS or allow it; loopback (`ballast-dev up`) needs no flag.
#[test]
fn a_token_is_not_sent_in_plaintext_to_another_host() {
    // `ballast dlq stats` with a token, to a host that is not this one; its stderr.
    let dlq_stats = |allow: &[&str]| {
        let out = Command::new(ballast_dev::ballast_bin().unwrap())
            .args(["dlq", "--admin", "http://ballast-test.invalid:1"])
            .args(["--token", "x"])
            .args(allow)
            .arg("stats")
            .env_remove("BALLAST_ALLOW_PLAINTEXT_TOKEN")
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = dlq_stats(&[]);
    assert!(
        err.contains("refusing to send a bearer token in plaintext")
            && err.contains("--allow-plaintext-token"),
        "{err}"
    );
    // Allowed, it goes on and fails on the address instead.
    let err = dlq_stats(&["--allow-plaintext-token"]);
    assert!(!err.contains("plaintext"), "{err}");
}
