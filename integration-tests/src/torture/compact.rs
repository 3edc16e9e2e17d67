//! The compacted-topic load: writers that set each of their keys' values one after
//! another (the next only once the last was acknowledged), each write through the next
//! gateway, so a key's values pass through both gateways, the failover queue and the
//! retry workers. At the end, for every key, the last value in Kafka (by offset) must be
//! the last one acknowledged: the check that ordered failover keeps a compacted topic
//! from ending on a stale value.

use ballast_kafka::Landed;
use ballast_proto::ingest::v1 as pb;
use ballast_proto::ingest::v1::ingest_client::IngestClient;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The compacted topic (STRICT keys, `ordering: partition`).
pub const TOPIC: &str = "torture-compacted";
pub const PARTITIONS: i32 = 6;
/// Writers, and keys per writer.
pub const WRITERS: usize = 4;
pub const KEYS_PER_WRITER: usize = 8;
/// The pause between two writes of one writer.
const PACE: Duration = Duration::from_millis(20);

/// What the writers did with each key.
#[derive(Debug, Default)]
pub struct CompactLedger {
    /// Per key: the last value acknowledged, and the values given up after it (sent, not
    /// acknowledged: they may have landed all the same).
    keys: Mutex<HashMap<String, KeyStory>>,
    pub acked_kafka: AtomicUsize,
    pub acked_failover: AtomicUsize,
    pub given_up: AtomicUsize,
}

#[derive(Debug, Default, Clone)]
struct KeyStory {
    last_acked: Option<u64>,
    unacked_after: Vec<u64>,
}

fn key_name(seed: u64, writer: usize, k: usize) -> String {
    format!("c{seed}-w{writer}-k{k}")
}

/// One writer, until `stop`: its keys in turn, each value written until acknowledged (or
/// given up after `max_sends`), the gateways in turn.
pub async fn writer(
    seed: u64,
    id: usize,
    gateways: Vec<SocketAddr>,
    ledger: Arc<CompactLedger>,
    stop: Arc<AtomicBool>,
    max_sends: u32,
    request_timeout: Duration,
) {
    let mut conns: Vec<Option<IngestClient<tonic::transport::Channel>>> =
        vec![None; gateways.len()];
    let mut g = id % gateways.len();
    let mut value: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        for k in 0..KEYS_PER_WRITER {
            let key = key_name(seed, id, k);
            value += 1;
            let rec = pb::Record {
                topic: TOPIC.into(),
                key: Some(key.clone().into_bytes().into()),
                value: value.to_string().into_bytes().into(),
                message_id: format!("{key}-{value}"),
                key_policy: pb::KeyPolicy::Strict as i32,
                ..Default::default()
            };
            let mut acked = None;
            for send in 0..max_sends {
                g = (g + 1) % gateways.len();
                let answer = match connect(&mut conns[g], gateways[g], request_timeout).await {
                    Ok(mut c) => c
                        .produce(pb::ProduceRequest {
                            records: vec![rec.clone()],
                        })
                        .await
                        .map(|r| r.into_inner().results),
                    Err(e) => Err(e),
                };
                match answer.map(|mut r| r.pop().and_then(|r| r.outcome)) {
                    Ok(Some(pb::record_result::Outcome::Kafka(_))) => {
                        acked = Some(&ledger.acked_kafka);
                        break;
                    }
                    Ok(Some(pb::record_result::Outcome::Failover(_))) => {
                        acked = Some(&ledger.acked_failover);
                        break;
                    }
                    Ok(Some(pb::record_result::Outcome::Error(e))) if !e.retryable => {
                        tracing::warn!(code = e.code, message = %e.message, "compacted write refused");
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => conns[g] = None,
                }
                tokio::time::sleep(Duration::from_millis((25u64 << send.min(5)).min(1000))).await;
            }
            {
                let mut keys = ledger.keys.lock().expect("compact ledger");
                let story = keys.entry(key).or_default();
                match acked {
                    Some(counter) => {
                        counter.fetch_add(1, Ordering::Relaxed);
                        story.last_acked = Some(value);
                        story.unacked_after.clear();
                    }
                    None => {
                        ledger.given_up.fetch_add(1, Ordering::Relaxed);
                        story.unacked_after.push(value);
                    }
                }
            }
            tokio::time::sleep(PACE).await;
        }
    }
}

async fn connect(
    slot: &mut Option<IngestClient<tonic::transport::Channel>>,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<IngestClient<tonic::transport::Channel>, tonic::Status> {
    if let Some(c) = slot {
        return Ok(c.clone());
    }
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid uri")
        .connect_timeout(Duration::from_secs(1))
        .timeout(timeout)
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let c = IngestClient::new(ch);
    *slot = Some(c.clone());
    Ok(c)
}

/// The check's outcome.
#[derive(Debug)]
pub struct Verdict {
    pub keys: usize,
    /// Keys whose last value in Kafka is neither their last acknowledged value nor one
    /// sent after it and not acknowledged.
    pub stale: Vec<String>,
}

/// For every key: its last value in Kafka by offset is its last acknowledged value, or a
/// value sent after it that was never acknowledged (it may have landed).
pub fn check(ledger: &CompactLedger, landed: &[Landed]) -> Verdict {
    let mut last: HashMap<&[u8], (i64, u64)> = HashMap::new();
    for l in landed {
        let (Some(key), Ok(v)) = (
            l.key.as_deref(),
            String::from_utf8_lossy(&l.value).parse::<u64>(),
        ) else {
            continue;
        };
        let e = last.entry(key).or_insert((l.offset, v));
        if l.offset >= e.0 {
            *e = (l.offset, v);
        }
    }
    let keys = ledger.keys.lock().expect("compact ledger");
    let mut stale = Vec::new();
    for (key, story) in keys.iter() {
        let Some(want) = story.last_acked else {
            continue;
        };
        let got = last.get(key.as_bytes()).map(|(_, v)| *v);
        let ok = got == Some(want) || got.is_some_and(|v| story.unacked_after.contains(&v));
        if !ok {
            stale.push(format!(
                "{key}: last in kafka {got:?}, last acknowledged {want}"
            ));
        }
    }
    stale.sort();
    Verdict {
        keys: keys.values().filter(|s| s.last_acked.is_some()).count(),
        stale,
    }
}
