//! Placement planners: pure functions, no IO. The gRPC service and the CLI call them.
//!
//! - [`assign_replicas`]: Kafka's rack-aware replica assignment for a new topic, exactly.
//! - [`plan_reassignment`]: moves partitions onto a target broker set in stages that keep
//!   rack spread, cap moves per broker and never overfill a disk.
//! - [`assign_partitions`]: rack-local, balanced consumer assignment.

mod assignment;
mod consumers;
mod reassignment;

pub use assignment::{assign_replicas, rack_alternated, Assignment};
pub use consumers::{assign_partitions, ConsumerAssignment, ConsumerRack, PartitionLeader};
pub use reassignment::{
    plan_reassignment, reassignment_json, BrokerDisk, Move, Placement, ReassignmentPlan,
    ReassignmentRequest, Stage, TargetBroker,
};

use ballast_core::ErrorCode;
use serde::{Deserialize, Serialize};

/// A broker and its rack (`None` when it has none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRack {
    pub id: i32,
    #[serde(default)]
    pub rack: Option<String>,
}

/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The request itself is wrong (maps to INVALID_ARGUMENT).
    #[error("{0}")]
    Invalid(String),
    /// The request is well formed but no plan meets its limits (FAILED_PRECONDITION).
    #[error("{0}")]
    Infeasible(String),
}

impl PlanError {
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        PlanError::Invalid(msg.into())
    }
}

impl From<PlanError> for tonic::Status {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::Invalid(m) => ErrorCode::InvalidArgument.status(m),
            PlanError::Infeasible(m) => ErrorCode::FailedPrecondition.status(m),
        }
    }
}
