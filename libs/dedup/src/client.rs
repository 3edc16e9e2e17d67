//! A client for the dedup service, with `process_once`: claim, run the work while extending
//! the lease, commit on success, release on error. A duplicate skips the work.

use ballast_proto::dedup::v1 as pb;
use ballast_proto::dedup::v1::dedup_client::DedupClient as Raw;
use std::future::Future;
use std::time::Duration;
use tonic::transport::Channel;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("dedup call failed: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("dedup transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("commit rejected for {id}: {reason}")]
    CommitRejected { id: String, reason: String },
}

/// What `process_once` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Processed<T> {
    /// The work ran and was committed.
    Done(T),
    /// Another consumer processed the id, or is processing it now; the work did not run.
    Duplicate(pb::ClaimState),
}

/// What the batch form did with one id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Processed here and committed.
    Done,
    /// Processed elsewhere, or in progress elsewhere; not run here.
    Duplicate(pb::ClaimState),
    /// The work failed; the claim was released so the id can be retried.
    Failed(String),
    /// The work ran but the commit was refused (the lease expired meanwhile).
    CommitRejected(String),
}

/// The error of a work closure, or of the dedup service.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError<E> {
    #[error("work failed: {0}")]
    Work(E),
    #[error(transparent)]
    Dedup(#[from] ClientError),
}

#[derive(Debug, Clone)]
pub struct DedupClient {
    raw: Raw<Channel>,
    owner: String,
}

impl DedupClient {
    /// Connects to `http://host:port`. `owner` names this consumer in claims.
    pub async fn connect(endpoint: &str, owner: impl Into<String>) -> Result<Self, ClientError> {
        Ok(Self {
            raw: Raw::connect(endpoint.to_string()).await?,
            owner: owner.into(),
        })
    }

    pub async fn claim(
        &self,
        group: &str,
        ids: Vec<String>,
        lease: Duration,
    ) -> Result<Vec<pb::ClaimResult>, ClientError> {
        let resp = self
            .raw
            .clone()
            .claim(pb::ClaimRequest {
                group: group.into(),
                ids,
                lease_ms: lease.as_millis().min(u32::MAX as u128) as u32,
                owner: self.owner.clone(),
            })
            .await?;
        Ok(resp.into_inner().results)
    }

    pub async fn commit(
        &self,
        group: &str,
        entries: Vec<pb::Fenced>,
    ) -> Result<Vec<pb::FencedResult>, ClientError> {
        let resp = self
            .raw
            .clone()
            .commit(pb::CommitRequest {
                group: group.into(),
                entries,
            })
            .await?;
        Ok(resp.into_inner().results)
    }

    pub async fn release(
        &self,
        group: &str,
        entries: Vec<pb::Fenced>,
    ) -> Result<Vec<pb::FencedResult>, ClientError> {
        let resp = self
            .raw
            .clone()
            .release(pb::ReleaseRequest {
                group: group.into(),
                entries,
            })
            .await?;
        Ok(resp.into_inner().results)
    }

    pub async fn extend(
        &self,
        group: &str,
        entries: Vec<pb::Fenced>,
        lease: Duration,
    ) -> Result<Vec<pb::FencedResult>, ClientError> {
        let resp = self
            .raw
            .clone()
            .extend(pb::ExtendRequest {
                group: group.into(),
                entries,
                lease_ms: lease.as_millis().min(u32::MAX as u128) as u32,
            })
            .await?;
        Ok(resp.into_inner().results)
    }

    pub async fn check(
        &self,
        group: &str,
        ids: Vec<String>,
    ) -> Result<Vec<pb::CheckResult>, ClientError> {
        let resp = self
            .raw
            .clone()
            .check(pb::CheckRequest {
                group: group.into(),
                ids,
            })
            .await?;
        Ok(resp.into_inner().results)
    }

    /// Processes `id` once for `group`: claims it, runs `work` while extending the lease
    /// every `lease / 3`, then commits; releases the claim if the work fails.
    pub async fn process_once<T, E, F>(
        &self,
        group: &str,
        id: &str,
        lease: Duration,
        work: F,
    ) -> Result<Processed<T>, ProcessError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        let claim = self
            .claim(group, vec![id.to_string()], lease)
            .await?
            .pop()
            .ok_or_else(|| ClientError::Rpc(tonic::Status::internal("empty claim response")))?;
        let state = pb::ClaimState::try_from(claim.state).unwrap_or(pb::ClaimState::Unspecified);
        if state != pb::ClaimState::New {
            return Ok(Processed::Duplicate(state));
        }
        let fenced = pb::Fenced {
            id: id.to_string(),
            fence: claim.fence,
        };
        let result = {
            let heartbeat = async {
                let mut tick = tokio::time::interval((lease / 3).max(Duration::from_millis(10)));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if let Err(e) = self.extend(group, vec![fenced.clone()], lease).await {
                        tracing::warn!(error = %e, id, "lease extension failed");
                    }
                }
            };
            tokio::select! {
                r = work => r,
                _ = heartbeat => unreachable!("the heartbeat never ends"),
            }
        };
        match result {
            Ok(value) => {
                let res = self.commit(group, vec![fenced]).await?;
                match res.first() {
                    Some(r) if r.committed => Ok(Processed::Done(value)),
                    Some(r) => Err(ClientError::CommitRejected {
                        id: id.to_string(),
                        reason: r.reason.clone(),
                    }
                    .into()),
                    None => Err(
                        ClientError::Rpc(tonic::Status::internal("empty commit response")).into(),
                    ),
                }
            }
            Err(e) => {
                if let Err(re) = self.release(group, vec![fenced]).await {
                    tracing::warn!(error = %re, id, "release after failed work");
                }
                Err(ProcessError::Work(e))
            }
        }
    }

    /// The batch form: claims every id in one call, runs `work` on each NEW id
    /// concurrently, then commits the successes and releases the failures in two calls.
    /// Returns, per id in order, what happened to it.
    pub async fn process_batch_once<E, F, Fut>(
        &self,
        group: &str,
        ids: Vec<String>,
        lease: Duration,
        work: F,
    ) -> Result<Vec<BatchOutcome>, ClientError>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let claims = self.claim(group, ids, lease).await?;
        let new: Vec<&pb::ClaimResult> = claims
            .iter()
            .filter(|c| c.state == pb::ClaimState::New as i32)
            .collect();
        let outcomes = futures::future::join_all(new.iter().map(|c| work(c.id.clone()))).await;
        let mut commit = Vec::new();
        let mut release = Vec::new();
        let mut failed = std::collections::HashMap::new();
        for (c, r) in new.iter().zip(&outcomes) {
            let f = pb::Fenced {
                id: c.id.clone(),
                fence: c.fence,
            };
            match r {
                Ok(()) => commit.push(f),
                Err(e) => {
                    failed.insert(c.id.clone(), e.to_string());
                    release.push(f)
                }
            }
        }
        if !release.is_empty() {
            self.release(group, release).await?;
        }
        let committed = if commit.is_empty() {
            Vec::new()
        } else {
            self.commit(group, commit).await?
        };
        let rejected: std::collections::HashMap<&str, &str> = committed
            .iter()
            .filter(|r| !r.committed)
            .map(|r| (r.id.as_str(), r.reason.as_str()))
            .collect();
        Ok(claims
            .iter()
            .map(|c| {
                let state =
                    pb::ClaimState::try_from(c.state).unwrap_or(pb::ClaimState::Unspecified);
                if state != pb::ClaimState::New {
                    BatchOutcome::Duplicate(state)
                } else if let Some(e) = failed.get(&c.id) {
                    BatchOutcome::Failed(e.clone())
                } else if let Some(reason) = rejected.get(c.id.as_str()) {
                    BatchOutcome::CommitRejected(reason.to_string())
                } else {
                    BatchOutcome::Done
                }
            })
            .collect())
    }
}
