//! The demo's load: batches of mixed records (unkeyed, STRICT and PREFERRED keyed) sent
//! through the gateway, each answer recorded per phase, and a sampler of the balancer's state.

use super::*;

#[derive(Debug, Default)]
pub(super) struct PhaseStats {
    pub(super) sent: usize,
    pub(super) latencies_ms: Vec<f64>,
    /// Seconds since the load started.
    pub(super) start: f64,
}

#[derive(Debug, Default)]
pub(super) struct Audit {
    /// Records sent, counted from the requests (not from the answers).
    pub(super) sent: usize,
    /// Records sent that came back without an outcome, or out of order: each one fails
    /// the demo.
    pub(super) unanswered: Vec<String>,
    pub(super) acked_kafka: BTreeMap<String, (i32, i64)>,
    pub(super) acked_failover: BTreeMap<String, String>,
    pub(super) rejected: BTreeMap<String, usize>,
    pub(super) phases: Vec<(String, PhaseStats)>,
}

impl Audit {
    pub(super) fn rejected_total(&self) -> usize {
        self.rejected.values().sum()
    }

    pub(super) fn progress(&self) -> String {
        format!(
            "kafka {}  failover {}  rejected {}",
            self.acked_kafka.len(),
            self.acked_failover.len(),
            self.rejected_total()
        )
    }
}

pub(super) fn bar(len: u64, prefix: &str) -> ProgressBar {
    let style = ProgressStyle::with_template("{prefix:>22} [{bar:32}] {elapsed:>4} {msg}")
        .expect("valid template")
        .progress_chars("=> ");
    ProgressBar::new(len)
        .with_style(style)
        .with_prefix(prefix.to_string())
}

/// Samples acks and breaker states every 200 ms until `stop`.
pub(super) fn spawn_sampler(
    stack_gateway: ballast_gateway::GatewayHandle,
    audit: Arc<Mutex<Audit>>,
    samples: Arc<Mutex<Vec<Sample>>>,
    begin: Instant,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let breakers = stack_gateway
                .partition_status(TOPIC)
                .iter()
                .map(|s| match s.state {
                    BreakerState::Open if s.draining => 3,
                    BreakerState::Open => 2,
                    BreakerState::HalfOpen => 1,
                    BreakerState::Closed => 0,
                })
                .collect();
            let (kafka, failover, rejected) = {
                let a = audit.lock().expect("audit lock");
                (
                    a.acked_kafka.len(),
                    a.acked_failover.len(),
                    a.rejected_total(),
                )
            };
            samples.lock().expect("samples lock").push(Sample {
                t: begin.elapsed().as_secs_f64(),
                kafka,
                failover,
                rejected,
                breakers,
            });
        }
    })
}

pub(super) fn make_record(n: usize) -> pb::Record {
    let (key, policy) = match n % 10 {
        0..=3 => (Some(format!("user-{}", n % 500)), pb::KeyPolicy::Strict),
        4 => (Some(format!("user-{}", n % 500)), pb::KeyPolicy::Preferred),
        _ => (None, pb::KeyPolicy::Strict),
    };
    pb::Record {
        topic: TOPIC.into(),
        key: key.map(|k| k.into_bytes().into()),
        value: format!("demo record {n}").into_bytes().into(),
        message_id: format!("demo-{n:08}"),
        key_policy: policy as i32,
        ..Default::default()
    }
}

/// Sends batches at `rate` records/s until `stop` is set.
pub(super) async fn load(
    mut client: IngestClient<tonic::transport::Channel>,
    audit: Arc<Mutex<Audit>>,
    next: Arc<std::sync::atomic::AtomicUsize>,
    total: usize,
    rate: f64,
) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(BATCH as f64 / rate));
    loop {
        tick.tick().await;
        let start = next.fetch_add(BATCH, Ordering::SeqCst);
        if start >= total {
            return Ok(());
        }
        let end = (start + BATCH).min(total);
        let records: Vec<_> = (start..end).map(make_record).collect();
        let ids: Vec<String> = records.iter().map(|r| r.message_id.clone()).collect();
        {
            let mut a = audit.lock().expect("audit lock");
            a.sent += ids.len();
            if let Some((_, phase)) = a.phases.last_mut() {
                phase.sent += ids.len();
            }
        }
        let t0 = Instant::now();
        let resp = client
            .produce(pb::ProduceRequest { records })
            .await?
            .into_inner();
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        let mut a = audit.lock().expect("audit lock");
        if let Some((_, phase)) = a.phases.last_mut() {
            phase.latencies_ms.push(ms);
        }
        // One answer per record, in request order, or the record counts as unanswered.
        let mut answers = resp.results.into_iter();
        for id in ids {
            let Some(r) = answers.next().filter(|r| r.message_id == id) else {
                a.unanswered.push(id);
                continue;
            };
            match r.outcome {
                Some(pb::record_result::Outcome::Kafka(k)) => {
                    a.acked_kafka.insert(r.message_id, (k.partition, k.offset));
                }
                Some(pb::record_result::Outcome::Failover(f)) => {
                    a.acked_failover.insert(r.message_id, f.entry_id);
                }
                Some(pb::record_result::Outcome::Error(e)) => {
                    let code = Code::try_from(e.code)
                        .map(|c| c.as_str_name().trim_start_matches("CODE_").to_lowercase())
                        .unwrap_or_else(|_| "unknown".into());
                    *a.rejected.entry(code).or_insert(0) += 1;
                }
                None => a.unanswered.push(r.message_id),
            }
        }
    }
}
