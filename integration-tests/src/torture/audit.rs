//! After the load: the failover queue drains, the consumer group catches up, and then
//! every invariant is checked and the run is written up per fault kind.

use super::faults::{Episode, Kind};
use super::load::{key, record_number, value, Ledger, Outcome};
use super::report::{KindRow, TortureReport};
use super::system::{System, GROUP, TOPIC};
use crate::demo::percentile;
use crate::demo::report::Sample;
use ballast_kafka::Landed;
use ballast_proto::dedup::v1 as dpb;
use ballast_proto::dedup::v1::dedup_client::DedupClient;
use ballast_proto::retry::v1 as rpb;
use ballast_proto::retry::v1::retry_admin_client::RetryAdminClient;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// Waits for the failover queue to drain and the group to process everything in Kafka;
/// returns what Kafka holds.
pub async fn settle(sys: &mut System, timeout: Duration) -> anyhow::Result<Vec<Landed>> {
    let end = Instant::now() + timeout;
    let mut last = u64::MAX;
    loop {
        sys.supervise().await?;
        let depth = match RetryAdminClient::connect(format!("http://{}", sys.workers[0])).await {
            Ok(mut c) => c
                .stats(rpb::StatsRequest {})
                .await
                .ok()
                .map(|s| s.into_inner().depth),
            Err(_) => None,
        };
        if depth == Some(0) {
            break;
        }
        if depth.is_some_and(|d| d != last) {
            eprintln!(
                "torture: failover queue depth {}",
                depth.unwrap_or_default()
            );
            last = depth.unwrap_or_default();
        }
        anyhow::ensure!(
            Instant::now() < end,
            "the failover queue still holds {depth:?} records after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let bootstrap = sys.bootstrap.clone();
    eprintln!("torture: reading the topic back from kafka");
    let read_for = end.saturating_duration_since(Instant::now());
    let landed = tokio::task::spawn_blocking(move || {
        ballast_kafka::read_topic(&bootstrap, TOPIC, None, read_for)
    })
    .await??;
    // The mock keeps at most 5 MiB per partition and drops the oldest records past that;
    // a partition that no longer starts at offset 0 cannot be audited.
    let mut first: HashMap<i32, i64> = HashMap::new();
    for l in &landed {
        let f = first.entry(l.partition).or_insert(l.offset);
        *f = (*f).min(l.offset);
    }
    let evicted: Vec<i32> = first
        .iter()
        .filter(|(_, o)| **o > 0)
        .map(|(p, _)| *p)
        .collect();
    anyhow::ensure!(
        evicted.is_empty(),
        "the mock cluster dropped the oldest records of partitions {evicted:?} (it keeps 5 MiB per partition); run with more --partitions"
    );
    let in_kafka: HashSet<&str> = landed
        .iter()
        .filter_map(|l| l.message_id.as_deref())
        .collect();
    eprintln!(
        "torture: kafka holds {} records, {} unique ids; waiting for the consumer group",
        landed.len(),
        in_kafka.len()
    );
    let mut dedup = DedupClient::connect(format!("http://{}", sys.dedup)).await?;
    let mut shown = usize::MAX;
    loop {
        sys.supervise().await?;
        let processed: HashSet<String> = sys.consumer_logs("processed")?.into_iter().collect();
        let mut missing: Vec<&str> = in_kafka
            .iter()
            .filter(|id| !processed.contains(**id))
            .copied()
            .collect();
        if missing.len() <= 2000 && !missing.is_empty() {
            // Committed by a consumer killed before it logged the id: DONE in dedup.
            let done = done_in_dedup(&mut dedup, &missing)
                .await
                .unwrap_or_default();
            missing.retain(|id| !done.contains(*id));
        }
        if missing.is_empty() {
            break;
        }
        if missing.len() != shown {
            eprintln!("torture: {} ids in kafka not yet processed", missing.len());
            shown = missing.len();
        }
        anyhow::ensure!(
            Instant::now() < end,
            "{} ids in kafka were not processed within {timeout:?}, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(landed)
}

async fn done_in_dedup(
    dedup: &mut DedupClient<tonic::transport::Channel>,
    ids: &[&str],
) -> anyhow::Result<HashSet<String>> {
    let mut done = HashSet::new();
    for chunk in ids.chunks(500) {
        let r = dedup
            .check(dpb::CheckRequest {
                group: GROUP.into(),
                ids: chunk.iter().map(|s| s.to_string()).collect(),
            })
            .await?
            .into_inner();
        done.extend(
            r.results
                .into_iter()
                .filter(|c| c.state == dpb::ClaimState::Done as i32)
                .map(|c| c.id),
        );
    }
    Ok(done)
}

/// Every dead letter the failover queue holds, a page at a time.
async fn dead_letters(sys: &System) -> anyhow::Result<Vec<rpb::DeadLetter>> {
    let mut admin = RetryAdminClient::connect(format!("http://{}", sys.workers[0])).await?;
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_dead_letters(rpb::ListDeadLettersRequest {
                page_size: 100,
                page_token,
            })
            .await?
            .into_inner();
        all.extend(page.dead_letters);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        page_token = page.next_page_token;
    }
}

#[derive(Debug, Default)]
struct Row {
    sent: usize,
    kafka: usize,
    failover: usize,
    given_up: usize,
    retryable: usize,
    ack_ms: Vec<f64>,
    dup_kafka: usize,
    dup_skipped: usize,
}

pub async fn check(
    sys: &System,
    ledger: &Ledger,
    landed: &[Landed],
    episodes: &[Episode],
    samples: &[Sample],
    end: f64,
    report: &std::path::Path,
) -> anyhow::Result<()> {
    let seed = ledger.seed;
    // The load is over: the ledger is read without holding its lock across awaits.
    let entries = std::mem::take(&mut *ledger.entries.lock().expect("ledger lock"));
    let mut copies: HashMap<&str, Vec<&Landed>> = HashMap::new();
    for l in landed {
        if let Some(id) = &l.message_id {
            copies.entry(id.as_str()).or_default().push(l);
        }
    }
    let by_place: HashMap<(i32, i64), &Landed> = landed
        .iter()
        .map(|l| ((l.partition, l.offset), l))
        .collect();
    let processed = sys.consumer_logs("processed")?;
    let skipped = sys.consumer_logs("duplicates")?;
    let mut processed_count: HashMap<&str, usize> = HashMap::new();
    for id in &processed {
        *processed_count.entry(id.as_str()).or_default() += 1;
    }
    let mut dedup = DedupClient::connect(format!("http://{}", sys.dedup)).await?;
    let dead = dead_letters(sys).await?;
    let bootstrap = sys.bootstrap.clone();
    let compact_landed = tokio::task::spawn_blocking(move || {
        ballast_kafka::read_topic(
            &bootstrap,
            super::compact::TOPIC,
            None,
            Duration::from_secs(60),
        )
    })
    .await??;
    let compact_ledger = &*ledger.compact;
    let compacted = &super::compact::check(compact_ledger, &compact_landed);

    let mut violations: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut flag =
        |what: &'static str, detail: String| violations.entry(what).or_default().push(detail);
    // A compacted key whose last value in Kafka is stale: ordered failover let a later
    // value overtake an earlier one.
    for stale in &compacted.stale {
        flag(
            "compacted: last value in kafka is not the last acknowledged",
            stale.clone(),
        );
    }
    // Every record was acknowledged, and the faults must not use up a record's attempts:
    // a dead letter is a record that did not reach Kafka.
    for d in &dead {
        flag(
            "dead-lettered",
            format!(
                "{} after {} attempts: {}",
                d.message_id, d.attempts, d.reason
            ),
        );
    }
    // 2 and 3: processed ids were sent; none twice.
    for (id, n) in &processed_count {
        if record_number(seed, id).is_none_or(|i| i >= entries.len()) {
            flag("processed but never sent", id.to_string());
        }
        if *n > 1 {
            flag("processed twice in the group", format!("{id} x{n}"));
        }
    }
    // 1, 4 and 5, record by record.
    let mut unlogged = Vec::new();
    let mut rows: BTreeMap<Kind, Row> = BTreeMap::new();
    let mut total = Row::default();
    for (n, e) in entries.iter().enumerate() {
        let id = ledger.id(n);
        let row = rows.entry(Kind::from_index(e.fault)).or_default();
        let found = copies
            .get(id.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let in_kafka = found.len();
        // Every copy, however it got there (first attempt, reroute, failover), carries
        // the record's value, and a STRICT key's copies sit on its murmur2 partition.
        if found.iter().any(|l| l.value != value(n)) {
            flag("in kafka with another value", id.clone());
        }
        if let Some((k, ballast_proto::ingest::v1::KeyPolicy::Strict)) = key(n) {
            let home = ballast_balancer::partition_for_key(k.as_bytes(), sys.partitions as usize);
            if let Some(l) = found.iter().find(|l| l.partition != home) {
                flag(
                    "a strict key off its partition",
                    format!("{id} on {} not {home}", l.partition),
                );
            }
        }
        for r in [&mut *row, &mut total] {
            r.sent += 1;
            r.retryable += e.retryable_errors as usize;
            r.dup_kafka += in_kafka.saturating_sub(1);
        }
        if e.extra_outcomes > 0 {
            flag(
                "more than one final outcome",
                format!("{id} +{}", e.extra_outcomes),
            );
        }
        let acked = match e.outcome {
            None => {
                flag("no final outcome", id.clone());
                false
            }
            Some(Outcome::Kafka { partition, offset }) => {
                row.kafka += 1;
                total.kafka += 1;
                let ok = by_place.get(&(partition, offset)).is_some_and(|l| {
                    l.message_id.as_deref() == Some(id.as_str()) && l.value == value(n)
                });
                if !ok {
                    flag(
                        "acknowledged by kafka but not there",
                        format!("{id} at {partition}/{offset}"),
                    );
                }
                true
            }
            Some(Outcome::Failover) => {
                row.failover += 1;
                total.failover += 1;
                if in_kafka == 0 {
                    flag("acknowledged via failover but not in kafka", id.clone());
                }
                true
            }
            Some(outcome @ (Outcome::GivenUp | Outcome::Refused)) => {
                row.given_up += 1;
                total.given_up += 1;
                // A healthy system acknowledges every record within the client's sends: a
                // gateway answering everything with a retryable error keeps every other
                // invariant, and fails this one.
                if outcome == Outcome::GivenUp {
                    flag("given up after every send", id.clone());
                }
                false
            }
        };
        if acked {
            row.ack_ms.push(e.ack_ms);
            total.ack_ms.push(e.ack_ms);
            if !processed_count.contains_key(id.as_str()) {
                unlogged.push(id.clone());
            }
        }
        if matches!(e.outcome, Some(Outcome::Refused)) {
            flag("refused with a non-retryable error", id);
        }
    }
    // Acknowledged ids without a processed line: committed (DONE) by a consumer that was
    // killed before it wrote the line, or a broken invariant.
    let unlogged_refs: Vec<&str> = unlogged.iter().map(String::as_str).collect();
    let done = done_in_dedup(&mut dedup, &unlogged_refs).await?;
    for id in &unlogged {
        if !done.contains(id) {
            flag("acknowledged but never processed", id.clone());
        }
    }
    for id in &skipped {
        if let Some(n) = record_number(seed, id).filter(|n| *n < entries.len()) {
            rows.entry(Kind::from_index(entries[n].fault))
                .or_default()
                .dup_skipped += 1;
            total.dup_skipped += 1;
        }
    }
    drop(entries);

    // The table per fault kind.
    let counts: HashMap<Kind, usize> = episodes.iter().fold(HashMap::new(), |mut m, e| {
        *m.entry(e.kind).or_default() += 1;
        m
    });
    const HEADER: [&str; 10] = [
        "fault",
        "times",
        "sent",
        "acked kafka",
        "acked failover",
        "gave up",
        "retryable errors",
        "p99 ack ms",
        "dup in kafka",
        "dup skipped",
    ];
    let cells = |times: String, r: &Row| {
        vec![
            times,
            r.sent.to_string(),
            r.kafka.to_string(),
            r.failover.to_string(),
            r.given_up.to_string(),
            r.retryable.to_string(),
            format!("{:.0}", percentile(&r.ack_ms, 0.99)),
            r.dup_kafka.to_string(),
            r.dup_skipped.to_string(),
        ]
    };
    let mut kinds: Vec<KindRow> = rows
        .iter()
        .map(|(kind, r)| KindRow {
            kind: kind.label().to_string(),
            cells: cells(
                if *kind == Kind::Calm {
                    "-".into()
                } else {
                    counts.get(kind).copied().unwrap_or(0).to_string()
                },
                r,
            ),
        })
        .collect();
    kinds.push(KindRow {
        kind: "total".into(),
        cells: cells(episodes.len().to_string(), &total),
    });
    println!();
    println!("| {} |", HEADER.join(" | "));
    println!("|{}", "---|".repeat(HEADER.len()));
    for k in &kinds {
        println!("| {} | {} |", k.kind, k.cells.join(" | "));
    }
    let unique = copies.len();
    let totals: Vec<(String, String)> = vec![
        ("seed".into(), seed.to_string()),
        ("records sent".into(), total.sent.to_string()),
        ("acked: kafka".into(), total.kafka.to_string()),
        ("acked: failover".into(), total.failover.to_string()),
        ("given up or refused".into(), total.given_up.to_string()),
        (
            "failover queue: dead letters".into(),
            dead.len().to_string(),
        ),
        ("faults played".into(), episodes.len().to_string()),
        ("kafka: records".into(), landed.len().to_string()),
        ("kafka: unique ids".into(), unique.to_string()),
        ("group: processed".into(), processed.len().to_string()),
        (
            "group: duplicates skipped by dedup".into(),
            skipped.len().to_string(),
        ),
        (
            "group: committed by a consumer killed before its log line".into(),
            done.len().to_string(),
        ),
        (
            "client: transport errors (gateway gone or shedding)".into(),
            ledger
                .transport_errors
                .load(std::sync::atomic::Ordering::Relaxed)
                .to_string(),
        ),
        (
            "client: retryable record errors".into(),
            total.retryable.to_string(),
        ),
        (
            "compacted: writes acked via kafka".into(),
            compact_ledger.acked_kafka.load(Relaxed).to_string(),
        ),
        (
            "compacted: writes acked via failover".into(),
            compact_ledger.acked_failover.load(Relaxed).to_string(),
        ),
        (
            "compacted: writes given up".into(),
            compact_ledger.given_up.load(Relaxed).to_string(),
        ),
        (
            "compacted: keys checked, last value = last acked".into(),
            format!(
                "{} of {}",
                compacted.keys - compacted.stale.len(),
                compacted.keys
            ),
        ),
        (
            "broken invariants".into(),
            violations.values().map(Vec::len).sum::<usize>().to_string(),
        ),
    ];
    println!();
    for (k, v) in &totals {
        println!("{k:<58} {v:>12}");
    }
    let broken: usize = violations.values().map(Vec::len).sum();
    let page = super::report::html(&TortureReport {
        seed,
        header: &HEADER,
        kinds,
        totals,
        faults: episodes
            .iter()
            .map(|e| (e.start, e.end, e.kind.label().to_string(), e.detail.clone()))
            .collect(),
        violations: violations
            .iter()
            .map(|(what, ids)| format!("{what}: {} e.g. {:?}", ids.len(), &ids[..ids.len().min(5)]))
            .collect(),
        samples,
        end,
    });
    std::fs::write(report, page)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", report.display()))?;
    println!("report: {}", report.display());

    if broken > 0 {
        for (what, ids) in &violations {
            eprintln!(
                "torture: BROKEN: {what}: {} e.g. {:?}",
                ids.len(),
                &ids[..ids.len().min(5)]
            );
        }
        anyhow::bail!("{broken} broken invariant(s) with seed {seed}");
    }
    println!(
        "torture: every invariant holds (seed {seed}): every record acknowledged; none dead-lettered; acknowledged => in kafka, with its value, a strict key on its partition; processed => sent; none processed twice; acknowledged => processed; one final outcome per record; every compacted key ends on its last acknowledged value"
    );
    Ok(())
}
