//! One conformance suite, run against the memory backend, a real `redis-server`, and a real
//! 3-node Redis Cluster.

use ballast_dedup_store::{
    ClaimState, DedupStore, MemoryStore, RedisConfig, RedisStore, StoreError, REASON_DONE,
    REASON_NOT_CLAIMED, REASON_OWNER, REASON_STALE,
};
use ballast_testkit::redis::{RedisCluster, RedisServer};
use std::sync::Arc;
use std::time::Duration;

const DONE_WINDOW: Duration = Duration::from_millis(1500);

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

async fn suite(store: Arc<dyn DedupStore>) {
    concurrent_claims_give_exactly_one_new(store.clone()).await;
    expired_lease_gives_higher_fence_and_rejects_the_old_one(store.clone()).await;
    done_survives_until_the_window_ends(store.clone()).await;
    mixed_batch(store.clone()).await;
    release_and_extend(store.clone()).await;
    groups_are_independent(store.clone()).await;
    key_syntax_in_names_cannot_collide(store.clone()).await;
    another_owner_cannot_use_a_fence(store).await;
}

/// The fence alone is not enough: a commit, release or extend naming another owner is
/// refused, and the claim stays its holder's.
async fn another_owner_cannot_use_a_fence(store: Arc<dyn DedupStore>) {
    let lease = Duration::from_secs(30);
    let c = store
        .claim("g-owner", &ids(&["o"]), lease, "holder")
        .await
        .unwrap()
        .remove(0);
    let entry = [("o".to_string(), c.fence)];
    for r in [
        store.commit("g-owner", &entry, "intruder").await.unwrap(),
        store.release("g-owner", &entry, "intruder").await.unwrap(),
        store
            .extend("g-owner", &entry, lease, "intruder")
            .await
            .unwrap(),
    ] {
        assert!(!r[0].ok, "{}: {:?}", store.backend(), r[0]);
        assert_eq!(r[0].reason, REASON_OWNER);
    }
    assert!(store.commit("g-owner", &entry, "holder").await.unwrap()[0].ok);
}

async fn concurrent_claims_give_exactly_one_new(store: Arc<dyn DedupStore>) {
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .claim(
                        "g-race",
                        &ids(&["order-1"]),
                        Duration::from_secs(30),
                        &format!("w{i}"),
                    )
                    .await
                    .unwrap()
                    .remove(0)
            })
        })
        .collect();
    let mut new = 0;
    for t in tasks {
        let c = t.await.unwrap();
        match c.state {
            ClaimState::New => {
                new += 1;
                assert!(c.fence > 0);
            }
            ClaimState::InProgress => assert!(c.lease_expires_unix_ms > 0),
            ClaimState::Done => panic!("nobody committed"),
        }
    }
    assert_eq!(new, 1, "{}: exactly one NEW of 50", store.backend());
}

async fn expired_lease_gives_higher_fence_and_rejects_the_old_one(store: Arc<dyn DedupStore>) {
    let id = ids(&["slow"]);
    let first = store
        .claim("g-lease", &id, Duration::from_millis(200), "w1")
        .await
        .unwrap()
        .remove(0);
    assert_eq!(first.state, ClaimState::New);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let second = store
        .claim("g-lease", &id, Duration::from_secs(30), "w2")
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        second.state,
        ClaimState::New,
        "{}: the lease expired",
        store.backend()
    );
    assert!(second.fence > first.fence, "fences increase strictly");
    let stale = store
        .commit("g-lease", &[("slow".into(), first.fence)], "w1")
        .await
        .unwrap();
    assert!(!stale[0].ok);
    assert_eq!(stale[0].reason, REASON_STALE);
    let ok = store
        .commit("g-lease", &[("slow".into(), second.fence)], "w2")
        .await
        .unwrap();
    assert!(ok[0].ok, "{:?}", ok[0]);
    // An unclaimed id cannot be committed.
    let unknown = store
        .commit("g-lease", &[("never".into(), 7)], "w")
        .await
        .unwrap();
    assert_eq!(unknown[0].reason, REASON_NOT_CLAIMED);
}

async fn done_survives_until_the_window_ends(store: Arc<dyn DedupStore>) {
    let id = ids(&["d"]);
    let c = store
        .claim("g-done", &id, Duration::from_secs(30), "w")
        .await
        .unwrap()
        .remove(0);
    assert!(
        store
            .commit("g-done", &[("d".into(), c.fence)], "w")
            .await
            .unwrap()[0]
            .ok
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let again = store
        .claim("g-done", &id, Duration::from_secs(30), "w")
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        again.state,
        ClaimState::Done,
        "{}: within the window",
        store.backend()
    );
    let twice = store
        .commit("g-done", &[("d".into(), c.fence)], "w")
        .await
        .unwrap();
    assert_eq!(twice[0].reason, REASON_DONE);
    tokio::time::sleep(DONE_WINDOW).await;
    let later = store
        .claim("g-done", &id, Duration::from_secs(30), "w")
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        later.state,
        ClaimState::New,
        "{}: the window ended",
        store.backend()
    );
}

async fn mixed_batch(store: Arc<dyn DedupStore>) {
    let lease = Duration::from_secs(30);
    let done = store
        .claim("g-mix", &ids(&["done"]), lease, "w")
        .await
        .unwrap()
        .remove(0);
    store
        .commit("g-mix", &[("done".into(), done.fence)], "w")
        .await
        .unwrap();
    store
        .claim("g-mix", &ids(&["busy"]), lease, "other")
        .await
        .unwrap();
    let out = store
        .claim(
            "g-mix",
            &ids(&["done", "busy", "fresh", "fresh"]),
            lease,
            "w",
        )
        .await
        .unwrap();
    let states: Vec<ClaimState> = out.iter().map(|c| c.state).collect();
    assert_eq!(
        states,
        vec![
            ClaimState::Done,
            ClaimState::InProgress,
            ClaimState::New,
            ClaimState::InProgress
        ],
        "{}",
        store.backend()
    );
    assert_eq!(out[2].id, "fresh");
    let checked = store
        .check("g-mix", &ids(&["done", "busy", "fresh", "nothing"]))
        .await
        .unwrap();
    let states: Vec<Option<ClaimState>> = checked.iter().map(|c| c.state).collect();
    assert_eq!(
        states,
        vec![
            Some(ClaimState::Done),
            Some(ClaimState::InProgress),
            Some(ClaimState::InProgress),
            None
        ]
    );
    assert!(checked[1].lease_expires_unix_ms > 0);
}

async fn release_and_extend(store: Arc<dyn DedupStore>) {
    let c = store
        .claim("g-rel", &ids(&["r"]), Duration::from_secs(30), "w")
        .await
        .unwrap()
        .remove(0);
    let wrong = store
        .release("g-rel", &[("r".into(), c.fence + 1000)], "w")
        .await
        .unwrap();
    assert_eq!(wrong[0].reason, REASON_STALE);
    assert!(
        store
            .release("g-rel", &[("r".into(), c.fence)], "w")
            .await
            .unwrap()[0]
            .ok
    );
    let again = store
        .claim("g-rel", &ids(&["r"]), Duration::from_millis(300), "w")
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        again.state,
        ClaimState::New,
        "released ids can be claimed at once"
    );
    // Extend outlives the original lease.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let e = store
            .extend(
                "g-rel",
                &[("r".into(), again.fence)],
                Duration::from_millis(300),
                "w",
            )
            .await
            .unwrap();
        assert!(e[0].ok, "{:?}", e[0]);
    }
    let busy = store
        .claim("g-rel", &ids(&["r"]), Duration::from_secs(1), "x")
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        busy.state,
        ClaimState::InProgress,
        "{}: extended",
        store.backend()
    );
    assert!(
        store
            .commit("g-rel", &[("r".into(), again.fence)], "w")
            .await
            .unwrap()[0]
            .ok
    );
}

async fn groups_are_independent(store: Arc<dyn DedupStore>) {
    let lease = Duration::from_secs(30);
    let a = store
        .claim("g-a", &ids(&["same"]), lease, "w")
        .await
        .unwrap()
        .remove(0);
    let b = store
        .claim("g-b", &ids(&["same"]), lease, "w")
        .await
        .unwrap()
        .remove(0);
    assert_eq!((a.state, b.state), (ClaimState::New, ClaimState::New));
}

/// Groups and ids are free text: braces and colons in them must not make two different
/// (group, id) pairs share a key, nor an id pose as the group's fence counter.
async fn key_syntax_in_names_cannot_collide(store: Arc<dyn DedupStore>) {
    let lease = Duration::from_secs(30);
    let pairs = [
        ("k}:i:b", "c"),
        ("k", "b}:i:c"),
        ("k", "x}:f"),
        ("k}:i:x", "f"),
        ("k%7D", "y"),
        ("k}", "y"),
    ];
    for (group, id) in pairs {
        let c = store
            .claim(group, &ids(&[id]), lease, "w")
            .await
            .unwrap()
            .remove(0);
        assert_eq!(c.state, ClaimState::New, "{group:?}/{id:?} collided");
    }
}

fn redis_cfg(url: String) -> RedisConfig {
    RedisConfig {
        url,
        done_window: DONE_WINDOW,
        ..RedisConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_backend_conforms() {
    suite(Arc::new(MemoryStore::new(DONE_WINDOW))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_conforms() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&redis_cfg(server.url()))
        .await
        .expect("connect");
    suite(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_backend_conforms() {
    let cluster = RedisCluster::start();
    let cfg = RedisConfig {
        cluster_urls: cluster.urls(),
        ..redis_cfg(String::new())
    };
    let store = RedisStore::connect(&cfg).await.expect("connect to cluster");
    suite(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_unavailable_never_a_false_new() {
    let mut server = RedisServer::start();
    let store = RedisStore::connect(&RedisConfig {
        response_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(500),
        ..redis_cfg(server.url())
    })
    .await
    .expect("connect");
    let first = store
        .claim("g", &ids(&["x"]), Duration::from_secs(30), "w")
        .await
        .unwrap();
    assert_eq!(first[0].state, ClaimState::New);
    server.kill();
    for _ in 0..3 {
        match store
            .claim("g", &ids(&["y"]), Duration::from_secs(30), "w")
            .await
        {
            Err(StoreError::Unavailable(msg)) => assert!(!msg.is_empty()),
            other => panic!("expected unavailable, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_redis_settings_are_reported() {
    // The test server keeps nothing on disk; this one also evicts under pressure.
    let loose = RedisServer::start_with(&["--maxmemory-policy", "volatile-lru"]);
    let store = RedisStore::connect(&redis_cfg(loose.url())).await.unwrap();
    let warnings = store.durability_warnings().await;
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("volatile-lru"), "{warnings:?}");
    assert!(warnings[1].contains("persistence is off"), "{warnings:?}");

    let sound = RedisServer::start_with(&["--appendonly", "yes"]);
    let store = RedisStore::connect(&redis_cfg(sound.url())).await.unwrap();
    assert_eq!(store.durability_warnings().await, Vec::<String>::new());
}

/// Redis loses its data (a failover to a replica that had not caught up, a restart without
/// persistence): fences restart, so a new claim can carry the same fence as a stale
/// holder's. The owner still tells them apart, and the stale holder's commit is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_holder_cannot_commit_after_redis_forgets() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&redis_cfg(server.url())).await.unwrap();
    let lease = Duration::from_secs(30);
    let a = store
        .claim("g-forget", &ids(&["m"]), lease, "consumer-a")
        .await
        .unwrap()
        .remove(0);
    server.flushall();
    let b = store
        .claim("g-forget", &ids(&["m"]), lease, "consumer-b")
        .await
        .unwrap()
        .remove(0);
    assert_eq!(b.state, ClaimState::New);
    assert_eq!(
        b.fence, a.fence,
        "the fence counter restarted with the data"
    );
    let late = store
        .commit("g-forget", &[("m".into(), a.fence)], "consumer-a")
        .await
        .unwrap();
    assert!(!late[0].ok, "a stale holder committed: {:?}", late[0]);
    let ok = store
        .commit("g-forget", &[("m".into(), b.fence)], "consumer-b")
        .await
        .unwrap();
    assert!(ok[0].ok, "{:?}", ok[0]);
}

/// Dedup on a real `redis-server` serving TLS only to clients with a certificate from a
/// private CA: the URL comes from a file (a mounted Secret), the store conforms over
/// `rediss://`, and a client that does not trust the server's CA, or has no client
/// certificate, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_mutual_tls_with_a_private_ca() {
    use ballast_security::pki::{Authority, Name};
    let dir = std::env::temp_dir().join(ballast_testkit::deps::unique("ballast-redis-tls"));
    let ca = Authority::create(&dir, "redis CA").unwrap();
    let server_cert = ca
        .issue(
            "redis",
            "redis",
            &[
                Name::Dns("localhost"),
                Name::Ip(std::net::IpAddr::from([127, 0, 0, 1])),
            ],
        )
        .unwrap();
    let client = ca.issue("dedup", "ballast-dedup", &[]).unwrap();
    let tls_port = ballast_testkit::process::free_port().to_string();
    let path = |p: &std::path::Path| p.display().to_string();
    let (cert, key, ca_file) = (
        path(&server_cert.cert_file),
        path(&server_cert.key_file),
        path(&ca.ca_file),
    );
    let _server = RedisServer::start_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca_file,
        "--tls-auth-clients",
        "yes",
    ]);
    let url_file = dir.join("redis-url");
    std::fs::write(&url_file, format!("rediss://127.0.0.1:{tls_port}\n")).unwrap();
    let cfg = RedisConfig {
        url_file: Some(url_file),
        tls_ca_file: Some(ca.ca_file.clone()),
        tls_cert_file: Some(client.cert_file.clone()),
        tls_key_file: Some(client.key_file.clone()),
        ..redis_cfg(String::new())
    };
    let store = RedisStore::connect(&cfg).await.expect("connect over tls");
    suite(Arc::new(store)).await;

    let other = Authority::create(&dir.join("other"), "another CA").unwrap();
    let untrusting = RedisConfig {
        tls_ca_file: Some(other.ca_file.clone()),
        ..cfg.clone()
    };
    assert!(
        RedisStore::connect(&untrusting).await.is_err(),
        "a server certificate from an untrusted CA was accepted"
    );
    let anonymous = RedisConfig {
        tls_cert_file: None,
        tls_key_file: None,
        ..cfg
    };
    assert!(
        RedisStore::connect(&anonymous).await.is_err(),
        "a client without a certificate was served"
    );
    std::fs::remove_dir_all(&dir).ok();
}
