//! `ballast-dev chaos`: fault injection against a running `ballast-dev up` through DevControl.

use ballast_proto::dev::v1 as pb;
use ballast_proto::dev::v1::dev_control_client::DevControlClient;

#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// The DevControl address from the `ballast-dev up` ready line.
    #[arg(long, env = "BALLAST_CONTROL")]
    pub control: String,
    #[command(flatten)]
    pub client: ballast_security::ClientArgs,
    #[command(subcommand)]
    pub action: ChaosAction,
}

#[derive(Debug, clap::Subcommand)]
pub enum ChaosAction {
    /// Take a broker down (-1: all). Its partitions stay unwritable until it returns.
    BrokerDown {
        #[arg(long, allow_hyphen_values = true)]
        broker: i32,
    },
    /// Bring a broker back (-1: all).
    BrokerUp {
        #[arg(long, allow_hyphen_values = true)]
        broker: i32,
    },
    /// Move a partition's leader; without --broker the partition becomes leaderless.
    Leader {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: i32,
        #[arg(long)]
        broker: Option<i32>,
    },
    /// Take every broker down (the whole cluster is out).
    Outage,
    /// Bring every broker back after an outage.
    Recover,
    /// Add round-trip latency to a broker.
    Rtt {
        #[arg(long, allow_hyphen_values = true)]
        broker: i32,
        #[arg(long)]
        ms: u32,
    },
    /// Fail the next requests of an API with a Kafka error, as a real cluster does during
    /// broker replacement (e.g. --api produce --error UNKNOWN_TOPIC_OR_PARTITION --count 3).
    InjectErrors {
        /// produce or metadata.
        #[arg(long, default_value = "produce")]
        api: String,
        /// A Kafka protocol error name.
        #[arg(long)]
        error: String,
        /// How many requests fail.
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
    /// Make metadata answers carry an error for a topic (--error NONE clears it).
    TopicError {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        error: String,
    },
}

pub async fn run(args: ChaosArgs) -> anyhow::Result<()> {
    let mut client = DevControlClient::new(args.client.connect(&args.control).await?);
    let reply = match args.action {
        ChaosAction::BrokerDown { broker } => {
            client
                .broker_down(pb::BrokerRequest { broker_id: broker })
                .await
        }
        ChaosAction::BrokerUp { broker } => {
            client
                .broker_up(pb::BrokerRequest { broker_id: broker })
                .await
        }
        ChaosAction::Leader {
            topic,
            partition,
            broker,
        } => {
            client
                .set_partition_leader(pb::SetPartitionLeaderRequest {
                    topic,
                    partition,
                    broker_id: broker,
                })
                .await
        }
        ChaosAction::Outage => {
            client
                .kafka_outage(pb::KafkaOutageRequest { down: true })
                .await
        }
        ChaosAction::Recover => {
            client
                .kafka_outage(pb::KafkaOutageRequest { down: false })
                .await
        }
        ChaosAction::Rtt { broker, ms } => {
            client
                .set_broker_rtt(pb::SetBrokerRttRequest {
                    broker_id: broker,
                    rtt_ms: ms,
                })
                .await
        }
        ChaosAction::InjectErrors { api, error, count } => {
            anyhow::ensure!(count > 0, "--count must be positive");
            client
                .inject_request_errors(pb::InjectRequestErrorsRequest {
                    api,
                    errors: vec![error; count as usize],
                })
                .await
        }
        ChaosAction::TopicError { topic, error } => {
            client
                .set_topic_error(pb::SetTopicErrorRequest { topic, error })
                .await
        }
    }
    .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))?;
    println!("{}", reply.into_inner().message);
    Ok(())
}
