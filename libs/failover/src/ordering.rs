//! Ordered failover (`ordering: partition`): once a record of a fixed partition has failed
//! over, every later fixed-partition record of that partition follows it into the queue
//! until the queue has delivered the partition's earlier entries.
//!
//! The queue's database is the one record of which partitions are diverted (a mark per
//! partition, written with the enqueue, cleared by the worker that drained it). A gateway
//! writes a partition directly only under a *clean lease*: it read the set of marks at
//! most `ordering.lease` ago and the partition was not in it. So that a record sent after
//! a diverted record's acknowledgement, to any gateway, is diverted too, a diverted
//! record is acknowledged only once every lease read before its partition's mark was
//! visible has run out ([`Diverts::ack_not_before`]).

use crate::queue::{FailoverQueue, QueueError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// A topic's ordering promise.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TopicOrdering {
    /// Records with a fixed partition (a STRICT key, or an explicit partition) reach it in
    /// the order Ballast acknowledged them, through failover.
    #[default]
    Partition,
    /// No order through failover: a partition is written directly again as soon as it
    /// can take records, while its failed-over records wait for a retry worker.
    None,
}

/// `ordering`: which topics keep each partition's order through failover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct OrderingConfig {
    /// Every topic's ordering, unless `topics` names it: `partition` or `none`.
    pub default: TopicOrdering,
    /// Per-topic overrides, e.g. `{clicks: none}`.
    pub topics: BTreeMap<String, TopicOrdering>,
    /// How long a gateway's read of the diverted partitions lets it write the others
    /// directly. It reads them every half lease; the first diverted record of a
    /// partition waits one lease (and a twentieth of one, for clock rate) before its
    /// acknowledgement. A gateway that cannot read them for a lease diverts every
    /// fixed-partition record of an ordered topic.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub lease: Duration,
}

impl Default for OrderingConfig {
    fn default() -> Self {
        Self {
            default: TopicOrdering::Partition,
            topics: BTreeMap::new(),
            lease: Duration::from_secs(1),
        }
    }
}

impl OrderingConfig {
    /// No topic keeps order through failover (`ordering.default: none`).
    pub fn unordered() -> Self {
        Self {
            default: TopicOrdering::None,
            ..Self::default()
        }
    }

    /// Whether `topic` keeps its partitions' order.
    pub fn ordered(&self, topic: &str) -> bool {
        self.topics.get(topic).copied().unwrap_or(self.default) == TopicOrdering::Partition
    }

    /// Whether any topic may keep order.
    pub fn any_ordered(&self) -> bool {
        self.default == TopicOrdering::Partition
            || self.topics.values().any(|o| *o == TopicOrdering::Partition)
    }

    /// The wait past a lease that covers clocks running at different rates.
    pub fn margin(&self) -> Duration {
        (self.lease / 20).max(Duration::from_millis(10))
    }

    /// Refuses an ordered topic on a failover queue that cannot keep order.
    pub fn validate(&self, failover: &crate::FailoverConfig) -> Result<(), QueueError> {
        if self.lease < Duration::from_millis(100) {
            return Err(QueueError::Config(format!(
                "ordering.lease must be at least 100ms, got {:?}",
                self.lease
            )));
        }
        if failover.keeps_order() || !self.any_ordered() {
            return Ok(());
        }
        let which = if self.default == TopicOrdering::Partition {
            "ordering.default is partition".to_string()
        } else {
            let topics: Vec<&str> = self
                .topics
                .iter()
                .filter(|(_, o)| **o == TopicOrdering::Partition)
                .map(|(t, _)| t.as_str())
                .collect();
            format!("ordering.topics sets partition for {}", topics.join(", "))
        };
        Err(QueueError::Config(format!(
            "{which}, but the {} failover queue cannot keep a partition's order (a standard SQS \
             queue delivers in no order). Either use a failover queue that keeps order (an SQS \
             FIFO queue: failover.sqs.queue and failover.sqs.dlq both ending in .fifo, with \
             failover.sqs.offload.bucket set for the divert marks; or backend: postgres, or \
             sqlite when embedded), or set `ordering.default: none` (or \
             `ordering.topics.<topic>: none`) for the topics that may lose order through failover",
            failover.backend.name()
        )))
    }
}

/// A gateway's view of the diverted partitions: its clean lease and its own diverts.
#[derive(Debug)]
pub struct Diverts {
    cfg: OrderingConfig,
    queue: Arc<dyn FailoverQueue>,
    state: Mutex<State>,
    /// Woken after every read, for records waiting for their partition's divert to end.
    read: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Until when partitions not in `seen` may be written directly; None before the first
    /// read.
    clean_until: Option<Instant>,
    /// The diverted partitions of the last read, each with its mark's epoch and the end
    /// of the first read that saw that mark (it was visible by then).
    seen: HashMap<String, (i64, Instant)>,
    /// Partitions this gateway diverted, each with when its last enqueue answered; kept
    /// until a read that started after that no longer shows the mark.
    own: HashMap<String, Instant>,
}

impl Diverts {
    pub fn new(cfg: OrderingConfig, queue: Arc<dyn FailoverQueue>) -> Self {
        Self {
            cfg,
            queue,
            state: Mutex::new(State::default()),
            read: tokio::sync::Notify::new(),
        }
    }

    pub fn config(&self) -> &OrderingConfig {
        &self.cfg
    }

    /// Reads the diverted partitions once and renews the lease; an error leaves the
    /// lease to run out.
    pub async fn refresh(&self) -> Result<usize, QueueError> {
        let started = Instant::now();
        let read = tokio::time::timeout(self.cfg.lease, self.queue.diverted())
            .await
            .unwrap_or_else(|_| {
                Err(QueueError::Unavailable(format!(
                    "the diverted partitions were not read within {:?} (ordering.lease)",
                    self.cfg.lease
                )))
            })?;
        let done = Instant::now();
        let mut st = self.state.lock().expect("diverts lock");
        let mut seen = HashMap::with_capacity(read.len());
        for (key, epoch) in read {
            let first = match st.seen.get(&key) {
                Some((e, first)) if *e == epoch => *first,
                _ => done,
            };
            seen.insert(key, (epoch, first));
        }
        // An own divert whose mark this read (started after the enqueue) no longer holds
        // was drained and cleared.
        st.own
            .retain(|key, answered| seen.contains_key(key) || *answered >= started);
        st.seen = seen;
        st.clean_until = Some(started + self.cfg.lease);
        let n = st.seen.len();
        drop(st);
        self.read.notify_waiters();
        Ok(n)
    }

    /// Waits until partition `key` may be written directly, or `until`: whether it may.
    pub async fn wait_clean(&self, key: &str, until: Instant) -> bool {
        loop {
            let read = self.read.notified();
            tokio::pin!(read);
            read.as_mut().enable();
            if !self.must_divert(key) {
                return true;
            }
            if tokio::time::timeout_at(until, read).await.is_err() {
                return !self.must_divert(key);
            }
        }
    }

    /// Refreshes every half lease until the task is aborted.
    pub fn spawn_refresher(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(self.cfg.lease / 2);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tick.tick().await;
                match self.refresh().await {
                    Ok(_) if failing => {
                        failing = false;
                        tracing::info!("reading the diverted partitions again");
                    }
                    Ok(_) => {}
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "cannot read the diverted partitions; fixed-partition records of ordered topics go to the failover queue once the lease runs out");
                    }
                    Err(_) => {}
                }
            }
        })
    }

    /// Whether the last read of the diverted partitions is less than a lease old.
    pub fn lease_held(&self) -> bool {
        let st = self.state.lock().expect("diverts lock");
        st.clean_until.is_some_and(|t| Instant::now() < t)
    }

    /// Whether a fixed-partition record of the ordered partition `key` must go to the
    /// queue: the lease has run out, or the partition is diverted.
    pub fn must_divert(&self, key: &str) -> bool {
        let clean = self.lease_held();
        let st = self.state.lock().expect("diverts lock");
        !clean || st.seen.contains_key(key) || st.own.contains_key(key)
    }

    /// Notes that this gateway's enqueue into `key` answered at `answered`, leaving the
    /// partition's mark at `epoch` (None: not known), and returns when the record may be
    /// acknowledged: a lease after that mark was surely visible, plus the margin. The
    /// mark was visible by the enqueue's answer, or by the end of this gateway's first
    /// read that saw it, when that read saw the same mark (the same epoch): a mark
    /// cleared and made again since is a new one, which other gateways may not have
    /// seen.
    pub fn ack_not_before(&self, key: &str, epoch: Option<i64>, answered: Instant) -> Instant {
        let mut st = self.state.lock().expect("diverts lock");
        st.own.insert(key.to_string(), answered);
        let visible = match (st.seen.get(key), epoch) {
            (Some((seen_epoch, first)), Some(e)) if *seen_epoch == e => (*first).min(answered),
            _ => answered,
        };
        visible + self.cfg.lease + self.cfg.margin()
    }

    /// Partitions diverted as this gateway knows them (read, or its own).
    pub fn count(&self) -> usize {
        let st = self.state.lock().expect("diverts lock");
        st.seen.len() + st.own.keys().filter(|k| !st.seen.contains_key(*k)).count()
    }
}
