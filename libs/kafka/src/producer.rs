//! The producer every Ballast service writes through: `acks=all`, idempotence on, an
//! explicit partition on every record, and a bounded wait per attempt.

use crate::{classify, KafkaConfig};
use ballast_balancer::FailureKind;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
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
    inner: FutureProducer,
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
        cc.set("bootstrap.servers", &cfg.bootstrap_servers)
            .set("client.id", &cfg.client_id)
            .set(
                "message.timeout.ms",
                cfg.write_timeout.as_millis().to_string(),
            )
            .set(
                "request.timeout.ms",
                cfg.write_timeout.as_millis().to_string(),
            )
            .set("linger.ms", cfg.linger.as_millis().to_string())
            .set("socket.connection.setup.timeout.ms", "1000")
            .set("reconnect.backoff.max.ms", "1000")
            .set("topic.metadata.refresh.interval.ms", "10000");
        for (k, v) in &cfg.properties {
            cc.set(k, v);
        }
        cc.set("acks", "all").set("enable.idempotence", "true");
        let inner: FutureProducer = cc.create()?;
        Ok(Self {
            inner,
            write_timeout: cfg.write_timeout,
        })
    }

    pub fn write_timeout(&self) -> Duration {
        self.write_timeout
    }

    /// Writes one record to its partition and waits for `acks=all`, at most
    /// `write_timeout` (librdkafka's `message.timeout.ms`).
    pub async fn send(&self, rec: OutgoingRecord<'_>) -> Result<Written, WriteError> {
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
        let future = self.inner.send_result(fr).map_err(|(e, _)| WriteError {
            kind: classify(&e),
            message: format!("enqueue failed: {e}"),
        })?;
        match future.await {
            Ok(Ok(delivery)) => Ok(Written {
                partition: delivery.partition,
                offset: delivery.offset,
            }),
            Ok(Err((e, _))) => Err(WriteError {
                kind: classify(&e),
                message: e.to_string(),
            }),
            Err(_) => Err(WriteError {
                kind: FailureKind::Other,
                message: "producer dropped the delivery report".into(),
            }),
        }
    }

    /// Waits for every queued record to be delivered or to fail, up to `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), crate::Error> {
        self.inner.flush(timeout).map_err(crate::Error::Client)
    }

    /// Records and requests still queued inside the producer.
    pub fn in_flight(&self) -> i32 {
        self.inner.in_flight_count()
    }
}
