//! P4: dedup claims, in batches of 100, against raw pipelined `SET NX PX` on the same
//! Redis, in the same run. The three measurements alternate over several rounds and the
//! medians are compared, so a noisy moment does not favour one side.

use super::{closed_loop, BenchArgs};
use ballast_dedup_store::client::DedupClient;
use ballast_dedup_store::{DedupStore, RedisConfig, RedisStore};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const BATCH: usize = 100;
const LEASE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, serde::Serialize)]
pub struct DedupFigures {
    pub ids_per_round: usize,
    pub rounds: usize,
    pub batch: usize,
    pub raw_setnx_per_sec: f64,
    /// Claims through the store (INCRBY, then pipelined SET NX PX), ÷ raw.
    pub store_claims_per_sec: f64,
    pub store_ratio: f64,
    /// Claims through the dedup gRPC service, ÷ raw; the target is ≥ 0.5.
    pub service_claims_per_sec: f64,
    pub service_ratio: f64,
}

pub async fn suite(args: &BenchArgs) -> anyhow::Result<DedupFigures> {
    let ids = args
        .records
        .unwrap_or(if args.quick { 20_000 } else { 200_000 });
    let rounds = if args.quick { 1 } else { 3 };
    let batches = ids.div_ceil(BATCH).max(1);
    let workers = args.concurrency.max(1);
    let run = format!("bench-{}", ballast_core::new_message_id());

    let client = redis::Client::open(args.redis_url.as_str())?;
    let raw = redis::aio::ConnectionManager::new(client)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "redis at {} is not reachable ({e}); start redis-server or pass --redis-url",
                args.redis_url
            )
        })?;
    let store = Arc::new(
        RedisStore::connect(&RedisConfig {
            url: args.redis_url.clone(),
            key_prefix: format!("{run}:store"),
            ..RedisConfig::default()
        })
        .await?,
    );
    let mut cfg = ballast_dedup_service::DedupConfig::default();
    cfg.redis.url = args.redis_url.clone();
    cfg.redis.key_prefix = format!("{run}:svc");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ballast_dedup_service::run(cfg, listener, admin, async {
        let _ = stop_rx.await;
    }));
    ballast_testkit::wait_serving(addr).await?;
    // Several connections, as several consumers would have.
    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        clients.push(DedupClient::connect(&format!("http://{addr}"), "bench").await?);
    }
    let clients = Arc::new(clients);

    // Batch numbers never repeat, so every key is fresh in every round.
    let next = Arc::new(AtomicUsize::new(0));
    let (mut raw_r, mut store_r, mut svc_r) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        eprintln!("bench: dedup round {round}/{rounds}: raw SET NX PX, store, grpc service ({ids} ids each)");
        let (n, r, conn) = (next.clone(), run.clone(), raw.clone());
        let t = closed_loop(batches, workers, move || {
            let b = n.fetch_add(1, Ordering::Relaxed);
            let (r, mut conn) = (r.clone(), conn.clone());
            async move {
                let mut pipe = redis::pipe();
                for i in 0..BATCH {
                    pipe.cmd("SET")
                        .arg(format!("{{{r}:raw}}:i:{b}:{i}"))
                        .arg("P:1:bench")
                        .arg("NX")
                        .arg("PX")
                        .arg(LEASE.as_millis() as u64)
                        .ignore();
                }
                pipe.query_async::<()>(&mut conn).await?;
                Ok(())
            }
        })
        .await?;
        raw_r.push((batches * BATCH) as f64 / t.as_secs_f64());

        let (n, s) = (next.clone(), store.clone());
        let t = closed_loop(batches, workers, move || {
            let b = n.fetch_add(1, Ordering::Relaxed);
            let s = s.clone();
            async move {
                let ids: Vec<String> = (0..BATCH).map(|i| format!("{b}:{i}")).collect();
                let out = s.claim("bench", &ids, LEASE, "bench").await?;
                anyhow::ensure!(out.len() == BATCH);
                Ok(())
            }
        })
        .await?;
        store_r.push((batches * BATCH) as f64 / t.as_secs_f64());

        let (n, cs) = (next.clone(), clients.clone());
        let t = closed_loop(batches, workers, move || {
            let b = n.fetch_add(1, Ordering::Relaxed);
            let c = cs[b % cs.len()].clone();
            async move {
                let ids: Vec<String> = (0..BATCH).map(|i| format!("{b}:{i}")).collect();
                let out = c.claim("bench", ids, LEASE).await?;
                anyhow::ensure!(out.len() == BATCH);
                Ok(())
            }
        })
        .await?;
        svc_r.push((batches * BATCH) as f64 / t.as_secs_f64());
    }
    let _ = stop_tx.send(());
    server.await??;

    let (raw_rps, store_rps, service_rps) = (
        super::median(raw_r),
        super::median(store_r),
        super::median(svc_r),
    );
    Ok(DedupFigures {
        ids_per_round: batches * BATCH,
        rounds,
        batch: BATCH,
        raw_setnx_per_sec: raw_rps,
        store_claims_per_sec: store_rps,
        store_ratio: store_rps / raw_rps,
        service_claims_per_sec: service_rps,
        service_ratio: service_rps / raw_rps,
    })
}
