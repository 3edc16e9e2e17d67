//! The protocol-level metadata client against librdkafka's mock cluster.

use ballast_kafka::{EmbeddedCluster, EmbeddedClusterConfig, MetadataClient, TopicSpec};
use std::time::Duration;

fn cluster() -> EmbeddedCluster {
    EmbeddedCluster::start(EmbeddedClusterConfig {
        brokers: 3,
        racks: vec!["az-a".into(), "az-b".into(), "az-c".into()],
        topics: vec![TopicSpec {
            name: "md".into(),
            partitions: 6,
            replication_factor: 3,
        }],
        ..Default::default()
    })
    .expect("mock cluster starts")
}

fn client(bootstrap: Vec<String>) -> MetadataClient {
    MetadataClient::new(bootstrap, "ballast-test", Duration::from_secs(2))
}

#[tokio::test]
async fn reports_racks_leaders_and_replicas() -> anyhow::Result<()> {
    let c = cluster();
    let md = client(vec![c
        .bootstrap_servers()
        .split(',')
        .next()
        .unwrap()
        .into()])
    .fetch()
    .await?;
    assert_eq!(md.brokers.len(), 3);
    for b in &md.brokers {
        assert_eq!(b.rack.as_deref(), c.rack_of(b.id), "broker {}", b.id);
    }
    let t = md.topic("md").expect("topic listed");
    assert_eq!(t.partitions.len(), 6);
    for p in &t.partitions {
        assert_eq!(p.replicas.len(), 3);
        assert!(p.isr.contains(&p.leader));
        assert_eq!(md.live_leader(p), Some(p.leader));
    }
    let view = md.balancer_view(t);
    assert!(view.iter().all(|p| p.leader_rack.is_some()));
    Ok(())
}

#[tokio::test]
async fn a_down_leader_counts_as_leaderless_and_a_moved_leader_is_seen() -> anyhow::Result<()> {
    let c = cluster();
    let mc = client(
        c.bootstrap_servers()
            .split(',')
            .map(str::to_string)
            .collect(),
    );
    let md = mc.fetch().await?;
    let p0 = md.topic("md").unwrap().partitions[0].clone();
    let leader = p0.leader;

    c.broker_down(leader).await?;
    let md = mc.fetch().await?;
    assert!(
        md.broker(leader).is_none(),
        "a down broker leaves the broker list"
    );
    let p = &md.topic("md").unwrap().partitions[0];
    assert_eq!(md.live_leader(p), None, "its partitions are leaderless");
    assert!(md.balancer_view(md.topic("md").unwrap())[0]
        .leader
        .is_none());

    let other = (1..=3).find(|b| *b != leader).unwrap();
    c.partition_leader("md", 0, Some(other)).await?;
    let md = mc.fetch().await?;
    let p = &md.topic("md").unwrap().partitions[0];
    assert_eq!(md.live_leader(p), Some(other));
    assert_eq!(
        md.balancer_view(md.topic("md").unwrap())[0]
            .leader_rack
            .as_deref(),
        c.rack_of(other)
    );
    Ok(())
}

#[tokio::test]
async fn fails_over_between_bootstrap_brokers() -> anyhow::Result<()> {
    let c = cluster();
    // A dead address first: the client moves on to the next one.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.to_string()
    };
    let mut bootstrap = vec![dead];
    bootstrap.extend(c.bootstrap_servers().split(',').map(str::to_string));
    let md = client(bootstrap).fetch().await?;
    assert_eq!(md.brokers.len(), 3);

    let err = client(vec!["127.0.0.1:1".into()])
        .fetch()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no broker answered"), "{err}");
    Ok(())
}
