//! The cost of the sandbox against a real OpenBao on loopback: the same KV
//! get and Transit wrap through the `vault` plugin (the whole facade: config,
//! token Secret, sandbox, `outbound-http`) and through a native Rust client
//! (reqwest) in the same process, interleaved call by call.
//!
//! Run: `cargo bench -p kmshost --bench vault` (`-- --quick` for a short
//! run). Needs OpenBao (scripts/test.sh installs it into
//! target/peers-venv); without it the bench says so and exits.

#[path = "../tests/common/mod.rs"]
mod common;

use base64::Engine as _;
use kmshost::config::{ConfigSource, HostDefaults};
use kmshost::kms::{KeyId, Kms, SecretBytes};
use kmshost::sandbox::{Sandbox, SandboxConfig};
use kmshost::secrets::MountedSecrets;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The median of the per-pair ratios plugin/native: each pair ran back to
/// back, so drift in the server's latency over the run cancels out.
fn median_pair_ratio(plugin: &[Duration], native: &[Duration]) -> f64 {
    let mut r: Vec<f64> = plugin
        .iter()
        .zip(native)
        .map(|(p, n)| p.as_secs_f64() / n.as_secs_f64())
        .collect();
    r.sort_by(f64::total_cmp);
    r[r.len() / 2]
}

/// The median of the per-pair differences plugin − native, in µs: the
/// sandbox's cost per call in absolute terms, independent of how fast the
/// server happens to be.
fn median_pair_diff(plugin: &[Duration], native: &[Duration]) -> f64 {
    let mut d: Vec<f64> = plugin
        .iter()
        .zip(native)
        .map(|(p, n)| micros(*p) - micros(*n))
        .collect();
    d.sort_by(f64::total_cmp);
    d[d.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 300 } else { 2000 };
    let Some(bin) = common::openbao::bao_binary() else {
        println!("vault bench skipped: OpenBao is not installed (scripts/test.sh installs it)");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let bao = common::openbao::OpenBao::start(bin).await;
        bao.ok("POST", "/v1/sys/mounts/transit", Some(json!({"type": "transit"}))).await;
        bao.ok("POST", "/v1/transit/keys/volumes", Some(json!({"derived": true}))).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("vault-token")).unwrap();
        std::fs::write(dir.path().join("vault-token/token"), "root").unwrap();
        let cache = tempfile::tempdir().unwrap();
        let config = json!({
            "v": {"encryptionKMSType": "vault", "vaultAddress": bao.addr, "tokenSecretName": "vault-token",
                  "vaultBackendPath": "secret/", "vaultTransitKey": "volumes"},
        });
        let kms = Kms::new(
            ConfigSource::from_text(&config.to_string(), HostDefaults::default()).unwrap(),
            Sandbox::new(SandboxConfig {
                cache_dir: Some(cache.path().to_path_buf()),
                ..Default::default()
            })
            .unwrap(),
            Arc::new(MountedSecrets::new(dir.path())),
        );
        let volume = KeyId::new("pvc-bench").unwrap();
        let pass = SecretBytes::new(b"bench-passphrase-0123456789abcdef".to_vec());
        kms.put("v", &volume, &pass).await.unwrap();

        let client = reqwest::Client::new();
        let b64 = base64::engine::general_purpose::STANDARD;
        let native_get = || {
            let client = client.clone();
            let url = format!("{}/v1/secret/data/{volume}", bao.addr);
            async move {
                let v: serde_json::Value = client
                    .get(url)
                    .header("x-vault-token", "root")
                    .send()
                    .await
                    .unwrap()
                    .error_for_status()
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                v["data"]["data"]["data"]["passphrase"].as_str().unwrap().len()
            }
        };
        let native_wrap = || {
            let client = client.clone();
            let url = format!("{}/v1/transit/encrypt/volumes", bao.addr);
            let body = json!({"plaintext": b64.encode(pass.expose()), "context": b64.encode(volume.as_str())});
            async move {
                let v: serde_json::Value = client
                    .post(url)
                    .header("x-vault-token", "root")
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .error_for_status()
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                v["data"]["ciphertext"].as_str().unwrap().len()
            }
        };

        // Warm up both paths (connections, plugin instances, caches).
        for _ in 0..100 {
            kms.get("v", &volume).await.unwrap();
            native_get().await;
            kms.wrap("v", &volume, &pass).await.unwrap();
            native_wrap().await;
        }
        let (mut pg, mut ng, mut pw, mut nw) = (vec![], vec![], vec![], vec![]);
        for i in 0..n {
            // Alternate which goes first, so neither always follows the other.
            let t = Instant::now();
            if i % 2 == 0 {
                kms.get("v", &volume).await.unwrap();
                pg.push(t.elapsed());
                let t = Instant::now();
                std::hint::black_box(native_get().await);
                ng.push(t.elapsed());
            } else {
                std::hint::black_box(native_get().await);
                ng.push(t.elapsed());
                let t = Instant::now();
                kms.get("v", &volume).await.unwrap();
                pg.push(t.elapsed());
            }
            let t = Instant::now();
            if i % 2 == 0 {
                kms.wrap("v", &volume, &pass).await.unwrap();
                pw.push(t.elapsed());
                let t = Instant::now();
                std::hint::black_box(native_wrap().await);
                nw.push(t.elapsed());
            } else {
                std::hint::black_box(native_wrap().await);
                nw.push(t.elapsed());
                let t = Instant::now();
                kms.wrap("v", &volume, &pass).await.unwrap();
                pw.push(t.elapsed());
            }
        }
        let (rg, rw) = (median_pair_ratio(&pg, &ng), median_pair_ratio(&pw, &nw));
        let (dg, dw) = (median_pair_diff(&pg, &ng), median_pair_diff(&pw, &nw));
        let (pg, ng, pw, nw) = (median(pg), median(ng), median(pw), median(nw));
        println!("kmshost vault benchmark: OpenBao on loopback, {n} interleaved pairs each");
        println!(
            "              median plugin   median native   ratio of medians   median pair ratio   median pair diff   target"
        );
        for (op, p, nat, r, d) in [("KV get", pg, ng, rg, dg), ("Transit wrap", pw, nw, rw, dw)] {
            println!(
                "{op:<13} {:>10.1} µs   {:>10.1} µs   {:>16.3}   {r:>17.3}   {d:>13.1} µs   <= 1.05",
                micros(p),
                micros(nat),
                p.as_secs_f64() / nat.as_secs_f64(),
            );
        }
    });
}
