//! One conformance suite for every failover backend: SQLite, a real PostgreSQL server, and
//! SQS as spoken by `moto_server`.

use ballast_failover::envelope::{self, Envelope};
use ballast_failover::{DeadInfo, FailoverQueue, S3OffloadConfig, SqlQueue, SqsConfig, SqsQueue};
use ballast_testkit::deps::{require_postgres, unique, Moto};
use std::sync::Arc;
use std::time::Duration;

/// A fresh queue (and dead-letter queue) on moto_server.
async fn sqs_on(moto: &Moto, prefix: &str) -> SqsQueue {
    sqs_with(moto, prefix, S3OffloadConfig::default()).await
}

async fn sqs_with(moto: &Moto, prefix: &str, offload: S3OffloadConfig) -> SqsQueue {
    let name = unique(prefix);
    // The secret comes from a file, as from a mounted Kubernetes Secret.
    let secret = std::env::temp_dir().join(format!("{name}.secret"));
    std::fs::write(&secret, "test\n").unwrap();
    let q = SqsQueue::connect(
        &SqsConfig {
            secret_access_key: None,
            secret_access_key_file: Some(secret.clone()),
            offload,
            ..SqsConfig::local(moto.endpoint(), &name)
        },
        Duration::from_secs(10),
    )
    .await
    .expect("sqs on moto");
    std::fs::remove_file(&secret).ok();
    q
}

fn body(i: usize) -> Vec<u8> {
    envelope::encode(&Envelope {
        topic: "events".into(),
        value: format!("value-{i}").into_bytes().into(),
        message_id: format!("id-{i}"),
        ..Default::default()
    })
}

async fn suite(q: Arc<dyn FailoverQueue>) {
    let lease = Duration::from_secs(30);
    // Enqueue a batch bigger than one SQS call; every body comes back intact.
    let bodies: Vec<Vec<u8>> = (0..25).map(body).collect();
    let calls = q.api_calls();
    let ids = q.enqueue(&bodies, Duration::ZERO).await.expect("enqueue");
    assert_eq!(ids.len(), 25);
    if q.backend() == "sqs" {
        // 25 bodies go out in 3 SendMessageBatch calls (10 + 10 + 5), not 25 sends.
        assert_eq!(q.api_calls() - calls, 3, "sqs calls for 25 bodies");
    }
    let mut got = Vec::new();
    for _ in 0..20 {
        got.extend(
            q.receive(10, Duration::from_millis(200), lease)
                .await
                .expect("receive"),
        );
        if got.len() >= 25 {
            break;
        }
    }
    assert_eq!(
        got.len(),
        25,
        "{}: every entry is delivered once",
        q.backend()
    );
    let mut values: Vec<String> = got
        .iter()
        .map(|l| envelope::decode(&l.body).expect("decodes").message_id)
        .collect();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), 25);
    assert!(got.iter().all(|l| l.deliveries == 1));
    // Each id the enqueue answered is the id its own body comes back under.
    for l in &got {
        let message_id = envelope::decode(&l.body).expect("decodes").message_id;
        let i: usize = message_id["id-".len()..].parse().expect("id-N");
        assert_eq!(
            l.entry_id,
            ids[i],
            "{}: the id answered for body {i}",
            q.backend()
        );
    }
    // Leased entries are invisible to others.
    let more = q.receive(10, Duration::ZERO, lease).await.unwrap();
    assert!(
        more.is_empty(),
        "{}: leased entries stay hidden",
        q.backend()
    );

    // Ack 20; retry 4 later; dead-letter 1.
    q.ack(&got[..20]).await.expect("ack");
    for l in &got[20..24] {
        q.retry_later(l, None, Duration::from_secs(1))
            .await
            .expect("retry later");
    }
    let dead = &got[24];
    q.dead_letter(
        dead,
        &DeadInfo {
            topic: "events".into(),
            message_id: "id-x".into(),
            attempts: 5,
            reason: "max attempts reached: leader not available".into(),
            first_failed_at_unix_ms: 1,
        },
    )
    .await
    .expect("dead letter");
    assert!(
        q.receive(10, Duration::ZERO, lease)
            .await
            .unwrap()
            .is_empty(),
        "delayed"
    );
    let mut again = Vec::new();
    let end = std::time::Instant::now() + Duration::from_secs(15);
    while again.len() < 4 && std::time::Instant::now() < end {
        again.extend(
            q.receive(10, Duration::from_millis(200), lease)
                .await
                .unwrap(),
        );
    }
    assert_eq!(again.len(), 4, "{}: retried entries come back", q.backend());
    assert!(again.iter().all(|l| l.deliveries == 2), "{again:?}");
    q.ack(&again).await.unwrap();

    // Dead letters: list, redrive, purge.
    let stats = q.stats().await.unwrap();
    assert_eq!(stats.dead_letters, 1, "{stats:?}");
    let (list, _) = q.list_dead_letters(10, "").await.unwrap();
    assert_eq!(list.len(), 1);
    assert!(
        list[0].info.reason.contains("max attempts"),
        "{:?}",
        list[0]
    );
    assert_eq!(q.redrive(&[list[0].id.clone()], false).await.unwrap(), 1);
    let back = q.receive(10, Duration::from_secs(2), lease).await.unwrap();
    assert_eq!(back.len(), 1, "{}: redriven entry is back", q.backend());
    assert_eq!(
        envelope::decode(&back[0].body).unwrap().attempt,
        0,
        "attempts reset"
    );
    q.dead_letter(
        &back[0],
        &DeadInfo {
            topic: "events".into(),
            message_id: "id-x".into(),
            attempts: 1,
            reason: "again".into(),
            first_failed_at_unix_ms: 1,
        },
    )
    .await
    .unwrap();
    assert_eq!(q.purge(&[], true).await.unwrap(), 1);
    let stats = q.stats().await.unwrap();
    assert_eq!(
        (stats.depth, stats.dead_letters),
        (0, 0),
        "{}: {stats:?}",
        q.backend()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_queue_conforms() {
    let dir = std::env::temp_dir().join(unique("ballast-sqlite"));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("q.db").display());
    let q = SqlQueue::connect(&url, "conformance", 4)
        .await
        .expect("sqlite");
    suite(Arc::new(q)).await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_queue_conforms_and_workers_never_share_a_lease() {
    let url = require_postgres();
    let q = Arc::new(
        SqlQueue::connect(&url, &unique("conformance"), 8)
            .await
            .expect("postgres"),
    );
    suite(q.clone()).await;

    // SKIP LOCKED: concurrent receivers split the entries, none twice.
    let n = 200;
    q.enqueue(&(0..n).map(body).collect::<Vec<_>>(), Duration::ZERO)
        .await
        .unwrap();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let q = q.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = q
                        .receive(7, Duration::from_millis(100), Duration::from_secs(30))
                        .await
                        .unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    q.ack(&got).await.unwrap();
                    mine.extend(got.into_iter().map(|l| l.entry_id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!((total, all.len()), (n, n), "every entry once");
}

/// A bulk ack deletes every entry it names under the lease that is still held, across
/// several leases and past one statement's 500 ids, and nothing whose lease has passed to
/// another receiver.
async fn bulk_ack(q: &SqlQueue) {
    let n = 1_100;
    q.enqueue(&(0..n).map(body).collect::<Vec<_>>(), Duration::ZERO)
        .await
        .unwrap();
    let short = Duration::from_millis(300);
    let lost = q.receive(100, Duration::ZERO, short).await.unwrap();
    assert_eq!(lost.len(), 100);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The first 100 come back under new leases; ack them all, plus the stale receipts.
    let mut held = Vec::new();
    while held.len() < n {
        let got = q
            .receive(700, Duration::ZERO, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(!got.is_empty(), "only {} of {n} leased", held.len());
        held.extend(got);
    }
    let (keep, ack) = held.split_at(3);
    let mut receipts = ack.to_vec();
    receipts.extend(lost.iter().cloned());
    q.ack(&receipts).await.expect("bulk ack");
    assert_eq!(
        q.stats().await.unwrap().depth,
        3,
        "only the 3 not acked remain"
    );
    // The stale receipts of the 3 kept entries (in `lost`) did not delete them: they are
    // still leased to their new holder, who deletes them now.
    q.ack(keep).await.unwrap();
    assert_eq!(q.stats().await.unwrap().depth, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_bulk_ack_spans_leases_and_honours_them() {
    let dir = std::env::temp_dir().join(unique("ballast-bulk-ack"));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("q.db").display());
    bulk_ack(&SqlQueue::connect(&url, "bulk", 4).await.unwrap()).await;
    std::fs::remove_dir_all(&dir).ok();
    let pg = SqlQueue::connect(&require_postgres(), &unique("bulk"), 4)
        .await
        .expect("postgres");
    bulk_ack(&pg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_queue_conforms_on_moto() {
    let moto = Moto::start();
    let q = sqs_on(&moto, "ballast").await;
    let q = Arc::new(q);
    suite(q.clone()).await;
}

#[tokio::test]
async fn unreachable_queues_fail_clearly() {
    let err = SqlQueue::connect("postgres://postgres@127.0.0.1:1/none", "q", 1)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unavailable"), "{err}");
    let err = SqlQueue::connect("mysql://x", "q", 1).await.unwrap_err();
    assert!(err.to_string().contains("sqlite: or postgres:"), "{err}");
}

/// Redrive of everything moves the dead-letter store a page at a time (500 per
/// transaction): every entry comes back once, across page boundaries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_all_pages_through_a_large_dead_letter_store() {
    let dir = std::env::temp_dir().join(unique("ballast-redrive"));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("q.db").display());
    let q = SqlQueue::connect(&url, "redrive", 4).await.unwrap();
    let n = 1_234;
    let bodies: Vec<Vec<u8>> = (0..n).map(body).collect();
    q.enqueue(&bodies, Duration::ZERO).await.unwrap();
    let lease = Duration::from_secs(60);
    let mut dead = 0;
    while dead < n {
        let got = q.receive(500, Duration::ZERO, lease).await.unwrap();
        assert!(!got.is_empty(), "only {dead} of {n} leased");
        for l in &got {
            q.dead_letter(
                l,
                &DeadInfo {
                    topic: "events".into(),
                    message_id: format!("d-{}", l.entry_id),
                    attempts: 5,
                    reason: "test".into(),
                    first_failed_at_unix_ms: 1,
                },
            )
            .await
            .unwrap();
        }
        dead += got.len();
    }
    assert_eq!(q.stats().await.unwrap().dead_letters, n as u64);
    assert_eq!(q.redrive(&[], true).await.unwrap(), n as u64);
    let stats = q.stats().await.unwrap();
    assert_eq!(
        (stats.dead_letters, stats.depth),
        (0, n as u64),
        "{stats:?}"
    );
    let mut ids = std::collections::HashSet::new();
    loop {
        let got = q.receive(500, Duration::ZERO, lease).await.unwrap();
        if got.is_empty() {
            break;
        }
        for l in got {
            assert!(ids.insert(envelope::decode(&l.body).unwrap().message_id));
        }
    }
    assert_eq!(ids.len(), n, "every entry back once");
    std::fs::remove_dir_all(&dir).ok();
}

/// SQS redrive and purge read the dead-letter queue a page at a time (100 dead letters,
/// each hidden while read): a store of 230 is picked from by id and purged whole. A
/// redrive by id shows the dead letters it passed over again at once, so a `dlq list` or
/// a purge right after it still sees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_redrive_and_purge_page_through_a_large_dead_letter_store() {
    let moto = Moto::start();
    let q = sqs_on(&moto, "dead-pages").await;
    let n = 230;
    let bodies: Vec<Vec<u8>> = (0..n).map(body).collect();
    q.enqueue(&bodies, Duration::ZERO).await.unwrap();
    let mut dead = 0;
    while dead < n {
        let got = q
            .receive(10, Duration::from_secs(1), Duration::from_secs(60))
            .await
            .unwrap();
        assert!(!got.is_empty(), "only {dead} of {n} leased");
        for l in &got {
            let info = DeadInfo {
                topic: "events".into(),
                message_id: format!("d-{}", l.entry_id),
                attempts: 5,
                reason: "test".into(),
                first_failed_at_unix_ms: 1,
            };
            q.dead_letter(l, &info).await.unwrap();
        }
        dead += got.len();
    }
    let (listed, _) = q.list_dead_letters(100, "").await.unwrap();
    assert!(listed.len() >= 2, "listed {}", listed.len());
    let picked = vec![listed[0].id.clone(), listed[listed.len() - 1].id.clone()];
    // The listing hid what it read for a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(q.redrive(&picked, false).await.unwrap(), 2);
    let (after, _) = q.list_dead_letters(100, "").await.unwrap();
    assert!(
        !after.is_empty(),
        "passed-over dead letters are listed again"
    );
    assert!(
        after.iter().all(|d| !picked.contains(&d.id)),
        "redriven ones left the store"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Every dead letter the redrive read and passed over is visible again: a purge of
    // everything right after finds all of them.
    assert_eq!(q.purge(&[], true).await.unwrap(), (n - 2) as u64);
    let (left, _) = q.list_dead_letters(100, "").await.unwrap();
    assert!(left.is_empty(), "purged whole: {} left", left.len());
    let back = q
        .receive(10, Duration::from_secs(1), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(back.len(), 2, "the two redriven entries are queued again");
    for l in &back {
        assert_eq!(
            envelope::decode(&l.body).unwrap().attempt,
            0,
            "attempts reset"
        );
    }
}

/// SQS bodies that did not come from Ballast keep their bytes (so they are dead-lettered
/// as they came, never emptied), and a delete SQS refuses is an error, not silence.
/// A plain SQS client on moto, as another producer or an operator's tool would use.
async fn raw_sqs(moto: &Moto) -> aws_sdk_sqs::Client {
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(moto.endpoint())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .load()
        .await;
    aws_sdk_sqs::Client::new(&shared)
}

async fn retention_secs(raw: &aws_sdk_sqs::Client, url: &str) -> String {
    let attrs = raw
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::MessageRetentionPeriod)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default();
    attrs[&aws_sdk_sqs::types::QueueAttributeName::MessageRetentionPeriod].clone()
}

/// SQS deletes a message at its queue's retention, delivered or not: both queues are
/// created with the longest (14 days), and a queue kept for less than
/// `failover.sqs.min_retention` is refused at start, naming it and its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_queues_keep_messages_fourteen_days_and_shorter_ones_are_refused() {
    let moto = Moto::start();
    let raw = raw_sqs(&moto).await;
    let q = sqs_on(&moto, "ballast-ret").await;
    let stats = q.stats().await.unwrap();
    assert_eq!(stats.retention, Some(Duration::from_secs(1_209_600)));
    assert_eq!(
        stats.dead_letter_retention,
        Some(Duration::from_secs(1_209_600))
    );
    assert_eq!(retention_secs(&raw, q.queue()).await, "1209600");

    // A queue made elsewhere with SQS's default of 4 days.
    let name = unique("ballast-short");
    let url = raw
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    assert_eq!(retention_secs(&raw, &url).await, "345600");
    for create_queues in [true, false] {
        let cfg = SqsConfig {
            create_queues,
            ..SqsConfig::local(moto.endpoint(), &name)
        };
        let err = SqsQueue::connect(&cfg, Duration::from_secs(5))
            .await
            .expect_err("4 days is under 14")
            .to_string();
        assert!(
            err.contains("failover.sqs.queue") && err.contains(&name) && err.contains("345600 s"),
            "{err}"
        );
    }
    // The dead-letter queue is checked as well.
    let main = unique("ballast-main");
    let short_dlq = unique("ballast-short-dlq");
    raw.create_queue()
        .queue_name(&short_dlq)
        .send()
        .await
        .unwrap();
    let err = SqsQueue::connect(
        &SqsConfig {
            dlq: short_dlq.clone(),
            ..SqsConfig::local(moto.endpoint(), &main)
        },
        Duration::from_secs(5),
    )
    .await
    .expect_err("the dead-letter queue keeps 4 days")
    .to_string();
    assert!(
        err.contains("failover.sqs.dlq") && err.contains(&short_dlq) && err.contains("345600 s"),
        "{err}"
    );
    // An operator who accepts 4 days says so.
    let q = SqsQueue::connect(
        &SqsConfig {
            min_retention: Duration::from_secs(4 * 86_400),
            ..SqsConfig::local(moto.endpoint(), &name)
        },
        Duration::from_secs(5),
    )
    .await
    .expect("4 days allowed");
    assert_eq!(
        q.stats().await.unwrap().retention,
        Some(Duration::from_secs(345_600))
    );
}

/// SQS reports no oldest age through its API: the queue reports the oldest send time it
/// has received, unknown (never 0) while it holds entries it has not received, and 0 when
/// empty. Dead letters likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_reports_the_oldest_age_it_has_seen_or_none() {
    let moto = Moto::start();
    let q = sqs_on(&moto, "ballast-age").await;
    let s = q.stats().await.unwrap();
    assert_eq!(
        (s.oldest_age_ms, s.dead_letter_oldest_age_ms),
        (Some(0), Some(0))
    );
    q.enqueue(&[body(1)], Duration::ZERO).await.unwrap();
    let s = q.stats().await.unwrap();
    assert_eq!(
        (s.depth, s.oldest_age_ms),
        (1, None),
        "unknown until received"
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let got = q
        .receive(10, Duration::from_secs(1), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    let age = q.stats().await.unwrap().oldest_age_ms.expect("seen");
    assert!((1_000..60_000).contains(&age), "{age}");
    // Held back (the retention clock goes on): still known.
    q.retry_later(&got[0], None, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(q.stats().await.unwrap().oldest_age_ms.unwrap() >= age);

    // A dead letter's age is known from when it was moved.
    q.enqueue(&[body(2)], Duration::ZERO).await.unwrap();
    let got = q
        .receive(10, Duration::from_secs(1), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "the held entry stays hidden");
    q.dead_letter(
        &got[0],
        &DeadInfo {
            topic: "events".into(),
            message_id: "id-2".into(),
            attempts: 5,
            reason: "test".into(),
            first_failed_at_unix_ms: 1,
        },
    )
    .await
    .unwrap();
    let s = q.stats().await.unwrap();
    assert_eq!(s.dead_letters, 1);
    assert!(
        s.dead_letter_oldest_age_ms.is_some_and(|a| a < 60_000),
        "{s:?}"
    );
    assert!(s.oldest_age_ms.is_some_and(|a| a >= age), "{s:?}");
    q.purge(&[], true).await.unwrap();
    assert_eq!(q.stats().await.unwrap().dead_letter_oldest_age_ms, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_keeps_foreign_bodies_and_reports_refused_deletes() {
    let moto = Moto::start();
    let q = sqs_on(&moto, "ballast-raw").await;
    // Another producer writes a body that is not base64.
    raw_sqs(&moto)
        .await
        .send_message()
        .queue_url(q.queue())
        .message_body("not base64: {json?}")
        .send()
        .await
        .unwrap();
    q.enqueue(&[body(1)], Duration::ZERO).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..10 {
        got.extend(
            q.receive(10, Duration::from_millis(200), Duration::from_secs(30))
                .await
                .unwrap(),
        );
        if got.len() >= 2 {
            break;
        }
    }
    assert_eq!(got.len(), 2);
    let foreign = got
        .iter()
        .find(|l| envelope::decode(&l.body).is_err())
        .expect("the foreign body");
    assert_eq!(foreign.body, b"not base64: {json?}");

    // One real receipt and one SQS does not know.
    let mut bogus = foreign.clone();
    bogus.receipt = "no-such-receipt".into();
    let ours = got
        .iter()
        .find(|l| envelope::decode(&l.body).is_ok())
        .unwrap()
        .clone();
    let err = q.ack(&[ours, bogus]).await.expect_err("a refused delete");
    assert!(err.to_string().contains("did not delete 1 entry"), "{err}");
}

/// The extended-client pattern on moto (SQS and S3): a body over the threshold goes to S3
/// and comes back whole; its object goes when its message goes (retry with a new body, ack,
/// dead-letter then purge); a pointer whose object is gone is dead-lettered as it came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_offloads_large_bodies_to_s3_and_deletes_them_with_their_messages() {
    let moto = Moto::start();
    let bucket = unique("ballast-payloads").to_lowercase();
    let q = sqs_with(
        &moto,
        "ballast-big",
        S3OffloadConfig {
            bucket: bucket.clone(),
            create_bucket: true,
            ..S3OffloadConfig::default()
        },
    )
    .await;
    let lease = Duration::from_secs(30);
    let big = envelope::encode(&Envelope {
        topic: "events".into(),
        value: (0..1_048_576u32).map(|i| (i % 251) as u8).collect(),
        message_id: "big".into(),
        ..Default::default()
    });
    let receive_all = |n: usize| {
        let q = &q;
        async move {
            let mut got = Vec::new();
            for _ in 0..20 {
                got.extend(
                    q.receive(10, Duration::from_millis(200), lease)
                        .await
                        .unwrap(),
                );
                if got.len() >= n {
                    break;
                }
            }
            assert_eq!(got.len(), n, "entries back");
            got
        }
    };

    // One large body and one small: only the large one is an object.
    q.enqueue(&[big.clone(), body(1)], Duration::ZERO)
        .await
        .expect("a 1 MiB body is enqueued through S3");
    let keys = moto.s3_keys(&bucket).await.unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let got = receive_all(2).await;
    let large = got
        .iter()
        .find(|l| l.body.len() > 1_000_000)
        .expect("big back");
    assert_eq!(large.body, big, "the body comes back byte for byte");
    let small = got.iter().find(|l| l.body.len() < 1000).unwrap();
    assert_eq!(small.offloaded, None);

    // A retry with a new body: a new object replaces the old one.
    let mut env = envelope::decode(&large.body).unwrap();
    env.attempt = 1;
    q.retry_later(large, Some(envelope::encode(&env)), Duration::ZERO)
        .await
        .unwrap();
    let after_retry = moto.s3_keys(&bucket).await.unwrap();
    assert_eq!(after_retry.len(), 1, "{after_retry:?}");
    assert_ne!(after_retry, keys, "the old object is gone");
    q.ack(std::slice::from_ref(small)).await.unwrap();

    // Dead-lettered, listed, then purged: the object goes with the dead letter.
    let again = receive_all(1).await;
    assert_eq!(envelope::decode(&again[0].body).unwrap().attempt, 1);
    let info = DeadInfo {
        topic: "events".into(),
        message_id: "big".into(),
        attempts: 2,
        reason: "max attempts".into(),
        first_failed_at_unix_ms: 1,
    };
    q.dead_letter(&again[0], &info).await.unwrap();
    assert_eq!(moto.s3_keys(&bucket).await.unwrap().len(), 1);
    let (dead, _) = q.list_dead_letters(10, "").await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].info.message_id, "big");
    assert!(dead[0].body_bytes > 1_048_576, "{:?}", dead[0]);
    assert_eq!(q.purge(&[], true).await.unwrap(), 1);
    assert_eq!(moto.s3_keys(&bucket).await.unwrap(), Vec::<String>::new());

    // Acknowledged: the object goes with the message.
    q.enqueue(std::slice::from_ref(&big), Duration::ZERO)
        .await
        .unwrap();
    let got = receive_all(1).await;
    assert_eq!(got[0].body, big);
    q.ack(&got).await.unwrap();
    assert_eq!(moto.s3_keys(&bucket).await.unwrap(), Vec::<String>::new());

    // The object is gone (a lifecycle rule, an operator): the entry comes back with the
    // pointer as its bytes, which fails to decode and is dead-lettered as it came.
    q.enqueue(std::slice::from_ref(&big), Duration::ZERO)
        .await
        .unwrap();
    let key = moto.s3_keys(&bucket).await.unwrap().remove(0);
    moto.s3()
        .await
        .delete_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    let got = receive_all(1).await;
    assert!(envelope::decode(&got[0].body).is_err());
    let pointer = String::from_utf8(got[0].body.clone()).unwrap();
    assert!(
        pointer.contains("PayloadS3Pointer") && pointer.contains(&key),
        "{pointer}"
    );
}

/// The PostgreSQL queue over TLS with `sslmode=verify-full`, against a real cluster that
/// accepts only TLS: it conforms; a server certificate from another CA, or a name the
/// certificate does not carry, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_queue_over_tls_with_verify_full() {
    use ballast_security::pki::{Authority, Name};
    let dir = std::env::temp_dir().join(unique("ballast-pg-pki"));
    let ca = Authority::create(&dir, "postgres CA").unwrap();
    let server = ca
        .issue("postgres", "postgres", &[Name::Dns("localhost")])
        .unwrap();
    let pg = ballast_testkit::postgres::PostgresTls::start(&server.cert_file, &server.key_file)
        .expect("a postgres cluster with ssl=on");
    let url = pg.url("localhost", "verify-full", &ca.ca_file);
    let q = SqlQueue::connect(&url, &unique("tls"), 2)
        .await
        .expect("verify-full against our CA");
    suite(Arc::new(q)).await;

    let other = Authority::create(&dir.join("other"), "another CA").unwrap();
    let untrusted = pg.url("localhost", "verify-full", &other.ca_file);
    assert!(
        SqlQueue::connect(&untrusted, &unique("tls"), 1)
            .await
            .is_err(),
        "a server certificate from an untrusted CA was accepted"
    );
    let wrong_name = pg.url("127.0.0.1", "verify-full", &ca.ca_file);
    assert!(
        SqlQueue::connect(&wrong_name, &unique("tls"), 1)
            .await
            .is_err(),
        "verify-full accepted a name the certificate does not carry"
    );
    let plaintext = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
        pg.port
    );
    assert!(
        SqlQueue::connect(&plaintext, &unique("tls"), 1)
            .await
            .is_err(),
        "the cluster takes TLS only"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// An operator's writes (dead-lettering, redrive, purge) share a SQLite file with a worker
/// that drains it from another connection, as the embedded stack does. Each write
/// transaction takes the write lock before it reads, so none of them fails with "database
/// is locked" however the two interleave: a deferred transaction that read first could not
/// upgrade after the worker's commit, and `busy_timeout` does not cover that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_admin_writes_never_fail_under_a_draining_worker() {
    let dir = std::env::temp_dir().join(unique("ballast-sqlite-locks"));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("q.db").display());
    let worker = SqlQueue::connect(&url, "locks", 4).await.unwrap();
    let admin = SqlQueue::connect(&url, "locks", 4).await.unwrap();
    let lease = Duration::from_secs(60);
    let rounds = 150;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The worker: enqueue, lease, ack or retry later, as fast as it can.
    let drain = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut writes = 0u64;
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let bodies: Vec<Vec<u8>> = (i..i + 4).map(body).collect();
                i += 4;
                worker
                    .enqueue(&bodies, Duration::ZERO)
                    .await
                    .expect("worker enqueue");
                let got = worker
                    .receive(2, Duration::ZERO, lease)
                    .await
                    .expect("receive");
                if let Some((first, rest)) = got.split_first() {
                    worker
                        .retry_later(first, None, Duration::ZERO)
                        .await
                        .expect("retry later");
                    worker.ack(rest).await.expect("ack");
                }
                writes += 3;
            }
            writes
        })
    };
    let info = |l: &ballast_failover::Leased| DeadInfo {
        topic: "events".into(),
        message_id: format!("d-{}", l.entry_id),
        attempts: 5,
        reason: "test".into(),
        first_failed_at_unix_ms: 1,
    };
    let (mut redriven, mut purged) = (0, 0);
    for round in 0..rounds {
        let got = admin
            .receive(3, Duration::ZERO, lease)
            .await
            .expect("admin receive");
        for l in &got {
            admin
                .dead_letter(l, &info(l))
                .await
                .unwrap_or_else(|e| panic!("round {round}: dead letter: {e}"));
        }
        let (dead, _) = admin.list_dead_letters(10, "").await.expect("list");
        if round % 2 == 0 {
            let ids: Vec<String> = dead.iter().take(2).map(|d| d.id.clone()).collect();
            redriven += admin
                .redrive(&ids, false)
                .await
                .unwrap_or_else(|e| panic!("round {round}: redrive by id: {e}"));
            redriven += admin
                .redrive(&[], true)
                .await
                .unwrap_or_else(|e| panic!("round {round}: redrive all: {e}"));
        } else {
            let ids: Vec<String> = dead.iter().take(1).map(|d| d.id.clone()).collect();
            purged += admin
                .purge(&ids, false)
                .await
                .unwrap_or_else(|e| panic!("round {round}: purge: {e}"));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = drain.await.expect("the worker never failed");
    assert!(writes > 0, "the worker wrote while the operator did");
    assert!(
        redriven > 0 && purged > 0,
        "redrive ({redriven}) and purge ({purged}) both moved rows"
    );
    std::fs::remove_dir_all(&dir).ok();
}
