//! Rack bookkeeping for validity checks.

use std::collections::{BTreeSet, HashMap};

pub(super) struct Racks {
    pub(super) of: HashMap<i32, String>,
    pub(super) count: usize,
}

impl Racks {
    pub(super) fn rack(&self, b: i32) -> &str {
        // Brokers outside the target set have no known rack; each counts as its own.
        self.of.get(&b).map(String::as_str).unwrap_or("")
    }

    /// Racks a set of `rf` replicas must span.
    pub(super) fn need(&self, rf: usize) -> usize {
        self.count.min(rf)
    }

    /// The most replicas of one partition a rack may hold.
    pub(super) fn cap(&self, rf: usize) -> usize {
        rf.div_ceil(self.count)
    }

    pub(super) fn spread(&self, set: &[i32]) -> usize {
        set.iter()
            .map(|&b| self.rack(b))
            .collect::<BTreeSet<_>>()
            .len()
    }

    pub(super) fn in_rack(&self, set: &[i32], rack: &str) -> usize {
        set.iter().filter(|&&b| self.rack(b) == rack).count()
    }

    pub(super) fn valid(&self, set: &[i32]) -> bool {
        let rf = set.len();
        self.spread(set) >= self.need(rf)
            && set
                .iter()
                .all(|&b| self.in_rack(set, self.rack(b)) <= self.cap(rf))
    }
}
