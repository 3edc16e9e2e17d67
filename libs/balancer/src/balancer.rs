//! Partition choice over per-(topic, partition) breakers and leader metadata.
//!
//! - Unkeyed records: healthy partitions whose leader is in this process's rack first,
//!   then any healthy partition; the least loaded (in-flight writes) wins, ties rotate.
//!   When the zone leads too few healthy partitions to carry its share of the topic's
//!   records, the excess spills to the other zones' partitions (see [`SpilloverConfig`]).
//!   A chosen partition keeps the next `sticky_records` records while it stays healthy and
//!   in the tier it was chosen from, so the producer sends larger batches.
//! - STRICT keyed records: only `murmur2(key) % partitions`; an error when it is unhealthy.
//! - PREFERRED keyed records: the murmur2 partition when healthy, else rehashed over the
//!   healthy partitions (sorted), so a key still sticks to one partition during an outage.
//! - An explicit partition is used as is when healthy.
//!
//! Unlike a balancer that opens a breaker for a fixed minute on one failure and sends
//! everything to partition 0 when all are open, this one counts failures in a window,
//! backs off exponentially, probes before closing, and says plainly when no partition can
//! take a record so the caller can fail over.

use crate::breaker::{Admission, Breaker, BreakerState};
use crate::config::BalancerConfig;
#[cfg(doc)]
use crate::config::SpilloverConfig;
use crate::murmur2::{murmur2, partition_for_key, to_positive};
use std::collections::HashSet;
use std::time::Instant;

/// How a keyed record may move when its hash partition is unhealthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyPolicy {
    #[default]
    Strict,
    Preferred,
}

/// Leader metadata of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMeta {
    pub partition: i32,
    /// None when the partition has no live leader.
    pub leader: Option<i32>,
    pub leader_rack: Option<String>,
}

/// What to place.
#[derive(Debug, Clone, Copy)]
pub struct PickRequest<'a> {
    pub topic: &'a str,
    pub key: Option<&'a [u8]>,
    pub policy: KeyPolicy,
    pub partition: Option<i32>,
    /// Partitions already tried for this record.
    pub exclude: &'a [i32],
    /// Whether the record may serve as a half-open probe when it can move between
    /// partitions. A record that already failed once should not: a second failed probe
    /// would cost it another write timeout.
    pub allow_probe: bool,
}

/// A placement. Report its outcome with [`Balancer::complete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    pub partition: i32,
    pub admission: Admission,
    /// Whether the partition's leader is in this process's rack.
    pub local: bool,
}

/// Why no partition was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickError {
    UnknownTopic,
    InvalidPartition {
        partition: i32,
        partitions: usize,
    },
    /// The only partition the record may go to cannot take it now.
    PartitionUnavailable {
        partition: i32,
    },
    /// No partition of the topic can take the record now.
    NoHealthyPartition,
}

impl std::fmt::Display for PickError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PickError::UnknownTopic => write!(f, "unknown topic"),
            PickError::InvalidPartition {
                partition,
                partitions,
            } => write!(
                f,
                "partition {partition} does not exist (topic has {partitions})"
            ),
            PickError::PartitionUnavailable { partition } => {
                write!(f, "partition {partition} is unavailable")
            }
            PickError::NoHealthyPartition => write!(f, "no healthy partition"),
        }
    }
}

impl std::error::Error for PickError {}

/// A point-in-time view of one partition, for metrics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStatus {
    pub partition: i32,
    pub leader: Option<i32>,
    pub leader_rack: Option<String>,
    pub state: BreakerState,
    pub in_flight: u32,
    pub draining: bool,
}

#[derive(Debug, Clone, Default)]
struct PartitionState {
    leader: Option<i32>,
    leader_rack: Option<String>,
    breaker: Breaker,
    in_flight: u32,
    draining: bool,
    cluster_down: bool,
}

impl PartitionState {
    fn sync_hold(&mut self) {
        if self.leader.is_none() || self.draining || self.cluster_down {
            self.breaker.hold();
        } else {
            self.breaker.release();
        }
    }
}

/// The partition unkeyed records stick to, how many more it takes, and the tier it was
/// chosen from.
#[derive(Debug, Clone, Copy)]
struct Sticky {
    partition: usize,
    left: u32,
    tier: Tier,
}

/// Where an unkeyed record's partition was chosen from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier {
    /// Led in this process's zone.
    Local,
    /// Another zone's, while the zone's own cannot carry its share.
    Spill,
    /// Another zone's, as none of the zone's own can take it (or no zone is known).
    Other,
}

/// One topic's partitions, and what the balancer keeps for it.
#[derive(Debug, Default)]
struct TopicState {
    partitions: Vec<PartitionState>,
    sticky: Option<Sticky>,
    /// The spillover's running count: above zero, a local choice is due.
    local_credit: f64,
    /// Turns taken among tied partitions, locally and in other zones.
    turns: [usize; 2],
    /// Records have been written to it (see [`Balancer::touch`]).
    used: bool,
}

#[derive(Debug, Default)]
pub struct Balancer {
    cfg: BalancerConfig,
    /// Keyed by topic with foldhash: a pick and a completion each look their topic up once,
    /// on every record.
    topics: foldhash::HashMap<String, TopicState>,
    draining: HashSet<i32>,
    /// No broker answered the last metadata request.
    cluster_down: bool,
    /// Racks among the live brokers (see [`Balancer::set_zones`]).
    zones: usize,
}

impl Balancer {
    pub fn new(cfg: BalancerConfig) -> Self {
        Self {
            cfg,
            ..Self::default()
        }
    }

    pub fn config(&self) -> &BalancerConfig {
        &self.cfg
    }

    /// Installs fresh metadata for a topic. Partitions without a leader, or whose leader is
    /// draining, are held open; partitions whose leader returns go half-open.
    pub fn update_topic(&mut self, topic: &str, partitions: &[PartitionMeta]) {
        let count = partitions
            .iter()
            .map(|p| p.partition + 1)
            .max()
            .unwrap_or(0)
            .max(0) as usize;
        let states = &mut self.topics.entry(topic.to_owned()).or_default().partitions;
        states.resize_with(count, PartitionState::default);
        // Partitions missing from the metadata have no known leader.
        let mut seen = vec![false; count];
        for meta in partitions {
            if meta.partition < 0 {
                continue;
            }
            let st = &mut states[meta.partition as usize];
            seen[meta.partition as usize] = true;
            st.leader = meta.leader;
            st.leader_rack = meta.leader_rack.clone();
            st.draining = meta.leader.is_some_and(|l| self.draining.contains(&l));
            st.cluster_down = self.cluster_down;
            st.sync_hold();
        }
        for (st, seen) in states.iter_mut().zip(seen) {
            if !seen {
                st.leader = None;
                st.sync_hold();
            }
        }
    }

    /// Marks the whole cluster unreachable (no broker answered metadata): every partition is
    /// held open, so records fail over at once instead of each waiting out a write timeout.
    /// When it answers again, every partition goes half-open.
    pub fn set_cluster_reachable(&mut self, reachable: bool) {
        if self.cluster_down != reachable {
            return;
        }
        self.cluster_down = !reachable;
        for t in self.topics.values_mut() {
            for st in t.partitions.iter_mut() {
                st.cluster_down = !reachable;
                st.sync_hold();
            }
        }
    }

    /// Sets the number of racks among the live brokers: with an equal share per zone, a
    /// zone sends `1 / zones` of a topic's records.
    pub fn set_zones(&mut self, zones: usize) {
        self.zones = zones;
    }

    /// The share of a topic's records this process's zone sends, when spillover applies,
    /// as a fraction `(numerator, denominator)`.
    fn zone_share(&self) -> Option<(usize, usize)> {
        let s = &self.cfg.spillover;
        if !s.enabled || self.cfg.rack.is_none() {
            return None;
        }
        match s.zone_share_percent {
            Some(p) => Some((usize::from(p), 100)),
            None if self.zones > 1 => Some((1, self.zones)),
            None => None,
        }
    }

    /// Forgets a topic that no longer exists.
    pub fn remove_topic(&mut self, topic: &str) {
        self.topics.remove(topic);
    }

    /// Marks `topic` as in use and returns its partition count; `None` (and nothing
    /// marked) when the topic is unknown.
    pub fn touch(&mut self, topic: &str) -> Option<usize> {
        let t = self.topics.get_mut(topic)?;
        t.used = true;
        Some(t.partitions.len())
    }

    /// The known topics records have been written to.
    pub fn topics_in_use(&self) -> impl Iterator<Item = &str> {
        self.topics
            .iter()
            .filter(|(_, t)| t.used)
            .map(|(name, _)| name.as_str())
    }

    /// Sets the brokers that are about to go away. Partitions they lead are held open at once.
    pub fn set_draining_brokers(&mut self, brokers: HashSet<i32>) {
        self.draining = brokers;
        for t in self.topics.values_mut() {
            for st in t.partitions.iter_mut() {
                st.draining = st.leader.is_some_and(|l| self.draining.contains(&l));
                st.sync_hold();
            }
        }
    }

    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.topics.keys().map(String::as_str)
    }

    pub fn partition_count(&self, topic: &str) -> Option<usize> {
        self.topics.get(topic).map(|t| t.partitions.len())
    }

    /// `partition` and every other partition of the topic with the same leader. A write that
    /// timed out on one of them says the leader is sick, so a rerouted record avoids all.
    pub fn same_leader_partitions(&self, topic: &str, partition: i32) -> Vec<i32> {
        let Some(states) = self.partitions(topic) else {
            return vec![partition];
        };
        let leader = states.get(partition as usize).and_then(|s| s.leader);
        let mut out: Vec<i32> = match leader {
            Some(l) => (0..states.len() as i32)
                .filter(|&p| states[p as usize].leader == Some(l))
                .collect(),
            None => Vec::new(),
        };
        if !out.contains(&partition) {
            out.push(partition);
        }
        out
    }

    /// Whether `pick` would place this record now, without admitting it. The retry workers
    /// use it to hold back a STRICT keyed record while its own partition is unhealthy
    /// instead of spending its attempts.
    pub fn could_place(&self, req: &PickRequest<'_>, now: Instant) -> bool {
        let Some(states) = self.partitions(req.topic) else {
            return false;
        };
        let n = states.len();
        let usable = |p: usize| p < n && states[p].breaker.admissible(&self.cfg.breaker, now);
        match (req.partition, req.key, req.policy) {
            (Some(p), _, _) => p >= 0 && usable(p as usize),
            (None, Some(key), KeyPolicy::Strict) if n > 0 => {
                usable(partition_for_key(key, n) as usize)
            }
            _ => (0..n).any(usable),
        }
    }

    /// Whether any partition of the topic could take a record now.
    pub fn has_healthy_partition(&self, topic: &str, now: Instant) -> bool {
        self.partitions(topic).is_some_and(|states| {
            states
                .iter()
                .any(|s| s.breaker.admissible(&self.cfg.breaker, now))
        })
    }

    /// Chooses a partition and admits the write through its breaker.
    pub fn pick(&mut self, req: &PickRequest<'_>, now: Instant) -> Result<Pick, PickError> {
        let zone_share = self.zone_share();
        let bcfg = &self.cfg.breaker;
        let rack = self.cfg.rack.as_deref();
        let TopicState {
            partitions,
            sticky,
            local_credit,
            turns,
            ..
        } = self
            .topics
            .get_mut(req.topic)
            .ok_or(PickError::UnknownTopic)?;
        let states = &*partitions;
        let n = states.len();
        if n == 0 {
            return Err(PickError::UnknownTopic);
        }
        let usable = |p: usize| {
            !req.exclude.contains(&(p as i32)) && states[p].breaker.admissible(bcfg, now)
        };
        // For records that may move: a partition they may be placed on.
        let movable_to =
            |p: usize| usable(p) && (req.allow_probe || states[p].breaker.is_closed(now));

        let chosen = if let Some(p) = req.partition {
            if p < 0 || p as usize >= n {
                return Err(PickError::InvalidPartition {
                    partition: p,
                    partitions: n,
                });
            }
            if !usable(p as usize) {
                return Err(PickError::PartitionUnavailable { partition: p });
            }
            p as usize
        } else if let Some(key) = req.key {
            let home = partition_for_key(key, n) as usize;
            match req.policy {
                KeyPolicy::Strict if usable(home) => home,
                KeyPolicy::Strict => {
                    return Err(PickError::PartitionUnavailable {
                        partition: home as i32,
                    })
                }
                KeyPolicy::Preferred if usable(home) => home,
                KeyPolicy::Preferred => {
                    let healthy: Vec<usize> = (0..n).filter(|&p| movable_to(p)).collect();
                    if healthy.is_empty() {
                        return Err(PickError::NoHealthyPartition);
                    }
                    healthy[to_positive(murmur2(key)) as usize % healthy.len()]
                }
            }
        } else {
            let is_local = |p: usize| rack.is_some() && states[p].leader_rack.as_deref() == rack;
            let (mut locals, mut others) = (0usize, 0usize);
            for p in (0..n).filter(|&p| movable_to(p)) {
                if is_local(p) {
                    locals += 1;
                } else {
                    others += 1;
                }
            }
            // The share of records the zone's partitions can carry: their share of the
            // movable partitions over the zone's share of the records, at most all.
            let local_share = match (locals, others, zone_share) {
                (0, _, _) => 0.0,
                (l, o, Some((num, den))) if o > 0 && l * den < (l + o) * num => {
                    (l * den) as f64 / ((l + o) * num) as f64
                }
                _ => 1.0,
            };
            // Stay on the sticky partition while it is usable, closed and its tier still
            // applies.
            let kept = sticky.as_mut().filter(|s| {
                s.left > 0
                    && req.allow_probe
                    && movable_to(s.partition)
                    && states[s.partition].breaker.is_closed(now)
                    && match s.tier {
                        Tier::Local => is_local(s.partition),
                        Tier::Spill => local_share < 1.0,
                        Tier::Other => locals == 0,
                    }
            });
            match kept {
                Some(s) => {
                    s.left -= 1;
                    s.partition
                }
                None => {
                    let tier = match (locals, others) {
                        (0, 0) => return Err(PickError::NoHealthyPartition),
                        (_, 0) => Tier::Local,
                        (0, _) => Tier::Other,
                        _ if local_share >= 1.0 => {
                            *local_credit = 0.0;
                            Tier::Local
                        }
                        // Local for `local_share` of the choices, over time: the credit
                        // stays within (-1, 1), and a local choice comes first.
                        _ if *local_credit > -1e-9 => {
                            *local_credit -= 1.0 - local_share;
                            Tier::Local
                        }
                        _ => {
                            *local_credit += local_share;
                            Tier::Spill
                        }
                    };
                    // The least loaded of the tier (fewest writes in flight), ties taken
                    // in turn.
                    let local = tier == Tier::Local;
                    let in_tier = |p: &usize| movable_to(*p) && is_local(*p) == local;
                    let least = (0..n)
                        .filter(in_tier)
                        .map(|p| states[p].in_flight)
                        .min()
                        .expect("the tier has a partition");
                    let ties = || {
                        (0..n)
                            .filter(in_tier)
                            .filter(|&p| states[p].in_flight == least)
                    };
                    let turn = &mut turns[usize::from(!local)];
                    let p = ties()
                        .nth(*turn % ties().count())
                        .expect("a tie is in range");
                    *turn = turn.wrapping_add(1);
                    *sticky = Some(Sticky {
                        partition: p,
                        left: self.cfg.sticky_records.saturating_sub(1),
                        tier,
                    });
                    p
                }
            }
        };

        let st = &mut partitions[chosen];
        let admission = st
            .breaker
            .try_admit(bcfg, now)
            .ok_or(PickError::PartitionUnavailable {
                partition: chosen as i32,
            })?;
        st.in_flight += 1;
        Ok(Pick {
            partition: chosen as i32,
            admission,
            local: rack.is_some() && st.leader_rack.as_deref() == rack,
        })
    }

    /// Reports the outcome of a write placed by [`Balancer::pick`]. `failure` is None on
    /// success, or whether the failure trips the breaker.
    pub fn complete(
        &mut self,
        topic: &str,
        pick: &Pick,
        failure: Option<crate::FailureKind>,
        now: Instant,
    ) {
        let bcfg = &self.cfg.breaker;
        let Some(st) = self
            .topics
            .get_mut(topic)
            .and_then(|t| t.partitions.get_mut(pick.partition as usize))
        else {
            return;
        };
        st.in_flight = st.in_flight.saturating_sub(1);
        match failure {
            None => st.breaker.on_success(bcfg, pick.admission),
            Some(kind) => st
                .breaker
                .on_failure(bcfg, pick.admission, kind.trips_breaker(), now),
        }
    }

    fn partitions(&self, topic: &str) -> Option<&[PartitionState]> {
        self.topics.get(topic).map(|t| t.partitions.as_slice())
    }

    /// The state of every partition of a topic.
    pub fn status(&self, topic: &str, now: Instant) -> Vec<PartitionStatus> {
        self.partitions(topic)
            .map(|states| {
                states
                    .iter()
                    .enumerate()
                    .map(|(p, s)| PartitionStatus {
                        partition: p as i32,
                        leader: s.leader,
                        leader_rack: s.leader_rack.clone(),
                        state: s.breaker.state(now),
                        in_flight: s.in_flight,
                        draining: s.draining,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
