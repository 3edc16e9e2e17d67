//! Receive (with the S3 fetch of offloaded bodies) and delete.

use super::*;

/// What a FIFO message's own attributes say besides its body (see [`super::fifo`]).
#[derive(Debug, Clone, Default)]
pub(super) struct Attrs {
    /// A barrier's `epoch/gen`.
    pub barrier: Option<String>,
    /// Unix ms before which the entry is not to be handed out.
    pub visible_at: Option<i64>,
    /// A dead-letter copy's entry in the queue (the partition's held head).
    pub head: Option<String>,
}

impl SqsQueue {
    pub(super) async fn receive_from(
        &self,
        url: &str,
        max: usize,
        wait: Duration,
        lease: Duration,
    ) -> Result<Vec<Leased>, QueueError> {
        Ok(self
            .receive_with(url, max, wait, lease)
            .await?
            .into_iter()
            .map(|(l, _)| l)
            .collect())
    }

    /// As `receive_from`, with each message's FIFO attributes.
    pub(super) async fn receive_with(
        &self,
        url: &str,
        max: usize,
        wait: Duration,
        lease: Duration,
    ) -> Result<Vec<(Leased, Attrs)>, QueueError> {
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
            let text = |k: &str| {
                m.message_attributes
                    .as_ref()
                    .and_then(|a| a.get(k))
                    .and_then(|v| v.string_value.clone())
            };
            let order = text(super::fifo::ORDER).filter(|_| self.fifo);
            let extra = Attrs {
                barrier: text(super::fifo::BARRIER),
                visible_at: text(super::fifo::VISIBLE_AT).and_then(|v| v.parse().ok()),
                head: text(super::fifo::HEAD),
            };
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
            leased.push((
                Leased {
                    order,
                    entry_id,
                    receipt: m.receipt_handle.unwrap_or_default(),
                    body,
                    deliveries: attr(MessageSystemAttributeName::ApproximateReceiveCount)
                        .unwrap_or(1) as u32,
                    enqueued_at_unix_ms: attr(MessageSystemAttributeName::SentTimestamp)
                        .unwrap_or(0),
                    offloaded,
                },
                extra,
            ));
        }
        Ok(leased)
    }

    /// Makes received messages visible again at once, by their receipts.
    pub(super) async fn show_now(&self, url: &str, receipts: &[String]) -> Result<(), QueueError> {
        for chunk in receipts.chunks(MAX_ENTRIES) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, receipt)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(format!("v{i}"))
                        .receipt_handle(receipt)
                        .visibility_timeout(0)
                        .build()
                        .map_err(err)
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.count();
            let out = self
                .client
                .change_message_visibility_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(err_sdk)?;
            if let Some(f) = out.failed.first() {
                return Err(QueueError::Unavailable(format!(
                    "{} of {} messages not shown again ({}: {})",
                    out.failed.len(),
                    chunk.len(),
                    f.code,
                    f.message.clone().unwrap_or_default()
                )));
            }
        }
        Ok(())
    }

    pub(super) async fn delete_from(
        &self,
        url: &str,
        entries: &[Leased],
    ) -> Result<(), QueueError> {
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
}
