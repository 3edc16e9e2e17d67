//! An embedded Kafka: librdkafka's mock cluster, which speaks the real protocol over TCP,
//! so any Kafka client (kcat, a Java consumer) can use it.
//!
//! `MockCluster` is neither `Send` nor `Sync`, so one dedicated thread owns it and async
//! code drives it through a bounded channel. Dropping the handle stops the thread and the
//! cluster.

use crate::Error;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;

/// A topic to create at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
}

impl std::str::FromStr for TopicSpec {
    type Err = String;

    /// Parses `NAME:PARTITIONS` or `NAME:PARTITIONS:RF`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split(':');
        let name = parts.next().unwrap_or_default().to_string();
        let num = |v: Option<&str>, what: &str| -> Result<Option<i32>, String> {
            v.map(|v| {
                v.parse::<i32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("topic spec '{s}': {what} must be a positive integer"))
            })
            .transpose()
        };
        let partitions = num(parts.next(), "partitions")?.unwrap_or(6);
        let replication_factor = num(parts.next(), "replication factor")?.unwrap_or(3);
        if parts.next().is_some() {
            return Err(format!("topic spec '{s}': expected NAME:PARTITIONS[:RF]"));
        }
        ballast_core::validate_topic(&name).map_err(|e| format!("topic spec '{s}': {e}"))?;
        Ok(TopicSpec {
            name,
            partitions,
            replication_factor,
        })
    }
}

#[derive(Debug, Clone)]
pub struct EmbeddedClusterConfig {
    pub brokers: i32,
    /// Racks assigned to brokers 1..=N in turn; empty means no racks.
    pub racks: Vec<String>,
    pub topics: Vec<TopicSpec>,
    /// Consumer groups pinned to a coordinator broker (else the mock hashes the group id
    /// over all brokers).
    pub group_coordinators: Vec<(String, i32)>,
}

impl Default for EmbeddedClusterConfig {
    fn default() -> Self {
        Self {
            brokers: 3,
            racks: vec!["az-a".into(), "az-b".into(), "az-c".into()],
            topics: vec![TopicSpec {
                name: "events".into(),
                partitions: 6,
                replication_factor: 3,
            }],
            group_coordinators: Vec::new(),
        }
    }
}

type Reply = oneshot::Sender<Result<(), Error>>;

/// How long creating the cluster and its topics may take before `start` gives up with a
/// clear error instead of hanging: this, plus `SETUP_PER_TOPIC` for each topic (the mock
/// creates them one at a time, slower on a busy machine).
const SETUP_DEADLINE: Duration = Duration::from_secs(30);
const SETUP_PER_TOPIC: Duration = Duration::from_millis(60);

enum Command {
    BrokerDown(i32, Reply),
    BrokerUp(i32, Reply),
    PartitionLeader(String, i32, Option<i32>, Reply),
    BrokerRtt(i32, Duration, Reply),
    CreateTopic(TopicSpec, Reply),
    RequestErrors(RDKafkaApiKey, Vec<RDKafkaRespErr>, Reply),
    TopicError(String, RDKafkaRespErr, Reply),
}

/// The requests whose answers [`EmbeddedCluster::inject_request_errors`] can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MockApi {
    Produce,
    Metadata,
}

impl std::str::FromStr for MockApi {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "produce" => Ok(MockApi::Produce),
            "metadata" => Ok(MockApi::Metadata),
            _ => Err(Error::Embedded(format!(
                "unknown api {s:?}: expected produce or metadata"
            ))),
        }
    }
}

/// The Kafka protocol errors the embedded cluster can inject, by their protocol names.
const INJECTABLE: &[(&str, RDKafkaRespErr)] = {
    use RDKafkaRespErr::*;
    &[
        ("NONE", RD_KAFKA_RESP_ERR_NO_ERROR),
        (
            "UNKNOWN_TOPIC_OR_PARTITION",
            RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
        ),
        (
            "LEADER_NOT_AVAILABLE",
            RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
        ),
        (
            "NOT_LEADER_OR_FOLLOWER",
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        ),
        ("REQUEST_TIMED_OUT", RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT),
        ("NOT_ENOUGH_REPLICAS", RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS),
        (
            "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
            RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        ),
        ("KAFKA_STORAGE_ERROR", RD_KAFKA_RESP_ERR_KAFKA_STORAGE_ERROR),
        ("NETWORK_EXCEPTION", RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION),
        ("MESSAGE_TOO_LARGE", RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE),
        (
            "TOPIC_AUTHORIZATION_FAILED",
            RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        ),
        ("INVALID_RECORD", RD_KAFKA_RESP_ERR_INVALID_RECORD),
        ("POLICY_VIOLATION", RD_KAFKA_RESP_ERR_POLICY_VIOLATION),
        (
            "OUT_OF_ORDER_SEQUENCE_NUMBER",
            RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
        ),
    ]
};

/// A Kafka protocol error by name (`UNKNOWN_TOPIC_OR_PARTITION`, …), for injection.
fn injectable(name: &str) -> Result<RDKafkaRespErr, Error> {
    INJECTABLE
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, e)| *e)
        .ok_or_else(|| {
            let names: Vec<&str> = INJECTABLE.iter().map(|(n, _)| *n).collect();
            Error::Embedded(format!(
                "unknown kafka error {name:?}: expected one of {}",
                names.join(", ")
            ))
        })
}

/// A handle to the embedded cluster.
#[derive(Debug)]
pub struct EmbeddedCluster {
    tx: Option<mpsc::SyncSender<Command>>,
    thread: Option<JoinHandle<()>>,
    bootstrap: String,
    brokers: i32,
    racks: Vec<String>,
}

impl EmbeddedCluster {
    /// How long `start` waits for the cluster and `topics` topics before it gives up.
    pub fn setup_deadline(topics: usize) -> Duration {
        SETUP_DEADLINE + SETUP_PER_TOPIC * topics as u32
    }

    /// Starts the cluster and creates its topics. Broker ids are 1..=brokers.
    pub fn start(cfg: EmbeddedClusterConfig) -> Result<Self, Error> {
        if cfg.brokers < 1 {
            return Err(Error::Embedded("at least one broker is needed".into()));
        }
        for t in &cfg.topics {
            if t.replication_factor > cfg.brokers {
                return Err(Error::Embedded(format!(
                    "topic {}: replication factor {} exceeds broker count {}",
                    t.name, t.replication_factor, cfg.brokers
                )));
            }
        }
        let (tx, rx) = mpsc::sync_channel::<Command>(64);
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, Error>>();
        let setup = cfg.clone();
        let thread = std::thread::Builder::new()
            .name("ballast-mock-kafka".into())
            .spawn(move || {
                let cluster = match Self::build(&setup) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Runs until every sender is dropped.
                for cmd in rx {
                    Self::apply(&cluster, cmd);
                }
            })
            .map_err(|e| Error::Embedded(format!("spawn: {e}")))?;
        let deadline = Self::setup_deadline(cfg.topics.len());
        let bootstrap = match ready_rx.recv_timeout(deadline) {
            Ok(r) => r?,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // The owner thread is stuck inside librdkafka; it is left behind.
                return Err(Error::Embedded(format!(
                    "creating {} topics did not finish within {deadline:?}: librdkafka's mock cluster stalls past about 550 topics; use fewer",
                    cfg.topics.len()
                )));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::Embedded("mock cluster thread died".into()))
            }
        };
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            bootstrap,
            brokers: cfg.brokers,
            racks: cfg.racks,
        })
    }

    fn build(
        cfg: &EmbeddedClusterConfig,
    ) -> Result<MockCluster<'static, impl rdkafka::ClientContext>, Error> {
        let cluster = MockCluster::new(cfg.brokers)?;
        // The mock's Produce v10+ and Fetch v12+ handlers dereference a NULL leader when
        // they answer NOT_LEADER for a leaderless partition (librdkafka 2.12
        // rdkafka_mock_handlers.c, the CurrentLeader tag) and crash the process. Produce
        // v9 and Fetch v11 have no such tag (tests/leaderless_fetch.rs).
        cluster.apiversion(RDKafkaApiKey::Produce, Some(0), Some(9))?;
        cluster.apiversion(RDKafkaApiKey::Fetch, Some(0), Some(11))?;
        if !cfg.racks.is_empty() {
            for id in 1..=cfg.brokers {
                let rack = &cfg.racks[(id - 1) as usize % cfg.racks.len()];
                cluster.broker_rack(id, rack)?;
            }
        }
        for t in &cfg.topics {
            cluster.create_topic(&t.name, t.partitions, t.replication_factor)?;
        }
        for (group, broker) in &cfg.group_coordinators {
            cluster.coordinator(
                rdkafka::mocking::MockCoordinator::Group(group.clone()),
                *broker,
            )?;
        }
        Ok(cluster)
    }

    fn apply<C: rdkafka::ClientContext>(cluster: &MockCluster<'_, C>, cmd: Command) {
        let (res, reply) = match cmd {
            Command::BrokerDown(id, r) => (cluster.broker_down(id), r),
            Command::BrokerUp(id, r) => (cluster.broker_up(id), r),
            Command::PartitionLeader(t, p, b, r) => (cluster.partition_leader(&t, p, b), r),
            Command::BrokerRtt(id, d, r) => (cluster.broker_round_trip_time(id, d), r),
            Command::CreateTopic(t, r) => (
                cluster.create_topic(&t.name, t.partitions, t.replication_factor),
                r,
            ),
            Command::RequestErrors(api, errors, r) => {
                cluster.request_errors(api, &errors);
                (Ok(()), r)
            }
            Command::TopicError(topic, err, r) => (cluster.topic_error(&topic, err), r),
        };
        let _ = reply.send(res.map_err(Error::from));
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    pub fn broker_count(&self) -> i32 {
        self.brokers
    }

    /// The rack of a broker id, as configured.
    pub fn rack_of(&self, broker_id: i32) -> Option<&str> {
        if self.racks.is_empty() || broker_id < 1 {
            return None;
        }
        Some(&self.racks[(broker_id - 1) as usize % self.racks.len()])
    }

    async fn send(&self, make: impl FnOnce(Reply) -> Command) -> Result<(), Error> {
        let (reply, rx) = oneshot::channel();
        let tx = self.tx.as_ref().expect("present until drop").clone();
        let cmd = make(reply);
        tokio::task::spawn_blocking(move || tx.send(cmd))
            .await
            .map_err(|e| Error::Embedded(format!("join: {e}")))?
            .map_err(|_| Error::Embedded("mock cluster stopped".into()))?;
        rx.await
            .map_err(|_| Error::Embedded("mock cluster stopped".into()))?
    }

    fn check_broker(&self, id: i32) -> Result<(), Error> {
        if id == -1 || (1..=self.brokers).contains(&id) {
            Ok(())
        } else {
            Err(Error::Embedded(format!(
                "broker {id} does not exist (ids are 1..={}, or -1 for all)",
                self.brokers
            )))
        }
    }

    /// Takes a broker down (-1: all). Its partitions keep it as leader and stay unwritable.
    pub async fn broker_down(&self, id: i32) -> Result<(), Error> {
        self.check_broker(id)?;
        self.send(|r| Command::BrokerDown(id, r)).await
    }

    pub async fn broker_up(&self, id: i32) -> Result<(), Error> {
        self.check_broker(id)?;
        self.send(|r| Command::BrokerUp(id, r)).await
    }

    /// Moves a partition's leader; None makes it leaderless.
    pub async fn partition_leader(
        &self,
        topic: &str,
        partition: i32,
        broker: Option<i32>,
    ) -> Result<(), Error> {
        if let Some(b) = broker {
            if b != -1 {
                self.check_broker(b)?;
            }
        }
        let topic = topic.to_string();
        self.send(|r| Command::PartitionLeader(topic, partition, broker, r))
            .await
    }

    pub async fn broker_rtt(&self, id: i32, rtt: Duration) -> Result<(), Error> {
        self.check_broker(id)?;
        self.send(|r| Command::BrokerRtt(id, rtt, r)).await
    }

    pub async fn create_topic(&self, spec: TopicSpec) -> Result<(), Error> {
        self.send(|r| Command::CreateTopic(spec, r)).await
    }

    /// Fails the next `errors.len()` requests of `api` (to any broker) with these Kafka
    /// errors, one each, in order. Error names are Kafka's (`UNKNOWN_TOPIC_OR_PARTITION`).
    pub async fn inject_request_errors(&self, api: MockApi, errors: &[&str]) -> Result<(), Error> {
        let errors = errors
            .iter()
            .map(|e| injectable(e))
            .collect::<Result<Vec<_>, _>>()?;
        let key = match api {
            MockApi::Produce => RDKafkaApiKey::Produce,
            MockApi::Metadata => RDKafkaApiKey::Metadata,
        };
        self.send(|r| Command::RequestErrors(key, errors, r)).await
    }

    /// Makes metadata answers carry `error` for `topic` (`NONE` clears it).
    pub async fn set_topic_error(&self, topic: &str, error: &str) -> Result<(), Error> {
        let err = injectable(error)?;
        let topic = topic.to_string();
        self.send(|r| Command::TopicError(topic, err, r)).await
    }
}

impl Drop for EmbeddedCluster {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_spec_parsing() {
        assert_eq!(
            "orders:12".parse::<TopicSpec>().unwrap(),
            TopicSpec {
                name: "orders".into(),
                partitions: 12,
                replication_factor: 3
            }
        );
        assert_eq!(
            "orders:4:1"
                .parse::<TopicSpec>()
                .unwrap()
                .replication_factor,
            1
        );
        assert!("orders:x".parse::<TopicSpec>().is_err());
        assert!("orders:0".parse::<TopicSpec>().is_err());
        assert!(":3".parse::<TopicSpec>().is_err());
        assert!("a:1:1:1".parse::<TopicSpec>().is_err());
    }

    #[test]
    fn injectable_errors_by_name() {
        assert_eq!(
            injectable("unknown_topic_or_partition").unwrap(),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART
        );
        let e = injectable("NOPE").unwrap_err().to_string();
        assert!(e.contains("LEADER_NOT_AVAILABLE"), "{e}");
        assert_eq!("Produce".parse::<MockApi>().unwrap(), MockApi::Produce);
        assert!("fetch".parse::<MockApi>().is_err());
    }
}
