//! Keeps the balancer's view of leaders and racks fresh.

use crate::produce::Producer;
use std::sync::Arc;
use std::time::Duration;

/// Refreshes metadata every `interval` until the task is aborted.
pub(crate) fn spawn_refresher(
    producer: Arc<Producer>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; the startup refresh already covers it.
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = producer.refresh_metadata().await {
                tracing::warn!(error = %e, "metadata refresh failed; keeping the last view");
            }
        }
    })
}
