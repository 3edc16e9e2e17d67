//! The target: where every partition should end.

use super::balance::{balance_replicas, order_leaders};
use super::racks::Racks;
use super::Placement;
use std::collections::{BTreeMap, HashSet};

/// Where every partition should end: its replica list, leader first.
///
/// `disk` starts as each broker's free disk and tracks what it would be at the end: a
/// replica dropped from a broker gives its size back, one added takes it. New replicas
/// prefer brokers with room.
pub(super) fn target_sets(
    current: &[Placement],
    brokers: &[i32],
    racks: &Racks,
    mut disk: BTreeMap<i32, i64>,
) -> Vec<Vec<i32>> {
    let is_target: HashSet<i32> = brokers.iter().copied().collect();
    let mut load: BTreeMap<i32, usize> = brokers.iter().map(|&b| (b, 0)).collect();
    let quota = {
        let total: usize = current.iter().map(|p| p.replicas.len()).sum();
        total.div_ceil(brokers.len().max(1))
    };

    // Keep what may stay: one replica per rack first, then extras within the rack cap and
    // only while the remaining slots can still reach the racks not yet covered.
    let mut sets: Vec<Vec<i32>> = current
        .iter()
        .map(|p| {
            let rf = p.replicas.len();
            let mut keep: Vec<i32> = Vec::with_capacity(rf);
            for &r in &p.replicas {
                if is_target.contains(&r)
                    && load[&r] < quota
                    && !keep.iter().any(|&k| racks.rack(k) == racks.rack(r))
                {
                    keep.push(r);
                }
            }
            for &r in &p.replicas {
                if !is_target.contains(&r) || keep.contains(&r) || load[&r] >= quota {
                    continue;
                }
                let uncovered = racks.need(rf).saturating_sub(racks.spread(&keep));
                if racks.in_rack(&keep, racks.rack(r)) < racks.cap(rf)
                    && rf - keep.len() > uncovered
                {
                    keep.push(r);
                }
            }
            for &k in &keep {
                *load.get_mut(&k).expect("target broker") += 1;
            }
            for r in p
                .replicas
                .iter()
                .filter(|r| is_target.contains(r) && !keep.contains(r))
            {
                *disk.get_mut(r).expect("target broker") += p.size_bytes;
            }
            keep
        })
        .collect();

    // Fill: the rack this partition has least of, then the least loaded broker in it.
    for (set, p) in sets.iter_mut().zip(current) {
        while set.len() < p.replicas.len() {
            let pick = brokers
                .iter()
                .copied()
                .filter(|b| !set.contains(b))
                .min_by_key(|&b| {
                    (
                        racks.in_rack(set, racks.rack(b)),
                        disk[&b] < p.size_bytes,
                        load[&b],
                        b,
                    )
                })
                .expect("rf <= target brokers");
            set.push(pick);
            *load.get_mut(&pick).expect("target broker") += 1;
            *disk.get_mut(&pick).expect("target broker") -= p.size_bytes;
        }
    }

    balance_replicas(&mut sets, current, brokers, racks, &mut load, &mut disk);
    order_leaders(&mut sets, current, brokers);
    sets
}
