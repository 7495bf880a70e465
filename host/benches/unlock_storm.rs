//! Unlock storm: NodeStage's key work for many volumes at once — fetch the
//! key through the plugin (the `secret` plugin's `metadata` unwrap) and
//! verify it against the LUKS2 keyslot — with kmshost's default keyslot KDF
//! (PBKDF2, 1000 iterations: the passphrase is 256 random bits) vs.
//! ceph-csi's flags (`--hash sha256 --pbkdf-memory 32768`, argon2id with
//! cryptsetup's 2 s default), side by side in one run, under the driver's
//! concurrency limit. Prints the ratio and each mode's peak memory.
//!
//! Run: `cargo bench -p kmshost --bench unlock_storm` (50 volumes);
//! `-- --quick` for 10; `-- --concurrency N` to change the limit.
//!
//! Every volume is a copy of one formatted template, so formatting (itself
//! a 2 s benchmark with ceph-csi's flags) is paid once per mode; each
//! volume's key is wrapped under its own ID, so every unlock does the full
//! unwrap and the full keyslot KDF.
//!
//! With OpenBao installed (scripts/test.sh puts it in target/peers-venv), the
//! storm runs again with a Vault kmsID (keys stored in KV, one round trip
//! per volume through the `vault` plugin), one volume at a time and then
//! under the concurrency limit: the ratio shows the round trips overlap.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use kmshost::csi::keys;
use kmshost::kms::{Kms, generate_passphrase};
use kmshost::luks::{self, FormatParams, Pbkdf};
use kmshost::secrets::{ChainedSecrets, MountedSecrets};
use kmshost::volume::{Encryption, KeyHolding};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn peak_rss_reset() {
    // Writing 5 to clear_refs resets VmHWM (Linux ≥ 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

struct Volume {
    id: String,
    image: PathBuf,
    enc: Encryption,
}

async fn prepare(
    kms: &Kms,
    kms_id: &str,
    dir: &Path,
    tag: &str,
    pbkdf: Pbkdf,
    n: usize,
) -> (Vec<Volume>, Duration) {
    let template = dir.join(format!("{tag}-template.img"));
    let f = std::fs::File::create(&template).unwrap();
    f.set_len(32 << 20).unwrap();
    let passphrase = generate_passphrase();
    let params = FormatParams {
        pbkdf,
        ..Default::default()
    };
    let t = Instant::now();
    luks::format(&template, &passphrase, &params).unwrap();
    let format_time = t.elapsed();
    let mut out = Vec::new();
    for i in 0..n {
        let id = format!("kh-vol-{tag}-{i:03}");
        let image = dir.join(format!("{id}.img"));
        let st = std::process::Command::new("cp")
            .args(["--sparse=always"])
            .arg(&template)
            .arg(&image)
            .status()
            .unwrap();
        assert!(st.success());
        let kms_id = kmshost::kms::KmsId::new(kms_id).unwrap();
        let key = keys::seal(kms, &kms_id, None, &id, &passphrase)
            .await
            .unwrap();
        assert!(matches!(
            key,
            KeyHolding::Wrapped { .. } | KeyHolding::Stored
        ));
        out.push(Volume {
            id,
            image,
            enc: Encryption {
                kms_id,
                tenant: None,
                key,
                cipher: "aes".into(),
                cipher_mode: "xts-plain64".into(),
                key_size_bits: 512,
                pbkdf,
                sector_size: 0,
                formatted: true,
            },
        });
    }
    (out, format_time)
}

/// Unlocks every volume, at most `concurrency` at a time; returns the
/// wall time and the peak RSS.
async fn storm(kms: &Arc<Kms>, vols: Vec<Volume>, concurrency: usize) -> (Duration, f64) {
    peak_rss_reset();
    let gate = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for v in vols {
        let (kms, gate) = (kms.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            let key = keys::open(&kms, &v.enc, &v.id).await.unwrap();
            tokio::task::spawn_blocking(move || luks::verify(&v.image, &key).unwrap())
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (t.elapsed(), peak_rss_mib())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let n = if quick { 10 } else { 50 };
    let concurrency = args
        .iter()
        .position(|a| a == "--concurrency")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| kmshost::csi::DriverConfig::default().max_concurrent_unlocks);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets/kek");
        std::fs::create_dir_all(&secrets).unwrap();
        std::fs::write(secrets.join("encryptionPassphrase"), b"bench-passphrase").unwrap();
        let config = serde_json::json!({
            "meta": {"encryptionKMSType": "metadata", "secretName": "kek"}
        });
        let kms = Arc::new(support::facade(
            &config,
            &kmshost::host_setup::default_cache_dir(),
            Arc::new(ChainedSecrets::new().with(Arc::new(MountedSecrets::new(
                dir.path().join("secrets"),
            )))),
        ));
        println!("unlock storm: {n} volumes, concurrency {concurrency}");
        let (ours, ours_fmt) =
            prepare(&kms, "meta", dir.path(), "kmshost", Pbkdf::MACHINE_KEY, n).await;
        let (ceph, ceph_fmt) =
            prepare(&kms, "meta", dir.path(), "cephcsi", Pbkdf::CEPH_CSI, n).await;
        println!(
            "  format (once per mode): kmshost {:.0} ms, ceph-csi flags {:.0} ms",
            ours_fmt.as_secs_f64() * 1e3,
            ceph_fmt.as_secs_f64() * 1e3
        );
        // Warm the plugin (compile, KEK) outside the timed runs.
        let warm = &ours[0];
        keys::open(&kms, &warm.enc, &warm.id).await.unwrap();

        let (t_ours, m_ours) = storm(&kms, ours, concurrency).await;
        let (t_ceph, m_ceph) = storm(&kms, ceph, concurrency).await;
        let per = |t: Duration| t.as_secs_f64() * 1e3 / n as f64;
        println!(
            "  kmshost default (pbkdf2 1000):      {:8.1} ms total, {:7.2} ms/volume, peak RSS {:6.1} MiB",
            t_ours.as_secs_f64() * 1e3,
            per(t_ours),
            m_ours
        );
        println!(
            "  ceph-csi flags (argon2id 2 s, 32 MiB): {:8.1} ms total, {:7.2} ms/volume, peak RSS {:6.1} MiB",
            t_ceph.as_secs_f64() * 1e3,
            per(t_ceph),
            m_ceph
        );
        println!(
            "  ratio ceph-csi / kmshost: {:.1}x (target >= 50x)",
            t_ceph.as_secs_f64() / t_ours.as_secs_f64()
        );
        vault_storm(dir.path(), n, concurrency).await;
    });
}

/// The storm with a Vault kmsID: one volume at a time, then `concurrency`
/// at once, through one plugin.
async fn vault_storm(dir: &Path, n: usize, concurrency: usize) {
    let Some(bin) = common::openbao::bao_binary() else {
        println!("  vault: skipped (OpenBao is not installed; scripts/test.sh installs it)");
        return;
    };
    let bao = common::openbao::OpenBao::start(bin).await;
    let secrets = dir.join("vault-secrets/vault-token");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("token"), "root").unwrap();
    let config = serde_json::json!({
        "vault": {"encryptionKMSType": "vault", "vaultAddress": bao.addr,
                  "tokenSecretName": "vault-token", "vaultBackendPath": "secret/"}
    });
    let kms = Arc::new(support::facade(
        &config,
        &kmshost::host_setup::default_cache_dir(),
        Arc::new(MountedSecrets::new(dir.join("vault-secrets"))),
    ));
    let (one, _) = prepare(&kms, "vault", dir, "vault-seq", Pbkdf::MACHINE_KEY, n).await;
    let (many, _) = prepare(&kms, "vault", dir, "vault-par", Pbkdf::MACHINE_KEY, n).await;
    let (t_one, _) = storm(&kms, one, 1).await;
    let (t_many, m_many) = storm(&kms, many, concurrency).await;
    println!(
        "  vault, one at a time:               {:8.1} ms total, {:7.2} ms/volume",
        t_one.as_secs_f64() * 1e3,
        t_one.as_secs_f64() * 1e3 / n as f64
    );
    println!(
        "  vault, {concurrency} at once:                  {:8.1} ms total, {:7.2} ms/volume, peak RSS {:6.1} MiB",
        t_many.as_secs_f64() * 1e3,
        t_many.as_secs_f64() * 1e3 / n as f64,
        m_many
    );
    println!(
        "  ratio one-at-a-time / concurrent: {:.1}x (the key round trips overlap)",
        t_one.as_secs_f64() / t_many.as_secs_f64()
    );
}
