//! What the benchmarks set up and summarise the same way: the facade over a
//! configuration with a full-size sandbox, and medians in microseconds.
//! Included with `#[path = "support/mod.rs"] mod support;`.

#![allow(dead_code)]

use kmshost::config::{ConfigSource, HostDefaults};
use kmshost::kms::Kms;
use kmshost::sandbox::{Sandbox, SandboxConfig};
use kmshost::secrets::SecretSource;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A facade over `config` (ceph-csi `config.json` form), with a sandbox of
/// the production size compiling into `cache`, reading Secrets from
/// `secrets`.
pub fn facade(config: &serde_json::Value, cache: &Path, secrets: Arc<dyn SecretSource>) -> Kms {
    let sandbox = Sandbox::new(SandboxConfig {
        cache_dir: Some(cache.to_path_buf()),
        ..Default::default()
    })
    .unwrap();
    Kms::new(
        ConfigSource::from_text(&config.to_string(), HostDefaults::default()).unwrap(),
        sandbox,
        secrets,
    )
}

/// The median of `v`.
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// `d` in microseconds.
pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
