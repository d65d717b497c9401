//! A small in-process cache: bounded (past `max` entries the one read
//! longest ago goes), entries optionally expiring after a TTL, lookups
//! counted by cache name and result for hit ratios
//! (`flowpilot_cache_lookups_total`).
//!
//! What may change elsewhere (a workflow's activation, an account's rate
//! limits) is cached with a short TTL, which bounds how stale a copy can
//! be, and dropped at once when a change is announced (the engine's
//! invalidation listener); what never changes (a workflow version's
//! definition) has no TTL.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use prometheus::IntCounterVec;

struct Entry<V> {
    value: V,
    stored: Instant,
    read: Instant,
}

/// The cache.
pub struct Cache<K, V> {
    name: &'static str,
    ttl: Option<Duration>,
    max: usize,
    entries: Mutex<HashMap<K, Entry<V>>>,
    lookups: Option<IntCounterVec>,
}

impl<K: Hash + Eq + Clone, V: Clone> Cache<K, V> {
    /// A cache called `name` (the metric's `cache` label) of at most `max`
    /// entries, each kept for `ttl` (`None`: until evicted).
    pub fn new(name: &'static str, ttl: Option<Duration>, max: usize) -> Self {
        Cache {
            name,
            ttl,
            max: max.max(1),
            entries: Mutex::new(HashMap::new()),
            lookups: None,
        }
    }

    /// Counts lookups in `counter` (labels `cache`, `result`: `hit`, `miss`).
    pub fn with_metrics(mut self, counter: IntCounterVec) -> Self {
        self.lookups = Some(counter);
        self
    }

    /// The value of `key` if cached and fresh.
    pub fn get(&self, key: &K) -> Option<V> {
        let mut entries = self.lock();
        let now = Instant::now();
        let found = match entries.get_mut(key) {
            Some(e) if self.ttl.is_none_or(|ttl| now - e.stored < ttl) => {
                e.read = now;
                Some(e.value.clone())
            }
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        };
        drop(entries);
        self.count(if found.is_some() { "hit" } else { "miss" });
        found
    }

    /// Caches `value` under `key`, evicting the entry read longest ago when
    /// full.
    pub fn insert(&self, key: K, value: V) {
        let mut entries = self.lock();
        if entries.len() >= self.max && !entries.contains_key(&key) {
            let oldest = entries
                .iter()
                .min_by_key(|(_, e)| e.read)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                entries.remove(&k);
            }
        }
        let now = Instant::now();
        entries.insert(
            key,
            Entry {
                value,
                stored: now,
                read: now,
            },
        );
    }

    /// Drops `key`.
    pub fn remove(&self, key: &K) {
        self.lock().remove(key);
    }

    /// Drops every entry `keep` says no to.
    pub fn retain(&self, mut keep: impl FnMut(&K) -> bool) {
        self.lock().retain(|k, _| keep(k));
    }

    /// Drops everything.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Entry<V>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, result: &str) {
        if let Some(c) = &self.lookups {
            c.with_label_values(&[self.name, result]).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_it_evicts_the_entry_read_longest_ago() {
        let c: Cache<u32, u32> = Cache::new("t", None, 2);
        c.insert(1, 10);
        c.insert(2, 20);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(c.get(&1), Some(10));
        c.insert(3, 30);
        assert_eq!(
            (c.get(&1), c.get(&2), c.get(&3)),
            (Some(10), None, Some(30))
        );
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn entries_expire_after_the_ttl_and_lookups_are_counted() {
        let counter =
            IntCounterVec::new(prometheus::Opts::new("c", "c"), &["cache", "result"]).unwrap();
        let c: Cache<u32, u32> =
            Cache::new("t", Some(Duration::from_millis(30)), 10).with_metrics(counter.clone());
        c.insert(1, 10);
        assert_eq!(c.get(&1), Some(10));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.get(&1), None);
        assert!(c.is_empty(), "an expired entry is dropped when met");
        let n = |r: &str| counter.with_label_values(&["t", r]).get();
        assert_eq!((n("hit"), n("miss")), (1, 1));
    }
}
