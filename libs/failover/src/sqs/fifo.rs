//! Ordered partitions on an SQS FIFO queue (both queues' names end in `.fifo`). Each
//! ordered partition is a message group (`MessageGroupId` = `topic/partition`), which
//! SQS hands to one receiver at a time, in send order. Its divert lives in an S3 mark
//! (see [`super::marks`]): every ordered enqueue bumps the mark before it sends, and
//! records in it once its sends have answered. A mark is cleared only by a *barrier*, a
//! message the sweep sends into the group once no send of the mark's bumps can still
//! land (each has answered, or its gateway's `failover.write_timeout` and a margin have
//! passed since its bump). A barrier that reaches the head of its group, with the mark
//! still at its generation, means every earlier entry has reached Kafka: the mark goes,
//! and the gateways write the partition directly again.
//!
//! A FIFO entry keeps its place only while its message is never replaced, so an ordered
//! entry's attempts live in the mark, and a dead-lettered head stays in the queue, held
//! in flight (which stops its group), with a copy in the dead-letter queue; redrive shows
//! it again, purge deletes it. The design, and where it departs from the model, is in
//! ARCHITECTURE.md ("Ordered failover on SQS FIFO").

use super::marks::{DeadHead, HeadAttempts, Mark, RACES};
use super::receive::Attrs;
use super::*;

/// The message attribute that carries an ordered entry's partition.
pub(super) const ORDER: &str = "order";
/// Unix ms before which the entry is not to be handed out (FIFO queues take no
/// per-message delay).
pub(super) const VISIBLE_AT: &str = "visible_at";
/// A barrier's `epoch/gen`.
pub(super) const BARRIER: &str = "barrier";
/// On a dead-letter copy: the message id of the held head it copies.
pub(super) const HEAD: &str = "head_entry";

/// Past a bump's `send_by` (its gateway's `failover.write_timeout` after the bump), this
/// margin covers the clocks of the bumping gateway and the sweeping worker.
pub(super) const BARRIER_MARGIN: Duration = Duration::from_secs(1);
/// A barrier that did not settle its mark (lost, or its mark bumped since) is sent again
/// after this long: past SQS's 5-minute deduplication window, so it is not dropped.
pub(super) const RESEND: Duration = Duration::from_secs(360);
/// How long a dead head is held in flight, renewed whenever it comes back: SQS caps a
/// message's visibility at 12 h from its receive, and the hold starts up to a lease in.
const HOLD_SECS: i32 = 11 * 3600;

/// A partition's message group: its key, or the key's last 128 characters (SQS's limit).
pub(super) fn group_of(key: &str) -> String {
    let n = key.chars().count();
    key.chars().skip(n.saturating_sub(128)).collect()
}

impl SqsQueue {
    fn marks_or_refuse(&self) -> Result<&super::marks::Marks, QueueError> {
        self.marks.as_ref().ok_or_else(|| {
            QueueError::Config(format!(
                "ordered entries on SQS need a FIFO queue (failover.sqs.queue and dlq ending in \
                 .fifo, this is {}) and failover.sqs.offload.bucket for the divert marks",
                self.queue_url
            ))
        })
    }

    /// Bumps each ordered partition's mark, then sends, all within
    /// `failover.write_timeout`. A mark that cannot be bumped sends nothing.
    pub(super) async fn fifo_enqueue(
        &self,
        bodies: &[Vec<u8>],
        order: &[Option<String>],
        delay: Duration,
    ) -> Result<OrderedIds, QueueError> {
        if order.iter().all(Option::is_none) {
            return Ok(OrderedIds {
                ids: self.send_batches(&self.queue_url, bodies, delay).await?,
                epochs: Vec::new(),
            });
        }
        let marks = self.marks_or_refuse()?;
        let deadline = tokio::time::Instant::now() + self.write_timeout;
        let mut keys: Vec<&str> = order.iter().flatten().map(String::as_str).collect();
        keys.sort_unstable();
        keys.dedup();
        let now = now_ms();
        let send_by = now + self.write_timeout.as_millis() as i64;
        let bumps = futures::future::join_all(keys.iter().map(|k| marks.bump(k, now, send_by)));
        let bumped = match tokio::time::timeout_at(deadline, bumps).await {
            Ok(results) => keys
                .iter()
                .zip(results)
                .map(|(k, r)| r.map(|e| (k.to_string(), e)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    QueueError::Unavailable(format!(
                        "divert mark not bumped ({e}); nothing was sent"
                    ))
                })?,
            Err(_) => {
                return Err(QueueError::Unavailable(format!(
                "divert marks not bumped within {:?} (failover.write_timeout); nothing was sent",
                self.write_timeout
            )))
            }
        };
        let sent = self
            .send_until(&self.queue_url, bodies, order, delay, deadline)
            .await;
        // A partition none of whose sends may still land (each landed or failed) takes its
        // bump out of the mark's sends under way, so a barrier need not wait for its
        // `send_by`. Not awaited: the answer does not depend on it.
        let unknown: Vec<&str> = match &sent {
            Err(QueueError::Partial { stored, .. }) => order
                .iter()
                .zip(stored)
                .filter(|(_, f)| **f == Fate::Unknown)
                .filter_map(|(o, _)| o.as_deref())
                .collect(),
            Err(e) if e.may_hold() => keys.clone(),
            _ => Vec::new(),
        };
        for (key, (epoch, gen)) in &bumped {
            if unknown.contains(&key.as_str()) {
                continue;
            }
            let (marks, key, epoch, gen) = (marks.clone(), key.clone(), *epoch, *gen);
            let bound = self.write_timeout;
            tokio::spawn(async move {
                match tokio::time::timeout(bound, marks.sent(&key, epoch, gen)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(partition = %key, error = %e, "send not recorded in the divert mark; it counts until its send_by")
                    }
                    Err(_) => {
                        tracing::debug!(partition = %key, "send not recorded in the divert mark in time; it counts until its send_by")
                    }
                }
            });
        }
        Ok(OrderedIds {
            ids: sent?,
            epochs: bumped.into_iter().map(|(k, (e, _))| (k, e)).collect(),
        })
    }

    async fn set_visibility(&self, url: &str, receipt: &str, secs: i32) -> Result<(), QueueError> {
        self.count();
        self.client
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt)
            .visibility_timeout(secs.clamp(0, MAX_VISIBILITY_SECS as i32))
            .send()
            .await
            .map_err(err_sdk)?;
        Ok(())
    }

    /// A receive from the FIFO queue: barriers are settled or put back, entries not yet
    /// due are hidden until they are, a dead head is held again, and a head's attempts are
    /// put back in its envelope. Behind any of these, the group's later messages of the
    /// batch are made visible again, unhanded.
    pub(super) async fn fifo_receive(
        &self,
        max: usize,
        wait: Duration,
        lease: Duration,
    ) -> Result<Vec<Leased>, QueueError> {
        let got = self.receive_with(&self.queue_url, max, wait, lease).await?;
        let mut keys: Vec<String> = got.iter().filter_map(|(l, _)| l.order.clone()).collect();
        keys.sort_unstable();
        keys.dedup();
        let Some(marks) = &self.marks else {
            // No marks, no ordered entries (their enqueue is refused): only delays apply.
            let now = now_ms();
            let mut out = Vec::new();
            for (l, a) in got {
                match a.visible_at.filter(|at| *at > now) {
                    Some(at) => {
                        let secs = ((at - now) as u64).div_ceil(1000) as i32;
                        self.set_visibility(&self.queue_url, &l.receipt, secs)
                            .await?;
                    }
                    None if a.barrier.is_none() => out.push(l),
                    None => {}
                }
            }
            return Ok(out);
        };
        let reads = futures::future::join_all(keys.iter().map(|k| marks.get(k))).await;
        let mut read: std::collections::HashMap<String, Option<super::marks::Read>> =
            Default::default();
        // A group whose mark cannot be read is left in flight: its lease ends it.
        let mut stopped: Vec<String> = Vec::new();
        for (k, r) in keys.into_iter().zip(reads) {
            match r {
                Ok(r) => {
                    read.insert(k, r);
                }
                Err(e) => {
                    tracing::warn!(partition = %k, error = %e, "divert mark unreadable; its entries wait for their lease");
                    stopped.push(k);
                }
            }
        }
        let mut first_seen: Vec<String> = Vec::new();
        let mut out = Vec::new();
        let now = now_ms();
        for (mut l, a) in got {
            let first = match &l.order {
                Some(k) if !first_seen.contains(k) => {
                    first_seen.push(k.clone());
                    true
                }
                _ => false,
            };
            if l.order.as_ref().is_some_and(|k| stopped.contains(k)) {
                if !first {
                    // Behind a message held here: back at once, unhanded (its group
                    // stays stopped by the message held).
                    self.set_visibility(&self.queue_url, &l.receipt, 0).await?;
                }
                continue;
            }
            if let Some(b) = &a.barrier {
                // Never handed out; what follows it in the batch was enqueued after it.
                self.settle_barrier(&l, b, first, read.get(l.order.as_deref().unwrap_or("")))
                    .await?;
                continue;
            }
            if let Some(at) = a.visible_at.filter(|at| *at > now) {
                let secs = ((at - now) as u64).div_ceil(1000) as i32;
                self.set_visibility(&self.queue_url, &l.receipt, secs)
                    .await?;
                if let Some(k) = &l.order {
                    stopped.push(k.clone());
                }
                continue;
            }
            if let Some(k) = l.order.clone() {
                let mark = read.get(&k).and_then(|r| r.as_ref()).map(|r| &r.mark);
                if let Some(dead) = mark.and_then(|m| m.dead.as_ref()) {
                    if dead.entry == l.entry_id {
                        self.hold_dead_head(&k, &l).await?;
                        stopped.push(k);
                        continue;
                    }
                    // The dead head is gone from the queue (purged): the mark forgets it.
                    marks.forget(&k, |m| &mut m.dead).await?;
                }
                match mark.and_then(|m| m.attempts.as_ref()) {
                    Some(at) if at.entry == l.entry_id => {
                        if let Ok(mut env) = envelope::decode(&l.body) {
                            env.attempt = at.attempt;
                            env.last_error = at.last_error.clone();
                            l.body = envelope::encode(&env);
                        }
                    }
                    // The count of an earlier head, which has gone: the slot is this
                    // head's now.
                    Some(_) if first => marks.forget(&k, |m| &mut m.attempts).await?,
                    _ => {}
                }
            }
            out.push(l);
        }
        Ok(out)
    }

    /// A barrier at the head of its group clears its mark when the mark is still at the
    /// barrier's generation (no enqueue since) and holds no dead letter; it is deleted
    /// either way. A barrier behind other messages of the batch goes back.
    async fn settle_barrier(
        &self,
        l: &Leased,
        barrier: &str,
        first: bool,
        read: Option<&Option<super::marks::Read>>,
    ) -> Result<(), QueueError> {
        if !first {
            return self.set_visibility(&self.queue_url, &l.receipt, 0).await;
        }
        let (Some(marks), Some(key)) = (&self.marks, &l.order) else {
            return self
                .delete_from(&self.queue_url, std::slice::from_ref(l))
                .await;
        };
        // The mark as this receive read it, then as read again after a write that changed
        // it but not its generation (a send recorded, an attempt count).
        let mut read = read.cloned().flatten();
        for race in 0..=RACES {
            let Some(r) = read.take() else { break };
            let m = &r.mark;
            if barrier != format!("{}/{}", m.epoch, m.gen) || m.dead.is_some() {
                break;
            }
            if race == RACES {
                tracing::warn!(partition = %key, "divert mark kept changing under the barrier; the sweep sends another within 6 minutes");
                break;
            }
            if marks.delete(key, &r.etag).await? {
                tracing::info!(partition = %key, "ordered partition drained: divert cleared");
                break;
            }
            read = marks.get(key).await?;
        }
        self.delete_from(&self.queue_url, std::slice::from_ref(l))
            .await
    }

    /// Holds a dead head in flight again and keeps its receipt in the mark.
    async fn hold_dead_head(&self, key: &str, l: &Leased) -> Result<(), QueueError> {
        self.set_visibility(&self.queue_url, &l.receipt, HOLD_SECS)
            .await?;
        let marks = self.marks_or_refuse()?;
        marks
            .update(key, |m| {
                let m = m?;
                (m.dead.as_ref()?.entry == l.entry_id).then(|| Mark {
                    dead: Some(DeadHead {
                        entry: l.entry_id.clone(),
                        receipt: l.receipt.clone(),
                    }),
                    ..m.clone()
                })
            })
            .await?;
        Ok(())
    }

    /// `retry_later` on the FIFO queue: the message stays (it keeps its place); an
    /// ordered entry's new attempt count goes to its mark, an unordered entry's new body
    /// is sent again.
    pub(super) async fn fifo_retry_later(
        &self,
        entry: &Leased,
        new_body: Option<Vec<u8>>,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let secs = ceil_secs(delay).min(MAX_VISIBILITY_SECS) as i32;
        match (new_body, &entry.order, &self.marks) {
            (None, _, _) => {
                self.set_visibility(&self.queue_url, &entry.receipt, secs)
                    .await
            }
            (Some(body), Some(key), Some(marks)) => {
                let env = envelope::decode(&body)
                    .map_err(|e| QueueError::Invalid(format!("retry body: {e}")))?;
                // The mark keeps one count, the head's: the first entry of the group to
                // go back takes the slot, and a later entry behind it (retried in the
                // same batch) keeps its body's count.
                marks
                    .update(key, |m| {
                        let m = m?;
                        if m.attempts
                            .as_ref()
                            .is_some_and(|a| a.entry != entry.entry_id)
                        {
                            return None;
                        }
                        Some(Mark {
                            attempts: Some(HeadAttempts {
                                entry: entry.entry_id.clone(),
                                attempt: env.attempt,
                                last_error: env.last_error.clone(),
                            }),
                            ..m.clone()
                        })
                    })
                    .await?;
                self.set_visibility(&self.queue_url, &entry.receipt, secs)
                    .await
            }
            (Some(body), _, _) => {
                self.send_batches(&self.queue_url, &[body], delay).await?;
                self.delete_from(&self.queue_url, std::slice::from_ref(entry))
                    .await
            }
        }
    }

    /// An ordered dead letter: a copy goes to the dead-letter queue (with the head's id),
    /// the mark records the head, and the head is held in flight, stopping its group.
    pub(super) async fn fifo_dead_head(&self, entry: &Leased, key: &str) -> Result<(), QueueError> {
        let marks = self.marks_or_refuse()?;
        marks
            .update(key, |m| {
                Some(Mark {
                    dead: Some(DeadHead {
                        entry: entry.entry_id.clone(),
                        receipt: entry.receipt.clone(),
                    }),
                    attempts: None,
                    ..m.cloned().unwrap_or_else(|| Mark {
                        epoch: super::marks::new_epoch(),
                        gen: 1,
                        bumped_at: now_ms(),
                        ..Mark::default()
                    })
                })
            })
            .await?;
        self.set_visibility(&self.queue_url, &entry.receipt, HOLD_SECS)
            .await
    }

    /// Redrives or purges FIFO dead letters: an ordered copy's head is shown again
    /// (redrive, under its own id, first in its group) or deleted (purge), and its mark
    /// forgets it; then the copy goes.
    pub(super) async fn fifo_settle_dead(
        &self,
        chosen: &[(Leased, Attrs)],
        redrive: bool,
    ) -> Result<u64, QueueError> {
        let mut plain = Vec::new();
        for (l, a) in chosen {
            let (Some(key), Some(head), Some(marks)) = (&l.order, &a.head, &self.marks) else {
                plain.push(l.clone());
                continue;
            };
            let mut receipt = None;
            marks
                .update(key, |m| {
                    let m = m?;
                    let dead = m.dead.as_ref().filter(|d| &d.entry == head)?;
                    receipt = Some(dead.receipt.clone());
                    Some(Mark {
                        dead: None,
                        attempts: None,
                        ..m.clone()
                    })
                })
                .await?;
            match (receipt, redrive) {
                (Some(r), true) => {
                    if let Err(e) = self.set_visibility(&self.queue_url, &r, 0).await {
                        // The hold's receipt went stale: the head comes back when the
                        // hold ends, and the mark no longer stops it.
                        tracing::warn!(partition = %key, error = %e, "could not show the redriven head now; it returns when its hold ends");
                    }
                }
                (Some(r), false) => {
                    let head = Leased {
                        receipt: r,
                        ..l.clone()
                    };
                    self.client
                        .delete_message()
                        .queue_url(&self.queue_url)
                        .receipt_handle(&head.receipt)
                        .send()
                        .await
                        .map_err(err_sdk)?;
                    self.count();
                }
                (None, true) => {
                    // The mark does not hold this head: a copy left by a dead-lettering
                    // whose mark write failed, so the head is still in the queue and is
                    // delivered from there. Sending it again would put its old value
                    // behind newer records of its partition.
                    tracing::warn!(partition = %key, entry = %head, "dead letter copies an entry its partition does not hold dead; dropped, the entry is delivered from the queue");
                }
                (None, false) => {}
            }
            self.delete_from(&self.dlq_url, std::slice::from_ref(l))
                .await?;
        }
        let n = plain.len() as u64;
        if redrive {
            self.redrive_entries(&plain).await?;
        } else {
            self.delete_from(&self.dlq_url, &plain).await?;
        }
        let _ = n;
        Ok(chosen.len() as u64)
    }

    /// Sends a barrier into each quiet partition's group (see the module docs). Run by
    /// every worker, a lease apart; a claim in the mark keeps them from sending twice.
    pub(super) async fn sweep(&self) -> Result<(), QueueError> {
        let Some(marks) = &self.marks else {
            return Ok(());
        };
        let margin = BARRIER_MARGIN.as_millis() as i64;
        for (key, r) in marks.read_all().await? {
            let now = now_ms();
            let m = &r.mark;
            // Quiet once every send of its bumps has landed or failed: each enqueue says
            // so, or its bumping gateway's own bound (`send_by`) has passed.
            if m.dead.is_some() || !m.quiet(now, margin) {
                continue;
            }
            if matches!(m.barrier, Some((g, at)) if g == m.gen && now - at < RESEND.as_millis() as i64)
            {
                continue;
            }
            let claimed = Mark {
                barrier: Some((m.gen, now)),
                sending: Vec::new(),
                ..m.clone()
            };
            if !marks.put(&key, &claimed, Some(&r.etag)).await? {
                continue;
            }
            self.count();
            self.client
                .send_message()
                .queue_url(&self.queue_url)
                .message_group_id(group_of(&key))
                .message_deduplication_id(format!("barrier-{}-{}", m.epoch, m.gen))
                .message_attributes(ORDER, string_attr(&key)?)
                .message_attributes(BARRIER, string_attr(&format!("{}/{}", m.epoch, m.gen))?)
                .message_body("barrier")
                .send()
                .await
                .map_err(err_sdk)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ballast_testkit::deps::{hostport, unique, Moto};
    use ballast_testkit::fault_proxy::{Fault, FaultProxy};

    fn body() -> Vec<u8> {
        envelope::encode(&envelope::Envelope {
            topic: "t".into(),
            value: b"v".to_vec().into(),
            message_id: "m".into(),
            ..Default::default()
        })
    }

    async fn sending(q: &SqsQueue, key: &str) -> usize {
        let marks = q.marks.as_ref().expect("marks");
        marks
            .get(key)
            .await
            .expect("read")
            .map_or(0, |r| r.mark.sending.len())
    }

    /// An enqueue whose send did not answer within `failover.write_timeout` (its outcome
    /// unknown) leaves its bump among the sends under way; one whose send answered takes
    /// it out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_an_answered_send_is_recorded() {
        let moto = Moto::start();
        let proxy = FaultProxy::start(hostport(&moto.endpoint()))
            .await
            .expect("proxy");
        let mut cfg = SqsConfig::local(
            format!("http://{}", proxy.host_port()),
            &format!("{}.fifo", unique("ballast-sent")),
        );
        cfg.offload.bucket = unique("ballast-sent").to_lowercase();
        cfg.offload.create_bucket = true;
        let q = SqsQueue::connect(&cfg, Duration::from_secs(1))
            .await
            .expect("fifo on moto");
        let (bodies, order) = ([body()], [Some("t/0".to_string())]);

        proxy.set(Fault::HoldRequests("AmazonSQS.SendMessageBatch"));
        let e = q
            .enqueue_ordered(&bodies, &order, Duration::ZERO)
            .await
            .expect_err("held past write_timeout");
        assert!(e.may_hold(), "{e}");
        proxy.set(Fault::Cut);
        tokio::time::sleep(Duration::from_millis(100)).await;
        proxy.set(Fault::None);
        // Long enough for a record of the send, had one been made.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(sending(&q, "t/0").await, 1, "the unknown send still counts");

        q.enqueue_ordered(&bodies, &order, Duration::ZERO)
            .await
            .expect("sent");
        let start = std::time::Instant::now();
        while sending(&q, "t/0").await != 1 {
            assert!(start.elapsed() < Duration::from_secs(5), "never recorded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Two bumps, and the answered one taken out again.
        let marks = q.marks.as_ref().expect("marks");
        let m = marks.get("t/0").await.expect("read").expect("a mark").mark;
        assert_eq!((m.gen, m.sending.len()), (2, 1), "{m:?}");
        assert_eq!(
            m.sending[0].gen, 1,
            "the unknown send's bump is the one left"
        );
    }
}
