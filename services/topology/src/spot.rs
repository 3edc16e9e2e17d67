//! The spot-interruption watcher: polls IMDS beside a broker and marks it draining in the
//! topology service when a notice arrives. `ballast topology watch-spot` runs it (the
//! systemd unit in `deploy/systemd`).

use anyhow::bail;
use ballast_proto::topology::v1 as pb;
use ballast_proto::topology::v1::topology_client::TopologyClient;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct WatchSpotArgs {
    /// The broker this instance runs.
    #[arg(long)]
    pub broker_id: i32,
    /// The instance metadata service (IMDSv2).
    #[arg(
        long,
        env = "BALLAST_IMDS_ENDPOINT",
        default_value = "http://169.254.169.254"
    )]
    pub imds_endpoint: String,
    /// How often to poll. AWS posts the notice two minutes ahead; poll every few seconds.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Exit after the first notice has been delivered.
    #[arg(long)]
    pub once: bool,
}

/// The body of `/latest/meta-data/spot/instance-action`.
#[derive(Debug, serde::Deserialize)]
struct InstanceAction {
    action: String,
    time: String,
}

const INSTANCE_ACTION: &str = "/latest/meta-data/spot/instance-action";

/// Polls IMDS until a notice arrives, then marks the broker draining, and keeps the mark in
/// place (re-sent each poll, which changes nothing while it holds) until stopped.
pub async fn watch_spot(
    topology: &str,
    security: &ballast_security::ClientSecurity,
    w: WatchSpotArgs,
) -> anyhow::Result<()> {
    if w.interval.is_zero() {
        bail!("--interval must be positive");
    }
    let imds = aws_config::imds::Client::builder()
        .endpoint(&w.imds_endpoint)
        .map_err(|e| anyhow::anyhow!("bad --imds-endpoint {:?}: {e}", w.imds_endpoint))?
        .connect_timeout(Duration::from_secs(1))
        .read_timeout(Duration::from_secs(2))
        .build();
    let endpoint = ballast_security::service_url(topology);
    tracing::info!(broker = w.broker_id, imds = %w.imds_endpoint, %endpoint, "watching for spot interruption notices");
    let mut announced = false;
    let mut imds_down = false;
    let mut tick = tokio::time::interval(w.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let shutdown = ballast_telemetry::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut shutdown => return Ok(()),
        }
        let notice = match imds.get(INSTANCE_ACTION).await {
            Ok(body) => body,
            Err(aws_config::imds::client::error::ImdsError::ErrorResponse(r))
                if r.response().status().as_u16() == 404 =>
            {
                if imds_down {
                    tracing::info!("instance metadata reachable again");
                    imds_down = false;
                }
                continue; // no notice
            }
            Err(e) => {
                if !imds_down {
                    tracing::warn!(error = %e, "instance metadata unavailable; retrying every poll");
                    imds_down = true;
                }
                continue;
            }
        };
        let action: InstanceAction = match serde_json::from_str(notice.as_ref()) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, body = notice.as_ref(), "unreadable instance-action; retrying");
                continue;
            }
        };
        let deadline = humantime::parse_rfc3339_weak(&action.time)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64);
        let mark = async {
            let mut c = TopologyClient::new(security.connect(&endpoint).await?);
            let r = c
                .mark_broker_draining(pb::MarkBrokerDrainingRequest {
                    broker_id: w.broker_id,
                    deadline_unix_ms: deadline,
                    reason: format!("spot {} at {}", action.action, action.time),
                })
                .await?;
            Ok::<_, anyhow::Error>(r.into_inner().version)
        };
        match mark.await {
            Ok(version) => {
                if !announced {
                    println!(
                        "{}",
                        serde_json::json!({
                            "event": "draining",
                            "broker_id": w.broker_id,
                            "action": action.action,
                            "time": action.time,
                            "deadline_unix_ms": deadline,
                            "topology_version": version,
                        })
                    );
                    announced = true;
                }
                if w.once {
                    return Ok(());
                }
            }
            Err(e) => tracing::error!(error = %e, "could not mark the broker draining; retrying"),
        }
    }
}
