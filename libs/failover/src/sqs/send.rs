//! Enqueue: bodies into messages (large ones offloaded to S3 first), split into
//! `SendMessageBatch` calls, and what a failed call may still have applied.

use super::*;

/// A body as it goes out: inline (base64) or a pointer to the S3 object that holds it.
#[derive(Debug)]
pub(super) struct Outgoing {
    pub(super) text: String,
    /// The object written for this body, and the body's size.
    pub(super) offloaded: Option<(Pointer, usize)>,
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
pub(super) fn may_have_applied<E>(
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
pub(super) fn never_connected(e: &(dyn std::error::Error + 'static)) -> bool {
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
pub(super) fn err_send<E: std::error::Error + 'static>(
    e: aws_sdk_sqs::error::SdkError<E>,
) -> QueueError {
    let applied = may_have_applied(&e);
    let text = aws_sdk_sqs::error::DisplayErrorContext(e).to_string();
    if applied {
        QueueError::Ambiguous(text)
    } else {
        QueueError::Unavailable(text)
    }
}

impl SqsQueue {
    /// Turns a body into what the message carries: a large one is written to S3 first.
    pub(super) async fn outgoing(&self, body: &[u8]) -> Result<Outgoing, QueueError> {
        let deadline = tokio::time::Instant::now() + self.write_timeout;
        let bodies = [body.to_vec()];
        Ok(self.outgoing_all(&bodies, deadline).await?.remove(0))
    }

    /// What each body's message carries. The large ones are written to S3 all at once, by
    /// `deadline`; when any put fails or does not answer in time, every object is deleted
    /// (in the background) and nothing is sent.
    pub(super) async fn outgoing_all(
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
    pub(super) fn discard<'a>(&self, unsent: impl IntoIterator<Item = &'a Outgoing>) {
        if let Some(o) = &self.offload {
            o.delete_later(
                unsent
                    .into_iter()
                    .filter_map(|u| u.offloaded.as_ref().map(|(p, _)| p.clone()))
                    .collect(),
            );
        }
    }

    pub(super) fn entry(
        &self,
        i: usize,
        body: &[u8],
        out: &Outgoing,
        delay: Duration,
        order: Option<&str>,
    ) -> Result<SendMessageBatchRequestEntry, QueueError> {
        let mut b = SendMessageBatchRequestEntry::builder()
            .id(format!("m{i}"))
            .message_body(out.text.clone());
        if self.fifo {
            // A FIFO queue refuses a per-message delay: the receive applies it
            // (`VISIBLE_AT`). An ordered entry's group is its partition; any other entry
            // gets a group of its own, so it holds nothing back.
            let id = uuid::Uuid::now_v7().to_string();
            b = b
                .message_group_id(order.map_or(id.clone(), fifo::group_of))
                .message_deduplication_id(id);
            if let Some(order) = order {
                b = b.message_attributes(fifo::ORDER, string_attr(order)?);
            }
            if !delay.is_zero() {
                let at = now_ms() + delay.as_millis() as i64;
                b = b.message_attributes(fifo::VISIBLE_AT, number_attr(at as u64)?);
            }
        } else {
            b = b.delay_seconds(ceil_secs(delay).min(MAX_DELAY_SECS) as i32);
        }
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

    /// As [`Self::send_ordered`], with no ordered body.
    pub(super) async fn send_batches(
        &self,
        url: &str,
        bodies: &[Vec<u8>],
        delay: Duration,
    ) -> Result<Vec<String>, QueueError> {
        self.send_ordered(url, bodies, &vec![None; bodies.len()], delay)
            .await
    }

    /// Sends bodies in sub-batches of what fits one `SendMessageBatch`, all within
    /// `failover.write_timeout`. A sub-batch that fails stops the rest, which are never
    /// sent; each body's fate is reported (see [`QueueError::Partial`]). The S3 object of
    /// a body whose message may have landed is kept: deleting it would turn the message
    /// into a false "body lost" dead letter.
    pub(super) async fn send_ordered(
        &self,
        url: &str,
        bodies: &[Vec<u8>],
        order: &[Option<String>],
        delay: Duration,
    ) -> Result<Vec<String>, QueueError> {
        let deadline = tokio::time::Instant::now() + self.write_timeout;
        self.send_until(url, bodies, order, delay, deadline).await
    }

    /// As [`Self::send_ordered`], by `deadline`.
    pub(super) async fn send_until(
        &self,
        url: &str,
        bodies: &[Vec<u8>],
        order: &[Option<String>],
        delay: Duration,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<String>, QueueError> {
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
                    &order[start..end],
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
    pub(super) async fn send_batch(
        &self,
        url: &str,
        bodies: &[Vec<u8>],
        outgoing: &[Outgoing],
        order: &[Option<String>],
        first: usize,
        delay: Duration,
    ) -> Result<Vec<String>, (QueueError, Vec<(usize, String)>)> {
        let entries = bodies
            .iter()
            .zip(outgoing)
            .zip(order)
            .enumerate()
            .map(|(i, ((b, o), k))| self.entry(first + i, b, o, delay, k.as_deref()))
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
