//! Divert marks for ordered partitions on an SQS FIFO queue: one S3 object per diverted
//! partition in the offload bucket, `ballast-diverts/<queue>/<topic>/<partition>` (outside
//! the offload prefix, so a lifecycle rule that collects orphaned bodies never expires a
//! mark),
//! changed only by conditional writes (`If-None-Match: *` to create, `If-Match` on the
//! ETag read to change or delete), so concurrent gateways and workers never lose each
//! other's change. The design is in ARCHITECTURE.md ("Ordered failover on SQS FIFO").

use crate::queue::{err_sdk_in, QueueError};
use aws_sdk_s3::Client;
use serde::{Deserialize, Serialize};

/// One partition's mark.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Mark {
    /// Chosen when the mark is made: a mark deleted and made again has another.
    pub epoch: i64,
    /// Bumped by every enqueue into the partition.
    pub gen: u64,
    /// When the last bump was made (the bumping gateway's clock, unix ms).
    pub bumped_at: i64,
    /// The bumps whose sends have not answered yet. An enqueue takes its bump out once
    /// every send it made has landed or failed; one that never does (its gateway died, or
    /// SQS did not answer) stops counting at its `send_by`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sending: Vec<Sending>,
    /// The generation a barrier was sent for, and when (unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub barrier: Option<(u64, i64)>,
    /// The partition's dead-lettered head: it stays in the queue, in flight, until it is
    /// redriven or purged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead: Option<DeadHead>,
    /// The Kafka attempts of the partition's head entry (a FIFO entry keeps its place
    /// only while its message is never replaced, so its count lives here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<HeadAttempts>,
}

/// A bump whose sends are under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Sending {
    pub gen: u64,
    /// By when its sends have landed or failed: the bump plus the bumping gateway's own
    /// `failover.write_timeout` (its clock, unix ms).
    pub send_by: i64,
}

/// A bump whose send never answered is dropped from the mark this long past its
/// `send_by`, by the next bump (it stopped counting long before).
const FORGET_SENDING_MS: i64 = 60_000;

impl Mark {
    /// Whether no send of a bump so far can still land at `now`: each has answered, or
    /// its `send_by` is `margin_ms` past.
    pub(crate) fn quiet(&self, now_ms: i64, margin_ms: i64) -> bool {
        self.sending.iter().all(|s| now_ms >= s.send_by + margin_ms)
    }

    /// Drops the sends under way that stopped counting long ago, so that a partition
    /// written without a pause, whose sends sometimes never answer, keeps a small mark.
    fn forget_stale(&mut self, now_ms: i64) {
        self.sending
            .retain(|s| now_ms < s.send_by + FORGET_SENDING_MS);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeadHead {
    pub entry: String,
    /// The receipt of the head's current hold, for redrive (show it) and purge (delete it).
    pub receipt: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HeadAttempts {
    pub entry: String,
    pub attempt: u32,
    pub last_error: String,
}

/// A mark as read: its content and the ETag a conditional write must name.
#[derive(Debug, Clone)]
pub(crate) struct Read {
    pub mark: Mark,
    pub etag: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Marks {
    client: Client,
    bucket: String,
    /// `<offload prefix>diverts/<queue>/`
    prefix: String,
}

/// Where the marks live in the bucket, whatever the offload prefix.
pub(crate) const PREFIX: &str = "ballast-diverts/";

/// Conditional writes that lost a race are tried again this many times.
pub(crate) const RACES: usize = 32;

/// Whether a conditional write lost its race: 412, the ETag moved on (or the object
/// exists, for If-None-Match); 409, a concurrent conditional write to the same key is in
/// progress.
fn lost_race<E>(
    e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> bool {
    e.raw_response()
        .is_some_and(|r| matches!(r.status().as_u16(), 412 | 409))
}

impl Marks {
    pub(crate) fn new(client: Client, bucket: String, queue: &str) -> Self {
        let name = queue.rsplit('/').next().unwrap_or(queue);
        Self {
            client,
            bucket,
            prefix: format!("{PREFIX}{name}/"),
        }
    }

    fn key(&self, order: &str) -> String {
        format!("{}{order}", self.prefix)
    }

    /// The mark of partition `order`, if it has one.
    pub(crate) async fn get(&self, order: &str) -> Result<Option<Read>, QueueError> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(order))
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(err_sdk_in("s3 get_object (divert mark): ", e)),
        };
        let etag = out.e_tag.clone().unwrap_or_default();
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| QueueError::Unavailable(format!("s3 divert mark body: {e}")))?;
        let mark: Mark = serde_json::from_slice(&bytes.into_bytes()).map_err(|e| {
            QueueError::Invalid(format!(
                "divert mark s3://{}/{} is not a mark: {e}",
                self.bucket,
                self.key(order)
            ))
        })?;
        Ok(Some(Read { mark, etag }))
    }

    /// Writes `mark` if the object is still as read (`etag`), or absent (None). False when
    /// it was not.
    pub(crate) async fn put(
        &self,
        order: &str,
        mark: &Mark,
        etag: Option<&str>,
    ) -> Result<bool, QueueError> {
        let body = serde_json::to_vec(mark).expect("a mark serializes");
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(order))
            .content_type("application/json")
            .body(aws_sdk_s3::primitives::ByteStream::from(body));
        req = match etag {
            Some(e) => req.if_match(e),
            None => req.if_none_match("*"),
        };
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) if lost_race(&e) => Ok(false),
            Err(e) => Err(err_sdk_in("s3 put_object (divert mark): ", e)),
        }
    }

    /// Deletes the mark if it is still as read. False when it was not.
    pub(crate) async fn delete(&self, order: &str, etag: &str) -> Result<bool, QueueError> {
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.key(order))
            .if_match(etag)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if lost_race(&e) => Ok(false),
            Err(e) => Err(err_sdk_in("s3 delete_object (divert mark): ", e)),
        }
    }

    /// Changes the mark with `f` (given the mark as read, None when there is none; it
    /// returns the new mark, or None to leave it as it is), again on a lost race. Returns
    /// the mark as written, or None when `f` left it.
    pub(crate) async fn update(
        &self,
        order: &str,
        mut f: impl FnMut(Option<&Mark>) -> Option<Mark>,
    ) -> Result<Option<Mark>, QueueError> {
        for _ in 0..RACES {
            let read = self.get(order).await?;
            let Some(next) = f(read.as_ref().map(|r| &r.mark)) else {
                return Ok(None);
            };
            if self
                .put(order, &next, read.as_ref().map(|r| r.etag.as_str()))
                .await?
            {
                return Ok(Some(next));
            }
        }
        Err(QueueError::Unavailable(format!(
            "divert mark {order}: {RACES} conditional writes in a row lost a race"
        )))
    }

    /// Bumps partition `order`'s mark (making it, with a new epoch, when it has none) for
    /// a send that ends by `send_by`, and returns its epoch and generation.
    pub(crate) async fn bump(
        &self,
        order: &str,
        now_ms: i64,
        send_by: i64,
    ) -> Result<(i64, u64), QueueError> {
        let fresh = new_epoch();
        let m = self
            .update(order, |m| {
                let mut m = m.cloned().unwrap_or_else(|| Mark {
                    epoch: fresh,
                    ..Mark::default()
                });
                m.gen += 1;
                m.bumped_at = now_ms;
                m.forget_stale(now_ms);
                m.sending.push(Sending {
                    gen: m.gen,
                    send_by,
                });
                Some(m)
            })
            .await?
            .expect("a bump always writes");
        Ok((m.epoch, m.gen))
    }

    /// Takes bump `(epoch, gen)` out of the sends under way: every send it made has
    /// landed or failed.
    pub(crate) async fn sent(&self, order: &str, epoch: i64, gen: u64) -> Result<(), QueueError> {
        self.update(order, |m| {
            let m = m.filter(|m| m.epoch == epoch)?;
            let i = m.sending.iter().position(|s| s.gen == gen)?;
            let mut m = m.clone();
            m.sending.remove(i);
            Some(m)
        })
        .await?;
        Ok(())
    }

    /// Changes one optional part of the mark to None, if the mark has it set.
    pub(crate) async fn forget<T>(
        &self,
        order: &str,
        part: impl Fn(&mut Mark) -> &mut Option<T>,
    ) -> Result<(), QueueError> {
        self.update(order, |m| {
            let mut m = m?.clone();
            part(&mut m).take()?;
            Some(m)
        })
        .await?;
        Ok(())
    }

    /// The partitions that have a mark.
    pub(crate) async fn list(&self) -> Result<Vec<String>, QueueError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&self.prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| err_sdk_in("s3 list_objects_v2 (divert marks): ", e))?;
            keys.extend(
                out.contents()
                    .iter()
                    .filter_map(|o| o.key()?.strip_prefix(&self.prefix).map(str::to_string)),
            );
            match out.next_continuation_token {
                Some(t) if out.is_truncated == Some(true) => token = Some(t),
                _ => return Ok(keys),
            }
        }
    }

    /// Every mark, as read now (one deleted between the list and its read is left out).
    pub(crate) async fn read_all(&self) -> Result<Vec<(String, Read)>, QueueError> {
        let keys = self.list().await?;
        let reads = futures::future::join_all(keys.iter().map(|k| self.get(k))).await;
        let mut out = Vec::with_capacity(keys.len());
        for (k, r) in keys.into_iter().zip(reads) {
            if let Some(r) = r? {
                out.push((k, r));
            }
        }
        Ok(out)
    }
}

/// A new mark's epoch: random (a v7 UUID's random bits), so a mark made again has
/// another.
pub(crate) fn new_epoch() -> i64 {
    (uuid::Uuid::now_v7().as_u64_pair().1 >> 2) as i64
}
