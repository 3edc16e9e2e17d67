//! A consumer that processes each message id once per group, however many copies
//! failover put in Kafka: it reads a topic as a consumer group, claims each batch's ids
//! through the dedup service, runs the caller's work for the new ones, commits them, and
//! only then stores the batch's offsets. `ballast consume` and the torture harness run it;
//! a service embeds it with its own `work`.

use crate::client::{BatchOutcome, DedupClient};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What the consumer reads and how it paces itself.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    pub bootstrap: String,
    /// TLS and SASL to the brokers.
    pub security: ballast_kafka::KafkaSecurity,
    pub topic: String,
    /// The consumer group, also the dedup group.
    pub group: String,
    /// The processing lease of a batch: its work must finish within it.
    pub lease: Duration,
    /// Stop after this long without a record, once records have arrived.
    pub idle_exit: Duration,
    /// How long to wait for the first record (joining the group takes a while).
    pub start_timeout: Duration,
    /// Stop after this many records.
    pub max_records: Option<u64>,
    /// Records claimed in one dedup call: whatever has arrived, up to this many.
    pub batch: usize,
    /// The consumer group session timeout: how soon a dead member's partitions move.
    pub session_timeout: Duration,
    /// How long dedup may keep failing before the consumer gives up (it retries meanwhile).
    pub dedup_retry_for: Duration,
    /// Append each message id to this file when its processing is committed.
    pub processed_log: Option<PathBuf>,
    /// Append each message id to this file when dedup reports it already processed.
    pub duplicates_log: Option<PathBuf>,
}

/// What a consumer run saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConsumeCounts {
    pub read: u64,
    pub processed: u64,
    pub duplicates: u64,
    pub unique_ids: u64,
}

/// The id dedup knows a record by: its `ballast-message-id` header, or
/// `topic/partition/offset` for a record that has none.
pub fn message_id(msg: &impl Message) -> String {
    msg.headers()
        .and_then(|h| {
            h.iter()
                .find(|h| h.key == ballast_core::MESSAGE_ID_HEADER)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        })
        .unwrap_or_else(|| format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset()))
}

/// Reads `opts.topic` as group `opts.group` and processes each message id once through
/// `dedup`, in batches of whatever has arrived. `work` runs once per new id, with the
/// record's first copy; an error fails the claim, which dedup then hands out again.
/// `progress` sees the counts after every batch.
pub async fn consume<W, Fut, E>(
    opts: &ConsumerOptions,
    dedup: &DedupClient,
    work: W,
    mut progress: impl FnMut(&ConsumeCounts),
) -> anyhow::Result<ConsumeCounts>
where
    W: Fn(OwnedMessage) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    anyhow::ensure!(opts.batch > 0, "the batch size must be positive");
    let (properties, context) = opts.security.rdkafka_config()?;
    let mut config = ClientConfig::new();
    for (k, v) in properties {
        config.set(k, v);
    }
    let consumer: StreamConsumer<ballast_kafka::KafkaContext> = config
        .set("bootstrap.servers", &opts.bootstrap)
        .set("group.id", &opts.group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        // Offsets are stored only after a record is processed (or found done).
        .set("enable.auto.offset.store", "false")
        .set(
            "session.timeout.ms",
            opts.session_timeout.as_millis().to_string(),
        )
        .create_with_context(context)?;
    consumer.subscribe(&[&opts.topic])?;
    let mut log = append_log(&opts.processed_log, "processed log")?;
    let mut dup_log = append_log(&opts.duplicates_log, "duplicates log")?;
    let mut counts = ConsumeCounts::default();
    let mut ids = HashSet::new();
    let mut done = false;
    while !done {
        // Wait for one record, then take whatever else is already here.
        let mut batch = Vec::new();
        let wait = if counts.read == 0 {
            opts.start_timeout.max(opts.idle_exit)
        } else {
            opts.idle_exit
        };
        let remaining = |read: u64, n: usize| {
            opts.max_records
                .map_or(u64::MAX, |m| m.saturating_sub(read + n as u64))
        };
        match tokio::time::timeout(wait, consumer.recv()).await {
            Err(_) => break,
            Ok(m) => {
                if let Some(m) = transient(m)? {
                    batch.push(m)
                }
            }
        }
        while batch.len() < opts.batch && remaining(counts.read, batch.len()) > 0 {
            match tokio::time::timeout(Duration::from_millis(5), consumer.recv()).await {
                Err(_) => break,
                Ok(m) => {
                    if let Some(m) = transient(m)? {
                        batch.push(m)
                    }
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        let batch_ids: Vec<String> = batch.iter().map(message_id).collect();
        counts.read += batch.len() as u64;
        ids.extend(batch_ids.iter().cloned());
        let mut first: HashMap<&str, &OwnedMessage> = HashMap::new();
        for (id, m) in batch_ids.iter().zip(&batch) {
            first.entry(id.as_str()).or_insert(m);
        }
        // Every id of the batch is settled (processed here, or DONE elsewhere) before any
        // offset of the batch is stored: an id another consumer still holds is waited
        // for, never skipped.
        let mut pending: Vec<&String> = batch_ids.iter().collect();
        let mut dedup_down_since: Option<Instant> = None;
        while !pending.is_empty() {
            let outcomes = match dedup
                .process_batch_once(
                    &opts.group,
                    pending.iter().map(|id| id.to_string()).collect(),
                    opts.lease,
                    |id| work(first[id.as_str()].clone()),
                )
                .await
            {
                Ok(o) => o,
                // Dedup (or its Redis) is away: the batch is tried again. Claims this
                // attempt made stay IN_PROGRESS until their lease ends, then come back NEW.
                Err(e) => {
                    let since = *dedup_down_since.get_or_insert_with(Instant::now);
                    anyhow::ensure!(
                        since.elapsed() < opts.dedup_retry_for,
                        "dedup failed for {:?} (the dedup retry bound): {e}",
                        opts.dedup_retry_for
                    );
                    tracing::warn!(error = %e, "dedup failed; trying the batch again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            dedup_down_since = None;
            let mut still = Vec::new();
            for (id, o) in pending.into_iter().zip(outcomes) {
                match o {
                    BatchOutcome::Done => {
                        counts.processed += 1;
                        if let Some(f) = log.as_mut() {
                            writeln!(f, "{id}")?;
                        }
                    }
                    BatchOutcome::Duplicate(_) => {
                        counts.duplicates += 1;
                        if let Some(f) = dup_log.as_mut() {
                            writeln!(f, "{id}")?;
                        }
                    }
                    BatchOutcome::InProgress => {
                        tracing::info!(%id, "held by another consumer; waiting");
                        still.push(id);
                    }
                    BatchOutcome::Failed(e) | BatchOutcome::CommitRejected(e) => {
                        anyhow::bail!("{id} was not processed: {e}")
                    }
                }
            }
            pending = still;
        }
        store_offsets(
            &consumer,
            batch.iter().map(|m| (m.topic(), m.partition(), m.offset())),
        )?;
        progress(&counts);
        done = remaining(counts.read, 0) == 0;
    }
    counts.unique_ids = ids.len() as u64;
    Ok(counts)
}

fn append_log(path: &Option<PathBuf>, what: &str) -> anyhow::Result<Option<std::fs::File>> {
    path.as_ref()
        .map(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| anyhow::anyhow!("{what} {}: {e}", path.display()))
        })
        .transpose()
}

/// Stores the offset after each record, skipping partitions this consumer no longer owns:
/// a rebalance while a batch was read or processed moved them, and their new owner reads
/// from the last committed offset, where dedup answers DONE for what was processed here.
/// Returns how many were skipped. Found by `ballast-dev torture`: the consumer used to
/// exit on librdkafka's "Erroneous state" for a revoked partition.
pub fn store_offsets<'a, C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    consumer: &C,
    offsets: impl IntoIterator<Item = (&'a str, i32, i64)>,
) -> anyhow::Result<usize> {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    let mut skipped = 0;
    for (topic, partition, offset) in offsets {
        match consumer.store_offset(topic, partition, offset) {
            Ok(()) => {}
            Err(KafkaError::StoreOffset(
                RDKafkaErrorCode::State | RDKafkaErrorCode::UnknownPartition,
            )) => {
                tracing::info!(
                    topic,
                    partition,
                    offset,
                    "partition no longer assigned here; its new owner goes on from the last commit"
                );
                skipped += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(skipped)
}

/// A record, or None for a consumption error librdkafka recovers from by itself (a broker
/// down, the whole cluster out): the consumer waits it out. Only a fatal error stops it.
fn transient(
    m: Result<rdkafka::message::BorrowedMessage<'_>, rdkafka::error::KafkaError>,
) -> anyhow::Result<Option<OwnedMessage>> {
    use rdkafka::error::KafkaError;
    match m {
        Ok(m) => Ok(Some(m.detach())),
        Err(e @ KafkaError::MessageConsumptionFatal(_)) => Err(e.into()),
        Err(e) => {
            tracing::warn!(error = %e, "kafka consumption error; waiting for the cluster");
            Ok(None)
        }
    }
}
