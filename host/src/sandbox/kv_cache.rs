//! The per-kmsID cache behind the `cache` import: bounded, with TTLs,
//! zeroizing values on eviction. Tokens and derived KEKs live here, so a
//! fresh plugin instance does not log in or run a KDF again.

use crate::types::SecretBytes;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Largest value accepted.
pub const MAX_VALUE_BYTES: usize = 64 << 10;
/// Most entries per kmsID.
pub const MAX_ENTRIES: usize = 256;
/// Longest TTL honoured.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// A kmsID's cache.
#[derive(Debug, Default)]
pub struct KvCache {
    inner: Mutex<HashMap<String, (Instant, SecretBytes)>>,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The live value for `key`.
    pub fn get(&self, key: &str) -> Option<SecretBytes> {
        let mut m = self.inner.lock().unwrap();
        match m.get(key) {
            Some((exp, v)) if *exp > Instant::now() => Some(v.clone()),
            Some(_) => {
                m.remove(key);
                None
            }
            None => None,
        }
    }

    /// Stores `value` for `ttl`; refuses oversized values, and evicts
    /// expired (then the soonest-expiring) entries beyond the entry limit.
    /// Returns whether the value was stored.
    pub fn set(&self, key: &str, value: SecretBytes, ttl: Duration) -> bool {
        if value.len() > MAX_VALUE_BYTES || key.len() > 512 || ttl.is_zero() {
            return false;
        }
        let now = Instant::now();
        let mut m = self.inner.lock().unwrap();
        m.retain(|_, (exp, _)| *exp > now);
        if m.len() >= MAX_ENTRIES
            && !m.contains_key(key)
            && let Some(k) = m
                .iter()
                .min_by_key(|(_, (e, _))| *e)
                .map(|(k, _)| k.clone())
        {
            m.remove(&k);
        }
        m.insert(key.to_string(), (now + ttl.min(MAX_TTL), value));
        true
    }

    /// Removes `key`.
    pub fn remove(&self, key: &str) {
        self.inner.lock().unwrap().remove(key);
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.inner
            .lock()
            .unwrap()
            .values()
            .filter(|(e, _)| *e > now)
            .count()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_are_bounded() {
        let c = KvCache::new();
        assert!(c.set("a", SecretBytes::new(vec![1]), Duration::from_millis(30)));
        assert_eq!(c.get("a").unwrap().expose(), &[1]);
        std::thread::sleep(Duration::from_millis(40));
        assert!(c.get("a").is_none());
        assert!(!c.set(
            "big",
            SecretBytes::new(vec![0; MAX_VALUE_BYTES + 1]),
            Duration::from_secs(1)
        ));
        for i in 0..MAX_ENTRIES + 10 {
            c.set(
                &format!("k{i}"),
                SecretBytes::new(vec![0]),
                Duration::from_secs(60),
            );
        }
        assert_eq!(c.len(), MAX_ENTRIES);
    }
}
