//! The `show` table and the snapshot as JSON.

use super::unix_ms;
use ballast_proto::topology::v1 as pb;
use std::collections::BTreeMap;

pub(super) fn snapshot_json(s: &pb::TopologySnapshot) -> serde_json::Value {
    serde_json::json!({
        "version": s.version,
        "cluster_id": s.cluster_id,
        "controller_id": s.controller_id,
        "kafka_reachable": s.kafka_reachable,
        "draining_brokers": s.draining_brokers,
        "brokers": s.brokers.iter().map(|b| serde_json::json!({
            "id": b.id, "host": b.host, "port": b.port, "rack": b.rack,
            "draining": b.draining, "draining_deadline_unix_ms": b.draining_deadline_unix_ms,
        })).collect::<Vec<_>>(),
        "topics": s.topics.iter().map(|t| serde_json::json!({
            "name": t.name,
            "partitions": t.partitions.iter().map(|p| serde_json::json!({
                "partition": p.partition, "leader": p.leader, "leader_rack": p.leader_rack,
                "replicas": p.replicas, "isr": p.isr, "offline_replicas": p.offline_replicas,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// A partition is under-replicated when fewer of its replicas are live and in sync than it
/// has replicas.
fn under_replicated(p: &pb::PartitionInfo, live: &[i32]) -> bool {
    p.replicas
        .iter()
        .filter(|r| p.isr.contains(r) && live.contains(r))
        .count()
        < p.replicas.len()
}

fn list(v: &[i32]) -> String {
    v.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

/// The `show` table.
pub fn render(s: &pb::TopologySnapshot, topic: Option<&str>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cluster {}  version {}  controller {}  kafka {}",
        if s.cluster_id.is_empty() {
            "-"
        } else {
            &s.cluster_id
        },
        s.version,
        s.controller_id,
        if s.kafka_reachable {
            "reachable"
        } else {
            "UNREACHABLE (last view shown)"
        }
    );
    let live: Vec<i32> = s.brokers.iter().map(|b| b.id).collect();
    let rack_of = |id: i32| {
        s.brokers.iter().find(|b| b.id == id).map(|b| {
            if b.rack.is_empty() {
                "-".to_string()
            } else {
                b.rack.clone()
            }
        })
    };
    // Racks: brokers, leaders.
    let mut racks: BTreeMap<String, (Vec<i32>, usize)> = BTreeMap::new();
    for b in &s.brokers {
        racks
            .entry(rack_of(b.id).unwrap_or_default())
            .or_default()
            .0
            .push(b.id);
    }
    for t in &s.topics {
        for p in &t.partitions {
            if let Some(r) = (p.leader >= 0).then(|| rack_of(p.leader)).flatten() {
                racks.entry(r).or_default().1 += 1;
            }
        }
    }
    let _ = writeln!(out, "\n{:<12} {:<16} {:>8}", "RACK", "BROKERS", "LEADERS");
    for (rack, (brokers, leaders)) in &racks {
        let _ = writeln!(out, "{:<12} {:<16} {:>8}", rack, list(brokers), leaders);
    }
    let _ = writeln!(
        out,
        "\n{:<8} {:<12} {:<24} {:<10}",
        "BROKER", "RACK", "ADDRESS", "DRAINING"
    );
    for b in &s.brokers {
        let draining = if !b.draining {
            "-".to_string()
        } else if b.draining_deadline_unix_ms > 0 {
            let secs = (b.draining_deadline_unix_ms - unix_ms()) / 1000;
            format!("yes, {secs}s left")
        } else {
            "yes".into()
        };
        let _ = writeln!(
            out,
            "{:<8} {:<12} {:<24} {:<10}",
            b.id,
            rack_of(b.id).unwrap_or_default(),
            format!("{}:{}", b.host, b.port),
            draining
        );
    }
    for d in s.draining_brokers.iter().filter(|d| !live.contains(d)) {
        let _ = writeln!(
            out,
            "{:<8} {:<12} {:<24} {:<10}",
            d, "?", "(not live)", "yes"
        );
    }
    let _ = writeln!(
        out,
        "\n{:<24} {:>10} {:>8} {:>16}",
        "TOPIC", "PARTITIONS", "OFFLINE", "UNDER-REPLICATED"
    );
    let mut problems = Vec::new();
    for t in &s.topics {
        let offline = t.partitions.iter().filter(|p| p.leader < 0).count();
        let under = t
            .partitions
            .iter()
            .filter(|p| under_replicated(p, &live))
            .count();
        let _ = writeln!(
            out,
            "{:<24} {:>10} {:>8} {:>16}",
            t.name,
            t.partitions.len(),
            offline,
            under
        );
        for p in &t.partitions {
            let shown = topic == Some(t.name.as_str());
            if shown || p.leader < 0 || under_replicated(p, &live) {
                problems.push((t.name.clone(), p.clone()));
            }
        }
    }
    if !problems.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<24} {:>9} {:>7} {:<8} {:<12} {:<12} {:<8} STATE",
            "TOPIC", "PARTITION", "LEADER", "RACK", "REPLICAS", "ISR", "OFFLINE"
        );
        for (t, p) in problems {
            let state = if p.leader < 0 {
                "OFFLINE"
            } else if under_replicated(&p, &live) {
                "UNDER-REPLICATED"
            } else {
                "ok"
            };
            let _ = writeln!(
                out,
                "{:<24} {:>9} {:>7} {:<8} {:<12} {:<12} {:<8} {}",
                t,
                p.partition,
                p.leader,
                if p.leader_rack.is_empty() {
                    "-"
                } else {
                    &p.leader_rack
                },
                list(&p.replicas),
                list(&p.isr),
                if p.offline_replicas.is_empty() {
                    "-".into()
                } else {
                    list(&p.offline_replicas)
                },
                state
            );
        }
    }
    out
}
