//! The ingest gateway over gRPC against librdkafka's mock cluster (real Kafka protocol
//! over TCP), checked by reading back from Kafka with a real consumer.

use ballast_balancer::{partition_for_key, BreakerState};
use ballast_dev::GatewayStack;
use ballast_proto::common::v1::Code;
use ballast_proto::ingest::v1 as pb;
use ballast_testkit::{consume_all, kafka_ack, record, record_error};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 6;

/// Partitions of `topic` led by `broker`.
fn led_by(stack: &GatewayStack, topic: &str, broker: i32) -> Vec<i32> {
    (0..PARTITIONS)
        .filter(|p| stack.leader_of(topic, *p) == Some(broker))
        .collect()
}

/// A broker that leads at least one partition.
fn busy_broker(stack: &GatewayStack, topic: &str) -> (i32, Vec<i32>) {
    (1..=3)
        .map(|b| (b, led_by(stack, topic, b)))
        .find(|(_, ps)| !ps.is_empty())
        .expect("some broker leads a partition")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_land_with_message_id_and_keys_on_their_murmur2_partition() -> anyhow::Result<()> {
    let stack = GatewayStack::start(&[("land", PARTITIONS)], |_| {}).await?;
    let mut records = Vec::new();
    for i in 0..30 {
        records.push(record(
            "land",
            Some(&format!("user-{i}")),
            &format!("keyed-{i}"),
        ));
    }
    for i in 0..10 {
        let mut r = record("land", None, &format!("unkeyed-{i}"));
        if i % 2 == 0 {
            r.message_id = format!("client-id-{i}");
        }
        records.push(r);
    }
    let results = stack.produce(records.clone()).await?;
    assert_eq!(results.len(), 40, "one result per record");
    for (i, r) in results.iter().enumerate() {
        assert!(kafka_ack(r).is_some(), "record {i} not acked: {r:?}");
        assert!(!r.message_id.is_empty());
    }
    assert_eq!(results[30].message_id, "client-id-0", "client ids are kept");
    assert_eq!(
        uuid_version(&results[31].message_id),
        Some(7),
        "assigned ids are UUIDv7"
    );

    let landed = consume_all(
        stack.cluster.bootstrap_servers(),
        "land",
        40,
        Duration::from_secs(15),
    )?;
    assert_eq!(landed.len(), 40);
    let by_id: HashMap<_, _> = landed
        .iter()
        .map(|l| {
            (
                l.message_id.clone().expect("every record has the header"),
                l,
            )
        })
        .collect();
    assert_eq!(by_id.len(), 40, "message ids are unique");
    for (rec, res) in records.iter().zip(&results) {
        let l = by_id[&res.message_id];
        let ack = kafka_ack(res).unwrap();
        assert_eq!((l.partition, l.offset), (ack.partition, ack.offset));
        assert_eq!(l.value, rec.value);
        if let Some(key) = &rec.key {
            assert_eq!(l.partition, partition_for_key(key, PARTITIONS as usize));
            assert_eq!(l.key.as_deref(), Some(&key[..]));
        }
    }
    Ok(())
}

fn uuid_version(s: &str) -> Option<u8> {
    // xxxxxxxx-xxxx-Vxxx-...
    s.chars().nth(14)?.to_digit(16).map(|d| d as u8)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_reroutes_unkeyed_records_within_deadline_and_broker_up_closes_after_probe(
) -> anyhow::Result<()> {
    // Slow metadata refresh: the breakers must open from write failures alone. A long
    // open period keeps them open while the rounds run.
    // No stickiness: each record picks afresh, so every partition of the dead broker is
    // tried first by some record (a sticky run could stay on a healthy one throughout).
    let stack = GatewayStack::start(&[("down", PARTITIONS)], |c| {
        c.kafka.metadata_refresh_interval = Duration::from_secs(3600);
        c.breaker.open_base = Duration::from_secs(4);
        c.sticky_records = 1;
    })
    .await?;
    let (broker, dead) = busy_broker(&stack, "down");
    stack.cluster.broker_down(broker).await?;

    let write_timeout = Duration::from_secs(1);
    let mut worst = Duration::ZERO;
    let mut landed_on = HashMap::new();
    let all_open = |stack: &GatewayStack| {
        let status = stack.handle.partition_status("down");
        dead.iter()
            .all(|p| status[*p as usize].state == BreakerState::Open)
    };
    let mut rounds = 0;
    while rounds < 3 || !all_open(&stack) {
        assert!(
            rounds < 8,
            "breakers of {dead:?} did not all open: {:?}",
            stack.handle.partition_status("down")
        );
        let started = Instant::now();
        let batch = (0..24)
            .map(|i| record("down", None, &format!("r{rounds}-{i}")))
            .collect();
        let results = stack.produce(batch).await?;
        worst = worst.max(started.elapsed());
        for r in &results {
            let ack = kafka_ack(r).unwrap_or_else(|| panic!("not acked: {r:?}"));
            *landed_on.entry(ack.partition).or_insert(0) += 1;
        }
        rounds += 1;
    }
    assert!(
        worst <= write_timeout + Duration::from_millis(200),
        "a batch took {worst:?}, over write_timeout + 200ms"
    );
    for p in &dead {
        assert!(
            !landed_on.contains_key(p),
            "record acked on dead partition {p}"
        );
    }

    // Recovery: after broker_up, a probe closes each breaker.
    stack.cluster.broker_up(broker).await?;
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let status = stack.handle.partition_status("down");
        if dead
            .iter()
            .all(|p| status[*p as usize].state == BreakerState::Closed)
        {
            break;
        }
        assert!(Instant::now() < end, "breakers did not close: {status:?}");
        let results = stack
            .produce(
                (0..6)
                    .map(|i| record("down", None, &format!("probe-{i}")))
                    .collect(),
            )
            .await?;
        assert!(
            results.iter().all(|r| kafka_ack(r).is_some()),
            "{results:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaderless_partition_is_avoided_before_any_record_fails() -> anyhow::Result<()> {
    let stack = GatewayStack::start(&[("lless", PARTITIONS)], |_| {}).await?;
    let target = 2;
    let old_leader = stack.leader_of("lless", target).expect("has a leader");
    stack
        .cluster
        .partition_leader("lless", target, None)
        .await?;
    stack.handle.refresh_metadata().await?;
    assert_eq!(
        stack.handle.partition_status("lless")[target as usize].state,
        BreakerState::Open
    );

    let started = Instant::now();
    let results = stack
        .produce(
            (0..30)
                .map(|i| record("lless", None, &format!("u{i}")))
                .collect(),
        )
        .await?;
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "no record waited on the leaderless partition"
    );
    for r in &results {
        let ack = kafka_ack(r).unwrap_or_else(|| panic!("not acked: {r:?}"));
        assert_ne!(ack.partition, target);
    }

    // A STRICT key whose partition is leaderless gets a retryable UNAVAILABLE;
    // a PREFERRED one moves.
    let key = (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| partition_for_key(k.as_bytes(), PARTITIONS as usize) == target)
        .unwrap();
    let strict = record("lless", Some(&key), "strict");
    let mut preferred = record("lless", Some(&key), "preferred");
    preferred.key_policy = pb::KeyPolicy::Preferred as i32;
    let results = stack.produce(vec![strict, preferred]).await?;
    let err = record_error(&results[0]).expect("strict key is refused");
    assert_eq!(err.code, Code::Unavailable as i32);
    assert!(err.retryable);
    let moved = kafka_ack(&results[1]).expect("preferred key is acked");
    assert_ne!(moved.partition, target);

    // The leader returns: half-open, then closed after a probe.
    stack
        .cluster
        .partition_leader("lless", target, Some(old_leader))
        .await?;
    stack.handle.refresh_metadata().await?;
    assert_eq!(
        stack.handle.partition_status("lless")[target as usize].state,
        BreakerState::HalfOpen
    );
    let mut probe = record("lless", None, "probe");
    probe.partition = Some(target);
    let results = stack.produce(vec![probe]).await?;
    assert_eq!(kafka_ack(&results[0]).map(|a| a.partition), Some(target));
    assert_eq!(
        stack.handle.partition_status("lless")[target as usize].state,
        BreakerState::Closed
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inflight_budget_refuses_excess_records_and_keeps_the_rest() -> anyhow::Result<()> {
    let stack = GatewayStack::start(&[("budget", PARTITIONS)], |c| {
        c.limits.inflight_bytes = 20 * 1024;
        c.limits.max_record_bytes = 4 * 1024;
    })
    .await?;
    let value = "x".repeat(3 * 1024);
    let results = stack
        .produce((0..10).map(|_| record("budget", None, &value)).collect())
        .await?;
    let acked = results.iter().filter(|r| kafka_ack(r).is_some()).count();
    let exhausted: Vec<_> = results.iter().filter_map(record_error).collect();
    assert_eq!(
        acked, 3,
        "three 3 KiB records, each counted twice (its copy and librdkafka's), fit 20 KiB"
    );
    assert_eq!(exhausted.len(), 7);
    for e in exhausted {
        assert_eq!(e.code, Code::ResourceExhausted as i32);
        assert!(e.retryable);
        assert!(e.message.contains("limits.inflight_bytes"), "{}", e.message);
    }
    // The budget is returned: the same batch size works again in small pieces.
    for _ in 0..3 {
        let results = stack.produce(vec![record("budget", None, &value)]).await?;
        assert!(kafka_ack(&results[0]).is_some());
    }
    let metrics = stack.metrics_text().await?;
    assert!(
        metrics.contains("ballast_gateway_inflight_bytes 0"),
        "{metrics}"
    );
    // The budget itself is exported, so saturation is a ratio of two series.
    assert!(
        metrics.contains("ballast_gateway_inflight_bytes_limit 20480"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_fail_alone_with_clear_codes() -> anyhow::Result<()> {
    let stack = GatewayStack::start(&[("good", 3)], |c| {
        c.limits.max_record_bytes = 1024;
    })
    .await?;
    let mut bad_partition = record("good", None, "p");
    bad_partition.partition = Some(99);
    let mut reserved = record("good", None, "h");
    reserved.headers.push(pb::Header {
        key: "ballast-message-id".into(),
        value: b"x".to_vec().into(),
    });
    let mut bad_policy = record("good", Some("k"), "policy");
    bad_policy.key_policy = 7;
    let mut bad_id = record("good", None, "id");
    bad_id.message_id = "line\nbreak".into();
    let cases: Vec<(pb::Record, Option<Code>)> = vec![
        (record("good", None, "ok-1"), None),
        (record("", None, "empty topic"), Some(Code::InvalidArgument)),
        (
            record("bad topic!", None, "chars"),
            Some(Code::InvalidArgument),
        ),
        (
            record("no-such-topic", None, "unknown"),
            Some(Code::NotFound),
        ),
        (
            record("good", None, &"x".repeat(2000)),
            Some(Code::RecordTooLarge),
        ),
        (bad_partition, Some(Code::InvalidArgument)),
        (reserved, Some(Code::InvalidArgument)),
        (bad_policy, Some(Code::InvalidArgument)),
        (bad_id, Some(Code::InvalidArgument)),
        (record("good", Some("k"), "ok-2"), None),
    ];
    let (records, expected): (Vec<_>, Vec<_>) = cases.into_iter().unzip();
    let results = stack.produce(records).await?;
    assert_eq!(results.len(), expected.len());
    for (i, (r, want)) in results.iter().zip(&expected).enumerate() {
        match want {
            None => assert!(kafka_ack(r).is_some(), "case {i}: {r:?}"),
            Some(code) => {
                let e = record_error(r).unwrap_or_else(|| panic!("case {i} accepted: {r:?}"));
                assert_eq!(e.code, *code as i32, "case {i}: {e:?}");
                assert!(!e.retryable, "case {i}: bad input is not retryable");
                assert!(!e.message.is_empty());
            }
        }
    }
    let landed = consume_all(
        stack.cluster.bootstrap_servers(),
        "good",
        2,
        Duration::from_secs(10),
    )?;
    let values: Vec<_> = landed
        .iter()
        .map(|l| String::from_utf8_lossy(&l.value).into_owned())
        .collect();
    assert_eq!(landed.len(), 2, "only the good records landed: {values:?}");

    // Over the per-request limit: the first N go on, the rest fail alone.
    let stack2 =
        GatewayStack::start(&[("good", 3)], |c| c.limits.max_records_per_request = 5).await?;
    let results = stack2
        .produce(
            (0..7)
                .map(|i| record("good", None, &format!("{i}")))
                .collect(),
        )
        .await?;
    assert_eq!(results.iter().filter(|r| kafka_ack(r).is_some()).count(), 5);
    for r in &results[5..] {
        assert_eq!(
            record_error(r).map(|e| e.code),
            Some(Code::ResourceExhausted as i32)
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_stream_answers_each_batch_in_order() -> anyhow::Result<()> {
    let stack = GatewayStack::start(&[("stream", PARTITIONS)], |_| {}).await?;
    let mut client = stack.client().await?;
    let batches: Vec<pb::ProduceRequest> = (0..5)
        .map(|b| pb::ProduceRequest {
            records: (0..=b)
                .map(|i| {
                    let mut r = record("stream", None, "v");
                    r.message_id = format!("b{b}-r{i}");
                    r
                })
                .collect(),
        })
        .collect();
    let mut responses = client
        .produce_stream(tokio_stream::iter(batches))
        .await?
        .into_inner();
    let mut b = 0;
    while let Some(resp) = responses.message().await? {
        assert_eq!(resp.results.len(), b + 1);
        for (i, r) in resp.results.iter().enumerate() {
            assert_eq!(r.message_id, format!("b{b}-r{i}"));
            assert!(kafka_ack(r).is_some());
        }
        b += 1;
    }
    assert_eq!(b, 5);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_requests_and_reports_metrics() -> anyhow::Result<()> {
    let mut stack = GatewayStack::start(&[("drain", PARTITIONS)], |_| {}).await?;
    // Slow every broker so a batch is still in flight when shutdown starts.
    stack
        .cluster
        .broker_rtt(-1, Duration::from_millis(300))
        .await?;
    let mut client = stack.client().await?;
    let in_flight = tokio::spawn(async move {
        client
            .produce(pb::ProduceRequest {
                records: (0..20)
                    .map(|i| record("drain", None, &format!("{i}")))
                    .collect(),
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let metrics = stack.metrics_text().await?;
    // Breakers: totals by state; no per-partition series while they are all closed.
    assert!(
        metrics.contains(&format!(
            "ballast_gateway_breakers{{state=\"closed\"}} {PARTITIONS}"
        )),
        "{metrics}"
    );
    assert!(
        !metrics.contains("ballast_gateway_breaker_state{"),
        "{metrics}"
    );
    stack.shutdown().await?;
    let results = in_flight.await??.into_inner().results;
    assert_eq!(
        results.iter().filter(|r| kafka_ack(r).is_some()).count(),
        20,
        "{results:?}"
    );
    assert!(
        stack.client().await.is_err() || stack.produce(vec![]).await.is_err(),
        "no new work after shutdown"
    );
    Ok(())
}

/// Between full refreshes the gateway asks only for the topics it writes: a leader move on
/// a topic in use shows within a few refreshes, the other topics keep the view of the last
/// full refresh, and each periodic refresh reads a fraction of a full answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_metadata_refreshes_ask_only_for_topics_in_use() -> anyhow::Result<()> {
    let topics: Vec<(String, i32)> = (0..40).map(|i| (format!("t{i}"), 6)).collect();
    let specs: Vec<(&str, i32)> = topics.iter().map(|(n, p)| (n.as_str(), *p)).collect();
    let stack = GatewayStack::start(&specs, |c| {
        c.kafka.metadata_refresh_interval = Duration::from_millis(200);
        c.kafka.metadata_full_refresh_interval = Duration::from_secs(3600);
    })
    .await?;
    let results = stack.produce(vec![record("t0", None, "in use")]).await?;
    assert!(kafka_ack(&results[0]).is_some(), "{results:?}");

    let bytes = |text: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix("ballast_gateway_metadata_bytes_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    // One explicit (full) refresh: what a full answer costs.
    let before = bytes(&stack.metrics_text().await?);
    stack.handle.refresh_metadata().await?;
    let full = bytes(&stack.metrics_text().await?) - before;

    // Periodic refreshes for 1 s (about five of them).
    let before = bytes(&stack.metrics_text().await?);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let periodic = bytes(&stack.metrics_text().await?) - before;
    assert!(
        periodic > 0.0 && periodic < full,
        "five sparse refreshes read {periodic} bytes; one full answer is {full}"
    );

    // A leader move on the topic in use is seen by the sparse refreshes.
    let old = stack.leader_of("t0", 0).expect("a leader");
    let new = if old == 1 { 2 } else { 1 };
    stack.cluster.partition_leader("t0", 0, Some(new)).await?;
    let end = Instant::now() + Duration::from_secs(5);
    while stack.leader_of("t0", 0) != Some(new) {
        assert!(Instant::now() < end, "the leader move on t0 was not seen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every topic is still known, from the last full refresh.
    let md = stack.handle.metadata();
    for (name, _) in &topics {
        assert!(md.topic(name).is_some(), "{name} dropped from the view");
    }
    Ok(())
}

/// A request is written as a batch: its records are handed to Kafka in request order, so
/// the records of one key land in that order, and a bad record among them fails alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_keeps_request_order_per_key_and_a_bad_record_fails_alone() -> anyhow::Result<()> {
    let stack = GatewayStack::start(&[("order", PARTITIONS)], |_| {}).await?;
    let mut records = Vec::new();
    for i in 0..150 {
        records.push(record("order", Some("one-key"), &format!("keyed-{i}")));
        if i % 10 == 0 {
            records.push(record("order", None, &format!("unkeyed-{i}")));
        }
    }
    let bad_at = 77;
    records.insert(bad_at, record("bad topic", Some("one-key"), "bad"));
    let results = stack.produce(records.clone()).await?;
    assert_eq!(results.len(), records.len(), "one result per record");
    let bad = record_error(&results[bad_at]).expect("the bad record fails");
    assert_eq!(bad.code, Code::InvalidArgument as i32, "{bad:?}");
    let mut keyed = Vec::new();
    for (i, (rec, res)) in records.iter().zip(&results).enumerate() {
        if i == bad_at {
            continue;
        }
        let ack = kafka_ack(res).unwrap_or_else(|| panic!("record {i} not acked: {res:?}"));
        if rec.key.is_some() {
            keyed.push((ack.partition, ack.offset));
        }
    }
    assert_eq!(keyed.len(), 150);
    let partition = partition_for_key(b"one-key", PARTITIONS as usize);
    assert!(keyed.iter().all(|(p, _)| *p == partition), "{keyed:?}");
    assert!(
        keyed.windows(2).all(|w| w[0].1 < w[1].1),
        "offsets follow request order: {keyed:?}"
    );
    let landed = consume_all(
        stack.cluster.bootstrap_servers(),
        "order",
        records.len() - 1,
        Duration::from_secs(15),
    )?;
    let mut in_partition: Vec<_> = landed
        .iter()
        .filter(|l| l.partition == partition)
        .map(|l| (l.offset, String::from_utf8_lossy(&l.value).into_owned()))
        .collect();
    in_partition.sort();
    let values: Vec<_> = in_partition
        .into_iter()
        .map(|(_, v)| v)
        .filter(|v| v.starts_with("keyed-"))
        .collect();
    let expected: Vec<_> = (0..150).map(|i| format!("keyed-{i}")).collect();
    assert_eq!(
        values, expected,
        "the key's records are in Kafka in request order"
    );
    Ok(())
}

/// A batch's first attempts are awaited in order under one timer. A report that does not
/// come in time fails its record alone, and the reports that came in meanwhile are all
/// taken, although the batch waited on the late one first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_report_fails_its_record_alone_and_the_rest_of_the_batch_is_acked(
) -> anyhow::Result<()> {
    let stack = GatewayStack::start(&[("late", PARTITIONS)], |c| {
        c.kafka.write_timeout = Duration::from_millis(500);
    })
    .await?;
    let (slow, slow_partitions) = busy_broker(&stack, "late");
    let fast: Vec<i32> = (0..PARTITIONS)
        .filter(|p| !slow_partitions.contains(p))
        .collect();
    assert!(!fast.is_empty(), "another broker leads a partition");
    stack
        .cluster
        .broker_rtt(slow, Duration::from_secs(3))
        .await?;
    let pinned = |partition: i32, value: &str| pb::Record {
        partition: Some(partition),
        ..record("late", None, value)
    };
    // The late record first: the batch waits on it before any other.
    let mut records = vec![pinned(slow_partitions[0], "late")];
    records.extend((0..30).map(|i| pinned(fast[i % fast.len()], &format!("fast-{i}"))));
    let started = Instant::now();
    let results = stack.produce(records).await?;
    let elapsed = started.elapsed();
    let late = record_error(&results[0]).expect("the late record fails");
    assert_eq!(late.code, Code::Unavailable as i32, "{late:?}");
    assert!(
        late.message.contains("no acknowledgement within 500ms"),
        "{late:?}"
    );
    for (i, r) in results.iter().enumerate().skip(1) {
        let ack = kafka_ack(r).unwrap_or_else(|| panic!("record {i} not acked: {r:?}"));
        assert_eq!(ack.partition, fast[(i - 1) % fast.len()]);
    }
    assert!(
        elapsed < Duration::from_millis(2500),
        "the batch took {elapsed:?}: one timer, not one per record"
    );
    Ok(())
}
