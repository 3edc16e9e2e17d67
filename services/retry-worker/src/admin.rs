//! `ballast.retry.v1.RetryAdmin`: queue statistics and the dead-letter store.

use ballast_core::ErrorCode;
use ballast_failover::{FailoverQueue, QueueError};
use ballast_proto::retry::v1 as pb;
use ballast_security::{Access, Action, RetryAction};
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Debug, Clone)]
pub struct RetryAdminService {
    queue: Arc<dyn FailoverQueue>,
    access: Access,
}

impl RetryAdminService {
    pub fn new(queue: Arc<dyn FailoverQueue>, access: Access) -> Self {
        Self { queue, access }
    }
}

fn status(e: QueueError) -> Status {
    match e {
        QueueError::Unavailable(m) => ErrorCode::Unavailable.status(m),
        QueueError::Ambiguous(m) => ErrorCode::DeadlineExceeded.status(m),
        e @ QueueError::Partial { .. } => ErrorCode::Unavailable.status(e.to_string()),
        QueueError::Config(m) | QueueError::Invalid(m) => ErrorCode::InvalidArgument.status(m),
    }
}

fn selection(ids: &[String], all: bool) -> Result<(), Status> {
    match (ids.is_empty(), all) {
        (true, false) => Err(ErrorCode::InvalidArgument.status("name ids, or set all")),
        (false, true) => Err(ErrorCode::InvalidArgument.status("ids and all are exclusive")),
        _ => Ok(()),
    }
}

#[tonic::async_trait]
impl pb::retry_admin_server::RetryAdmin for RetryAdminService {
    async fn stats(
        &self,
        request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        self.access
            .check(&request, Action::Retry(RetryAction::Read))?;
        let s = self.queue.stats().await.map_err(status)?;
        Ok(Response::new(pb::StatsResponse {
            backend: self.queue.backend().into(),
            queue: self.queue.queue().into(),
            depth: s.depth,
            oldest_age_ms: s.oldest_age_ms,
            in_flight: s.in_flight,
            redelivered: s.redelivered,
            dead_letters: s.dead_letters,
            dead_letter_oldest_age_ms: s.dead_letter_oldest_age_ms,
            retention_ms: s.retention.map(|d| d.as_millis() as u64),
            dead_letter_retention_ms: s.dead_letter_retention.map(|d| d.as_millis() as u64),
        }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        self.access
            .check(&request, Action::Retry(RetryAction::Read))?;
        let r = request.into_inner();
        let size = if r.page_size == 0 {
            50
        } else {
            r.page_size.min(1000)
        } as usize;
        let (list, next) = self
            .queue
            .list_dead_letters(size, &r.page_token)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListDeadLettersResponse {
            dead_letters: list
                .into_iter()
                .map(|d| pb::DeadLetter {
                    id: d.id,
                    topic: d.info.topic,
                    message_id: d.info.message_id,
                    attempts: d.info.attempts,
                    reason: d.info.reason,
                    first_failed_at_unix_ms: d.info.first_failed_at_unix_ms,
                    dead_at_unix_ms: d.dead_at_unix_ms,
                    value_bytes: d.body_bytes as u32,
                })
                .collect(),
            next_page_token: next,
        }))
    }

    async fn redrive(
        &self,
        request: Request<pb::RedriveRequest>,
    ) -> Result<Response<pb::RedriveResponse>, Status> {
        let caller = self
            .access
            .check(&request, Action::Retry(RetryAction::Write))?;
        let r = request.into_inner();
        selection(&r.ids, r.all)?;
        let n = self.queue.redrive(&r.ids, r.all).await.map_err(status)?;
        tracing::info!(redriven = n, principal = ?caller.principal, "dead letters redriven");
        Ok(Response::new(pb::RedriveResponse { redriven: n }))
    }

    async fn purge(
        &self,
        request: Request<pb::PurgeRequest>,
    ) -> Result<Response<pb::PurgeResponse>, Status> {
        let caller = self
            .access
            .check(&request, Action::Retry(RetryAction::Write))?;
        let r = request.into_inner();
        selection(&r.ids, r.all)?;
        let n = self.queue.purge(&r.ids, r.all).await.map_err(status)?;
        tracing::info!(purged = n, principal = ?caller.principal, "dead letters purged");
        Ok(Response::new(pb::PurgeResponse { purged: n }))
    }
}
