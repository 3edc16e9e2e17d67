//! The fault schedule: drawn from the seed, so a run can be replayed. Every kind comes
//! once, in a seeded order, before kinds repeat at random; one fault is active at a time,
//! then recovered, then a calm gap.

use super::system::{System, COORDINATOR, TOPIC};
use ballast_proto::dev::v1 as dpb;
use ballast_proto::dev::v1::dev_control_client::DevControlClient;
use ballast_proto::topology::v1 as tpb;
use ballast_proto::topology::v1::topology_client::TopologyClient;
use ballast_testkit::fault_proxy::Fault;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Calm,
    BrokerDown,
    LeaderMove,
    Leaderless,
    RttSpike,
    ClusterOutage,
    FailoverUnreachable,
    GatewaySigterm,
    GatewaySigkill,
    WorkerSigkill,
    ConsumerSigkill,
    RedisRestart,
    TopologyKilled,
    SpotNotice,
    BrokerFlapping,
    FailoverBlackHole,
}

impl Kind {
    pub const FAULTS: [Kind; 15] = [
        Kind::BrokerDown,
        Kind::LeaderMove,
        Kind::Leaderless,
        Kind::RttSpike,
        Kind::ClusterOutage,
        Kind::FailoverUnreachable,
        Kind::GatewaySigterm,
        Kind::GatewaySigkill,
        Kind::WorkerSigkill,
        Kind::ConsumerSigkill,
        Kind::RedisRestart,
        Kind::TopologyKilled,
        Kind::SpotNotice,
        Kind::BrokerFlapping,
        Kind::FailoverBlackHole,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Calm => "calm",
            Kind::BrokerDown => "broker down",
            Kind::LeaderMove => "leader moves",
            Kind::Leaderless => "leaderless partition",
            Kind::RttSpike => "broker rtt spike",
            Kind::ClusterOutage => "cluster outage",
            Kind::FailoverUnreachable => "failover backend cut",
            Kind::GatewaySigterm => "gateway sigterm",
            Kind::GatewaySigkill => "gateway sigkill",
            Kind::WorkerSigkill => "worker sigkill",
            Kind::ConsumerSigkill => "consumer sigkill",
            Kind::RedisRestart => "redis restart",
            Kind::TopologyKilled => "topology killed",
            Kind::SpotNotice => "spot notice",
            Kind::BrokerFlapping => "broker flapping",
            Kind::FailoverBlackHole => "failover backend black-holed",
        }
    }

    pub fn index(self) -> u8 {
        self as u8
    }

    pub fn from_index(i: u8) -> Kind {
        if i == 0 {
            Kind::Calm
        } else {
            Kind::FAULTS[usize::from(i) - 1]
        }
    }
}

/// One fault as played.
#[derive(Debug, Clone)]
pub struct Episode {
    pub kind: Kind,
    pub detail: String,
    /// Seconds since the load started.
    pub start: f64,
    pub end: f64,
}

/// The seeded schedule.
#[derive(Debug)]
pub struct Schedule {
    rng: rand::rngs::StdRng,
    order: Vec<Kind>,
    pub hold: (Duration, Duration),
    pub gap: (Duration, Duration),
}

impl Schedule {
    pub fn new(seed: u64, hold: (Duration, Duration), gap: (Duration, Duration)) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut order = Kind::FAULTS.to_vec();
        order.shuffle(&mut rng);
        order.reverse(); // popped from the end
        Self {
            rng,
            order,
            hold,
            gap,
        }
    }

    pub fn next_kind(&mut self) -> Kind {
        self.order
            .pop()
            .unwrap_or_else(|| Kind::FAULTS[self.rng.random_range(0..Kind::FAULTS.len())])
    }

    pub fn duration(&mut self, range: (Duration, Duration)) -> Duration {
        let (lo, hi) = (range.0.as_millis() as u64, range.1.as_millis() as u64);
        Duration::from_millis(self.rng.random_range(lo..=hi.max(lo)))
    }

    pub fn pick(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n)
    }
}

/// What has to be undone when a fault ends.
#[derive(Debug)]
pub enum Undo {
    Nothing,
    BrokerUp(i32),
    Leader(i32, i32),
    Rtt(i32),
    Restart(String),
    ProxyAndBroker(i32),
    Spot(i32),
}

async fn control(sys: &System) -> anyhow::Result<DevControlClient<tonic::transport::Channel>> {
    Ok(DevControlClient::connect(ballast_security::service_url(&sys.control)).await?)
}

/// Takes a broker down, or brings it back.
async fn set_broker(sys: &System, id: i32, up: bool) -> anyhow::Result<()> {
    let mut c = control(sys).await?;
    let req = dpb::BrokerRequest { broker_id: id };
    if up {
        c.broker_up(req).await?;
    } else {
        c.broker_down(req).await?;
    }
    Ok(())
}

/// Gives a partition of the topic a leader, or none.
async fn set_leader(sys: &System, partition: i32, broker: Option<i32>) -> anyhow::Result<()> {
    control(sys)
        .await?
        .set_partition_leader(dpb::SetPartitionLeaderRequest {
            topic: TOPIC.into(),
            partition,
            broker_id: broker,
        })
        .await?;
    Ok(())
}

/// The topology service, which may have just been restarted: tried for up to 15 s.
async fn topology(sys: &System) -> anyhow::Result<TopologyClient<tonic::transport::Channel>> {
    let mut last = None;
    for _ in 0..60 {
        match TopologyClient::connect(format!("http://{}", sys.topology)).await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(anyhow::anyhow!(
        "topology service unreachable for 15 s: {last:?}"
    ))
}

/// Starts a fault; returns what it did and how to undo it.
pub async fn inject(
    kind: Kind,
    sys: &mut System,
    sched: &mut Schedule,
    hold: Duration,
) -> anyhow::Result<(String, Undo)> {
    let broker = 1 + sched.pick(3) as i32;
    let gateway = ["gateway-a", "gateway-b"][sched.pick(2)];
    Ok(match kind {
        Kind::Calm => (String::new(), Undo::Nothing),
        Kind::BrokerDown => {
            set_broker(sys, broker, false).await?;
            (format!("broker {broker}"), Undo::BrokerUp(broker))
        }
        Kind::LeaderMove => {
            let p = sched.pick(sys.partitions as usize) as i32;
            set_leader(sys, p, Some(broker)).await?;
            (format!("partition {p} to broker {broker}"), Undo::Nothing)
        }
        Kind::Leaderless => {
            let p = sched.pick(sys.partitions as usize) as i32;
            set_leader(sys, p, None).await?;
            (format!("partition {p}"), Undo::Leader(p, broker))
        }
        Kind::RttSpike => {
            let ms = 300 + sched.pick(1700) as u32;
            control(sys)
                .await?
                .set_broker_rtt(dpb::SetBrokerRttRequest {
                    broker_id: broker,
                    rtt_ms: ms,
                })
                .await?;
            (format!("broker {broker} +{ms} ms"), Undo::Rtt(broker))
        }
        Kind::ClusterOutage => {
            control(sys)
                .await?
                .kafka_outage(dpb::KafkaOutageRequest { down: true })
                .await?;
            ("every broker".into(), Undo::BrokerUp(-1))
        }
        Kind::FailoverUnreachable => {
            // With a broker down too, so the gateways need the queue they cannot reach.
            sys.proxy.set(Fault::Cut);
            set_broker(sys, broker, false).await?;
            (
                format!("postgres cut, broker {broker} down"),
                Undo::ProxyAndBroker(broker),
            )
        }
        Kind::FailoverBlackHole => {
            // Connections accepted and never answered: only the gateways' own bounds end
            // the wait (failover.write_timeout).
            sys.proxy.set(Fault::BlackHole);
            set_broker(sys, broker, false).await?;
            (
                format!("postgres black-holed, broker {broker} down"),
                Undo::ProxyAndBroker(broker),
            )
        }
        Kind::GatewaySigterm => {
            sys.proc(gateway).stop("TERM").await;
            (gateway.into(), Undo::Restart(gateway.into()))
        }
        Kind::GatewaySigkill => {
            sys.proc(gateway).stop("KILL").await;
            (gateway.into(), Undo::Restart(gateway.into()))
        }
        Kind::WorkerSigkill => {
            let w = ["worker-a", "worker-b"][sched.pick(2)];
            sys.proc(w).stop("KILL").await;
            (w.into(), Undo::Restart(w.into()))
        }
        Kind::ConsumerSigkill => {
            let c = format!("consumer-{}", sched.pick(sys.consumers));
            sys.proc(&c).stop("KILL").await;
            (c.clone(), Undo::Restart(c))
        }
        Kind::RedisRestart => {
            sys.proc("redis").stop("TERM").await;
            (
                "redis-server (appendonly, fsync always)".into(),
                Undo::Restart("redis".into()),
            )
        }
        Kind::TopologyKilled => {
            sys.proc("topology").stop("KILL").await;
            ("topology".into(), Undo::Restart("topology".into()))
        }
        Kind::SpotNotice => {
            // The notice first; the broker dies halfway through the hold, as spot does.
            let deadline = std::time::SystemTime::now() + hold;
            let mut topo = topology(sys).await?;
            topo.mark_broker_draining(tpb::MarkBrokerDrainingRequest {
                broker_id: broker,
                deadline_unix_ms: Some(
                    deadline.duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64
                ),
                reason: "torture: spot interruption notice".into(),
            })
            .await?;
            tokio::time::sleep(hold / 2).await;
            set_broker(sys, broker, false).await?;
            (format!("broker {broker}"), Undo::Spot(broker))
        }
        Kind::BrokerFlapping => {
            // Down and up every 400 ms for the hold: each return leaves the broker's
            // partitions half-open, where records must not spend attempts they never made.
            // Any broker but the group's coordinator (see `COORDINATOR`).
            let broker = if broker == COORDINATOR {
                COORDINATOR + 1 + sched.pick(2) as i32
            } else {
                broker
            };
            let end = tokio::time::Instant::now() + hold;
            let mut flaps = 0;
            while tokio::time::Instant::now() < end {
                set_broker(sys, broker, false).await?;
                tokio::time::sleep(Duration::from_millis(400)).await;
                set_broker(sys, broker, true).await?;
                tokio::time::sleep(Duration::from_millis(400)).await;
                flaps += 1;
            }
            (format!("broker {broker} x{flaps}"), Undo::BrokerUp(broker))
        }
    })
}

pub async fn undo(undo: Undo, sys: &mut System) -> anyhow::Result<()> {
    match undo {
        Undo::Nothing => {}
        Undo::BrokerUp(-1) => {
            control(sys)
                .await?
                .kafka_outage(dpb::KafkaOutageRequest { down: false })
                .await?;
        }
        Undo::BrokerUp(b) => {
            set_broker(sys, b, true).await?;
        }
        Undo::Leader(p, b) => {
            set_leader(sys, p, Some(b)).await?;
        }
        Undo::Rtt(b) => {
            control(sys)
                .await?
                .set_broker_rtt(dpb::SetBrokerRttRequest {
                    broker_id: b,
                    rtt_ms: 0,
                })
                .await?;
        }
        Undo::Restart(name) => sys.restart(&name).await?,
        Undo::ProxyAndBroker(b) => {
            sys.proxy.set(Fault::None);
            set_broker(sys, b, true).await?;
        }
        Undo::Spot(b) => {
            set_broker(sys, b, true).await?;
            // The topology service may itself be restarting; the mark lapses anyway.
            if let Ok(mut topo) = topology(sys).await {
                let _ = topo
                    .clear_broker_draining(tpb::ClearBrokerDrainingRequest { broker_id: b })
                    .await;
            }
        }
    }
    Ok(())
}
