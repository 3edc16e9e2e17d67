//! Kafka over TLS on both Kafka paths: librdkafka (the gateway's producer, and a consumer
//! reading back) and the protocol-level metadata client, through a real TLS endpoint in
//! front of the mock cluster (`ballast_testkit::kafka_proxy`).

use ballast_gateway::{Gateway, GatewayConfig};
use ballast_kafka::{KafkaSecurity, KafkaSsl, MetadataClient, SecurityProtocol};
use ballast_proto::ingest::v1 as pb;
use ballast_proto::ingest::v1::ingest_client::IngestClient;
use ballast_security::pki::Authority;
use ballast_testkit::kafka_proxy::SecureKafka;
use ballast_testkit::{kafka_ack, record, wait_serving};
use std::collections::HashSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_writes_over_tls_and_a_consumer_reads_it_back() -> anyhow::Result<()> {
    let kafka = SecureKafka::tls(false).await?;
    let (ca, dir, proxy) = (&kafka.ca, &kafka.dir, &kafka.proxy);
    let ssl = KafkaSsl {
        ca_file: Some(ca.ca_file.clone()),
        ..KafkaSsl::default()
    };

    let mut cfg = GatewayConfig {
        rack: Some("az-a".into()),
        ..GatewayConfig::default()
    };
    cfg.kafka.bootstrap_servers = proxy.bootstrap.clone();
    cfg.kafka.security_protocol = SecurityProtocol::Ssl;
    cfg.kafka.ssl = ssl.clone();
    cfg.kafka.write_timeout = Duration::from_secs(5);
    // zstd is one of the compression choices.
    cfg.kafka
        .properties
        .insert("compression.type".into(), "zstd".into());
    let gateway = Gateway::new(cfg.clone()).await?;
    gateway.handle().refresh_metadata().await?;
    // The metadata client followed the rewritten metadata: every broker is a TLS port.
    let md = gateway.handle().metadata();
    let tls_ports: HashSet<String> = proxy.bootstrap.split(',').map(str::to_string).collect();
    for b in &md.brokers {
        assert!(
            tls_ports.contains(&format!("{}:{}", b.host, b.port)),
            "{b:?} is not behind tls"
        );
    }
    let mut local = gateway.spawn_local().await?;
    wait_serving(local.addr).await?;
    let mut client = IngestClient::connect(format!("http://{}", local.addr)).await?;
    let records: Vec<pb::Record> = (0..20)
        .map(|i| {
            let mut r = record("events", None, &format!("secure-{i}"));
            r.message_id = format!("tls-{i}");
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

    // A consumer on the same TLS endpoint reads every record back.
    let (bootstrap, security) = (
        proxy.bootstrap.clone(),
        KafkaSecurity {
            protocol: SecurityProtocol::Ssl,
            sasl: Default::default(),
            ssl: ssl.clone(),
        },
    );
    let landed = tokio::task::spawn_blocking(move || {
        ballast_kafka::read_topic_with(
            &bootstrap,
            &security,
            "events",
            Some(20),
            Duration::from_secs(30),
        )
    })
    .await??;
    let ids: HashSet<String> = landed.iter().filter_map(|l| l.message_id.clone()).collect();
    for i in 0..20 {
        assert!(ids.contains(&format!("tls-{i}")), "tls-{i} missing");
    }

    // A broker certificate from another CA: a clear error naming the broker, never a hang.
    let other = Authority::create(&dir.join("other"), "another CA")?;
    let untrusting = KafkaSecurity {
        protocol: SecurityProtocol::Ssl,
        sasl: Default::default(),
        ssl: KafkaSsl {
            ca_file: Some(other.ca_file.clone()),
            ..KafkaSsl::default()
        },
    };
    let e = MetadataClient::new(
        ballast_kafka::bootstrap_list(&proxy.bootstrap),
        "ballast-test",
        Duration::from_secs(2),
    )
    .with_tls(untrusting.tls_connector()?)
    .fetch()
    .await
    .expect_err("an untrusted broker certificate");
    let first = proxy.bootstrap.split(',').next().unwrap();
    let msg = e.to_string();
    assert!(
        msg.contains("tls handshake failed") && msg.contains("127.0.0.1:"),
        "{msg}"
    );
    let _ = first;
    // A plaintext client on the TLS endpoint gets no metadata.
    assert!(
        MetadataClient::new(
            ballast_kafka::bootstrap_list(&proxy.bootstrap),
            "ballast-test",
            Duration::from_secs(2),
        )
        .fetch()
        .await
        .is_err(),
        "plaintext metadata from a tls endpoint"
    );
    // Security set through kafka.properties is refused: one setting serves both clients.
    let mut sneaky = cfg.kafka.clone();
    sneaky
        .properties
        .insert("ssl.ca.location".into(), "/tmp/x".into());
    let e = sneaky.validate().unwrap_err().to_string();
    assert!(e.contains("kafka.ssl"), "{e}");

    // The topology service reads the secured cluster too.
    let mut topology = ballast_topology::TopologyConfig::default();
    topology.kafka.bootstrap_servers = proxy.bootstrap.clone();
    topology.kafka.security_protocol = SecurityProtocol::Ssl;
    topology.kafka.ssl = ssl.clone();
    ballast_dev::topology_sees_brokers(topology, 3).await?;

    local.stop().await?;
    Ok(())
}

/// Brokers that require client certificates (mTLS): Ballast's certificate gets in on both
/// paths; without one, nothing does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_to_kafka_on_both_paths() -> anyhow::Result<()> {
    let kafka = SecureKafka::tls(true).await?;
    let (ca, proxy) = (&kafka.ca, &kafka.proxy);
    let client = ca.issue("ballast", "ballast", &[])?;
    let with_cert = KafkaSecurity {
        protocol: SecurityProtocol::Ssl,
        sasl: Default::default(),
        ssl: KafkaSsl {
            ca_file: Some(ca.ca_file.clone()),
            cert_file: Some(client.cert_file.clone()),
            key_file: Some(client.key_file.clone()),
        },
    };
    let without = KafkaSecurity {
        protocol: SecurityProtocol::Ssl,
        sasl: Default::default(),
        ssl: KafkaSsl {
            ca_file: Some(ca.ca_file.clone()),
            ..KafkaSsl::default()
        },
    };
    let metadata = |s: &KafkaSecurity| {
        MetadataClient::new(
            ballast_kafka::bootstrap_list(&proxy.bootstrap),
            "ballast-test",
            Duration::from_secs(2),
        )
        .with_tls(s.tls_connector().unwrap())
    };
    let md = metadata(&with_cert).fetch().await?;
    assert_eq!(md.brokers.len(), 3);
    assert!(
        metadata(&without).fetch().await.is_err(),
        "no client certificate got in"
    );

    // librdkafka: the producer writes with the certificate, and a consumer reads back.
    let mut kafka = ballast_kafka::KafkaConfig {
        bootstrap_servers: proxy.bootstrap.clone(),
        security_protocol: SecurityProtocol::Ssl,
        ssl: with_cert.ssl.clone(),
        write_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let producer = ballast_kafka::KafkaProducer::new(&kafka)?;
    producer
        .send(ballast_kafka::OutgoingRecord {
            topic: "events",
            partition: 0,
            key: None,
            value: b"over mtls",
            headers: &[],
        })
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let (bootstrap, security) = (proxy.bootstrap.clone(), with_cert.clone());
    let landed = tokio::task::spawn_blocking(move || {
        ballast_kafka::read_topic_with(
            &bootstrap,
            &security,
            "events",
            Some(1),
            Duration::from_secs(30),
        )
    })
    .await??;
    assert_eq!(landed[0].value, b"over mtls");
    // Without the certificate the producer's write does not get through.
    kafka.ssl = without.ssl.clone();
    let refused = ballast_kafka::KafkaProducer::new(&kafka)?
        .send(ballast_kafka::OutgoingRecord {
            topic: "events",
            partition: 0,
            key: None,
            value: b"refused",
            headers: &[],
        })
        .await;
    assert!(
        refused.is_err(),
        "a write without a client certificate got through"
    );
    Ok(())
}
