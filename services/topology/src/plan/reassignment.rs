//! Staged reassignment onto a target broker set (adding spot capacity, retiring brokers).
//!
//! The target keeps every replica it can, spreads each partition over
//! min(racks, replication factor) racks, and balances replica and leader counts. The moves
//! are then cut into stages, each one `kafka-reassign-partitions` run:
//! - a partition moves whole, in one stage: Kafka adds the new replicas, then drops the old,
//!   so while it moves the partition holds old ∪ new, which spreads at least as wide as
//!   either;
//! - no broker receives more than `max_moves_per_broker` replicas in a stage;
//! - a broker's free disk covers every copy it receives in the stage while the copies it
//!   gives up still count as used: space comes back only when the stage ends.

use super::PlanError;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    /// One replica's size in bytes.
    #[serde(default)]
    pub size_bytes: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetBroker {
    pub id: i32,
    #[serde(default)]
    pub rack: Option<String>,
    pub free_disk_bytes: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReassignmentRequest {
    pub current: Vec<Placement>,
    pub brokers: Vec<TargetBroker>,
    pub max_moves_per_broker: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    pub topic: String,
    pub partition: i32,
    pub from: Vec<i32>,
    pub to: Vec<i32>,
    pub size_bytes: i64,
}

impl Move {
    /// Brokers that receive a copy.
    pub fn incoming(&self) -> impl Iterator<Item = i32> + '_ {
        self.to.iter().copied().filter(|b| !self.from.contains(b))
    }

    /// Brokers that give theirs up when the move completes.
    pub fn outgoing(&self) -> impl Iterator<Item = i32> + '_ {
        self.from.iter().copied().filter(|b| !self.to.contains(b))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokerDisk {
    pub broker_id: i32,
    pub free_at_start_bytes: i64,
    pub free_low_bytes: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    pub index: u32,
    pub moves: Vec<Move>,
    pub disk: Vec<BrokerDisk>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReassignmentPlan {
    pub stages: Vec<Stage>,
    pub target: Vec<Placement>,
    pub replicas_moved: u32,
    pub bytes_moved: i64,
}

/// The stage in `kafka-reassign-partitions --reassignment-json-file` form.
pub fn reassignment_json(stage: &Stage) -> String {
    let partitions: Vec<serde_json::Value> = stage
        .moves
        .iter()
        .map(|m| {
            serde_json::json!({
                "topic": m.topic,
                "partition": m.partition,
                "replicas": m.to,
            })
        })
        .collect();
    serde_json::json!({ "version": 1, "partitions": partitions }).to_string()
}

/// Rack bookkeeping for validity checks.
struct Racks {
    of: HashMap<i32, String>,
    count: usize,
}

impl Racks {
    fn rack(&self, b: i32) -> &str {
        // Brokers outside the target set have no known rack; each counts as its own.
        self.of.get(&b).map(String::as_str).unwrap_or("")
    }

    /// Racks a set of `rf` replicas must span.
    fn need(&self, rf: usize) -> usize {
        self.count.min(rf)
    }

    /// The most replicas of one partition a rack may hold.
    fn cap(&self, rf: usize) -> usize {
        rf.div_ceil(self.count)
    }

    fn spread(&self, set: &[i32]) -> usize {
        set.iter()
            .map(|&b| self.rack(b))
            .collect::<BTreeSet<_>>()
            .len()
    }

    fn in_rack(&self, set: &[i32], rack: &str) -> usize {
        set.iter().filter(|&&b| self.rack(b) == rack).count()
    }

    fn valid(&self, set: &[i32]) -> bool {
        let rf = set.len();
        self.spread(set) >= self.need(rf)
            && set
                .iter()
                .all(|&b| self.in_rack(set, self.rack(b)) <= self.cap(rf))
    }
}

fn validate(req: &ReassignmentRequest) -> Result<(), PlanError> {
    if req.max_moves_per_broker == 0 {
        return Err(PlanError::invalid(
            "max_moves_per_broker must be at least 1",
        ));
    }
    if req.brokers.is_empty() {
        return Err(PlanError::invalid("at least one target broker is required"));
    }
    let mut ids = HashSet::new();
    for b in &req.brokers {
        if b.id < 0 {
            return Err(PlanError::invalid(format!(
                "broker id {} is negative",
                b.id
            )));
        }
        if !ids.insert(b.id) {
            return Err(PlanError::invalid(format!(
                "broker {} is listed twice",
                b.id
            )));
        }
        if b.free_disk_bytes < 0 {
            return Err(PlanError::invalid(format!(
                "broker {}: free_disk_bytes may not be negative",
                b.id
            )));
        }
        if b.rack.as_deref().is_some_and(|r| r.trim().is_empty()) {
            return Err(PlanError::invalid(format!("broker {}: blank rack", b.id)));
        }
    }
    let racked = req.brokers.iter().filter(|b| b.rack.is_some()).count();
    if racked != 0 && racked != req.brokers.len() {
        return Err(PlanError::invalid(
            "not all brokers have rack information for rack aware reassignment",
        ));
    }
    let mut seen = HashSet::new();
    for p in &req.current {
        let name = format!("{}-{}", p.topic, p.partition);
        if p.topic.is_empty() || p.partition < 0 {
            return Err(PlanError::invalid(format!("bad partition {name:?}")));
        }
        if !seen.insert((p.topic.as_str(), p.partition)) {
            return Err(PlanError::invalid(format!("{name} is listed twice")));
        }
        if p.replicas.is_empty() {
            return Err(PlanError::invalid(format!("{name} has no replicas")));
        }
        if p.replicas.iter().collect::<HashSet<_>>().len() != p.replicas.len() {
            return Err(PlanError::invalid(format!(
                "{name} lists a replica twice: {:?}",
                p.replicas
            )));
        }
        if p.size_bytes < 0 {
            return Err(PlanError::invalid(format!(
                "{name}: size may not be negative"
            )));
        }
        if p.replicas.len() > req.brokers.len() {
            return Err(PlanError::invalid(format!(
                "{name}: replication factor {} larger than target brokers: {}",
                p.replicas.len(),
                req.brokers.len()
            )));
        }
    }
    Ok(())
}

pub fn plan_reassignment(req: &ReassignmentRequest) -> Result<ReassignmentPlan, PlanError> {
    validate(req)?;
    let racks = Racks {
        // Without racks every broker is its own: spread then means distinct brokers.
        of: req
            .brokers
            .iter()
            .map(|b| {
                (
                    b.id,
                    b.rack.clone().unwrap_or_else(|| format!("broker-{}", b.id)),
                )
            })
            .collect(),
        count: req
            .brokers
            .iter()
            .map(|b| b.rack.clone().unwrap_or_else(|| format!("broker-{}", b.id)))
            .collect::<BTreeSet<_>>()
            .len(),
    };
    let mut current = req.current.clone();
    current.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let target_ids: Vec<i32> = {
        let mut v: Vec<i32> = req.brokers.iter().map(|b| b.id).collect();
        v.sort_unstable();
        v
    };
    let free: BTreeMap<i32, i64> = req
        .brokers
        .iter()
        .map(|b| (b.id, b.free_disk_bytes))
        .collect();
    let target = target_sets(&current, &target_ids, &racks, free);
    let moves: Vec<Move> = current
        .iter()
        .zip(&target)
        .filter(|(p, t)| p.replicas != **t)
        .map(|(p, t)| Move {
            topic: p.topic.clone(),
            partition: p.partition,
            from: p.replicas.clone(),
            to: t.clone(),
            size_bytes: p.size_bytes,
        })
        .collect();
    let replicas_moved: u32 = moves.iter().map(|m| m.incoming().count() as u32).sum();
    let bytes_moved: i64 = moves
        .iter()
        .map(|m| m.size_bytes * m.incoming().count() as i64)
        .sum();
    let stages = stage(moves, req, &racks)?;
    Ok(ReassignmentPlan {
        stages,
        target: current
            .iter()
            .zip(target)
            .map(|(p, t)| Placement {
                replicas: t,
                ..p.clone()
            })
            .collect(),
        replicas_moved,
        bytes_moved,
    })
}

/// Where every partition should end: its replica list, leader first.
///
/// `disk` starts as each broker's free disk and tracks what it would be at the end: a
/// replica dropped from a broker gives its size back, one added takes it. New replicas
/// prefer brokers with room.
fn target_sets(
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

/// Moves replicas from the most to the least loaded brokers while the gap exceeds one and
/// a move keeps the partition's rack spread valid. Each move strictly lowers the sum of
/// squared loads, so this ends.
fn balance_replicas(
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
fn order_leaders(sets: &mut [Vec<i32>], current: &[Placement], brokers: &[i32]) {
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
fn leader_path(
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

/// Cuts moves into stages. Partitions that gain rack spread go first, then those leaving
/// retired brokers, then the rest; larger partitions before smaller within each.
fn stage(
    mut pending: Vec<Move>,
    req: &ReassignmentRequest,
    racks: &Racks,
) -> Result<Vec<Stage>, PlanError> {
    let targets: HashSet<i32> = req.brokers.iter().map(|b| b.id).collect();
    pending.sort_by_key(|m| {
        let fixes_spread = racks.spread(&m.from) < racks.need(m.from.len());
        let leaves_retired = m.from.iter().any(|b| !targets.contains(b));
        (
            !fixes_spread,
            !leaves_retired,
            std::cmp::Reverse(m.size_bytes),
        )
    });
    let mut free: BTreeMap<i32, i64> = req
        .brokers
        .iter()
        .map(|b| (b.id, b.free_disk_bytes))
        .collect();
    let max = req.max_moves_per_broker as usize;
    let mut stages = Vec::new();
    while !pending.is_empty() {
        let start = free.clone();
        let mut low = free.clone();
        let mut taken: BTreeMap<i32, usize> = BTreeMap::new();
        let mut moves = Vec::new();
        let mut rest = Vec::new();
        for m in pending {
            let fits = m
                .incoming()
                .all(|b| taken.get(&b).copied().unwrap_or(0) < max && low[&b] >= m.size_bytes);
            if fits {
                for b in m.incoming() {
                    *taken.entry(b).or_default() += 1;
                    *low.get_mut(&b).expect("target") -= m.size_bytes;
                }
                moves.push(m);
            } else {
                rest.push(m);
            }
        }
        if moves.is_empty() {
            let m = &rest[0];
            let short = m
                .incoming()
                .find(|b| low[b] < m.size_bytes)
                .map(|b| format!("broker {b} has {} bytes free", low[&b]))
                .unwrap_or_else(|| "no broker can take it".into());
            return Err(PlanError::Infeasible(format!(
                "{}-{} ({} bytes) cannot move to {:?}: {short}, and no remaining move frees space there",
                m.topic, m.partition, m.size_bytes, m.to
            )));
        }
        // The stage ends: old copies are deleted, so their space returns.
        for m in &moves {
            for b in m.outgoing() {
                if let Some(f) = free.get_mut(&b) {
                    *f += m.size_bytes;
                }
            }
            for b in m.incoming() {
                *free.get_mut(&b).expect("target") -= m.size_bytes;
            }
        }
        let disk = start
            .iter()
            .map(|(&b, &s)| BrokerDisk {
                broker_id: b,
                free_at_start_bytes: s,
                free_low_bytes: low[&b],
            })
            .collect();
        stages.push(Stage {
            index: stages.len() as u32,
            moves,
            disk,
        });
        pending = rest;
    }
    Ok(stages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{assign_replicas, BrokerRack};
    use proptest::prelude::*;

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
    fn replay(
        req: &ReassignmentRequest,
        plan: &ReassignmentPlan,
    ) -> BTreeMap<(String, i32), Vec<i32>> {
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
                    let (plan, _) =
                        assign_replicas(&old, partitions, rf, Some(rng.i32(0..6))).unwrap();
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
}
