//! Throughput under concurrency against a real OpenBao on loopback: the same
//! KV get through the `vault` plugin (the whole facade) and through a native
//! client (reqwest), with 1, 2, 4, … 64 callers at once — all through one
//! kmsID, then spread over 8 kmsIDs — printed side by side with the ratio
//! plugin ÷ native (target ≥ 0.95 at every level). A third client, native
//! Rust on the host's own transport (`net::Pool::fetch`, what
//! `outbound-http` runs on), separates the sandbox's share from the
//! transport's. The clients take turns per level so drift in the server
//! hits all of them.
//!
//! Run: `cargo bench -p kmshost --bench concurrency` (`-- --quick` for a
//! short run). Needs OpenBao (scripts/test.sh installs it into
//! target/peers-venv); without it the bench says so and exits.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use kmshost::capability::allow_list::Target;
use kmshost::capability::net::{Connect, Pool, PoolBody};
use kmshost::kms::{KeyId, SecretBytes};
use kmshost::secrets::MountedSecrets;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

const LEVELS: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];

/// Requests per second with `callers` tasks making `total` calls in all.
async fn throughput<F, Fut>(callers: usize, total: usize, call: F) -> f64
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let per = total / callers;
    let t = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let call = call.clone();
            tokio::spawn(async move {
                for _ in 0..per {
                    call(c).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (per * callers) as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let total = if quick { 400 } else { 2000 };
    let Some(bin) = common::openbao::bao_binary() else {
        println!(
            "concurrency bench skipped: OpenBao is not installed (scripts/test.sh installs it)"
        );
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let bao = common::openbao::OpenBao::start(bin).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("vault-token")).unwrap();
        std::fs::write(dir.path().join("vault-token/token"), "root").unwrap();
        let cache = tempfile::tempdir().unwrap();
        let mut config = serde_json::Map::new();
        for i in 0..8 {
            config.insert(
                format!("v{i}"),
                json!({"encryptionKMSType": "vault", "vaultAddress": bao.addr,
                       "tokenSecretName": "vault-token", "vaultBackendPath": "secret/",
                       "kmshostMaxConcurrency": "64"}),
            );
        }
        let kms = Arc::new(support::facade(
            &serde_json::Value::Object(config),
            cache.path(),
            Arc::new(MountedSecrets::new(dir.path())),
        ));
        let volume = KeyId::new("pvc-bench").unwrap();
        let pass = SecretBytes::new(b"bench-passphrase-0123456789abcdef".to_vec());
        kms.put("v0", &volume, &pass).await.unwrap();
        let client = reqwest::Client::new();
        let url = format!("{}/v1/secret/data/{volume}", bao.addr);

        let plugin = |spread: usize| {
            let (kms, volume) = (kms.clone(), volume.clone());
            move |c: usize| {
                let (kms, volume) = (kms.clone(), volume.clone());
                async move {
                    let id = format!("v{}", c % spread);
                    std::hint::black_box(kms.get(&id, &volume).await.unwrap());
                }
            }
        };
        let native = {
            let (client, url) = (client.clone(), url.clone());
            move |_c: usize| {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    let v: serde_json::Value = client
                        .get(url)
                        .header("x-vault-token", "root")
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    std::hint::black_box(v);
                }
            }
        };
        let host = {
            let pool = Arc::new(Pool::default());
            let target = Arc::new(Target::parse_url(&bao.addr).unwrap());
            let path = format!("/v1/secret/data/{volume}");
            move |_c: usize| {
                let (pool, target, path) = (pool.clone(), target.clone(), path.clone());
                async move {
                    use http_body_util::BodyExt as _;
                    let connect = Connect {
                        tls: None,
                        server_name: None,
                        connect_timeout: Duration::from_secs(10),
                        first_byte_timeout: Duration::from_secs(30),
                    };
                    let body: PoolBody = http_body_util::Empty::new()
                        .map_err(|never| match never {})
                        .boxed_unsync();
                    let req = http::Request::get(path)
                        .header("host", target.to_string().trim_start_matches("http://"))
                        .header("x-vault-token", "root")
                        .body(body)
                        .unwrap();
                    let f = pool.fetch(&target, &connect, req, 1 << 20).await.unwrap();
                    let v: serde_json::Value = serde_json::from_slice(&f.body.unwrap()).unwrap();
                    std::hint::black_box(v);
                }
            }
        };
        // Warm up every path: compile, log in, open connections.
        throughput(8, 200, plugin(8)).await;
        throughput(8, 200, native.clone()).await;
        throughput(8, 200, host.clone()).await;

        for (title, spread) in [("one kmsID", 1), ("8 kmsIDs", 8)] {
            println!("\nKV get throughput, {title} (req/s; {total} calls per level)");
            println!(
                "{:>8} {:>10} {:>10} {:>8} {:>10} {:>12}",
                "callers", "plugin", "native", "ratio", "host", "plugin/host"
            );
            for (i, callers) in LEVELS.into_iter().enumerate() {
                let (mut p, mut n, mut h) = (0.0, 0.0, 0.0);
                // Rotate which client goes first.
                for k in 0..3 {
                    match (i + k) % 3 {
                        0 => p = throughput(callers, total, plugin(spread)).await,
                        1 => n = throughput(callers, total, native.clone()).await,
                        _ => h = throughput(callers, total, host.clone()).await,
                    }
                }
                println!(
                    "{callers:>8} {p:>10.0} {n:>10.0} {:>8.3} {h:>10.0} {:>12.3}",
                    p / n,
                    p / h
                );
            }
        }
    });
}
