//! SASL to Kafka on both Kafka paths: librdkafka (the gateway's producer, and a consumer
//! reading back) and the protocol-level metadata client, through the testkit proxy, which
//! answers SaslHandshake and SaslAuthenticate itself in front of the mock cluster.

use ballast_gateway::{Gateway, GatewayConfig};
use ballast_kafka::SecurityProtocol;
use ballast_kafka::{KafkaSasl, KafkaSecurity, KafkaSsl, MetadataClient, SaslMechanism};
use ballast_proto::ingest::v1 as pb;
use ballast_proto::ingest::v1::ingest_client::IngestClient;
use ballast_testkit::kafka_proxy::{Listener, SaslUsers, SecureKafka};
use ballast_testkit::{kafka_ack, record, wait_serving};
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

fn password_file(dir: &Path, name: &str, password: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{password}\n")).unwrap();
    path
}

fn scram(mechanism: SaslMechanism, password_file: &Path) -> KafkaSasl {
    KafkaSasl {
        mechanism: Some(mechanism),
        username: Some("ballast".into()),
        password_file: Some(password_file.to_path_buf()),
        ..KafkaSasl::default()
    }
}

fn metadata(bootstrap: &str, security: &KafkaSecurity) -> anyhow::Result<MetadataClient> {
    Ok(MetadataClient::new(
        ballast_kafka::bootstrap_list(bootstrap),
        "ballast-test",
        Duration::from_secs(3),
    )
    .with_security(security)?)
}

/// SASL over TLS to `kafka`, trusting its CA.
fn sasl_ssl(kafka: &SecureKafka, sasl: KafkaSasl) -> KafkaSecurity {
    KafkaSecurity {
        protocol: SecurityProtocol::SaslSsl,
        ssl: KafkaSsl {
            ca_file: Some(kafka.ca.ca_file.clone()),
            ..KafkaSsl::default()
        },
        sasl,
    }
}

/// Writes `value` to events/0 with a producer that reaches `bootstrap` as `security` says.
async fn write_one(
    bootstrap: &str,
    security: &KafkaSecurity,
    write_timeout: Duration,
    value: &[u8],
) -> Result<ballast_kafka::Written, ballast_kafka::WriteError> {
    let producer = ballast_kafka::KafkaProducer::new(&ballast_kafka::KafkaConfig {
        bootstrap_servers: bootstrap.to_string(),
        security_protocol: security.protocol,
        ssl: security.ssl.clone(),
        sasl: security.sasl.clone(),
        write_timeout,
        ..Default::default()
    })
    .expect("a valid producer config");
    producer
        .send(ballast_kafka::OutgoingRecord {
            topic: "events",
            partition: 0,
            key: None,
            value,
            headers: &[],
        })
        .await
}

async fn read_back(
    bootstrap: &str,
    security: &KafkaSecurity,
    expected: usize,
) -> anyhow::Result<Vec<ballast_kafka::Landed>> {
    let (bootstrap, security) = (bootstrap.to_string(), security.clone());
    Ok(tokio::task::spawn_blocking(move || {
        ballast_kafka::read_topic_with(
            &bootstrap,
            &security,
            "events",
            Some(expected),
            Duration::from_secs(30),
        )
    })
    .await??)
}

/// The bar: a gateway on SASL_SSL with SCRAM-SHA-512 acknowledges records that a
/// consumer on the same secured endpoint reads back; the metadata client (racks, leaders)
/// and the topology service authenticate too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_on_sasl_ssl_with_scram_sha_512_writes_and_a_consumer_reads_back(
) -> anyhow::Result<()> {
    let kafka = SecureKafka::start(Listener {
        tls: true,
        sasl: Some(SaslUsers::user("ballast", "correct horse")),
        ..Listener::default()
    })
    .await?;
    let proxy = &kafka.proxy;
    let secret = password_file(&kafka.dir, "password", "correct horse");
    let security = sasl_ssl(&kafka, scram(SaslMechanism::ScramSha512, &secret));

    let mut cfg = GatewayConfig {
        rack: Some("az-a".into()),
        ..GatewayConfig::default()
    };
    cfg.kafka.bootstrap_servers = proxy.bootstrap.clone();
    cfg.kafka.security_protocol = SecurityProtocol::SaslSsl;
    cfg.kafka.ssl = security.ssl.clone();
    cfg.kafka.sasl = security.sasl.clone();
    cfg.kafka.write_timeout = Duration::from_secs(5);
    let gateway = Gateway::new(cfg.clone()).await?;
    gateway.handle().refresh_metadata().await?;
    let md = gateway.handle().metadata();
    assert_eq!(md.brokers.len(), 3, "{md:?}");
    let proxied: HashSet<String> = proxy.bootstrap.split(',').map(str::to_string).collect();
    for b in &md.brokers {
        assert!(proxied.contains(&format!("{}:{}", b.host, b.port)), "{b:?}");
    }
    let mut local = gateway.spawn_local().await?;
    wait_serving(local.addr).await?;
    let mut client = IngestClient::connect(format!("http://{}", local.addr)).await?;
    let records: Vec<pb::Record> = (0..20)
        .map(|i| {
            let mut r = record("events", None, &format!("scram-{i}"));
            r.message_id = format!("sasl-{i}");
            r
        })
        .collect();
    let results = client
        .produce(pb::ProduceRequest { records })
        .await?
        .into_inner()
        .results;
    for r in &results {
        assert!(kafka_ack(r).is_some(), "{r:?}");
    }

    let landed = read_back(&proxy.bootstrap, &security, 20).await?;
    let ids: HashSet<String> = landed.iter().filter_map(|l| l.message_id.clone()).collect();
    for i in 0..20 {
        assert!(ids.contains(&format!("sasl-{i}")), "sasl-{i} missing");
    }

    // The topology service reads the same secured cluster.
    let mut topology = ballast_topology::TopologyConfig::default();
    topology.kafka.bootstrap_servers = proxy.bootstrap.clone();
    topology.kafka.security_protocol = SecurityProtocol::SaslSsl;
    topology.kafka.ssl = security.ssl.clone();
    topology.kafka.sasl = security.sasl.clone();
    ballast_dev::topology_sees_brokers(topology, 3).await?;
    local.stop().await?;
    Ok(())
}

/// A wrong password: the metadata client's error names the broker and the mechanism, and
/// the producer's write fails within its deadline instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_clearly_on_both_paths() -> anyhow::Result<()> {
    let kafka = SecureKafka::start(Listener {
        tls: true,
        sasl: Some(SaslUsers::user("ballast", "correct horse")),
        ..Listener::default()
    })
    .await?;
    let wrong = password_file(&kafka.dir, "wrong", "battery staple");
    let security = sasl_ssl(&kafka, scram(SaslMechanism::ScramSha512, &wrong));
    let e = metadata(&kafka.proxy.bootstrap, &security)?
        .fetch()
        .await
        .expect_err("a wrong password got metadata");
    let msg = e.to_string();
    assert!(
        msg.contains("SASL SCRAM-SHA-512 authentication failed")
            && msg.contains("broker 127.0.0.1:")
            && msg.contains("invalid credentials"),
        "{msg}"
    );

    let started = std::time::Instant::now();
    let refused = write_one(
        &kafka.proxy.bootstrap,
        &security,
        Duration::from_secs(2),
        b"wrong password",
    )
    .await;
    assert!(
        refused.is_err(),
        "a write with a wrong password got through"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // A mechanism the broker does not offer is named too.
    let users = SaslUsers {
        mechanisms: vec!["PLAIN"],
        ..SaslUsers::user("ballast", "correct horse")
    };
    let plain_only = SecureKafka::start(Listener {
        sasl: Some(users),
        ..Listener::default()
    })
    .await?;
    let right = password_file(&kafka.dir, "right", "correct horse");
    let e = metadata(
        &plain_only.proxy.bootstrap,
        &KafkaSecurity {
            protocol: SecurityProtocol::SaslPlaintext,
            sasl: scram(SaslMechanism::ScramSha256, &right),
            ..KafkaSecurity::default()
        },
    )?
    .fetch()
    .await
    .expect_err("an unoffered mechanism");
    assert!(
        e.to_string().contains("does not offer SCRAM-SHA-256"),
        "{e}"
    );

    // A client that skips SASL on a SASL port gets nothing.
    assert!(
        metadata(&plain_only.proxy.bootstrap, &KafkaSecurity::default())?
            .fetch()
            .await
            .is_err(),
        "metadata without logging in"
    );
    Ok(())
}

/// SASL_PLAINTEXT with PLAIN and SCRAM-SHA-256: the metadata client, the producer and a
/// consumer each log in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_plaintext_with_plain_and_scram_sha_256() -> anyhow::Result<()> {
    let kafka = SecureKafka::start(Listener {
        sasl: Some(SaslUsers::user("ballast", "pencil")),
        ..Listener::default()
    })
    .await?;
    let secret = password_file(&kafka.dir, "password", "pencil");
    for (n, mechanism) in [SaslMechanism::Plain, SaslMechanism::ScramSha256]
        .into_iter()
        .enumerate()
    {
        let security = KafkaSecurity {
            protocol: SecurityProtocol::SaslPlaintext,
            sasl: scram(mechanism, &secret),
            ..KafkaSecurity::default()
        };
        let md = metadata(&kafka.proxy.bootstrap, &security)?.fetch().await?;
        assert_eq!(md.brokers.len(), 3, "{mechanism}");
        write_one(
            &kafka.proxy.bootstrap,
            &security,
            Duration::from_secs(5),
            mechanism.name().as_bytes(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{mechanism}: {}", e.message))?;
        let landed = read_back(&kafka.proxy.bootstrap, &security, n + 1).await?;
        assert!(
            landed
                .iter()
                .any(|l| l.value == mechanism.name().as_bytes()),
            "{mechanism}"
        );
    }
    Ok(())
}

/// OAUTHBEARER with a token from a file: both paths present it, and a rotated file is
/// what the next connection presents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauthbearer_tokens_come_from_a_file_and_rotate() -> anyhow::Result<()> {
    let valid: std::sync::Arc<std::sync::Mutex<String>> =
        std::sync::Arc::new(std::sync::Mutex::new("token-one".into()));
    let seen = valid.clone();
    let kafka = SecureKafka::start(Listener {
        tls: true,
        sasl: Some(SaslUsers::bearer(move |token| {
            let want = seen.lock().unwrap().clone();
            if token == want {
                Ok("ballast".into())
            } else {
                Err(format!("{token} is not the current token"))
            }
        })),
        ..Listener::default()
    })
    .await?;
    let token_file = password_file(&kafka.dir, "token", "token-one");
    let security = sasl_ssl(
        &kafka,
        KafkaSasl {
            mechanism: Some(SaslMechanism::OAuthBearer),
            token_file: Some(token_file.clone()),
            ..KafkaSasl::default()
        },
    );
    let md = metadata(&kafka.proxy.bootstrap, &security)?.fetch().await?;
    assert_eq!(md.brokers.len(), 3);
    write_one(
        &kafka.proxy.bootstrap,
        &security,
        Duration::from_secs(5),
        b"bearer",
    )
    .await
    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let landed = read_back(&kafka.proxy.bootstrap, &security, 1).await?;
    assert_eq!(landed[0].value, b"bearer");

    // The broker moves on to a new token; the old one is refused, the rotated file works.
    *valid.lock().unwrap() = "token-two".into();
    let e = metadata(&kafka.proxy.bootstrap, &security)?
        .fetch()
        .await
        .expect_err("a stale token");
    assert!(
        e.to_string()
            .contains("SASL OAUTHBEARER authentication failed"),
        "{e}"
    );
    std::fs::write(&token_file, "token-two\n")?;
    let md = metadata(&kafka.proxy.bootstrap, &security)?.fetch().await?;
    assert_eq!(md.brokers.len(), 3);
    Ok(())
}
