//! Reading a topic back from the beginning, for audits and tests.

use ballast_core::MESSAGE_ID_HEADER;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A record read back from Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landed {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    /// The `ballast-message-id` header, when present.
    pub message_id: Option<String>,
    /// Every header, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Landed {
    /// The first header named `key`, as text.
    pub fn header(&self, key: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// Reads every record of `topic` from the beginning up to the high watermarks seen at the
/// start (or until `expected` records, when given), within `timeout`. Without `expected`,
/// a read the timeout cuts short is an error, never a partial answer; with it, the caller
/// gets what arrived and checks the count.
pub fn read_topic(
    bootstrap: &str,
    topic: &str,
    expected: Option<usize>,
    timeout: Duration,
) -> Result<Vec<Landed>, crate::Error> {
    read_topic_with(
        bootstrap,
        &crate::KafkaSecurity::default(),
        topic,
        expected,
        timeout,
    )
}

/// [`read_topic`] from brokers reached with `security`.
pub fn read_topic_with(
    bootstrap: &str,
    security: &crate::KafkaSecurity,
    topic: &str,
    expected: Option<usize>,
    timeout: Duration,
) -> Result<Vec<Landed>, crate::Error> {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", bootstrap)
        .set("group.id", format!("ballast-reader-{topic}"))
        .set("enable.auto.commit", "false");
    let (properties, context) = security.rdkafka_config()?;
    for (k, v) in properties {
        cc.set(k, v);
    }
    let consumer: BaseConsumer<crate::KafkaContext> = cc.create_with_context(context)?;
    // An OAUTHBEARER token is handed over while the consumer is polled; before the first
    // poll no connection can authenticate.
    if security.protocol.uses_sasl() {
        let _ = consumer.poll(Duration::from_millis(100));
    }
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        return Err(crate::Error::Metadata(format!(
            "topic {topic} has no partitions"
        )));
    }
    // Where each partition ends now; not needed when a count is expected.
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    if expected.is_none() {
        for &p in &partitions {
            let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(5))?;
            if high > 0 {
                remaining.insert(p, high);
            }
        }
    }
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut out = Vec::new();
    let end = Instant::now() + timeout;
    let done = |out: &Vec<Landed>, remaining: &HashMap<i32, i64>| match expected {
        Some(n) => out.len() >= n,
        None => remaining.is_empty(),
    };
    while !done(&out, &remaining) && Instant::now() < end {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let headers: Vec<(String, Vec<u8>)> = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default();
                let message_id = headers
                    .iter()
                    .find(|(k, _)| k == MESSAGE_ID_HEADER)
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
                if let Some(high) = remaining.get(&m.partition()) {
                    if m.offset() + 1 >= *high {
                        remaining.remove(&m.partition());
                    }
                }
                out.push(Landed {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    message_id,
                    headers,
                });
            }
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    if expected.is_none() && !remaining.is_empty() {
        return Err(crate::Error::Read(format!(
            "{topic}: read {} records in {timeout:?}; partitions {:?} did not reach the high watermark seen at the start",
            out.len(),
            remaining.keys().collect::<std::collections::BTreeSet<_>>()
        )));
    }
    Ok(out)
}
