//! Kafka's replica assignment for new topics (`AdminUtils.assignReplicasToBrokers`),
//! reproduced exactly so a plan made here matches what Kafka would create.
//!
//! With racks, brokers are first interleaved by rack (racks sorted by name, brokers by id):
//! racks {0,1,2} and {3,4,5} give 0,3,1,4,2,5. Partition p's leader is the broker at
//! `(p + start) % n` of that list; followers are taken at a shift that grows by one every
//! `n` partitions, skipping a broker whose rack (or the broker itself) already holds a
//! replica while another rack (or broker) does not.

use super::{BrokerRack, PlanError};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One partition's replicas; the first is the preferred leader.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Assignment {
    pub partition: i32,
    pub replicas: Vec<i32>,
}

/// The assignment of `partitions` partitions with `replication_factor` replicas.
///
/// `start_index` fixes the start index and the replica shift (Kafka's `fixedStartIndex`);
/// without it both are drawn at random, as Kafka does. Returns the index used.
pub fn assign_replicas(
    brokers: &[BrokerRack],
    partitions: i32,
    replication_factor: i32,
    start_index: Option<i32>,
) -> Result<(Vec<Assignment>, i32), PlanError> {
    if partitions <= 0 {
        return Err(PlanError::invalid(
            "number of partitions must be larger than 0",
        ));
    }
    if replication_factor <= 0 {
        return Err(PlanError::invalid(
            "replication factor must be larger than 0",
        ));
    }
    let mut seen = BTreeSet::new();
    for b in brokers {
        if b.id < 0 {
            return Err(PlanError::invalid(format!(
                "broker id {} is negative",
                b.id
            )));
        }
        if !seen.insert(b.id) {
            return Err(PlanError::invalid(format!(
                "broker {} is listed twice",
                b.id
            )));
        }
    }
    if replication_factor as usize > brokers.len() {
        return Err(PlanError::invalid(format!(
            "replication factor: {replication_factor} larger than available brokers: {}",
            brokers.len()
        )));
    }
    if let Some(s) = start_index {
        if s < 0 {
            return Err(PlanError::invalid("start_index may not be negative"));
        }
    }
    let with_rack = brokers.iter().filter(|b| b.rack.is_some()).count();
    if with_rack == 0 {
        let mut ids: Vec<i32> = brokers.iter().map(|b| b.id).collect();
        ids.sort_unstable();
        let (start, shift) = starts(start_index, ids.len());
        Ok((
            rack_unaware(partitions, replication_factor, &ids, start, shift),
            start as i32,
        ))
    } else if with_rack != brokers.len() {
        Err(PlanError::invalid(
            "not all brokers have rack information for replica rack aware assignment",
        ))
    } else {
        let racks: HashMap<i32, &str> = brokers
            .iter()
            .map(|b| (b.id, b.rack.as_deref().unwrap_or_default()))
            .collect();
        let arranged = rack_alternated(&racks);
        let (start, shift) = starts(start_index, arranged.len());
        Ok((
            rack_aware(
                partitions,
                replication_factor,
                &arranged,
                &racks,
                start,
                shift,
            ),
            start as i32,
        ))
    }
}

/// Kafka draws the start index and the first replica shift independently.
fn starts(fixed: Option<i32>, n: usize) -> (usize, usize) {
    match fixed {
        Some(s) => (s as usize, s as usize),
        None => (fastrand::usize(..n), fastrand::usize(..n)),
    }
}

fn replica_index(first: usize, second_shift: usize, k: usize, n: usize) -> usize {
    let shift = 1 + (second_shift + k) % (n - 1);
    (first + shift) % n
}

fn rack_unaware(
    partitions: i32,
    rf: i32,
    ids: &[i32],
    start: usize,
    mut shift: usize,
) -> Vec<Assignment> {
    let n = ids.len();
    (0..partitions as usize)
        .map(|p| {
            if p > 0 && p % n == 0 {
                shift += 1;
            }
            let first = (p + start) % n;
            let mut replicas = vec![ids[first]];
            for j in 0..(rf as usize - 1) {
                replicas.push(ids[replica_index(first, shift, j, n)]);
            }
            Assignment {
                partition: p as i32,
                replicas,
            }
        })
        .collect()
}

/// Brokers interleaved by rack: racks in name order, each rack's brokers in id order.
pub fn rack_alternated(racks: &HashMap<i32, &str>) -> Vec<i32> {
    let mut by_rack: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (&id, &rack) in racks {
        by_rack.entry(rack).or_default().push(id);
    }
    let mut iters: Vec<std::vec::IntoIter<i32>> = by_rack
        .into_values()
        .map(|mut ids| {
            ids.sort_unstable();
            ids.into_iter()
        })
        .collect();
    let mut out = Vec::with_capacity(racks.len());
    let mut i = 0;
    while out.len() < racks.len() {
        if let Some(id) = iters[i].next() {
            out.push(id);
        }
        i = (i + 1) % iters.len();
    }
    out
}

fn rack_aware(
    partitions: i32,
    rf: i32,
    arranged: &[i32],
    racks: &HashMap<i32, &str>,
    start: usize,
    mut shift: usize,
) -> Vec<Assignment> {
    let n = arranged.len();
    let num_racks = racks.values().collect::<BTreeSet<_>>().len();
    (0..partitions as usize)
        .map(|p| {
            if p > 0 && p % n == 0 {
                shift += 1;
            }
            let first = (p + start) % n;
            let leader = arranged[first];
            let mut replicas = vec![leader];
            let mut racks_used = BTreeSet::from([racks[&leader]]);
            let mut brokers_used = BTreeSet::from([leader]);
            let mut k = 0;
            for _ in 0..(rf as usize - 1) {
                loop {
                    let broker = arranged[replica_index(first, shift * num_racks, k, n)];
                    let rack = racks[&broker];
                    k += 1;
                    // Skip a broker whose rack already has a replica while some rack has
                    // none, or that has a replica itself while some broker has none.
                    if (!racks_used.contains(rack) || racks_used.len() == num_racks)
                        && (!brokers_used.contains(&broker) || brokers_used.len() == n)
                    {
                        replicas.push(broker);
                        racks_used.insert(rack);
                        brokers_used.insert(broker);
                        break;
                    }
                }
            }
            Assignment {
                partition: p as i32,
                replicas,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn racked(pairs: &[(i32, &str)]) -> Vec<BrokerRack> {
        pairs
            .iter()
            .map(|&(id, r)| BrokerRack {
                id,
                rack: Some(r.to_string()),
            })
            .collect()
    }

    fn as_map(a: &[Assignment]) -> Vec<(i32, Vec<i32>)> {
        a.iter()
            .map(|a| (a.partition, a.replicas.clone()))
            .collect()
    }

    #[test]
    fn seed_six_broker_example_alternates_racks() {
        // Brokers 0,1,2 in one availability zone and 3,4,5 in another: 0,3,1,4,2,5.
        let brokers = racked(&[(0, "1"), (1, "1"), (2, "1"), (3, "2"), (4, "2"), (5, "2")]);
        let racks: HashMap<i32, &str> = brokers
            .iter()
            .map(|b| (b.id, b.rack.as_deref().unwrap()))
            .collect();
        assert_eq!(rack_alternated(&racks), vec![0, 3, 1, 4, 2, 5]);
        let (plan, _) = assign_replicas(&brokers, 6, 2, Some(0)).unwrap();
        for a in &plan {
            let r: BTreeSet<&str> = a
                .replicas
                .iter()
                .map(|id| if *id < 3 { "1" } else { "2" })
                .collect();
            assert_eq!(
                r.len(),
                2,
                "partition {} on one rack: {:?}",
                a.partition,
                a.replicas
            );
        }
        assert_eq!(
            plan.iter().map(|a| a.replicas[0]).collect::<Vec<_>>(),
            vec![0, 3, 1, 4, 2, 5]
        );
    }

    #[test]
    fn matches_kafkas_rack_aware_vectors() {
        // Kafka's AdminRackAwareTest: racks 1:{0,5} 2:{3,4} 3:{1,2}, 7 partitions, RF 3.
        let brokers = racked(&[
            (0, "rack1"),
            (1, "rack3"),
            (2, "rack3"),
            (3, "rack2"),
            (4, "rack2"),
            (5, "rack1"),
        ]);
        let racks: HashMap<i32, &str> = brokers
            .iter()
            .map(|b| (b.id, b.rack.as_deref().unwrap()))
            .collect();
        assert_eq!(rack_alternated(&racks), vec![0, 3, 1, 5, 4, 2]);
        let mut without5 = racks.clone();
        without5.remove(&5);
        assert_eq!(rack_alternated(&without5), vec![0, 3, 1, 4, 2]);
        let (plan, start) = assign_replicas(&brokers, 7, 3, Some(0)).unwrap();
        assert_eq!(start, 0);
        assert_eq!(
            as_map(&plan),
            vec![
                (0, vec![0, 3, 1]),
                (1, vec![3, 1, 5]),
                (2, vec![1, 5, 4]),
                (3, vec![5, 4, 2]),
                (4, vec![4, 2, 0]),
                (5, vec![2, 0, 3]),
                (6, vec![0, 4, 2]),
            ]
        );
    }

    #[test]
    fn matches_kafkas_rack_unaware_vectors() {
        // Kafka's AdminTest.testReplicaAssignment: brokers 0..5, 10 partitions, RF 3.
        let brokers: Vec<BrokerRack> = (0..5).map(|id| BrokerRack { id, rack: None }).collect();
        let (plan, _) = assign_replicas(&brokers, 10, 3, Some(0)).unwrap();
        assert_eq!(
            as_map(&plan),
            vec![
                (0, vec![0, 1, 2]),
                (1, vec![1, 2, 3]),
                (2, vec![2, 3, 4]),
                (3, vec![3, 4, 0]),
                (4, vec![4, 0, 1]),
                (5, vec![0, 2, 3]),
                (6, vec![1, 3, 4]),
                (7, vec![2, 4, 0]),
                (8, vec![3, 0, 1]),
                (9, vec![4, 1, 2]),
            ]
        );
    }

    #[test]
    fn bad_input_is_refused_as_kafka_does() {
        let mixed = vec![
            BrokerRack {
                id: 0,
                rack: Some("a".into()),
            },
            BrokerRack { id: 1, rack: None },
        ];
        let e = assign_replicas(&mixed, 3, 1, None).unwrap_err();
        assert!(e.to_string().contains("not all brokers have rack"), "{e}");
        let three = racked(&[(0, "a"), (1, "b"), (2, "c")]);
        let e = assign_replicas(&three, 3, 4, None).unwrap_err();
        assert!(
            e.to_string().contains("larger than available brokers: 3"),
            "{e}"
        );
        assert!(assign_replicas(&three, 0, 1, None).is_err());
        assert!(assign_replicas(&three, 3, 0, None).is_err());
        assert!(assign_replicas(&three, 3, 1, Some(-1)).is_err());
        let dup = racked(&[(0, "a"), (0, "b")]);
        assert!(assign_replicas(&dup, 1, 1, None)
            .unwrap_err()
            .to_string()
            .contains("twice"));
    }

    fn cluster() -> impl Strategy<Value = (Vec<BrokerRack>, usize)> {
        // 1..=4 racks; each broker gets a rack; ids shuffled and sparse.
        (1usize..=4, 1usize..=9, any::<u64>()).prop_map(|(racks, n, seed)| {
            let mut rng = fastrand::Rng::with_seed(seed);
            let n = n.max(racks);
            let brokers = (0..n)
                .map(|i| BrokerRack {
                    id: (i * 3 + rng.usize(0..3)) as i32,
                    rack: Some(format!("az-{}", (b'a' + (i % racks) as u8) as char)),
                })
                .collect();
            (brokers, racks)
        })
    }

    proptest! {
        #[test]
        fn replicas_are_distinct_and_spread_over_racks(
            (brokers, racks) in cluster(),
            partitions in 1i32..60,
            rf_seed in any::<u32>(),
            start in proptest::option::of(0i32..20),
        ) {
            let rf = 1 + (rf_seed as usize % brokers.len()) as i32;
            let (plan, _) = assign_replicas(&brokers, partitions, rf, start).unwrap();
            prop_assert_eq!(plan.len(), partitions as usize);
            let rack_of: HashMap<i32, &str> =
                brokers.iter().map(|b| (b.id, b.rack.as_deref().unwrap())).collect();
            let mut leaders: HashMap<i32, usize> = HashMap::new();
            for a in &plan {
                prop_assert_eq!(a.replicas.len(), rf as usize);
                let distinct: BTreeSet<_> = a.replicas.iter().collect();
                prop_assert_eq!(distinct.len(), rf as usize, "duplicate in {:?}", a.replicas);
                let spread: BTreeSet<_> = a.replicas.iter().map(|b| rack_of[b]).collect();
                prop_assert_eq!(spread.len(), racks.min(rf as usize), "racks of {:?}", a.replicas);
                *leaders.entry(a.replicas[0]).or_default() += 1;
            }
            // Leaders go round the broker list: every broker within one of the others.
            let counts: Vec<usize> =
                brokers.iter().map(|b| leaders.get(&b.id).copied().unwrap_or(0)).collect();
            let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            prop_assert!(hi - lo <= 1, "leader counts {:?}", counts);
        }

        /// Kafka's own balance guarantee: with racks of equal size and whole rounds of
        /// partitions, every broker holds the same number of replicas.
        #[test]
        fn replica_counts_balance_on_even_racks(
            racks in 1usize..=3,
            per_rack in 1usize..=3,
            rounds in 1i32..4,
            rf_seed in any::<u32>(),
            start in 0i32..12,
        ) {
            let brokers: Vec<BrokerRack> = (0..racks * per_rack)
                .map(|i| BrokerRack {
                    id: i as i32,
                    rack: Some(format!("r{}", i % racks)),
                })
                .collect();
            let n = brokers.len();
            let rf = 1 + (rf_seed as usize % n) as i32;
            let partitions = rounds * n as i32;
            let (plan, _) = assign_replicas(&brokers, partitions, rf, Some(start)).unwrap();
            let mut counts: HashMap<i32, usize> = HashMap::new();
            for a in &plan {
                for r in &a.replicas {
                    *counts.entry(*r).or_default() += 1;
                }
            }
            let counts: Vec<usize> =
                brokers.iter().map(|b| counts.get(&b.id).copied().unwrap_or(0)).collect();
            let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            prop_assert!(hi - lo <= 1, "replica counts {:?}", counts);
        }
    }
}
