//! The producer every Ballast service writes through: `acks=all`, idempotence on, an
//! explicit partition on every record, and a bounded wait per attempt.
//!
//! A fatal librdkafka error (an idempotence sequence failure, say) leaves a producer unable
//! to write until it is replaced. The first write that meets one rebuilds the producer from
//! the same config; writes caught in it fail with `FailureKind::ProducerFatal`, which is
//! retryable and never counts against a partition.

use crate::{classify, KafkaConfig, KafkaContext};
use ballast_balancer::FailureKind;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureRecord, Producer};
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

type FutureProducer = rdkafka::producer::FutureProducer<KafkaContext>;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// One record to write to one partition.
#[derive(Debug, Clone, Copy)]
pub struct OutgoingRecord<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    /// Headers in order; the message id header is added by the caller.
    pub headers: &'a [(&'a str, &'a [u8])],
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub partition: i32,
    pub offset: i64,
}

/// A failed write, classified for the balancer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct WriteError {
    pub kind: FailureKind,
    pub message: String,
}

#[derive(Clone)]
pub struct KafkaProducer {
    config: ClientConfig,
    context: KafkaContext,
    current: Arc<RwLock<Arc<FutureProducer>>>,
    rebuilds: Arc<AtomicU64>,
    write_timeout: Duration,
}

impl std::fmt::Debug for KafkaProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaProducer")
            .field("write_timeout", &self.write_timeout)
            .finish_non_exhaustive()
    }
}

impl KafkaProducer {
    pub fn new(cfg: &KafkaConfig) -> Result<Self, crate::Error> {
        cfg.validate()?;
        let mut cc = ClientConfig::new();
        // Tunable defaults, then the user's properties, then what the write path depends
        // on, last, so no property can stand in for it (`validate` refuses every alias).
        cc.set("client.id", &cfg.client_id)
            .set("socket.connection.setup.timeout.ms", "1000")
            .set("reconnect.backoff.max.ms", "1000")
            .set("topic.metadata.refresh.interval.ms", "10000");
        for (k, v) in &cfg.properties {
            cc.set(k, v);
        }
        let (security, context) = cfg.security().rdkafka_config()?;
        for (k, v) in security {
            cc.set(k, v);
        }
        cc.set("bootstrap.servers", &cfg.bootstrap_servers)
            .set(
                "message.timeout.ms",
                cfg.write_timeout.as_millis().to_string(),
            )
            .set(
                "request.timeout.ms",
                cfg.write_timeout.as_millis().to_string(),
            )
            .set("linger.ms", cfg.linger.as_millis().to_string())
            .set("acks", "all")
            .set("enable.idempotence", "true");
        let inner: FutureProducer = cc.create_with_context(context.clone())?;
        Ok(Self {
            config: cc,
            context,
            current: Arc::new(RwLock::new(Arc::new(inner))),
            rebuilds: Arc::new(AtomicU64::new(0)),
            write_timeout: cfg.write_timeout,
        })
    }

    fn producer(&self) -> Arc<FutureProducer> {
        self.current.read().expect("producer lock").clone()
    }

    /// How many times a fatal error made this producer rebuild itself.
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds.load(Ordering::Relaxed)
    }

    /// Classifies a write error; a fatal error of `producer` also replaces it (once, however
    /// many writes see the error).
    fn failed(&self, producer: &Arc<FutureProducer>, e: &KafkaError, what: &str) -> WriteError {
        let Some((code, reason)) = producer.client().fatal_error() else {
            return WriteError {
                kind: classify(e),
                message: format!("{what}{e}"),
            };
        };
        let mut current = self.current.write().expect("producer lock");
        if Arc::ptr_eq(&current, producer) {
            match self
                .config
                .create_with_context::<_, FutureProducer>(self.context.clone())
            {
                Ok(fresh) => {
                    *current = Arc::new(fresh);
                    self.rebuilds.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%code, %reason, "fatal producer error; producer rebuilt");
                }
                Err(err) => {
                    tracing::error!(%code, %reason, error = %err, "fatal producer error; rebuilding failed")
                }
            }
        }
        WriteError {
            kind: FailureKind::ProducerFatal,
            message: format!("fatal producer error ({code}: {reason}); the producer was rebuilt"),
        }
    }

    pub fn write_timeout(&self) -> Duration {
        self.write_timeout
    }

    /// Writes one record to its partition and waits for `acks=all`, at most
    /// `write_timeout` (librdkafka's `message.timeout.ms`).
    pub async fn send(&self, rec: OutgoingRecord<'_>) -> Result<Written, WriteError> {
        self.enqueue(rec)?.await
    }

    /// Hands one record to librdkafka without waiting: the returned future resolves on
    /// its `acks=all` delivery report. A record that librdkafka refuses at once (a full
    /// queue, an unknown partition) is an error here.
    pub fn enqueue(&self, rec: OutgoingRecord<'_>) -> Result<Delivery<'_>, WriteError> {
        let mut headers = OwnedHeaders::new_with_capacity(rec.headers.len());
        for (key, value) in rec.headers {
            headers = headers.insert(Header {
                key,
                value: Some(*value),
            });
        }
        let mut fr: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(rec.topic)
            .partition(rec.partition)
            .payload(rec.value)
            .headers(headers);
        if let Some(key) = rec.key {
            fr = fr.key(key);
        }
        let producer = self.producer();
        let report = producer
            .send_result(fr)
            .map_err(|(e, _)| self.failed(&producer, &e, "enqueue failed: "))?;
        Ok(Delivery {
            kafka: self,
            producer,
            report,
        })
    }

    /// Waits for every queued record to be delivered or to fail, up to `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), crate::Error> {
        self.producer().flush(timeout).map_err(crate::Error::Client)
    }

    /// Records and requests still queued inside the producer.
    pub fn in_flight(&self) -> i32 {
        self.producer().in_flight_count()
    }
}

/// A record in librdkafka's hands: resolves on its delivery report.
pub struct Delivery<'a> {
    kafka: &'a KafkaProducer,
    producer: Arc<FutureProducer>,
    report: DeliveryFuture,
}

impl std::fmt::Debug for Delivery<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery").finish_non_exhaustive()
    }
}

impl Future for Delivery<'_> {
    type Output = Result<Written, WriteError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let report = ready!(Pin::new(&mut self.report).poll(cx));
        Poll::Ready(match report {
            Ok(Ok(delivery)) => Ok(Written {
                partition: delivery.partition,
                offset: delivery.offset,
            }),
            Ok(Err((e, _))) => Err(self.kafka.failed(&self.producer, &e, "")),
            Err(_) => Err(WriteError {
                kind: FailureKind::Other,
                message: "producer dropped the delivery report".into(),
            }),
        })
    }
}
