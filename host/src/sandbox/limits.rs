//! Per-kmsID sandbox limits: what one plugin instance and one kmsID may
//! use. The configuration layer fills them from the kmsID's `kmshost*`
//! options.

use std::time::Duration;

/// Per-kmsID sandbox limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Maximum linear memory of one plugin instance (`kmshostMemoryLimitMiB`).
    pub memory_bytes: usize,
    /// Deadline of one call, CPU and waiting included (`kmshostTimeoutMs`).
    pub timeout: Duration,
    /// Largest HTTP response body a plugin may receive
    /// (`kmshostMaxResponseBytes`).
    pub max_response_bytes: usize,
    /// Keep instances warm between calls (`kmshostInstanceReuse`).
    pub instance_reuse: bool,
    /// Most calls of one kmsID (all its tenants together) in plugin
    /// instances at once (`kmshostMaxConcurrency`); more wait, within their
    /// deadline. Below the sandbox's instance budget, so one busy kmsID
    /// never takes every slot.
    pub max_concurrency: u32,
}

/// Default of `kmshostMaxConcurrency`.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 16;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 128 << 20,
            timeout: Duration::from_secs(30),
            max_response_bytes: 1 << 20,
            instance_reuse: true,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
        }
    }
}
