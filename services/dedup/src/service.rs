//! The `ballast.dedup.v1.Dedup` handlers.

use crate::config::{Backend, DedupConfig, DedupLimits};
use ballast_core::ErrorCode;
use ballast_dedup_store::{
    ClaimState, DedupStore, FenceOutcome, MemoryStore, RedisStore, StoreError,
};
use ballast_proto::dedup::v1 as pb;
use ballast_security::{Access, Action};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Opens the configured backend.
pub async fn build_store(cfg: &DedupConfig) -> anyhow::Result<Arc<dyn DedupStore>> {
    Ok(match cfg.backend {
        Backend::Memory => Arc::new(MemoryStore::new(cfg.redis.done_window)),
        Backend::Redis => {
            let store = RedisStore::connect(&cfg.redis)
                .await
                .map_err(|e| anyhow::anyhow!("connecting to redis: {e}"))?;
            for warning in store.durability_warnings().await {
                tracing::warn!("{warning}");
            }
            Arc::new(store)
        }
    })
}

#[derive(Debug, Clone, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    op: String,
    outcome: String,
}

#[derive(Debug, Clone, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    state: String,
}

#[derive(Debug, Clone)]
pub struct DedupService {
    store: Arc<dyn DedupStore>,
    limits: DedupLimits,
    calls: Family<OpLabels, Counter>,
    claims: Family<StateLabels, Counter>,
    access: Access,
}

fn to_status(e: StoreError) -> Status {
    match e {
        StoreError::Unavailable(m) => ErrorCode::Unavailable.status(m),
        StoreError::Invalid(m) => ErrorCode::InvalidArgument.status(m),
    }
}

fn fenced_results(out: Vec<FenceOutcome>) -> Vec<pb::FencedResult> {
    out.into_iter()
        .map(|o| pb::FencedResult {
            id: o.id,
            committed: o.ok,
            reason: o.reason,
        })
        .collect()
}

fn proto_state(s: ClaimState) -> pb::ClaimState {
    match s {
        ClaimState::New => pb::ClaimState::New,
        ClaimState::InProgress => pb::ClaimState::InProgress,
        ClaimState::Done => pb::ClaimState::Done,
    }
}

/// Registers the dedup service's series, `ballast_dedup_*`: calls, and claims by state.
#[allow(clippy::type_complexity)]
pub fn register_metrics(
    registry: &mut Registry,
) -> (Family<OpLabels, Counter>, Family<StateLabels, Counter>) {
    let calls = ballast_telemetry::catalog::family(Family::<OpLabels, Counter>::default());
    let claims = ballast_telemetry::catalog::family(Family::<StateLabels, Counter>::default());
    let r = registry.sub_registry_with_prefix("ballast_dedup");
    r.register(
        "calls",
        "Dedup calls by operation and outcome",
        calls.clone(),
    );
    r.register("claims", "Claimed ids by resulting state", claims.clone());
    (calls, claims)
}

impl DedupService {
    /// A service that lets every caller in until [`DedupService::with_access`].
    pub fn new(store: Arc<dyn DedupStore>, limits: DedupLimits, registry: &mut Registry) -> Self {
        let (calls, claims) = register_metrics(registry);
        Self {
            store,
            limits,
            calls,
            claims,
            access: Access::open(),
        }
    }

    /// Authenticates and authorizes every call with `access`.
    pub fn with_access(self, access: Access) -> Self {
        Self { access, ..self }
    }

    fn count(&self, op: &str, outcome: &str) {
        self.calls
            .get_or_create(&OpLabels {
                op: op.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    fn finish<T>(&self, op: &str, r: Result<T, StoreError>) -> Result<T, Status> {
        match r {
            Ok(v) => {
                self.count(op, "ok");
                Ok(v)
            }
            Err(e) => {
                self.count(op, "error");
                Err(to_status(e))
            }
        }
    }

    fn check_group(&self, group: &str) -> Result<(), Status> {
        if group.is_empty() {
            return Err(ErrorCode::InvalidArgument.status("group is empty"));
        }
        if group.len() > self.limits.max_group_bytes {
            return Err(ErrorCode::InvalidArgument.status(format!(
                "group is longer than {} bytes (limits.max_group_bytes)",
                self.limits.max_group_bytes
            )));
        }
        Ok(())
    }

    fn check_owner(&self, owner: &str) -> Result<(), Status> {
        if owner.len() > self.limits.max_owner_bytes {
            return Err(ErrorCode::InvalidArgument.status(format!(
                "owner is longer than {} bytes (limits.max_owner_bytes)",
                self.limits.max_owner_bytes
            )));
        }
        Ok(())
    }

    fn check_ids<'a>(&self, ids: impl ExactSizeIterator<Item = &'a str>) -> Result<(), Status> {
        if ids.len() > self.limits.max_batch {
            return Err(ErrorCode::InvalidArgument.status(format!(
                "{} ids in one call; the limit is {} (limits.max_batch)",
                ids.len(),
                self.limits.max_batch
            )));
        }
        for (i, id) in ids.enumerate() {
            if id.is_empty() {
                return Err(ErrorCode::InvalidArgument.status(format!("id {i} is empty")));
            }
            if id.len() > self.limits.max_id_bytes {
                return Err(ErrorCode::InvalidArgument.status(format!(
                    "id {i} is longer than {} bytes (limits.max_id_bytes)",
                    self.limits.max_id_bytes
                )));
            }
        }
        Ok(())
    }

    fn lease(&self, lease_ms: u32) -> Result<Duration, Status> {
        let lease = Duration::from_millis(lease_ms.into());
        if lease.is_zero() {
            return Err(ErrorCode::InvalidArgument.status("lease_ms must be positive"));
        }
        if lease > self.limits.max_lease {
            return Err(ErrorCode::InvalidArgument.status(format!(
                "lease_ms is over {:?} (limits.max_lease)",
                self.limits.max_lease
            )));
        }
        Ok(lease)
    }

    /// The `(id, fence)` pairs of a commit, release or extend, once the group, the ids and
    /// the owner are within the limits.
    fn fenced_input(
        &self,
        group: &str,
        entries: Vec<pb::Fenced>,
        owner: &str,
    ) -> Result<Vec<(String, u64)>, Status> {
        self.check_group(group)?;
        self.check_ids(entries.iter().map(|e| e.id.as_str()))?;
        self.check_owner(owner)?;
        Ok(entries.into_iter().map(|e| (e.id, e.fence)).collect())
    }

    /// Authenticates the caller and authorizes it for the request's consumer group.
    fn allow<T>(&self, request: &Request<T>, group: impl Fn(&T) -> &str) -> Result<(), Status> {
        self.access
            .check(
                request,
                Action::Dedup {
                    group: group(request.get_ref()),
                },
            )
            .map(drop)
    }
}

#[tonic::async_trait]
impl pb::dedup_server::Dedup for DedupService {
    async fn claim(
        &self,
        request: Request<pb::ClaimRequest>,
    ) -> Result<Response<pb::ClaimResponse>, Status> {
        self.allow(&request, |r| &r.group)?;
        let r = request.into_inner();
        self.check_group(&r.group)?;
        self.check_owner(&r.owner)?;
        self.check_ids(r.ids.iter().map(String::as_str))?;
        let lease = self.lease(r.lease_ms)?;
        let out = self.finish(
            "claim",
            self.store.claim(&r.group, &r.ids, lease, &r.owner).await,
        )?;
        for c in &out {
            let state = match c.state {
                ClaimState::New => "new",
                ClaimState::InProgress => "in_progress",
                ClaimState::Done => "done",
            };
            self.claims
                .get_or_create(&StateLabels {
                    state: state.into(),
                })
                .inc();
        }
        Ok(Response::new(pb::ClaimResponse {
            results: out
                .into_iter()
                .map(|c| pb::ClaimResult {
                    id: c.id,
                    state: proto_state(c.state) as i32,
                    fence: c.fence,
                    lease_expires_unix_ms: c.lease_expires_unix_ms,
                })
                .collect(),
        }))
    }

    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        self.allow(&request, |r| &r.group)?;
        let r = request.into_inner();
        let entries = self.fenced_input(&r.group, r.entries, &r.owner)?;
        let out = self.finish(
            "commit",
            self.store.commit(&r.group, &entries, &r.owner).await,
        )?;
        Ok(Response::new(pb::CommitResponse {
            results: fenced_results(out),
        }))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        self.allow(&request, |r| &r.group)?;
        let r = request.into_inner();
        let entries = self.fenced_input(&r.group, r.entries, &r.owner)?;
        let out = self.finish(
            "release",
            self.store.release(&r.group, &entries, &r.owner).await,
        )?;
        Ok(Response::new(pb::ReleaseResponse {
            results: fenced_results(out),
        }))
    }

    async fn extend(
        &self,
        request: Request<pb::ExtendRequest>,
    ) -> Result<Response<pb::ExtendResponse>, Status> {
        self.allow(&request, |r| &r.group)?;
        let r = request.into_inner();
        let lease = self.lease(r.lease_ms)?;
        let entries = self.fenced_input(&r.group, r.entries, &r.owner)?;
        let out = self.finish(
            "extend",
            self.store.extend(&r.group, &entries, lease, &r.owner).await,
        )?;
        Ok(Response::new(pb::ExtendResponse {
            results: fenced_results(out),
        }))
    }

    async fn check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        self.allow(&request, |r| &r.group)?;
        let r = request.into_inner();
        self.check_group(&r.group)?;
        self.check_ids(r.ids.iter().map(String::as_str))?;
        let out = self.finish("check", self.store.check(&r.group, &r.ids).await)?;
        Ok(Response::new(pb::CheckResponse {
            results: out
                .into_iter()
                .map(|c| pb::CheckResult {
                    id: c.id,
                    state: c
                        .state
                        .map(proto_state)
                        .unwrap_or(pb::ClaimState::Unclaimed) as i32,
                    lease_expires_unix_ms: c.lease_expires_unix_ms,
                })
                .collect(),
        }))
    }
}
