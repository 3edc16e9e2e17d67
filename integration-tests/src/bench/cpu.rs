//! P8: CPU per MB/s. The gateway runs as its own process, and a bare rdkafka producer
//! (the same librdkafka, acks=all, idempotence, linger 2 ms) runs as another, each writing
//! the same bytes to the same embedded cluster in the same run. Each process's CPU comes
//! from `/proc/<pid>/stat` (user + system, every thread) over the phase; the cost is
//! millicores per MB/s, which is CPU-seconds per MB × 1000 whatever the rate.
//!
//! A third process, `ballast-dev bench-sink` (see `sink.rs`), takes the same load over gRPC
//! and answers without Kafka: the transport's own cost, and with the producer's, the
//! floor under any gRPC front's ratio.

use super::{closed_loop, direct_batch, direct_producer, BenchArgs, BATCH};
use anyhow::Context;
use ballast_proto::ingest::v1 as pb;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Linux reports utime and stime in USER_HZ ticks, 100 per second on every architecture
/// the kernel exports to user space.
const TICKS_PER_SECOND: f64 = 100.0;

/// Record sizes measured, with the records per phase (about 20 MB, 200 MB and 200 MB;
/// `--records` can raise the 1 KiB count, and the others follow its bytes).
const SIZES: [(usize, usize); 3] = [(100, 200_000), (1024, 200_000), (16 * 1024, 12_500)];

#[derive(Debug, Clone, serde::Serialize)]
pub struct CpuRow {
    pub record_bytes: usize,
    pub records: usize,
    pub tls: bool,
    pub gateway_cpu_seconds: f64,
    pub gateway_mb_per_sec: f64,
    pub gateway_millicores_per_mb_per_sec: f64,
    pub producer_cpu_seconds: f64,
    pub producer_mb_per_sec: f64,
    pub producer_millicores_per_mb_per_sec: f64,
    /// gateway ÷ producer millicores per MB/s; the target is ≤ 1.5 at 1 KiB.
    pub ratio: f64,
    /// `ballast-dev bench-sink` with the same load: gRPC in and answers out, no Kafka.
    pub sink_cpu_seconds: f64,
    pub sink_mb_per_sec: f64,
    pub sink_millicores_per_mb_per_sec: f64,
    /// (sink + producer) ÷ producer: the lowest ratio a gateway that receives over gRPC
    /// and writes with this librdkafka could reach here.
    pub floor_ratio: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CpuFigures {
    pub rows: Vec<CpuRow>,
    /// P1 with the gateway and the bare producer each alone on one core (absent on a
    /// machine with one core).
    pub pinned: Option<PinnedRow>,
    /// An idle gateway's cost of keeping metadata fresh, by cluster size.
    pub idle: Vec<IdleRow>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct IdleRow {
    pub topics: usize,
    pub partitions: usize,
    /// Topics the gateway has written to.
    pub topics_in_use: usize,
    pub seconds: f64,
    pub idle_millicores: f64,
    pub metadata_bytes_per_sec: f64,
}

/// CPU seconds `pid` has used so far, all threads, user and system.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat
        .rsplit_once(") ")
        .map(|(_, r)| r)
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line; `rest` starts at field 3.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        fields
            .get(i)
            .context("short /proc stat")?
            .parse::<f64>()
            .context("bad /proc stat field")
    };
    Ok((ticks(11)? + ticks(12)?) / TICKS_PER_SECOND)
}

/// `ballast-dev bench-producer`: the baseline process. Writes `records` records of
/// `record_bytes` to `topic` and prints its own CPU and elapsed time as one JSON line.
#[derive(Debug, clap::Args)]
pub struct ProducerArgs {
    #[arg(long)]
    pub bootstrap: String,
    #[arg(long)]
    pub records: usize,
    #[arg(long)]
    pub record_bytes: usize,
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
}

pub async fn producer_process(args: ProducerArgs) -> anyhow::Result<()> {
    let producer = direct_producer(&args.bootstrap)?;
    let value = Arc::new(vec![b'x'; args.record_bytes]);
    // Connect and learn the topic before the clock starts, as the gateway has.
    direct_batch(producer.clone(), value.clone()).await?;
    let pid = std::process::id();
    let run = measured(
        args.records,
        || cpu_seconds(pid),
        || {
            let (p, v) = (producer.clone(), value.clone());
            closed_loop(args.records.div_ceil(BATCH), args.concurrency, move || {
                direct_batch(p.clone(), v.clone())
            })
        },
    )
    .await?;
    println!("{}", serde_json::to_string(&run)?);
    Ok(())
}

pub async fn cpu_per_mb(args: &BenchArgs) -> anyhow::Result<CpuFigures> {
    let cluster = super::resilience::cluster()?;
    let bootstrap = cluster.bootstrap_servers().to_string();
    let scale = if args.quick { 10 } else { 1 };
    let workers = args.concurrency.max(1);

    let pki_dir = std::env::temp_dir().join(format!("ballast-bench-cpu-{}", std::process::id()));
    let (ca, server) = super::bench_pki(&pki_dir)?;
    let config = format!(
        "rack: az-a\nkafka:\n  bootstrap_servers: {bootstrap}\n  write_timeout: 10s\nlimits:\n  record_deadline: 30s\n"
    );
    let tls_config = format!(
        "{config}tls:\n  cert_file: {}\n  key_file: {}\n",
        server.cert_file.display(),
        server.key_file.display()
    );
    let mut rows = Vec::new();
    // `--records` raises the 1 KiB phase; the others keep its bytes (100 B: its count).
    // Never fewer than the defaults (a tenth with `--quick`): CPU comes in 10 ms ticks,
    // and a shorter phase would measure nothing.
    let count = |bytes: usize, default: usize| {
        let floor = default / scale;
        match args.records {
            Some(n) => (n * 1024 / bytes).min(n).max(floor),
            None => floor,
        }
    };
    let mut cases: Vec<(usize, usize, bool)> = SIZES
        .iter()
        .map(|&(b, n)| (b, count(b, n), false))
        .collect();
    cases.push((1024, count(1024, SIZES[1].1), true));
    for (record_bytes, records, tls) in cases {
        let name = format!(
            "ballast-bench-cpu-{}-{record_bytes}-{tls}",
            std::process::id()
        );
        let ca_file = tls.then_some(ca.ca_file.as_path());
        eprintln!(
            "bench: P8 gateway process, {records} records of {record_bytes} B{}",
            if tls { " over tls" } else { "" }
        );
        let gateway = super::resilience::GatewayProcess::start(
            &name,
            if tls { &tls_config } else { &config },
        )
        .await?;
        let gateway_run = drive(&gateway, args, ca_file, records, record_bytes).await?;
        drop(gateway);

        eprintln!(
            "bench: P8 grpc sink process (no kafka), {records} records of {record_bytes} B{}",
            if tls { " over tls" } else { "" }
        );
        let sink_tls = tls.then_some((server.cert_file.as_path(), server.key_file.as_path()));
        let sink =
            super::resilience::GatewayProcess::start_sink(&format!("{name}-sink"), sink_tls)?;
        let sink_run = drive(&sink, args, ca_file, records, record_bytes).await?;
        drop(sink);

        eprintln!("bench: P8 bare producer process, {records} records of {record_bytes} B");
        let producer_run = bare_producer(&bootstrap, records, record_bytes, workers, None).await?;
        let (gateway, sink, producer) = (
            gateway_run.per_mb(record_bytes),
            sink_run.per_mb(record_bytes),
            producer_run.per_mb(record_bytes),
        );
        rows.push(CpuRow {
            record_bytes,
            records,
            tls,
            gateway_cpu_seconds: gateway_run.cpu_seconds,
            gateway_mb_per_sec: gateway_run.mb_per_sec(record_bytes),
            gateway_millicores_per_mb_per_sec: gateway,
            producer_cpu_seconds: producer_run.cpu_seconds,
            producer_mb_per_sec: producer_run.mb_per_sec(record_bytes),
            producer_millicores_per_mb_per_sec: producer,
            ratio: gateway / producer,
            sink_cpu_seconds: sink_run.cpu_seconds,
            sink_mb_per_sec: sink_run.mb_per_sec(record_bytes),
            sink_millicores_per_mb_per_sec: sink,
            floor_ratio: (sink + producer) / producer,
        });
    }
    let pinned = pinned_throughput(args, &bootstrap, &config, count(1024, SIZES[1].1)).await?;
    let _ = std::fs::remove_dir_all(&pki_dir);
    drop(cluster);
    let idle = idle_cost(args).await?;
    Ok(CpuFigures { rows, pinned, idle })
}

/// P1 on pinned cores: the gateway process alone on one core, then the bare producer
/// process alone on the same core, while this process (the bench client and the mock
/// cluster) keeps the other. Shows whether the gateway's throughput is bound by its own
/// core rather than by the cores it shares elsewhere in P1.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PinnedRow {
    pub records: usize,
    pub gateway_records_per_sec: f64,
    /// The gateway process's CPU-seconds per second over the phase: 1.0 is its core full.
    pub gateway_core_busy: f64,
    pub producer_records_per_sec: f64,
    pub producer_core_busy: f64,
    /// gateway ÷ producer records/s.
    pub ratio: f64,
}

/// Sets the CPU affinity of every thread of `pid` (`taskset -a -p`): a CPU list, or with
/// `mask`, a hex mask as `taskset -p` prints it.
fn set_affinity(pid: u32, cpus: &str, mask: bool) -> anyhow::Result<()> {
    let mut cmd = std::process::Command::new("taskset");
    cmd.arg("-a").arg("-p");
    if !mask {
        cmd.arg("-c");
    }
    let out = cmd
        .arg(cpus)
        .arg(pid.to_string())
        .output()
        .context("running taskset (util-linux) to pin the P1 processes")?;
    anyhow::ensure!(
        out.status.success(),
        "taskset {cpus} {pid}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// This process's affinity mask, as `taskset -p` prints it (hex).
fn affinity_mask(pid: u32) -> anyhow::Result<String> {
    let out = std::process::Command::new("taskset")
        .args(["-p", &pid.to_string()])
        .output()
        .context("running taskset (util-linux)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.rsplit(": ")
        .next()
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .with_context(|| format!("unexpected taskset output: {text}"))
}

async fn pinned_throughput(
    args: &BenchArgs,
    bootstrap: &str,
    config: &str,
    records: usize,
) -> anyhow::Result<Option<PinnedRow>> {
    let cpus = std::thread::available_parallelism()?.get();
    if cpus < 2 {
        eprintln!("bench: P1 pinned needs two cores and this machine has {cpus}; row left out");
        return Ok(None);
    }
    let me = std::process::id();
    let mask = affinity_mask(me)?;
    set_affinity(me, "0", false)?;
    let measured = pinned_phases(args, bootstrap, config, records).await;
    set_affinity(me, &mask, true)?;
    measured.map(Some)
}

async fn pinned_phases(
    args: &BenchArgs,
    bootstrap: &str,
    config: &str,
    records: usize,
) -> anyhow::Result<PinnedRow> {
    let workers = args.concurrency.max(1);
    let name = format!("ballast-bench-pinned-{}", std::process::id());
    let gateway = super::resilience::GatewayProcess::start(&name, config).await?;
    set_affinity(gateway.pid, "1", false)?;
    eprintln!("bench: P1 pinned, gateway process on core 1, {records} records of 1024 B");
    let g = drive(&gateway, args, None, records, 1024).await?;
    drop(gateway);

    eprintln!("bench: P1 pinned, bare producer process on core 1, {records} records of 1024 B");
    let p = bare_producer(bootstrap, records, 1024, workers, Some("1")).await?;
    let gateway_rps = g.records as f64 / g.elapsed_seconds;
    let producer_rps = p.records as f64 / p.elapsed_seconds;
    Ok(PinnedRow {
        records,
        gateway_records_per_sec: gateway_rps,
        gateway_core_busy: g.cpu_seconds / g.elapsed_seconds,
        producer_records_per_sec: producer_rps,
        producer_core_busy: p.cpu_seconds / p.elapsed_seconds,
        ratio: gateway_rps / producer_rps,
    })
}

/// The least CPU a measured phase must cost its process: 10 of the kernel's 10 ms ticks, so
/// that a tick more or less moves a figure by a tenth at most. A phase that cost less is
/// repeated, and the figures are per the records it actually sent.
const MIN_PHASE_CPU_SECONDS: f64 = 0.1;

/// A phase repeats at most this often before the bench gives up on measuring it.
const MAX_PHASE_ROUNDS: usize = 200;

/// What one process used for one measured phase.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct PhaseRun {
    pub cpu_seconds: f64,
    pub elapsed_seconds: f64,
    pub records: usize,
}

impl PhaseRun {
    fn mb(&self, record_bytes: usize) -> f64 {
        (self.records * record_bytes) as f64 / 1e6
    }

    fn mb_per_sec(&self, record_bytes: usize) -> f64 {
        self.mb(record_bytes) / self.elapsed_seconds
    }

    /// Millicores per MB/s: CPU-milliseconds per MB.
    fn per_mb(&self, record_bytes: usize) -> f64 {
        self.cpu_seconds * 1000.0 / self.mb(record_bytes)
    }
}

/// Runs `round` (which sends `records` records and returns its elapsed time) until the
/// CPU `used` reports has reached [`MIN_PHASE_CPU_SECONDS`].
async fn measured<R, Fut>(
    records: usize,
    used: impl Fn() -> anyhow::Result<f64>,
    mut round: R,
) -> anyhow::Result<PhaseRun>
where
    R: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Duration>>,
{
    let cpu0 = used()?;
    let mut run = PhaseRun {
        cpu_seconds: 0.0,
        elapsed_seconds: 0.0,
        records: 0,
    };
    for _ in 0..MAX_PHASE_ROUNDS {
        run.elapsed_seconds += round().await?.as_secs_f64();
        run.records += records;
        run.cpu_seconds = used()? - cpu0;
        if run.cpu_seconds >= MIN_PHASE_CPU_SECONDS {
            return Ok(run);
        }
    }
    anyhow::bail!(
        "{} records in {MAX_PHASE_ROUNDS} rounds cost {:.3} CPU-seconds, less than the \
         {MIN_PHASE_CPU_SECONDS} a figure needs",
        run.records,
        run.cpu_seconds
    )
}

/// Sends `records` records of `record_bytes` to `target` (a gateway or a sink process) in
/// batches from `args.connections` connections (TLS with `ca_file`), after a warm-up, as
/// often as [`measured`] needs, and returns what the process used.
async fn drive(
    target: &super::resilience::GatewayProcess,
    args: &BenchArgs,
    ca_file: Option<&std::path::Path>,
    records: usize,
    record_bytes: usize,
) -> anyhow::Result<PhaseRun> {
    let pool = target.pool(args.connections, ca_file).await?;
    let value = Arc::new(vec![b'x'; record_bytes]);
    // Warm up: metadata, connections, the producer.
    for _ in 0..4 {
        super::gateway_batch(pool.next(), value.clone()).await?;
    }
    let concurrency = args.concurrency.max(1);
    measured(
        records,
        || cpu_seconds(target.pid),
        || {
            let (p, v) = (pool.clone(), value.clone());
            closed_loop(records.div_ceil(BATCH), concurrency, move || {
                super::gateway_batch(p.next(), v.clone())
            })
        },
    )
    .await
}

/// Runs `ballast-dev bench-producer` (on the `cpus` list with `taskset`, when given) and
/// returns what it used, measured as [`measured`] does.
async fn bare_producer(
    bootstrap: &str,
    records: usize,
    record_bytes: usize,
    workers: usize,
    cpus: Option<&str>,
) -> anyhow::Result<PhaseRun> {
    let exe = std::env::current_exe()?;
    let mut cmd = match cpus {
        Some(cpus) => {
            let mut c = std::process::Command::new("taskset");
            c.args(["-c", cpus]).arg(exe);
            c
        }
        None => std::process::Command::new(exe),
    };
    cmd.args(["bench-producer", "--bootstrap", bootstrap])
        .args(["--records", &records.to_string()])
        .args(["--record-bytes", &record_bytes.to_string()])
        .args(["--concurrency", &workers.to_string()])
        .stderr(std::process::Stdio::inherit());
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await?
        .context("running the bare producer process")?;
    anyhow::ensure!(out.status.success(), "the bare producer process failed");
    serde_json::from_slice(&out.stdout).context("the bare producer's report")
}

/// A counter's value in a Prometheus text page (0 when absent).
pub(super) fn counter(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

pub(super) async fn scrape(addr: std::net::SocketAddr) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

/// An idle gateway process on clusters of 1 and 500 topics (6 partitions each; 50 with
/// `--quick`), with one topic in use and with all of them: its CPU and the metadata bytes
/// it reads per second. Each cluster is a fresh `ballast-dev up --cluster-only` process: the
/// mock creates topics slowly, and in a process that already ran other clusters it can miss
/// its creation deadline near 500. Each row has a fresh gateway process.
/// Fresh cluster processes tried before the idle row gives up.
const CLUSTER_TRIES: usize = 3;

async fn idle_cost(args: &BenchArgs) -> anyhow::Result<Vec<IdleRow>> {
    let window = Duration::from_secs(if args.quick { 3 } else { 10 });
    let mut out = Vec::new();
    let many = if args.quick { 50 } else { 500 };
    // The two rows on the large cluster share it.
    let mut current: Option<(usize, crate::dev::ClusterProcess)> = None;
    for (topics, in_use) in [(1usize, 1usize), (many, 1), (many, many)] {
        if current.as_ref().is_none_or(|(n, _)| *n != topics) {
            drop(current.take());
            eprintln!("bench: P8 idle gateway, starting a cluster of {topics} topics");
            let specs: Vec<String> = (0..topics).map(|i| format!("idle-{i}:6:3")).collect();
            let log = std::env::temp_dir().join(format!(
                "ballast-bench-idle-cluster-{}-{topics}.log",
                std::process::id()
            ));
            // The mock sometimes stalls creating hundreds of topics (and then says so
            // within its setup deadline); a fresh process usually does not.
            let mut tries = 0;
            let started = loop {
                tries += 1;
                let started = crate::dev::ClusterProcess::start(
                    &specs,
                    &[],
                    std::fs::File::create(&log)?.into(),
                    Duration::from_secs(180),
                )
                .await;
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                let _ = std::fs::remove_file(&log);
                match started {
                    Ok(c) => break c,
                    Err(_) if tries < CLUSTER_TRIES && said.contains("did not finish") => {
                        eprintln!(
                            "bench: the mock cluster stalled creating {topics} topics (try {tries} of {CLUSTER_TRIES}); starting a fresh one"
                        );
                    }
                    Err(e) => return Err(e.context(format!("cluster log:\n{said}"))),
                }
            };
            current = Some((topics, started));
        }
        let cluster = &current.as_ref().expect("started above").1;
        let name = format!(
            "ballast-bench-idle-{}-{topics}-{in_use}",
            std::process::id()
        );
        let gateway = super::resilience::GatewayProcess::start(
            &name,
            &format!(
                "rack: az-a\nkafka:\n  bootstrap_servers: {}\n",
                cluster.bootstrap
            ),
        )
        .await?;
        let mut client = gateway.connect().await?;
        for i in 0..in_use {
            let resp = client
                .produce(pb::ProduceRequest {
                    records: vec![pb::Record {
                        topic: format!("idle-{i}"),
                        value: b"x".to_vec().into(),
                        ..Default::default()
                    }],
                })
                .await?
                .into_inner();
            anyhow::ensure!(
                matches!(
                    resp.results.first().and_then(|r| r.outcome.as_ref()),
                    Some(pb::record_result::Outcome::Kafka(_))
                ),
                "idle-{i} was not written: {resp:?}"
            );
        }
        eprintln!(
            "bench: P8 idle gateway, {topics} topics ({} partitions), {in_use} in use, {window:?}",
            topics * 6
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let admin = gateway
            .admin
            .context("a gateway process has an admin endpoint")?;
        let metric = "ballast_gateway_metadata_bytes_total";
        let bytes0 = counter(&scrape(admin).await?, metric);
        let cpu0 = cpu_seconds(gateway.pid)?;
        let started = Instant::now();
        tokio::time::sleep(window).await;
        let cpu = cpu_seconds(gateway.pid)? - cpu0;
        let bytes = counter(&scrape(admin).await?, metric) - bytes0;
        let secs = started.elapsed().as_secs_f64();
        out.push(IdleRow {
            topics,
            partitions: topics * 6,
            topics_in_use: in_use,
            seconds: secs,
            idle_millicores: cpu * 1000.0 / secs,
            metadata_bytes_per_sec: bytes / secs,
        });
    }
    Ok(out)
}
