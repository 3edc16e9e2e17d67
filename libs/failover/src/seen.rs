//! The ages of queue entries a worker has seen, for a backend that cannot report its
//! oldest entry's age (SQS has it only as a CloudWatch metric): the send time of every
//! entry received, until it is deleted or has not been seen for a while (another worker
//! may have delivered it). No IO.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries remembered at most; past it, newer ones are not added (the oldest matter).
const CAP: usize = 100_000;

#[derive(Debug)]
pub(crate) struct SeenAges {
    /// Forget an entry not seen again within this long.
    keep: Duration,
    entries: Mutex<HashMap<String, (i64, Instant)>>,
}

impl SeenAges {
    pub(crate) fn new(keep: Duration) -> Self {
        Self {
            keep,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (i64, Instant)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Entry `id`, sent at `sent_unix_ms`, was seen now.
    pub(crate) fn note(&self, id: &str, sent_unix_ms: i64) {
        let mut m = self.lock();
        if m.len() >= CAP && !m.contains_key(id) {
            let keep = self.keep;
            m.retain(|_, (_, seen)| seen.elapsed() < keep);
            if m.len() >= CAP {
                return;
            }
        }
        m.insert(id.to_string(), (sent_unix_ms, Instant::now()));
    }

    /// Entry `id` is gone from the queue.
    pub(crate) fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    /// The age at `now_unix_ms` of the oldest entry seen within `keep`; None when none is.
    pub(crate) fn oldest_age_ms(&self, now_unix_ms: i64) -> Option<u64> {
        let mut m = self.lock();
        let keep = self.keep;
        m.retain(|_, (_, seen)| seen.elapsed() < keep);
        m.values()
            .map(|(sent, _)| *sent)
            .min()
            .map(|sent| (now_unix_ms - sent).max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_seen_entry_until_it_is_deleted_or_stale() {
        let seen = SeenAges::new(Duration::from_secs(60));
        assert_eq!(seen.oldest_age_ms(10_000), None);
        seen.note("a", 1_000);
        seen.note("b", 4_000);
        assert_eq!(seen.oldest_age_ms(10_000), Some(9_000));
        seen.forget("a");
        assert_eq!(seen.oldest_age_ms(10_000), Some(6_000));
        seen.clear();
        assert_eq!(seen.oldest_age_ms(10_000), None);

        let stale = SeenAges::new(Duration::ZERO);
        stale.note("a", 1_000);
        assert_eq!(stale.oldest_age_ms(10_000), None, "not seen within keep");
    }
}
