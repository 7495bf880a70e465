//! Warm instances of every runtime under one budget for the whole host.
//!
//! A warm instance keeps a pooling-allocator slot and its memory. Kept per
//! runtime with no budget, idle kmsIDs (and tenants) held slots for ever and
//! the 129th kmsID found none. Here every runtime keeps its warm instances
//! in one list, oldest first: a runtime keeps at most a few, the host at
//! most `budget`, and the least recently returned instance is evicted first —
//! also when a new instance needs its slot. An idle kmsID therefore ends up
//! holding nothing.
//!
//! The list is short (the budget) and the lock is held for a scan of it, so
//! taking and returning an instance costs well under a microsecond.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The host's warm instances, oldest first.
#[derive(Debug)]
pub struct WarmPool<T> {
    budget: usize,
    entries: Mutex<Vec<(u64, T)>>,
    next_owner: AtomicU64,
}

impl<T> WarmPool<T> {
    /// A pool keeping at most `budget` instances over all runtimes.
    pub fn new(budget: usize) -> Self {
        WarmPool {
            budget,
            entries: Mutex::new(Vec::new()),
            next_owner: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, T)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new owner id, one per runtime.
    pub fn owner(&self) -> u64 {
        self.next_owner.fetch_add(1, Ordering::Relaxed)
    }

    /// `owner`'s most recently returned instance.
    pub fn take(&self, owner: u64) -> Option<T> {
        let mut e = self.lock();
        let i = e.iter().rposition(|(o, _)| *o == owner)?;
        Some(e.remove(i).1)
    }

    /// Keeps `item` for `owner`; returns what was evicted to make room (the
    /// owner's oldest past `per_owner`, the host's oldest past the budget),
    /// to be dropped by the caller outside the lock.
    pub fn put(&self, owner: u64, item: T, per_owner: usize) -> Vec<T> {
        let mut e = self.lock();
        e.push((owner, item));
        let mut evicted = Vec::new();
        if e.iter().filter(|(o, _)| *o == owner).count() > per_owner
            && let Some(i) = e.iter().position(|(o, _)| *o == owner)
        {
            evicted.push(e.remove(i).1);
        }
        while e.len() > self.budget {
            evicted.push(e.remove(0).1);
        }
        evicted
    }

    /// Evicts the host's least recently returned instance (to free its slot
    /// for a new one).
    pub fn evict_oldest(&self) -> Option<T> {
        let mut e = self.lock();
        (!e.is_empty()).then(|| e.remove(0).1)
    }

    /// Evicts all of `owner`'s instances (its runtime is gone).
    pub fn forget(&self, owner: u64) -> Vec<T> {
        let mut e = self.lock();
        let mut gone = Vec::new();
        let mut i = 0;
        while i < e.len() {
            if e[i].0 == owner {
                gone.push(e.remove(i).1);
            } else {
                i += 1;
            }
        }
        gone
    }

    /// How many instances `owner` has warm.
    pub fn count(&self, owner: u64) -> usize {
        self.lock().iter().filter(|(o, _)| *o == owner).count()
    }

    /// How many instances are warm in all.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is warm.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_first_per_owner_and_oldest_evicted_first() {
        let p = WarmPool::new(3);
        let (a, b) = (p.owner(), p.owner());
        assert!(p.put(a, "a1", 2).is_empty());
        assert!(p.put(a, "a2", 2).is_empty());
        assert_eq!(p.put(a, "a3", 2), vec!["a1"], "per-owner cap");
        assert!(p.put(b, "b1", 2).is_empty());
        assert_eq!(p.put(b, "b2", 2), vec!["a2"], "host budget: oldest goes");
        assert_eq!((p.count(a), p.count(b), p.len()), (1, 2, 3));
        assert_eq!(p.take(b), Some("b2"), "newest first");
        assert_eq!(p.evict_oldest(), Some("a3"));
        assert_eq!(p.take(a), None);
        assert_eq!(p.forget(b), vec!["b1"]);
        assert!(p.is_empty());
    }
}
