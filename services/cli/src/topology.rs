//! `ballast topology`: the cluster as the topology service sees it, draining marks, the
//! placement planners, and the spot-interruption watcher that runs beside each broker.

use anyhow::{bail, Context};
use ballast_proto::topology::v1 as pb;
use ballast_proto::topology::v1::topology_client::TopologyClient;
use ballast_topology::plan;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::Channel;

#[derive(Debug, clap::Args)]
pub struct TopologyArgs {
    /// The topology service (`topology` in the `ballast dev` ready line).
    #[arg(long, env = "BALLAST_TOPOLOGY", default_value = "127.0.0.1:50054")]
    pub topology: String,
    #[command(subcommand)]
    pub action: TopologyAction,
}

#[derive(Debug, clap::Subcommand)]
pub enum TopologyAction {
    /// Brokers by rack, leaders per rack, offline and under-replicated partitions.
    Show {
        /// List every partition of this topic.
        #[arg(long)]
        topic: Option<String>,
        /// Print the snapshot as JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Announce that a broker is about to be interrupted.
    MarkDraining {
        #[arg(long)]
        broker_id: i32,
        /// When it goes, from now (e.g. `120s`).
        #[arg(long, value_parser = humantime::parse_duration)]
        within: Option<Duration>,
        #[arg(long, default_value = "ballast topology mark-draining")]
        reason: String,
    },
    ClearDraining {
        #[arg(long)]
        broker_id: i32,
    },
    /// Kafka's rack-aware replica assignment for a new topic, as JSON.
    PlanAssignment {
        /// `ID[:RACK],...`; default: the live brokers from the topology service.
        #[arg(long, value_delimiter = ',')]
        brokers: Vec<String>,
        #[arg(long)]
        partitions: i32,
        #[arg(long)]
        replication_factor: i32,
        /// Fixes the start index and replica shift (Kafka's fixedStartIndex).
        #[arg(long)]
        start_index: Option<i32>,
    },
    /// Staged reassignment onto target brokers, as JSON. The input file holds
    /// `{"current": [{"topic","partition","replicas","size_bytes"}],
    ///   "brokers": [{"id","rack","free_disk_bytes"}], "max_moves_per_broker": N}`.
    PlanReassignment {
        #[arg(long)]
        input: PathBuf,
        /// Also write each stage as `stage-N.json` for
        /// `kafka-reassign-partitions --reassignment-json-file`.
        #[arg(long)]
        output_dir: Option<PathBuf>,
    },
    /// Rack-local, balanced assignment of a topic's partitions to consumers, as JSON.
    AssignPartitions {
        #[arg(long)]
        topic: String,
        /// `ID[:RACK],...`
        #[arg(long, value_delimiter = ',', required = true)]
        consumers: Vec<String>,
    },
    /// Poll EC2 instance metadata for a spot interruption notice and mark this broker
    /// draining when one appears. Runs beside the broker.
    WatchSpot(WatchSpotArgs),
}

#[derive(Debug, clap::Args)]
pub struct WatchSpotArgs {
    /// The broker this instance runs.
    #[arg(long)]
    pub broker_id: i32,
    /// The instance metadata service (IMDSv2).
    #[arg(
        long,
        env = "BALLAST_IMDS_ENDPOINT",
        default_value = "http://169.254.169.254"
    )]
    pub imds_endpoint: String,
    /// How often to poll. AWS posts the notice two minutes ahead; poll every few seconds.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Exit after the first notice has been delivered.
    #[arg(long)]
    pub once: bool,
}

fn fail(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

async fn client(addr: &str) -> anyhow::Result<TopologyClient<Channel>> {
    TopologyClient::connect(crate::endpoint(addr))
        .await
        .with_context(|| format!("connecting to the topology service at {addr}"))
}

/// `ID[:RACK]`.
fn id_rack(s: &str) -> anyhow::Result<(String, Option<String>)> {
    let s = s.trim();
    match s.split_once(':') {
        Some((id, rack)) if !id.is_empty() && !rack.is_empty() => {
            Ok((id.to_string(), Some(rack.to_string())))
        }
        None if !s.is_empty() => Ok((s.to_string(), None)),
        _ => bail!("expected ID or ID:RACK, got {s:?}"),
    }
}

pub async fn run(args: TopologyArgs) -> anyhow::Result<()> {
    match args.action {
        TopologyAction::Show { topic, json } => {
            let snap = client(&args.topology)
                .await?
                .get_topology(pb::GetTopologyRequest {})
                .await
                .map_err(fail)?
                .into_inner();
            if json {
                println!("{}", serde_json::to_string_pretty(&snapshot_json(&snap))?);
            } else {
                print!("{}", render(&snap, topic.as_deref()));
            }
        }
        TopologyAction::MarkDraining {
            broker_id,
            within,
            reason,
        } => {
            let deadline = within.map(|d| unix_ms() + d.as_millis() as i64);
            let r = client(&args.topology)
                .await?
                .mark_broker_draining(pb::MarkBrokerDrainingRequest {
                    broker_id,
                    deadline_unix_ms: deadline,
                    reason,
                })
                .await
                .map_err(fail)?
                .into_inner();
            println!(
                "broker {broker_id} draining (topology version {})",
                r.version
            );
        }
        TopologyAction::ClearDraining { broker_id } => {
            let r = client(&args.topology)
                .await?
                .clear_broker_draining(pb::ClearBrokerDrainingRequest { broker_id })
                .await
                .map_err(fail)?
                .into_inner();
            if r.was_draining {
                println!(
                    "broker {broker_id} no longer draining (topology version {})",
                    r.version
                );
            } else {
                println!("broker {broker_id} was not draining");
            }
        }
        TopologyAction::PlanAssignment {
            brokers,
            partitions,
            replication_factor,
            start_index,
        } => {
            let brokers: Vec<plan::BrokerRack> = if brokers.is_empty() {
                client(&args.topology)
                    .await?
                    .get_topology(pb::GetTopologyRequest {})
                    .await
                    .map_err(fail)?
                    .into_inner()
                    .brokers
                    .into_iter()
                    .map(|b| plan::BrokerRack {
                        id: b.id,
                        rack: (!b.rack.is_empty()).then_some(b.rack),
                    })
                    .collect()
            } else {
                brokers
                    .iter()
                    .map(|s| {
                        let (id, rack) = id_rack(s)?;
                        let id = id
                            .parse()
                            .with_context(|| format!("broker id {id:?} is not a number"))?;
                        Ok(plan::BrokerRack { id, rack })
                    })
                    .collect::<anyhow::Result<_>>()?
            };
            let (assignments, start) =
                plan::assign_replicas(&brokers, partitions, replication_factor, start_index)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "start_index": start,
                    "brokers": brokers,
                    "assignments": assignments,
                }))?
            );
        }
        TopologyAction::PlanReassignment { input, output_dir } => {
            let text = std::fs::read_to_string(&input)
                .with_context(|| format!("reading {}", input.display()))?;
            let req: plan::ReassignmentRequest = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", input.display()))?;
            let plan = plan::plan_reassignment(&req)?;
            let stages: Vec<serde_json::Value> = plan
                .stages
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "index": s.index,
                        "moves": s.moves,
                        "disk": s.disk,
                        "reassignment": serde_json::from_str::<serde_json::Value>(
                            &plan::reassignment_json(s)
                        ).expect("valid json"),
                    })
                })
                .collect();
            if let Some(dir) = output_dir {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                for s in &plan.stages {
                    let path = dir.join(format!("stage-{}.json", s.index));
                    std::fs::write(&path, plan::reassignment_json(s))
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "replicas_moved": plan.replicas_moved,
                    "bytes_moved": plan.bytes_moved,
                    "stages": stages,
                    "target": plan.target,
                }))?
            );
        }
        TopologyAction::AssignPartitions { topic, consumers } => {
            let consumers = consumers
                .iter()
                .map(|s| {
                    let (id, rack) = id_rack(s)?;
                    Ok(pb::Consumer {
                        id,
                        rack: rack.unwrap_or_default(),
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let r = client(&args.topology)
                .await?
                .assign_partitions(pb::AssignPartitionsRequest { topic, consumers })
                .await
                .map_err(fail)?
                .into_inner();
            let assignments: Vec<serde_json::Value> = r
                .assignments
                .iter()
                .map(|a| {
                    serde_json::json!({
                        "consumer_id": a.consumer_id,
                        "partitions": a.partitions,
                        "rack_local": a.rack_local,
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "partitions": r.partitions,
                    "rack_local_partitions": r.rack_local_partitions,
                    "assignments": assignments,
                }))?
            );
        }
        TopologyAction::WatchSpot(w) => watch_spot(&args.topology, w).await?,
    }
    Ok(())
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn snapshot_json(s: &pb::TopologySnapshot) -> serde_json::Value {
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

/// The body of `/latest/meta-data/spot/instance-action`.
#[derive(Debug, serde::Deserialize)]
struct InstanceAction {
    action: String,
    time: String,
}

const INSTANCE_ACTION: &str = "/latest/meta-data/spot/instance-action";

/// Polls IMDS until a notice arrives, then marks the broker draining, and keeps the mark in
/// place (re-sent each poll, which changes nothing while it holds) until stopped.
pub async fn watch_spot(topology: &str, w: WatchSpotArgs) -> anyhow::Result<()> {
    if w.interval.is_zero() {
        bail!("--interval must be positive");
    }
    let imds = aws_config::imds::Client::builder()
        .endpoint(&w.imds_endpoint)
        .map_err(|e| anyhow::anyhow!("bad --imds-endpoint {:?}: {e}", w.imds_endpoint))?
        .connect_timeout(Duration::from_secs(1))
        .read_timeout(Duration::from_secs(2))
        .build();
    let endpoint = crate::endpoint(topology);
    tracing::info!(broker = w.broker_id, imds = %w.imds_endpoint, %endpoint, "watching for spot interruption notices");
    let mut announced = false;
    let mut imds_down = false;
    let mut tick = tokio::time::interval(w.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let shutdown = ballast_telemetry::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut shutdown => return Ok(()),
        }
        let notice = match imds.get(INSTANCE_ACTION).await {
            Ok(body) => body,
            Err(aws_config::imds::client::error::ImdsError::ErrorResponse(r))
                if r.response().status().as_u16() == 404 =>
            {
                if imds_down {
                    tracing::info!("instance metadata reachable again");
                    imds_down = false;
                }
                continue; // no notice
            }
            Err(e) => {
                if !imds_down {
                    tracing::warn!(error = %e, "instance metadata unavailable; retrying every poll");
                    imds_down = true;
                }
                continue;
            }
        };
        let action: InstanceAction = match serde_json::from_str(notice.as_ref()) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, body = notice.as_ref(), "unreadable instance-action; retrying");
                continue;
            }
        };
        let deadline = humantime::parse_rfc3339_weak(&action.time)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64);
        let mark = async {
            let mut c = TopologyClient::connect(endpoint.clone()).await?;
            let r = c
                .mark_broker_draining(pb::MarkBrokerDrainingRequest {
                    broker_id: w.broker_id,
                    deadline_unix_ms: deadline,
                    reason: format!("spot {} at {}", action.action, action.time),
                })
                .await?;
            Ok::<_, anyhow::Error>(r.into_inner().version)
        };
        match mark.await {
            Ok(version) => {
                if !announced {
                    println!(
                        "{}",
                        serde_json::json!({
                            "event": "draining",
                            "broker_id": w.broker_id,
                            "action": action.action,
                            "time": action.time,
                            "deadline_unix_ms": deadline,
                            "topology_version": version,
                        })
                    );
                    announced = true;
                }
                if w.once {
                    return Ok(());
                }
            }
            Err(e) => tracing::error!(error = %e, "could not mark the broker draining; retrying"),
        }
    }
}
