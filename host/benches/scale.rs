//! Scale: the cost of many kmsIDs and many tenants, as a curve over 10, 100
//! and 1,000, side by side in one run, with the ratio to the first point
//! (flat is 1.00):
//!
//! - start-up: the configuration read and every kmsID validated (the probe);
//! - first call of each runtime (build the runtime, instantiate, call);
//! - a later call of each runtime (most find no warm instance: the host
//!   keeps 32 over all of them);
//! - RSS per runtime once all have been used (goal: ~0 for an idle one);
//! - warm instances kept (bounded by the host budget, whatever N).
//!
//! Every kmsID runs the echo test guest, so the figures are the host's, not
//! a provider's. Run: `cargo bench -p kmshost --bench scale`.

#[path = "support/mod.rs"]
mod support;
use support::{median, micros};

use kmshost::kms::{KeyId, Kms, SecretBytes};
use kmshost::secrets::ChainedSecrets;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod guests {
    include!(concat!(env!("OUT_DIR"), "/test_guests.rs"));
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// One point of the curve.
struct Point {
    n: usize,
    startup: Duration,
    first: Duration,
    later: Duration,
    rss_per_runtime_kib: f64,
    warm: usize,
}

fn facade(config: &serde_json::Value, cache: &std::path::Path) -> Kms {
    support::facade(config, cache, Arc::new(ChainedSecrets::new()))
}

/// `n` kmsIDs (or, with `tenants`, one kmsID seen by `n` tenants).
async fn point(n: usize, tenants: bool, cache: &std::path::Path) -> Point {
    let entry =
        serde_json::json!({"encryptionKMSType": "test-guest", "kmshostPlugin": guests::TRAPPER});
    let mut config = serde_json::Map::new();
    for i in 0..if tenants { 1 } else { n } {
        config.insert(format!("k{i}"), entry.clone());
    }
    let config = serde_json::Value::Object(config);
    let call = |i: usize| {
        if tenants {
            ("k0".to_string(), Some(format!("t{i}")))
        } else {
            (format!("k{i}"), None)
        }
    };
    let rss0 = rss_kib();
    let t = Instant::now();
    let kms = facade(&config, cache);
    for d in kms.describe().unwrap() {
        let id = d.unwrap().kms_id;
        kms.validate(&id).await.unwrap();
    }
    let startup = t.elapsed();
    let key = KeyId::new("fine").unwrap();
    let ok = SecretBytes::new(b"ok".to_vec());
    let mut rounds = [Vec::with_capacity(n), Vec::with_capacity(n)];
    for times in &mut rounds {
        for i in 0..n {
            let (id, tenant) = call(i);
            let t = Instant::now();
            let w = kms
                .tenant(tenant.as_deref())
                .wrap(&id, &key, &ok)
                .await
                .unwrap();
            times.push(t.elapsed());
            std::hint::black_box(w);
        }
    }
    let [first, later] = rounds;
    let rss_per_runtime_kib = rss_kib().saturating_sub(rss0) as f64 / n as f64;
    Point {
        n,
        startup,
        first: median(first),
        later: median(later),
        rss_per_runtime_kib,
        warm: kms.warm_instances(),
    }
}

fn print(title: &str, points: &[Point]) {
    println!("\n{title}");
    println!(
        "{:>6} {:>12} {:>16} {:>16} {:>14} {:>6}",
        "N", "start-up ms", "first call µs", "later call µs", "RSS/runtime KiB", "warm"
    );
    let base = &points[0];
    for p in points {
        println!(
            "{:>6} {:>12.1} {:>9.1} ({:.2}) {:>9.1} ({:.2}) {:>14.1} {:>6}",
            p.n,
            p.startup.as_secs_f64() * 1e3,
            micros(p.first),
            micros(p.first) / micros(base.first),
            micros(p.later),
            micros(p.later) / micros(base.later),
            p.rss_per_runtime_kib,
            p.warm
        );
    }
    let last = points.last().unwrap();
    println!(
        "start-up per kmsID: {:.1} µs at N={} vs {:.1} µs at N={} ({:.2})",
        micros(base.startup) / base.n as f64,
        base.n,
        micros(last.startup) / last.n as f64,
        last.n,
        (micros(last.startup) / last.n as f64) / (micros(base.startup) / base.n as f64)
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    rt.block_on(async {
        // Compile the guest once, outside the figures.
        point(1, false, cache.path()).await;
        let mut ids = Vec::new();
        let mut tenants = Vec::new();
        for n in [10, 100, 1000] {
            ids.push(point(n, false, cache.path()).await);
            tenants.push(point(n, true, cache.path()).await);
        }
        print("kmsIDs (one runtime each)", &ids);
        print("tenants of one kmsID (one runtime each)", &tenants);
    });
}
