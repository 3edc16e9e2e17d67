//! The dedup service over gRPC: input validation, Redis outages, and the client's
//! `process_once` helper.

use ballast_dedup_service::{Backend, DedupConfig};
use ballast_dedup_store::client::{BatchOutcome, DedupClient, ProcessError, Processed};
use ballast_proto::dedup::v1 as pb;
use ballast_testkit::redis::RedisServer;
use ballast_testkit::wait_serving;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::oneshot;

struct Running {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn start(cfg: DedupConfig) -> anyhow::Result<Running> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, rx) = oneshot::channel::<()>();
    tokio::spawn(ballast_dedup_service::run(cfg, listener, admin, async {
        let _ = rx.await;
    }));
    wait_serving(addr).await?;
    Ok(Running { addr, _stop: stop })
}

fn memory() -> DedupConfig {
    DedupConfig {
        backend: Backend::Memory,
        ..DedupConfig::default()
    }
}

async fn client(r: &Running) -> DedupClient {
    DedupClient::connect(&format!("http://{}", r.addr), "test")
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_invalid_argument() -> anyhow::Result<()> {
    let mut cfg = memory();
    cfg.limits.max_batch = 5;
    cfg.limits.max_id_bytes = 16;
    let r = start(cfg).await?;
    let c = client(&r).await;
    let lease = Duration::from_secs(1);
    let cases: Vec<(&str, Vec<String>, Duration)> = vec![
        ("", vec!["a".into()], lease),
        ("g", vec!["".into()], lease),
        ("g", vec!["x".repeat(17)], lease),
        ("g", (0..6).map(|i| i.to_string()).collect(), lease),
        ("g", vec!["a".into()], Duration::ZERO),
        ("g", vec!["a".into()], Duration::from_secs(7200)),
    ];
    // An owner past limits.max_owner_bytes (256) fails the call too.
    let long_owner = DedupClient::connect(&format!("http://{}", r.addr), "o".repeat(300))
        .await
        .unwrap();
    match long_owner
        .claim("g", vec!["a".into()], lease)
        .await
        .unwrap_err()
    {
        ballast_dedup_store::client::ClientError::Rpc(s) => {
            assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
            assert!(s.message().contains("limits.max_owner_bytes"), "{s:?}");
        }
        other => panic!("unexpected {other:?}"),
    }
    for (group, ids, lease) in cases {
        let err = c.claim(group, ids.clone(), lease).await.unwrap_err();
        match err {
            ballast_dedup_store::client::ClientError::Rpc(s) => {
                assert_eq!(
                    s.code(),
                    tonic::Code::InvalidArgument,
                    "{group:?} {ids:?}: {s:?}"
                );
                assert!(!s.message().is_empty());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let err = c
        .commit(
            "",
            vec![pb::Fenced {
                id: "a".into(),
                fence: 1,
            }],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ballast_dedup_store::client::ClientError::Rpc(s) if s.code() == tonic::Code::InvalidArgument)
    );
    // A valid call still works.
    let ok = c.claim("g", vec!["a".into()], lease).await?;
    assert_eq!(ok[0].state, pb::ClaimState::New as i32);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_unavailable() -> anyhow::Result<()> {
    let mut server = RedisServer::start();
    let mut cfg = DedupConfig::default();
    cfg.redis.url = server.url();
    cfg.redis.response_timeout = Duration::from_millis(500);
    cfg.redis.connect_timeout = Duration::from_millis(500);
    let r = start(cfg).await?;
    let c = client(&r).await;
    let first = c
        .claim("g", vec!["a".into()], Duration::from_secs(5))
        .await?;
    assert_eq!(first[0].state, pb::ClaimState::New as i32);
    server.kill();
    let err = c
        .claim("g", vec!["b".into()], Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ballast_dedup_store::client::ClientError::Rpc(s) if s.code() == tonic::Code::Unavailable),
        "{err:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_once_runs_work_once_and_releases_on_failure() -> anyhow::Result<()> {
    let r = start(memory()).await?;
    let c = client(&r).await;
    let lease = Duration::from_millis(300);

    // Work longer than the lease: the heartbeat keeps the claim.
    let first = c
        .process_once("g", "m-1", lease, async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            Ok::<_, String>(42)
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(first, Processed::Done(42));
    let again = c
        .process_once("g", "m-1", lease, async { Ok::<_, String>(0) })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(again, Processed::Duplicate(pb::ClaimState::Done));

    let failed = c
        .process_once("g", "m-2", lease, async {
            Err::<(), _>("boom".to_string())
        })
        .await;
    assert!(matches!(failed, Err(ProcessError::Work(ref e)) if e == "boom"));
    // Released: the id can be processed at once by someone else.
    let retried = c
        .process_once("g", "m-2", lease, async { Ok::<_, String>(()) })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(retried, Processed::Done(()));

    // The batch form.
    let out = c
        .process_batch_once(
            "g",
            vec!["m-1".into(), "b-1".into(), "b-2".into()],
            lease,
            |id| async move {
                if id == "b-2" {
                    Err("bad record")
                } else {
                    Ok(())
                }
            },
        )
        .await?;
    assert_eq!(
        out,
        vec![
            BatchOutcome::Duplicate(pb::ClaimState::Done),
            BatchOutcome::Done,
            BatchOutcome::Failed("bad record".into())
        ]
    );
    let check = c.check("g", vec!["b-1".into(), "b-2".into()]).await?;
    assert_eq!(check[0].state, pb::ClaimState::Done as i32);
    assert_eq!(check[1].state, pb::ClaimState::Unclaimed as i32, "released");
    // Never seen has its own state too, not the proto default.
    let unseen = c.check("g", vec!["never".into()]).await?;
    assert_eq!(unseen[0].state, pb::ClaimState::Unclaimed as i32);
    Ok(())
}
