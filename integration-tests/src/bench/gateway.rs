//! P1: the gateway over gRPC (plaintext and TLS, in-process and as its own process)
//! against a direct rdkafka producer on the same cluster.

use super::*;

/// Round-robin over several gRPC connections.
#[derive(Clone)]
pub(super) struct ClientPool {
    clients: Arc<Vec<IngestClient<tonic::transport::Channel>>>,
    next: Arc<AtomicUsize>,
}

impl ClientPool {
    pub(super) fn new(clients: Vec<IngestClient<tonic::transport::Channel>>) -> Self {
        Self {
            clients: Arc::new(clients),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub(super) fn next(&self) -> IngestClient<tonic::transport::Channel> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        self.clients[i].clone()
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct GatewayFigures {
    pub records: usize,
    pub record_bytes: usize,
    pub batch: usize,
    pub direct_records_per_sec: f64,
    pub gateway_records_per_sec: f64,
    /// gateway ÷ direct; the target is ≥ 0.8.
    pub throughput_ratio: f64,
    /// The gateway's write path called in process, without gRPC: where the overhead lies.
    pub inprocess_records_per_sec: f64,
    pub half_load_records_per_sec: f64,
    pub direct_p99_ms: f64,
    pub gateway_p99_ms: f64,
    /// gateway p99 − direct p99 at half load; the target is ≤ 1 ms.
    pub added_p99_ms: f64,
    /// p99 of the same batches at the same rate through `ballast-dev bench-sink` (a process
    /// that answers over gRPC without Kafka): the gRPC hop alone.
    pub sink_p99_ms: f64,
    /// A second gateway on the same cluster, serving the clients over TLS (1.3, rustls).
    pub tls_records_per_sec: f64,
    /// TLS ÷ plaintext gateway throughput, in the same run.
    pub tls_ratio: f64,
}

pub(super) fn direct_producer(bootstrap: &str) -> anyhow::Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "10000")
        .create()?)
}

pub(super) async fn direct_batch(p: FutureProducer, value: Arc<Vec<u8>>) -> anyhow::Result<()> {
    let sends = (0..BATCH).map(|_| {
        p.send_result(FutureRecord::<(), [u8]>::to(TOPIC).payload(value.as_slice()))
            .map_err(|(e, _)| anyhow::anyhow!("enqueue: {e}"))
    });
    let futures = sends.collect::<Result<Vec<_>, _>>()?;
    for r in join_all(futures).await {
        r.context("delivery canceled")?
            .map_err(|(e, _)| anyhow::anyhow!("delivery: {e}"))?;
    }
    Ok(())
}

pub(super) async fn gateway_batch(
    mut client: IngestClient<tonic::transport::Channel>,
    value: Arc<Vec<u8>>,
) -> anyhow::Result<()> {
    let records = (0..BATCH)
        .map(|_| pb::Record {
            topic: TOPIC.into(),
            value: value.as_ref().clone().into(),
            ..Default::default()
        })
        .collect();
    let resp = client
        .produce(pb::ProduceRequest { records })
        .await?
        .into_inner();
    let acked = resp
        .results
        .iter()
        .filter(|r| matches!(r.outcome, Some(pb::record_result::Outcome::Kafka(_))))
        .count();
    anyhow::ensure!(
        acked == BATCH,
        "only {acked} of {BATCH} records acknowledged"
    );
    Ok(())
}

pub(super) async fn inprocess_batch(
    writer: Arc<ballast_produce::Writer>,
    value: Arc<Vec<u8>>,
) -> anyhow::Result<()> {
    let records = (0..BATCH)
        .map(|_| ballast_produce::Record {
            topic: TOPIC.into(),
            value: value.as_ref().clone().into(),
            ..Default::default()
        })
        .collect();
    let produced = writer.write_batch(records).await;
    let acked = produced.iter().filter(|p| p.label() == "kafka").count();
    anyhow::ensure!(
        acked == BATCH,
        "only {acked} of {BATCH} records acknowledged"
    );
    Ok(())
}

/// A throwaway CA in `dir` and a server certificate for 127.0.0.1, for the TLS rows.
pub(super) fn bench_pki(
    dir: &std::path::Path,
) -> anyhow::Result<(
    ballast_security::pki::Authority,
    ballast_security::pki::Issued,
)> {
    let ca = ballast_security::pki::Authority::create(dir, "bench CA")?;
    let server = ca.issue(
        "server",
        "bench",
        &[ballast_security::pki::Name::Ip(std::net::IpAddr::from([
            127, 0, 0, 1,
        ]))],
    )?;
    Ok((ca, server))
}

/// The bench gateways' Kafka settings: the cluster, and a generous write timeout.
pub(super) fn bench_gateway_config(bootstrap: &str) -> GatewayConfig {
    let mut cfg = GatewayConfig {
        rack: Some("az-a".into()),
        ..GatewayConfig::default()
    };
    cfg.kafka.bootstrap_servers = bootstrap.to_string();
    cfg.kafka.write_timeout = Duration::from_secs(10);
    cfg.limits.record_deadline = Duration::from_secs(30);
    cfg
}

/// P1: gateway throughput and added p99 against a direct producer.
pub async fn gateway_suite(args: &BenchArgs) -> anyhow::Result<GatewayFigures> {
    let records = args
        .records
        .unwrap_or(if args.quick { 20_000 } else { 200_000 });
    let batches = records.div_ceil(BATCH).max(1);
    let workers = args.concurrency.max(1);
    let phase = if args.quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(6)
    };
    let cluster = EmbeddedCluster::start(EmbeddedClusterConfig {
        topics: vec![TopicSpec {
            name: TOPIC.into(),
            partitions: 6,
            replication_factor: 3,
        }],
        ..Default::default()
    })?;
    let bootstrap = cluster.bootstrap_servers().to_string();
    let value = Arc::new(payload());

    let cfg = bench_gateway_config(&bootstrap);
    let gateway = Gateway::new(cfg).await?;
    gateway.handle().refresh_metadata().await?;
    let mut local = gateway.spawn_local().await?;
    let (gateway_handle, addr) = (local.handle.clone(), local.addr);
    // Several connections, as many clients would have: one HTTP/2 connection is served
    // by one task on each side.
    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        clients.push(IngestClient::connect(format!("http://{addr}")).await?);
    }
    let pool = ClientPool::new(clients);
    let direct = direct_producer(&bootstrap)?;

    // The same gateway with TLS on the client hop, certificates from a throwaway CA.
    let pki_dir = std::env::temp_dir().join(format!("ballast-bench-tls-{}", std::process::id()));
    let (ca, server) = bench_pki(&pki_dir)?;
    let mut tls_cfg = bench_gateway_config(&bootstrap);
    tls_cfg.tls.cert_file = Some(server.cert_file);
    tls_cfg.tls.key_file = Some(server.key_file);
    let tls_gateway = Gateway::new(tls_cfg).await?;
    tls_gateway.handle().refresh_metadata().await?;
    let mut tls_local = tls_gateway.spawn_local().await?;
    let security = ballast_security::ClientSecurity {
        ca_file: Some(ca.ca_file.clone()),
        ..Default::default()
    };
    let mut tls_clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        let end = std::time::Instant::now() + Duration::from_secs(15);
        let channel = loop {
            match security
                .endpoint(&format!("http://{}", tls_local.addr))?
                .connect()
                .await
            {
                Ok(c) => break c,
                Err(e) if std::time::Instant::now() > end => {
                    anyhow::bail!("the tls gateway did not serve: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        tls_clients.push(IngestClient::new(channel));
    }
    let tls_pool = ClientPool::new(tls_clients);

    eprintln!("bench: warming up");
    {
        let (d, v) = (direct.clone(), value.clone());
        closed_loop(workers * 4, workers, move || {
            direct_batch(d.clone(), v.clone())
        })
        .await?;
        let (c, v) = (pool.clone(), value.clone());
        closed_loop(workers * 4, workers, move || {
            gateway_batch(c.next(), v.clone())
        })
        .await?;
        let (c, v) = (tls_pool.clone(), value.clone());
        closed_loop(workers * 4, workers, move || {
            gateway_batch(c.next(), v.clone())
        })
        .await?;
    }
    eprintln!("bench: direct producer, {records} records");
    let (d, v) = (direct.clone(), value.clone());
    let direct_time =
        closed_loop(batches, workers, move || direct_batch(d.clone(), v.clone())).await?;
    eprintln!("bench: gateway write path in process (no grpc), {records} records");
    let prod = gateway_handle.writer();
    let v = value.clone();
    let inproc_time = closed_loop(batches, workers, move || {
        inprocess_batch(prod.clone(), v.clone())
    })
    .await?;
    eprintln!("bench: gateway, {records} records");
    let (c, v) = (pool.clone(), value.clone());
    let gw_time = closed_loop(batches, workers, move || gateway_batch(c.next(), v.clone())).await?;
    eprintln!("bench: gateway over tls, {records} records");
    let (c, v) = (tls_pool.clone(), value.clone());
    let tls_time =
        closed_loop(batches, workers, move || gateway_batch(c.next(), v.clone())).await?;
    tls_local.stop().await?;
    let _ = std::fs::remove_dir_all(&pki_dir);
    let n = (batches * BATCH) as f64;
    let tls_rps = n / tls_time.as_secs_f64();
    let direct_rps = n / direct_time.as_secs_f64();
    let gw_rps = n / gw_time.as_secs_f64();
    let inproc_rps = n / inproc_time.as_secs_f64();

    let half = 0.5 * gw_rps.min(direct_rps);
    let bps = half / BATCH as f64;
    eprintln!("bench: half load ({half:.0} records/s), {phase:?} each");
    let (d, v) = (direct.clone(), value.clone());
    let direct_lat = open_loop(bps, phase, move || direct_batch(d.clone(), v.clone())).await?;
    let (c, v) = (pool.clone(), value.clone());
    let gw_lat = open_loop(bps, phase, move || gateway_batch(c.next(), v.clone())).await?;
    let (dp, gp) = (p99(direct_lat), p99(gw_lat));
    eprintln!("bench: the grpc hop alone (a sink process without kafka) at {half:.0} records/s");
    let sink = resilience::GatewayProcess::start_sink(
        &format!("ballast-bench-p2-sink-{}", std::process::id()),
        None,
    )?;
    let sink_pool = sink.pool(args.connections, None).await?;
    let (c, v) = (sink_pool.clone(), value.clone());
    closed_loop(workers * 4, workers, move || {
        gateway_batch(c.next(), v.clone())
    })
    .await?;
    let (c, v) = (sink_pool, value.clone());
    let sink_p99 = p99(open_loop(bps, phase, move || gateway_batch(c.next(), v.clone())).await?);
    drop(sink);

    local.stop().await?;
    Ok(GatewayFigures {
        records: batches * BATCH,
        record_bytes: RECORD_BYTES,
        batch: BATCH,
        direct_records_per_sec: direct_rps,
        gateway_records_per_sec: gw_rps,
        throughput_ratio: gw_rps / direct_rps,
        inprocess_records_per_sec: inproc_rps,
        half_load_records_per_sec: half,
        direct_p99_ms: dp,
        gateway_p99_ms: gp,
        added_p99_ms: gp - dp,
        sink_p99_ms: sink_p99,
        tls_records_per_sec: tls_rps,
        tls_ratio: tls_rps / gw_rps,
    })
}
