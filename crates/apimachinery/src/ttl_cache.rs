//! A bounded cache whose entries expire, for webhook answers (TokenReview,
//! SubjectAccessReview) cached as k8s.io/apiserver caches them: one TTL per entry, chosen by
//! the caller (allowed and denied answers usually differ). The caller passes the time, so a
//! server whose clock is tokio's (paused in tests) keeps one notion of now.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries a cache holds by default before it evicts.
pub const DEFAULT_CAPACITY: usize = 8192;

/// Expiring entries behind a mutex. When full, expired entries are dropped first and, if that
/// is not enough, everything: a burst of distinct keys costs a round of misses, never memory.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    capacity: usize,
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    /// An empty cache of at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        TtlCache {
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The value for `key` at `now`, unless missing or expired.
    pub fn get(&self, key: &K, now: Instant) -> Option<V> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(key)
            .filter(|(expires, _)| *expires > now)
            .map(|(_, v)| v.clone())
    }

    /// Stores `value` from `now` for `ttl`; a zero TTL stores nothing.
    pub fn insert(&self, key: K, value: V, ttl: Duration, now: Instant) {
        if ttl.is_zero() {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= self.capacity {
            entries.retain(|_, (expires, _)| *expires > now);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (now + ttl, value));
    }

    /// Entries held, expired ones included.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or_default()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_zero_ttl_is_not_stored_and_capacity_holds() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(5);
        let c = TtlCache::new(3);
        c.insert("a", 1, Duration::from_secs(60), t0);
        c.insert("gone", 2, Duration::from_secs(1), t0);
        c.insert("never", 3, Duration::ZERO, t0);
        assert_eq!(c.get(&"gone", t0), Some(2));
        assert_eq!(c.get(&"a", later), Some(1));
        assert_eq!(c.get(&"gone", later), None);
        assert_eq!(c.get(&"never", t0), None);
        assert_eq!(c.len(), 2);
        // Full: the expired entry makes room, the live one stays.
        c.insert("b", 4, Duration::from_secs(60), later);
        c.insert("c", 5, Duration::from_secs(60), later);
        assert_eq!(
            (c.get(&"a", later), c.get(&"b", later), c.get(&"c", later)),
            (Some(1), Some(4), Some(5))
        );
        // Full of live entries: cleared rather than grown.
        c.insert("d", 6, Duration::from_secs(60), later);
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(&"d", later), Some(6));
    }
}
