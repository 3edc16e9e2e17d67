//! Follows the topology service's `WatchTopology` stream.
//!
//! It subscribes to the topics this gateway writes to (and again when another comes into
//! use), so a cluster's other topics cost it nothing. Each snapshot sets the brokers whose
//! partitions are held as draining, and when its leaders differ from the gateway's own
//! view it triggers an immediate metadata refresh, so leaderless partitions are held
//! before a record fails on them. The service is never
//! a hard dependency: the gateway keeps refreshing its own metadata, and marks learned
//! from the service are dropped once it has been unreachable for `stale_after`.

use crate::config::TopologyClientConfig;
use crate::metrics::GatewayMetrics;
use ballast_produce::Writer;
use ballast_proto::topology::v1 as pb;
use ballast_proto::topology::v1::topology_client::TopologyClient;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

/// How often the watcher looks for topics newly in use, to subscribe to them.
const TOPICS_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs until aborted.
pub(crate) fn spawn_watcher(
    writer: Arc<Writer>,
    metrics: GatewayMetrics,
    cfg: TopologyClientConfig,
    endpoint: String,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lost_at: Option<Instant> = Some(Instant::now());
        let mut holding = false;
        let mut logged_down = false;
        loop {
            let res = watch(
                &writer,
                &metrics,
                &cfg,
                &endpoint,
                &mut holding,
                &mut lost_at,
            )
            .await;
            if lost_at.is_some_and(|t| t.elapsed() < cfg.reconnect_backoff) {
                // The stream was up a moment ago: report the next failure again.
                logged_down = false;
            }
            match res {
                // A new topic came into use: subscribe again at once, with it.
                Ok(Ended::TopicsChanged) => continue,
                Ok(Ended::Closed) => {
                    tracing::info!(%endpoint, "topology stream ended; reconnecting")
                }
                Err(e) if !logged_down => {
                    tracing::warn!(%endpoint, error = %e, "topology service unreachable; steering by own metadata");
                    logged_down = true;
                }
                Err(_) => {}
            }
            metrics.topology_connected.set(0);
            let since = *lost_at.get_or_insert_with(Instant::now);
            if holding && since.elapsed() >= cfg.stale_after {
                tracing::warn!(
                    stale_after = ?cfg.stale_after,
                    "topology service gone too long; dropping its draining marks"
                );
                writer.set_draining_brokers(HashSet::new());
                holding = false;
            }
            tokio::time::sleep(cfg.reconnect_backoff).await;
        }
    })
}

enum Ended {
    Closed,
    TopicsChanged,
}

/// The topics this gateway has written to, sorted.
fn in_use(writer: &Writer) -> Vec<String> {
    let mut topics = writer.topics_in_use();
    topics.sort_unstable();
    topics
}

/// Follows the stream for the topics in use (brokers and draining marks always come), until
/// it ends or another topic comes into use.
async fn watch(
    writer: &Writer,
    metrics: &GatewayMetrics,
    cfg: &TopologyClientConfig,
    endpoint: &str,
    holding: &mut bool,
    lost_at: &mut Option<Instant>,
) -> Result<Ended, String> {
    let topics = in_use(writer);
    let channel = cfg
        .client
        .endpoint(endpoint)
        .map_err(|e| format!("{e:#}"))?
        .connect_timeout(cfg.connect_timeout)
        .http2_keep_alive_interval(cfg.keepalive_interval)
        .keep_alive_timeout(cfg.keepalive_interval)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let channel = cfg.client.wrap(channel).map_err(|e| format!("{e:#}"))?;
    let mut stream = TopologyClient::new(channel)
        .watch_topology(pb::WatchTopologyRequest {
            topics: Some(pb::TopicSelection {
                names: topics.clone(),
            }),
        })
        .await
        .map_err(|e| format!("watch: {e}"))?
        .into_inner();
    tracing::info!(%endpoint, "following topology");
    metrics.topology_connected.set(1);
    *lost_at = None;
    let mut last_version = 0;
    let mut check = tokio::time::interval(TOPICS_CHECK);
    loop {
        let message = tokio::select! {
            m = stream.message() => m,
            _ = check.tick() => {
                if in_use(writer) != topics {
                    return Ok(Ended::TopicsChanged);
                }
                continue;
            }
        };
        let snap = match message {
            Ok(Some(s)) => s,
            Ok(None) => {
                *lost_at = Some(Instant::now());
                return Ok(Ended::Closed);
            }
            Err(e) => {
                *lost_at = Some(Instant::now());
                return Err(format!("stream: {e}"));
            }
        };
        if snap.version <= last_version {
            tracing::debug!(
                version = snap.version,
                last_version,
                "stale snapshot ignored"
            );
            continue;
        }
        last_version = snap.version;
        apply(writer, metrics, &snap, holding).await;
    }
}

async fn apply(
    writer: &Writer,
    metrics: &GatewayMetrics,
    snap: &pb::TopologySnapshot,
    holding: &mut bool,
) {
    metrics.topology_updates.inc();
    let draining: HashSet<i32> = snap.draining_brokers.iter().copied().collect();
    *holding = !draining.is_empty();
    writer.set_draining_brokers(draining);
    if snap.kafka_reachable && leaders_differ(writer, snap) {
        if let Err(e) = writer.refresh_metadata().await {
            tracing::debug!(error = %e, "refresh after a topology change failed");
        }
    }
    tracing::debug!(
        version = snap.version,
        draining = ?snap.draining_brokers,
        "topology applied"
    );
}

/// Whether the snapshot names a different leader than the gateway's last metadata for any
/// partition of a topic the gateway knows.
fn leaders_differ(writer: &Writer, snap: &pb::TopologySnapshot) -> bool {
    let md = writer.metadata();
    let ours: HashMap<(&str, i32), i32> = md
        .topics
        .iter()
        .flat_map(|t| {
            let md = &md;
            t.partitions.iter().map(move |p| {
                (
                    (t.name.as_str(), p.partition),
                    md.live_leader(p).unwrap_or(-1),
                )
            })
        })
        .collect();
    snap.topics.iter().any(|t| {
        t.partitions.iter().any(|p| {
            ours.get(&(t.name.as_str(), p.partition))
                .is_some_and(|&l| l != p.leader)
        })
    })
}
