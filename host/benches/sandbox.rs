//! Sandbox cost, printed as medians and ratios measured side by side:
//!
//! 1. a fresh sandbox per call: instantiate + configure + `wrap` 32 B + drop
//!    (the `secret` plugin, pooling allocator, KEK already cached);
//! 2. a warm call: `wrap` 32 B on a kept instance;
//! 3. host ready with every first-party plugin: from the compile cache vs.
//!    compiling.
//!
//! Run: `cargo bench -p kmshost --bench sandbox` (add `-- --quick` for a
//! short run). Secrets come from memory so the figures are the sandbox's,
//! not the filesystem's.

use async_trait::async_trait;
#[path = "support/mod.rs"]
mod support;
use support::{median, micros};

use kmshost::kms::{KeyId, Kms, SecretBytes};
use kmshost::sandbox::{Sandbox, SandboxConfig};
use kmshost::secrets::{SecretData, SecretError, SecretRef, SecretSource};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod guests {
    include!(concat!(env!("OUT_DIR"), "/test_guests.rs"));
}
use guests::TRAPPER;

#[derive(Debug)]
struct MemorySecrets;

#[async_trait]
impl SecretSource for MemorySecrets {
    async fn read(&self, secret: &SecretRef) -> Result<Option<SecretData>, SecretError> {
        if secret.name != "kek" {
            return Ok(None);
        }
        let mut d = SecretData::new();
        d.insert(
            "encryptionPassphrase".into(),
            SecretBytes::new(b"bench-passphrase".to_vec()),
        );
        Ok(Some(d))
    }
}

async fn bench_calls(kms: &Kms, kms_id: &str, n: usize) -> Duration {
    let key = KeyId::new("pvc-bench").unwrap();
    let dek = SecretBytes::new(vec![7u8; 32]);
    // Warm up: compile, derive and cache the KEK, fill the pools.
    for _ in 0..50 {
        kms.wrap(kms_id, &key, &dek).await.unwrap();
    }
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let w = kms.wrap(kms_id, &key, &dek).await.unwrap();
        times.push(t.elapsed());
        std::hint::black_box(w);
    }
    median(times)
}

fn host_ready(cache: Option<std::path::PathBuf>) -> Duration {
    let t = Instant::now();
    let sandbox = Sandbox::new(SandboxConfig {
        cache_dir: cache,
        ..Default::default()
    })
    .unwrap();
    for (name, wasm) in kmshost::plugins::EMBEDDED {
        sandbox.load(name, wasm, None).unwrap();
    }
    t.elapsed()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 500 } else { 5000 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let config = serde_json::json!({
        "fresh": {"encryptionKMSType": "metadata", "secretName": "kek", "kmshostInstanceReuse": "false"},
        "warm":  {"encryptionKMSType": "metadata", "secretName": "kek", "kmshostInstanceReuse": "true"},
        "echo-fresh": {"encryptionKMSType": "echo", "kmshostPlugin": TRAPPER, "kmshostInstanceReuse": "false"},
        "echo-warm": {"encryptionKMSType": "echo", "kmshostPlugin": TRAPPER, "kmshostInstanceReuse": "true"},
    });
    let kms = support::facade(&config, cache.path(), Arc::new(MemorySecrets));
    // Profiling aid: `KMSHOST_BENCH_PROFILE=<kmsID>` runs only that kmsID's
    // steady state for a while (e.g. under `perf record`).
    if let Ok(id) = std::env::var("KMSHOST_BENCH_PROFILE") {
        rt.block_on(async {
            bench_calls(&kms, &id, 50).await;
            let t = Instant::now();
            let m = bench_calls(&kms, &id, 100_000).await;
            println!("{id}: median {:.1} µs over {:?}", micros(m), t.elapsed());
        });
        return;
    }
    // Interleave the two so both see the same machine conditions.
    let mut fresh = Vec::new();
    let mut warm = Vec::new();
    let mut echo_fresh = Vec::new();
    let mut echo_warm = Vec::new();
    rt.block_on(async {
        for _ in 0..5 {
            fresh.push(bench_calls(&kms, "fresh", n / 5).await);
            warm.push(bench_calls(&kms, "warm", n / 5).await);
            echo_fresh.push(bench_calls(&kms, "echo-fresh", n / 5).await);
            echo_warm.push(bench_calls(&kms, "echo-warm", n / 5).await);
        }
    });
    let fresh = median(fresh);
    let warm = median(warm);
    let echo_fresh = median(echo_fresh);
    let echo_warm = median(echo_warm);

    // Host ready: prime the cache once, then alternate cached / compiling.
    let ready_cache = tempfile::tempdir().unwrap();
    host_ready(Some(ready_cache.path().to_path_buf()));
    let rounds = if quick { 3 } else { 7 };
    let mut cached = Vec::new();
    let mut compiling = Vec::new();
    for _ in 0..rounds {
        cached.push(host_ready(Some(ready_cache.path().to_path_buf())));
        compiling.push(host_ready(None));
    }
    let cached = median(cached);
    let compiling = median(compiling);

    println!("kmshost sandbox benchmark ({n} calls each, medians)");
    println!(
        "fresh sandbox per call (instantiate + configure + wrap 32 B + drop): {:>8.1} µs   target <= 20 µs",
        micros(fresh)
    );
    println!(
        "warm call (wrap 32 B on a kept instance):                           {:>8.1} µs   target <= 5 µs",
        micros(warm)
    );
    println!(
        "floor: echo plugin, fresh / warm:                                   {:>8.1} µs / {:.1} µs",
        micros(echo_fresh),
        micros(echo_warm)
    );
    println!(
        "ratio fresh / warm:                                                 {:>8.2}x",
        fresh.as_secs_f64() / warm.as_secs_f64()
    );
    println!(
        "host ready, all first-party plugins, from compile cache:            {:>8.2} ms   target <= 50 ms",
        cached.as_secs_f64() * 1e3
    );
    println!(
        "host ready, all first-party plugins, compiling:                     {:>8.2} ms",
        compiling.as_secs_f64() * 1e3
    );
    println!(
        "ratio compiling / cached:                                           {:>8.2}x",
        compiling.as_secs_f64() / cached.as_secs_f64()
    );
}
