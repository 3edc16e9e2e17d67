//! The gateway's enqueuer: records from concurrent requests share `enqueue` calls (up to the
//! queue's batch size, waiting at most `linger`), so an outage costs one SQS request per
//! ten records, and a breaker on the queue itself stops the gateway from hammering a queue
//! that is failing.

use crate::config::FailoverConfig;
use crate::queue::{FailoverQueue, QueueError};
use ballast_balancer::{Breaker, BreakerConfig, BreakerState};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Semaphore};

type Reply = oneshot::Sender<Result<String, QueueError>>;

/// Sends bodies to the failover queue in shared batches.
#[derive(Debug, Clone)]
pub struct Enqueuer {
    tx: mpsc::Sender<(Vec<u8>, Reply)>,
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
        ));
        Self {
            tx,
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
        let admission = self
            .breaker
            .lock()
            .expect("breaker lock")
            .try_admit(&self.breaker_cfg, Instant::now())
            .ok_or_else(|| QueueError::Unavailable("failover queue breaker is open".into()))?;
        let (reply, rx) = oneshot::channel();
        let result = match self.tx.try_send((body, reply)) {
            Err(mpsc::error::TrySendError::Full(_)) => Err(QueueError::Unavailable(
                "failover queue has too many pending records (failover.pending_limit)".into(),
            )),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Err(QueueError::Unavailable("failover enqueuer stopped".into()))
            }
            Ok(()) => match tokio::time::timeout(self.timeout, rx).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(QueueError::Unavailable("failover batch was dropped".into())),
                Err(_) => Err(QueueError::Unavailable(format!(
                    "failover queue did not confirm within {:?}",
                    self.timeout
                ))),
            },
        };
        let mut b = self.breaker.lock().expect("breaker lock");
        match &result {
            Ok(_) => b.on_success(&self.breaker_cfg, admission),
            Err(_) => b.on_failure(&self.breaker_cfg, admission, true, Instant::now()),
        }
        result
    }
}

async fn run(
    mut rx: mpsc::Receiver<(Vec<u8>, Reply)>,
    queue: Arc<dyn FailoverQueue>,
    linger: Duration,
    concurrent: usize,
    delay: Duration,
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
        let queue = queue.clone();
        tokio::spawn(async move {
            let (bodies, replies): (Vec<Vec<u8>>, Vec<Reply>) = batch.into_iter().unzip();
            match queue.enqueue(&bodies, delay).await {
                Ok(ids) => {
                    for (reply, id) in replies.into_iter().zip(ids) {
                        let _ = reply.send(Ok(id));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
            drop(permit);
        });
    }
}
