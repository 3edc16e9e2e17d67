//! `ballast consume`: the reference consumer (`ballast_dedup_store::consumer`) on the
//! command line. It processes each record once per group with the dedup service, however
//! many copies failover put in Kafka; its only work is an optional delay per record.

use ballast_dedup_store::client::DedupClient;
use ballast_dedup_store::consumer::{self, ConsumeCounts, ConsumerOptions};
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    #[arg(long, env = "BALLAST_KAFKA_BOOTSTRAP")]
    pub bootstrap: String,
    /// CA (PEM) of the brokers' certificates: reads Kafka over TLS.
    #[arg(long, env = "BALLAST_KAFKA_TLS_CA")]
    pub kafka_tls_ca: Option<std::path::PathBuf>,
    /// Client certificate and key (PEM) for brokers that require mTLS.
    #[arg(long, requires_all = ["kafka_tls_ca", "kafka_tls_key"])]
    pub kafka_tls_cert: Option<std::path::PathBuf>,
    #[arg(long, requires = "kafka_tls_cert")]
    pub kafka_tls_key: Option<std::path::PathBuf>,
    /// SASL to Kafka: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM
    /// (over TLS when --kafka-tls-ca is given).
    #[arg(long, env = "BALLAST_KAFKA_SASL_MECHANISM", value_parser = parse_mechanism)]
    pub kafka_sasl_mechanism: Option<ballast_kafka::SaslMechanism>,
    #[arg(
        long,
        env = "BALLAST_KAFKA_SASL_USERNAME",
        requires = "kafka_sasl_mechanism"
    )]
    pub kafka_sasl_username: Option<String>,
    /// A file holding the SASL password.
    #[arg(
        long,
        env = "BALLAST_KAFKA_SASL_PASSWORD_FILE",
        requires = "kafka_sasl_mechanism"
    )]
    pub kafka_sasl_password_file: Option<std::path::PathBuf>,
    /// A file holding the OAUTHBEARER token.
    #[arg(
        long,
        env = "BALLAST_KAFKA_SASL_TOKEN_FILE",
        requires = "kafka_sasl_mechanism"
    )]
    pub kafka_sasl_token_file: Option<std::path::PathBuf>,
    /// AWS_MSK_IAM: the cluster's region.
    #[arg(
        long,
        env = "BALLAST_KAFKA_SASL_AWS_REGION",
        requires = "kafka_sasl_mechanism"
    )]
    pub kafka_sasl_aws_region: Option<String>,
    #[arg(long)]
    pub topic: String,
    /// The consumer group, also the dedup group.
    #[arg(long)]
    pub group: String,
    /// How to reach a secured dedup service.
    #[command(flatten)]
    pub client: ballast_security::ClientArgs,
    /// The dedup service address.
    #[arg(long, env = "BALLAST_DEDUP")]
    pub dedup: String,
    /// The processing lease of a batch: its work must finish within it.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub lease: Duration,
    /// Stop after this long without a record, once records have arrived.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub idle_exit: Duration,
    /// How long to wait for the first record (joining the group takes a while).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub start_timeout: Duration,
    /// Stop after this many records.
    #[arg(long)]
    pub max_records: Option<u64>,
    /// Records claimed in one dedup call: whatever has arrived, up to this many.
    #[arg(long, default_value_t = 200)]
    pub batch: usize,
    /// The consumer group session timeout: how soon a dead member's partitions move.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub session_timeout: Duration,
    /// Simulated work per record (this example's processing is otherwise only counting).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub work_delay: Duration,
    /// Append each message id to this file when its processing is committed.
    #[arg(long)]
    pub processed_log: Option<std::path::PathBuf>,
    /// How long dedup may keep failing before the consumer gives up (it retries meanwhile).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub dedup_retry_for: Duration,
    /// Append each message id to this file when dedup reports it already processed.
    #[arg(long)]
    pub duplicates_log: Option<std::path::PathBuf>,
}

fn parse_mechanism(s: &str) -> Result<ballast_kafka::SaslMechanism, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
        format!("{s}: expected PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM")
    })
}

impl ConsumeArgs {
    /// The Kafka security these flags describe: TLS with `--kafka-tls-ca`, SASL with
    /// `--kafka-sasl-mechanism`.
    pub fn kafka_security(&self) -> anyhow::Result<ballast_kafka::KafkaSecurity> {
        use ballast_kafka::SecurityProtocol::*;
        let protocol = match (
            self.kafka_tls_ca.is_some(),
            self.kafka_sasl_mechanism.is_some(),
        ) {
            (false, false) => Plaintext,
            (true, false) => Ssl,
            (false, true) => SaslPlaintext,
            (true, true) => SaslSsl,
        };
        let security = ballast_kafka::KafkaSecurity {
            protocol,
            ssl: ballast_kafka::KafkaSsl {
                ca_file: self.kafka_tls_ca.clone(),
                cert_file: self.kafka_tls_cert.clone(),
                key_file: self.kafka_tls_key.clone(),
            },
            sasl: ballast_kafka::KafkaSasl {
                mechanism: self.kafka_sasl_mechanism,
                username: self.kafka_sasl_username.clone(),
                password_file: self.kafka_sasl_password_file.clone(),
                token_file: self.kafka_sasl_token_file.clone(),
                aws_region: self.kafka_sasl_aws_region.clone(),
            },
        };
        security
            .validate(&Default::default())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(security)
    }

    /// The consumer library's options these flags describe.
    pub fn options(&self) -> anyhow::Result<ConsumerOptions> {
        anyhow::ensure!(self.batch > 0, "--batch must be positive");
        Ok(ConsumerOptions {
            bootstrap: self.bootstrap.clone(),
            security: self.kafka_security()?,
            topic: self.topic.clone(),
            group: self.group.clone(),
            lease: self.lease,
            idle_exit: self.idle_exit,
            start_timeout: self.start_timeout,
            max_records: self.max_records,
            batch: self.batch,
            session_timeout: self.session_timeout,
            dedup_retry_for: self.dedup_retry_for,
            processed_log: self.processed_log.clone(),
            duplicates_log: self.duplicates_log.clone(),
        })
    }
}

/// Runs the reference consumer with these flags; `progress` sees the counts after every
/// batch.
pub async fn consume(
    args: &ConsumeArgs,
    progress: impl FnMut(&ConsumeCounts),
) -> anyhow::Result<ConsumeCounts> {
    let opts = args.options()?;
    let dedup = DedupClient::connect_with(
        &ballast_security::service_url(&args.dedup),
        format!("consume-{}", std::process::id()),
        &args.client.security(),
    )
    .await?;
    let delay = args.work_delay;
    consumer::consume(
        &opts,
        &dedup,
        |_record| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, std::convert::Infallible>(())
        },
        progress,
    )
    .await
}

pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let c = consume(&args, |_| {}).await?;
    println!("read                 {}", c.read);
    println!("unique ids seen      {}", c.unique_ids);
    println!("processed (unique)   {}", c.processed);
    println!("duplicates skipped   {}", c.duplicates);
    Ok(())
}
