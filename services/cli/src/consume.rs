//! `ballast consume`: an example consumer that processes each record once per group with
//! the dedup service, however many copies failover put in Kafka.

use ballast_dedup_store::client::{DedupClient, Processed};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use std::collections::HashSet;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    #[arg(long, env = "BALLAST_KAFKA_BOOTSTRAP")]
    pub bootstrap: String,
    #[arg(long)]
    pub topic: String,
    /// The consumer group, also the dedup group.
    #[arg(long)]
    pub group: String,
    /// The dedup service address.
    #[arg(long, env = "BALLAST_DEDUP")]
    pub dedup: String,
    /// The processing lease; extended while work runs.
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
}

/// What a consumer run saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConsumeCounts {
    pub read: u64,
    pub processed: u64,
    pub duplicates: u64,
    pub unique_ids: u64,
}

pub async fn consume(args: &ConsumeArgs) -> anyhow::Result<ConsumeCounts> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("group.id", &args.group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        // Offsets are stored only after a record is processed (or found done).
        .set("enable.auto.offset.store", "false")
        .create()?;
    consumer.subscribe(&[&args.topic])?;
    let dedup = DedupClient::connect(
        &crate::endpoint(&args.dedup),
        format!("consume-{}", std::process::id()),
    )
    .await?;
    let mut counts = ConsumeCounts::default();
    let mut ids = HashSet::new();
    loop {
        if args.max_records.is_some_and(|m| counts.read >= m) {
            break;
        }
        let wait = if counts.read == 0 {
            args.start_timeout.max(args.idle_exit)
        } else {
            args.idle_exit
        };
        let msg = match tokio::time::timeout(wait, consumer.recv()).await {
            Err(_) => break,
            Ok(m) => m?,
        };
        counts.read += 1;
        let id = msg
            .headers()
            .and_then(|h| {
                h.iter()
                    .find(|h| h.key == ballast_core::MESSAGE_ID_HEADER)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
            .unwrap_or_else(|| format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset()));
        ids.insert(id.clone());
        // The work of this example is counting; a real consumer does its processing here.
        match dedup
            .process_once(&args.group, &id, args.lease, async {
                Ok::<_, std::convert::Infallible>(())
            })
            .await
        {
            Ok(Processed::Done(())) => counts.processed += 1,
            Ok(Processed::Duplicate(_)) => counts.duplicates += 1,
            Err(e) => anyhow::bail!("dedup failed for {id}: {e}"),
        }
        consumer.store_offset_from_message(&msg)?;
    }
    counts.unique_ids = ids.len() as u64;
    Ok(counts)
}

pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let c = consume(&args).await?;
    println!("read                 {}", c.read);
    println!("unique ids seen      {}", c.unique_ids);
    println!("processed (unique)   {}", c.processed);
    println!("duplicates skipped   {}", c.duplicates);
    Ok(())
}
