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
}

/// A body as it goes out: inline (base64) or a pointer to the S3 object that holds it.
#[derive(Debug)]
struct Outgoing {
    text: String,
    /// The object written for this body, and the body's size.
    offloaded: Option<(Pointer, usize)>,
}

/// The deadlines of a call that answers a waiting client (an SQS send, an S3 put): each
/// attempt half of `failover.write_timeout` (10 s by default), and all of it in all, so
/// that one hung attempt is retried. They follow the setting: a deployment (or a bench on
/// a slow emulator) that gives the queue longer gives each call longer too. The enqueue as
/// a whole is bounded by the same setting on this side as well.
pub(crate) fn enqueue_timeouts(write_timeout: Duration) -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .operation_attempt_timeout(write_timeout / 2)
        .operation_timeout(write_timeout)
        .build()
}

/// Whether a failed call may still have been applied. SQS refused it (a service error
/// below 500), or the request was never built or never reached a connection: not applied.
/// A timeout, a connection lost after the request went out, a server error (5xx), or an
/// answer that could not be read: it may have been.
fn may_have_applied<E>(
    e: &aws_sdk_sqs::error::SdkError<E, aws_sdk_sqs::config::http::HttpResponse>,
) -> bool {
    use aws_sdk_sqs::error::SdkError;
    match e {
        SdkError::ServiceError(s) => s.raw().status().is_server_error(),
        SdkError::ConstructionFailure(_) => false,
        SdkError::DispatchFailure(d) => !d.as_connector_error().is_some_and(|c| never_connected(c)),
        _ => true,
    }
}

/// Whether a connector error happened before a connection existed (refused, DNS, connect
/// timeout), so no byte of the request was sent. hyper reports these as "client error
/// (Connect)", and the SDK's connect timeout as "HTTP connect timeout".
fn never_connected(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        let text = e.to_string();
        if text.contains("client error (Connect)") || text.contains("HTTP connect timeout") {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        next = e.source();
    }
    false
}

/// A send's error: ambiguous when the request may have been applied.
fn err_send<E: std::error::Error + 'static>(e: aws_sdk_sqs::error::SdkError<E>) -> QueueError {
    let applied = may_have_applied(&e);
    let text = aws_sdk_sqs::error::DisplayErrorContext(e).to_string();
    if applied {
        QueueError::Ambiguous(text)
    } else {
        QueueError::Unavailable(text)
    }
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
        };
        q.queue_url = q.resolve(&cfg.queue, cfg.create_queues).await?;
        q.dlq_url = q.resolve(&cfg.dlq, cfg.create_queues).await?;
        q.retention = q
            .retention_of("failover.sqs.queue", &q.queue_url, cfg.min_retention)
            .await?;
        q.dlq_retention = q
            .retention_of("failover.sqs.dlq", &q.dlq_url, cfg.min_retention)
            .await?;
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
            let created = self
                .client
                .create_queue()
                .queue_name(name_or_url)
                .attributes(
                    QueueAttributeName::MessageRetentionPeriod,
                    SQS_MAX_RETENTION.as_secs().to_string(),
                )
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

    /// Turns a body into what the message carries: a large one is written to S3 first.
    async fn outgoing(&self, body: &[u8]) -> Result<Outgoing, QueueError> {
        let deadline = tokio::time::Instant::now() + self.write_timeout;
        let bodies = [body.to_vec()];
        Ok(self.outgoing_all(&bodies, deadline).await?.remove(0))
    }

    /// What each body's message carries. The large ones are written to S3 all at once, by
    /// `deadline`; when any put fails or does not answer in time, every object is deleted
    /// (in the background) and nothing is sent.
    async fn outgoing_all(
        &self,
        bodies: &[Vec<u8>],
        deadline: tokio::time::Instant,
    ) -> Result<Vec<Outgoing>, QueueError> {
        let inline = |b: &[u8]| Outgoing {
            text: base64::engine::general_purpose::STANDARD.encode(b),
            offloaded: None,
        };
        let Some(o) = &self.offload else {
            return Ok(bodies.iter().map(|b| inline(b)).collect());
        };
        let places: Vec<Option<Pointer>> = bodies
            .iter()
            .map(|b| o.wants(b).then(|| o.pointer()))
            .collect();
        let puts = futures::future::join_all(
            bodies
                .iter()
                .zip(&places)
                .filter_map(|(b, p)| p.as_ref().map(|p| o.put(p, b))),
        );
        let failed = match tokio::time::timeout_at(deadline, puts).await {
            Ok(results) => results.into_iter().find_map(Result::err),
            Err(_) => Some(QueueError::Unavailable(format!(
                "s3 did not take the offloaded bodies within {:?} (failover.write_timeout); nothing was sent",
                self.write_timeout
            ))),
        };
        if let Some(e) = failed {
            o.delete_later(places.into_iter().flatten().collect());
            return Err(e);
        }
        Ok(bodies
            .iter()
            .zip(places)
            .map(|(b, p)| match p {
                Some(p) => Outgoing {
                    text: p.to_body(),
                    offloaded: Some((p, b.len())),
                },
                None => inline(b),
            })
            .collect())
    }

    /// Deletes (in the background) the objects of bodies whose messages were not stored.
    fn discard<'a>(&self, unsent: impl IntoIterator<Item = &'a Outgoing>) {
        if let Some(o) = &self.offload {
            o.delete_later(
                unsent
                    .into_iter()
                    .filter_map(|u| u.offloaded.as_ref().map(|(p, _)| p.clone()))
                    .collect(),
            );
        }
    }

    fn entry(
        i: usize,
        body: &[u8],
        out: &Outgoing,
        delay: Duration,
    ) -> Result<SendMessageBatchRequestEntry, QueueError> {
        let mut b = SendMessageBatchRequestEntry::builder()
            .id(format!("m{i}"))
            .message_body(out.text.clone())
            .delay_seconds(ceil_secs(delay).min(MAX_DELAY_SECS) as i32);
        if let Some((_, size)) = &out.offloaded {
            b = b.message_attributes(SIZE_ATTRIBUTE, number_attr(*size as u64)?);
        }
        if let Ok(env) = envelope::decode(body) {
            b = b
                .message_attributes("topic", string_attr(&env.topic)?)
                .message_attributes("message_id", string_attr(&env.message_id)?)
                .message_attributes("attempt", number_attr(env.attempt.into())?);
        }
        b.build().map_err(err)
    }

    /// Sends bodies in sub-batches of what fits one `SendMessageBatch`, all within
    /// `failover.write_timeout`. A sub-batch that fails stops the rest, which are never
    /// sent; each body's fate is reported (see [`QueueError::Partial`]). The S3 object of
    /// a body whose message may have landed is kept: deleting it would turn the message
    /// into a false "body lost" dead letter.
    async fn send_batches(
        &self,
        url: &str,
        bodies: &[Vec<u8>],
        delay: Duration,
    ) -> Result<Vec<String>, QueueError> {
        let deadline = tokio::time::Instant::now() + self.write_timeout;
        let outgoing = self.outgoing_all(bodies, deadline).await?;
        let mut fates: Vec<Fate> = Vec::with_capacity(bodies.len());
        let mut failure = None;
        let mut start = 0;
        while start < bodies.len() {
            if tokio::time::Instant::now() >= deadline {
                // Out of time before this sub-batch went out: it and the rest are unsent.
                failure = Some(QueueError::Unavailable(format!(
                    "sqs did not take every sub-batch within {:?} (failover.write_timeout); the rest was not sent",
                    self.write_timeout
                )));
                break;
            }
            // As many as fit 10 entries and the size limit.
            let mut end = start;
            let mut bytes = 0;
            while end < bodies.len() && end - start < MAX_ENTRIES {
                let size = outgoing[end].text.len() + 256;
                if end > start && bytes + size > MAX_BATCH_BYTES {
                    break;
                }
                bytes += size;
                end += 1;
            }
            let sent = tokio::time::timeout_at(
                deadline,
                self.send_batch(
                    url,
                    &bodies[start..end],
                    &outgoing[start..end],
                    start,
                    delay,
                ),
            )
            .await
            .unwrap_or_else(|_| {
                Err((
                    QueueError::Ambiguous(format!(
                        "sqs did not answer within {:?} (failover.write_timeout)",
                        self.write_timeout
                    )),
                    Vec::new(),
                ))
            });
            match sent {
                Ok(ids) => fates.extend(ids.into_iter().map(Fate::Held)),
                Err((e, confirmed)) => {
                    let rest = if e.may_hold() {
                        Fate::Unknown
                    } else {
                        Fate::NotHeld
                    };
                    fates.extend((0..end - start).map(|i| {
                        confirmed
                            .iter()
                            .find(|(c, _)| *c == i)
                            .map_or(rest.clone(), |(_, id)| Fate::Held(id.clone()))
                    }));
                    failure = Some(e);
                    break;
                }
            }
            start = end;
        }
        // Sub-batches after a failed one were never sent.
        fates.resize(bodies.len(), Fate::NotHeld);
        self.discard(
            outgoing
                .iter()
                .zip(&fates)
                .filter(|(_, f)| **f == Fate::NotHeld)
                .map(|(o, _)| o),
        );
        let Some(e) = failure else {
            return Ok(fates
                .into_iter()
                .filter_map(|f| match f {
                    Fate::Held(id) => Some(id),
                    _ => None,
                })
                .collect());
        };
        // One fate for every body: the error says it whole.
        if fates.iter().all(|f| *f == Fate::NotHeld) && !e.may_hold()
            || fates.iter().all(|f| *f == Fate::Unknown) && e.may_hold()
        {
            return Err(e);
        }
        Err(QueueError::Partial {
            stored: fates,
            reason: e.to_string(),
        })
    }

    /// One `SendMessageBatch`; on failure, the error and the entries SQS confirmed anyway
    /// (indices into this batch, with their message ids).
    async fn send_batch(
        &self,
        url: &str,
        bodies: &[Vec<u8>],
        outgoing: &[Outgoing],
        first: usize,
        delay: Duration,
    ) -> Result<Vec<String>, (QueueError, Vec<(usize, String)>)> {
        let entries = bodies
            .iter()
            .zip(outgoing)
            .enumerate()
            .map(|(i, (b, o))| Self::entry(first + i, b, o, delay))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| (e, Vec::new()))?;
        self.count();
        let out = self
            .client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .customize()
            // An enqueue answers a waiting client: bound it tighter than a long poll. One
            // attempt only: a retry after an attempt that may have landed would turn its
            // "may hold" into the retry's answer, and send a second copy pointing at the
            // same S3 objects.
            .config_override(
                aws_sdk_sqs::config::Builder::default()
                    .timeout_config(
                        aws_config::timeout::TimeoutConfig::builder()
                            .operation_attempt_timeout(self.write_timeout)
                            .operation_timeout(self.write_timeout)
                            .build(),
                    )
                    .retry_config(
                        aws_sdk_sqs::config::retry::RetryConfig::standard().with_max_attempts(1),
                    ),
            )
            .send()
            .await
            .map_err(|e| (err_send(e), Vec::new()))?;
        let confirmed = |i: usize| {
            let id = format!("m{}", first + i);
            out.successful.iter().find(|s| s.id == id)
        };
        let kept: Vec<(usize, String)> = (0..bodies.len())
            .filter_map(|i| confirmed(i).map(|ok| (i, ok.message_id.clone())))
            .collect();
        if let Some(f) = out.failed.first() {
            return Err((
                QueueError::Unavailable(format!(
                    "sqs refused entry {}: {} {}",
                    f.id,
                    f.code,
                    f.message.clone().unwrap_or_default()
                )),
                kept,
            ));
        }
        if kept.len() < bodies.len() {
            // Neither confirmed nor refused: SQS did not say.
            return Err((
                QueueError::Ambiguous("sqs did not answer for every entry".into()),
                kept,
            ));
        }
        Ok(kept.into_iter().map(|(_, id)| id).collect())
    }

    async fn receive_from(
        &self,
        url: &str,
        max: usize,
        wait: Duration,
        lease: Duration,
    ) -> Result<Vec<Leased>, QueueError> {
        self.count();
        let out = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max.clamp(1, MAX_ENTRIES) as i32)
            .wait_time_seconds(wait.as_millis().div_ceil(1000).min(20) as i32)
            .visibility_timeout(lease.as_secs().clamp(0, MAX_VISIBILITY_SECS) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(err_sdk)?;
        let mut leased = Vec::new();
        for m in out.messages.unwrap_or_default() {
            let attrs = m.attributes.unwrap_or_default();
            let attr =
                |k: MessageSystemAttributeName| attrs.get(&k).and_then(|v| v.parse::<i64>().ok());
            let entry_id = m.message_id.unwrap_or_default();
            if let Some(sent) = attr(MessageSystemAttributeName::SentTimestamp) {
                self.seen_for(url).note(&entry_id, sent);
            }
            let raw = m.body.unwrap_or_default();
            let pointer = m
                .message_attributes
                .as_ref()
                .is_some_and(|a| a.contains_key(SIZE_ATTRIBUTE))
                .then(|| Pointer::parse(&raw))
                .flatten();
            let (body, offloaded) = match (&self.offload, pointer) {
                (Some(o), Some(p)) => match o.get(&p).await {
                    Ok(Fetched::Body(b)) => (b, Some(raw)),
                    // The body cannot come back: the entry is dead-lettered with the
                    // pointer as its bytes.
                    Ok(Fetched::Missing(why)) => {
                        tracing::warn!(entry = %entry_id, "offloaded body lost: {why}");
                        (raw.into_bytes(), None)
                    }
                    // It comes back when its lease ends.
                    Err(e) => {
                        tracing::warn!(entry = %entry_id, error = %e, "could not read an offloaded body; the entry returns when its lease ends");
                        continue;
                    }
                },
                // A body that is not base64 (not written by Ballast) stays as it came, so
                // it is dead-lettered with its original bytes, never emptied.
                _ => match base64::engine::general_purpose::STANDARD.decode(&raw) {
                    Ok(b) => (b, None),
                    Err(_) => (raw.into_bytes(), None),
                },
            };
            leased.push(Leased {
                entry_id,
                receipt: m.receipt_handle.unwrap_or_default(),
                body,
                deliveries: attr(MessageSystemAttributeName::ApproximateReceiveCount).unwrap_or(1)
                    as u32,
                enqueued_at_unix_ms: attr(MessageSystemAttributeName::SentTimestamp).unwrap_or(0),
                offloaded,
            });
        }
        Ok(leased)
    }

    async fn delete_from(&self, url: &str, entries: &[Leased]) -> Result<(), QueueError> {
        for chunk in entries.chunks(MAX_ENTRIES) {
            let batch = chunk
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(format!("d{i}"))
                        .receipt_handle(&e.receipt)
                        .build()
                        .map_err(err)
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.count();
            let out = self
                .client
                .delete_message_batch()
                .queue_url(url)
                .set_entries(Some(batch))
                .send()
                .await
                .map_err(err_sdk)?;
            // Entries SQS refused are retried once, one by one; what still fails is an
            // error (the entry comes back when its lease ends: a duplicate, not a loss).
            let mut refused = Vec::new();
            let mut kept = Vec::new();
            for f in &out.failed {
                let entry =
                    f.id.strip_prefix('d')
                        .and_then(|i| i.parse::<usize>().ok())
                        .and_then(|i| chunk.get(i));
                let retried = match entry {
                    Some(e) if !f.sender_fault => {
                        self.count();
                        self.client
                            .delete_message()
                            .queue_url(url)
                            .receipt_handle(&e.receipt)
                            .send()
                            .await
                            .is_ok()
                    }
                    _ => false,
                };
                if !retried {
                    kept.extend(entry.map(|e| e.receipt.as_str()));
                    refused.push(format!(
                        "{} ({}: {})",
                        entry.map_or(f.id.as_str(), |e| e.entry_id.as_str()),
                        f.code,
                        f.message.clone().unwrap_or_default()
                    ));
                }
            }
            let seen = self.seen_for(url);
            for e in chunk.iter().filter(|e| !kept.contains(&e.receipt.as_str())) {
                seen.forget(&e.entry_id);
            }
            // The messages are gone: so go their objects.
            if let Some(o) = &self.offload {
                let pointers: Vec<Pointer> = chunk
                    .iter()
                    .filter(|e| !kept.contains(&e.receipt.as_str()))
                    .filter_map(|e| e.offloaded.as_deref().and_then(Pointer::parse))
                    .collect();
                o.delete(&pointers).await;
            }
            if !refused.is_empty() {
                return Err(QueueError::Unavailable(format!(
                    "sqs did not delete {} entr{}: {}",
                    refused.len(),
                    if refused.len() == 1 { "y" } else { "ies" },
                    refused.join(", ")
                )));
            }
        }
        Ok(())
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

    /// Reads up to `limit` dead letters without keeping them hidden long.
    async fn peek_dead(&self, limit: usize, hide: Duration) -> Result<Vec<Leased>, QueueError> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for _ in 0..limit.div_ceil(MAX_ENTRIES) + 2 {
            // A short long-poll: short polls may miss messages that are there.
            let got = self
                .receive_from(&self.dlq_url, MAX_ENTRIES, Duration::from_secs(1), hide)
                .await?;
            if got.is_empty() {
                break;
            }
            for l in got {
                if seen.insert(l.entry_id.clone()) && out.len() < limit {
                    out.push(l);
                }
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}

fn dead_letter_of(l: &Leased) -> DeadLetter {
    let env = envelope::decode(&l.body).ok();
    DeadLetter {
        id: l.entry_id.clone(),
        info: DeadInfo {
            topic: env.as_ref().map(|e| e.topic.clone()).unwrap_or_default(),
            message_id: env
                .as_ref()
                .map(|e| e.message_id.clone())
                .unwrap_or_default(),
            attempts: env.as_ref().map(|e| e.attempt).unwrap_or(0),
            reason: env
                .as_ref()
                .map(|e| e.last_error.clone())
                .unwrap_or_else(|| "undecodable envelope".into()),
            first_failed_at_unix_ms: env.as_ref().map(|e| e.first_failed_at_unix_ms).unwrap_or(0),
        },
        dead_at_unix_ms: l.enqueued_at_unix_ms,
        body_bytes: l.body.len(),
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

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        lease: Duration,
    ) -> Result<Vec<Leased>, QueueError> {
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
        Ok((peeked.iter().map(dead_letter_of).collect(), String::new()))
    }

    async fn redrive(&self, ids: &[String], all: bool) -> Result<u64, QueueError> {
        // A page at a time: memory stays bounded by one page (at most DEAD_PAGE bodies)
        // however large the dead-letter queue is.
        let mut pages = DeadPages::new(ids, all);
        let mut total = 0;
        let done = async {
            while let Some(chosen) = pages.next(self).await? {
                total += self.redrive_entries(&chosen).await?;
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
                self.delete_from(&self.dlq_url, &chosen).await?;
                total += chosen.len() as u64;
            }
            Ok(())
        }
        .await;
        pages.finish(self).await;
        done.map(|()| total)
    }
}

/// Dead letters read per page by a redrive or purge.
const DEAD_PAGE: usize = 100;

/// The dead letters a redrive or purge picks (every one, or the given ids), a page at a
/// time. SQS cannot page a queue: each page is a receive that hides what it read for
/// 30 s, so the next receive reads others; it ends at an empty read, or once every
/// given id was found. The dead letters it read and did not pick are made visible again
/// by `finish`, so a `dlq list` right after a redrive by id still shows them.
struct DeadPages<'a> {
    ids: &'a [String],
    all: bool,
    found: usize,
    /// Receipts of the dead letters read and passed over (a receipt each, no body).
    passed: Vec<String>,
}

impl<'a> DeadPages<'a> {
    fn new(ids: &'a [String], all: bool) -> Self {
        Self {
            ids,
            all,
            found: 0,
            passed: Vec::new(),
        }
    }

    /// Makes the passed-over dead letters visible again. Best effort: one that stays
    /// hidden comes back by itself after 30 s.
    async fn finish(self, q: &SqsQueue) {
        for chunk in self.passed.chunks(MAX_ENTRIES) {
            let entries = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, receipt)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(format!("v{i}"))
                        .receipt_handle(receipt)
                        .visibility_timeout(0)
                        .build()
                        .ok()
                })
                .collect();
            q.count();
            let sent = q
                .client
                .change_message_visibility_batch()
                .queue_url(&q.dlq_url)
                .set_entries(Some(entries))
                .send()
                .await;
            if let Err(e) = sent {
                tracing::warn!(error = %err_sdk(e), "could not show passed-over dead letters again; they return within 30 s");
            }
        }
    }

    async fn next(&mut self, q: &SqsQueue) -> Result<Option<Vec<Leased>>, QueueError> {
        loop {
            if !self.all && self.found >= self.ids.len() {
                return Ok(None);
            }
            let page = q.peek_dead(DEAD_PAGE, Duration::from_secs(30)).await?;
            if page.is_empty() {
                return Ok(None);
            }
            let (chosen, passed): (Vec<Leased>, Vec<Leased>) = page
                .into_iter()
                .partition(|l| self.all || self.ids.contains(&l.entry_id));
            self.passed.extend(passed.into_iter().map(|l| l.receipt));
            self.found += chosen.len();
            if !chosen.is_empty() {
                return Ok(Some(chosen));
            }
        }
    }
}

impl SqsQueue {
    /// Sends dead letters back to the queue (attempts reset), then deletes them from the
    /// dead-letter queue.
    async fn redrive_entries(&self, chosen: &[Leased]) -> Result<u64, QueueError> {
        let bodies: Vec<Vec<u8>> = chosen
            .iter()
            .map(|l| match envelope::decode(&l.body) {
                Ok(mut env) => {
                    env.attempt = 0;
                    envelope::encode(&env)
                }
                Err(_) => l.body.clone(),
            })
            .collect();
        if !bodies.is_empty() {
            self.send_batches(&self.queue_url, &bodies, Duration::ZERO)
                .await?;
            self.delete_from(&self.dlq_url, chosen).await?;
        }
        Ok(chosen.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enqueue_deadlines_follow_the_write_timeout() {
        let t = enqueue_timeouts(Duration::from_secs(7));
        assert_eq!(
            t.operation_attempt_timeout(),
            Some(Duration::from_millis(3500))
        );
        assert_eq!(t.operation_timeout(), Some(Duration::from_secs(7)));
        let default = enqueue_timeouts(crate::FailoverConfig::default().write_timeout);
        assert_eq!(default.operation_timeout(), Some(Duration::from_secs(10)));
    }
}
