//! `ballast consume`: an example consumer that processes each record once per group with
//! the dedup service, however many copies failover put in Kafka.

use ballast_dedup_store::client::{BatchOutcome, DedupClient};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use std::collections::HashSet;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    #[arg(long, env = "BALLAST_KAFKA_BOOTSTRAP")]
    pub bootstrap: String,
    /// CA (PEM) of the brokers' certificates: reads Kafka over TLS.
    #[arg(long, env = "BALLAST_KAFKA_TLS_CA")]
    pub kafka_tls_ca: Option<std::path::PathBuf>,
    /// Client certificate and key (PEM) for brokers that require mTLS.
    #[arg(long, requires_all = ["kafka_tls_ca", "kafka_tls_key"])]
    pub kafka_tls_cert: Option<std::path::PathBuf>,
    #[arg(long, requires = "kafka_tls_cert")]
    pub kafka_tls_key: Option<std::path::PathBuf>,
    /// SASL to Kafka: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM
    /// (over TLS when --kafka-tls-ca is given).
    #[arg(long, env = "BALLAST_KAFKA_SASL_MECHANISM", value_parser = parse_mechanism)]
    pub kafka_sasl_mechanism: Option<ballast_kafka::SaslMechanism>,
    #[arg(
        long,
        env = "BALLAST_KAFKA_SASL_USERNAME",
        requires = "kafka_sasl_mechanism"
    )]
    pub kafka_sasl_username: Option<String>,
    /// A file holding the SASL password.
    #[arg(
        long,
        env = "BALLAST_KAFKA_SASL_PASSWORD_FILE",
        requires = "kafka_sasl_mechanism"
    )]
    pub kafka_sasl_password_file: Option<std::path::PathBuf>,
    /// A file holding the OAUTHBEARER token.
    #[arg(
        long,
        env = "BALLAST_KAFKA_SASL_TOKEN_FILE",
        requires = "kafka_sasl_mechanism"
    )]
    pub kafka_sasl_token_file: Option<std::path::PathBuf>,
    /// AWS_MSK_IAM: the cluster's region.
    #[arg(
        long,
        env = "BALLAST_KAFKA_SASL_AWS_REGION",
        requires = "kafka_sasl_mechanism"
    )]
    pub kafka_sasl_aws_region: Option<String>,
    #[arg(long)]
    pub topic: String,
    /// The consumer group, also the dedup group.
    #[arg(long)]
    pub group: String,
    /// How to reach a secured dedup service.
    #[command(flatten)]
    pub client: crate::secure::ClientArgs,
    /// The dedup service address.
    #[arg(long, env = "BALLAST_DEDUP")]
    pub dedup: String,
    /// The processing lease of a batch: its work must finish within it.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub lease: Duration,
    /// Stop after this long without a record, once records have arrived.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub idle_exit: Duration,
    /// How long to wait for the first record (joining the group takes a while).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub start_timeout: Duration,
    /// Stop after this many records.
    #[arg(long)]
    pub max_records: Option<u64>,
    /// Records claimed in one dedup call: whatever has arrived, up to this many.
    #[arg(long, default_value_t = 200)]
    pub batch: usize,
    /// The consumer group session timeout: how soon a dead member's partitions move.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub session_timeout: Duration,
    /// Simulated work per record (this example's processing is otherwise only counting).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub work_delay: Duration,
    /// Append each message id to this file when its processing is committed.
    #[arg(long)]
    pub processed_log: Option<std::path::PathBuf>,
    /// How long dedup may keep failing before the consumer gives up (it retries meanwhile).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub dedup_retry_for: Duration,
    /// Append each message id to this file when dedup reports it already processed.
    #[arg(long)]
    pub duplicates_log: Option<std::path::PathBuf>,
}

fn append_log(
    path: &Option<std::path::PathBuf>,
    flag: &str,
) -> anyhow::Result<Option<std::fs::File>> {
    path.as_ref()
        .map(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))
        })
        .transpose()
}

fn parse_mechanism(s: &str) -> Result<ballast_kafka::SaslMechanism, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
        format!("{s}: expected PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM")
    })
}

impl ConsumeArgs {
    /// The Kafka security these flags describe: TLS with `--kafka-tls-ca`, SASL with
    /// `--kafka-sasl-mechanism`.
    pub fn kafka_security(&self) -> anyhow::Result<ballast_kafka::KafkaSecurity> {
        use ballast_kafka::SecurityProtocol::*;
        let protocol = match (
            self.kafka_tls_ca.is_some(),
            self.kafka_sasl_mechanism.is_some(),
        ) {
            (false, false) => Plaintext,
            (true, false) => Ssl,
            (false, true) => SaslPlaintext,
            (true, true) => SaslSsl,
        };
        let security = ballast_kafka::KafkaSecurity {
            protocol,
            ssl: ballast_kafka::KafkaSsl {
                ca_file: self.kafka_tls_ca.clone(),
                cert_file: self.kafka_tls_cert.clone(),
                key_file: self.kafka_tls_key.clone(),
            },
            sasl: ballast_kafka::KafkaSasl {
                mechanism: self.kafka_sasl_mechanism,
                username: self.kafka_sasl_username.clone(),
                password_file: self.kafka_sasl_password_file.clone(),
                token_file: self.kafka_sasl_token_file.clone(),
                aws_region: self.kafka_sasl_aws_region.clone(),
            },
        };
        security
            .validate(&Default::default())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(security)
    }
}

/// What a consumer run saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConsumeCounts {
    pub read: u64,
    pub processed: u64,
    pub duplicates: u64,
    pub unique_ids: u64,
}

/// Reads `args.topic` as group `args.group` and processes each message id once through
/// the dedup service, in batches of whatever has arrived. `progress` sees the counts after
/// every batch.
pub async fn consume(
    args: &ConsumeArgs,
    mut progress: impl FnMut(&ConsumeCounts),
) -> anyhow::Result<ConsumeCounts> {
    anyhow::ensure!(args.batch > 0, "--batch must be positive");
    let security = args.kafka_security()?;
    let (properties, context) = security.rdkafka_config()?;
    let mut config = ClientConfig::new();
    for (k, v) in properties {
        config.set(k, v);
    }
    let consumer: StreamConsumer<ballast_kafka::KafkaContext> = config
        .set("bootstrap.servers", &args.bootstrap)
        .set("group.id", &args.group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        // Offsets are stored only after a record is processed (or found done).
        .set("enable.auto.offset.store", "false")
        .set(
            "session.timeout.ms",
            args.session_timeout.as_millis().to_string(),
        )
        .create_with_context(context)?;
    consumer.subscribe(&[&args.topic])?;
    let dedup = DedupClient::connect_with(
        &crate::endpoint(&args.dedup),
        format!("consume-{}", std::process::id()),
        &args.client.security(),
    )
    .await?;
    let mut log = append_log(&args.processed_log, "--processed-log")?;
    let mut dup_log = append_log(&args.duplicates_log, "--duplicates-log")?;
    let mut counts = ConsumeCounts::default();
    let mut ids = HashSet::new();
    let mut done = false;
    while !done {
        // Wait for one record, then take whatever else is already here.
        let mut batch = Vec::new();
        let wait = if counts.read == 0 {
            args.start_timeout.max(args.idle_exit)
        } else {
            args.idle_exit
        };
        let remaining = |read: u64, n: usize| {
            args.max_records
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
        while batch.len() < args.batch && remaining(counts.read, batch.len()) > 0 {
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
        let batch_ids: Vec<String> = batch
            .iter()
            .map(|msg| {
                msg.headers()
                    .and_then(|h| {
                        h.iter()
                            .find(|h| h.key == ballast_core::MESSAGE_ID_HEADER)
                            .and_then(|h| h.value)
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                    })
                    .unwrap_or_else(|| {
                        format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset())
                    })
            })
            .collect();
        counts.read += batch.len() as u64;
        ids.extend(batch_ids.iter().cloned());
        // Every id of the batch is settled (processed here, or DONE elsewhere) before any
        // offset of the batch is stored: an id another consumer still holds is waited
        // for, never skipped.
        let mut pending: Vec<&String> = batch_ids.iter().collect();
        let mut dedup_down_since: Option<std::time::Instant> = None;
        while !pending.is_empty() {
            // The work of this example is counting; a real consumer does its processing here.
            let outcomes = match dedup
                .process_batch_once(
                    &args.group,
                    pending.iter().map(|id| id.to_string()).collect(),
                    args.lease,
                    |_id| async {
                        tokio::time::sleep(args.work_delay).await;
                        Ok::<_, std::convert::Infallible>(())
                    },
                )
                .await
            {
                Ok(o) => o,
                // Dedup (or its Redis) is away: the batch is tried again. Claims this
                // attempt made stay IN_PROGRESS until their lease ends, then come back NEW.
                Err(e) => {
                    let since = *dedup_down_since.get_or_insert_with(std::time::Instant::now);
                    anyhow::ensure!(
                        since.elapsed() < args.dedup_retry_for,
                        "dedup failed for {:?} (--dedup-retry-for): {e}",
                        args.dedup_retry_for
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
                            use std::io::Write;
                            writeln!(f, "{id}")?;
                        }
                    }
                    BatchOutcome::Duplicate(_) => {
                        counts.duplicates += 1;
                        if let Some(f) = dup_log.as_mut() {
                            use std::io::Write;
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

/// Stores the offset after each record, skipping partitions this consumer no longer owns:
/// a rebalance while a batch was read or processed moved them, and their new owner reads
/// from the last committed offset, where dedup answers DONE for what was processed here.
/// Returns how many were skipped. Found by `ballast torture`: the consumer used to exit
/// on librdkafka's "Erroneous state" for a revoked partition.
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
) -> anyhow::Result<Option<rdkafka::message::OwnedMessage>> {
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

pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let c = consume(&args, |_| {}).await?;
    println!("read                 {}", c.read);
    println!("unique ids seen      {}", c.unique_ids);
    println!("processed (unique)   {}", c.processed);
    println!("duplicates skipped   {}", c.duplicates);
    Ok(())
}
