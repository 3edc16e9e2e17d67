//! `ballast dlq`: the dead-letter store and queue statistics, through RetryAdmin.

use ballast_proto::retry::v1 as pb;
use ballast_proto::retry::v1::retry_admin_client::RetryAdminClient;

#[derive(Debug, clap::Args)]
pub struct DlqArgs {
    /// The RetryAdmin address (`retry_admin` in the `ballast-dev up` ready line).
    #[arg(long, env = "BALLAST_RETRY_ADMIN")]
    pub admin: String,
    #[command(flatten)]
    pub client: ballast_security::ClientArgs,
    #[command(subcommand)]
    pub action: DlqAction,
}

#[derive(Debug, clap::Subcommand)]
pub enum DlqAction {
    /// Queue depth, age, in flight, redelivered, dead letters.
    Stats,
    /// Dead letters, a page at a time.
    List {
        #[arg(long, default_value_t = 50)]
        page_size: u32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Move dead letters back to the queue (attempts reset).
    Redrive {
        #[arg(long = "id")]
        ids: Vec<String>,
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Delete dead letters for good.
    Purge {
        #[arg(long = "id")]
        ids: Vec<String>,
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
}

fn ms_ago(unix_ms: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    if unix_ms <= 0 {
        return "-".into();
    }
    format!("{}s ago", ((now - unix_ms).max(0)) / 1000)
}

pub async fn run(args: DlqArgs) -> anyhow::Result<()> {
    let mut c = RetryAdminClient::new(args.client.connect(&args.admin).await?);
    let fail = |s: tonic::Status| anyhow::anyhow!("{}: {}", s.code(), s.message());
    match args.action {
        DlqAction::Stats => {
            let s = c
                .stats(pb::StatsRequest {})
                .await
                .map_err(fail)?
                .into_inner();
            println!("{:<14} {}", "backend", s.backend);
            println!("{:<14} {}", "queue", s.queue);
            println!("{:<14} {}", "depth", s.depth);
            let ms = |v: Option<u64>, none: &str| v.map_or(none.to_string(), |v| format!("{v} ms"));
            println!("{:<14} {}", "oldest age", ms(s.oldest_age_ms, "unknown"));
            println!("{:<14} {}", "in flight", s.in_flight);
            println!("{:<14} {}", "redelivered", s.redelivered);
            println!("{:<14} {}", "dead letters", s.dead_letters);
            println!(
                "{:<14} {}",
                "oldest dead",
                ms(s.dead_letter_oldest_age_ms, "unknown")
            );
            println!(
                "{:<14} {}",
                "retention",
                ms(s.retention_ms, "until deleted")
            );
        }
        DlqAction::List {
            page_size,
            page_token,
        } => {
            let r = c
                .list_dead_letters(pb::ListDeadLettersRequest {
                    page_size,
                    page_token,
                })
                .await
                .map_err(fail)?
                .into_inner();
            println!(
                "{:<38} {:<16} {:<28} {:>8} {:>12}  reason",
                "id", "topic", "message id", "attempts", "dead"
            );
            for d in &r.dead_letters {
                println!(
                    "{:<38} {:<16} {:<28} {:>8} {:>12}  {}",
                    d.id,
                    d.topic,
                    d.message_id,
                    d.attempts,
                    ms_ago(d.dead_at_unix_ms),
                    d.reason
                );
            }
            println!("{} dead letter(s)", r.dead_letters.len());
            if !r.next_page_token.is_empty() {
                println!("next page: --page-token {}", r.next_page_token);
            }
        }
        DlqAction::Redrive { ids, all } => {
            let r = c
                .redrive(pb::RedriveRequest { ids, all })
                .await
                .map_err(fail)?
                .into_inner();
            println!("redriven {}", r.redriven);
        }
        DlqAction::Purge { ids, all } => {
            let r = c
                .purge(pb::PurgeRequest { ids, all })
                .await
                .map_err(fail)?
                .into_inner();
            println!("purged {}", r.purged);
        }
    }
    Ok(())
}
