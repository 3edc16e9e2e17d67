//! Load from clients that behave like a good client library: batches to either gateway;
//! on a retryable error, or when a gateway cannot be reached, the same record (same
//! message_id) is sent again after a backoff, up to a bound; then it is given up.

use super::system::TOPIC;
use ballast_proto::ingest::v1 as pb;
use ballast_proto::ingest::v1::ingest_client::IngestClient;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A record's one final outcome at the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Kafka {
        partition: i32,
        offset: i64,
    },
    Failover,
    /// Retried `max_sends` times without an acknowledgement.
    GivenUp,
    /// A non-retryable error: a bug in this load, counted apart.
    Refused,
}

#[derive(Debug, Clone, Default)]
pub struct Entry {
    /// The fault active when it was first sent (`Kind::index`).
    pub fault: u8,
    pub first_sent: Option<Instant>,
    pub sends: u32,
    pub retryable_errors: u32,
    pub outcome: Option<Outcome>,
    pub ack_ms: f64,
    /// Final outcomes after the first: each is a broken invariant.
    pub extra_outcomes: u32,
}

/// Every record's story.
#[derive(Debug)]
pub struct Ledger {
    pub entries: Mutex<Vec<Entry>>,
    pub seed: u64,
    pub acked_kafka: AtomicUsize,
    pub acked_failover: AtomicUsize,
    pub retryable: AtomicUsize,
    pub transport_errors: AtomicUsize,
    pub finished: AtomicUsize,
    /// The compacted-topic writers' story.
    pub compact: Arc<super::compact::CompactLedger>,
}

impl Ledger {
    pub fn new(records: usize, seed: u64) -> Self {
        Self {
            entries: Mutex::new(vec![Entry::default(); records]),
            seed,
            acked_kafka: AtomicUsize::new(0),
            acked_failover: AtomicUsize::new(0),
            retryable: AtomicUsize::new(0),
            transport_errors: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            compact: Arc::default(),
        }
    }

    pub fn id(&self, n: usize) -> String {
        message_id(self.seed, n)
    }

    fn settle(&self, e: &mut Entry, outcome: Outcome) {
        if e.outcome.is_some() {
            e.extra_outcomes += 1;
            return;
        }
        if let Some(t) = e.first_sent {
            e.ack_ms = t.elapsed().as_secs_f64() * 1000.0;
        }
        e.outcome = Some(outcome);
        self.finished.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Outcome::Kafka { .. } => self.acked_kafka.fetch_add(1, Ordering::Relaxed),
            Outcome::Failover => self.acked_failover.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }
}

pub fn message_id(seed: u64, n: usize) -> String {
    format!("t{seed}-{n:09}")
}

/// The record number of a message id of this run.
pub fn record_number(seed: u64, id: &str) -> Option<usize> {
    id.strip_prefix(&format!("t{seed}-"))?.parse().ok()
}

/// Record `n`'s value: its number, padded to 40 bytes.
pub fn value(n: usize) -> Vec<u8> {
    format!("{n:09} {}", "x".repeat(30)).into_bytes()
}

/// Record `n`'s key, when it has one, and whether it is STRICT (fixed to its murmur2
/// partition) or PREFERRED.
pub fn key(n: usize) -> Option<(String, pb::KeyPolicy)> {
    match n % 10 {
        0..=3 => Some((format!("k-{}", n % 1000), pb::KeyPolicy::Strict)),
        4 => Some((format!("k-{}", n % 1000), pb::KeyPolicy::Preferred)),
        _ => None,
    }
}

fn record(ledger: &Ledger, n: usize) -> pb::Record {
    let (key, policy) = match key(n) {
        Some((k, policy)) => (Some(k), policy),
        None => (None, pb::KeyPolicy::Strict),
    };
    pb::Record {
        topic: TOPIC.into(),
        key: key.map(|k| k.into_bytes().into()),
        value: value(n).into(),
        message_id: ledger.id(n),
        key_policy: policy as i32,
        ..Default::default()
    }
}

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub records: usize,
    pub clients: usize,
    pub batch: usize,
    pub rate: f64,
    pub max_sends: u32,
    pub request_timeout: Duration,
}

fn backoff(sends: u32) -> Duration {
    Duration::from_millis((25u64 << sends.min(6)).min(1000))
}

/// One client: fresh records from `next`, resends when due.
pub async fn client(
    id: usize,
    cfg: LoadConfig,
    gateways: Vec<SocketAddr>,
    ledger: Arc<Ledger>,
    next: Arc<AtomicUsize>,
    fault: Arc<AtomicU8>,
) {
    let mut retry: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
    let mut g = id % gateways.len();
    let mut conns: Vec<Option<IngestClient<tonic::transport::Channel>>> =
        vec![None; gateways.len()];
    let per_client = cfg.rate / cfg.clients as f64;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(cfg.batch as f64 / per_client));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let mut batch: Vec<usize> = Vec::new();
        while batch.len() < cfg.batch && retry.peek().is_some_and(|Reverse((t, _))| *t <= now) {
            batch.push(retry.pop().expect("checked").0 .1);
        }
        let fresh_room = cfg.batch - batch.len();
        if fresh_room > 0 {
            let start = next.fetch_add(fresh_room, Ordering::SeqCst);
            let end = (start + fresh_room).min(cfg.records);
            batch.extend(start..end.max(start));
        }
        if batch.is_empty() {
            if retry.is_empty() && next.load(Ordering::SeqCst) >= cfg.records {
                return;
            }
            continue;
        }
        let records: Vec<pb::Record> = {
            let mut entries = ledger.entries.lock().expect("ledger lock");
            let f = fault.load(Ordering::Relaxed);
            for &n in &batch {
                let e = &mut entries[n];
                if e.first_sent.is_none() {
                    e.first_sent = Some(now);
                    e.fault = f;
                }
                e.sends += 1;
            }
            batch.iter().map(|&n| record(&ledger, n)).collect()
        };
        let conn = match &mut conns[g] {
            Some(c) => Ok(c.clone()),
            slot => {
                match tonic::transport::Endpoint::from_shared(format!("http://{}", gateways[g]))
                    .expect("a valid uri")
                    .connect_timeout(Duration::from_secs(1))
                    .timeout(cfg.request_timeout)
                    .connect()
                    .await
                {
                    Ok(ch) => {
                        let c = IngestClient::new(ch);
                        *slot = Some(c.clone());
                        Ok(c)
                    }
                    Err(e) => Err(tonic::Status::unavailable(e.to_string())),
                }
            }
        };
        let answer = match conn {
            Ok(mut c) => c.produce(pb::ProduceRequest { records }).await,
            Err(e) => Err(e),
        };
        let mut entries = ledger.entries.lock().expect("ledger lock");
        match answer {
            Err(_) => {
                // The gateway is gone or shedding: every record goes again, elsewhere.
                ledger.transport_errors.fetch_add(1, Ordering::Relaxed);
                conns[g] = None;
                g = (g + 1) % gateways.len();
                for n in batch {
                    requeue(&ledger, &mut entries[n], n, &mut retry, cfg.max_sends);
                }
            }
            Ok(resp) => {
                let results = resp.into_inner().results;
                let mut answers = results.into_iter();
                for n in batch {
                    let e = &mut entries[n];
                    let r = answers.next().filter(|r| r.message_id == ledger.id(n));
                    match r.and_then(|r| r.outcome) {
                        Some(pb::record_result::Outcome::Kafka(k)) => ledger.settle(
                            e,
                            Outcome::Kafka {
                                partition: k.partition,
                                offset: k.offset,
                            },
                        ),
                        Some(pb::record_result::Outcome::Failover(_)) => {
                            ledger.settle(e, Outcome::Failover)
                        }
                        Some(pb::record_result::Outcome::Error(err)) if err.retryable => {
                            e.retryable_errors += 1;
                            ledger.retryable.fetch_add(1, Ordering::Relaxed);
                            requeue(&ledger, e, n, &mut retry, cfg.max_sends);
                        }
                        Some(pb::record_result::Outcome::Error(err)) => {
                            tracing::warn!(code = err.code, message = %err.message, "refused");
                            ledger.settle(e, Outcome::Refused)
                        }
                        // No answer for it: treated as a failed send.
                        None => requeue(&ledger, e, n, &mut retry, cfg.max_sends),
                    }
                }
            }
        }
    }
}

fn requeue(
    ledger: &Ledger,
    e: &mut Entry,
    n: usize,
    retry: &mut BinaryHeap<Reverse<(Instant, usize)>>,
    max_sends: u32,
) {
    if e.outcome.is_some() {
        return;
    }
    if e.sends >= max_sends {
        ledger.settle(e, Outcome::GivenUp);
    } else {
        retry.push(Reverse((Instant::now() + backoff(e.sends), n)));
    }
}
