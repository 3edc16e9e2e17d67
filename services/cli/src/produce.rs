//! `ballast produce`: sends records through a gateway and prints one line per result.

use ballast_proto::ingest::v1 as pb;
use ballast_proto::ingest::v1::ingest_client::IngestClient;

#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    /// The gateway address.
    #[arg(long, default_value = "127.0.0.1:50051", env = "BALLAST_GATEWAY")]
    pub gateway: String,
    #[command(flatten)]
    pub client: ballast_security::ClientArgs,
    #[arg(long)]
    pub topic: String,
    /// A record key; records without one are spread over healthy partitions.
    #[arg(long)]
    pub key: Option<String>,
    /// Let a keyed record move when its partition is unhealthy.
    #[arg(long)]
    pub preferred: bool,
    /// How many copies of the record to send, in one request.
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// The record value.
    #[arg(default_value = "hello from ballast")]
    pub value: String,
}

pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let mut client = IngestClient::new(args.client.connect(&args.gateway).await?);
    let records = (0..args.count)
        .map(|_| pb::Record {
            topic: args.topic.clone(),
            key: args.key.clone().map(|k| k.into_bytes().into()),
            value: args.value.clone().into_bytes().into(),
            key_policy: if args.preferred {
                pb::KeyPolicy::Preferred as i32
            } else {
                pb::KeyPolicy::Strict as i32
            },
            ..Default::default()
        })
        .collect();
    let resp = client
        .produce(pb::ProduceRequest { records })
        .await
        .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))?
        .into_inner();
    let mut failed = 0;
    for r in resp.results {
        match r.outcome {
            Some(pb::record_result::Outcome::Kafka(a)) => {
                println!(
                    "{}  kafka  partition={} offset={}",
                    r.message_id, a.partition, a.offset
                )
            }
            Some(pb::record_result::Outcome::Failover(f)) => println!(
                "{}  failover  backend={} queue={} entry={}",
                r.message_id, f.backend, f.queue, f.entry_id
            ),
            Some(pb::record_result::Outcome::Error(e)) => {
                failed += 1;
                let code = ballast_proto::common::v1::Code::try_from(e.code)
                    .map(|c| c.as_str_name())
                    .unwrap_or("CODE_UNKNOWN");
                println!(
                    "{}  error  {code} retryable={} {}",
                    r.message_id, e.retryable, e.message
                )
            }
            None => {
                failed += 1;
                println!("{}  error  empty result", r.message_id)
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} record(s) were not acknowledged");
    }
    Ok(())
}
