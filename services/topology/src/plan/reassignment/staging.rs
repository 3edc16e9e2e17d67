//! Cutting the moves into stages.

use super::racks::Racks;
use super::{BrokerDisk, Move, ReassignmentRequest, Stage};
use crate::plan::PlanError;
use std::collections::{BTreeMap, HashSet};

/// Cuts moves into stages. Partitions that gain rack spread go first, then those leaving
/// retired brokers, then the rest; larger partitions before smaller within each.
pub(super) fn stage(
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
