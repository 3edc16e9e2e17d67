//! The topology service against librdkafka's mock cluster, and gateways that follow it.

use ballast_balancer::BreakerState;
use ballast_dev::GatewayStack;
use ballast_kafka::{EmbeddedCluster, EmbeddedClusterConfig, TopicSpec};
use ballast_proto::topology::v1 as pb;
use ballast_proto::topology::v1::topology_client::TopologyClient;
use ballast_testkit::{kafka_ack, record};
use ballast_topology::{TopologyConfig, TopologyState};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tonic::transport::Channel;

/// A topology service in this process, stopped on drop.
struct Topology {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Topology {
    async fn start(bootstrap: &str, listener: TcpListener) -> anyhow::Result<Self> {
        let mut cfg = TopologyConfig::default();
        cfg.kafka.bootstrap_servers = bootstrap.to_string();
        cfg.kafka.refresh_interval = Duration::from_millis(200);
        cfg.kafka.metadata_timeout = Duration::from_millis(500);
        cfg.shutdown_grace = Duration::from_secs(2);
        let state = Arc::new(TopologyState::new(cfg.draining_lapse_after_deadline));
        let addr = listener.local_addr()?;
        let admin = TcpListener::bind("127.0.0.1:0").await?;
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(ballast_topology::run_with_state(
            cfg,
            state,
            listener,
            admin,
            async {
                let _ = rx.await;
            },
        ));
        let me = Self {
            addr,
            stop: Some(stop),
            task,
        };
        // The first metadata fetch is version 1.
        me.wait_for(|s| s.version >= 1 && s.kafka_reachable, "first snapshot")
            .await?;
        Ok(me)
    }

    async fn client(&self) -> anyhow::Result<TopologyClient<Channel>> {
        Ok(TopologyClient::connect(format!("http://{}", self.addr)).await?)
    }

    async fn get(&self) -> anyhow::Result<pb::TopologySnapshot> {
        Ok(self
            .client()
            .await?
            .get_topology(pb::GetTopologyRequest::default())
            .await?
            .into_inner())
    }

    /// Polls GetTopology until `pred` holds (at most 10 s).
    async fn wait_for(
        &self,
        pred: impl Fn(&pb::TopologySnapshot) -> bool,
        what: &str,
    ) -> anyhow::Result<pb::TopologySnapshot> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(s) = self.get().await {
                if pred(&s) {
                    return Ok(s);
                }
                anyhow::ensure!(Instant::now() < deadline, "{what}: last snapshot {s:#?}");
            } else {
                anyhow::ensure!(Instant::now() < deadline, "{what}: service not answering");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await??;
        Ok(())
    }
}

fn cluster(topic: &str, partitions: i32) -> anyhow::Result<EmbeddedCluster> {
    Ok(EmbeddedCluster::start(EmbeddedClusterConfig {
        topics: vec![TopicSpec {
            name: topic.into(),
            partitions,
            replication_factor: 3,
        }],
        ..Default::default()
    })?)
}

async fn next(
    stream: &mut tonic::Streaming<pb::TopologySnapshot>,
) -> anyhow::Result<pb::TopologySnapshot> {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .map_err(|_| anyhow::anyhow!("no snapshot within 5 s"))??
        .ok_or_else(|| anyhow::anyhow!("stream ended"))
}

fn partition<'a>(s: &'a pb::TopologySnapshot, topic: &str, p: i32) -> &'a pb::PartitionInfo {
    s.topics
        .iter()
        .find(|t| t.name == topic)
        .and_then(|t| t.partitions.iter().find(|x| x.partition == p))
        .expect("partition listed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_follow_broker_down_and_leader_moves() -> anyhow::Result<()> {
    let c = cluster("shape", 6)?;
    let topo = Topology::start(
        c.bootstrap_servers(),
        TcpListener::bind("127.0.0.1:0").await?,
    )
    .await?;
    let s = topo.get().await?;
    assert_eq!(s.brokers.len(), 3);
    for b in &s.brokers {
        assert_eq!(Some(b.rack.as_str()), c.rack_of(b.id), "broker {}", b.id);
        assert!(!b.draining && b.port > 0);
    }
    assert!(!s.cluster_id.is_empty());
    let t = s.topics.iter().find(|t| t.name == "shape").expect("topic");
    assert_eq!(t.partitions.len(), 6);
    for p in &t.partitions {
        assert!(p.leader >= 1);
        assert_eq!(Some(p.leader_rack.as_str()), c.rack_of(p.leader));
        assert_eq!(p.replicas.len(), 3);
    }

    // A broker goes down: it leaves the broker list and its partitions show no leader.
    let victim = partition(&s, "shape", 0).leader;
    let led: Vec<i32> = t
        .partitions
        .iter()
        .filter(|p| p.leader == victim)
        .map(|p| p.partition)
        .collect();
    c.broker_down(victim).await?;
    let down = topo
        .wait_for(|s| !s.brokers.iter().any(|b| b.id == victim), "broker gone")
        .await?;
    assert!(down.version > s.version);
    for p in &led {
        let info = partition(&down, "shape", *p);
        assert_eq!(info.leader, -1, "partition {p} still names a leader");
        assert!(info.leader_rack.is_empty());
    }

    // The election finishes elsewhere: the new leader and its rack are published.
    let new_leader = (1..=3).find(|b| *b != victim).unwrap();
    c.partition_leader("shape", 0, Some(new_leader)).await?;
    let moved = topo
        .wait_for(
            |s| partition(s, "shape", 0).leader == new_leader,
            "leader moved",
        )
        .await?;
    assert_eq!(
        Some(partition(&moved, "shape", 0).leader_rack.as_str()),
        c.rack_of(new_leader)
    );
    assert!(moved.version > down.version);
    topo.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sends_the_current_snapshot_then_each_change_in_order() -> anyhow::Result<()> {
    let c = cluster("watch", 3)?;
    let topo = Topology::start(
        c.bootstrap_servers(),
        TcpListener::bind("127.0.0.1:0").await?,
    )
    .await?;
    let mut client = topo.client().await?;
    let mut stream = client
        .watch_topology(pb::WatchTopologyRequest::default())
        .await?
        .into_inner();
    let first = next(&mut stream).await?;
    assert_eq!(
        first.version,
        topo.get().await?.version,
        "starts with the current one"
    );
    assert!(first.draining_brokers.is_empty());

    let mut seen = vec![first.draining_brokers.clone()];
    let mut last = first.version;
    let steps: [(&str, i32); 3] = [("mark", 1), ("mark", 2), ("clear", 1)];
    for (op, broker) in steps {
        let version = match op {
            "mark" => {
                client
                    .mark_broker_draining(pb::MarkBrokerDrainingRequest {
                        broker_id: broker,
                        deadline_unix_ms: None,
                        reason: "test".into(),
                    })
                    .await?
                    .into_inner()
                    .version
            }
            _ => {
                let r = client
                    .clear_broker_draining(pb::ClearBrokerDrainingRequest { broker_id: broker })
                    .await?
                    .into_inner();
                assert!(r.was_draining);
                r.version
            }
        };
        let snap = next(&mut stream).await?;
        assert!(
            snap.version > last,
            "versions increase: {} after {last}",
            snap.version
        );
        assert_eq!(
            snap.version, version,
            "the change arrives as the version the call named"
        );
        last = snap.version;
        seen.push(snap.draining_brokers.clone());
    }
    assert_eq!(seen, vec![vec![], vec![1], vec![1, 2], vec![2]]);
    let live = topo.get().await?;
    let b2 = live.brokers.iter().find(|b| b.id == 2).unwrap();
    assert!(b2.draining);

    // A second watcher joining now starts from the newest snapshot.
    let mut late = client
        .watch_topology(pb::WatchTopologyRequest::default())
        .await?
        .into_inner();
    let now = next(&mut late).await?;
    assert_eq!((now.version, now.draining_brokers.clone()), (last, vec![2]));
    topo.stop().await
}

/// A watcher that selects topics gets only those, and no snapshot for a change elsewhere;
/// broker marks still come. GetTopology selects the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_of_some_topics_hears_only_of_them() -> anyhow::Result<()> {
    let c = cluster("mine", 3)?;
    c.create_topic(TopicSpec {
        name: "other".into(),
        partitions: 3,
        replication_factor: 3,
    })
    .await?;
    let topo = Topology::start(
        c.bootstrap_servers(),
        TcpListener::bind("127.0.0.1:0").await?,
    )
    .await?;
    topo.wait_for(|s| s.topics.len() == 2, "both topics listed")
        .await?;
    let mine = || {
        Some(pb::TopicSelection {
            names: vec!["mine".into(), "absent".into()],
        })
    };
    let mut client = topo.client().await?;
    let got = client
        .get_topology(pb::GetTopologyRequest { topics: mine() })
        .await?
        .into_inner();
    let names: Vec<&str> = got.topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["mine"]);
    assert_eq!(got.brokers.len(), 3);
    let none = client
        .get_topology(pb::GetTopologyRequest {
            topics: Some(pb::TopicSelection::default()),
        })
        .await?
        .into_inner();
    assert!(
        none.topics.is_empty() && none.brokers.len() == 3,
        "{none:?}"
    );

    let mut stream = client
        .watch_topology(pb::WatchTopologyRequest { topics: mine() })
        .await?
        .into_inner();
    let first = next(&mut stream).await?;
    assert_eq!(first.topics.len(), 1);
    let leader = partition(&first, "mine", 0).leader;

    // A leader move on the other topic: the service publishes it, this watcher hears nothing.
    let other = partition(&topo.get().await?, "other", 0).leader;
    let moved_to = (other % 3) + 1;
    c.partition_leader("other", 0, Some(moved_to)).await?;
    let published = topo
        .wait_for(
            |s| partition(s, "other", 0).leader == moved_to,
            "other's leader moved",
        )
        .await?;
    assert!(published.version > first.version);
    let quiet = tokio::time::timeout(Duration::from_secs(1), stream.message()).await;
    assert!(quiet.is_err(), "no snapshot for another topic: {quiet:?}");

    // A move on the selected topic comes, as does a draining mark.
    let to = (leader % 3) + 1;
    c.partition_leader("mine", 0, Some(to)).await?;
    let snap = next(&mut stream).await?;
    assert_eq!(partition(&snap, "mine", 0).leader, to);
    assert!(snap.version > published.version);
    client
        .mark_broker_draining(pb::MarkBrokerDrainingRequest {
            broker_id: 2,
            deadline_unix_ms: None,
            reason: "test".into(),
        })
        .await?;
    let marked = next(&mut stream).await?;
    assert_eq!(marked.draining_brokers, [2]);
    topo.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planners_over_grpc_and_bad_input() -> anyhow::Result<()> {
    let c = cluster("plan", 6)?;
    let topo = Topology::start(
        c.bootstrap_servers(),
        TcpListener::bind("127.0.0.1:0").await?,
    )
    .await?;
    let mut client = topo.client().await?;
    let rack = |id: i32, rack: &str| pb::BrokerRack {
        id,
        rack: rack.into(),
    };
    // Seed 002's example: brokers 0,1,2 in one zone and 3,4,5 in another.
    let six: Vec<pb::BrokerRack> = (0..6)
        .map(|i| rack(i, if i < 3 { "1" } else { "2" }))
        .collect();
    let r = client
        .plan_replica_assignment(pb::PlanReplicaAssignmentRequest {
            brokers: six.clone(),
            partitions: 6,
            replication_factor: 2,
            start_index: Some(0),
        })
        .await?
        .into_inner();
    let leaders: Vec<i32> = r.assignments.iter().map(|a| a.replicas[0]).collect();
    assert_eq!(leaders, vec![0, 3, 1, 4, 2, 5]);
    for a in &r.assignments {
        assert_ne!(
            a.replicas[0] < 3,
            a.replicas[1] < 3,
            "one copy per zone: {:?}",
            a.replicas
        );
    }

    let code = |r: Result<tonic::Response<pb::PlanReplicaAssignmentResponse>, tonic::Status>| {
        r.map(|_| ()).unwrap_err()
    };
    let mut mixed = six.clone();
    mixed[5].rack.clear();
    let e = code(
        client
            .plan_replica_assignment(pb::PlanReplicaAssignmentRequest {
                brokers: mixed,
                partitions: 3,
                replication_factor: 2,
                start_index: None,
            })
            .await,
    );
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("rack"), "{}", e.message());
    let e = code(
        client
            .plan_replica_assignment(pb::PlanReplicaAssignmentRequest {
                brokers: six.clone(),
                partitions: 3,
                replication_factor: 7,
                start_index: None,
            })
            .await,
    );
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("larger than available brokers: 6"),
        "{}",
        e.message()
    );

    // A staged reassignment: broker 9 retires, one move per broker per stage.
    let current: Vec<pb::PartitionPlacement> = (0..4)
        .map(|p| pb::PartitionPlacement {
            topic: "t".into(),
            partition: p,
            replicas: vec![9, 2],
            size_bytes: 10,
        })
        .collect();
    let target = |id: i32, rack: &str, free: i64| pb::TargetBroker {
        id,
        rack: rack.into(),
        free_disk_bytes: free,
    };
    let plan = client
        .plan_reassignment(pb::PlanReassignmentRequest {
            current: current.clone(),
            brokers: vec![
                target(1, "a", 1000),
                target(2, "b", 1000),
                target(3, "a", 1000),
            ],
            max_moves_per_broker: 1,
        })
        .await?
        .into_inner();
    assert!(plan.stages.len() >= 2);
    for s in &plan.stages {
        let json: serde_json::Value = serde_json::from_str(&s.reassignment_json)?;
        assert_eq!(json["version"], 1);
        assert_eq!(json["partitions"].as_array().unwrap().len(), s.moves.len());
    }
    assert!(plan.target.iter().all(|p| !p.replicas.contains(&9)));
    let e = client
        .plan_reassignment(pb::PlanReassignmentRequest {
            current,
            brokers: vec![target(1, "a", 5), target(2, "b", 1000)],
            max_moves_per_broker: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{}", e.message());

    // Consumers get partitions led in their own rack.
    let a = client
        .assign_partitions(pb::AssignPartitionsRequest {
            topic: "plan".into(),
            consumers: ["az-a", "az-b", "az-c"]
                .iter()
                .enumerate()
                .map(|(i, r)| pb::Consumer {
                    id: format!("c{i}"),
                    rack: r.to_string(),
                })
                .collect(),
        })
        .await?
        .into_inner();
    assert_eq!(a.partitions, 6);
    let mut all: Vec<i32> = a
        .assignments
        .iter()
        .flat_map(|x| x.partitions.clone())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..6).collect::<Vec<_>>());
    let e = client
        .assign_partitions(pb::AssignPartitionsRequest {
            topic: "nope".into(),
            consumers: vec![pb::Consumer {
                id: "c".into(),
                rack: String::new(),
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = client
        .mark_broker_draining(pb::MarkBrokerDrainingRequest {
            broker_id: -3,
            deadline_unix_ms: None,
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    topo.stop().await
}

/// Gateway metrics say the WatchTopology stream is open.
async fn wait_following(stack: &GatewayStack) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stack
        .metrics_text()
        .await?
        .contains("ballast_gateway_topology_connected 1")
    {
        anyhow::ensure!(Instant::now() < deadline, "gateway never followed topology");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_under_load_leaves_a_draining_broker_before_it_dies() -> anyhow::Result<()> {
    const TOPIC: &str = "spot";
    let tl = TcpListener::bind("127.0.0.1:0").await?;
    let taddr = tl.local_addr()?;
    let stack = Arc::new(
        GatewayStack::start(&[(TOPIC, 6)], |cfg| {
            cfg.topology.endpoint = Some(format!("http://{taddr}"));
            cfg.sticky_records = 1;
        })
        .await?,
    );
    let topo = Topology::start(stack.cluster.bootstrap_servers(), tl).await?;
    wait_following(&stack).await?;
    // The victim: the gateway's own rack's broker (it gets most unkeyed traffic), if it
    // leads anything.
    let leaders: Vec<(i32, i32)> = (0..6)
        .map(|p| (p, stack.leader_of(TOPIC, p).expect("leader")))
        .collect();
    let victim = if leaders.iter().any(|(_, l)| *l == 1) {
        1
    } else {
        leaders[0].1
    };
    let victim_parts: HashSet<i32> = leaders
        .iter()
        .filter(|(_, l)| *l == victim)
        .map(|(p, _)| *p)
        .collect();

    // Load: batches of 20 unkeyed records, back to back, until told to stop.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let load = {
        let stack = stack.clone();
        tokio::spawn(async move {
            let mut client = stack.client().await?;
            let mut out = Vec::new();
            let mut n = 0;
            while !*stop_rx.borrow() {
                let records: Vec<_> = (0..20)
                    .map(|i| record(TOPIC, None, &format!("r{n}-{i}")))
                    .collect();
                n += 1;
                let sent = Instant::now();
                let results = client
                    .produce(ballast_proto::ingest::v1::ProduceRequest { records })
                    .await?
                    .into_inner()
                    .results;
                let took = sent.elapsed();
                for r in results {
                    out.push((sent, took, r));
                }
            }
            Ok::<_, anyhow::Error>(out)
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;

    let marked = Instant::now();
    topo.client()
        .await?
        .mark_broker_draining(pb::MarkBrokerDrainingRequest {
            broker_id: victim,
            deadline_unix_ms: None,
            reason: "spot notice".into(),
        })
        .await?;
    // The victim's partitions are held open by the gateway within a second.
    let held_after = loop {
        let status = stack.handle.partition_status(TOPIC);
        let held = status
            .iter()
            .filter(|s| victim_parts.contains(&s.partition))
            .all(|s| s.draining && s.state == BreakerState::Open);
        if held {
            break marked.elapsed();
        }
        assert!(
            marked.elapsed() < Duration::from_secs(1),
            "not held after 1 s: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let held_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack.cluster.broker_down(victim).await?;
    let down_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop_tx.send(true);
    let results = load.await??;

    let write_timeout = Duration::from_secs(1);
    let mut after_hold = 0;
    let mut while_down = 0;
    let mut slowest = Duration::ZERO;
    for (sent, took, r) in &results {
        let ack = kafka_ack(r).unwrap_or_else(|| panic!("record not acked by kafka: {r:?}"));
        slowest = slowest.max(*took);
        assert!(
            *took < write_timeout,
            "a batch took {took:?}: a record waited on the dying broker"
        );
        if *sent > held_at {
            after_hold += 1;
            assert!(
                !victim_parts.contains(&ack.partition),
                "record sent after the hold went to partition {} of the draining broker",
                ack.partition
            );
        }
        if *sent > down_at {
            while_down += 1;
        }
    }
    eprintln!(
        "draining broker {victim} held after {held_after:?}; {} records, {after_hold} after the hold, {while_down} while it was down, slowest batch {slowest:?}",
        results.len()
    );
    assert!(while_down > 0, "load continued after the broker died");
    topo.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaderless_partitions_are_held_by_a_push_and_the_service_is_optional() -> anyhow::Result<()>
{
    const TOPIC: &str = "push";
    let tl = TcpListener::bind("127.0.0.1:0").await?;
    let taddr = tl.local_addr()?;
    let mut stack = GatewayStack::start(&[(TOPIC, 3)], |cfg| {
        cfg.topology.endpoint = Some(format!("http://{taddr}"));
        cfg.topology.stale_after = Duration::from_secs(1);
        cfg.topology.reconnect_backoff = Duration::from_millis(100);
        // The gateway's own refresh is far off: only the push can explain a quick hold.
        cfg.kafka.metadata_refresh_interval = Duration::from_secs(120);
    })
    .await?;
    // Before the service exists the gateway serves from its own metadata.
    let r = stack.produce(vec![record(TOPIC, None, "before")]).await?;
    assert!(kafka_ack(&r[0]).is_some(), "{r:?}");

    let topo = Topology::start(stack.cluster.bootstrap_servers(), tl).await?;
    wait_following(&stack).await?;
    let changed = Instant::now();
    stack.cluster.partition_leader(TOPIC, 1, None).await?;
    loop {
        let s = stack.handle.partition_status(TOPIC);
        let p1 = s.iter().find(|s| s.partition == 1).unwrap();
        if p1.leader.is_none() && p1.state == BreakerState::Open {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(2),
            "partition 1 not held 2 s after it lost its leader: {p1:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let held_in = changed.elapsed();
    let r = stack
        .produce(
            (0..30)
                .map(|i| record(TOPIC, None, &format!("u{i}")))
                .collect(),
        )
        .await?;
    for x in &r {
        let ack = kafka_ack(x).unwrap_or_else(|| panic!("{x:?}"));
        assert_ne!(ack.partition, 1, "no record tries the leaderless partition");
    }

    // A draining mark, then the service goes away: the mark is dropped after stale_after
    // and the gateway keeps serving.
    let victim = stack.leader_of(TOPIC, 0).expect("leader");
    topo.client()
        .await?
        .mark_broker_draining(pb::MarkBrokerDrainingRequest {
            broker_id: victim,
            deadline_unix_ms: None,
            reason: "test".into(),
        })
        .await?;
    let wait_draining = |want: bool| {
        let stack = &stack;
        async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let s = stack.handle.partition_status(TOPIC);
                if s.iter().find(|s| s.partition == 0).unwrap().draining == want {
                    return Ok::<_, anyhow::Error>(());
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "draining never became {want}: {s:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_draining(true).await?;
    topo.stop().await?;
    wait_draining(false).await?;
    let r = stack.produce(vec![record(TOPIC, None, "after")]).await?;
    assert!(kafka_ack(&r[0]).is_some(), "{r:?}");
    eprintln!("leaderless partition held {held_in:?} after the change, by push");
    stack.shutdown().await
}

/// Draining marks are bounded: every mark sends traffic away, so a runaway caller cannot
/// mark the whole fleet (limits.max_draining_marks, 16 by default), nor log a novel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_marks_are_capped() -> anyhow::Result<()> {
    let kafka = cluster("capped", 2)?;
    let svc = Topology::start(
        kafka.bootstrap_servers(),
        TcpListener::bind("127.0.0.1:0").await?,
    )
    .await?;
    let mut c = svc.client().await?;
    let mark = |broker_id: i32, reason: String| pb::MarkBrokerDrainingRequest {
        broker_id,
        reason,
        ..Default::default()
    };
    for b in 1..=16 {
        c.mark_broker_draining(mark(b, "spot notice".into()))
            .await?;
    }
    let e = c
        .mark_broker_draining(mark(17, "one too many".into()))
        .await
        .expect_err("over limits.max_draining_marks");
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
    assert!(e.message().contains("limits.max_draining_marks"), "{e}");
    // Marking an already marked broker again is fine.
    c.mark_broker_draining(mark(3, "renewed".into())).await?;
    let e = c
        .mark_broker_draining(mark(3, "x".repeat(2000)))
        .await
        .expect_err("reason too long");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert_eq!(svc.get().await?.draining_brokers.len(), 16);
    svc.stop().await
}
