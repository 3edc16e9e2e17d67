//! `ballast-dev torture`: the whole system as separate processes under a seeded schedule of
//! faults, driven by clients that resend with the same message_id, then the delivery
//! invariants checked against what Kafka holds and what the consumer group processed.
//!
//! The run fails, printing its seed, when any invariant is broken:
//! 1. every acknowledged message_id is in Kafka (at the partition and offset of a Kafka
//!    acknowledgement, with its payload);
//! 2. every id the consumer group processed was sent;
//! 3. no id was processed twice in the group;
//! 4. every acknowledged id was processed;
//! 5. every record reached exactly one final outcome at the client (acknowledged, or
//!    given up after a bounded number of sends, counted apart);
//! 6. on the compacted topic, whose keys' values were written one after another, every
//!    key's last value in Kafka is its last acknowledged value.

mod audit;
mod compact;
mod faults;
mod load;
mod report;
mod system;

use faults::{Episode, Kind, Schedule};
use load::{Ledger, LoadConfig};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use system::{Plan, System};

#[derive(Debug, Clone, clap::Args)]
pub struct TortureArgs {
    /// Records to send.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: usize,
    /// The fault schedule's seed; a failing run prints it, and the same seed replays the
    /// same schedule. Default: drawn from the clock.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Records per second offered by all clients together.
    #[arg(long, default_value_t = 8000.0)]
    pub rate: f64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Records per request.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Sends of one record (the first and its retries) before the client gives it up.
    #[arg(long, default_value_t = 60)]
    pub max_sends: u32,
    /// Partitions of the topic. Default: one per 15,000 records, at least 12: the mock
    /// cluster keeps at most 5 MiB per partition and drops older records past that, as
    /// retention would (the run checks that nothing was dropped).
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Consumers in the dedup-guarded group.
    #[arg(long, default_value_t = 2)]
    pub consumers: usize,
    /// How long a fault lasts: MIN..MAX.
    #[arg(long, default_value = "1500ms..4s", value_parser = parse_range)]
    pub hold: (Duration, Duration),
    /// The calm between faults: MIN..MAX.
    #[arg(long, default_value = "500ms..2s", value_parser = parse_range)]
    pub gap: (Duration, Duration),
    /// The failover queue's PostgreSQL (reached through a proxy the harness cuts).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub database_url: String,
    /// How long the retry workers and the consumers get to finish after the load.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub settle_timeout: Duration,
    /// Where processes log and Redis keeps its file; default: a new temp dir.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Where to write the HTML report.
    #[arg(long, default_value = "ballast-torture-report.html")]
    pub report: PathBuf,
}

fn parse_range(s: &str) -> Result<(Duration, Duration), String> {
    let (lo, hi) = s
        .split_once("..")
        .ok_or_else(|| format!("{s}: expected MIN..MAX, e.g. 1s..4s"))?;
    let lo = humantime::parse_duration(lo).map_err(|e| format!("{lo}: {e}"))?;
    let hi = humantime::parse_duration(hi).map_err(|e| format!("{hi}: {e}"))?;
    if lo > hi {
        return Err(format!("{s}: MIN is above MAX"));
    }
    Ok((lo, hi))
}

/// Sleeps for `d`, bringing back dead processes every 250 ms.
async fn idle(sys: &mut System, d: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        sys.supervise().await?;
        tokio::time::sleep(Duration::from_millis(250).min(end - Instant::now())).await;
    }
    Ok(())
}

pub async fn run(args: TortureArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.records > 0, "--records must be positive");
    anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
    anyhow::ensure!(
        args.clients > 0 && args.batch > 0,
        "--clients and --batch must be positive"
    );
    anyhow::ensure!(args.consumers >= 1, "--consumers must be at least 1");
    anyhow::ensure!(
        args.partitions.is_none_or(|p| p >= 1),
        "--partitions must be at least 1"
    );
    anyhow::ensure!(args.max_sends >= 1, "--max-sends must be at least 1");
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64 % 1_000_000_007)
    });
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("ballast-torture-{}-{seed}", std::process::id())),
    };
    eprintln!(
        "torture: seed {seed}, {} records at {} records/s, logs in {}",
        args.records,
        args.rate,
        dir.display()
    );
    let outcome = torture(&args, seed, dir).await;
    if let Err(e) = &outcome {
        eprintln!("torture: FAILED with seed {seed} (replay: ballast-dev torture --records {} --seed {seed}): {e:#}", args.records);
    }
    outcome
}

async fn torture(args: &TortureArgs, seed: u64, dir: PathBuf) -> anyhow::Result<()> {
    let mut sys = System::start(&Plan {
        dir,
        database_url: args.database_url.clone(),
        queue: format!("torture-{seed}-{}", std::process::id()),
        consumers: args.consumers,
        partitions: args
            .partitions
            .unwrap_or_else(|| (args.records / 15_000).clamp(12, 256) as i32),
    })
    .await?;
    eprintln!(
        "torture: up: mock cluster, redis, topology, dedup, 2 gateways (az-a, az-b), 2 retry workers, {} consumers",
        args.consumers
    );

    let ledger = Arc::new(Ledger::new(args.records, seed));
    let next = Arc::new(AtomicUsize::new(0));
    let fault = Arc::new(AtomicU8::new(Kind::Calm.index()));
    let cfg = LoadConfig {
        records: args.records,
        clients: args.clients,
        batch: args.batch,
        rate: args.rate,
        max_sends: args.max_sends,
        request_timeout: Duration::from_secs(15),
    };
    let begin = Instant::now();
    let clients: Vec<_> = (0..args.clients)
        .map(|i| {
            tokio::spawn(load::client(
                i,
                cfg.clone(),
                sys.gateways.clone(),
                ledger.clone(),
                next.clone(),
                fault.clone(),
            ))
        })
        .collect();
    let compact_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..compact::WRITERS)
        .map(|i| {
            tokio::spawn(compact::writer(
                seed,
                i,
                sys.gateways.clone(),
                ledger.compact.clone(),
                compact_stop.clone(),
                args.max_sends,
                cfg.request_timeout,
            ))
        })
        .collect();
    let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sampler = {
        let (ledger, samples) = (ledger.clone(), samples.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                samples
                    .lock()
                    .expect("samples")
                    .push(crate::demo::report::Sample {
                        t: begin.elapsed().as_secs_f64(),
                        kafka: ledger.acked_kafka.load(Ordering::Relaxed),
                        failover: ledger.acked_failover.load(Ordering::Relaxed),
                        rejected: ledger.retryable.load(Ordering::Relaxed),
                        breakers: vec![],
                    });
            }
        })
    };

    let mut sched = Schedule::new(seed, args.hold, args.gap);
    let mut episodes: Vec<Episode> = Vec::new();
    let loaded = |ledger: &Ledger| ledger.finished.load(Ordering::Relaxed) >= args.records;
    while !loaded(&ledger) {
        let gap = sched.duration(sched.gap);
        idle(&mut sys, gap).await?;
        if loaded(&ledger) {
            break;
        }
        let kind = sched.next_kind();
        let hold = sched.duration(sched.hold);
        let start = begin.elapsed().as_secs_f64();
        fault.store(kind.index(), Ordering::Relaxed);
        let (detail, undo) = faults::inject(kind, &mut sys, &mut sched, hold).await?;
        eprintln!(
            "torture: {:>6.1}s {:<22} {detail}  [{} of {} records settled]",
            start,
            kind.label(),
            ledger.finished.load(Ordering::Relaxed),
            args.records
        );
        let remaining = if kind == Kind::SpotNotice {
            hold / 2
        } else {
            hold
        };
        idle(&mut sys, remaining).await?;
        faults::undo(undo, &mut sys).await?;
        fault.store(Kind::Calm.index(), Ordering::Relaxed);
        episodes.push(Episode {
            kind,
            detail,
            start,
            end: begin.elapsed().as_secs_f64(),
        });
    }
    for c in clients {
        c.await?;
    }
    compact_stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await?;
    }
    let load_secs = begin.elapsed().as_secs_f64();
    eprintln!(
        "torture: load done in {load_secs:.1} s after {} faults; settling",
        episodes.len()
    );
    idle(&mut sys, Duration::from_millis(500)).await?;
    let settled = audit::settle(&mut sys, args.settle_timeout).await;
    sampler.abort();
    let samples = samples.lock().expect("samples").clone();
    let end = begin.elapsed().as_secs_f64();
    let result = match settled {
        Ok(landed) => {
            audit::check(
                &sys,
                &ledger,
                &landed,
                &episodes,
                &samples,
                end,
                &args.report,
            )
            .await
        }
        Err(e) => Err(e),
    };
    let restarts: Vec<String> = sys
        .procs
        .values()
        .filter(|p| p.unexpected_exits > 0)
        .map(|p| format!("{} x{}", p.name, p.unexpected_exits))
        .collect();
    if !restarts.is_empty() {
        println!(
            "processes that exited on their own and were restarted: {}",
            restarts.join(", ")
        );
    }
    sys.stop().await;
    result
}
