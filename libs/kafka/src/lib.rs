//! Kafka access for Ballast: the producer wrapper every service writes through, a
//! protocol-level metadata client that sees broker racks, and (feature `embedded`) the
//! mock cluster that `ballast-dev` and the tests run.
//!
//! This crate knows nothing of gRPC or of routing policy; partition choice lives in
//! `ballast-balancer`.

mod classify;
mod config;
mod context;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod metadata;
mod producer;
mod reader;
pub mod sasl;
mod security;

pub use classify::{classify, classify_code};
pub use config::{bootstrap_list, KafkaConfig};
pub use context::KafkaContext;
#[cfg(feature = "embedded")]
pub use embedded::{EmbeddedCluster, EmbeddedClusterConfig, MockApi, TopicSpec};
pub use metadata::{BrokerInfo, ClusterMetadata, MetadataClient, PartitionInfo, TopicInfo};
pub use producer::{Delivery, KafkaProducer, OutgoingRecord, WriteError, Written};
pub use reader::{read_topic, read_topic_with, Landed};
pub use sasl::{KafkaSasl, SaslAuth, SaslMechanism};
pub use security::{KafkaSecurity, KafkaSsl, SecurityProtocol};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("metadata: {0}")]
    Metadata(String),
    #[error("embedded cluster: {0}")]
    Embedded(String),
    #[error("invalid config: {0}")]
    Config(String),
    #[error("reading a topic: {0}")]
    Read(String),
}
