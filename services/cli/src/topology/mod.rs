//! `ballast topology`: the cluster as the topology service sees it, draining marks, the
//! placement planners, and the spot-interruption watcher that runs beside each broker.

mod render;

pub(crate) use ballast_core::unix_ms;
use ballast_topology::spot::{watch_spot, WatchSpotArgs};
pub use render::render;
use render::snapshot_json;

use anyhow::{bail, Context};
use ballast_proto::topology::v1 as pb;
use ballast_proto::topology::v1::topology_client::TopologyClient;
use ballast_security::AuthChannel;
use ballast_topology::plan;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct TopologyArgs {
    /// The topology service (`topology` in the `ballast-dev up` ready line).
    #[arg(long, env = "BALLAST_TOPOLOGY", default_value = "127.0.0.1:50054")]
    pub topology: String,
    #[command(flatten)]
    pub client: ballast_security::ClientArgs,
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

fn fail(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

async fn client(
    addr: &str,
    secure: &ballast_security::ClientArgs,
) -> anyhow::Result<TopologyClient<AuthChannel>> {
    Ok(TopologyClient::new(
        secure
            .connect(addr)
            .await
            .with_context(|| format!("connecting to the topology service at {addr}"))?,
    ))
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
            let snap = client(&args.topology, &args.client)
                .await?
                .get_topology(pb::GetTopologyRequest::default())
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
            let r = client(&args.topology, &args.client)
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
            let r = client(&args.topology, &args.client)
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
                client(&args.topology, &args.client)
                    .await?
                    .get_topology(pb::GetTopologyRequest::default())
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
            let r = client(&args.topology, &args.client)
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
        TopologyAction::WatchSpot(w) => {
            watch_spot(&args.topology, &args.client.security(), w).await?
        }
    }
    Ok(())
}
