//! The dead-letter queue: reading it for operators, and redrive and purge a page at a time.

use super::*;

pub(super) fn dead_letter_of(l: &Leased) -> DeadLetter {
    let env = envelope::decode(&l.body).ok();
    DeadLetter {
        id: l.entry_id.clone(),
        info: DeadInfo {
            topic: env.as_ref().map(|e| e.topic.clone()).unwrap_or_default(),
            message_id: env
                .as_ref()
                .map(|e| e.message_id.clone())
                .unwrap_or_default(),
            attempts: env.as_ref().map(|e| e.attempt).unwrap_or(0),
            reason: env
                .as_ref()
                .map(|e| e.last_error.clone())
                .unwrap_or_else(|| "undecodable envelope".into()),
            first_failed_at_unix_ms: env.as_ref().map(|e| e.first_failed_at_unix_ms).unwrap_or(0),
        },
        dead_at_unix_ms: l.enqueued_at_unix_ms,
        body_bytes: l.body.len(),
    }
}

/// Dead letters read per page by a redrive or purge.
pub(super) const DEAD_PAGE: usize = 100;

/// The dead letters a redrive or purge picks (every one, or the given ids), a page at a
/// time. SQS cannot page a queue: each page is a receive that hides what it read for
/// 30 s, so the next receive reads others; it ends at an empty read, or once every
/// given id was found. The dead letters it read and did not pick are made visible again
/// by `finish`, so a `dlq list` right after a redrive by id still shows them.
pub(super) struct DeadPages<'a> {
    ids: &'a [String],
    all: bool,
    found: usize,
    /// Receipts of the dead letters read and passed over (a receipt each, no body).
    passed: Vec<String>,
}

impl<'a> DeadPages<'a> {
    pub(super) fn new(ids: &'a [String], all: bool) -> Self {
        Self {
            ids,
            all,
            found: 0,
            passed: Vec::new(),
        }
    }

    /// Makes the passed-over dead letters visible again. Best effort: one that stays
    /// hidden comes back by itself after 30 s.
    pub(super) async fn finish(self, q: &SqsQueue) {
        if let Err(e) = q.show_now(&q.dlq_url, &self.passed).await {
            tracing::warn!(error = %e, "could not show passed-over dead letters again; they return within 30 s");
        }
    }

    pub(super) async fn next(
        &mut self,
        q: &SqsQueue,
    ) -> Result<Option<Vec<(Leased, receive::Attrs)>>, QueueError> {
        loop {
            if !self.all && self.found >= self.ids.len() {
                return Ok(None);
            }
            let page = q.peek_dead(DEAD_PAGE, Duration::from_secs(30)).await?;
            if page.is_empty() {
                return Ok(None);
            }
            let (chosen, passed): (Vec<_>, Vec<_>) = page
                .into_iter()
                .partition(|(l, _)| self.all || self.ids.contains(&l.entry_id));
            self.passed
                .extend(passed.into_iter().map(|(l, _)| l.receipt));
            self.found += chosen.len();
            if !chosen.is_empty() {
                return Ok(Some(chosen));
            }
        }
    }
}

impl SqsQueue {
    /// Reads up to `limit` dead letters without keeping them hidden long.
    pub(super) async fn peek_dead(
        &self,
        limit: usize,
        hide: Duration,
    ) -> Result<Vec<(Leased, receive::Attrs)>, QueueError> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for _ in 0..limit.div_ceil(MAX_ENTRIES) + 2 {
            // A short long-poll: short polls may miss messages that are there.
            let got = self
                .receive_with(&self.dlq_url, MAX_ENTRIES, Duration::from_secs(1), hide)
                .await?;
            if got.is_empty() {
                break;
            }
            for (l, a) in got {
                if seen.insert(l.entry_id.clone()) && out.len() < limit {
                    out.push((l, a));
                }
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Sends dead letters back to the queue (attempts reset), then deletes them from the
    /// dead-letter queue.
    pub(super) async fn redrive_entries(&self, chosen: &[Leased]) -> Result<u64, QueueError> {
        let bodies: Vec<Vec<u8>> = chosen
            .iter()
            .map(|l| match envelope::decode(&l.body) {
                Ok(mut env) => {
                    env.attempt = 0;
                    envelope::encode(&env)
                }
                Err(_) => l.body.clone(),
            })
            .collect();
        if !bodies.is_empty() {
            self.send_batches(&self.queue_url, &bodies, Duration::ZERO)
                .await?;
            self.delete_from(&self.dlq_url, chosen).await?;
        }
        Ok(chosen.len() as u64)
    }
}
