//! The SQL backend on sqlx: SQLite (WAL; the embedded default) and PostgreSQL (leases with
//! `FOR UPDATE SKIP LOCKED`, so many workers share a queue). One code path over `sqlx::Any`;
//! each dialect has its own migrations.

use crate::envelope;
use crate::queue::*;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::time::Duration;

/// Dead letters moved per transaction by a redrive of all.
const REDRIVE_PAGE: i64 = 500;

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Bodies per INSERT statement in an enqueue.
const INSERT_CHUNK: usize = 500;

/// How often an empty queue is polled while a receive waits.
const POLL: Duration = Duration::from_millis(50);

#[derive(Debug)]
pub struct SqlQueue {
    pool: AnyPool,
    postgres: bool,
    queue: String,
    max_batch: usize,
    /// The client-side bound on each call (`failover.write_timeout`): PostgreSQL's
    /// `statement_timeout` is the server's, and a black-holed connection never hears it.
    write_timeout: Duration,
}

/// `failover.write_timeout`'s default.
const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A divert mark's epoch: random and positive (a UUIDv7's random half).
fn new_epoch() -> i64 {
    (uuid::Uuid::now_v7().as_u64_pair().1 >> 1) as i64
}

fn unavailable(e: sqlx::Error) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

impl SqlQueue {
    /// Connects to `sqlite://PATH?mode=rwc` or `postgres://…`, runs migrations, and uses
    /// `queue` as this queue's name within the tables.
    pub async fn connect(url: &str, queue: &str, max_connections: u32) -> Result<Self, QueueError> {
        sqlx::any::install_default_drivers();
        let postgres = url.starts_with("postgres:") || url.starts_with("postgresql:");
        if !postgres && !url.starts_with("sqlite:") {
            return Err(QueueError::Config(format!(
                "database url must start with sqlite: or postgres:, got {url:?}"
            )));
        }
        let sqlite_setup = !postgres;
        let pool = AnyPoolOptions::new()
            .max_connections(if postgres {
                max_connections
            } else {
                max_connections.min(4)
            })
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if !sqlite_setup {
                        // Bounds every statement, a lock wait included, so an enqueue has
                        // an outcome in bounded time.
                        sqlx::query("SET statement_timeout = 10000")
                            .execute(&mut *conn)
                            .await?;
                    }
                    if sqlite_setup {
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 5000")
                            .execute(&mut *conn)
                            .await?;
                        // An acknowledgement from the queue must survive a power cut:
                        // fsync at every commit, not only at checkpoints.
                        sqlx::query("PRAGMA synchronous = FULL")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await
            .map_err(unavailable)?;
        let migrator = if postgres { &POSTGRES } else { &SQLITE };
        migrator
            .run(&pool)
            .await
            .map_err(|e| QueueError::Unavailable(format!("migrations: {e}")))?;
        Ok(Self {
            pool,
            postgres,
            queue: queue.to_string(),
            max_batch: 100,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
        })
    }

    /// Bounds every call by `write_timeout` on this side (10 s by default).
    pub fn with_write_timeout(mut self, write_timeout: Duration) -> Self {
        self.write_timeout = write_timeout;
        self
    }

    /// Runs one worker or admin call under `write_timeout`. Past it, the call is dropped
    /// and fails with UNAVAILABLE; a lease, a retry or a dead letter the database may
    /// still have applied is safe to do again.
    async fn bound<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = Result<T, QueueError>>,
    ) -> Result<T, QueueError> {
        tokio::time::timeout(self.write_timeout, fut)
            .await
            .unwrap_or_else(|_| {
                Err(QueueError::Unavailable(format!(
                    "the failover database did not answer {what} within {:?} (failover.write_timeout)",
                    self.write_timeout
                )))
            })
    }

    /// Opens a transaction that takes the write lock at once. SQLite's default (deferred)
    /// transaction reads first and upgrades at its first write, and in WAL mode that
    /// upgrade fails with "database is locked" when another connection wrote in between:
    /// `busy_timeout` cannot wait it out, since the snapshot is already stale. `BEGIN
    /// IMMEDIATE` waits for the lock (under `busy_timeout`) before reading anything.
    /// PostgreSQL's row locks need no such thing.
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, QueueError> {
        let begin = if self.postgres {
            "BEGIN"
        } else {
            "BEGIN IMMEDIATE"
        };
        self.pool.begin_with(begin).await.map_err(unavailable)
    }

    /// The rows of one enqueue, inserted in an open transaction; their ids in body order.
    async fn insert(
        &self,
        bodies: &[Vec<u8>],
        order: &[Option<String>],
        now: i64,
        visible: i64,
    ) -> Result<(sqlx::Transaction<'static, sqlx::Any>, OrderedIds), QueueError> {
        // One multi-row INSERT per chunk, not one statement (and one round trip) per body;
        // the queue, times and deliveries are bound once and shared by every row.
        let mut tx = self.write_tx().await?;
        let mut ids = Vec::with_capacity(bodies.len());
        for (chunk, keys) in bodies.chunks(INSERT_CHUNK).zip(order.chunks(INSERT_CHUNK)) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| format!("($1, $2, $3, 0, ${}, ${})", 2 * i + 4, 2 * i + 5))
                .collect();
            // Only placeholders are spliced in; every value is bound.
            let sql = sqlx::AssertSqlSafe(format!(
                "INSERT INTO ballast_failover_entries (queue, enqueued_at, visible_at, deliveries, body, part_key) \
                 VALUES {} RETURNING id",
                rows.join(",")
            ));
            let mut q = sqlx::query(sql).bind(&self.queue).bind(now).bind(visible);
            for (body, key) in chunk.iter().zip(keys) {
                q = q.bind(body.as_slice()).bind(key.clone());
            }
            let returned = q.fetch_all(&mut *tx).await.map_err(unavailable)?;
            let mut chunk_ids = returned
                .iter()
                .map(|r| r.try_get::<i64, _>(0))
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            if chunk_ids.len() != chunk.len() {
                return Err(QueueError::Unavailable(format!(
                    "insert of {} entries returned {} ids",
                    chunk.len(),
                    chunk_ids.len()
                )));
            }
            // Rows take their ids in VALUES order, and RETURNING need not keep that order:
            // ascending ids are the bodies' ids in order.
            chunk_ids.sort_unstable();
            ids.extend(chunk_ids.into_iter().map(|id| id.to_string()));
        }
        // Each ordered partition of the batch is marked diverted (or its mark's generation
        // bumped) in the same transaction as its entries, in key order: every transaction
        // that locks marks takes them in that order, so two never wait for each other.
        let mut marked: Vec<&str> = order.iter().flatten().map(String::as_str).collect();
        marked.sort_unstable();
        marked.dedup();
        let mut epochs = Vec::with_capacity(marked.len());
        for key in marked {
            let epoch = self.mark_diverted(&mut tx, key).await?;
            epochs.push((key.to_string(), epoch));
        }
        Ok((tx, OrderedIds { ids, epochs }))
    }

    /// Marks the ordered partition `key` diverted, or bumps its mark's generation, in an
    /// open transaction; returns the mark's epoch. A transaction that marks several
    /// partitions marks them in key order.
    async fn mark_diverted(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        key: &str,
    ) -> Result<i64, QueueError> {
        sqlx::query_scalar(
            "INSERT INTO ballast_failover_diverts (queue, part_key, gen, epoch) VALUES ($1, $2, 1, $3) \
             ON CONFLICT (queue, part_key) DO UPDATE SET gen = ballast_failover_diverts.gen + 1 \
             RETURNING epoch",
        )
        .bind(&self.queue)
        .bind(key)
        .bind(new_epoch())
        .fetch_one(&mut **tx)
        .await
        .map_err(unavailable)
    }

    /// Gives back the ordered partition `key` if it is leased under `token` (its run's
    /// entries were settled), in an open transaction.
    async fn release_partition(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        token: &str,
        key: &str,
    ) -> Result<(), QueueError> {
        sqlx::query(
            "UPDATE ballast_failover_diverts SET leased_until = 0, lease_token = NULL \
             WHERE queue = $1 AND part_key = $2 AND lease_token = $3",
        )
        .bind(&self.queue)
        .bind(key)
        .bind(token)
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    /// Clears the divert mark of partition `key`, leased under `token`, if it holds
    /// nothing any more and no enqueue has come since the lease (the generation is the
    /// one leased), or else gives it back; in an open transaction.
    async fn clear_partition(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        token: &str,
        key: &str,
    ) -> Result<(), QueueError> {
        sqlx::query(
            "DELETE FROM ballast_failover_diverts WHERE queue = $1 AND part_key = $3 AND lease_token = $2 AND gen = lease_gen \
             AND NOT EXISTS (SELECT 1 FROM ballast_failover_entries e \
                 WHERE e.queue = ballast_failover_diverts.queue AND e.part_key = ballast_failover_diverts.part_key) \
             AND NOT EXISTS (SELECT 1 FROM ballast_failover_dead_letters x \
                 WHERE x.queue = ballast_failover_diverts.queue AND x.part_key = ballast_failover_diverts.part_key)",
        )
        .bind(&self.queue)
        .bind(token)
        .bind(key)
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
        self.release_partition(tx, token, key).await
    }

    /// Clears the divert marks of `keys` that hold nothing and are not leased (after a
    /// purge), in an open transaction. The mark's row is locked first, so an enqueue
    /// either committed before (its entry is seen) or waits for this one. The marks are
    /// taken in key order, as every transaction that locks marks takes them.
    async fn clear_idle(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        keys: &[String],
    ) -> Result<(), QueueError> {
        let lock = if self.postgres { " FOR UPDATE" } else { "" };
        let keys: std::collections::BTreeSet<&String> = keys.iter().collect();
        for key in keys {
            let sql = sqlx::AssertSqlSafe(format!(
                "SELECT gen FROM ballast_failover_diverts WHERE queue = $1 AND part_key = $2{lock}"
            ));
            let locked = sqlx::query(sql)
                .bind(&self.queue)
                .bind(key.as_str())
                .fetch_optional(&mut **tx)
                .await
                .map_err(unavailable)?;
            if locked.is_none() {
                continue;
            }
            sqlx::query(
                "DELETE FROM ballast_failover_diverts WHERE queue = $1 AND part_key = $2 AND leased_until <= $3 \
                 AND NOT EXISTS (SELECT 1 FROM ballast_failover_entries e WHERE e.queue = $1 AND e.part_key = $2) \
                 AND NOT EXISTS (SELECT 1 FROM ballast_failover_dead_letters x WHERE x.queue = $1 AND x.part_key = $2)",
            )
            .bind(&self.queue)
            .bind(key.as_str())
            .bind(now_ms())
            .execute(&mut **tx)
            .await
            .map_err(unavailable)?;
        }
        Ok(())
    }

    /// Deletes leased entries, by lease token, in one transaction.
    async fn delete_leased(
        &self,
        by_lease: &[(&str, Vec<i64>)],
        ordered: &[(&str, &str)],
    ) -> Result<(), QueueError> {
        let mut tx = self.write_tx().await?;
        for (token, ids) in by_lease {
            for chunk in ids.chunks(500) {
                let marks: Vec<String> = (2..chunk.len() + 2).map(|i| format!("${i}")).collect();
                // Only placeholders are spliced in; every value is bound.
                // An ordered entry goes only while its partition is still leased under
                // this token: a lease that ran out under a slow worker, and that another
                // worker took, leaves its entries to be written again after the new run.
                let sql = sqlx::AssertSqlSafe(format!(
                    "DELETE FROM ballast_failover_entries WHERE lease_token = $1 AND id IN ({}) \
                     AND (part_key IS NULL OR EXISTS (SELECT 1 FROM ballast_failover_diverts d \
                         WHERE d.queue = ballast_failover_entries.queue \
                         AND d.part_key = ballast_failover_entries.part_key AND d.lease_token = $1))",
                    marks.join(",")
                ));
                let mut q = sqlx::query(sql).bind(*token);
                for id in chunk {
                    q = q.bind(*id);
                }
                q.execute(&mut *tx).await.map_err(unavailable)?;
            }
        }
        // Marks in key order, as every transaction that locks them takes them.
        let mut ordered = ordered.to_vec();
        ordered.sort_unstable_by_key(|(_, key)| *key);
        for (token, key) in ordered {
            self.clear_partition(&mut tx, token, key).await?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn retry_entry(
        &self,
        entry: &Leased,
        new_body: Option<Vec<u8>>,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let Some((id, token)) = Self::parse_receipt(&entry.receipt) else {
            return Err(QueueError::Invalid(format!(
                "bad receipt {:?}",
                entry.receipt
            )));
        };
        let visible = now_ms() + delay.as_millis() as i64;
        let body = new_body.unwrap_or_else(|| entry.body.clone());
        let last_error = envelope::decode(&body)
            .map(|e| e.last_error)
            .unwrap_or_default();
        let update = sqlx::query(
            "UPDATE ballast_failover_entries SET visible_at = $1, body = $2, last_error = $3, lease_token = NULL \
             WHERE id = $4 AND lease_token = $5",
        )
        .bind(visible)
        .bind(body.as_slice())
        .bind(last_error)
        .bind(id)
        .bind(token);
        if entry.order.is_none() {
            update.execute(&self.pool).await.map_err(unavailable)?;
            return Ok(());
        }
        // A run's entry goes back with its partition: the partition's head is still the
        // run's first entry, which is not visible before its own delay.
        let mut tx = self.write_tx().await?;
        update.execute(&mut *tx).await.map_err(unavailable)?;
        if let Some(key) = &entry.order {
            self.release_partition(&mut tx, token, key).await?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn dead_letter_entry(&self, entry: &Leased, info: &DeadInfo) -> Result<(), QueueError> {
        let Some((id, token)) = Self::parse_receipt(&entry.receipt) else {
            return Err(QueueError::Invalid(format!(
                "bad receipt {:?}",
                entry.receipt
            )));
        };
        let mut tx = self.write_tx().await?;
        let deleted =
            sqlx::query("DELETE FROM ballast_failover_entries WHERE id = $1 AND lease_token = $2")
                .bind(id)
                .bind(token)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        if deleted.rows_affected() == 1 {
            sqlx::query(
                "INSERT INTO ballast_failover_dead_letters \
                 (queue, body, topic, message_id, attempts, reason, first_failed_at, dead_at, part_key, entry_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(&self.queue)
            .bind(entry.body.as_slice())
            .bind(&info.topic)
            .bind(&info.message_id)
            .bind(info.attempts as i64)
            .bind(&info.reason)
            .bind(info.first_failed_at_unix_ms)
            .bind(now_ms())
            .bind(entry.order.clone())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        // An ordered partition stays diverted, its drain stopped at the dead letter.
        if let Some(key) = &entry.order {
            self.release_partition(&mut tx, token, key).await?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn read_stats(&self) -> Result<QueueStats, QueueError> {
        let now = now_ms();
        let row = sqlx::query(
            "SELECT COUNT(*) AS depth, COALESCE(MIN(enqueued_at), 0) AS oldest, \
             COALESCE(SUM(CASE WHEN lease_token IS NOT NULL AND visible_at > $1 THEN 1 ELSE 0 END), 0) AS in_flight, \
             COALESCE(SUM(CASE WHEN deliveries > 1 THEN 1 ELSE 0 END), 0) AS redelivered \
             FROM ballast_failover_entries WHERE queue = $2",
        )
        .bind(now)
        .bind(&self.queue)
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        let dead = sqlx::query(
            "SELECT COUNT(*) AS n, COALESCE(MIN(dead_at), 0) AS oldest \
             FROM ballast_failover_dead_letters WHERE queue = $1",
        )
        .bind(&self.queue)
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        let get = |r: &AnyRow, c: &str| r.try_get::<i64, _>(c).map_err(unavailable);
        let age = |n: u64, oldest: i64| {
            Some(if n > 0 {
                (now - oldest).max(0) as u64
            } else {
                0
            })
        };
        let depth = get(&row, "depth")? as u64;
        let dead_letters = get(&dead, "n")? as u64;
        Ok(QueueStats {
            depth,
            oldest_age_ms: age(depth, get(&row, "oldest")?),
            in_flight: get(&row, "in_flight")? as u64,
            redelivered: get(&row, "redelivered")? as u64,
            dead_letters,
            dead_letter_oldest_age_ms: age(dead_letters, get(&dead, "oldest")?),
            // The tables keep an entry until it is deleted.
            retention: None,
            dead_letter_retention: None,
        })
    }

    async fn dead_letter_page(
        &self,
        page_size: usize,
        page_token: &str,
    ) -> Result<(Vec<DeadLetter>, String), QueueError> {
        let after: i64 = if page_token.is_empty() {
            0
        } else {
            page_token
                .parse()
                .map_err(|_| QueueError::Invalid(format!("bad page token {page_token:?}")))?
        };
        let size = page_size.clamp(1, 1000);
        let rows = sqlx::query(
            "SELECT id, topic, message_id, attempts, reason, first_failed_at, dead_at, \
             CAST(LENGTH(body) AS BIGINT) AS body_len \
             FROM ballast_failover_dead_letters WHERE queue = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(&self.queue)
        .bind(after)
        .bind(size as i64 + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let mut out = rows
            .iter()
            .map(Self::dead_letter_from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)?;
        let next = if out.len() > size {
            out.truncate(size);
            out.last().map(|d| d.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok((out, next))
    }

    fn parse_receipt(receipt: &str) -> Option<(i64, &str)> {
        let (id, token) = receipt.split_once(':')?;
        Some((id.parse().ok()?, token))
    }

    fn dead_letter_from_row(row: &AnyRow) -> Result<DeadLetter, sqlx::Error> {
        Ok(DeadLetter {
            id: row.try_get::<i64, _>("id")?.to_string(),
            info: DeadInfo {
                topic: row.try_get("topic")?,
                message_id: row.try_get("message_id")?,
                attempts: row.try_get::<i64, _>("attempts")? as u32,
                reason: row.try_get("reason")?,
                first_failed_at_unix_ms: row.try_get("first_failed_at")?,
            },
            dead_at_unix_ms: row.try_get("dead_at")?,
            body_bytes: row.try_get::<i64, _>("body_len")? as usize,
        })
    }

    /// Moves dead letters back to the queue in one transaction: the given ids, or the next
    /// `REDRIVE_PAGE` with ids above `after`. Returns how many moved and the last id.
    async fn redrive_rows(
        &self,
        ids: Option<&[i64]>,
        after: i64,
    ) -> Result<(u64, i64), QueueError> {
        let mut tx = self.write_tx().await?;
        let rows = match ids {
            None => sqlx::query(
                "SELECT id, body, part_key, entry_id FROM ballast_failover_dead_letters WHERE queue = $1 AND id > $2 \
                 ORDER BY id LIMIT $3",
            )
            .bind(&self.queue)
            .bind(after)
            .bind(REDRIVE_PAGE)
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?,
            Some(ids) => {
                let mut rows = Vec::new();
                for id in ids {
                    rows.extend(
                        sqlx::query("SELECT id, body, part_key, entry_id FROM ballast_failover_dead_letters WHERE queue = $1 AND id = $2")
                            .bind(&self.queue)
                            .bind(*id)
                            .fetch_all(&mut *tx)
                            .await
                            .map_err(unavailable)?,
                    );
                }
                rows
            }
        };
        let now = now_ms();
        let mut last = after;
        // The redriven ordered entries' partitions, marked after their rows in key order.
        let mut marked = std::collections::BTreeSet::new();
        for row in &rows {
            let id: i64 = row.try_get("id").map_err(unavailable)?;
            last = last.max(id);
            let body: Vec<u8> = row.try_get("body").map_err(unavailable)?;
            // A fresh start: attempts reset, the history kept in last_error.
            let body = match envelope::decode(&body) {
                Ok(mut env) => {
                    env.attempt = 0;
                    envelope::encode(&env)
                }
                Err(_) => body,
            };
            let part_key: Option<String> = row.try_get("part_key").map_err(unavailable)?;
            let entry_id: Option<i64> = row.try_get("entry_id").map_err(unavailable)?;
            match (part_key, entry_id) {
                // An ordered entry goes back under its own id: at its place, the head of
                // its partition, which its mark kept diverted meanwhile.
                (Some(key), Some(entry_id)) => {
                    sqlx::query(
                        "INSERT INTO ballast_failover_entries (id, queue, body, enqueued_at, visible_at, deliveries, part_key) \
                         VALUES ($1, $2, $3, $4, $4, 0, $5)",
                    )
                    .bind(entry_id)
                    .bind(&self.queue)
                    .bind(body.as_slice())
                    .bind(now)
                    .bind(key.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                    marked.insert(key);
                }
                _ => {
                    sqlx::query(
                        "INSERT INTO ballast_failover_entries (queue, body, enqueued_at, visible_at, deliveries) \
                         VALUES ($1, $2, $3, $3, 0)",
                    )
                    .bind(&self.queue)
                    .bind(body.as_slice())
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                }
            }
            sqlx::query("DELETE FROM ballast_failover_dead_letters WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        for key in &marked {
            self.mark_diverted(&mut tx, key).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok((rows.len() as u64, last))
    }

    fn id_list(ids: &[String]) -> Result<Vec<i64>, QueueError> {
        ids.iter()
            .map(|i| {
                i.parse::<i64>()
                    .map_err(|_| QueueError::Invalid(format!("bad dead-letter id {i:?}")))
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl FailoverQueue for SqlQueue {
    fn backend(&self) -> &'static str {
        if self.postgres {
            "postgres"
        } else {
            "sqlite"
        }
    }

    fn queue(&self) -> &str {
        &self.queue
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }

    async fn enqueue(
        &self,
        bodies: &[Vec<u8>],
        delay: Duration,
    ) -> Result<Vec<String>, QueueError> {
        self.enqueue_ordered(bodies, &vec![None; bodies.len()], delay)
            .await
            .map(|stored| stored.ids)
    }

    fn keeps_order(&self) -> bool {
        true
    }

    async fn diverted(&self) -> Result<Vec<(String, i64)>, QueueError> {
        let read = sqlx::query_as::<_, (String, i64)>(
            "SELECT part_key, epoch FROM ballast_failover_diverts WHERE queue = $1",
        )
        .bind(&self.queue)
        .fetch_all(&self.pool);
        self.bound("a divert read", async { read.await.map_err(unavailable) })
            .await
    }

    async fn enqueue_ordered(
        &self,
        bodies: &[Vec<u8>],
        order: &[Option<String>],
        delay: Duration,
    ) -> Result<OrderedIds, QueueError> {
        if order.len() != bodies.len() {
            return Err(QueueError::Invalid(format!(
                "{} bodies with {} ordering keys",
                bodies.len(),
                order.len()
            )));
        }
        if bodies.is_empty() {
            return Ok(OrderedIds::default());
        }
        let now = now_ms();
        let visible = now + delay.as_millis() as i64;
        let deadline = tokio::time::Instant::now() + self.write_timeout;
        let bound = self.write_timeout;
        // Until COMMIT is sent, a call cut short leaves nothing: the transaction dies with
        // its connection. Once it is sent, only the answer says whether the rows are kept.
        let (tx, stored) = crate::queue::bounded(
            deadline,
            "the failover database",
            bound,
            false,
            self.insert(bodies, order, now, visible),
        )
        .await?;
        crate::queue::bounded(
            deadline,
            "the failover database's commit",
            bound,
            true,
            async {
                tx.commit().await.map_err(|e| match e {
                    // The server answered: it refused the commit, and kept nothing.
                    sqlx::Error::Database(_) => unavailable(e),
                    // The connection failed with COMMIT sent: either outcome is possible.
                    e => QueueError::Ambiguous(format!("commit: {e}")),
                })
            },
        )
        .await?;
        Ok(stored)
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        lease: Duration,
    ) -> Result<Vec<Leased>, QueueError> {
        let end = tokio::time::Instant::now() + wait;
        let max = max.max(1);
        loop {
            let now = now_ms();
            let token = uuid::Uuid::now_v7().simple().to_string();
            let lease_end = now + lease.as_millis() as i64;
            let rows = self
                .bound("a receive", self.lease_some(max, now, lease_end, &token))
                .await?;
            if !rows.is_empty() || tokio::time::Instant::now() >= end {
                let mut out = rows
                    .iter()
                    .map(|r| {
                        let id: i64 = r.try_get("id")?;
                        Ok(Leased {
                            entry_id: id.to_string(),
                            receipt: format!("{id}:{token}"),
                            body: r.try_get("body")?,
                            deliveries: r.try_get::<i64, _>("deliveries")? as u32,
                            enqueued_at_unix_ms: r.try_get("enqueued_at")?,
                            offloaded: None,
                            order: r.try_get("part_key")?,
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
                    .map_err(unavailable)?;
                out.sort_by_key(|l| l.entry_id.parse::<i64>().unwrap_or(0));
                return Ok(out);
            }
            tokio::time::sleep(POLL.min(end - tokio::time::Instant::now())).await;
        }
    }

    /// Deletes in bulk: one statement per lease (a receive leases its batch under one
    /// token) and per 500 ids, in one transaction.
    async fn ack(&self, entries: &[Leased]) -> Result<(), QueueError> {
        let mut by_lease: Vec<(&str, Vec<i64>)> = Vec::new();
        for e in entries {
            let Some((id, token)) = Self::parse_receipt(&e.receipt) else {
                continue;
            };
            match by_lease.iter_mut().find(|(t, _)| *t == token) {
                Some((_, ids)) => ids.push(id),
                None => by_lease.push((token, vec![id])),
            }
        }
        if by_lease.is_empty() {
            return Ok(());
        }
        let mut ordered: Vec<(&str, &str)> = Vec::new();
        for e in entries {
            if let (Some(key), Some((_, token))) = (&e.order, Self::parse_receipt(&e.receipt)) {
                if !ordered.contains(&(token, key.as_str())) {
                    ordered.push((token, key));
                }
            }
        }
        self.bound("an ack", self.delete_leased(&by_lease, &ordered))
            .await
    }

    async fn retry_later(
        &self,
        entry: &Leased,
        new_body: Option<Vec<u8>>,
        delay: Duration,
    ) -> Result<(), QueueError> {
        self.bound("a retry", self.retry_entry(entry, new_body, delay))
            .await
    }

    async fn dead_letter(&self, entry: &Leased, info: &DeadInfo) -> Result<(), QueueError> {
        self.bound("a dead letter", self.dead_letter_entry(entry, info))
            .await
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        self.bound("a stats query", self.read_stats()).await
    }

    async fn list_dead_letters(
        &self,
        page_size: usize,
        page_token: &str,
    ) -> Result<(Vec<DeadLetter>, String), QueueError> {
        self.bound(
            "a dead-letter listing",
            self.dead_letter_page(page_size, page_token),
        )
        .await
    }

    async fn redrive(&self, ids: &[String], all: bool) -> Result<u64, QueueError> {
        if !all {
            let ids = Self::id_list(ids)?;
            return self
                .bound("a redrive", self.redrive_rows(Some(&ids), 0))
                .await
                .map(|(n, _)| n);
        }
        // Every dead letter, a page at a time: memory stays bounded by one page however
        // large the store is, and each page moves in its own transaction.
        let (mut total, mut after) = (0, 0);
        loop {
            let (n, last) = self
                .bound("a redrive", self.redrive_rows(None, after))
                .await?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
            after = last;
        }
    }

    /// Deletes dead letters; an ordered partition whose dead letter is skipped this way
    /// drains on, and its mark goes when the partition holds nothing more.
    async fn purge(&self, ids: &[String], all: bool) -> Result<u64, QueueError> {
        let ids = if all { None } else { Some(Self::id_list(ids)?) };
        self.bound("a purge", self.purge_rows(ids.as_deref())).await
    }
}

impl SqlQueue {
    async fn purge_rows(&self, ids: Option<&[i64]>) -> Result<u64, QueueError> {
        let mut tx = self.write_tx().await?;
        let mut keys: Vec<String> = Vec::new();
        let mut n = 0;
        match ids {
            None => {
                keys = sqlx::query_scalar(
                    "SELECT DISTINCT part_key FROM ballast_failover_dead_letters \
                     WHERE queue = $1 AND part_key IS NOT NULL",
                )
                .bind(&self.queue)
                .fetch_all(&mut *tx)
                .await
                .map_err(unavailable)?;
                n = sqlx::query("DELETE FROM ballast_failover_dead_letters WHERE queue = $1")
                    .bind(&self.queue)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?
                    .rows_affected();
            }
            Some(ids) => {
                for id in ids {
                    let key: Option<Option<String>> = sqlx::query_scalar(
                        "SELECT part_key FROM ballast_failover_dead_letters WHERE queue = $1 AND id = $2",
                    )
                    .bind(&self.queue)
                    .bind(*id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                    if let Some(Some(key)) = key {
                        if !keys.contains(&key) {
                            keys.push(key);
                        }
                    }
                    n += sqlx::query(
                        "DELETE FROM ballast_failover_dead_letters WHERE queue = $1 AND id = $2",
                    )
                    .bind(&self.queue)
                    .bind(*id)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?
                    .rows_affected();
                }
            }
        }
        self.clear_idle(&mut tx, &keys).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(n)
    }

    /// Leases up to `max` entries. With no ordered partition free to lease (one cheap
    /// read), that is one statement over the unordered entries. Otherwise unordered
    /// entries get the first half of the batch, ordered runs the rest, and unordered
    /// entries any room left, so neither kind starves the other.
    async fn lease_some(
        &self,
        max: usize,
        now: i64,
        lease_end: i64,
        token: &str,
    ) -> Result<Vec<AnyRow>, QueueError> {
        let free: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM ballast_failover_diverts WHERE queue = $1 AND leased_until <= $2 LIMIT 1",
        )
        .bind(&self.queue)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        if free.is_none() {
            return self.lease_unordered(max, now, lease_end, token).await;
        }
        let first = max - max / 2;
        let mut rows = self.lease_unordered(first, now, lease_end, token).await?;
        let more = rows.len() == first;
        rows.extend(
            self.lease_runs(max - rows.len(), now, lease_end, token)
                .await?,
        );
        if more && rows.len() < max {
            rows.extend(
                self.lease_unordered(max - rows.len(), now, lease_end, token)
                    .await?,
            );
        }
        Ok(rows)
    }

    /// Leases the head runs of ordered partitions, up to `max` entries in all, in one
    /// transaction. A partition qualifies when its lease is free, its first entry is
    /// visible and it has no dead letter; its mark's row is the lock (skipped when another
    /// receive holds it), and the generation leased is the one a clear must still find.
    async fn lease_runs(
        &self,
        max: usize,
        now: i64,
        lease_end: i64,
        token: &str,
    ) -> Result<Vec<AnyRow>, QueueError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut tx = self.write_tx().await?;
        let lock = if self.postgres {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT d.part_key FROM ballast_failover_diverts d \
             WHERE d.queue = $1 AND d.leased_until <= $2 \
             AND NOT EXISTS (SELECT 1 FROM ballast_failover_dead_letters x \
                 WHERE x.queue = d.queue AND x.part_key = d.part_key) \
             AND (SELECT e.visible_at FROM ballast_failover_entries e \
                 WHERE e.queue = d.queue AND e.part_key = d.part_key ORDER BY e.id LIMIT 1) <= $2 \
             ORDER BY random() LIMIT $3{lock}"
        ));
        let keys: Vec<String> = sqlx::query_scalar(sql)
            .bind(&self.queue)
            .bind(now)
            .bind(max as i64)
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
        let mut rows = Vec::new();
        for key in keys {
            if rows.len() >= max {
                break;
            }
            sqlx::query(
                "UPDATE ballast_failover_diverts SET leased_until = $1, lease_token = $2, lease_gen = gen \
                 WHERE queue = $3 AND part_key = $4",
            )
            .bind(lease_end)
            .bind(token)
            .bind(&self.queue)
            .bind(key.as_str())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
            let run = sqlx::query(
                "UPDATE ballast_failover_entries SET visible_at = $1, deliveries = deliveries + 1, lease_token = $2 \
                 WHERE id IN (SELECT id FROM ballast_failover_entries WHERE queue = $3 AND part_key = $4 \
                 ORDER BY id LIMIT $5) \
                 RETURNING id, body, deliveries, enqueued_at, part_key",
            )
            .bind(lease_end)
            .bind(token)
            .bind(&self.queue)
            .bind(key.as_str())
            .bind((max - rows.len()) as i64)
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
            rows.extend(run);
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(rows)
    }

    /// Leases up to `max` visible unordered entries: due first, in enqueue order among
    /// equals, a range scan of the ready index (queue, visible_at, id; unordered entries
    /// only) that stops at `max`, however many entries wait for a later retry or their
    /// partition's turn.
    async fn lease_unordered(
        &self,
        max: usize,
        now: i64,
        lease_end: i64,
        token: &str,
    ) -> Result<Vec<AnyRow>, QueueError> {
        let sql = if self.postgres {
            "UPDATE ballast_failover_entries SET visible_at = $1, deliveries = deliveries + 1, lease_token = $2 \
             WHERE id IN (SELECT id FROM ballast_failover_entries WHERE queue = $3 AND visible_at <= $4 \
             AND part_key IS NULL ORDER BY visible_at, id LIMIT $5 FOR UPDATE SKIP LOCKED) \
             RETURNING id, body, deliveries, enqueued_at, part_key"
        } else {
            "UPDATE ballast_failover_entries SET visible_at = $1, deliveries = deliveries + 1, lease_token = $2 \
             WHERE id IN (SELECT id FROM ballast_failover_entries WHERE queue = $3 AND visible_at <= $4 \
             AND part_key IS NULL ORDER BY visible_at, id LIMIT $5) \
             RETURNING id, body, deliveries, enqueued_at, part_key"
        };
        sqlx::query(sql)
            .bind(lease_end)
            .bind(token)
            .bind(&self.queue)
            .bind(now)
            .bind(max as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_sqlite_queue_syncs_every_commit() {
        let dir = std::env::temp_dir().join(format!("ballast-sync-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("q.db").display());
        let q = SqlQueue::connect(&url, "t", 2).await.unwrap();
        let (level,): (i64,) = sqlx::query_as("PRAGMA synchronous")
            .fetch_one(&q.pool)
            .await
            .unwrap();
        assert_eq!(level, 2, "synchronous = FULL is 2");
        std::fs::remove_dir_all(&dir).ok();
    }
}
