//! The SQS extended-client pattern: a body too large for an SQS message is stored as an S3
//! object, and the message carries a pointer to it instead. The pointer has the extended
//! client's shape (`["software.amazon.payloadoffloading.PayloadS3Pointer",
//! {"s3BucketName":…,"s3Key":…}]`, with the `ExtendedPayloadSize` attribute); the object
//! holds the raw envelope. An object is deleted once its message is deleted: after the
//! record reached Kafka, moved on (a new message and object replace it), or was purged.

use crate::queue::{err_sdk_in, QueueError};
use aws_sdk_s3::Client;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The pointer's type name in the extended client's format.
const POINTER_CLASS: &str = "software.amazon.payloadoffloading.PayloadS3Pointer";
/// The message attribute that marks a pointer and gives the payload's size.
pub(crate) const SIZE_ATTRIBUTE: &str = "ExtendedPayloadSize";
/// The largest body sent inline: base64 makes it 240 KiB, which leaves room for the
/// attributes in SQS's 256 KiB.
pub const MAX_INLINE_BODY_BYTES: usize = 180 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct S3OffloadConfig {
    /// The bucket for large bodies; offload is off when empty. Endpoint, region and
    /// credentials are the SQS ones.
    pub bucket: String,
    /// Prefix of every object key.
    pub prefix: String,
    /// Bodies (envelopes) larger than this go to S3; at most 184320 (180 KiB).
    pub threshold_bytes: usize,
    /// Create the bucket if missing (development).
    pub create_bucket: bool,
}

impl Default for S3OffloadConfig {
    fn default() -> Self {
        Self {
            bucket: String::new(),
            prefix: "ballast-failover/".into(),
            threshold_bytes: 128 * 1024,
            create_bucket: false,
        }
    }
}

impl S3OffloadConfig {
    pub fn enabled(&self) -> bool {
        !self.bucket.is_empty()
    }

    pub fn validate(&self) -> Result<(), QueueError> {
        if self.enabled()
            && (self.threshold_bytes == 0 || self.threshold_bytes > MAX_INLINE_BODY_BYTES)
        {
            return Err(QueueError::Config(format!(
                "failover.sqs.offload.threshold_bytes is {}; it must be between 1 and {MAX_INLINE_BODY_BYTES}",
                self.threshold_bytes
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
struct Location {
    s3_bucket_name: String,
    s3_key: String,
}

/// Where an offloaded body is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pointer {
    pub bucket: String,
    pub key: String,
}

impl Pointer {
    pub fn to_body(&self) -> String {
        serde_json::json!([
            POINTER_CLASS,
            Location {
                s3_bucket_name: self.bucket.clone(),
                s3_key: self.key.clone()
            }
        ])
        .to_string()
    }

    pub fn parse(body: &str) -> Option<Self> {
        let (class, loc): (String, Location) = serde_json::from_str(body).ok()?;
        (class == POINTER_CLASS).then_some(Self {
            bucket: loc.s3_bucket_name,
            key: loc.s3_key,
        })
    }
}

/// What reading an offloaded body found.
#[derive(Debug)]
pub(crate) enum Fetched {
    Body(Vec<u8>),
    /// The object is gone (deleted, or expired by a lifecycle rule): the body cannot come
    /// back.
    Missing(String),
}

#[derive(Debug, Clone)]
pub(crate) struct Offload {
    client: Client,
    bucket: String,
    prefix: String,
    threshold: usize,
    /// `failover.write_timeout`: the bound on a put.
    put_timeout: Duration,
}

impl Offload {
    pub async fn connect(
        cfg: &S3OffloadConfig,
        shared: &aws_config::SdkConfig,
        custom_endpoint: bool,
        put_timeout: Duration,
    ) -> Result<Self, QueueError> {
        cfg.validate()?;
        let conf = aws_sdk_s3::config::Builder::from(shared)
            // S3-compatible servers (and moto) are addressed by path, not by subdomain.
            .force_path_style(custom_endpoint)
            .build();
        let client = Client::from_conf(conf);
        let offload = Self {
            client,
            bucket: cfg.bucket.clone(),
            prefix: cfg.prefix.clone(),
            threshold: cfg.threshold_bytes,
            put_timeout,
        };
        if cfg.create_bucket {
            offload.create_bucket(shared).await?;
        }
        Ok(offload)
    }

    async fn create_bucket(&self, shared: &aws_config::SdkConfig) -> Result<(), QueueError> {
        use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
        let mut req = self.client.create_bucket().bucket(&self.bucket);
        let region = shared.region().map(|r| r.as_ref().to_string());
        if let Some(r) = region.filter(|r| r != "us-east-1") {
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(r.as_str()))
                    .build(),
            );
        }
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error().is_some_and(|s| {
                    s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists()
                }) =>
            {
                Ok(())
            }
            Err(e) => Err(err_sdk_in("s3 create_bucket: ", e)),
        }
    }

    /// The divert marks of `queue`'s ordered partitions, in this bucket.
    pub(crate) fn marks(&self, queue: &str) -> crate::sqs::marks::Marks {
        crate::sqs::marks::Marks::new(self.client.clone(), self.bucket.clone(), queue)
    }

    /// Whether `body` goes to S3.
    pub fn wants(&self, body: &[u8]) -> bool {
        body.len() > self.threshold
    }

    /// A new object's place. It is chosen before the put, so an object whose put did
    /// not answer can still be deleted.
    pub fn pointer(&self) -> Pointer {
        Pointer {
            bucket: self.bucket.clone(),
            key: format!("{}{}", self.prefix, uuid::Uuid::now_v7()),
        }
    }

    /// Stores `body` at `pointer`.
    pub async fn put(&self, pointer: &Pointer, body: &[u8]) -> Result<(), QueueError> {
        self.client
            .put_object()
            .bucket(&pointer.bucket)
            .key(&pointer.key)
            .body(aws_sdk_s3::primitives::ByteStream::from(body.to_vec()))
            .customize()
            // A put answers a waiting client: bound it like an SQS send.
            .config_override(
                aws_sdk_s3::config::Builder::default()
                    .timeout_config(crate::sqs::enqueue_timeouts(self.put_timeout)),
            )
            .send()
            .await
            .map_err(|e| err_sdk_in("s3 put_object: ", e))?;
        Ok(())
    }

    pub async fn get(&self, pointer: &Pointer) -> Result<Fetched, QueueError> {
        let out = match self
            .client
            .get_object()
            .bucket(&pointer.bucket)
            .key(&pointer.key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Ok(Fetched::Missing(format!(
                    "s3://{}/{} does not exist",
                    pointer.bucket, pointer.key
                )))
            }
            Err(e) => return Err(err_sdk_in("s3 get_object: ", e)),
        };
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| QueueError::Unavailable(format!("s3 get_object body: {e}")))?;
        Ok(Fetched::Body(bytes.into_bytes().to_vec()))
    }

    /// Deletes, in the background, objects no message points at, so no caller waits on
    /// it.
    pub fn delete_later(&self, pointers: Vec<Pointer>) {
        if pointers.is_empty() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move { this.delete(&pointers).await });
    }

    /// Deletes objects whose messages are gone. A failure leaves an orphan object (a
    /// lifecycle rule on the prefix collects those), never a lost record.
    pub async fn delete(&self, pointers: &[Pointer]) {
        for p in pointers {
            if let Err(e) = self
                .client
                .delete_object()
                .bucket(&p.bucket)
                .key(&p.key)
                .send()
                .await
            {
                tracing::warn!(
                    bucket = %p.bucket,
                    key = %p.key,
                    error = %aws_sdk_s3::error::DisplayErrorContext(e),
                    "could not delete an offloaded body; it stays as an orphan object"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_round_trip_in_the_extended_client_shape() {
        let p = Pointer {
            bucket: "b".into(),
            key: "ballast-failover/k".into(),
        };
        let body = p.to_body();
        assert_eq!(
            body,
            r#"["software.amazon.payloadoffloading.PayloadS3Pointer",{"s3BucketName":"b","s3Key":"ballast-failover/k"}]"#
        );
        assert_eq!(Pointer::parse(&body), Some(p));
        assert_eq!(
            Pointer::parse("[\"other\",{\"s3BucketName\":\"b\",\"s3Key\":\"k\"}]"),
            None
        );
        assert_eq!(Pointer::parse("not json"), None);
    }

    #[test]
    fn threshold_is_bounded_by_what_sqs_holds() {
        let mut c = S3OffloadConfig {
            bucket: "b".into(),
            ..Default::default()
        };
        assert!(c.validate().is_ok());
        c.threshold_bytes = MAX_INLINE_BODY_BYTES + 1;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("threshold_bytes"));
        c.bucket.clear();
        assert!(c.validate().is_ok(), "off: not checked");
    }
}
