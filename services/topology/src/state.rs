//! The published topology: the last metadata, the draining marks, and a version that goes
//! up with every change. Watchers subscribe to a `watch` channel that always holds the
//! newest snapshot.

pub(crate) use ballast_core::unix_ms;
use ballast_kafka::ClusterMetadata;
use ballast_proto::topology::v1 as pb;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Drain {
    deadline_unix_ms: Option<i64>,
}

#[derive(Debug, Default)]
struct Inner {
    metadata: ClusterMetadata,
    reachable: bool,
    draining: BTreeMap<i32, Drain>,
    version: u64,
}

/// Shared state of one topology service.
#[derive(Debug)]
pub struct TopologyState {
    inner: Mutex<Inner>,
    tx: watch::Sender<Arc<pb::TopologySnapshot>>,
    lapse: Duration,
}

impl TopologyState {
    /// `lapse`: how long after its deadline a draining mark is dropped.
    pub fn new(lapse: Duration) -> Self {
        let (tx, _) = watch::channel(Arc::new(pb::TopologySnapshot::default()));
        Self {
            inner: Mutex::new(Inner::default()),
            tx,
            lapse,
        }
    }

    /// The newest snapshot.
    pub fn snapshot(&self) -> Arc<pb::TopologySnapshot> {
        self.tx.borrow().clone()
    }

    /// A receiver that holds the newest snapshot and wakes on each new version.
    pub fn subscribe(&self) -> watch::Receiver<Arc<pb::TopologySnapshot>> {
        self.tx.subscribe()
    }

    pub fn watchers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Installs a metadata fetch result. A failed fetch keeps the last brokers and topics
    /// and flags the snapshot unreachable.
    pub fn apply_metadata(&self, md: Result<ClusterMetadata, String>) -> u64 {
        let mut inner = self.inner.lock().expect("state lock");
        match md {
            Ok(md) => {
                inner.metadata = md;
                inner.reachable = true;
            }
            Err(_) => inner.reachable = false,
        }
        self.publish(&mut inner)
    }

    /// Marks a broker draining; returns the first version that shows the mark.
    pub fn mark_draining(&self, broker: i32, deadline_unix_ms: Option<i64>) -> u64 {
        self.mark_draining_within(broker, deadline_unix_ms, usize::MAX)
            .expect("no limit")
    }

    /// [`TopologyState::mark_draining`], unless it would make more than `max` marks (a
    /// broker already marked can always be marked again); `Err` holds the mark count.
    pub fn mark_draining_within(
        &self,
        broker: i32,
        deadline_unix_ms: Option<i64>,
        max: usize,
    ) -> Result<u64, usize> {
        let mut inner = self.inner.lock().expect("state lock");
        if !inner.draining.contains_key(&broker) && inner.draining.len() >= max {
            return Err(inner.draining.len());
        }
        inner.draining.insert(broker, Drain { deadline_unix_ms });
        Ok(self.publish(&mut inner))
    }

    /// Clears a mark; returns the version without it and whether there was one.
    pub fn clear_draining(&self, broker: i32) -> (u64, bool) {
        let mut inner = self.inner.lock().expect("state lock");
        let was = inner.draining.remove(&broker).is_some();
        (self.publish(&mut inner), was)
    }

    /// Drops marks whose deadline passed more than `lapse` ago.
    pub fn expire_marks(&self, now_unix_ms: i64) -> Vec<i32> {
        let mut inner = self.inner.lock().expect("state lock");
        let lapse = self.lapse.as_millis() as i64;
        let gone: Vec<i32> = inner
            .draining
            .iter()
            .filter(|(_, d)| d.deadline_unix_ms.is_some_and(|t| t + lapse <= now_unix_ms))
            .map(|(b, _)| *b)
            .collect();
        for b in &gone {
            inner.draining.remove(b);
        }
        if !gone.is_empty() {
            self.publish(&mut inner);
        }
        gone
    }

    /// Builds the snapshot; bumps the version and wakes watchers only when it changed.
    fn publish(&self, inner: &mut Inner) -> u64 {
        let mut next = build(inner);
        let changed = {
            let cur = self.tx.borrow();
            next.version = cur.version;
            **cur != next || inner.version == 0
        };
        if changed {
            inner.version += 1;
            next.version = inner.version;
            self.tx.send_replace(Arc::new(next));
        }
        inner.version
    }
}

fn build(inner: &Inner) -> pb::TopologySnapshot {
    let md = &inner.metadata;
    let mut brokers: Vec<pb::Broker> = md
        .brokers
        .iter()
        .map(|b| {
            let drain = inner.draining.get(&b.id);
            pb::Broker {
                id: b.id,
                host: b.host.clone(),
                port: b.port,
                rack: b.rack.clone().unwrap_or_default(),
                draining: drain.is_some(),
                draining_deadline_unix_ms: drain.and_then(|d| d.deadline_unix_ms).unwrap_or(0),
            }
        })
        .collect();
    brokers.sort_by_key(|b| b.id);
    let topics = md
        .topics
        .iter()
        .filter(|t| t.error_code == 0)
        .map(|t| pb::TopicInfo {
            name: t.name.clone(),
            partitions: t
                .partitions
                .iter()
                .map(|p| {
                    let leader = md.live_leader(p);
                    pb::PartitionInfo {
                        partition: p.partition,
                        leader: leader.unwrap_or(-1),
                        leader_rack: leader
                            .and_then(|l| md.broker(l)?.rack.clone())
                            .unwrap_or_default(),
                        replicas: p.replicas.clone(),
                        isr: p.isr.clone(),
                        offline_replicas: p.offline_replicas.clone(),
                        leader_epoch: p.leader_epoch,
                    }
                })
                .collect(),
        })
        .collect();
    pb::TopologySnapshot {
        version: 0,
        cluster_id: md.cluster_id.clone().unwrap_or_default(),
        brokers,
        topics,
        draining_brokers: inner.draining.keys().copied().collect(),
        kafka_reachable: inner.reachable,
        controller_id: md.controller_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ballast_kafka::BrokerInfo;

    fn md(brokers: &[i32]) -> ClusterMetadata {
        ClusterMetadata {
            cluster_id: Some("c".into()),
            controller_id: 1,
            brokers: brokers
                .iter()
                .map(|&id| BrokerInfo {
                    id,
                    host: "h".into(),
                    port: 9092,
                    rack: Some(format!("az-{id}")),
                })
                .collect(),
            topics: vec![],
        }
    }

    #[test]
    fn version_moves_only_on_change() {
        let s = TopologyState::new(Duration::from_secs(60));
        let v1 = s.apply_metadata(Ok(md(&[1, 2])));
        assert_eq!(v1, 1);
        assert_eq!(
            s.apply_metadata(Ok(md(&[1, 2]))),
            1,
            "same metadata, same version"
        );
        let v2 = s.mark_draining(2, Some(1_000));
        assert_eq!(v2, 2);
        assert!(s.snapshot().brokers[1].draining);
        assert_eq!(
            s.mark_draining(2, Some(1_000)),
            2,
            "a repeated mark changes nothing"
        );
        let (v3, was) = s.clear_draining(2);
        assert!(was && v3 == 3);
        assert_eq!(s.clear_draining(2), (3, false));
        assert_eq!(s.apply_metadata(Err("down".into())), 4);
        assert!(!s.snapshot().kafka_reachable);
        assert_eq!(s.snapshot().brokers.len(), 2, "the last brokers are kept");
    }

    #[test]
    fn marks_lapse_after_their_deadline() {
        let s = TopologyState::new(Duration::from_millis(100));
        s.apply_metadata(Ok(md(&[1])));
        s.mark_draining(1, Some(1_000));
        s.mark_draining(7, None);
        assert_eq!(s.mark_draining_within(9, None, 2), Err(2), "capped");
        assert!(
            s.mark_draining_within(7, None, 2).is_ok(),
            "re-marking is fine"
        );
        assert!(s.expire_marks(1_099).is_empty());
        assert_eq!(s.expire_marks(1_100), vec![1]);
        assert_eq!(
            s.snapshot().draining_brokers,
            vec![7],
            "no deadline: kept until cleared"
        );
    }
}
