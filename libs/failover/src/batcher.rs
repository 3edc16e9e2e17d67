//! The gateway's enqueuer: records from concurrent requests share `enqueue` calls (up to the
//! queue's batch size, waiting at most `linger`), so an outage costs one SQS request per
//! ten records, and a breaker on the queue itself stops the gateway from hammering a queue
//! that is failing.
//!
//! An error means the queue does not hold the record, except [`QueueError::Ambiguous`],
//! which says it may. Each record waiting for a batch is either taken into one (just
//! before the batch is sent) or given up by its caller at `failover.timeout`, never both:
//! the two race on one compare-and-swap. A record given up is never sent. A caller whose
//! record was taken waits for the batch's own outcome, which each backend bounds on this
//! side by `failover.write_timeout` (and this task again, should a backend not): so every
//! record has its answer within `failover.timeout + failover.write_timeout`.

use crate::config::{FailoverConfig, BACKSTOP_GRACE};
use crate::queue::{FailoverQueue, Fate, QueueError};
use ballast_balancer::{Breaker, BreakerConfig, BreakerState};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// An entry id, and its ordered partition's mark epoch.
type Reply = oneshot::Sender<Result<(String, Option<i64>), QueueError>>;

/// A record waiting for a batch.
const WAITING: u8 = 0;
/// Taken into a batch: its caller waits for the batch's outcome.
const TAKEN: u8 = 1;
/// Given up by its caller: never sent.
const ABANDONED: u8 = 2;

struct Pending {
    body: Vec<u8>,
    order: Option<String>,
    reply: Reply,
    state: Arc<AtomicU8>,
    /// The body's share of `failover.pending_bytes`, given back when the body is dropped.
    bytes: tokio::sync::OwnedSemaphorePermit,
}

/// Sends bodies to the failover queue in shared batches.
#[derive(Debug, Clone)]
pub struct Enqueuer {
    tx: mpsc::Sender<Pending>,
    pending_bytes: Arc<Semaphore>,
    queue: Arc<dyn FailoverQueue>,
    breaker: Arc<Mutex<Breaker>>,
    breaker_cfg: BreakerConfig,
    timeout: Duration,
}

impl Enqueuer {
    /// Starts the batching task. It ends when every `Enqueuer` clone is dropped.
    pub fn start(
        queue: Arc<dyn FailoverQueue>,
        cfg: &FailoverConfig,
        breaker_cfg: BreakerConfig,
    ) -> Self {
        let (tx, rx) = mpsc::channel(cfg.pending_limit);
        tokio::spawn(run(
            rx,
            queue.clone(),
            cfg.linger,
            cfg.concurrent_batches,
            cfg.initial_delay,
            cfg.write_timeout,
        ));
        Self {
            tx,
            pending_bytes: Arc::new(Semaphore::new(cfg.pending_bytes)),
            queue,
            breaker: Arc::new(Mutex::new(Breaker::new())),
            breaker_cfg,
            timeout: cfg.timeout,
        }
    }

    pub fn backend(&self) -> &'static str {
        self.queue.backend()
    }

    pub fn queue_name(&self) -> &str {
        self.queue.queue()
    }

    pub fn queue(&self) -> Arc<dyn FailoverQueue> {
        self.queue.clone()
    }

    /// The breaker on the queue itself.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker
            .lock()
            .expect("breaker lock")
            .state(Instant::now())
    }

    /// Stores one body; the entry id once the queue has it.
    pub async fn enqueue(&self, body: Vec<u8>) -> Result<String, QueueError> {
        self.enqueue_ordered(body, None).await.map(|(id, _)| id)
    }

    /// As `enqueue`, for an entry of the ordered partition `order` (see
    /// [`crate::order_key`]): the queue marks the partition diverted with the entry, and
    /// answers the mark's epoch with the entry id.
    pub async fn enqueue_ordered(
        &self,
        body: Vec<u8>,
        order: Option<String>,
    ) -> Result<(String, Option<i64>), QueueError> {
        let admission = self
            .breaker
            .lock()
            .expect("breaker lock")
            .try_admit(&self.breaker_cfg, Instant::now())
            .ok_or_else(|| QueueError::Unavailable("failover queue breaker is open".into()))?;
        let bytes = u32::try_from(body.len().max(1))
            .ok()
            .and_then(|n| self.pending_bytes.clone().try_acquire_many_owned(n).ok());
        let result = match bytes {
            None => Err(QueueError::Unavailable(
                "failover queue has too many pending bytes (failover.pending_bytes)".into(),
            )),
            Some(bytes) => self.send(body, order, bytes).await,
        };
        let mut b = self.breaker.lock().expect("breaker lock");
        match &result {
            Ok(_) => b.on_success(&self.breaker_cfg, admission),
            Err(_) => b.on_failure(&self.breaker_cfg, admission, true, Instant::now()),
        }
        result
    }

    /// Hands the body to the batching task and waits for its fate.
    async fn send(
        &self,
        body: Vec<u8>,
        order: Option<String>,
        bytes: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<(String, Option<i64>), QueueError> {
        let (reply, mut rx) = oneshot::channel();
        let state = Arc::new(AtomicU8::new(WAITING));
        let pending = Pending {
            body,
            order,
            reply,
            state: state.clone(),
            bytes,
        };
        match self.tx.try_send(pending) {
            Err(mpsc::error::TrySendError::Full(_)) => Err(QueueError::Unavailable(
                "failover queue has too many pending records (failover.pending_limit)".into(),
            )),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Err(QueueError::Unavailable("failover enqueuer stopped".into()))
            }
            Ok(()) => match tokio::time::timeout(self.timeout, &mut rx).await {
                Ok(r) => r.unwrap_or_else(|_| dropped(&state)),
                // Give up only a record no batch has taken; a taken one is answered by its
                // batch, held or not.
                Err(_) => match state.compare_exchange(
                    WAITING,
                    ABANDONED,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => Err(QueueError::Unavailable(format!(
                        "failover queue did not take the record within {:?} (failover.timeout); it does not hold it",
                        self.timeout
                    ))),
                    Err(_) => rx.await.unwrap_or_else(|_| dropped(&state)),
                },
            },
        }
    }
}

/// A record's batch ended without a word. Taken, it may have been sent.
fn dropped(state: &AtomicU8) -> Result<(String, Option<i64>), QueueError> {
    if state.load(Ordering::Acquire) == TAKEN {
        Err(QueueError::Ambiguous(
            "failover batch was dropped after it was sent".into(),
        ))
    } else {
        Err(QueueError::Unavailable("failover batch was dropped".into()))
    }
}

async fn run(
    mut rx: mpsc::Receiver<Pending>,
    queue: Arc<dyn FailoverQueue>,
    linger: Duration,
    concurrent: usize,
    delay: Duration,
    write_timeout: Duration,
) {
    let max = queue.max_batch().max(1);
    let slots = Arc::new(Semaphore::new(concurrent));
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let until = tokio::time::Instant::now() + linger;
        while batch.len() < max {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(item)) => batch.push(item),
                _ => break,
            }
        }
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        // Only now, with the batch about to go out, are its records taken; those whose
        // callers gave up meanwhile stay out.
        batch.retain(|p| {
            p.state
                .compare_exchange(WAITING, TAKEN, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        });
        if batch.is_empty() {
            continue;
        }
        let queue = queue.clone();
        tokio::spawn(async move {
            let mut bodies = Vec::with_capacity(batch.len());
            let mut order = Vec::with_capacity(batch.len());
            let mut replies = Vec::with_capacity(batch.len());
            // The bodies' byte shares are held until the batch has its outcome.
            let mut shares = Vec::with_capacity(batch.len());
            for p in batch {
                bodies.push(p.body);
                order.push(p.order);
                replies.push(p.reply);
                shares.push(p.bytes);
            }
            // The backends bound their own calls; this bound (a little later) only catches
            // one that does not.
            let outcome = tokio::time::timeout(
                write_timeout + BACKSTOP_GRACE,
                async {
                    if order.iter().any(Option::is_some) {
                        let stored = queue.enqueue_ordered(&bodies, &order, delay).await?;
                        let epoch = |key: &Option<String>| {
                            let key = key.as_deref()?;
                            stored.epochs.iter().find(|(k, _)| k == key).map(|(_, e)| *e)
                        };
                        Ok(stored
                            .ids
                            .into_iter()
                            .zip(&order)
                            .map(|(id, key)| (id, epoch(key)))
                            .collect::<Vec<_>>())
                    } else {
                        Ok(queue
                            .enqueue(&bodies, delay)
                            .await?
                            .into_iter()
                            .map(|id| (id, None))
                            .collect())
                    }
                },
            )
            .await
            .unwrap_or_else(|_| {
                Err(QueueError::Ambiguous(format!(
                    "the failover queue did not answer within {write_timeout:?} (failover.write_timeout)"
                )))
            });
            match outcome {
                Ok(ids) => {
                    for (reply, id) in replies.into_iter().zip(ids) {
                        let _ = reply.send(Ok(id));
                    }
                }
                // Each record learns its own fate: held, or not held.
                Err(QueueError::Partial { stored, reason }) => {
                    for (reply, fate) in replies.into_iter().zip(stored) {
                        let _ = reply.send(match fate {
                            Fate::Held(id) => Ok((id, None)),
                            Fate::NotHeld => Err(QueueError::Unavailable(reason.clone())),
                            Fate::Unknown => Err(QueueError::Ambiguous(reason.clone())),
                        });
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
            drop(shares);
            drop(permit);
        });
    }
}
