//! One circuit breaker, driven by write outcomes and by metadata.
//!
//! - Closed: failures that trip are counted in a sliding window; reaching
//!   `failure_threshold` opens it.
//! - Open: nothing is admitted until `open_base * 2^n` (capped at `open_max`) has passed,
//!   where `n` counts the opens since it was last closed.
//! - Half-open: at most `half_open_probes` writes at a time; `close_after_successes`
//!   successes close it, one failure opens it again for longer.
//! - Held: metadata says the partition cannot take writes (no leader, leader draining).
//!   Nothing is admitted. When the hold is lifted the breaker goes half-open, so a probe
//!   confirms the partition before full traffic returns.

use crate::config::BreakerConfig;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The externally visible state of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    /// The value used in the `ballast_breaker_state` gauge.
    pub fn as_gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }
}

/// How a write was admitted; its outcome must be reported with the same value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Normal,
    Probe,
}

#[derive(Debug, Clone)]
enum Inner {
    Closed,
    Open { until: Instant },
    HalfOpen { in_flight: u32, successes: u32 },
}

#[derive(Debug, Clone)]
pub struct Breaker {
    inner: Inner,
    failures: VecDeque<Instant>,
    /// Opens since the breaker was last closed; sets the next open period.
    opens: u32,
    held: bool,
}

impl Default for Breaker {
    fn default() -> Self {
        Self::new()
    }
}

impl Breaker {
    pub fn new() -> Self {
        Self {
            inner: Inner::Closed,
            failures: VecDeque::new(),
            opens: 0,
            held: false,
        }
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        if self.held {
            return BreakerState::Open;
        }
        match self.inner {
            Inner::Closed => BreakerState::Closed,
            Inner::Open { until } if now >= until => BreakerState::HalfOpen,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Closed and not held: full traffic is allowed.
    pub fn is_closed(&self, now: Instant) -> bool {
        self.state(now) == BreakerState::Closed
    }

    pub fn is_held(&self) -> bool {
        self.held
    }

    /// Whether `try_admit` would admit a write now. Does not change state.
    pub fn admissible(&self, cfg: &BreakerConfig, now: Instant) -> bool {
        if self.held {
            return false;
        }
        match self.inner {
            Inner::Closed => true,
            Inner::Open { until } => now >= until,
            Inner::HalfOpen { in_flight, .. } => in_flight < cfg.half_open_probes,
        }
    }

    /// Admits a write, or says no.
    pub fn try_admit(&mut self, cfg: &BreakerConfig, now: Instant) -> Option<Admission> {
        if self.held {
            return None;
        }
        if let Inner::Open { until } = self.inner {
            if now < until {
                return None;
            }
            self.inner = Inner::HalfOpen {
                in_flight: 0,
                successes: 0,
            };
        }
        match &mut self.inner {
            Inner::Closed => Some(Admission::Normal),
            Inner::HalfOpen { in_flight, .. } if *in_flight < cfg.half_open_probes => {
                *in_flight += 1;
                Some(Admission::Probe)
            }
            _ => None,
        }
    }

    /// Reports a successful write.
    pub fn on_success(&mut self, cfg: &BreakerConfig, admission: Admission) {
        if admission != Admission::Probe {
            return;
        }
        if let Inner::HalfOpen {
            in_flight,
            successes,
        } = &mut self.inner
        {
            *in_flight = in_flight.saturating_sub(1);
            *successes += 1;
            if *successes >= cfg.close_after_successes {
                self.close();
            }
        }
    }

    /// Reports a failed write. Failures that do not trip are ignored apart from freeing a
    /// probe slot.
    pub fn on_failure(
        &mut self,
        cfg: &BreakerConfig,
        admission: Admission,
        trips: bool,
        now: Instant,
    ) {
        match (&mut self.inner, admission) {
            (Inner::HalfOpen { in_flight, .. }, Admission::Probe) => {
                *in_flight = in_flight.saturating_sub(1);
                if trips {
                    self.open(cfg, now);
                }
            }
            (Inner::Closed, Admission::Normal) if trips => {
                self.failures.push_back(now);
                while let Some(&first) = self.failures.front() {
                    if now.saturating_duration_since(first) > cfg.window {
                        self.failures.pop_front();
                    } else {
                        break;
                    }
                }
                if self.failures.len() as u32 >= cfg.failure_threshold {
                    self.open(cfg, now);
                }
            }
            // Late results of writes admitted before the breaker opened say nothing new.
            _ => {}
        }
    }

    /// Holds the breaker open because metadata says the partition cannot take writes.
    pub fn hold(&mut self) {
        self.held = true;
    }

    /// Lifts a hold; the breaker goes half-open so a probe confirms the partition.
    pub fn release(&mut self) {
        if self.held {
            self.held = false;
            self.inner = Inner::HalfOpen {
                in_flight: 0,
                successes: 0,
            };
        }
    }

    /// The current open period for the next open: `open_base * 2^opens`, capped.
    pub fn open_period(cfg: &BreakerConfig, opens: u32) -> Duration {
        let factor = 1u32.checked_shl(opens.min(31)).unwrap_or(u32::MAX);
        cfg.open_base.saturating_mul(factor).min(cfg.open_max)
    }

    fn open(&mut self, cfg: &BreakerConfig, now: Instant) {
        let period = Self::open_period(cfg, self.opens);
        self.opens = self.opens.saturating_add(1);
        self.failures.clear();
        self.inner = Inner::Open {
            until: now + period,
        };
    }

    fn close(&mut self) {
        self.inner = Inner::Closed;
        self.failures.clear();
        self.opens = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            window: Duration::from_secs(10),
            failure_threshold: 3,
            open_base: Duration::from_secs(1),
            open_max: Duration::from_secs(8),
            half_open_probes: 1,
            close_after_successes: 2,
        }
    }

    fn fail(b: &mut Breaker, c: &BreakerConfig, now: Instant) {
        let a = b.try_admit(c, now).expect("admitted");
        b.on_failure(c, a, true, now);
    }

    #[test]
    fn opens_after_threshold_within_window() {
        let c = cfg();
        let t = Instant::now();
        let mut b = Breaker::new();
        fail(&mut b, &c, t);
        fail(&mut b, &c, t + Duration::from_secs(1));
        assert_eq!(b.state(t), BreakerState::Closed);
        fail(&mut b, &c, t + Duration::from_secs(2));
        assert_eq!(b.state(t + Duration::from_secs(2)), BreakerState::Open);
        assert!(b.try_admit(&c, t + Duration::from_millis(2500)).is_none());
    }

    #[test]
    fn old_failures_leave_the_window() {
        let c = cfg();
        let t = Instant::now();
        let mut b = Breaker::new();
        fail(&mut b, &c, t);
        fail(&mut b, &c, t + Duration::from_secs(1));
        fail(&mut b, &c, t + Duration::from_secs(30));
        assert_eq!(b.state(t + Duration::from_secs(30)), BreakerState::Closed);
    }

    #[test]
    fn non_tripping_failures_never_open() {
        let c = cfg();
        let t = Instant::now();
        let mut b = Breaker::new();
        for i in 0..100 {
            let now = t + Duration::from_millis(i);
            let a = b.try_admit(&c, now).unwrap();
            b.on_failure(&c, a, false, now);
        }
        assert_eq!(b.state(t), BreakerState::Closed);
    }

    #[test]
    fn half_open_admits_limited_probes_and_closes_after_successes() {
        let c = cfg();
        let t = Instant::now();
        let mut b = Breaker::new();
        for _ in 0..3 {
            fail(&mut b, &c, t);
        }
        let t1 = t + Duration::from_secs(1);
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        let p = b.try_admit(&c, t1).unwrap();
        assert_eq!(p, Admission::Probe);
        assert!(b.try_admit(&c, t1).is_none(), "only one probe at a time");
        b.on_success(&c, p);
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        let p = b.try_admit(&c, t1).unwrap();
        b.on_success(&c, p);
        assert_eq!(b.state(t1), BreakerState::Closed);
    }

    #[test]
    fn failed_probes_grow_the_open_period_up_to_the_cap() {
        let c = cfg();
        let mut now = Instant::now();
        let mut b = Breaker::new();
        for _ in 0..3 {
            fail(&mut b, &c, now);
        }
        let mut periods = vec![];
        for _ in 0..6 {
            // find the moment it becomes half-open, in 100 ms steps
            let start = now;
            while b.state(now) == BreakerState::Open {
                now += Duration::from_millis(100);
            }
            periods.push((now - start).as_millis());
            fail(&mut b, &c, now);
        }
        assert_eq!(periods, vec![1000, 2000, 4000, 8000, 8000, 8000]);
    }

    #[test]
    fn hold_blocks_and_release_goes_half_open() {
        let c = cfg();
        let t = Instant::now();
        let mut b = Breaker::new();
        b.hold();
        assert_eq!(b.state(t), BreakerState::Open);
        assert!(b.try_admit(&c, t + Duration::from_secs(3600)).is_none());
        b.release();
        assert_eq!(b.state(t), BreakerState::HalfOpen);
        let p = b.try_admit(&c, t).unwrap();
        assert_eq!(p, Admission::Probe);
    }

    proptest! {
        /// Whatever happens, an open breaker admits nothing before `open_base` has
        /// passed, and the state is always one of the three.
        #[test]
        fn open_never_admits_early(events in proptest::collection::vec((0u8..4, 0u64..3000), 1..200)) {
            let c = cfg();
            let mut now = Instant::now();
            let mut b = Breaker::new();
            let mut opened_at: Option<Instant> = None;
            for (ev, dt) in events {
                now += Duration::from_millis(dt);
                let before = b.state(now);
                match ev {
                    0 | 1 => if let Some(a) = b.try_admit(&c, now) {
                        prop_assert!(opened_at.is_none_or(|o| now >= o + c.open_base));
                        if ev == 0 { b.on_failure(&c, a, true, now) } else { b.on_success(&c, a) }
                    },
                    2 => b.hold(),
                    _ => b.release(),
                }
                let after = b.state(now);
                if after == BreakerState::Open && before != BreakerState::Open && !b.is_held() {
                    opened_at = Some(now);
                } else if after != BreakerState::Open {
                    opened_at = None;
                }
            }
        }
    }
}
