//! The cost of the sandbox against a real OpenBao on loopback: the same KV
//! get and Transit wrap through the `vault` plugin (the whole facade: config,
//! token Secret, sandbox, `outbound-http`) and through a native Rust client
//! (reqwest) in the same process, interleaved call by call. A third client,
//! native Rust on the host's own transport (`net::Pool::fetch`, the one
//! `outbound-http` uses), separates the sandbox's cost from the transport's
//! gain.
//!
//! Run: `cargo bench -p kmshost --bench vault` (`-- --quick` for a short
//! run). Needs OpenBao (scripts/test.sh installs it into
//! target/peers-venv); without it the bench says so and exits.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;
use support::{median, micros};

use base64::Engine as _;
use kmshost::capability::allow_list::Target;
use kmshost::capability::net::{Connect, Pool, PoolBody};
use kmshost::kms::{KeyId, SecretBytes};
use kmshost::secrets::MountedSecrets;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// A server that answers every request on a connection at once with
/// `body` (HTTP/1.1, keep-alive), a thread per connection: the same
/// exchange as OpenBao's, without the server's work between two calls
/// (which, on a machine whose cores it shares, pushes the client's memory
/// out of the caches). Returns its address.
fn instant_server(body: Vec<u8>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let head = format!(
        "HTTP/1.1 200 OK\r\ncache-control: no-store\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let response: Arc<Vec<u8>> = Arc::new([head.as_bytes(), &body].concat());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let (mut conn, response) = (conn.unwrap(), response.clone());
            conn.set_nodelay(true).unwrap();
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = vec![0u8; 64 * 1024];
                let mut have = Vec::new();
                loop {
                    let Ok(n) = conn.read(&mut buf) else { return };
                    if n == 0 {
                        return;
                    }
                    have.extend_from_slice(&buf[..n]);
                    // Each request is a head, plus a body of its length.
                    while let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&have[..end]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                        if have.len() < end + 4 + len {
                            break;
                        }
                        have.drain(..end + 4 + len);
                        if conn.write_all(&response).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
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
        let kms = support::facade(
            &config,
            cache.path(),
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

        // Native Rust on the host's transport: what `outbound-http` does,
        // without the sandbox around it.
        let pool = Pool::default();
        let target: &'static Target = Box::leak(Box::new(Target::parse_url(&bao.addr).unwrap()));
        let connect = Connect {
            tls: None,
            server_name: None,
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(30),
        };
        let host_req = |target: &Target, method: &str, path: String, body: Vec<u8>| {
            use http_body_util::BodyExt as _;
            let mut b = http::Request::builder()
                .method(method)
                .uri(path)
                .header("host", target.to_string().trim_start_matches("http://"))
                .header("x-vault-token", "root");
            if !body.is_empty() {
                b = b
                    .header("content-type", "application/json")
                    .header("content-length", body.len());
            }
            let body: PoolBody = http_body_util::Full::new(bytes::Bytes::from(body))
                .map_err(|never| match never {})
                .boxed_unsync();
            b.body(body).unwrap()
        };
        // A KV get of the volume's passphrase from the server at `target`.
        let host_get_at = |target: &'static Target| {
            let req = host_req(target, "GET", format!("/v1/secret/data/{volume}"), vec![]);
            let (pool, connect) = (&pool, &connect);
            async move {
                let f = pool.fetch(target, connect, req, 1 << 20).await.unwrap();
                let v: serde_json::Value = serde_json::from_slice(&f.body.unwrap()).unwrap();
                v["data"]["data"]["data"]["passphrase"].as_str().unwrap().len()
            }
        };
        let host_get = || host_get_at(target);
        let host_wrap = || {
            let body = json!({"plaintext": b64.encode(pass.expose()), "context": b64.encode(volume.as_str())});
            let req = host_req(target, "POST", "/v1/transit/encrypt/volumes".into(), serde_json::to_vec(&body).unwrap());
            let (pool, target, connect) = (&pool, target, &connect);
            async move {
                let f = pool.fetch(target, connect, req, 1 << 20).await.unwrap();
                let v: serde_json::Value = serde_json::from_slice(&f.body.unwrap()).unwrap();
                v["data"]["ciphertext"].as_str().unwrap().len()
            }
        };

        // Warm up every path (connections, plugin instances, caches).
        for _ in 0..100 {
            kms.get("v", &volume).await.unwrap();
            native_get().await;
            host_get().await;
            kms.wrap("v", &volume, &pass).await.unwrap();
            native_wrap().await;
            host_wrap().await;
        }
        let (mut pg, mut ng, mut pw, mut nw) = (vec![], vec![], vec![], vec![]);
        let (mut hg, mut hw) = (vec![], vec![]);
        // Each round runs the three clients of an operation back to back,
        // rotating which goes first, so none always follows the same one.
        macro_rules! timed {
            ($v:expr, $e:expr) => {{
                let t = Instant::now();
                std::hint::black_box($e);
                $v.push(t.elapsed());
            }};
        }
        for i in 0..n {
            for k in 0..3 {
                match (i + k) % 3 {
                    0 => timed!(pg, kms.get("v", &volume).await.unwrap()),
                    1 => timed!(ng, native_get().await),
                    _ => timed!(hg, host_get().await),
                }
            }
            for k in 0..3 {
                match (i + k) % 3 {
                    0 => timed!(pw, kms.wrap("v", &volume, &pass).await.unwrap()),
                    1 => timed!(nw, native_wrap().await),
                    _ => timed!(hw, host_wrap().await),
                }
            }
        }
        let (rg, rw) = (median_pair_ratio(&pg, &ng), median_pair_ratio(&pw, &nw));
        let (dg, dw) = (median_pair_diff(&pg, &ng), median_pair_diff(&pw, &nw));
        let (sg, sw) = (median_pair_diff(&pg, &hg), median_pair_diff(&pw, &hw));
        let (hrg, hrw) = (median_pair_ratio(&pg, &hg), median_pair_ratio(&pw, &hw));
        let (pg, ng, pw, nw, hg, hw) = (
            median(pg),
            median(ng),
            median(pw),
            median(nw),
            median(hg),
            median(hw),
        );
        println!("kmshost vault benchmark: OpenBao on loopback, {n} interleaved rounds");
        println!();
        println!("plugin vs. native reqwest (the target):");
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
        println!();
        println!("plugin vs. native Rust on the host's transport (the sandbox alone):");
        println!(
            "              median plugin   median native   ratio of medians   median pair ratio   median pair diff"
        );
        for (op, p, nat, r, d) in [
            ("KV get", pg, hg, hrg, sg),
            ("Transit wrap", pw, hw, hrw, sw),
        ] {
            println!(
                "{op:<13} {:>10.1} µs   {:>10.1} µs   {:>16.3}   {r:>17.3}   {d:>13.1} µs",
                micros(p),
                micros(nat),
                p.as_secs_f64() / nat.as_secs_f64(),
            );
        }

        // The same KV get against a server that answers at once with
        // OpenBao's own response body: what the sandbox costs when nothing
        // runs between two calls.
        let stored = {
            let req = host_req(target, "GET", format!("/v1/secret/data/{volume}"), vec![]);
            pool.fetch(target, &connect, req, 1 << 20)
                .await
                .unwrap()
                .body
                .unwrap()
        };
        let instant = instant_server(stored.to_vec());
        let kms_i = support::facade(
            &json!({"i": {"encryptionKMSType": "vault", "vaultAddress": instant,
                          "tokenSecretName": "vault-token", "vaultBackendPath": "secret/"}}),
            cache.path(),
            Arc::new(MountedSecrets::new(dir.path())),
        );
        let target_i: &'static Target = Box::leak(Box::new(Target::parse_url(&instant).unwrap()));
        let host_get_i = || host_get_at(target_i);
        for _ in 0..100 {
            kms_i.get("i", &volume).await.unwrap();
            host_get_i().await;
        }
        // Profiling aid: `KMSHOST_BENCH_PROFILE=instant` runs only the
        // plugin's KV get against the instant server, for a while (e.g.
        // under `perf record`).
        if std::env::var("KMSHOST_BENCH_PROFILE").as_deref() == Ok("instant") {
            let t = Instant::now();
            let mut times = Vec::with_capacity(50_000);
            for _ in 0..50_000 {
                timed!(times, kms_i.get("i", &volume).await.unwrap());
            }
            let m = micros(median(times));
            println!("instant: median {m:.1} µs over {:?}", t.elapsed());
            return;
        }
        let (mut pi, mut hi) = (vec![], vec![]);
        for i in 0..n {
            for k in 0..2 {
                match (i + k) % 2 {
                    0 => timed!(pi, kms_i.get("i", &volume).await.unwrap()),
                    _ => timed!(hi, host_get_i().await),
                }
            }
        }
        let (ri, di) = (median_pair_ratio(&pi, &hi), median_pair_diff(&pi, &hi));
        let (pi, hi) = (median(pi), median(hi));
        println!();
        println!(
            "the same KV get against a server answering at once (nothing runs between calls):"
        );
        println!(
            "              median plugin   median native   ratio of medians   median pair ratio   median pair diff"
        );
        println!(
            "{:<13} {:>10.1} µs   {:>10.1} µs   {:>16.3}   {ri:>17.3}   {di:>13.1} µs",
            "KV get",
            micros(pi),
            micros(hi),
            pi.as_secs_f64() / hi.as_secs_f64(),
        );
    });
}
