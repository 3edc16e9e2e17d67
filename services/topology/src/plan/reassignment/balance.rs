//! Balancing the target: replica counts, then leader counts.

use super::racks::Racks;
use super::Placement;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Moves replicas from the most to the least loaded brokers while the gap exceeds one and
/// a move keeps the partition's rack spread valid. Each move strictly lowers the sum of
/// squared loads, so this ends.
pub(super) fn balance_replicas(
    sets: &mut [Vec<i32>],
    current: &[Placement],
    brokers: &[i32],
    racks: &Racks,
    load: &mut BTreeMap<i32, usize>,
    disk: &mut BTreeMap<i32, i64>,
) {
    loop {
        let mut by_load: Vec<i32> = brokers.to_vec();
        by_load.sort_by_key(|b| (load[b], *b));
        let mut moved = false;
        'pairs: for &hi in by_load.iter().rev() {
            for &lo in &by_load {
                if load[&hi] <= load[&lo] + 1 {
                    break;
                }
                // Prefer undoing an addition (no extra data moves) over moving a kept copy.
                let mut best: Option<(bool, usize)> = None;
                for (i, set) in sets.iter().enumerate() {
                    if !set.contains(&hi) || set.contains(&lo) || disk[&lo] < current[i].size_bytes
                    {
                        continue;
                    }
                    let mut cand = set.clone();
                    let pos = cand.iter().position(|&b| b == hi).expect("present");
                    cand[pos] = lo;
                    if racks.valid(set) && !racks.valid(&cand) {
                        continue;
                    }
                    if racks.spread(&cand) < racks.spread(set) {
                        continue;
                    }
                    let kept_copy = current[i].replicas.contains(&hi);
                    if best.is_none_or(|(k, _)| k && !kept_copy) {
                        best = Some((kept_copy, i));
                    }
                    if !kept_copy {
                        break;
                    }
                }
                if let Some((_, i)) = best {
                    let pos = sets[i].iter().position(|&b| b == hi).expect("present");
                    sets[i][pos] = lo;
                    *load.get_mut(&hi).expect("target") -= 1;
                    *load.get_mut(&lo).expect("target") += 1;
                    *disk.get_mut(&hi).expect("target") += current[i].size_bytes;
                    *disk.get_mut(&lo).expect("target") -= current[i].size_bytes;
                    moved = true;
                    break 'pairs;
                }
            }
        }
        if !moved {
            return;
        }
    }
}

/// Orders each set leader first: the current leader when it stays, else the first kept
/// replica. Then evens out leader counts: while some broker leads two more partitions than
/// another it can reach through a chain of "leads a partition that also has a replica on",
/// leadership shifts one step along the chain.
pub(super) fn order_leaders(sets: &mut [Vec<i32>], current: &[Placement], brokers: &[i32]) {
    let mut leaders: BTreeMap<i32, usize> = brokers.iter().map(|&b| (b, 0)).collect();
    for (set, p) in sets.iter_mut().zip(current) {
        // Keep the current order of surviving replicas, new ones after them.
        set.sort_by_key(|b| p.replicas.iter().position(|r| r == b).unwrap_or(usize::MAX));
        *leaders.get_mut(&set[0]).expect("target") += 1;
    }
    loop {
        let mut by_count: Vec<i32> = brokers.to_vec();
        by_count.sort_by_key(|b| (std::cmp::Reverse(leaders[b]), *b));
        let mut shifted = false;
        for &hi in &by_count {
            if let Some(path) = leader_path(sets, &leaders, hi) {
                // path: (partition, new leader) from hi outwards; apply from the far end.
                for &(i, to) in path.iter().rev() {
                    let from = sets[i][0];
                    let pos = sets[i].iter().position(|&b| b == to).expect("replica");
                    sets[i].swap(0, pos);
                    *leaders.get_mut(&from).expect("target") -= 1;
                    *leaders.get_mut(&to).expect("target") += 1;
                }
                shifted = true;
                break;
            }
        }
        if !shifted {
            return;
        }
    }
}

/// A breadth-first chain of leadership hand-overs from `hi` to a broker that leads at
/// least two fewer partitions, or `None`.
pub(super) fn leader_path(
    sets: &[Vec<i32>],
    leaders: &BTreeMap<i32, usize>,
    hi: i32,
) -> Option<Vec<(usize, i32)>> {
    let top = leaders[&hi];
    let mut prev: HashMap<i32, (i32, usize)> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([hi]);
    let mut seen = HashSet::from([hi]);
    while let Some(b) = queue.pop_front() {
        for (i, set) in sets.iter().enumerate().filter(|(_, s)| s[0] == b) {
            for &r in &set[1..] {
                if !seen.insert(r) {
                    continue;
                }
                prev.insert(r, (b, i));
                if leaders[&r] + 2 <= top {
                    let mut path = Vec::new();
                    let mut at = r;
                    while at != hi {
                        let (from, part) = prev[&at];
                        path.push((part, at));
                        at = from;
                    }
                    path.reverse();
                    return Some(path);
                }
                queue.push_back(r);
            }
        }
    }
    None
}
