//! `ballast.topology.v1.Topology` over the shared state and the planners.

use crate::config::PlanLimits;
use crate::plan::{self, BrokerRack};
use crate::state::TopologyState;
use ballast_core::ErrorCode;
use ballast_proto::topology::v1 as pb;
use ballast_security::{Access, Action, TopologyAction};
use futures::StreamExt;
use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

pub struct TopologyService {
    state: Arc<TopologyState>,
    limits: PlanLimits,
    watchers: Arc<Semaphore>,
    stop: tokio::sync::watch::Receiver<bool>,
    access: Access,
}

impl TopologyService {
    /// `stop` turns true at shutdown; open watch streams then end so the server can drain.
    pub fn new(
        state: Arc<TopologyState>,
        limits: PlanLimits,
        stop: tokio::sync::watch::Receiver<bool>,
        access: Access,
    ) -> Self {
        Self {
            watchers: Arc::new(Semaphore::new(limits.max_watchers)),
            state,
            limits,
            stop,
            access,
        }
    }
}

type SnapshotStream =
    Pin<Box<dyn futures::Stream<Item = Result<pb::TopologySnapshot, Status>> + Send>>;

/// The snapshot with only the selected topics (all of them without a selection).
fn view(snap: &pb::TopologySnapshot, selection: Option<&HashSet<String>>) -> pb::TopologySnapshot {
    let Some(names) = selection else {
        return snap.clone();
    };
    pb::TopologySnapshot {
        version: snap.version,
        cluster_id: snap.cluster_id.clone(),
        brokers: snap.brokers.clone(),
        topics: snap
            .topics
            .iter()
            .filter(|t| names.contains(&t.name))
            .cloned()
            .collect(),
        draining_brokers: snap.draining_brokers.clone(),
        kafka_reachable: snap.kafka_reachable,
        controller_id: snap.controller_id,
    }
}

fn selection(req: Option<pb::TopicSelection>) -> Option<HashSet<String>> {
    req.map(|s| s.names.into_iter().collect())
}

fn rack(s: &str) -> Option<String> {
    (!s.trim().is_empty()).then(|| s.to_string())
}

#[tonic::async_trait]
impl pb::topology_server::Topology for TopologyService {
    async fn get_topology(
        &self,
        req: Request<pb::GetTopologyRequest>,
    ) -> Result<Response<pb::TopologySnapshot>, Status> {
        self.access
            .check(&req, Action::Topology(TopologyAction::Read))?;
        let selection = selection(req.into_inner().topics);
        Ok(Response::new(view(
            &self.state.snapshot(),
            selection.as_ref(),
        )))
    }

    type WatchTopologyStream = SnapshotStream;

    async fn watch_topology(
        &self,
        req: Request<pb::WatchTopologyRequest>,
    ) -> Result<Response<Self::WatchTopologyStream>, Status> {
        let caller = self
            .access
            .check(&req, Action::Topology(TopologyAction::Read))?;
        let access = self.access.clone();
        let permit = self.watchers.clone().try_acquire_owned().map_err(|_| {
            ErrorCode::ResourceExhausted.status(format!(
                "too many watchers (limits.max_watchers = {})",
                self.limits.max_watchers
            ))
        })?;
        let mut stop = self.stop.clone();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let selection = selection(req.into_inner().topics);
        // The current snapshot first, then each new version whose view differs from the
        // last one sent (every version when no topics are selected).
        let mut last: Option<pb::TopologySnapshot> = None;
        let stream = tokio_stream::wrappers::WatchStream::new(self.state.subscribe())
            .filter_map(move |snap| {
                let _held = &permit;
                // Every snapshot under the policy and tokens of now: a watcher whose
                // grant was withdrawn, or whose token was revoked, is told and ended.
                if let Err(status) = access
                    .refresh(&caller)
                    .and_then(|c| c.require(Action::Topology(TopologyAction::Read)))
                {
                    return futures::future::ready(Some(Err(status)));
                }
                let v = view(&snap, selection.as_ref());
                let unchanged = last.as_ref().is_some_and(|l| {
                    l.version < v.version
                        && pb::TopologySnapshot {
                            version: v.version,
                            ..l.clone()
                        } == v
                });
                let out = (!unchanged).then(|| {
                    last = Some(v.clone());
                    Ok(v)
                });
                futures::future::ready(out)
            })
            // The stream ends after the first error.
            .scan(false, |ended, item| {
                let out = if *ended { None } else { Some(item) };
                if matches!(out, Some(Err(_))) {
                    *ended = true;
                }
                futures::future::ready(out)
            })
            .take_until(Box::pin(stopped));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn mark_broker_draining(
        &self,
        req: Request<pb::MarkBrokerDrainingRequest>,
    ) -> Result<Response<pb::MarkBrokerDrainingResponse>, Status> {
        let caller = self
            .access
            .check(&req, Action::Topology(TopologyAction::MarkDraining))?;
        let r = req.into_inner();
        if r.broker_id < 0 {
            return Err(ErrorCode::InvalidArgument.status("broker_id may not be negative"));
        }
        if let Some(d) = r.deadline_unix_ms {
            if d <= 0 {
                return Err(ErrorCode::InvalidArgument
                    .status("deadline_unix_ms must be a positive unix time in milliseconds"));
            }
        }
        if r.reason.len() > self.limits.max_reason_bytes {
            return Err(ErrorCode::InvalidArgument.status(format!(
                "reason is longer than {} bytes (limits.max_reason_bytes)",
                self.limits.max_reason_bytes
            )));
        }
        let version = self
            .state
            .mark_draining_within(
                r.broker_id,
                r.deadline_unix_ms,
                self.limits.max_draining_marks,
            )
            .map_err(|n| {
                ErrorCode::ResourceExhausted.status(format!(
                    "{n} brokers are marked draining already (limits.max_draining_marks); clear one first"
                ))
            })?;
        let known = self
            .state
            .snapshot()
            .brokers
            .iter()
            .any(|b| b.id == r.broker_id);
        tracing::warn!(
            broker = r.broker_id,
            deadline_unix_ms = r.deadline_unix_ms,
            reason = %r.reason,
            known,
            version,
            principal = ?caller.principal,
            "broker marked draining"
        );
        Ok(Response::new(pb::MarkBrokerDrainingResponse { version }))
    }

    async fn clear_broker_draining(
        &self,
        req: Request<pb::ClearBrokerDrainingRequest>,
    ) -> Result<Response<pb::ClearBrokerDrainingResponse>, Status> {
        let caller = self
            .access
            .check(&req, Action::Topology(TopologyAction::MarkDraining))?;
        let r = req.into_inner();
        let (version, was_draining) = self.state.clear_draining(r.broker_id);
        tracing::info!(
            broker = r.broker_id,
            was_draining,
            version,
            principal = ?caller.principal,
            "draining cleared"
        );
        Ok(Response::new(pb::ClearBrokerDrainingResponse {
            version,
            was_draining,
        }))
    }

    async fn plan_replica_assignment(
        &self,
        req: Request<pb::PlanReplicaAssignmentRequest>,
    ) -> Result<Response<pb::PlanReplicaAssignmentResponse>, Status> {
        self.access
            .check(&req, Action::Topology(TopologyAction::Plan))?;
        let r = req.into_inner();
        if r.brokers.len() > self.limits.max_brokers {
            return Err(too_many("brokers", self.limits.max_brokers));
        }
        if r.partitions as i64 > self.limits.max_partitions as i64 {
            return Err(too_many("partitions", self.limits.max_partitions));
        }
        let brokers: Vec<BrokerRack> = r
            .brokers
            .iter()
            .map(|b| BrokerRack {
                id: b.id,
                rack: rack(&b.rack),
            })
            .collect();
        let (assignments, start_index) =
            plan::assign_replicas(&brokers, r.partitions, r.replication_factor, r.start_index)?;
        Ok(Response::new(pb::PlanReplicaAssignmentResponse {
            assignments: assignments
                .into_iter()
                .map(|a| pb::PartitionAssignment {
                    partition: a.partition,
                    replicas: a.replicas,
                })
                .collect(),
            start_index,
        }))
    }

    async fn plan_reassignment(
        &self,
        req: Request<pb::PlanReassignmentRequest>,
    ) -> Result<Response<pb::PlanReassignmentResponse>, Status> {
        self.access
            .check(&req, Action::Topology(TopologyAction::Plan))?;
        let r = req.into_inner();
        if r.current.len() > self.limits.max_partitions {
            return Err(too_many("partitions", self.limits.max_partitions));
        }
        if r.brokers.len() > self.limits.max_brokers {
            return Err(too_many("brokers", self.limits.max_brokers));
        }
        if r.max_moves_per_broker < 0 {
            return Err(
                ErrorCode::InvalidArgument.status("max_moves_per_broker must be at least 1")
            );
        }
        let request = plan::ReassignmentRequest {
            current: r.current.into_iter().map(placement_from_pb).collect(),
            brokers: r
                .brokers
                .into_iter()
                .map(|b| plan::TargetBroker {
                    id: b.id,
                    rack: rack(&b.rack),
                    free_disk_bytes: b.free_disk_bytes,
                })
                .collect(),
            max_moves_per_broker: r.max_moves_per_broker as u32,
        };
        // Large plans take a while; keep them off the async workers.
        let result = tokio::task::spawn_blocking(move || plan::plan_reassignment(&request))
            .await
            .map_err(|e| ErrorCode::Internal.status(format!("planner: {e}")))??;
        Ok(Response::new(reassignment_to_pb(&result)))
    }

    async fn assign_partitions(
        &self,
        req: Request<pb::AssignPartitionsRequest>,
    ) -> Result<Response<pb::AssignPartitionsResponse>, Status> {
        self.access
            .check(&req, Action::Topology(TopologyAction::Plan))?;
        let r = req.into_inner();
        if r.consumers.len() > self.limits.max_consumers {
            return Err(too_many("consumers", self.limits.max_consumers));
        }
        let snap = self.state.snapshot();
        let topic = snap
            .topics
            .iter()
            .find(|t| t.name == r.topic)
            .ok_or_else(|| {
                ErrorCode::NotFound.status(format!("topic {:?} is not in the cluster", r.topic))
            })?;
        let partitions: Vec<plan::PartitionLeader> = topic
            .partitions
            .iter()
            .map(|p| plan::PartitionLeader {
                partition: p.partition,
                leader_rack: rack(&p.leader_rack),
            })
            .collect();
        let consumers: Vec<plan::ConsumerRack> = r
            .consumers
            .iter()
            .map(|c| plan::ConsumerRack {
                id: c.id.clone(),
                rack: rack(&c.rack),
            })
            .collect();
        let out = plan::assign_partitions(&partitions, &consumers)?;
        Ok(Response::new(pb::AssignPartitionsResponse {
            rack_local_partitions: out.iter().map(|a| a.rack_local).sum(),
            partitions: partitions.len() as u32,
            assignments: out
                .into_iter()
                .map(|a| pb::ConsumerAssignment {
                    consumer_id: a.consumer_id,
                    partitions: a.partitions,
                    rack_local: a.rack_local,
                })
                .collect(),
        }))
    }
}

fn too_many(what: &str, limit: usize) -> Status {
    ErrorCode::InvalidArgument.status(format!("too many {what}: at most {limit} per request"))
}

pub fn placement_from_pb(p: pb::PartitionPlacement) -> plan::Placement {
    plan::Placement {
        topic: p.topic,
        partition: p.partition,
        replicas: p.replicas,
        size_bytes: p.size_bytes,
    }
}

fn placement_to_pb(p: &plan::Placement) -> pb::PartitionPlacement {
    pb::PartitionPlacement {
        topic: p.topic.clone(),
        partition: p.partition,
        replicas: p.replicas.clone(),
        size_bytes: p.size_bytes,
    }
}

pub fn reassignment_to_pb(plan: &plan::ReassignmentPlan) -> pb::PlanReassignmentResponse {
    pb::PlanReassignmentResponse {
        stages: plan
            .stages
            .iter()
            .map(|s| pb::Stage {
                index: s.index,
                reassignment_json: plan::reassignment_json(s),
                moves: s
                    .moves
                    .iter()
                    .map(|m| pb::Move {
                        topic: m.topic.clone(),
                        partition: m.partition,
                        from_replicas: m.from.clone(),
                        to_replicas: m.to.clone(),
                        size_bytes: m.size_bytes,
                    })
                    .collect(),
                disk: s
                    .disk
                    .iter()
                    .map(|d| pb::BrokerDisk {
                        broker_id: d.broker_id,
                        free_at_start_bytes: d.free_at_start_bytes,
                        free_low_bytes: d.free_low_bytes,
                    })
                    .collect(),
            })
            .collect(),
        target: plan.target.iter().map(placement_to_pb).collect(),
        replicas_moved: plan.replicas_moved,
        bytes_moved: plan.bytes_moved,
    }
}
