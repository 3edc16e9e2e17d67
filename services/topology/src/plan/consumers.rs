//! Rack-aware consumer assignment (KIP-881 in spirit): each partition goes to a consumer in
//! its leader's rack, so fetches stay in the availability zone, while every consumer ends
//! with ⌊P/C⌋ or ⌈P/C⌉ partitions. A partition whose rack has no consumer with room, or
//! that has no leader, goes to whichever consumer has the fewest.

use super::PlanError;
use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConsumerRack {
    pub id: String,
    #[serde(default)]
    pub rack: Option<String>,
}

/// A partition and its leader's rack (`None` when leaderless or rackless).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLeader {
    pub partition: i32,
    pub leader_rack: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConsumerAssignment {
    pub consumer_id: String,
    pub partitions: Vec<i32>,
    /// Partitions whose leader is in the consumer's rack.
    pub rack_local: u32,
}

pub fn assign_partitions(
    partitions: &[PartitionLeader],
    consumers: &[ConsumerRack],
) -> Result<Vec<ConsumerAssignment>, PlanError> {
    if consumers.is_empty() {
        return Err(PlanError::invalid("at least one consumer is required"));
    }
    let mut ids = BTreeSet::new();
    for c in consumers {
        if c.id.trim().is_empty() {
            return Err(PlanError::invalid("consumer id may not be empty"));
        }
        if !ids.insert(c.id.as_str()) {
            return Err(PlanError::invalid(format!(
                "consumer {:?} is listed twice",
                c.id
            )));
        }
    }
    // Consumers in id order, so the result does not depend on the request's order.
    let mut order: Vec<usize> = (0..consumers.len()).collect();
    order.sort_by(|&a, &b| consumers[a].id.cmp(&consumers[b].id));
    let mut sorted: Vec<&PartitionLeader> = partitions.iter().collect();
    sorted.sort_by_key(|p| p.partition);

    let c = consumers.len();
    let floor = sorted.len() / c;
    let mut ceil_slots = sorted.len() % c; // consumers that may hold floor + 1
    let mut load = vec![0usize; c];
    let mut out: Vec<Vec<i32>> = vec![Vec::new(); c];
    let local = |i: usize, p: &PartitionLeader| {
        p.leader_rack.is_some() && consumers[i].rack.is_some() && p.leader_rack == consumers[i].rack
    };

    // Pass 1: rack-local, up to ⌊P/C⌋ each, least loaded first.
    let mut left = Vec::new();
    for p in sorted {
        let pick = order
            .iter()
            .copied()
            .filter(|&i| local(i, p) && load[i] < floor)
            .min_by_key(|&i| load[i]);
        match pick {
            Some(i) => {
                load[i] += 1;
                out[i].push(p.partition);
            }
            None => left.push(p),
        }
    }
    // Pass 2: the rest. Fill consumers under ⌊P/C⌋ first, then hand out the ⌈P/C⌉ slots;
    // within each, a rack-local consumer wins over a remote one.
    for p in left {
        let under = |i: &usize| load[*i] < floor;
        let pick = order
            .iter()
            .copied()
            .filter(under)
            .min_by_key(|&i| (!local(i, p), load[i]))
            .or_else(|| {
                (ceil_slots > 0)
                    .then(|| {
                        order
                            .iter()
                            .copied()
                            .filter(|&i| load[i] == floor)
                            .min_by_key(|&i| !local(i, p))
                    })
                    .flatten()
            })
            .expect("loads sum to the partition count");
        if load[pick] == floor {
            ceil_slots -= 1;
        }
        load[pick] += 1;
        out[pick].push(p.partition);
    }
    Ok(order
        .into_iter()
        .map(|i| {
            let mut parts = std::mem::take(&mut out[i]);
            parts.sort_unstable();
            let rack_local = parts
                .iter()
                .filter(|&&n| partitions.iter().any(|p| p.partition == n && local(i, p)))
                .count() as u32;
            ConsumerAssignment {
                consumer_id: consumers[i].id.clone(),
                partitions: parts,
                rack_local,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn part(partition: i32, rack: Option<&str>) -> PartitionLeader {
        PartitionLeader {
            partition,
            leader_rack: rack.map(str::to_string),
        }
    }

    fn consumer(id: &str, rack: Option<&str>) -> ConsumerRack {
        ConsumerRack {
            id: id.into(),
            rack: rack.map(str::to_string),
        }
    }

    #[test]
    fn partitions_stay_in_their_leaders_rack() {
        let parts: Vec<_> = (0..6)
            .map(|p| part(p, Some(["az-a", "az-b", "az-c"][p as usize % 3])))
            .collect();
        let consumers = [
            consumer("c1", Some("az-a")),
            consumer("c2", Some("az-b")),
            consumer("c3", Some("az-c")),
        ];
        let a = assign_partitions(&parts, &consumers).unwrap();
        assert_eq!(a[0].partitions, vec![0, 3]);
        assert_eq!(a[1].partitions, vec![1, 4]);
        assert_eq!(a[2].partitions, vec![2, 5]);
        assert!(a.iter().all(|c| c.rack_local == 2));
    }

    #[test]
    fn a_rack_without_consumers_falls_back_and_stays_balanced() {
        // az-c has partitions but no consumer; az-a has two consumers.
        let parts: Vec<_> = (0..7)
            .map(|p| part(p, Some(["az-a", "az-b", "az-c"][p as usize % 3])))
            .collect();
        let consumers = [
            consumer("a1", Some("az-a")),
            consumer("a2", Some("az-a")),
            consumer("b1", Some("az-b")),
        ];
        let a = assign_partitions(&parts, &consumers).unwrap();
        let mut all: Vec<i32> = a.iter().flat_map(|c| c.partitions.clone()).collect();
        all.sort_unstable();
        assert_eq!(all, (0..7).collect::<Vec<_>>());
        let loads: Vec<usize> = a.iter().map(|c| c.partitions.len()).collect();
        assert!(
            loads.iter().max().unwrap() - loads.iter().min().unwrap() <= 1,
            "{loads:?}"
        );
        // Every az-a and az-b partition (0,1,3,4,6) is rack-local.
        assert_eq!(a.iter().map(|c| c.rack_local).sum::<u32>(), 5);
    }

    #[test]
    fn bad_input() {
        assert!(assign_partitions(&[part(0, None)], &[]).is_err());
        let dup = [consumer("x", None), consumer("x", None)];
        assert!(assign_partitions(&[part(0, None)], &dup)
            .unwrap_err()
            .to_string()
            .contains("twice"));
        assert!(assign_partitions(&[part(0, None)], &[consumer(" ", None)]).is_err());
    }

    proptest! {
        #[test]
        fn every_partition_once_and_balanced(
            racks in proptest::collection::vec(proptest::option::of(0u8..4), 0..40),
            consumers in proptest::collection::vec(proptest::option::of(0u8..4), 1..9),
        ) {
            let parts: Vec<_> = racks
                .iter()
                .enumerate()
                .map(|(i, r)| PartitionLeader {
                    partition: i as i32,
                    leader_rack: r.map(|r| format!("r{r}")),
                })
                .collect();
            let cons: Vec<_> = consumers
                .iter()
                .enumerate()
                .map(|(i, r)| ConsumerRack { id: format!("c{i:02}"), rack: r.map(|r| format!("r{r}")) })
                .collect();
            let a = assign_partitions(&parts, &cons).unwrap();
            let mut all: Vec<i32> = a.iter().flat_map(|c| c.partitions.clone()).collect();
            all.sort_unstable();
            prop_assert_eq!(all, (0..parts.len() as i32).collect::<Vec<_>>());
            let loads: Vec<usize> = a.iter().map(|c| c.partitions.len()).collect();
            prop_assert!(loads.iter().max().unwrap() - loads.iter().min().unwrap() <= 1);
            // A rack with consumers keeps at least as many of its partitions local as its
            // consumers can hold at ⌊P/C⌋ each.
            let floor = parts.len() / cons.len();
            for r in 0u8..4 {
                let rack = Some(format!("r{r}"));
                let here = parts.iter().filter(|p| p.leader_rack == rack).count();
                let holders = cons.iter().filter(|c| c.rack == rack).count();
                let local: u32 = a
                    .iter()
                    .zip(&cons)
                    .filter(|(_, c)| c.rack == rack)
                    .map(|(x, _)| x.rack_local)
                    .sum();
                prop_assert!(local as usize >= here.min(holders * floor));
            }
        }
    }
}
