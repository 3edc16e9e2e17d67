//! Balancer and breaker settings. Every duration and limit is configurable.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Per-partition circuit breaker settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// The sliding window in which failures are counted.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub window: Duration,
    /// Failures within `window` that open the breaker.
    pub failure_threshold: u32,
    /// How long the breaker stays open the first time.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub open_base: Duration,
    /// The cap on the open period, which doubles each time a probe fails.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "humantime"))]
    pub open_max: Duration,
    /// Probes admitted at once while half-open.
    pub half_open_probes: u32,
    /// Successful probes that close the breaker.
    pub close_after_successes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            failure_threshold: 3,
            open_base: Duration::from_secs(1),
            open_max: Duration::from_secs(60),
            half_open_probes: 1,
            close_after_successes: 1,
        }
    }
}

impl BreakerConfig {
    /// Checks the settings, with a message naming the bad field.
    pub fn validate(&self) -> Result<(), String> {
        if self.failure_threshold == 0 {
            return Err("breaker.failure_threshold must be at least 1".into());
        }
        if self.half_open_probes == 0 {
            return Err("breaker.half_open_probes must be at least 1".into());
        }
        if self.close_after_successes == 0 {
            return Err("breaker.close_after_successes must be at least 1".into());
        }
        if self.open_base.is_zero() || self.open_max < self.open_base {
            return Err("breaker.open_base must be positive and at most breaker.open_max".into());
        }
        if self.window.is_zero() {
            return Err("breaker.window must be positive".into());
        }
        Ok(())
    }
}

/// Zone-aware spillover of unkeyed records, as Envoy's zone-aware routing does it: stay in
/// the zone while its partitions can carry the zone's share of the topic's records, and
/// otherwise spill the excess to the other zones' partitions, in proportion to their
/// number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SpilloverConfig {
    /// false: every unkeyed record goes to a partition led in the zone while one is
    /// healthy, however few they are.
    pub enabled: bool,
    /// The share of a topic's unkeyed records that this zone's processes send, in
    /// percent (1 to 100). Unset: an equal share per zone, 100 divided by the number of
    /// racks among the live brokers.
    #[schemars(range(min = 1, max = 100))]
    pub zone_share_percent: Option<u8>,
}

impl Default for SpilloverConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            zone_share_percent: None,
        }
    }
}

impl SpilloverConfig {
    pub fn validate(&self) -> Result<(), String> {
        match self.zone_share_percent {
            Some(p) if p == 0 || p > 100 => Err(format!(
                "spillover.zone_share_percent is {p}; it must be between 1 and 100"
            )),
            _ => Ok(()),
        }
    }
}

/// Balancer settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct BalancerConfig {
    /// The rack (availability zone) of this process; unkeyed records prefer partitions
    /// whose leader is in it. None disables rack preference.
    pub rack: Option<String>,
    pub breaker: BreakerConfig,
    /// Unkeyed records placed on one partition in a row (while it stays among the best)
    /// before the least-loaded partition is chosen again, so the producer builds larger
    /// batches, as Kafka's sticky partitioner does. 1 disables stickiness.
    pub sticky_records: u32,
    pub spillover: SpilloverConfig,
}

impl Default for BalancerConfig {
    fn default() -> Self {
        Self {
            rack: None,
            breaker: BreakerConfig::default(),
            sticky_records: 100,
            spillover: SpilloverConfig::default(),
        }
    }
}
