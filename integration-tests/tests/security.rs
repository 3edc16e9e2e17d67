//! Ballast's own APIs, secured, against real TLS listeners: the gateway, the retry admin
//! and the topology service with TLS (mTLS optional), bearer tokens, client-certificate
//! principals and one shared policy file; certificates and policy reloaded on change.
//!
//! The matrix: no credentials, a wrong token, an untrusted and an expired client
//! certificate, a plaintext client on a TLS port, a mixed batch with a forbidden topic, an
//! unauthorized Purge and MarkBrokerDraining, a policy reload and a certificate rotation.
//! Each gives a clear error, and nothing else is lost.

use ballast_dev::GatewayStack;
use ballast_proto::common::v1::Code;
use ballast_proto::ingest::v1 as pb;
use ballast_proto::ingest::v1::ingest_client::IngestClient;
use ballast_proto::retry::v1 as rpb;
use ballast_proto::retry::v1::retry_admin_client::RetryAdminClient;
use ballast_proto::topology::v1 as tpb;
use ballast_proto::topology::v1::topology_client::TopologyClient;
use ballast_security::pki::{Authority, Issued, Name};
use ballast_security::{
    token_sha256, AuthConfig, ClientAuth, ClientSecurity, TlsConfig, TokenConfig,
};
use ballast_testkit::deps::unique;
use ballast_testkit::{kafka_ack, record, record_error, wait_serving_with};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const RELOAD: Duration = Duration::from_millis(200);

struct Pki {
    dir: PathBuf,
    ca: Authority,
    server: Issued,
    ops: Issued,
    untrusted: Issued,
    expired: Issued,
    policy: PathBuf,
}

const POLICY: &str = "principals:
  orders:
    produce: [\"orders.*\"]
  reader:
    retry: [read]
    topology: [read]
    dedup: [\"analytics-*\"]
  spiffe://ballast/ops:
    retry: [read, write]
    topology: [read, mark_draining]
";

fn pki() -> anyhow::Result<Pki> {
    let dir = std::env::temp_dir().join(unique("ballast-sec"));
    let ca = Authority::create(&dir, "Ballast test CA")?;
    let localhost = IpAddr::from([127, 0, 0, 1]);
    let server = ca.issue(
        "server",
        "ballast",
        &[Name::Dns("localhost"), Name::Ip(localhost)],
    )?;
    let ops = ca.issue("ops", "ops", &[Name::Uri("spiffe://ballast/ops")])?;
    let expired = ca.issue_expired("expired", "spiffe://ballast/ops")?;
    let other = Authority::create(&dir.join("other"), "Someone else's CA")?;
    let untrusted = other.issue("untrusted", "ops", &[Name::Uri("spiffe://ballast/ops")])?;
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, POLICY)?;
    Ok(Pki {
        dir,
        ca,
        server,
        ops,
        untrusted,
        expired,
        policy,
    })
}

impl Pki {
    fn tls(&self) -> TlsConfig {
        TlsConfig {
            cert_file: Some(self.server.cert_file.clone()),
            key_file: Some(self.server.key_file.clone()),
            client_ca_file: Some(self.ca.ca_file.clone()),
            client_auth: ClientAuth::Optional,
            reload_interval: RELOAD,
            ..TlsConfig::default()
        }
    }

    fn auth(&self) -> AuthConfig {
        AuthConfig {
            policy_file: Some(self.policy.clone()),
            tokens: ["orders", "reader"]
                .iter()
                .map(|p| TokenConfig {
                    principal: p.to_string(),
                    sha256: Some(token_sha256(&format!("{p}-token"))),
                    sha256_file: None,
                })
                .collect(),
            reload_interval: RELOAD,
            ..AuthConfig::default()
        }
    }

    /// TLS with this CA, and a token or a client certificate.
    fn client(&self, token: Option<&str>, cert: Option<&Issued>) -> ClientSecurity {
        ClientSecurity {
            ca_file: Some(self.ca.ca_file.clone()),
            cert_file: cert.map(|c| c.cert_file.clone()),
            key_file: cert.map(|c| c.key_file.clone()),
            token: token.map(str::to_string),
            ..ClientSecurity::default()
        }
    }
}

async fn ingest(
    client: &ClientSecurity,
    addr: std::net::SocketAddr,
) -> anyhow::Result<IngestClient<ballast_security::AuthChannel>> {
    Ok(IngestClient::new(
        client.connect(&format!("http://{addr}")).await?,
    ))
}

fn batch(topics: &[&str]) -> pb::ProduceRequest {
    pb::ProduceRequest {
        records: topics
            .iter()
            .enumerate()
            .map(|(i, t)| record(t, None, &format!("v{i}")))
            .collect(),
    }
}

async fn eventually(what: &str, mut ok: impl AsyncFnMut() -> bool) -> anyhow::Result<()> {
    let end = Instant::now() + Duration::from_secs(10);
    while !ok().await {
        anyhow::ensure!(Instant::now() < end, "{what} did not happen within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_authenticates_authorizes_and_reloads() -> anyhow::Result<()> {
    let pki = pki()?;
    let (tls, auth) = (pki.tls(), pki.auth());
    let stack = GatewayStack::start_secured(
        &[("orders.eu", 2), ("orders.us", 2), ("payments", 2)],
        |c| {
            c.tls = tls;
            c.auth = auth;
        },
        &pki.client(None, None),
    )
    .await?;
    let addr = stack.addr;

    // A plaintext client on the TLS port gets no answer.
    let plain = async {
        let mut c = IngestClient::connect(format!("http://{addr}")).await?;
        anyhow::Ok(c.produce(batch(&["orders.eu"])).await?)
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(10), plain)
            .await?
            .is_err(),
        "plaintext must not be served on a tls port"
    );

    // No credentials, or a wrong token: the whole call is UNAUTHENTICATED.
    let e = ingest(&pki.client(None, None), addr)
        .await?
        .produce(batch(&["orders.eu"]))
        .await
        .expect_err("no credentials");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
    assert!(e.message().contains("no credentials"), "{e}");
    let e = ingest(&pki.client(Some("guess"), None), addr)
        .await?
        .produce(batch(&["orders.eu"]))
        .await
        .expect_err("a wrong token");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");

    // An untrusted or expired client certificate fails the handshake.
    for cert in [&pki.untrusted, &pki.expired] {
        let refused = async {
            let mut c = ingest(&pki.client(None, Some(cert)), addr).await?;
            anyhow::Ok(c.produce(batch(&["orders.eu"])).await?)
        }
        .await;
        assert!(refused.is_err(), "{cert:?} was accepted");
    }

    // A mixed batch: the forbidden topic fails alone; the rest are acknowledged.
    let mut orders = ingest(&pki.client(Some("orders-token"), None), addr).await?;
    let results = orders
        .produce(batch(&["orders.eu", "payments", "orders.us"]))
        .await?
        .into_inner()
        .results;
    assert!(kafka_ack(&results[0]).is_some(), "{results:?}");
    assert!(kafka_ack(&results[2]).is_some(), "{results:?}");
    let denied = record_error(&results[1]).expect("payments is not granted");
    assert_eq!(denied.code, Code::PermissionDenied as i32);
    assert!(
        denied.message.contains("\"orders\"") && denied.message.contains("payments"),
        "{denied:?}"
    );
    assert!(!denied.retryable);

    // The ops certificate authenticates (URI SAN) but may not produce...
    let mut ops = ingest(&pki.client(None, Some(&pki.ops)), addr).await?;
    let r = ops
        .produce(batch(&["orders.eu"]))
        .await?
        .into_inner()
        .results;
    assert_eq!(
        record_error(&r[0]).map(|e| e.code),
        Some(Code::PermissionDenied as i32)
    );
    // ...until the policy file grants it: reloaded without a restart.
    std::fs::write(
        &pki.policy,
        format!("{POLICY}    produce: [\"orders.*\"]\n"),
    )?;
    eventually("the policy reload", async || {
        let r = ops.produce(batch(&["orders.eu"])).await;
        r.is_ok_and(|r| kafka_ack(&r.into_inner().results[0]).is_some())
    })
    .await?;

    // A stream opened now follows the policy as it changes: with the grant withdrawn,
    // its next batch is denied, record by record.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut answers = ops
        .produce_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    tx.send(batch(&["orders.eu"])).await?;
    let first = answers.message().await?.expect("an answer");
    assert!(kafka_ack(&first.results[0]).is_some(), "{first:?}");
    std::fs::write(&pki.policy, POLICY)?;
    eventually("the grant withdrawn", async || {
        let r = ops.produce(batch(&["orders.eu"])).await;
        r.is_ok_and(|r| record_error(&r.into_inner().results[0]).is_some())
    })
    .await?;
    tx.send(batch(&["orders.eu"])).await?;
    let next = answers.message().await?.expect("an answer");
    assert_eq!(
        record_error(&next.results[0]).map(|e| e.code),
        Some(Code::PermissionDenied as i32),
        "{next:?}"
    );
    drop(tx);

    // A certificate named like a token principal ("orders") gets none of its grants.
    let impostor = pki.ca.issue("impostor", "orders", &[])?;
    let r = ingest(&pki.client(None, Some(&impostor)), addr)
        .await?
        .produce(batch(&["orders.eu"]))
        .await?
        .into_inner()
        .results;
    let denied = record_error(&r[0]).expect("the impostor is denied");
    assert_eq!(denied.code, Code::PermissionDenied as i32);
    assert!(
        denied.message.contains("certificate principal"),
        "{denied:?}"
    );

    // Certificate rotation: the server's files are replaced by ones from a new CA; new
    // connections get the new certificate, without a restart.
    let rotated_dir = pki.dir.join("rotated");
    let new_ca = Authority::create(&rotated_dir, "Rotated CA")?;
    let new = new_ca.issue(
        "server",
        "ballast",
        &[
            Name::Dns("localhost"),
            Name::Ip(IpAddr::from([127, 0, 0, 1])),
        ],
    )?;
    replace(&new.cert_file, &pki.server.cert_file)?;
    replace(&new.key_file, &pki.server.key_file)?;
    let mut trusting_new = pki.client(Some("orders-token"), None);
    trusting_new.ca_file = Some(new_ca.ca_file.clone());
    eventually("the certificate rotation", async || {
        match ingest(&trusting_new, addr).await {
            Ok(mut c) => c.produce(batch(&["orders.eu"])).await.is_ok(),
            Err(_) => false,
        }
    })
    .await?;
    let old_trust = async {
        let mut c = ingest(&pki.client(Some("orders-token"), None), addr).await?;
        anyhow::Ok(c.produce(batch(&["orders.eu"])).await?)
    }
    .await;
    assert!(
        old_trust.is_err(),
        "a client trusting only the old CA still connected"
    );
    std::fs::remove_dir_all(&pki.dir).ok();
    Ok(())
}

fn replace(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::copy(from, to)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_admin_and_topology_enforce_read_and_write() -> anyhow::Result<()> {
    let pki = pki()?;
    let cluster = ballast_kafka::EmbeddedCluster::start(Default::default())?;

    // A retry worker on SQLite, and the topology service, both secured.
    let db = pki.dir.join("q.db");
    let mut worker = ballast_retry_worker::WorkerConfig {
        tls: pki.tls(),
        auth: pki.auth(),
        ..Default::default()
    };
    worker.failover.database_url = format!("sqlite://{}?mode=rwc", db.display());
    worker.kafka.bootstrap_servers = cluster.bootstrap_servers().to_string();
    let mut topology = ballast_topology::TopologyConfig {
        tls: pki.tls(),
        auth: pki.auth(),
        ..Default::default()
    };
    topology.kafka.bootstrap_servers = cluster.bootstrap_servers().to_string();
    let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
    let (w_grpc, w_admin, t_grpc, t_admin) =
        (bind().await?, bind().await?, bind().await?, bind().await?);
    let (w_addr, t_addr) = (w_grpc.local_addr()?, t_grpc.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let w = tokio::spawn(ballast_retry_worker::run(
        worker,
        w_grpc,
        w_admin,
        stopped(stop_rx.clone()),
    ));
    let t = tokio::spawn(ballast_topology::run(
        topology,
        t_grpc,
        t_admin,
        stopped(stop_rx),
    ));
    wait_serving_with(w_addr, &pki.client(None, None)).await?;
    wait_serving_with(t_addr, &pki.client(None, None)).await?;

    let retry = |c: ClientSecurity| async move {
        anyhow::Ok(RetryAdminClient::new(
            c.connect(&format!("http://{w_addr}")).await?,
        ))
    };
    let topo = |c: ClientSecurity| async move {
        anyhow::Ok(TopologyClient::new(
            c.connect(&format!("http://{t_addr}")).await?,
        ))
    };
    let purge = || rpb::PurgeRequest {
        ids: vec![],
        all: true,
    };
    let drain = || tpb::MarkBrokerDrainingRequest {
        broker_id: 1,
        deadline_unix_ms: None,
        reason: "test".into(),
    };

    // No credentials: UNAUTHENTICATED.
    let e = retry(pki.client(None, None))
        .await?
        .stats(rpb::StatsRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
    let e = topo(pki.client(None, None))
        .await?
        .mark_broker_draining(drain())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");

    // A reader may read, not purge or mark brokers draining.
    // The token from a file, as a mounted Secret gives it.
    let token_file = pki.dir.join("reader.token");
    std::fs::write(&token_file, "reader-token\n")?;
    let from_file = ClientSecurity {
        token_file: Some(token_file),
        ..pki.client(None, None)
    };
    let mut reader = retry(from_file).await?;
    reader.stats(rpb::StatsRequest {}).await?;
    let e = reader.purge(purge()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    assert!(e.message().contains("retry: write"), "{e}");
    let mut reader_topo = topo(pki.client(Some("reader-token"), None)).await?;
    reader_topo
        .get_topology(tpb::GetTopologyRequest::default())
        .await?;
    let e = reader_topo.mark_broker_draining(drain()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    let snapshot = reader_topo
        .get_topology(tpb::GetTopologyRequest::default())
        .await?
        .into_inner();
    assert!(
        snapshot.brokers.iter().all(|b| !b.draining),
        "a refused mark changed nothing: {snapshot:?}"
    );

    // A watch the reader opens follows it as it changes.
    let mut watch = reader_topo
        .watch_topology(tpb::WatchTopologyRequest::default())
        .await?
        .into_inner();
    watch.message().await?.expect("the current snapshot");

    // The ops certificate may do both.
    retry(pki.client(None, Some(&pki.ops)))
        .await?
        .purge(purge())
        .await?;
    let mut ops_topo = topo(pki.client(None, Some(&pki.ops))).await?;
    ops_topo.mark_broker_draining(drain()).await?;
    let marked = watch.message().await?.expect("a snapshot after the mark");
    assert!(marked.brokers.iter().any(|b| b.draining), "{marked:?}");

    // The reader loses its topology grant: its open watch is ended at the next snapshot,
    // with PERMISSION_DENIED, instead of streaming on under the old policy.
    std::fs::write(
        &pki.policy,
        POLICY.replace("    topology: [read]\n    dedup", "    dedup"),
    )?;
    eventually("the grant withdrawn", async || {
        reader_topo
            .get_topology(tpb::GetTopologyRequest::default())
            .await
            .is_err_and(|e| e.code() == tonic::Code::PermissionDenied)
    })
    .await?;
    ops_topo
        .mark_broker_draining(tpb::MarkBrokerDrainingRequest {
            broker_id: 2,
            ..drain()
        })
        .await?;
    let ended = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .map_err(|_| anyhow::anyhow!("the revoked watch still waits"))?;
    match ended {
        Err(e) => assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}"),
        Ok(m) => panic!("the revoked watch went on: {m:?}"),
    }

    let _ = stop_tx.send(true);
    w.await??;
    t.await??;
    std::fs::remove_dir_all(&pki.dir).ok();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_grants_consumer_groups_by_pattern() -> anyhow::Result<()> {
    use ballast_proto::dedup::v1 as dpb;
    use ballast_proto::dedup::v1::dedup_client::DedupClient;
    let pki = pki()?;
    let cfg = ballast_dedup_service::DedupConfig {
        backend: ballast_dedup_service::Backend::Memory,
        tls: pki.tls(),
        auth: pki.auth(),
        ..Default::default()
    };
    let (grpc, admin) = (
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
    );
    let addr = grpc.local_addr()?;
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(ballast_dedup_service::run(cfg, grpc, admin, async {
        let _ = rx.await;
    }));
    wait_serving_with(addr, &pki.client(None, None)).await?;
    let claim = |group: &str| dpb::ClaimRequest {
        group: group.into(),
        ids: vec!["m-1".into()],
        lease_ms: 10_000,
        owner: "consumer-1".into(),
    };
    let connect = |c: ClientSecurity| async move {
        anyhow::Ok(DedupClient::new(
            c.connect(&format!("http://{addr}")).await?,
        ))
    };
    let mut reader = connect(pki.client(Some("reader-token"), None)).await?;
    let granted = reader.claim(claim("analytics-clicks")).await?.into_inner();
    assert_eq!(granted.results.len(), 1);
    let e = reader.claim(claim("billing")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    assert!(e.message().contains("billing"), "{e}");
    let e = connect(pki.client(None, None))
        .await?
        .check(dpb::CheckRequest {
            group: "analytics-clicks".into(),
            ids: vec!["m-1".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
    let _ = stop.send(());
    served.await??;
    std::fs::remove_dir_all(&pki.dir).ok();
    Ok(())
}
