//! The SQS backend (aws-sdk-sqs). Bodies are base64 envelopes; attributes carry topic,
//! message id and attempt. Sends use `SendMessageBatch` (at most 10 entries and 256 KiB a
//! call, split as needed), delays `DelaySeconds` (at most 900 s; longer delays are applied
//! again by the worker), backoff `ChangeMessageVisibility`, and dead letters go explicitly
//! to a second queue with the reason as an attribute. With `offload.bucket` set, bodies
//! over `offload.threshold_bytes` go to S3 and the message carries a pointer (see
//! [`crate::offload`]).

use crate::envelope;
use crate::offload::{Fetched, Offload, Pointer, S3OffloadConfig, SIZE_ATTRIBUTE};
use crate::queue::*;
use crate::seen::SeenAges;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

mod dead;
mod fifo;
pub(crate) mod marks;
mod receive;
mod send;

use dead::{dead_letter_of, DeadPages};
pub(crate) use send::enqueue_timeouts;
use send::err_send;

/// SQS allows 10 entries and 256 KiB per batch; keep a margin for attributes.
const MAX_ENTRIES: usize = 10;
/// The largest record (key + value + headers) an SQS failover message can carry: a message
/// holds 256 KiB, base64 costs a third, and the envelope (topic, message id, a last error
/// of at most 1 KiB) needs room. A gateway with SQS failover refuses a larger
/// `limits.max_record_bytes` at startup.
pub const SQS_MAX_RECORD_BYTES: usize = 176 * 1024;
const MAX_BATCH_BYTES: usize = 240 * 1024;
const MAX_DELAY_SECS: u64 = 900;
/// SQS's longest `MessageRetentionPeriod`, 14 days: both queues are created with it, and
/// it is the default `failover.sqs.min_retention`.
pub const SQS_MAX_RETENTION: Duration = Duration::from_secs(14 * 24 * 3600);
/// How long a worker remembers an entry it received, for the oldest age it reports.
const SEEN_FOR: Duration = Duration::from_secs(15 * 60);
const MAX_VISIBILITY_SECS: u64 = 12 * 3600;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SqsConfig {
    /// The queue name (resolved to a URL at start) or a full queue URL.
    pub queue: String,
    /// The dead-letter queue name or URL.
    pub dlq: String,
    /// A custom endpoint, e.g. a local SQS-compatible server; None uses AWS.
    pub endpoint: Option<String>,
    /// None uses the default provider chain (AWS_REGION, profile, IMDS).
    pub region: Option<String>,
    /// Static credentials for local endpoints; None uses the default credential chain.
    pub access_key_id: Option<String>,
    /// A static secret key; prefer `secret_access_key_file` or the AWS credential chain.
    pub secret_access_key: Option<String>,
    /// A file holding the secret access key (a mounted Secret); wins over
    /// `secret_access_key`.
    pub secret_access_key_file: Option<std::path::PathBuf>,
    /// Create the queues if missing (development), both with 14 days' retention.
    pub create_queues: bool,
    /// Large bodies to S3 (the extended-client pattern).
    pub offload: S3OffloadConfig,
    /// Refuse to start when the queue's or the dead-letter queue's
    /// `MessageRetentionPeriod` is shorter. SQS deletes a message at its retention,
    /// delivered or not, and holding one back (`ChangeMessageVisibility`) does not
    /// reset the clock. `0s` turns the check off.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub min_retention: Duration,
}

impl Default for SqsConfig {
    fn default() -> Self {
        Self {
            queue: "ballast-failover".into(),
            dlq: "ballast-failover-dlq".into(),
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            secret_access_key_file: None,
            create_queues: false,
            offload: S3OffloadConfig::default(),
            min_retention: SQS_MAX_RETENTION,
        }
    }
}

impl SqsConfig {
    /// Queue `queue` and its dead-letter queue (`<queue>-dlq`, or `<name>-dlq.fifo` for a
    /// FIFO `<name>.fifo`) on an SQS-compatible server at `endpoint` (moto_server,
    /// LocalStack), in us-east-1 with the static credentials `test`/`test`, both queues
    /// created when missing: for development and tests.
    pub fn local(endpoint: impl Into<String>, queue: &str) -> Self {
        let dlq = match queue.strip_suffix(".fifo") {
            Some(name) => format!("{name}-dlq.fifo"),
            None => format!("{queue}-dlq"),
        };
        Self {
            queue: queue.into(),
            dlq,
            endpoint: Some(endpoint.into()),
            region: Some("us-east-1".into()),
            access_key_id: Some("test".into()),
            secret_access_key: Some("test".into()),
            create_queues: true,
            ..Self::default()
        }
    }

    pub fn validate(&self) -> Result<(), QueueError> {
        if self.min_retention > SQS_MAX_RETENTION {
            return Err(QueueError::Config(format!(
                "failover.sqs.min_retention is {} s; SQS keeps a message at most 14 days ({} s)",
                self.min_retention.as_secs(),
                SQS_MAX_RETENTION.as_secs()
            )));
        }
        self.offload.validate()
    }
}

#[derive(Debug)]
pub struct SqsQueue {
    client: Client,
    queue_url: String,
    dlq_url: String,
    requests: AtomicU64,
    offload: Option<Offload>,
    /// `failover.write_timeout`: the client-side bound on one enqueue, its S3 puts and
    /// every sub-batch included.
    write_timeout: Duration,
    /// Each queue's `MessageRetentionPeriod`, read at start.
    retention: Duration,
    dlq_retention: Duration,
    /// Send times of the entries this queue received, for the oldest age (SQS reports
    /// none through its API).
    seen: SeenAges,
    seen_dead: SeenAges,
    /// Both queues are FIFO (names ending in `.fifo`): ordered partitions keep their
    /// order, with their divert marks in `marks` (see [`fifo`]).
    fifo: bool,
    marks: Option<marks::Marks>,
}

/// Whether an SQS queue name (or URL) names a FIFO queue.
pub fn is_fifo(name_or_url: &str) -> bool {
    name_or_url.ends_with(".fifo")
}

/// SQS counts delays in whole seconds; a positive delay is never rounded down to none.
fn ceil_secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}

fn err(e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

fn string_attr(v: &str) -> Result<MessageAttributeValue, QueueError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(v)
        .build()
        .map_err(err)
}

fn number_attr(v: u64) -> Result<MessageAttributeValue, QueueError> {
    MessageAttributeValue::builder()
        .data_type("Number")
        .string_value(v.to_string())
        .build()
        .map_err(err)
}

impl SqsQueue {
    /// Connects with `cfg`; each enqueue is bounded by `write_timeout`
    /// (`failover.write_timeout`).
    pub async fn connect(cfg: &SqsConfig, write_timeout: Duration) -> Result<Self, QueueError> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(ep) = &cfg.endpoint {
            loader = loader.endpoint_url(ep);
        }
        if let Some(r) = &cfg.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        let secret = match &cfg.secret_access_key_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .map(|s| s.trim().to_string())
                    .map_err(|e| {
                        QueueError::Config(format!(
                            "failover.sqs.secret_access_key_file {}: {e}",
                            f.display()
                        ))
                    })?,
            ),
            None => cfg.secret_access_key.clone(),
        };
        if let (Some(id), Some(secret)) = (&cfg.access_key_id, &secret) {
            loader = loader.credentials_provider(aws_sdk_sqs::config::Credentials::new(
                id.clone(),
                secret.clone(),
                None,
                None,
                "ballast-config",
            ));
        }
        // Every call has an outcome in bounded time; long polls wait at most 20 s.
        loader = loader.timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(25))
                .operation_timeout(Duration::from_secs(30))
                .build(),
        );
        let shared = loader.load().await;
        if shared.region().is_none() {
            return Err(QueueError::Config(
                "sqs region is not set: set failover.sqs.region or AWS_REGION".into(),
            ));
        }
        let client = Client::new(&shared);
        let offload = if cfg.offload.enabled() {
            Some(
                Offload::connect(&cfg.offload, &shared, cfg.endpoint.is_some(), write_timeout)
                    .await?,
            )
        } else {
            None
        };
        let mut q = Self {
            client,
            queue_url: String::new(),
            dlq_url: String::new(),
            requests: AtomicU64::new(0),
            offload,
            write_timeout,
            retention: Duration::ZERO,
            dlq_retention: Duration::ZERO,
            seen: SeenAges::new(SEEN_FOR),
            seen_dead: SeenAges::new(SEEN_FOR),
            fifo: is_fifo(&cfg.queue),
            marks: None,
        };
        if is_fifo(&cfg.queue) != is_fifo(&cfg.dlq) {
            return Err(QueueError::Config(format!(
                "failover.sqs.queue ({}) and failover.sqs.dlq ({}) must both be FIFO queues \
                 (names ending in .fifo) or both standard: a dead letter of an ordered \
                 partition keeps its group",
                cfg.queue, cfg.dlq
            )));
        }
        q.queue_url = q.resolve(&cfg.queue, cfg.create_queues).await?;
        q.dlq_url = q.resolve(&cfg.dlq, cfg.create_queues).await?;
        q.retention = q
            .retention_of("failover.sqs.queue", &q.queue_url, cfg.min_retention)
            .await?;
        q.dlq_retention = q
            .retention_of("failover.sqs.dlq", &q.dlq_url, cfg.min_retention)
            .await?;
        if q.fifo {
            q.marks = q.offload.as_ref().map(|o| o.marks(&q.queue_url));
        }
        Ok(q)
    }

    /// The queue's `MessageRetentionPeriod`; an error when it is below `min`.
    async fn retention_of(
        &self,
        key: &str,
        url: &str,
        min: Duration,
    ) -> Result<Duration, QueueError> {
        self.count();
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::MessageRetentionPeriod)
            .send()
            .await
            .map_err(err_sdk)?;
        let secs = out
            .attributes
            .unwrap_or_default()
            .get(&QueueAttributeName::MessageRetentionPeriod)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| {
                QueueError::Config(format!(
                    "{key} {url}: the queue reports no MessageRetentionPeriod"
                ))
            })?;
        if Duration::from_secs(secs) < min {
            return Err(QueueError::Config(format!(
                "{key} {url}: MessageRetentionPeriod is {secs} s, below failover.sqs.min_retention \
                 ({} s). SQS deletes a message at its retention whether or not it reached Kafka: \
                 raise it (aws sqs set-queue-attributes --queue-url {url} --attributes \
                 MessageRetentionPeriod={}) or lower failover.sqs.min_retention",
                min.as_secs(),
                SQS_MAX_RETENTION.as_secs()
            )));
        }
        Ok(Duration::from_secs(secs))
    }

    fn seen_for(&self, url: &str) -> &SeenAges {
        if url == self.dlq_url {
            &self.seen_dead
        } else {
            &self.seen
        }
    }

    /// SQS API calls made so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    async fn resolve(&self, name_or_url: &str, create: bool) -> Result<String, QueueError> {
        if name_or_url.starts_with("http://") || name_or_url.starts_with("https://") {
            return Ok(name_or_url.to_string());
        }
        if name_or_url.is_empty() {
            return Err(QueueError::Config("sqs queue name is empty".into()));
        }
        self.count();
        if create {
            let mut attributes = std::collections::HashMap::from([(
                QueueAttributeName::MessageRetentionPeriod,
                SQS_MAX_RETENTION.as_secs().to_string(),
            )]);
            if is_fifo(name_or_url) {
                attributes.insert(QueueAttributeName::FifoQueue, "true".into());
            }
            let created = self
                .client
                .create_queue()
                .queue_name(name_or_url)
                .set_attributes(Some(attributes))
                .send()
                .await;
            match created {
                Ok(out) => {
                    return out
                        .queue_url
                        .ok_or_else(|| err("create_queue returned no url"))
                }
                // It exists with other attributes: use it as it is, and let the retention
                // check judge it.
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_queue_name_exists()) =>
                {
                    self.count();
                }
                Err(e) => return Err(err_sdk(e)),
            }
        }
        let out = self
            .client
            .get_queue_url()
            .queue_name(name_or_url)
            .send()
            .await
            .map_err(err_sdk)?;
        out.queue_url
            .ok_or_else(|| err("get_queue_url returned no url"))
    }

    async fn approximate(&self, url: &str) -> Result<(u64, u64, u64), QueueError> {
        self.count();
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(err_sdk)?;
        let attrs = out.attributes.unwrap_or_default();
        let get = |k: QueueAttributeName| {
            attrs
                .get(&k)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok((
            get(QueueAttributeName::ApproximateNumberOfMessages),
            get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        ))
    }
}

#[async_trait::async_trait]
impl FailoverQueue for SqsQueue {
    fn backend(&self) -> &'static str {
        "sqs"
    }

    fn queue(&self) -> &str {
        &self.queue_url
    }

    fn max_batch(&self) -> usize {
        MAX_ENTRIES
    }

    fn api_calls(&self) -> u64 {
        self.requests()
    }

    async fn enqueue(
        &self,
        bodies: &[Vec<u8>],
        delay: Duration,
    ) -> Result<Vec<String>, QueueError> {
        self.send_batches(&self.queue_url, bodies, delay).await
    }

    async fn enqueue_ordered(
        &self,
        bodies: &[Vec<u8>],
        order: &[Option<String>],
        delay: Duration,
    ) -> Result<OrderedIds, QueueError> {
        // Unordered bodies go as `enqueue` sends them; ordered ones need the marks.
        self.fifo_enqueue(bodies, order, delay).await
    }

    async fn diverted(&self) -> Result<Vec<(String, i64)>, QueueError> {
        let Some(marks) = &self.marks else {
            return Ok(Vec::new());
        };
        let mut out: Vec<(String, i64)> = marks
            .read_all()
            .await?
            .into_iter()
            .map(|(k, r)| (k, r.mark.epoch))
            .collect();
        out.sort();
        Ok(out)
    }

    fn keeps_order(&self) -> bool {
        self.fifo && self.marks.is_some()
    }

    async fn maintain(&self) -> Result<(), QueueError> {
        self.sweep().await
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        lease: Duration,
    ) -> Result<Vec<Leased>, QueueError> {
        if self.fifo {
            return self.fifo_receive(max, wait, lease).await;
        }
        self.receive_from(&self.queue_url, max, wait, lease).await
    }

    async fn ack(&self, entries: &[Leased]) -> Result<(), QueueError> {
        self.delete_from(&self.queue_url, entries).await
    }

    async fn retry_later(
        &self,
        entry: &Leased,
        new_body: Option<Vec<u8>>,
        delay: Duration,
    ) -> Result<(), QueueError> {
        if self.fifo {
            return self.fifo_retry_later(entry, new_body, delay).await;
        }
        match new_body {
            // A new body means a new message: send it delayed, then drop the old one.
            Some(body) => {
                self.send_batches(&self.queue_url, &[body], delay).await?;
                self.delete_from(&self.queue_url, std::slice::from_ref(entry))
                    .await
            }
            None => {
                self.count();
                self.client
                    .change_message_visibility()
                    .queue_url(&self.queue_url)
                    .receipt_handle(&entry.receipt)
                    .visibility_timeout(ceil_secs(delay).min(MAX_VISIBILITY_SECS) as i32)
                    .send()
                    .await
                    .map_err(err_sdk)?;
                Ok(())
            }
        }
    }

    async fn release(&self, entries: &[Leased]) -> Result<(), QueueError> {
        if !self.fifo {
            return Ok(());
        }
        let receipts: Vec<String> = entries.iter().map(|l| l.receipt.clone()).collect();
        self.show_now(&self.queue_url, &receipts).await
    }

    async fn dead_letter(&self, entry: &Leased, info: &DeadInfo) -> Result<(), QueueError> {
        // The envelope keeps the last error, so listing can show it.
        let body = match envelope::decode(&entry.body) {
            Ok(mut env) => {
                env.last_error = info.reason.clone();
                env.attempt = info.attempts;
                envelope::encode(&env)
            }
            Err(_) => entry.body.clone(),
        };
        let out = self.outgoing(&body).await?;
        let mut req = self
            .client
            .send_message()
            .queue_url(&self.dlq_url)
            .message_body(out.text.clone())
            .message_attributes("reason", string_attr(&info.reason)?)
            .message_attributes("topic", string_attr(&info.topic)?)
            .message_attributes("message_id", string_attr(&info.message_id)?)
            .message_attributes("attempt", number_attr(info.attempts.into())?);
        if let Some((_, size)) = &out.offloaded {
            req = req.message_attributes(SIZE_ATTRIBUTE, number_attr(*size as u64)?);
        }
        if self.fifo {
            // Each copy its own group: the dead-letter queue keeps no order. An ordered
            // copy names its partition and the head it copies, which stays held in the
            // queue (see `fifo`).
            let id = uuid::Uuid::now_v7().to_string();
            req = req
                .message_group_id(id.clone())
                .message_deduplication_id(id);
            if let Some(key) = &entry.order {
                req = req
                    .message_attributes(fifo::ORDER, string_attr(key)?)
                    .message_attributes(fifo::HEAD, string_attr(&entry.entry_id)?);
            }
        }
        self.count();
        match req.send().await {
            Ok(sent) => {
                if let Some(id) = sent.message_id {
                    self.seen_dead.note(&id, now_ms());
                }
            }
            Err(e) => {
                let e = err_send(e);
                // A dead letter that may have landed keeps its object.
                if !e.may_hold() {
                    self.discard([&out]);
                }
                return Err(e);
            }
        }
        if let (true, Some(key)) = (self.fifo, &entry.order) {
            return self.fifo_dead_head(entry, key).await;
        }
        self.delete_from(&self.queue_url, std::slice::from_ref(entry))
            .await
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let (visible, in_flight, delayed) = self.approximate(&self.queue_url).await?;
        let (dead, dead_hidden, _) = self.approximate(&self.dlq_url).await?;
        let (depth, dead_letters) = (visible + in_flight + delayed, dead + dead_hidden);
        // SQS reports the oldest message's age only to CloudWatch
        // (ApproximateAgeOfOldestMessage): this is the oldest this queue has received, and
        // unknown when it has received none of what the queue holds.
        let now = now_ms();
        let age = |seen: &SeenAges, n: u64| {
            if n == 0 {
                seen.clear();
                Some(0)
            } else {
                seen.oldest_age_ms(now)
            }
        };
        Ok(QueueStats {
            depth,
            oldest_age_ms: age(&self.seen, depth),
            in_flight,
            redelivered: 0,
            dead_letters,
            dead_letter_oldest_age_ms: age(&self.seen_dead, dead_letters),
            retention: Some(self.retention),
            dead_letter_retention: Some(self.dlq_retention),
        })
    }

    /// SQS cannot page a queue stably: this returns up to `page_size` dead letters (hidden
    /// for a second while read) and never a next-page token.
    async fn list_dead_letters(
        &self,
        page_size: usize,
        _page_token: &str,
    ) -> Result<(Vec<DeadLetter>, String), QueueError> {
        let peeked = self
            .peek_dead(page_size.clamp(1, 100), Duration::from_secs(1))
            .await?;
        Ok((
            peeked.iter().map(|(l, _)| dead_letter_of(l)).collect(),
            String::new(),
        ))
    }

    async fn redrive(&self, ids: &[String], all: bool) -> Result<u64, QueueError> {
        // A page at a time: memory stays bounded by one page (at most DEAD_PAGE bodies)
        // however large the dead-letter queue is.
        let mut pages = DeadPages::new(ids, all);
        let mut total = 0;
        let done = async {
            while let Some(chosen) = pages.next(self).await? {
                total += if self.fifo {
                    self.fifo_settle_dead(&chosen, true).await?
                } else {
                    let plain: Vec<Leased> = chosen.into_iter().map(|(l, _)| l).collect();
                    self.redrive_entries(&plain).await?
                };
            }
            Ok(())
        }
        .await;
        pages.finish(self).await;
        done.map(|()| total)
    }

    async fn purge(&self, ids: &[String], all: bool) -> Result<u64, QueueError> {
        let mut pages = DeadPages::new(ids, all);
        let mut total = 0;
        let done = async {
            while let Some(chosen) = pages.next(self).await? {
                total += if self.fifo {
                    self.fifo_settle_dead(&chosen, false).await?
                } else {
                    let plain: Vec<Leased> = chosen.into_iter().map(|(l, _)| l).collect();
                    self.delete_from(&self.dlq_url, &plain).await?;
                    plain.len() as u64
                };
            }
            Ok(())
        }
        .await;
        pages.finish(self).await;
        done.map(|()| total)
    }
}
