//! The in-memory backend, for the embedded stack: the same semantics as Redis, including
//! expiry, within one process.

use crate::types::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Expired entries are swept every this many operations.
const SWEEP_EVERY: u64 = 4096;

#[derive(Debug, Clone)]
enum Entry {
    Progress {
        fence: u64,
        owner: String,
        expires_ms: i64,
    },
    Done {
        expires_ms: i64,
    },
}

impl Entry {
    fn expires_ms(&self) -> i64 {
        match self {
            Entry::Progress { expires_ms, .. } | Entry::Done { expires_ms } => *expires_ms,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<(String, String), Entry>,
    fences: HashMap<String, u64>,
    ops: u64,
}

#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    clock: Arc<dyn Clock>,
    done_window: Duration,
}

impl MemoryStore {
    pub fn new(done_window: Duration) -> Self {
        Self::with_clock(done_window, Arc::new(SystemClock))
    }

    pub fn with_clock(done_window: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            clock,
            done_window,
        }
    }

    /// Runs `f` on the live entries, after dropping expired ones when due.
    fn with<T>(&self, f: impl FnOnce(&mut Inner, i64) -> T) -> T {
        let now = self.clock.now_ms();
        let mut inner = self.inner.lock().expect("dedup memory lock");
        inner.ops += 1;
        if inner.ops.is_multiple_of(SWEEP_EVERY) {
            inner.entries.retain(|_, e| e.expires_ms() > now);
        }
        f(&mut inner, now)
    }

    fn live<'a>(inner: &'a mut Inner, group: &str, id: &str, now: i64) -> Option<&'a mut Entry> {
        let key = (group.to_string(), id.to_string());
        if inner
            .entries
            .get(&key)
            .is_some_and(|e| e.expires_ms() <= now)
        {
            inner.entries.remove(&key);
        }
        inner.entries.get_mut(&key)
    }

    fn fenced(
        &self,
        group: &str,
        entries: &[(String, u64)],
        owner: &str,
        mut apply: impl FnMut(&mut Inner, &(String, u64), i64) -> Option<&'static str>,
    ) -> Vec<FenceOutcome> {
        self.with(|inner, now| {
            entries
                .iter()
                .map(|entry| {
                    let reason = match Self::live(inner, group, &entry.0, now) {
                        None => Some(REASON_NOT_CLAIMED),
                        Some(Entry::Done { .. }) => Some(REASON_DONE),
                        Some(Entry::Progress { fence, .. }) if *fence != entry.1 => {
                            Some(REASON_STALE)
                        }
                        Some(Entry::Progress { owner: holder, .. }) if holder != owner => {
                            Some(REASON_OWNER)
                        }
                        Some(Entry::Progress { .. }) => apply(inner, entry, now),
                    };
                    fence_outcome(&entry.0, reason)
                })
                .collect()
        })
    }
}

#[async_trait::async_trait]
impl DedupStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn claim(
        &self,
        group: &str,
        ids: &[String],
        lease: Duration,
        owner: &str,
    ) -> Result<Vec<Claimed>, StoreError> {
        Ok(self.with(|inner, now| {
            ids.iter()
                .map(|id| match Self::live(inner, group, id, now) {
                    Some(Entry::Done { .. }) => Claimed {
                        id: id.clone(),
                        state: ClaimState::Done,
                        fence: 0,
                        lease_expires_unix_ms: 0,
                    },
                    Some(Entry::Progress { expires_ms, .. }) => Claimed {
                        id: id.clone(),
                        state: ClaimState::InProgress,
                        fence: 0,
                        lease_expires_unix_ms: *expires_ms,
                    },
                    None => {
                        let fence = inner.fences.entry(group.to_string()).or_insert(0);
                        *fence += 1;
                        let fence = *fence;
                        let expires_ms = now + lease.as_millis() as i64;
                        inner.entries.insert(
                            (group.to_string(), id.clone()),
                            Entry::Progress {
                                fence,
                                owner: owner.to_string(),
                                expires_ms,
                            },
                        );
                        Claimed {
                            id: id.clone(),
                            state: ClaimState::New,
                            fence,
                            lease_expires_unix_ms: expires_ms,
                        }
                    }
                })
                .collect()
        }))
    }

    async fn commit(
        &self,
        group: &str,
        entries: &[(String, u64)],
        owner: &str,
    ) -> Result<Vec<FenceOutcome>, StoreError> {
        let window = self.done_window.as_millis() as i64;
        Ok(self.fenced(group, entries, owner, |inner, (id, _), now| {
            inner.entries.insert(
                (group.to_string(), id.clone()),
                Entry::Done {
                    expires_ms: now + window,
                },
            );
            None
        }))
    }

    async fn release(
        &self,
        group: &str,
        entries: &[(String, u64)],
        owner: &str,
    ) -> Result<Vec<FenceOutcome>, StoreError> {
        Ok(self.fenced(group, entries, owner, |inner, (id, _), _| {
            inner.entries.remove(&(group.to_string(), id.clone()));
            None
        }))
    }

    async fn extend(
        &self,
        group: &str,
        entries: &[(String, u64)],
        lease: Duration,
        owner: &str,
    ) -> Result<Vec<FenceOutcome>, StoreError> {
        let lease = lease.as_millis() as i64;
        Ok(self.fenced(group, entries, owner, |inner, (id, _), now| {
            if let Some(Entry::Progress { expires_ms, .. }) =
                inner.entries.get_mut(&(group.to_string(), id.clone()))
            {
                *expires_ms = now + lease;
            }
            None
        }))
    }

    async fn check(&self, group: &str, ids: &[String]) -> Result<Vec<Checked>, StoreError> {
        Ok(self.with(|inner, now| {
            ids.iter()
                .map(|id| {
                    let (state, lease_expires_unix_ms) = match Self::live(inner, group, id, now) {
                        None => (None, 0),
                        Some(Entry::Done { .. }) => (Some(ClaimState::Done), 0),
                        Some(Entry::Progress { expires_ms, .. }) => {
                            (Some(ClaimState::InProgress), *expires_ms)
                        }
                    };
                    Checked {
                        id: id.clone(),
                        state,
                        lease_expires_unix_ms,
                    }
                })
                .collect()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    #[derive(Debug, Default)]
    struct ManualClock(AtomicI64);

    impl Clock for ManualClock {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn lease_and_done_window_expire_on_the_injected_clock() {
        let clock = Arc::new(ManualClock(AtomicI64::new(1_000)));
        let store = MemoryStore::with_clock(Duration::from_secs(60), clock.clone());
        let ids = vec!["a".to_string()];
        let first = store
            .claim("g", &ids, Duration::from_secs(5), "w1")
            .await
            .unwrap();
        assert_eq!(first[0].state, ClaimState::New);
        assert_eq!(first[0].lease_expires_unix_ms, 6_000);
        clock.0.store(6_000, Ordering::SeqCst);
        let second = store
            .claim("g", &ids, Duration::from_secs(5), "w2")
            .await
            .unwrap();
        assert_eq!(second[0].state, ClaimState::New, "the lease expired");
        assert!(second[0].fence > first[0].fence);
        let stale = store
            .commit("g", &[("a".into(), first[0].fence)], "w1")
            .await
            .unwrap();
        assert_eq!(stale[0].reason, REASON_STALE);
        let ok = store
            .commit("g", &[("a".into(), second[0].fence)], "w2")
            .await
            .unwrap();
        assert!(ok[0].ok);
        clock.0.store(6_000 + 59_999, Ordering::SeqCst);
        let done = store
            .claim("g", &ids, Duration::from_secs(5), "w3")
            .await
            .unwrap();
        assert_eq!(done[0].state, ClaimState::Done);
        clock.0.store(6_000 + 60_000, Ordering::SeqCst);
        let again = store
            .claim("g", &ids, Duration::from_secs(5), "w3")
            .await
            .unwrap();
        assert_eq!(again[0].state, ClaimState::New, "done window over");
    }
}
