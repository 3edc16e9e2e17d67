//! `ballast-gateway` as operators run it: YAML config plus `BALLAST_*` overrides,
//! `--dump-config`, clear startup errors, serving a cluster, and SIGTERM.

use ballast_kafka::{EmbeddedCluster, EmbeddedClusterConfig};
use ballast_testkit::process::ServiceProcess;
use ballast_testkit::{kafka_ack, record, wait_serving};
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_ballast-gateway");

#[test]
fn dump_config_shows_file_and_env_layers() {
    let dir = std::env::temp_dir().join(format!("ballast-gw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gw.yaml");
    std::fs::write(&file, "rack: az-b\nkafka:\n  write_timeout: 2s\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&file)
        .arg("--dump-config")
        .env("BALLAST_KAFKA__BOOTSTRAP_SERVERS", "b1:9092,b2:9092")
        .output()
        .unwrap();
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(yaml.contains("rack: az-b"), "{yaml}");
    assert!(yaml.contains("write_timeout: 2s"), "{yaml}");
    assert!(
        yaml.contains("bootstrap_servers: b1:9092,b2:9092"),
        "{yaml}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// `kafka.properties` cannot loosen what the write path's deadlines and acknowledgements
/// rest on: the binary refuses to start, naming the property and what sets it instead.
#[test]
fn kafka_properties_the_promise_depends_on_are_refused_at_startup() {
    let dir = std::env::temp_dir().join(format!("ballast-gw-props-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (key, instead) in [
        ("delivery.timeout.ms", "kafka.write_timeout"),
        ("request.timeout.ms", "kafka.write_timeout"),
        ("linger.ms", "kafka.linger"),
        ("request.required.acks", "acks=all"),
    ] {
        let file = dir.join("gw.yaml");
        std::fs::write(
            &file,
            format!("kafka:\n  properties:\n    {key}: \"600000\"\n"),
        )
        .unwrap();
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&file)
            .arg("--dump-config")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{key} was taken");
        assert!(
            err.contains(&format!("kafka.properties may not set {key}")) && err.contains(instead),
            "{key}: {err}"
        );
    }
    // Tuning properties are still the operator's.
    let file = dir.join("gw.yaml");
    std::fs::write(
        &file,
        "kafka:\n  properties:\n    compression.type: zstd\n    message.max.bytes: \"4194304\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&file)
        .arg("--dump-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("compression.type: zstd"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_config_fails_at_startup_with_the_field_named() {
    let out = Command::new(BIN)
        .env("BALLAST_LIMITS__MAX_ATTEMPTS", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("limits.max_attempts must be positive"),
        "{err}"
    );

    // A standard SQS queue keeps no order: an ordered topic on it is refused at startup,
    // naming both ways out.
    let out = Command::new(BIN)
        .env("BALLAST_FAILOVER__BACKEND", "sqs")
        .env("BALLAST_FAILOVER__SQS__OFFLOAD__BUCKET", "ballast-payloads")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ordering.default is partition")
            && err.contains("backend: postgres")
            && err.contains("`ordering.default: none`"),
        "{err}"
    );

    // A record SQS cannot hold is never accepted: the limit is checked at startup.
    let out = Command::new(BIN)
        .env("BALLAST_FAILOVER__BACKEND", "sqs")
        .env("BALLAST_ORDERING__DEFAULT", "none")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("limits.max_record_bytes is 1048576") && err.contains("180224"),
        "{err}"
    );

    // With large bodies offloaded to S3, SQS failover holds any record the gateway takes.
    let out = Command::new(BIN)
        .arg("--dump-config")
        .env("BALLAST_FAILOVER__BACKEND", "sqs")
        .env("BALLAST_ORDERING__DEFAULT", "none")
        .env("BALLAST_FAILOVER__SQS__OFFLOAD__BUCKET", "ballast-payloads")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("bucket: ballast-payloads"));
    let out = Command::new(BIN)
        .env("BALLAST_FAILOVER__BACKEND", "sqs")
        .env("BALLAST_FAILOVER__SQS__OFFLOAD__BUCKET", "ballast-payloads")
        .env("BALLAST_FAILOVER__SQS__OFFLOAD__THRESHOLD_BYTES", "300000")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("failover.sqs.offload.threshold_bytes is 300000"),
        "{err}"
    );

    // Node-local failover is not failover: refused unless explicitly accepted.
    let out = Command::new(BIN)
        .env("BALLAST_FAILOVER__BACKEND", "sqlite")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("failover.allow_node_local"), "{err}");
    let out = Command::new(BIN)
        .arg("--dump-config")
        .env("BALLAST_FAILOVER__BACKEND", "sqlite")
        .env("BALLAST_FAILOVER__ALLOW_NODE_LOCAL", "true")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("allow_node_local: true"));

    let out = Command::new(BIN)
        .env("BALLAST_KAFKA__WRITE_TIMEOUT", "soon")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("kafka.write_timeout") && err.contains("duration"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_a_cluster_and_exits_cleanly_on_sigterm() -> anyhow::Result<()> {
    let cluster = EmbeddedCluster::start(EmbeddedClusterConfig::default())?;
    let mut svc = ServiceProcess::spawn(
        BIN,
        &[
            (
                "BALLAST_KAFKA__BOOTSTRAP_SERVERS",
                cluster.bootstrap_servers(),
            ),
            ("BALLAST_RACK", "az-b"),
        ],
    )?;
    wait_serving(svc.grpc).await?;
    let mut client =
        ballast_proto::ingest::v1::ingest_client::IngestClient::connect(svc.url()).await?;
    let results = client
        .produce(ballast_proto::ingest::v1::ProduceRequest {
            records: (0..10)
                .map(|i| record("events", None, &format!("{i}")))
                .collect(),
        })
        .await?
        .into_inner()
        .results;
    assert!(
        results.iter().all(|r| kafka_ack(r).is_some()),
        "{results:?}"
    );
    let metrics = ballast_testkit::http_get(svc.admin, "/metrics").await?;
    assert!(
        metrics.contains("ballast_gateway_records_total{topic=\"events\",outcome=\"kafka\"} 10"),
        "{metrics}"
    );

    let status = svc.terminate(Duration::from_secs(20))?;
    assert!(status.success(), "{status}");
    Ok(())
}

/// `telemetry.otlp_endpoint` exports real spans over OTLP/gRPC: a request span that
/// continues the caller's `traceparent`, a span per record and per Kafka attempt. The
/// trace goes on in Kafka (a `traceparent` header) and, for a record that fails over, in
/// its envelope, where the retry worker picks it up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_spans_and_carries_the_trace_into_kafka_and_failover() -> anyhow::Result<()> {
    use ballast_failover::{envelope, FailoverQueue, SqlQueue};
    use ballast_proto::ingest::v1 as pb;
    use ballast_testkit::otlp::Collector;

    let collector = Collector::start().await?;
    let cluster = EmbeddedCluster::start(EmbeddedClusterConfig::default())?;
    let dir = std::env::temp_dir().join(ballast_testkit::deps::unique("ballast-gw-trace"));
    std::fs::create_dir_all(&dir)?;
    let db = format!("sqlite://{}?mode=rwc", dir.join("q.db").display());
    let mut svc = ServiceProcess::spawn(
        BIN,
        &[
            (
                "BALLAST_KAFKA__BOOTSTRAP_SERVERS",
                cluster.bootstrap_servers(),
            ),
            ("BALLAST_KAFKA__WRITE_TIMEOUT", "500ms"),
            ("BALLAST_KAFKA__METADATA_REFRESH_INTERVAL", "200ms"),
            ("BALLAST_LIMITS__RECORD_DEADLINE", "1s"),
            ("BALLAST_FAILOVER__BACKEND", "sqlite"),
            ("BALLAST_FAILOVER__ALLOW_NODE_LOCAL", "true"),
            ("BALLAST_FAILOVER__DATABASE_URL", &db),
            ("BALLAST_TELEMETRY__OTLP_ENDPOINT", &collector.endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )?;
    wait_serving(svc.grpc).await?;
    let mut client = pb::ingest_client::IngestClient::connect(svc.url()).await?;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let produce_records = |records: Vec<pb::Record>| {
        let mut req = tonic::Request::new(pb::ProduceRequest { records });
        req.metadata_mut().insert(
            "traceparent",
            format!("00-{trace_id}-00f067aa0ba902b7-01")
                .parse()
                .unwrap(),
        );
        req
    };
    let produce = |value: &str| produce_records(vec![record("events", None, value)]);

    let direct = client
        .produce(produce("direct"))
        .await?
        .into_inner()
        .results;
    assert!(kafka_ack(&direct[0]).is_some(), "{direct:?}");
    // A record that carries its own trace context keeps it.
    let own_tp = "00-11111111111111111111111111111111-2222222222222222-01";
    let mut own = record("events", None, "own");
    own.headers.push(pb::Header {
        key: "traceparent".into(),
        value: own_tp.as_bytes().to_vec().into(),
    });
    let owned = client
        .produce(produce_records(vec![own]))
        .await?
        .into_inner()
        .results;
    assert!(kafka_ack(&owned[0]).is_some(), "{owned:?}");

    // With every partition leaderless the next record fails over, its trace with it. (Not
    // `broker_down`: the mock re-binds a downed broker's port at once and aborts the
    // process when that bind fails, which it did once while other tests bound ports.)
    for p in 0..6 {
        cluster.partition_leader("events", p, None).await?;
    }
    // Two of the gateway's metadata refreshes (200 ms): it holds every partition.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let failed_over = client
        .produce(produce("failed-over"))
        .await?
        .into_inner()
        .results;
    assert!(
        matches!(
            failed_over[0].outcome,
            Some(pb::record_result::Outcome::Failover(_))
        ),
        "{failed_over:?}"
    );
    for p in 0..6 {
        cluster
            .partition_leader("events", p, Some(p % cluster.broker_count() + 1))
            .await?;
    }

    let spans = collector
        .wait_for(Duration::from_secs(20), |spans| {
            [
                "ballast.produce",
                "ballast.write",
                "kafka.attempt",
                "failover.enqueue",
            ]
            .iter()
            .all(|name| {
                spans
                    .iter()
                    .any(|s| s.name == *name && s.trace_id == trace_id)
            })
        })
        .await?;
    let request = spans
        .iter()
        .find(|s| s.name == "ballast.produce" && s.trace_id == trace_id)
        .unwrap();
    assert_eq!(request.service, "ballast-gateway");
    assert_eq!(request.parent_span_id, "00f067aa0ba902b7", "{request:?}");
    let write = spans
        .iter()
        .find(|s| {
            s.name == "ballast.write"
                && s.trace_id == trace_id
                && s.attribute("outcome") == Some("kafka")
        })
        .unwrap();
    assert_eq!(write.attribute("topic"), Some("events"), "{write:?}");
    assert!(spans
        .iter()
        .any(|s| s.name == "ballast.write" && s.attribute("outcome") == Some("failover")));
    let attempt = spans
        .iter()
        .find(|s| s.name == "kafka.attempt" && s.parent_span_id == write.span_id)
        .unwrap_or_else(|| panic!("no attempt under {write:?}: {spans:#?}"));
    assert!(attempt.attribute("partition").is_some(), "{attempt:?}");

    // Kafka: the record names the span that wrote it.
    let b = cluster.bootstrap_servers().to_string();
    let landed = tokio::task::spawn_blocking(move || {
        ballast_kafka::read_topic(&b, "events", Some(2), Duration::from_secs(30))
    })
    .await??;
    let header_of = |value: &[u8]| {
        landed
            .iter()
            .find(|l| l.value == value)
            .and_then(|l| l.header("traceparent"))
    };
    assert_eq!(
        header_of(b"direct"),
        Some(format!("00-{trace_id}-{}-01", write.span_id))
    );
    assert_eq!(header_of(b"own").as_deref(), Some(own_tp));

    // Failover: the envelope carries the trace for the retry worker.
    let queue = SqlQueue::connect(&db, "ballast-failover", 1).await?;
    let leased = queue
        .receive(10, Duration::from_secs(1), Duration::from_secs(30))
        .await?;
    assert_eq!(leased.len(), 1);
    let env = envelope::decode(&leased[0].body)?;
    let carried = env
        .headers
        .iter()
        .find(|h| h.key == "traceparent")
        .map(|h| String::from_utf8_lossy(&h.value).into_owned())
        .expect("the envelope carries traceparent");
    assert!(carried.starts_with(&format!("00-{trace_id}-")), "{carried}");

    let status = svc.terminate(Duration::from_secs(20))?;
    assert!(status.success(), "{status}");
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// The gRPC health status of the server on `port`.
async fn health_status(port: u16) -> anyhow::Result<i32> {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
        .connect()
        .await?;
    Ok(HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner()
        .status)
}

/// A broker certificate the gateway does not trust: the gateway logs an error naming the
/// broker and the TLS failure, and its health stays NOT_SERVING; nothing hangs silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_broker_certificate_keeps_the_gateway_not_serving() -> anyhow::Result<()> {
    use ballast_security::pki::Authority;

    let kafka = ballast_testkit::kafka_proxy::SecureKafka::tls(false).await?;
    let other = Authority::create(&kafka.dir.join("other"), "not the brokers' CA")?;
    let grpc = ballast_testkit::process::free_port();
    let admin = ballast_testkit::process::free_port();
    let mut cmd = Command::new(BIN);
    cmd.env("BALLAST_LISTEN", format!("127.0.0.1:{grpc}"))
        .env("BALLAST_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .env("BALLAST_KAFKA__BOOTSTRAP_SERVERS", &kafka.proxy.bootstrap)
        .env("BALLAST_KAFKA__SECURITY_PROTOCOL", "ssl")
        .env("BALLAST_KAFKA__SSL__CA_FILE", &other.ca_file);
    let (mut child, logged) = ballast_testkit::process::spawn_until_stderr(
        cmd,
        "tls handshake failed",
        Duration::from_secs(20),
    )?;
    let health = health_status(grpc).await;
    let _ = child.kill();
    let _ = child.wait();
    let line = logged.expect("an error about the broker's certificate within 20 s");
    assert!(line.contains("127.0.0.1:"), "{line}");
    assert_eq!(
        health?,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );
    Ok(())
}

/// `kafka.security_protocol: ssl` without `kafka.ssl.ca_file` trusts the system's CA
/// certificates, on both Kafka paths (here the system store is `SSL_CERT_FILE`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_without_a_ca_file_trusts_the_system_store() -> anyhow::Result<()> {
    let kafka = ballast_testkit::kafka_proxy::SecureKafka::tls(false).await?;
    let ca_file = kafka.ca.ca_file.display().to_string();
    let mut svc = ServiceProcess::spawn(
        BIN,
        &[
            ("BALLAST_KAFKA__BOOTSTRAP_SERVERS", &kafka.proxy.bootstrap),
            ("BALLAST_KAFKA__SECURITY_PROTOCOL", "ssl"),
            ("SSL_CERT_FILE", &ca_file),
            ("SSL_CERT_DIR", kafka.dir.to_str().unwrap()),
        ],
    )?;
    wait_serving(svc.grpc).await?;
    let ready = ballast_testkit::http_get(svc.admin, "/readyz").await?;
    assert!(
        ready.contains(" 200 ") && ready.ends_with("serving"),
        "{ready}"
    );
    let mut client =
        ballast_proto::ingest::v1::ingest_client::IngestClient::connect(svc.url()).await?;
    let results = client
        .produce(ballast_proto::ingest::v1::ProduceRequest {
            records: (0..5)
                .map(|i| record("events", None, &format!("{i}")))
                .collect(),
        })
        .await?
        .into_inner()
        .results;
    assert!(
        results.iter().all(|r| kafka_ack(r).is_some()),
        "{results:?}"
    );
    let status = svc.terminate(Duration::from_secs(20))?;
    assert!(status.success(), "{status}");
    Ok(())
}

/// A wrong Kafka password: the gateway logs an error naming the broker and the mechanism,
/// and its health stays NOT_SERVING; nothing hangs silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_kafka_password_keeps_the_gateway_not_serving() -> anyhow::Result<()> {
    use ballast_testkit::kafka_proxy::{Listener, SaslUsers, SecureKafka};

    let kafka = SecureKafka::start(Listener {
        tls: true,
        sasl: Some(SaslUsers::user("ballast", "correct horse")),
        ..Listener::default()
    })
    .await?;
    let password = kafka.dir.join("password");
    std::fs::write(&password, "battery staple\n")?;
    let grpc = ballast_testkit::process::free_port();
    let admin = ballast_testkit::process::free_port();
    let mut cmd = Command::new(BIN);
    cmd.env("BALLAST_LISTEN", format!("127.0.0.1:{grpc}"))
        .env("BALLAST_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .env("BALLAST_KAFKA__BOOTSTRAP_SERVERS", &kafka.proxy.bootstrap)
        .env("BALLAST_KAFKA__SECURITY_PROTOCOL", "sasl_ssl")
        .env("BALLAST_KAFKA__SSL__CA_FILE", &kafka.ca.ca_file)
        .env("BALLAST_KAFKA__SASL__MECHANISM", "SCRAM-SHA-512")
        .env("BALLAST_KAFKA__SASL__USERNAME", "ballast")
        .env("BALLAST_KAFKA__SASL__PASSWORD_FILE", &password);
    let (mut child, logged) = ballast_testkit::process::spawn_until_stderr(
        cmd,
        "authentication failed",
        Duration::from_secs(20),
    )?;
    let health = health_status(grpc).await;
    // The admin port's /readyz, for probes that cannot speak gRPC, agrees.
    let ready = ballast_testkit::http_get(format!("127.0.0.1:{admin}").parse()?, "/readyz").await;
    let _ = child.kill();
    let _ = child.wait();
    let ready = ready?;
    assert!(
        ready.contains(" 503 ") && ready.ends_with("not serving"),
        "{ready}"
    );
    let line = logged.expect("an error about the failed login within 20 s");
    assert!(
        line.contains("SASL SCRAM-SHA-512") && line.contains("127.0.0.1:"),
        "{line}"
    );
    assert!(!line.contains("battery staple"), "{line}");
    assert_eq!(
        health?,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );
    Ok(())
}

/// AWS_MSK_IAM: tokens signed from the AWS credential chain (here the environment's keys),
/// presented as OAUTHBEARER on both paths. The broker side checks what MSK checks first: a
/// presigned `kafka-cluster:Connect` URL for the region, signed with the caller's key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msk_iam_tokens_come_from_the_aws_credential_chain() -> anyhow::Result<()> {
    use ballast_testkit::kafka_proxy::{Listener, SaslUsers, SecureKafka};
    use base64::Engine;

    let presented = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = presented.clone();
    let users = SaslUsers {
        mechanisms: vec!["OAUTHBEARER", "SCRAM-SHA-512"],
        ..SaslUsers::bearer(move |token| {
            let url = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token)
                .map_err(|e| format!("not base64url: {e}"))?;
            let url = String::from_utf8(url).map_err(|e| e.to_string())?;
            let ok = url.starts_with("https://kafka.eu-west-1.amazonaws.com/?")
                && url.contains("Action=kafka-cluster%3AConnect")
                && url.contains("X-Amz-Credential=AKIDBALLASTTEST%2F")
                && url.contains("%2Feu-west-1%2Fkafka-cluster%2Faws4_request")
                && url.contains("X-Amz-Signature=");
            if !ok {
                return Err(format!("not an MSK IAM token: {url}"));
            }
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok("ballast".into())
        })
    };
    let mut users_with_reader = users.clone();
    users_with_reader
        .passwords
        .insert("reader".into(), "reader-secret".into());
    let kafka = SecureKafka::start(Listener {
        tls: true,
        sasl: Some(users_with_reader),
        ..Listener::default()
    })
    .await?;
    let ca = kafka.ca.ca_file.display().to_string();
    let mut svc = ServiceProcess::spawn(
        BIN,
        &[
            ("BALLAST_KAFKA__BOOTSTRAP_SERVERS", &kafka.proxy.bootstrap),
            ("BALLAST_KAFKA__SECURITY_PROTOCOL", "sasl_ssl"),
            ("BALLAST_KAFKA__SSL__CA_FILE", &ca),
            ("BALLAST_KAFKA__SASL__MECHANISM", "AWS_MSK_IAM"),
            ("BALLAST_KAFKA__SASL__AWS_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "AKIDBALLASTTEST"),
            ("AWS_SECRET_ACCESS_KEY", "not-a-real-secret"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    )?;
    wait_serving(svc.grpc).await?;
    let mut client =
        ballast_proto::ingest::v1::ingest_client::IngestClient::connect(svc.url()).await?;
    let results = client
        .produce(ballast_proto::ingest::v1::ProduceRequest {
            records: (0..5)
                .map(|i| record("events", None, &format!("iam-{i}")))
                .collect(),
        })
        .await?
        .into_inner()
        .results;
    assert!(
        results.iter().all(|r| kafka_ack(r).is_some()),
        "{results:?}"
    );
    // The metadata client and the producer each presented a token.
    assert!(
        presented.load(std::sync::atomic::Ordering::Relaxed) >= 2,
        "tokens presented: {}",
        presented.load(std::sync::atomic::Ordering::Relaxed)
    );
    let password = kafka.dir.join("reader-password");
    std::fs::write(&password, "reader-secret")?;
    let security = ballast_kafka::KafkaSecurity {
        protocol: ballast_kafka::SecurityProtocol::SaslSsl,
        ssl: ballast_kafka::KafkaSsl {
            ca_file: Some(kafka.ca.ca_file.clone()),
            ..Default::default()
        },
        sasl: ballast_kafka::KafkaSasl {
            mechanism: Some(ballast_kafka::SaslMechanism::ScramSha512),
            username: Some("reader".into()),
            password_file: Some(password),
            ..Default::default()
        },
    };
    let bootstrap = kafka.proxy.bootstrap.clone();
    let landed = tokio::task::spawn_blocking(move || {
        ballast_kafka::read_topic_with(
            &bootstrap,
            &security,
            "events",
            Some(5),
            Duration::from_secs(30),
        )
    })
    .await??;
    assert_eq!(landed.len(), 5);
    let status = svc.terminate(Duration::from_secs(20))?;
    assert!(status.success(), "{status}");
    Ok(())
}
