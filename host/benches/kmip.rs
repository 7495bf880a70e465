//! The cost of the sandbox on KMIP: one wrap through the `kmip` plugin (the
//! whole facade: config, Secret, sandbox, `tls-stream`, one Encrypt round
//! trip to PyKMIP) against a native Rust client sending the same Encrypt on
//! the host's own TLS stream (`net::connect_tcp` + `net::handshake_tls`,
//! what `tls-stream` uses), interleaved call by call on loopback. Both keep
//! their connection open between calls (the plugin's through the kmsID's
//! pool). The plugin's call also reads its Secret and seals the key with
//! AES-GCM; those are part of what a wrap costs.
//!
//! Run: `cargo bench -p kmshost --bench kmip` (`-- --quick` for a short
//! run). Needs PyKMIP (scripts/test.sh installs it into target/peers-venv);
//! without it the bench says so and exits.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;
use support::{median, micros};

use kmshost::capability::allow_list::Target;
use kmshost::capability::net::{self, Connect};
use kmshost::capability::tls::TlsSettings;
use kmshost::kms::{KeyId, SecretBytes};
use kmshost::secrets::MountedSecrets;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TTLV item: tag, type, value bytes (padded by `ttlv`).
fn ttlv(tag: u32, ty: u8, value: &[u8]) -> Vec<u8> {
    let mut out = tag.to_be_bytes()[1..].to_vec();
    out.push(ty);
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + (8 - value.len() % 8) % 8, 0);
    out
}
fn st(tag: u32, items: &[Vec<u8>]) -> Vec<u8> {
    ttlv(tag, 1, &items.concat())
}
fn int(tag: u32, v: i32) -> Vec<u8> {
    ttlv(tag, 2, &v.to_be_bytes())
}
fn en(tag: u32, v: u32) -> Vec<u8> {
    ttlv(tag, 5, &v.to_be_bytes())
}

/// A KMIP 1.4 Encrypt request (AES-CBC-PKCS5) of `data` under `uid`.
fn encrypt_request(uid: &str, data: &[u8], iv: &[u8]) -> Vec<u8> {
    st(
        0x420078,
        &[
            st(
                0x420077,
                &[
                    st(0x420069, &[int(0x42006A, 1), int(0x42006B, 4)]),
                    int(0x42000D, 1),
                ],
            ),
            st(
                0x42000F,
                &[
                    en(0x42005C, 0x1F),
                    ttlv(0x420093, 8, b"batch-01"),
                    st(
                        0x420079,
                        &[
                            ttlv(0x420094, 7, uid.as_bytes()),
                            st(
                                0x42002B,
                                &[en(0x420011, 1), en(0x42005F, 3), en(0x420028, 3)],
                            ),
                            ttlv(0x4200C2, 8, data),
                            ttlv(0x42003D, 8, iv),
                        ],
                    ),
                ],
            ),
        ],
    )
}

fn median_pair_ratio(plugin: &[Duration], native: &[Duration]) -> f64 {
    let mut r: Vec<f64> = plugin
        .iter()
        .zip(native)
        .map(|(p, n)| p.as_secs_f64() / n.as_secs_f64())
        .collect();
    r.sort_by(f64::total_cmp);
    r[r.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 300 } else { 2000 };
    let Some(bin) = common::kmip::pykmip_bin() else {
        println!("kmip bench skipped: PyKMIP is not installed (scripts/test.sh installs it)");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let s = common::kmip::own(bin);
        let uid = s.create_aes_key();
        let dir = tempfile::tempdir().unwrap();
        common::write_secret(
            dir.path(),
            "ceph-csi-kmip-credentials",
            &[
                ("CA_CERT", s.pki.ca_pem.as_bytes()),
                ("CLIENT_CERT", s.pki.client_cert_pem.as_bytes()),
                ("CLIENT_KEY", s.pki.client_key_pem.as_bytes()),
                ("UNIQUE_IDENTIFIER", uid.as_bytes()),
            ],
        );
        let cache = tempfile::tempdir().unwrap();
        let config = json!({"k": {"encryptionKMSType": "kmip", "KMIP_ENDPOINT": s.endpoint()}});
        let kms = support::facade(&config, cache.path(), Arc::new(MountedSecrets::new(dir.path())));
        let volume = KeyId::new("pvc-bench").unwrap();
        let pass = SecretBytes::new(b"bench-passphrase-0123456789abcdef".to_vec());

        // Native: the host's own TLS stream, one connection kept open.
        let tls = TlsSettings {
            ca_pem: Some(s.pki.ca_pem.clone().into_bytes()),
            client_cert_pem: Some(s.pki.client_cert_pem.clone().into_bytes()),
            client_key_pem: Some(SecretBytes::new(s.pki.client_key_pem.clone().into_bytes())),
            ..Default::default()
        }
        .client_config()
        .unwrap();
        let connect = Connect {
            tls: Some(tls),
            server_name: None,
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(30),
        };
        let target = Target::parse("tls", &s.endpoint()).unwrap();
        let tcp = net::connect_tcp(&target, Duration::from_secs(10)).await.unwrap();
        let mut stream = net::handshake_tls(&target, &connect, tcp, Duration::from_secs(10))
            .await
            .unwrap();
        let request = encrypt_request(&uid, &[7u8; 32], &[1u8; 16]);
        let mut native = async || {
            stream.write_all(&request).await.unwrap();
            let mut head = [0u8; 8];
            stream.read_exact(&mut head).await.unwrap();
            let len = u32::from_be_bytes(head[4..8].try_into().unwrap()) as usize;
            let mut body = vec![0u8; len];
            stream.read_exact(&mut body).await.unwrap();
            body
        };
        // Both paths work before anything is timed: the native response
        // carries ResultStatus success, the plugin's blob unwraps.
        let first = native().await;
        let success = [0x42, 0x00, 0x7F, 0x05, 0, 0, 0, 4, 0, 0, 0, 0];
        assert!(first.windows(12).any(|w| w == success), "native Encrypt failed");
        let blob = kms.wrap("k", &volume, &pass).await.unwrap();
        assert_eq!(kms.unwrap("k", &volume, &blob).await.unwrap(), pass);
        for _ in 0..100 {
            kms.wrap("k", &volume, &pass).await.unwrap();
            native().await;
        }
        let (mut p, mut nat) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for i in 0..n {
            for k in 0..2 {
                let t = Instant::now();
                if (i + k) % 2 == 0 {
                    std::hint::black_box(kms.wrap("k", &volume, &pass).await.unwrap());
                    p.push(t.elapsed());
                } else {
                    std::hint::black_box(native().await);
                    nat.push(t.elapsed());
                }
            }
        }
        let r = median_pair_ratio(&p, &nat);
        let (mp, mn) = (median(p), median(nat));
        println!("kmshost kmip benchmark: PyKMIP on loopback (mutual TLS 1.2), {n} interleaved rounds");
        println!();
        println!("plugin wrap vs. native Encrypt on the host's TLS stream (the sandbox alone):");
        println!("              median plugin   median native   ratio of medians   median pair ratio   median diff");
        println!(
            "Encrypt       {:>10.1} µs   {:>10.1} µs   {:>16.3}   {r:>17.3}   {:>8.1} µs",
            micros(mp),
            micros(mn),
            mp.as_secs_f64() / mn.as_secs_f64(),
            micros(mp) - micros(mn),
        );
        s.kill();
    });
}
