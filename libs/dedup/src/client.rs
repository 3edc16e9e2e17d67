//! A client for the dedup service, with `process_once`: claim, run the work while extending
//! the lease, commit on success, release on error. An id already DONE skips the work.
//!
//! IN_PROGRESS means "not yet", never "skip": another consumer holds the id, and may die
//! holding it. The helpers wait and claim again until the id is NEW (the holder's lease
//! lapsed or it released: process it here) or DONE (skip it), for at most the caller's
//! lease. An id still IN_PROGRESS then comes back as `InProgress`: the caller must not
//! commit its Kafka offset past it.

use ballast_core::unix_ms;
use ballast_proto::dedup::v1 as pb;
use ballast_proto::dedup::v1::dedup_client::DedupClient as Raw;
use ballast_security::{AuthChannel, ClientSecurity};
use std::future::Future;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("dedup call failed: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("dedup transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("connecting to dedup: {0}")]
    Connect(String),
    #[error("commit rejected for {id}: {reason}")]
    CommitRejected { id: String, reason: String },
}

/// What `process_once` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Processed<T> {
    /// The work ran and was committed.
    Done(T),
    /// Another consumer processed the id; the work did not run.
    Duplicate(pb::ClaimState),
    /// Another consumer still holds the id after waiting one lease; the work did not run
    /// and the id is not done: do not commit past it, try again.
    InProgress,
}

/// What the batch form did with one id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Processed here and committed.
    Done,
    /// Processed elsewhere (DONE), or an earlier copy of the same id in this batch; not
    /// run here.
    Duplicate(pb::ClaimState),
    /// Still held by another consumer after waiting one lease: not done, do not commit
    /// past it.
    InProgress,
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

/// Claim results, in request order.
pub type Claims = Result<Vec<pb::ClaimResult>, ClientError>;
/// Results of a fenced call (commit, release, extend), in request order.
pub type FencedResults = Result<Vec<pb::FencedResult>, ClientError>;

/// A lease as the wire carries it: whole milliseconds, at most `u32::MAX`.
fn lease_ms(lease: Duration) -> u32 {
    lease.as_millis().min(u32::MAX as u128) as u32
}

#[derive(Debug, Clone)]
pub struct DedupClient {
    raw: Raw<AuthChannel>,
    owner: String,
}

impl DedupClient {
    /// Connects to `http://host:port`. `owner` names this consumer in claims.
    pub async fn connect(endpoint: &str, owner: impl Into<String>) -> Result<Self, ClientError> {
        Self::connect_with(endpoint, owner, &ClientSecurity::default()).await
    }

    /// [`DedupClient::connect`] to a secured service: TLS, a client certificate, a token.
    pub async fn connect_with(
        endpoint: &str,
        owner: impl Into<String>,
        security: &ClientSecurity,
    ) -> Result<Self, ClientError> {
        let channel = security
            .connect(endpoint)
            .await
            .map_err(|e| ClientError::Connect(format!("{e:#}")))?;
        Ok(Self {
            raw: Raw::new(channel),
            owner: owner.into(),
        })
    }

    /// Claims `ids` for `lease`: each result says whether this owner may process the id.
    pub async fn claim(&self, group: &str, ids: Vec<String>, lease: Duration) -> Claims {
        let mut r = pb::ClaimRequest::default();
        (r.group, r.ids, r.owner) = (group.into(), ids, self.owner.clone());
        r.lease_ms = lease_ms(lease);
        Ok(self.raw.clone().claim(r).await?.into_inner().results)
    }

    /// Marks claimed ids DONE, each under the fence its claim returned.
    pub async fn commit(&self, group: &str, entries: Vec<pb::Fenced>) -> FencedResults {
        let mut r = pb::CommitRequest::default();
        (r.group, r.entries, r.owner) = (group.into(), entries, self.owner.clone());
        Ok(self.raw.clone().commit(r).await?.into_inner().results)
    }

    /// Gives claims up, so that another consumer may claim the ids at once.
    pub async fn release(&self, group: &str, entries: Vec<pb::Fenced>) -> FencedResults {
        let mut r = pb::ReleaseRequest::default();
        (r.group, r.entries, r.owner) = (group.into(), entries, self.owner.clone());
        Ok(self.raw.clone().release(r).await?.into_inner().results)
    }

    /// Extends claims still held to `lease` from now.
    pub async fn extend(
        &self,
        group: &str,
        entries: Vec<pb::Fenced>,
        lease: Duration,
    ) -> FencedResults {
        let mut r = pb::ExtendRequest::default();
        (r.group, r.entries, r.owner) = (group.into(), entries, self.owner.clone());
        r.lease_ms = lease_ms(lease);
        Ok(self.raw.clone().extend(r).await?.into_inner().results)
    }

    /// Reads the ids' states without claiming them.
    pub async fn check(
        &self,
        group: &str,
        ids: Vec<String>,
    ) -> Result<Vec<pb::CheckResult>, ClientError> {
        let r = pb::CheckRequest {
            group: group.into(),
            ids,
        };
        Ok(self.raw.clone().check(r).await?.into_inner().results)
    }

    /// Claims `ids`, and while some are IN_PROGRESS (held by another consumer) waits for
    /// the holder's lease to end, or the holder to finish, and claims those again; for at
    /// most `lease` in all. Results are in request order.
    pub async fn claim_settled(
        &self,
        group: &str,
        ids: Vec<String>,
        lease: Duration,
    ) -> Result<Vec<pb::ClaimResult>, ClientError> {
        let deadline = Instant::now() + lease;
        let mut results = self.claim(group, ids, lease).await?;
        loop {
            let pending: Vec<usize> = (0..results.len())
                .filter(|&i| results[i].state == pb::ClaimState::InProgress as i32)
                .collect();
            let now = Instant::now();
            if pending.is_empty() || now >= deadline {
                return Ok(results);
            }
            // Until the earliest holder's lease ends, but look again at least twice a
            // second: a holder that finishes makes the id DONE before its lease ends.
            let now_ms = unix_ms();
            let until_lapse = pending
                .iter()
                .map(|&i| {
                    results[i]
                        .lease_expires_unix_ms
                        .saturating_sub(now_ms)
                        .max(0) as u64
                })
                .min()
                .unwrap_or(0);
            let wait = Duration::from_millis(until_lapse + 20)
                .min(Duration::from_millis(500))
                .min(deadline - now);
            tokio::time::sleep(wait).await;
            let again = self
                .claim(
                    group,
                    pending.iter().map(|&i| results[i].id.clone()).collect(),
                    lease,
                )
                .await?;
            for (i, r) in pending.into_iter().zip(again) {
                results[i] = r;
            }
        }
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
            .claim_settled(group, vec![id.to_string()], lease)
            .await?
            .pop()
            .ok_or_else(|| ClientError::Rpc(tonic::Status::internal("empty claim response")))?;
        match pb::ClaimState::try_from(claim.state).unwrap_or(pb::ClaimState::Unspecified) {
            pb::ClaimState::New => {}
            pb::ClaimState::InProgress => return Ok(Processed::InProgress),
            state => return Ok(Processed::Duplicate(state)),
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
    /// Ids IN_PROGRESS elsewhere are claimed again as their holders' leases end (NEW ones
    /// run at once, in the next round), for at most `lease`. Returns, per id in order,
    /// what happened to it.
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
        // A repeated id is claimed once; its later copies are duplicates of the first.
        let mut unique: Vec<String> = Vec::new();
        let mut first_of: Vec<usize> = Vec::with_capacity(ids.len());
        let mut seen = std::collections::HashMap::new();
        for id in &ids {
            let at = *seen.entry(id.clone()).or_insert_with(|| {
                unique.push(id.clone());
                unique.len() - 1
            });
            first_of.push(at);
        }
        let mut outcome: Vec<BatchOutcome> = vec![BatchOutcome::InProgress; unique.len()];
        let deadline = Instant::now() + lease;
        let mut todo: Vec<usize> = (0..unique.len()).collect();
        loop {
            let claims = self
                .claim(
                    group,
                    todo.iter().map(|&u| unique[u].clone()).collect(),
                    lease,
                )
                .await?;
            let mut held = Vec::new();
            let mut new = Vec::new();
            for (&u, c) in todo.iter().zip(&claims) {
                match pb::ClaimState::try_from(c.state).unwrap_or(pb::ClaimState::Unspecified) {
                    pb::ClaimState::New => new.push((u, c)),
                    pb::ClaimState::InProgress => held.push((u, c.lease_expires_unix_ms)),
                    state => outcome[u] = BatchOutcome::Duplicate(state),
                }
            }
            for (u, o) in self.run_claimed(group, &new, &work).await? {
                outcome[u] = o;
            }
            let now = Instant::now();
            if held.is_empty() || now >= deadline {
                break;
            }
            // Until the earliest holder's lease ends, but look again at least twice a
            // second: a holder that finishes makes the id DONE before its lease ends.
            let now_ms = unix_ms();
            let until_lapse = held
                .iter()
                .map(|&(_, expires)| expires.saturating_sub(now_ms).max(0) as u64)
                .min()
                .unwrap_or(0);
            tokio::time::sleep(
                Duration::from_millis(until_lapse + 20)
                    .min(Duration::from_millis(500))
                    .min(deadline - now),
            )
            .await;
            todo = held.into_iter().map(|(u, _)| u).collect();
        }
        let mut reported = vec![false; unique.len()];
        Ok(first_of
            .into_iter()
            .map(|u| {
                if std::mem::replace(&mut reported[u], true) {
                    // A later copy: a duplicate once the first is done, else the same fate.
                    match &outcome[u] {
                        BatchOutcome::Done | BatchOutcome::Duplicate(_) => {
                            BatchOutcome::Duplicate(pb::ClaimState::Done)
                        }
                        other => other.clone(),
                    }
                } else {
                    outcome[u].clone()
                }
            })
            .collect())
    }

    /// Runs `work` on NEW claims concurrently, then releases the failures and commits the
    /// successes; the outcome of each, by its index.
    async fn run_claimed<E, F, Fut>(
        &self,
        group: &str,
        new: &[(usize, &pb::ClaimResult)],
        work: &F,
    ) -> Result<Vec<(usize, BatchOutcome)>, ClientError>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let results = futures::future::join_all(new.iter().map(|(_, c)| work(c.id.clone()))).await;
        let fenced = |c: &pb::ClaimResult| pb::Fenced {
            id: c.id.clone(),
            fence: c.fence,
        };
        let release: Vec<pb::Fenced> = new
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_err())
            .map(|((_, c), _)| fenced(c))
            .collect();
        let commit: Vec<pb::Fenced> = new
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|((_, c), _)| fenced(c))
            .collect();
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
        Ok(new
            .iter()
            .zip(results)
            .map(|((u, c), r)| {
                let o = match r {
                    Err(e) => BatchOutcome::Failed(e.to_string()),
                    Ok(()) => match rejected.get(c.id.as_str()) {
                        Some(reason) => BatchOutcome::CommitRejected(reason.to_string()),
                        None => BatchOutcome::Done,
                    },
                };
                (*u, o)
            })
            .collect())
    }
}
