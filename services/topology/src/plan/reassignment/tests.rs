use super::racks::Racks;
use super::staging::stage;
use super::*;
use crate::plan::{assign_replicas, BrokerRack};
use proptest::prelude::*;
use std::collections::HashMap;

fn broker(id: i32, rack: &str, free: i64) -> TargetBroker {
    TargetBroker {
        id,
        rack: Some(rack.into()),
        free_disk_bytes: free,
    }
}

fn placement(partition: i32, replicas: &[i32], size: i64) -> Placement {
    Placement {
        topic: "events".into(),
        partition,
        replicas: replicas.to_vec(),
        size_bytes: size,
    }
}

/// Replays a plan and checks every limit; returns the final assignment.
fn replay(req: &ReassignmentRequest, plan: &ReassignmentPlan) -> BTreeMap<(String, i32), Vec<i32>> {
    let racks: HashMap<i32, Option<String>> =
        req.brokers.iter().map(|b| (b.id, b.rack.clone())).collect();
    let rack_count = req
        .brokers
        .iter()
        .map(|b| b.rack.clone().unwrap_or_else(|| format!("b{}", b.id)))
        .collect::<BTreeSet<_>>()
        .len();
    let spread = |set: &[i32]| {
        set.iter()
            .map(|b| match racks.get(b) {
                Some(Some(r)) => r.clone(),
                _ => format!("b{b}"),
            })
            .collect::<BTreeSet<_>>()
            .len()
    };
    let mut state: BTreeMap<(String, i32), Vec<i32>> = req
        .current
        .iter()
        .map(|p| ((p.topic.clone(), p.partition), p.replicas.clone()))
        .collect();
    let original = state.clone();
    let mut free: HashMap<i32, i64> = req
        .brokers
        .iter()
        .map(|b| (b.id, b.free_disk_bytes))
        .collect();
    let mut moved = HashSet::new();
    for stage in &plan.stages {
        let mut taken: HashMap<i32, u32> = HashMap::new();
        let mut low = free.clone();
        for m in &stage.moves {
            let key = (m.topic.clone(), m.partition);
            assert!(moved.insert(key.clone()), "{key:?} moved twice");
            assert_eq!(state[&key], m.from, "move starts from the current state");
            let rf = m.from.len();
            assert_eq!(m.to.len(), rf);
            assert_eq!(
                m.to.iter().collect::<HashSet<_>>().len(),
                rf,
                "distinct {:?}",
                m.to
            );
            assert!(
                m.to.iter().all(|b| racks.contains_key(b)),
                "only target brokers"
            );
            // While moving, the partition holds old ∪ new; afterwards new.
            let union: Vec<i32> = m
                .from
                .iter()
                .chain(m.incoming().collect::<Vec<_>>().iter())
                .copied()
                .collect();
            let need = rack_count.min(rf);
            assert!(spread(&m.to) >= need, "{:?} spans too few racks", m.to);
            assert!(spread(&union) >= need);
            for b in m.incoming() {
                *taken.entry(b).or_default() += 1;
                *low.get_mut(&b).unwrap() -= m.size_bytes;
            }
        }
        for (b, n) in &taken {
            assert!(
                *n <= req.max_moves_per_broker,
                "broker {b} takes {n} moves in stage {}",
                stage.index
            );
        }
        for (b, l) in &low {
            assert!(
                *l >= 0,
                "broker {b} overfills in stage {}: {l}",
                stage.index
            );
        }
        for m in &stage.moves {
            for b in m.outgoing() {
                if let Some(f) = free.get_mut(&b) {
                    *f += m.size_bytes;
                }
            }
            for b in m.incoming() {
                *free.get_mut(&b).unwrap() -= m.size_bytes;
            }
            state.insert((m.topic.clone(), m.partition), m.to.clone());
        }
        // Between stages no partition spans fewer racks than it needs, unless it
        // started narrower and has not moved yet.
        for (k, set) in &state {
            let need = rack_count.min(set.len());
            assert!(spread(set) >= need.min(spread(&original[k])));
        }
    }
    state
}

#[test]
fn disk_counts_the_old_copy_until_the_stage_ends() {
    // p2 leaves broker 4 while p0 arrives there. Broker 4 has 50 bytes free: p0 (100)
    // fits only once p2's old copy is deleted, at the end of stage 0, not during it.
    let req = ReassignmentRequest {
        current: vec![],
        brokers: vec![
            broker(2, "b", 1000),
            broker(4, "a", 50),
            broker(6, "a", 1000),
        ],
        max_moves_per_broker: 10,
    };
    let mv = |partition, from: &[i32], to: &[i32]| Move {
        topic: "events".into(),
        partition,
        from: from.to_vec(),
        to: to.to_vec(),
        size_bytes: 100,
    };
    let racks = Racks {
        of: req
            .brokers
            .iter()
            .map(|b| (b.id, b.rack.clone().unwrap()))
            .collect(),
        count: 2,
    };
    let stages = stage(
        vec![mv(0, &[1, 2], &[4, 2]), mv(2, &[4, 2], &[6, 2])],
        &req,
        &racks,
    )
    .unwrap();
    assert_eq!(stages.len(), 2, "{stages:#?}");
    assert_eq!(stages[0].moves[0].partition, 2);
    assert_eq!(stages[1].moves[0].partition, 0);
    let d4 = |s: &Stage| s.disk.iter().find(|d| d.broker_id == 4).unwrap().clone();
    assert_eq!(
        (
            d4(&stages[0]).free_at_start_bytes,
            d4(&stages[0]).free_low_bytes
        ),
        (50, 50)
    );
    assert_eq!(
        (
            d4(&stages[1]).free_at_start_bytes,
            d4(&stages[1]).free_low_bytes
        ),
        (150, 50)
    );
    let json: serde_json::Value = serde_json::from_str(&reassignment_json(&stages[1])).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"version": 1, "partitions": [
            {"topic": "events", "partition": 0, "replicas": [4, 2]}
        ]})
    );
}

#[test]
fn retiring_a_broker_lands_its_replicas_where_there_is_room() {
    let req = ReassignmentRequest {
        current: vec![
            placement(0, &[1, 2], 100),
            placement(1, &[1, 3], 100),
            placement(2, &[4, 2], 100),
        ],
        brokers: vec![
            broker(2, "b", 1000),
            broker(3, "c", 1000),
            broker(4, "a", 150),
            broker(5, "a", 0),
        ],
        max_moves_per_broker: 10,
    };
    let plan = plan_reassignment(&req).unwrap();
    let end = replay(&req, &plan);
    assert!(
        end.values().all(|s| !s.contains(&1) && !s.contains(&5)),
        "{end:?}"
    );
}

#[test]
fn move_limit_splits_stages() {
    // Three new brokers in rack a; 6 partitions from old broker 9 must land there.
    let current: Vec<Placement> = (0..6).map(|p| placement(p, &[9, 2], 10)).collect();
    let req = ReassignmentRequest {
        current,
        brokers: vec![
            broker(1, "a", 1_000),
            broker(2, "b", 1_000),
            broker(3, "a", 1_000),
        ],
        max_moves_per_broker: 1,
    };
    let plan = plan_reassignment(&req).unwrap();
    replay(&req, &plan);
    assert!(plan.stages.len() >= 3, "{} stages", plan.stages.len());
    assert_eq!(
        plan.replicas_moved,
        plan.stages
            .iter()
            .map(|s| s
                .moves
                .iter()
                .map(|m| m.incoming().count() as u32)
                .sum::<u32>())
            .sum::<u32>()
    );
}

#[test]
fn infeasible_disk_and_bad_input_are_errors() {
    let req = ReassignmentRequest {
        current: vec![placement(0, &[1, 2], 500)],
        brokers: vec![broker(2, "b", 1000), broker(3, "a", 100)],
        max_moves_per_broker: 1,
    };
    let e = plan_reassignment(&req).unwrap_err();
    assert!(matches!(e, PlanError::Infeasible(_)), "{e}");
    assert!(e.to_string().contains("broker 3 has 100 bytes free"), "{e}");

    let mut bad = req.clone();
    bad.max_moves_per_broker = 0;
    assert!(matches!(
        plan_reassignment(&bad),
        Err(PlanError::Invalid(_))
    ));
    let mut bad = req.clone();
    bad.brokers[1].rack = None;
    assert!(plan_reassignment(&bad)
        .unwrap_err()
        .to_string()
        .contains("rack"));
    let mut bad = req.clone();
    bad.current[0].replicas = vec![2, 2];
    assert!(plan_reassignment(&bad)
        .unwrap_err()
        .to_string()
        .contains("twice"));
    let mut bad = req.clone();
    bad.current[0].replicas = vec![1, 2, 3];
    assert!(plan_reassignment(&bad)
        .unwrap_err()
        .to_string()
        .contains("larger than target brokers"));
}

fn scenario() -> impl Strategy<Value = ReassignmentRequest> {
    (
        1usize..=3,
        1usize..=3,
        1usize..=3,
        1i32..30,
        any::<u64>(),
        1u32..4,
        any::<bool>(),
    )
        .prop_map(
            |(racks, old_per_rack, new_per_rack, partitions, seed, max, tight)| {
                let mut rng = fastrand::Rng::with_seed(seed);
                let old: Vec<BrokerRack> = (0..racks * old_per_rack)
                    .map(|i| BrokerRack {
                        id: i as i32,
                        rack: Some(format!("r{}", i % racks)),
                    })
                    .collect();
                let rf = 1 + rng.usize(..old.len().min(racks * new_per_rack).min(3)) as i32;
                let (plan, _) = assign_replicas(&old, partitions, rf, Some(rng.i32(0..6))).unwrap();
                let current: Vec<Placement> = plan
                    .into_iter()
                    .map(|a| Placement {
                        topic: "t".into(),
                        partition: a.partition,
                        replicas: a.replicas,
                        size_bytes: rng.i64(1..1000),
                    })
                    .collect();
                // The target keeps some old brokers and adds new ones (ids from 100).
                let brokers: Vec<TargetBroker> = (0..racks * new_per_rack)
                    .map(|i| TargetBroker {
                        id: if rng.bool() { i as i32 } else { 100 + i as i32 },
                        rack: Some(format!("r{}", i % racks)),
                        free_disk_bytes: if tight { rng.i64(1000..5000) } else { 1 << 40 },
                    })
                    .collect();
                ReassignmentRequest {
                    current,
                    brokers,
                    max_moves_per_broker: max,
                }
            },
        )
}

proptest! {
    #[test]
    fn every_stage_keeps_limits_and_the_end_is_balanced(req in scenario()) {
        match plan_reassignment(&req) {
            Ok(plan) => {
                let end = replay(&req, &plan);
                for p in &plan.target {
                    prop_assert_eq!(&end[&(p.topic.clone(), p.partition)], &p.replicas);
                }
                // Racks of equal size and room on every disk: replica and leader counts
                // within one. (A tight disk may rule balance out.)
                if req.brokers.iter().any(|b| b.free_disk_bytes < 1 << 40) {
                    return Ok(());
                }
                let mut replicas: HashMap<i32, usize> = req.brokers.iter().map(|b| (b.id, 0)).collect();
                let mut leaders = replicas.clone();
                for set in end.values() {
                    for b in set { *replicas.get_mut(b).unwrap() += 1; }
                    *leaders.get_mut(&set[0]).unwrap() += 1;
                }
                let gap = |m: &HashMap<i32, usize>| m.values().max().unwrap() - m.values().min().unwrap();
                prop_assert!(gap(&replicas) <= 1, "replicas {:?}", replicas);
                prop_assert!(gap(&leaders) <= 1, "leaders {:?}", leaders);
            }
            // Only a tight disk may make a plan impossible, and then it says so.
            Err(PlanError::Infeasible(m)) => {
                prop_assert!(req.brokers.iter().all(|b| b.free_disk_bytes < 1 << 40), "{}", m);
                prop_assert!(m.contains("bytes free"), "{}", m);
            }
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
    }
}
