//! Found by `ballast-dev torture`: a consumer fetching a partition that has just become
//! leaderless crashed the whole process. librdkafka 2.12's mock cluster answers Fetch v12+
//! with NOT_LEADER_OR_FOLLOWER plus a CurrentLeader tag that dereferences the partition's
//! (NULL) leader. The embedded cluster caps Fetch at v11, which has no such tag.

use ballast_kafka::{EmbeddedCluster, EmbeddedClusterConfig, TopicSpec};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_fetching_a_partition_that_loses_its_leader_does_not_crash_the_cluster(
) -> anyhow::Result<()> {
    let cluster = EmbeddedCluster::start(EmbeddedClusterConfig {
        brokers: 3,
        racks: vec![],
        topics: vec![TopicSpec {
            name: "lf".into(),
            partitions: 1,
            replication_factor: 3,
        }],
        ..Default::default()
    })?;
    let bootstrap = cluster.bootstrap_servers().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let fetcher = {
        let (bootstrap, stop) = (bootstrap.clone(), stop.clone());
        std::thread::spawn(move || -> anyhow::Result<()> {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", "lf")
                .set("fetch.wait.max.ms", "50")
                .set("topic.metadata.refresh.interval.ms", "60000")
                .create()?;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset("lf", 0, Offset::Beginning)?;
            consumer.assign(&tpl)?;
            while !stop.load(Ordering::Relaxed) {
                let _ = consumer.poll(Duration::from_millis(50));
            }
            Ok(())
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.partition_leader("lf", 0, None).await?;
    // The consumer keeps fetching from the old leader, which answers NOT_LEADER.
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.partition_leader("lf", 0, Some(2)).await?;
    stop.store(true, Ordering::Relaxed);
    fetcher.join().expect("the fetcher thread")?;
    // The mock (and this process) is alive and answers.
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()?;
    let md = probe.fetch_metadata(Some("lf"), Duration::from_secs(5))?;
    assert_eq!(md.topics()[0].partitions()[0].leader(), 2);
    Ok(())
}
