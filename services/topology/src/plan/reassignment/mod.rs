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

mod balance;
mod racks;
mod staging;
mod target;
#[cfg(test)]
mod tests;

use super::PlanError;
use racks::Racks;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};

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
    let target = target::target_sets(&current, &target_ids, &racks, free);
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
    let stages = staging::stage(moves, req, &racks)?;
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
