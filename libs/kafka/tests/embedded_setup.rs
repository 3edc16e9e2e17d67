//! Starting the embedded cluster never hangs: with more topics than librdkafka's mock
//! cluster can create (it stalls past about 550), `start` returns within its deadline,
//! with an error that says what happened.

use ballast_kafka::{EmbeddedCluster, EmbeddedClusterConfig, TopicSpec};
use std::time::{Duration, Instant};

#[test]
fn too_many_topics_is_a_clear_error_not_a_hang() {
    let topics = (0..600)
        .map(|i| TopicSpec {
            name: format!("t{i}"),
            // What `ballast-dev up --topic NAME` creates.
            partitions: 6,
            replication_factor: 3,
        })
        .collect();
    let started = Instant::now();
    let result = EmbeddedCluster::start(EmbeddedClusterConfig {
        topics,
        ..Default::default()
    });
    let took = started.elapsed();
    let bound = EmbeddedCluster::setup_deadline(600) + Duration::from_secs(10);
    assert!(took < bound, "start took {took:?}, more than {bound:?}");
    match result {
        // Some librdkafka builds may manage; what matters is that start answered.
        Ok(cluster) => eprintln!(
            "600 topics created in {took:?}: {}",
            cluster.bootstrap_servers()
        ),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("600 topics") && msg.contains("did not finish"),
                "{msg}"
            );
            eprintln!("600 topics: {msg} after {took:?}");
        }
    }
}
