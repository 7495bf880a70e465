//! Real dm-crypt: the encrypted volume lifecycle inside a QEMU (TCG) guest
//! kernel, since this container has no device-mapper.
//!
//! `dm_crypt_lifecycle_in_a_guest_kernel` prepares a Debian guest kernel
//! and initramfs (scripts/guest-kernel.sh), shares the host's `/usr` and
//! this repository over virtio-9p, and boots the guest, which runs this
//! same test binary's `guest_lifecycle` through the CSI socket: create →
//! stage (format, open, mkfs, mount) → write → unstage → stage again → read
//! back → rotate key online → expand online → wrong key refused → delete.
//! With OpenBao installed, the same guest also runs `guest_vault_lifecycle`:
//! the encrypted lifecycle with `encryptionKMSID` pointing at a `vault`
//! kmsID, its key kept in the host's OpenBao (reached through QEMU's user
//! network, where 10.0.2.2 is the host's loopback). With PyKMIP installed,
//! it also runs `guest_kmip_lifecycle`: the same with ceph-csi's and Rook's
//! `kmip` kmsIDs against the host's PyKMIP, over mutual TLS terminated by
//! the host inside the guest. And always `guest_keyprotect_lifecycle`: the
//! same with an `ibmkeyprotect` kmsID against the host's fake Key Protect,
//! its root key rotated mid-way, the rewrapped key kept and opening the
//! volume. With SoftHSM2 installed, `guest_pkcs11_lifecycle`: the same with
//! a `pkcs11` kmsID, its key label rotated mid-way, SoftHSM2 run by the
//! guest's kmshost from the host's `/usr`. And always
//! `guest_azure_lifecycle`: the same with an `azure-kv` kmsID against the
//! host's fake Entra ID and Key Vault, the login assertion signed by the
//! guest's kmshost with the certificate's key.

mod common;

use common::csi::*;
use kmshost::kms::{KeyId, generate_passphrase};
use kmshost::volume::KeyHolding;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::Code;

const PASS: &str = "GUEST-LIFECYCLE-PASS";
const VAULT_PASS: &str = "GUEST-VAULT-LIFECYCLE-PASS";
const KMIP_PASS: &str = "GUEST-KMIP-LIFECYCLE-PASS";
const KP_PASS: &str = "GUEST-KEYPROTECT-LIFECYCLE-PASS";
const HSM_PASS: &str = "GUEST-PKCS11-LIFECYCLE-PASS";
const AZ_PASS: &str = "GUEST-AZURE-LIFECYCLE-PASS";
const RBD_PASS: &str = "GUEST-RBD-LIFECYCLE-PASS";
const RESTART_PASS: &str = "GUEST-RESTART-LIFECYCLE-PASS";
/// The clusterID the guest's RBD StorageClass names.
const GUEST_CLUSTER: &str = "guest-cluster";
/// The Ceph user the guest's driver acts as.
const GUEST_CEPH_USER: &str = "csi-rbd-guest";
/// A ceph-csi volume handle (version, clusterID length, clusterID, pool
/// ID, uuid) and its image.
const CEPH_CSI_VOLUME: &str =
    "0001-000d-guest-cluster-0000000000000001-3f2c9a7e-5b1d-4e8f-9a6c-2d7e1b0c4f5a";
const CEPH_CSI_IMAGE: &str = "csi-vol-3f2c9a7e-5b1d-4e8f-9a6c-2d7e1b0c4f5a";

/// A LUKS passphrase and its wrapped DEK exactly as ceph-csi's `metadata`
/// KMS makes them for `volume`: 20 random bytes, base64url; KEK =
/// scrypt(the Secret's passphrase, salt = volume ID, N=32768, r=8, p=1);
/// AES-256-GCM without associated data; JSON `{"dek","nonce"}` in base64.
/// The passphrase is `metadata_config`'s `meta-a`. scrypt runs here, on the
/// host: under emulation it would take minutes.
fn ceph_csi_dek(volume: &str) -> (String, String) {
    use aes_gcm::aead::{Aead, KeyInit};
    use base64::Engine as _;
    let passphrase = base64::engine::general_purpose::URL_SAFE.encode(rand::random::<[u8; 20]>());
    let mut kek = [0u8; 32];
    scrypt::scrypt(
        b"correct horse battery staple",
        volume.as_bytes(),
        &scrypt::Params::new(15, 8, 1, 32).unwrap(),
        &mut kek,
    )
    .unwrap();
    let nonce: [u8; 12] = rand::random();
    let ct = aes_gcm::Aes256Gcm::new_from_slice(&kek)
        .unwrap()
        .encrypt(aes_gcm::Nonce::from_slice(&nonce), passphrase.as_bytes())
        .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let dek = serde_json::json!({"dek": b64.encode(&ct), "nonce": b64.encode(nonce)});
    (passphrase, dek.to_string())
}

/// Runs `cryptsetup args` with `input` on stdin (the passphrase, as
/// ceph-csi passes it). ceph-csi names the key file `/dev/stdin`; the guest's
/// minimal /dev has no such link, so callers pass `-d -`, which cryptsetup
/// reads the same way (the whole of stdin, newlines included).
fn cryptsetup(args: &[&str], input: &str) {
    use std::io::Write as _;
    let mut c = std::process::Command::new("cryptsetup")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    assert!(c.wait().unwrap().success(), "cryptsetup {args:?}");
}
/// The host's loopback as QEMU's user network shows it to the guest.
const HOST_FROM_GUEST: &str = "10.0.2.2";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Long by design: one scenario end to end, each step checked where it happens.
#[test]
fn dm_crypt_lifecycle_in_a_guest_kernel() {
    let repo = repo();
    let kernel = repo.join("target/guest-kernel");
    let prep = std::process::Command::new(repo.join("scripts/guest-kernel.sh"))
        .arg(&kernel)
        .output()
        .expect("scripts/guest-kernel.sh");
    if prep.status.code() == Some(3) && std::env::var_os("KMSHOST_REQUIRE_PEERS").is_none() {
        eprintln!(
            "skipping: {} (scripts/bootstrap.sh with KMSHOST_BOOTSTRAP_PEERS=1 installs it)",
            String::from_utf8_lossy(&prep.stderr).trim()
        );
        return;
    }
    assert!(
        prep.status.success(),
        "guest kernel: {}",
        String::from_utf8_lossy(&prep.stderr)
    );
    // Compile the plugins here so the guest loads them from the shared
    // compile cache instead of compiling under emulation.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let h = CsiHarness::start(&metadata_config()).await;
        h.driver.probe().await.unwrap();
        h.stop().await;
    });
    // OpenBao on the host for the guest's vault kmsID (kept alive for the
    // whole guest run).
    let bao = common::openbao::require_bao("dm-crypt with a vault kmsID")
        .map(|bin| rt.block_on(common::openbao::OpenBao::start(bin)));
    let vault_env = match &bao {
        Some(b) => {
            let port = b.addr.rsplit(':').next().unwrap();
            format!("KMSHOST_GUEST_VAULT=http://{HOST_FROM_GUEST}:{port} ")
        }
        None => String::new(),
    };

    let work = repo.join("target/guest");
    std::fs::create_dir_all(&work).unwrap();
    // PyKMIP on the host for the guest's kmip kmsIDs: its PKI and the
    // wrapping key's identifier go to the guest through the shared folder.
    let kmip = common::kmip::require_pykmip("dm-crypt with kmip kmsIDs").map(common::kmip::shared);
    let kmip_env = match &kmip {
        Some(s) => {
            let dir = work.join("kmip");
            std::fs::create_dir_all(&dir).unwrap();
            for (name, pem) in [
                ("CA_CERT", &s.pki.ca_pem),
                ("CLIENT_CERT", &s.pki.client_cert_pem),
                ("CLIENT_KEY", &s.pki.client_key_pem),
                ("UNIQUE_IDENTIFIER", &s.create_aes_key()),
            ] {
                std::fs::write(dir.join(name), pem).unwrap();
            }
            format!(
                "KMSHOST_GUEST_KMIP={HOST_FROM_GUEST}:{} KMSHOST_GUEST_KMIP_DIR={} ",
                s.port,
                dir.display()
            )
        }
        None => String::new(),
    };
    // The fake Key Protect (no emulator of the service exists) on the
    // host's loopback, with one root key.
    let kp = rt.block_on(common::keyprotect::FakeKeyProtect::start());
    let kp_root = kp.create_root_key();
    let kp_env = format!(
        "KMSHOST_GUEST_KP=http://{HOST_FROM_GUEST}:{} KMSHOST_GUEST_KP_ROOT={kp_root} ",
        kp.server.addr.port()
    );
    // The fake Entra ID and Key Vault (no emulator exists), the
    // certificate registered on the app and in a file the guest reads.
    let az = rt.block_on(common::azure::FakeAzure::start());
    let az_cert = common::azure::TestCert::rsa(2048);
    az.register(&az_cert);
    let az_file = work.join("azure-client-cert.pem");
    std::fs::write(&az_file, az_cert.client_cert()).unwrap();
    let az_env = format!(
        "KMSHOST_GUEST_AZ_VAULT=http://{HOST_FROM_GUEST}:{} KMSHOST_GUEST_AZ_LOGIN=http://{HOST_FROM_GUEST}:{} KMSHOST_GUEST_AZ_CERT={} ",
        az.vault.addr.port(),
        az.entra.addr.port(),
        az_file.display()
    );
    let hsm_env = match common::softhsm::softhsm("dm-crypt with a pkcs11 kmsID") {
        Some(_) => "KMSHOST_GUEST_SOFTHSM=1 ",
        None => "",
    };
    // A real Ceph cluster on the host's 127.0.0.2 for the guest's RBD
    // volumes: its cluster config and a user key go through the shared
    // folder, and the guest routes 127.0.0.2 to the host (PEERS.md).
    let ceph = common::ceph::require_ceph("RBD volumes in the guest").then(common::ceph::shared);
    let (ceph_env, ceph_net) = match &ceph {
        Some(c) => {
            let dir = work.join("ceph");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("config.json"), c.cluster_config(GUEST_CLUSTER)).unwrap();
            std::fs::write(dir.join("user-key"), c.rbd_user(GUEST_CEPH_USER, "rbd")).unwrap();
            let (passphrase, dek) = ceph_csi_dek(CEPH_CSI_VOLUME);
            std::fs::write(dir.join("ceph-csi-passphrase"), passphrase).unwrap();
            std::fs::write(dir.join("ceph-csi-dek"), dek).unwrap();
            (
                format!("KMSHOST_GUEST_CEPH_DIR={} ", dir.display()),
                "echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet
                 echo 1 > /proc/sys/net/ipv4/conf/eth0/route_localnet
                 busybox ip addr del 127.0.0.1/8 dev lo
                 busybox ip addr add 127.0.0.1/32 dev lo
                 busybox ip route add 127.0.0.2/32 via 10.0.2.2 dev eth0
",
            )
        }
        None => (String::new(), ""),
    };
    let out = work.join("guest-output.txt");
    let _ = std::fs::remove_file(&out);
    let exe = std::env::current_exe().unwrap();
    std::fs::write(
        work.join("run-in-guest.sh"),
        format!(
            "{ceph_net}cd {host}\n{vault_env}{kmip_env}{kp_env}{az_env}{hsm_env}{ceph_env}KMSHOST_IN_GUEST=1 RUST_BACKTRACE=1 {exe} --ignored guest_ \
             --nocapture --test-threads 1 > {out} 2>&1\necho \"exit=$?\" >> {out}\n",
            host = repo.join("host").display(),
            exe = exe.display(),
            out = out.display()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let mut qemu = std::process::Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "1536M"])
        .args(["-nographic", "-no-reboot"])
        .args(["-nic", "user,model=virtio-net-pci"])
        .arg("-kernel")
        .arg(kernel.join("vmlinux"))
        .arg("-initrd")
        .arg(kernel.join("initrd.cpio.gz"))
        .arg("-append")
        .arg(format!(
            "console=ttyS0 panic=-1 quiet kmshost.repo={}",
            repo.display()
        ))
        .arg("-virtfs")
        .arg("local,path=/usr,mount_tag=usr,security_model=none,readonly=on")
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=repo,security_model=passthrough",
            repo.display()
        ))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("qemu-system-x86_64");
    let deadline = Duration::from_secs(900);
    loop {
        if qemu.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > deadline {
            let _ = qemu.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let console = qemu.wait_with_output().unwrap();
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    eprintln!("guest finished in {:.1} s", started.elapsed().as_secs_f64());
    assert!(
        text.contains(PASS) && text.contains("exit=0"),
        "guest output:\n{text}\n--- console:\n{}",
        String::from_utf8_lossy(&console.stdout)
    );
    assert!(text.contains(RESTART_PASS), "guest output:\n{text}");
    if let Some(bao) = &bao {
        assert!(text.contains(VAULT_PASS), "guest output:\n{text}");
        // The guest deleted its volume: the key is destroyed in Vault, every
        // version and the metadata.
        let id = kmshost::csi::volume_id_for("pvc-guest-vault");
        let gone = rt
            .block_on(bao.api("GET", &format!("/v1/secret/metadata/{id}"), None, None))
            .unwrap();
        assert_eq!(gone.0, 404, "the volume's key outlived it: {gone:?}");
    }
    if kmip.is_some() {
        assert!(text.contains(KMIP_PASS), "guest output:\n{text}");
    }
    assert!(text.contains(KP_PASS), "guest output:\n{text}");
    if !hsm_env.is_empty() {
        assert!(text.contains(HSM_PASS), "guest output:\n{text}");
    }
    let unwraps = kp
        .kp_requests()
        .iter()
        .filter(|r| r.path.ends_with("/actions/unwrap"))
        .count();
    assert!(
        unwraps >= 3,
        "the guest's stages unwrapped at the fake: {unwraps}"
    );
    assert_eq!(kp.exchanges(), 1, "one token for the guest's whole run");
    assert!(text.contains(AZ_PASS), "guest output:\n{text}");
    // The guest deleted its volume: its secret is soft-deleted, not purged.
    let id = kmshost::csi::volume_id_for("pvc-guest-azure");
    let secret = az.secret(&id).expect("the volume's secret, named after it");
    assert!(secret.deleted, "soft-deleted with its volume");
    assert_eq!(secret.versions.len(), 2, "created, then rotated");
    assert_eq!(az.logins(), 1, "one login for the guest's whole run");
    if let Some(c) = &ceph {
        assert!(text.contains(RBD_PASS), "guest output:\n{text}");
        // The guest deleted its volume: the image is gone from the pool.
        let id = kmshost::csi::volume_id_for("pvc-guest-rbd");
        let ls = c.rbd_admin(&["ls", "rbd"]);
        assert!(
            !String::from_utf8_lossy(&ls.stdout).contains(&id),
            "the guest's image outlived its volume"
        );
    }
}

fn fs_total(path: &Path) -> u64 {
    kmshost::volume::sys::fs_stats(path).unwrap().total_bytes
}

/// Expands staged volume `id` online to 128 MiB — ControllerExpandVolume,
/// then NodeExpandVolume at `staging` — and checks that the mapping has the
/// full capacity and the filesystem grew.
async fn expand_online_to_128_mib(h: &CsiHarness, id: &str, staging: &Path) {
    let before = fs_total(staging);
    let r = h.expand(id, 128 * MIB).await.unwrap();
    assert!(r.node_expansion_required);
    let n = h.node_expand(id, staging).await.unwrap();
    assert_eq!(
        n.capacity_bytes,
        128 * MIB,
        "the mapping has the full capacity"
    );
    let after = fs_total(staging);
    assert!(
        after > before + 50 * (MIB as u64),
        "ext4 grew: {before} -> {after}"
    );
}

/// Long by design: one scenario end to end, each step checked where it happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the QEMU guest kernel, driven by dm_crypt_lifecycle_in_a_guest_kernel"]
async fn guest_lifecycle() {
    assert!(
        std::env::var_os("KMSHOST_IN_GUEST").is_some(),
        "run by dm_crypt_lifecycle_in_a_guest_kernel inside the guest"
    );
    let enc: &[(&str, &str)] = &[("encrypted", "true"), ("encryptionKMSID", "meta-a")];
    let h = CsiHarness::start(&metadata_config()).await;
    let id = h
        .create("pvc-guest", 64 * MIB, enc, None)
        .await
        .unwrap()
        .volume_id;
    let mapper = PathBuf::from(format!("/dev/mapper/luks-{id}"));
    let (staging, target) = (h.path("staging"), h.path("pods/p/vol"));

    // First stage: format, open, mkfs, mount.
    h.stage(&id, &staging, mount_cap("ext4")).await.unwrap();
    assert!(mapper.exists(), "dm-crypt mapping open");
    assert_eq!(blkid_type(&mapper).as_deref(), Some("ext4"));
    assert_eq!(blkid_type(&h.image(&id)).as_deref(), Some("crypto_LUKS"));
    assert!(h.record(&id).unwrap().encryption.unwrap().formatted);
    h.publish(&id, &staging, &target, mount_cap("ext4"), false)
        .await
        .unwrap();
    std::fs::write(target.join("secret.txt"), b"only readable with the key").unwrap();
    h.unpublish(&id, &target).await.unwrap();
    h.unstage(&id, &staging).await.unwrap();
    assert!(!mapper.exists(), "mapping closed");
    assert!(!h.attached(&id));
    // The plaintext never reached the image.
    let img = std::fs::read(h.image(&id)).unwrap();
    assert!(!img.windows(10).any(|w| w == b"only reada"));

    // Stage again: the key comes back through the plugin.
    h.stage(&id, &staging, mount_cap("ext4")).await.unwrap();
    h.publish(&id, &staging, &target, mount_cap("ext4"), true)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(target.join("secret.txt")).unwrap(),
        b"only readable with the key"
    );

    // Rotate the key while the volume is in use; it keeps working and
    // opens with the new key afterwards.
    h.rotate(&id).await.unwrap();
    assert_eq!(
        std::fs::read(target.join("secret.txt")).unwrap(),
        b"only readable with the key"
    );
    h.unpublish(&id, &target).await.unwrap();
    h.unstage(&id, &staging).await.unwrap();
    h.stage(&id, &staging, mount_cap("ext4")).await.unwrap();
    assert_eq!(
        std::fs::read(staging.join("secret.txt")).unwrap(),
        b"only readable with the key"
    );

    // Expand online: image, loop device, dm-crypt mapping, ext4.
    expand_online_to_128_mib(&h, &id, &staging).await;
    h.unstage(&id, &staging).await.unwrap();

    // A wrong key is refused; nothing is opened or changed.
    let good = h.record(&id).unwrap();
    let mut bad = good.clone();
    let other = h
        .driver
        .kms()
        .wrap(
            "meta-a",
            &KeyId::new(id.clone()).unwrap(),
            &generate_passphrase(),
        )
        .await
        .unwrap();
    bad.encryption.as_mut().unwrap().key = KeyHolding::wrapped(&other);
    h.driver.records().put_volume(&bad).unwrap();
    let e = h.stage(&id, &staging, mount_cap("ext4")).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("wrong key"), "{}", e.message());
    assert!(!mapper.exists());
    h.driver.records().put_volume(&good).unwrap();
    h.stage(&id, &staging, mount_cap("ext4")).await.unwrap();
    assert!(staging.join("secret.txt").exists());
    h.unstage(&id, &staging).await.unwrap();

    h.delete(&id).await.unwrap();
    assert!(h.record(&id).is_none() && !h.image(&id).exists());

    // A crash right after formatting: the retry finds the header, opens it
    // with the stored key and goes on. Block access, exact usable size.
    let b = h
        .create("pvc-guest-block", 32 * MIB, enc, None)
        .await
        .unwrap()
        .volume_id;
    fail::cfg(h.driver.failpoint("stage.format"), "1*return").unwrap();
    let e = h.stage(&b, &staging, block_cap()).await.unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    assert_eq!(blkid_type(&h.image(&b)).as_deref(), Some("crypto_LUKS"));
    assert!(!h.attached(&b));
    h.stage(&b, &staging, block_cap()).await.unwrap();
    let dev = h.path("pods/p/dev");
    h.publish(&b, &staging, &dev, block_cap(), false)
        .await
        .unwrap();
    assert_eq!(
        kmshost::volume::sys::device_size(&dev).unwrap(),
        32 << 20,
        "the usable size is the requested capacity"
    );
    std::fs::write(&dev, vec![0x5a; 4096]).unwrap();
    h.unpublish(&b, &dev).await.unwrap();
    h.unstage(&b, &staging).await.unwrap();
    h.delete(&b).await.unwrap();
    h.stop().await;
    println!("{PASS}");
}

/// The encrypted lifecycle with a `vault` kmsID, its key stored in the
/// host's OpenBao: create (key stored in KV) → stage (key fetched from
/// Vault: format, open, mkfs, mount) → write → unstage → stage → read back
/// → rotate (the new key replaces the old one in Vault) → restage with it →
/// delete (key destroyed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the QEMU guest kernel, driven by dm_crypt_lifecycle_in_a_guest_kernel"]
async fn guest_vault_lifecycle() {
    assert!(
        std::env::var_os("KMSHOST_IN_GUEST").is_some(),
        "run by dm_crypt_lifecycle_in_a_guest_kernel inside the guest"
    );
    let Ok(addr) = std::env::var("KMSHOST_GUEST_VAULT") else {
        println!("no OpenBao on the host: the vault lifecycle is not run");
        return;
    };
    let mut config = metadata_config();
    config["vault-kv"] = serde_json::json!({
        "encryptionKMSType": "vault", "vaultAddress": addr,
        "vaultBackendPath": "secret/", "tokenSecretName": "vault-token"
    });
    let h = CsiHarness::start(&config).await;
    common::write_secret(&h.secrets, "vault-token", &[("token", b"root")]);
    let id = h
        .create_encrypted("pvc-guest-vault", 48 * MIB, "vault-kv")
        .await;
    assert_eq!(id, kmshost::csi::volume_id_for("pvc-guest-vault"));
    let key_id = KeyId::new(id.clone()).unwrap();
    assert_eq!(h.holding(&id), KeyHolding::Stored);
    let first = h.driver.kms().get("vault-kv", &key_id).await.unwrap();
    let mapper = PathBuf::from(format!("/dev/mapper/luks-{id}"));
    let staging = h.path("staging");

    h.stage(&id, &staging, mount_cap("ext4")).await.unwrap();
    assert!(mapper.exists(), "dm-crypt mapping open");
    assert_eq!(blkid_type(&h.image(&id)).as_deref(), Some("crypto_LUKS"));
    std::fs::write(staging.join("data.txt"), b"kept under a Vault key").unwrap();
    h.unstage(&id, &staging).await.unwrap();
    assert!(!mapper.exists());

    h.stage(&id, &staging, mount_cap("ext4")).await.unwrap();
    assert_eq!(
        std::fs::read(staging.join("data.txt")).unwrap(),
        b"kept under a Vault key"
    );
    h.rotate(&id).await.unwrap();
    let second = h.driver.kms().get("vault-kv", &key_id).await.unwrap();
    assert_ne!(first, second, "rotation stored a new key in Vault");
    h.unstage(&id, &staging).await.unwrap();
    h.stage(&id, &staging, mount_cap("ext4")).await.unwrap();
    assert_eq!(
        std::fs::read(staging.join("data.txt")).unwrap(),
        b"kept under a Vault key"
    );
    h.unstage(&id, &staging).await.unwrap();

    h.delete(&id).await.unwrap();
    let e = h.driver.kms().get("vault-kv", &key_id).await.unwrap_err();
    assert!(matches!(e, kmshost::kms::KmsError::NotFound { .. }), "{e}");
    h.stop().await;
    println!("{VAULT_PASS}");
}

/// The encrypted lifecycle with `kmip` kmsIDs against the host's PyKMIP,
/// TLS terminated by kmshost in the guest with the Secret's client
/// certificate: ceph-csi's envelope (the passphrase wrapped by the
/// server's Encrypt, kept with the volume) and Rook's store (registered as
/// Secret Data named after the volume). Each: create → stage (format,
/// open, mkfs, mount) → write → unstage → stage → read back → rotate →
/// restage with the new key → delete (Rook's key destroyed on the server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the QEMU guest kernel, driven by dm_crypt_lifecycle_in_a_guest_kernel"]
async fn guest_kmip_lifecycle() {
    assert!(
        std::env::var_os("KMSHOST_IN_GUEST").is_some(),
        "run by dm_crypt_lifecycle_in_a_guest_kernel inside the guest"
    );
    let (Ok(endpoint), Ok(dir)) = (
        std::env::var("KMSHOST_GUEST_KMIP"),
        std::env::var("KMSHOST_GUEST_KMIP_DIR"),
    ) else {
        println!("no PyKMIP on the host: the kmip lifecycle is not run");
        return;
    };
    let mut config = metadata_config();
    // The server's certificate names localhost; the guest reaches it as
    // 10.0.2.2.
    config["kmip-csi"] = serde_json::json!({
        "encryptionKMSType": "kmip", "KMIP_ENDPOINT": endpoint, "TLS_SERVER_NAME": "localhost"
    });
    config["kmip-rook"] = serde_json::json!({
        "KMS_PROVIDER": "kmip", "KMIP_ENDPOINT": endpoint, "TLS_SERVER_NAME": "localhost",
        "tokenSecretName": "rook-kmip"
    });
    let h = CsiHarness::start(&config).await;
    let read = |name: &str| std::fs::read(Path::new(&dir).join(name)).unwrap();
    let (ca, cert, key, uid) = (
        read("CA_CERT"),
        read("CLIENT_CERT"),
        read("CLIENT_KEY"),
        read("UNIQUE_IDENTIFIER"),
    );
    let tls: [(&str, &[u8]); 3] = [
        ("CA_CERT", &ca),
        ("CLIENT_CERT", &cert),
        ("CLIENT_KEY", &key),
    ];
    let mut csi = tls.to_vec();
    csi.push(("UNIQUE_IDENTIFIER", &uid));
    common::write_secret(&h.secrets, "ceph-csi-kmip-credentials", &csi);
    common::write_secret(&h.secrets, "rook-kmip", &tls);

    for kms_id in ["kmip-csi", "kmip-rook"] {
        let name = format!("pvc-guest-{kms_id}");
        let id = h.create_encrypted(&name, 48 * MIB, kms_id).await;
        let holding = h.holding(&id);
        match kms_id {
            "kmip-csi" => assert!(matches!(holding, KeyHolding::Wrapped { .. }), "{holding:?}"),
            _ => assert_eq!(holding, KeyHolding::Stored),
        }
        let mapper = PathBuf::from(format!("/dev/mapper/luks-{id}"));
        let staging = h.path(&format!("staging-{kms_id}"));
        let data = format!("kept under a KMIP key ({kms_id})");

        h.stage(&id, &staging, mount_cap("ext4")).await.unwrap();
        assert!(mapper.exists(), "{kms_id}: dm-crypt mapping open");
        assert_eq!(blkid_type(&h.image(&id)).as_deref(), Some("crypto_LUKS"));
        std::fs::write(staging.join("data.txt"), &data).unwrap();
        h.unstage(&id, &staging).await.unwrap();
        assert!(!mapper.exists());

        h.stage(&id, &staging, mount_cap("ext4")).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(staging.join("data.txt")).unwrap(),
            data
        );
        h.rotate(&id).await.unwrap();
        h.unstage(&id, &staging).await.unwrap();
        h.stage(&id, &staging, mount_cap("ext4")).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(staging.join("data.txt")).unwrap(),
            data
        );
        h.unstage(&id, &staging).await.unwrap();

        h.delete(&id).await.unwrap();
        assert!(h.record(&id).is_none());
        if kms_id == "kmip-rook" {
            let key_id = KeyId::new(id.clone()).unwrap();
            let e = h.driver.kms().get(kms_id, &key_id).await.unwrap_err();
            assert!(matches!(e, kmshost::kms::KmsError::NotFound { .. }), "{e}");
        }
    }
    h.stop().await;
    println!("{KMIP_PASS}");
}

/// The encrypted lifecycle with ceph-csi's `ibmkeyprotect` kmsID against the
/// host's fake Key Protect: create (the passphrase wrapped with the root
/// key, kept with the volume) → stage (unwrap: format, open, mkfs, mount) →
/// write → unstage → the root key rotates → stage (the rewrapped key is
/// kept in the record and opens the volume) → read back → rotate the LUKS
/// key → restage with it → delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the QEMU guest kernel, driven by dm_crypt_lifecycle_in_a_guest_kernel"]
async fn guest_keyprotect_lifecycle() {
    use common::keyprotect::{API_KEY, INSTANCE};
    assert!(
        std::env::var_os("KMSHOST_IN_GUEST").is_some(),
        "run by dm_crypt_lifecycle_in_a_guest_kernel inside the guest"
    );
    let (addr, root) = (
        std::env::var("KMSHOST_GUEST_KP").expect("KMSHOST_GUEST_KP"),
        std::env::var("KMSHOST_GUEST_KP_ROOT").expect("KMSHOST_GUEST_KP_ROOT"),
    );
    let mut config = metadata_config();
    config["kp-csi"] = serde_json::json!({
        "encryptionKMSType": "ibmkeyprotect", "IBM_KP_SERVICE_INSTANCE_ID": INSTANCE,
        "IBM_KP_BASE_URL": addr, "IBM_KP_TOKEN_URL": format!("{addr}/identity/token")
    });
    let h = CsiHarness::start(&config).await;
    common::write_secret(
        &h.secrets,
        "ceph-csi-kp-credentials",
        &[
            ("IBM_KP_SERVICE_API_KEY", API_KEY.as_bytes()),
            ("IBM_KP_CUSTOMER_ROOT_KEY", root.as_bytes()),
        ],
    );
    let id = h.create_encrypted("pvc-guest-kp", 48 * MIB, "kp-csi").await;
    let wrapped = h.holding(&id);
    assert!(matches!(wrapped, KeyHolding::Wrapped { .. }), "{wrapped:?}");
    let mapper = PathBuf::from(format!("/dev/mapper/luks-{id}"));
    let staging = h.path("staging-kp");
    let data = "kept under a Key Protect root key";

    h.stage(&id, &staging, mount_cap("ext4")).await.unwrap();
    assert!(mapper.exists(), "dm-crypt mapping open");
    std::fs::write(staging.join("data.txt"), data).unwrap();
    h.unstage(&id, &staging).await.unwrap();

    let (status, body) =
        common::http::request("POST", &format!("{addr}/fake/rotate/{root}"), &[], None)
            .await
            .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    h.stage(&id, &staging, mount_cap("ext4")).await.unwrap();
    let rewrapped = h.holding(&id);
    assert_ne!(rewrapped, wrapped, "the rewrapped key is kept");
    assert_eq!(
        std::fs::read_to_string(staging.join("data.txt")).unwrap(),
        data
    );
    h.rotate(&id).await.unwrap();
    h.unstage(&id, &staging).await.unwrap();
    h.stage(&id, &staging, mount_cap("ext4")).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(staging.join("data.txt")).unwrap(),
        data
    );
    h.unstage(&id, &staging).await.unwrap();
    h.delete(&id).await.unwrap();
    assert!(h.record(&id).is_none());
    h.stop().await;
    println!("{KP_PASS}");
}

/// The encrypted lifecycle with an `azure-kv` kmsID against the host's fake
/// Entra ID and Key Vault: create (the passphrase a secret named after the
/// volume; the guest's kmshost signs the login assertion) → stage (format,
/// open, mkfs, mount) → write → unstage → rotate the LUKS key (a new
/// version) → stage with it → read back → delete (soft delete).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the QEMU guest kernel, driven by dm_crypt_lifecycle_in_a_guest_kernel"]
async fn guest_azure_lifecycle() {
    use common::azure::{CLIENT_ID, TENANT};
    assert!(
        std::env::var_os("KMSHOST_IN_GUEST").is_some(),
        "run by dm_crypt_lifecycle_in_a_guest_kernel inside the guest"
    );
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k}"));
    let mut config = metadata_config();
    config["azure"] = serde_json::json!({
        "encryptionKMSType": "azure-kv", "AZURE_VAULT_URL": env("KMSHOST_GUEST_AZ_VAULT"),
        "AZURE_CLIENT_ID": CLIENT_ID, "AZURE_TENANT_ID": TENANT,
        "AZURE_AUTHORITY_HOST": env("KMSHOST_GUEST_AZ_LOGIN")
    });
    let h = CsiHarness::start(&config).await;
    let pem = std::fs::read(env("KMSHOST_GUEST_AZ_CERT")).unwrap();
    common::write_secret(
        &h.secrets,
        "ceph-csi-azure-credentials",
        &[("CLIENT_CERT", &pem)],
    );
    let id = h
        .create_encrypted("pvc-guest-azure", 48 * MIB, "azure")
        .await;
    assert_eq!(h.holding(&id), KeyHolding::Stored);
    let mapper = PathBuf::from(format!("/dev/mapper/luks-{id}"));
    let staging = h.path("staging-azure");
    let data = "kept in Azure Key Vault";
    h.stage(&id, &staging, mount_cap("ext4")).await.unwrap();
    assert!(mapper.exists(), "dm-crypt mapping open");
    std::fs::write(staging.join("data.txt"), data).unwrap();
    h.rotate(&id).await.unwrap();
    h.unstage(&id, &staging).await.unwrap();
    h.stage(&id, &staging, mount_cap("ext4")).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(staging.join("data.txt")).unwrap(),
        data
    );
    h.unstage(&id, &staging).await.unwrap();
    h.delete(&id).await.unwrap();
    assert!(h.record(&id).is_none());
    h.stop().await;
    println!("{AZ_PASS}");
}

/// The encrypted lifecycle with a `pkcs11` kmsID: SoftHSM2 (the host's
/// `/usr`, a token initialised in the guest) holds the AES keys; create →
/// stage (format, open, mkfs, mount) → write → unstage → a new key label
/// → stage (the key rewrapped under it is kept) → read → rotate → restage
/// → delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the QEMU guest kernel, driven by dm_crypt_lifecycle_in_a_guest_kernel"]
async fn guest_pkcs11_lifecycle() {
    assert!(
        std::env::var_os("KMSHOST_IN_GUEST").is_some(),
        "run by dm_crypt_lifecycle_in_a_guest_kernel inside the guest"
    );
    if std::env::var_os("KMSHOST_GUEST_SOFTHSM").is_none() {
        println!("no SoftHSM2 on the host: the pkcs11 lifecycle is not run");
        return;
    }
    common::softhsm::softhsm("guest pkcs11").expect("SoftHSM2 from the host's /usr");
    let entry = |current: &str, old: Option<&str>| {
        let mut e = serde_json::json!({"encryptionKMSType": "pkcs11", "PKCS11_MODULE": "softhsm",
            "PKCS11_TOKEN_LABEL": "kmshost-a", "PKCS11_PIN_SECRET_NAME": "hsm-pin",
            "PKCS11_KEY_LABEL": current});
        if let Some(o) = old {
            e["PKCS11_OLD_KEY_LABELS"] = o.into();
        }
        e
    };
    let mut config = metadata_config();
    config["hsm"] = entry("key-1", None);
    let h = CsiHarness::start(&config).await;
    common::write_secret(
        &h.secrets,
        "hsm-pin",
        &[("PIN", common::softhsm::PIN.as_bytes())],
    );
    let id = h.create_encrypted("pvc-guest-hsm", 48 * MIB, "hsm").await;
    let first = h.holding(&id);
    assert!(matches!(first, KeyHolding::Wrapped { .. }), "{first:?}");
    let mapper = PathBuf::from(format!("/dev/mapper/luks-{id}"));
    let staging = h.path("staging-hsm");
    let data = "kept under an HSM key";
    h.stage(&id, &staging, mount_cap("ext4")).await.unwrap();
    assert!(mapper.exists(), "dm-crypt mapping open");
    std::fs::write(staging.join("data.txt"), data).unwrap();
    h.unstage(&id, &staging).await.unwrap();
    config["hsm"] = entry("key-2", Some("key-1"));
    h.set_config(&config);
    h.stage(&id, &staging, mount_cap("ext4")).await.unwrap();
    assert_ne!(h.holding(&id), first, "rewrapped under key-2");
    assert_eq!(
        std::fs::read_to_string(staging.join("data.txt")).unwrap(),
        data
    );
    h.rotate(&id).await.unwrap();
    h.unstage(&id, &staging).await.unwrap();
    h.stage(&id, &staging, mount_cap("ext4")).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(staging.join("data.txt")).unwrap(),
        data
    );
    h.unstage(&id, &staging).await.unwrap();
    h.delete(&id).await.unwrap();
    assert!(h.record(&id).is_none());
    h.stop().await;
    println!("{HSM_PASS}");
}

/// The encrypted lifecycle on a Ceph RBD image of the host's cluster,
/// mapped with the guest kernel's RBD driver: create (image + key
/// reference in its metadata) → stage (`rbd device map`, format, open,
/// mkfs, mount; the image then says `encrypted`) → write → unstage (unmap)
/// → stage → read back → rotate while mapped → expand online (RBD resize,
/// krbd refresh, LUKS mapping, ext4) → delete (image gone).
///
/// Long by design: one scenario end to end, each step checked where it happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the QEMU guest kernel, driven by dm_crypt_lifecycle_in_a_guest_kernel"]
async fn guest_rbd_lifecycle() {
    use kmshost::volume::Backend as _;
    use kmshost::volume::rbd::{
        ClusterConfig, Credentials, EncryptionState, ImageOptions, RbdBackend, RbdCli, RbdVolumes,
    };
    assert!(
        std::env::var_os("KMSHOST_IN_GUEST").is_some(),
        "run by dm_crypt_lifecycle_in_a_guest_kernel inside the guest"
    );
    let Ok(dir) = std::env::var("KMSHOST_GUEST_CEPH_DIR") else {
        println!("no Ceph on the host: the RBD lifecycle is not run");
        return;
    };
    let dir = PathBuf::from(dir);
    let clusters = ClusterConfig::load(&dir.join("config.json")).unwrap();
    let key = std::fs::read_to_string(dir.join("user-key")).unwrap();
    let secrets = std::collections::HashMap::from([
        ("userID".to_string(), GUEST_CEPH_USER.to_string()),
        ("userKey".to_string(), key.trim().to_string()),
    ]);
    // The same cluster as the test sees it, to check the image itself.
    let image = RbdBackend::new(
        RbdCli::new(
            clusters.get(GUEST_CLUSTER).unwrap(),
            Credentials::from_secrets(&secrets).unwrap(),
        ),
        ImageOptions::new("rbd", None, "").unwrap(),
    );
    let config = metadata_config();
    let node_b = || {
        let volumes = RbdVolumes::new(clusters.clone());
        CsiHarness::start_on(&config, std::sync::Arc::new(volumes), secrets.clone())
    };
    let volumes = RbdVolumes::new(clusters.clone());
    let h = CsiHarness::start_on(
        &metadata_config(),
        std::sync::Arc::new(volumes),
        secrets.clone(),
    )
    .await;
    let sc: &[(&str, &str)] = &[
        ("clusterID", GUEST_CLUSTER),
        ("pool", "rbd"),
        ("imageFeatures", "layering,exclusive-lock"),
        ("encrypted", "true"),
        ("encryptionKMSID", "meta-a"),
    ];
    let created = h.create("pvc-guest-rbd", 64 * MIB, sc, None).await.unwrap();
    let id = created.volume_id;
    assert_eq!(
        image.encryption(&id).unwrap().state,
        Some(EncryptionState::Prepared)
    );
    let mapper = PathBuf::from(format!("/dev/mapper/luks-{id}"));
    let staging = h.path("staging-rbd");
    let data = "kept on an RBD image";

    // First stage: map with krbd, format, open, mkfs, mount.
    h.stage(&id, &staging, mount_cap("ext4")).await.unwrap();
    assert!(mapper.exists(), "dm-crypt mapping open");
    let dev = h.driver.backend_of(&id).unwrap().attached(&id).unwrap();
    let dev = dev.expect("mapped with krbd");
    assert!(
        dev.to_string_lossy().starts_with("/dev/rbd"),
        "{}",
        dev.display()
    );
    assert_eq!(blkid_type(&dev).as_deref(), Some("crypto_LUKS"));
    assert_eq!(
        image.encryption(&id).unwrap().state,
        Some(EncryptionState::Encrypted),
        "the image records its LUKS header, as ceph-csi's do"
    );
    std::fs::write(staging.join("data.txt"), data).unwrap();
    h.unstage(&id, &staging).await.unwrap();
    assert!(!mapper.exists() && !h.attached(&id), "closed and unmapped");

    // Stage again; rotate while mapped; stage with the new key.
    h.stage(&id, &staging, mount_cap("ext4")).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(staging.join("data.txt")).unwrap(),
        data
    );
    h.rotate(&id).await.unwrap();
    h.unstage(&id, &staging).await.unwrap();
    h.stage(&id, &staging, mount_cap("ext4")).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(staging.join("data.txt")).unwrap(),
        data
    );

    // Expand online: the image, the mapped device, the LUKS mapping, ext4.
    expand_online_to_128_mib(&h, &id, &staging).await;
    h.unstage(&id, &staging).await.unwrap();

    // Another node, with no record of the volume, stages it from the
    // volume context CreateVolume returned, and rotates its key there.
    let b = node_b().await;
    let staging_b = b.path("staging-rbd-b");
    assert!(b.record(&id).is_none());
    // A stage that fails once mapped (a filesystem other than the one the
    // volume holds) leaves the node as it was, with nothing recorded.
    let e = b
        .stage_from(
            &id,
            &staging_b,
            mount_cap("xfs"),
            created.volume_context.clone(),
        )
        .await
        .unwrap_err();
    assert!(e.message().contains("refusing to reformat"), "{e:?}");
    assert!(b.record(&id).is_none() && !h.attached(&id), "undone");
    b.stage_from(&id, &staging_b, mount_cap("ext4"), created.volume_context)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(staging_b.join("data.txt")).unwrap(),
        data
    );
    b.rotate(&id).await.unwrap();
    b.unstage(&id, &staging_b).await.unwrap();
    assert!(b.record(&id).is_some(), "recorded once staged");
    b.stop().await;
    // This node's record still holds the key from before that rotation,
    // whose keyslot is gone: staging reads the image's key reference.
    h.stage(&id, &staging, mount_cap("ext4")).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(staging.join("data.txt")).unwrap(),
        data
    );
    h.unstage(&id, &staging).await.unwrap();

    h.delete(&id).await.unwrap();
    assert!(h.record(&id).is_none() && !image.exists(&id));

    // An image ceph-csi encrypted, made here as ceph-csi's node plugin does
    // it: mapped, `luksFormat` with its flags and passphrase, opened, ext4,
    // a file; its DEK and state in its metadata.
    let passphrase = std::fs::read_to_string(dir.join("ceph-csi-passphrase")).unwrap();
    let dek = std::fs::read_to_string(dir.join("ceph-csi-dek")).unwrap();
    let spec = format!("rbd/{CEPH_CSI_IMAGE}");
    let rbd = |args: &[&str]| {
        RbdCli::new(
            clusters.get(GUEST_CLUSTER).unwrap(),
            Credentials::from_secrets(&h.request_secrets).unwrap(),
        )
        .run(args)
        .unwrap_or_else(|e| panic!("rbd {args:?}: {e:?}"))
    };
    rbd(&[
        "create",
        "--size",
        "64M",
        "--image-feature",
        "layering",
        &spec,
    ]);
    // Mapped as ceph-csi maps it (krbd, no udev): what the backend does.
    let dev = image.attach(CEPH_CSI_IMAGE).unwrap();
    let dev = dev.to_str().unwrap().to_string();
    cryptsetup(
        &[
            "-q",
            "luksFormat",
            "--type",
            "luks2",
            "--hash",
            "sha256",
            "--pbkdf-memory",
            "32768",
            &dev,
            "-d",
            "-",
        ],
        &passphrase,
    );
    cryptsetup(
        &[
            "luksOpen",
            &dev,
            "ceph-csi-made",
            "--disable-keyring",
            "-d",
            "-",
        ],
        &passphrase,
    );
    let made = PathBuf::from("/dev/mapper/ceph-csi-made");
    kmshost::volume::sys::mkfs("ext4", &made).unwrap();
    let m = h.path("ceph-csi-mount");
    std::fs::create_dir_all(&m).unwrap();
    kmshost::volume::sys::mount(&made, &m, Some("ext4"), &[]).unwrap();
    std::fs::write(m.join("moved.txt"), "written under ceph-csi").unwrap();
    kmshost::volume::sys::umount(&m).unwrap();
    cryptsetup(&["luksClose", "ceph-csi-made"], "");
    image.detach(CEPH_CSI_IMAGE).unwrap();
    image
        .meta_set(CEPH_CSI_IMAGE, "rbd.csi.ceph.com/dek", &dek)
        .unwrap();
    image
        .meta_set(CEPH_CSI_IMAGE, "rbd.csi.ceph.com/encrypted", "encrypted")
        .unwrap();

    // kmshost stages it from a static PV's attributes, with the same
    // `metadata` kmsID: the file is there.
    let context: std::collections::HashMap<String, String> = [
        ("clusterID", GUEST_CLUSTER),
        ("pool", "rbd"),
        ("imageName", CEPH_CSI_IMAGE),
        ("encrypted", "true"),
        ("encryptionKMSID", "meta-a"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let moved = h.path("staging-moved");
    h.stage_from(CEPH_CSI_VOLUME, &moved, mount_cap("ext4"), context)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(moved.join("moved.txt")).unwrap(),
        "written under ceph-csi"
    );
    h.unstage(CEPH_CSI_VOLUME, &moved).await.unwrap();
    assert!(!h.attached(CEPH_CSI_VOLUME), "unmapped");
    assert_eq!(
        image.encryption(CEPH_CSI_IMAGE).unwrap().dek.as_deref(),
        Some(dek.as_str()),
        "ceph-csi's DEK left as it was"
    );
    assert!(h.record(CEPH_CSI_VOLUME).unwrap().adopted);
    // Deleting it forgets it: the image and its DEK are ceph-csi's.
    h.delete(CEPH_CSI_VOLUME).await.unwrap();
    assert!(h.record(CEPH_CSI_VOLUME).is_none());
    assert!(image.exists(CEPH_CSI_IMAGE), "the image is kept");
    assert_eq!(
        image.encryption(CEPH_CSI_IMAGE).unwrap().dek.as_deref(),
        Some(dek.as_str())
    );
    h.stop().await;
    println!("{RBD_PASS}");
}

/// `kmshost csi`, the binary, as the node plugin's container runs it.
struct NodePlugin {
    child: std::process::Child,
}

impl NodePlugin {
    /// Starts the binary on `dir`'s config, Secrets and data; `failpoints`
    /// as the fail crate's FAILPOINTS (`csi0.stage.open=pause`).
    fn start(dir: &Path, failpoints: Option<&str>) -> Self {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_kmshost"));
        c.arg("csi")
            .arg(format!(
                "--endpoint=unix://{}",
                dir.join("csi.sock").display()
            ))
            .arg(format!("--config={}", dir.join("config.json").display()))
            .arg(format!("--secrets-dir={}", dir.join("secrets").display()))
            .arg(format!("--data-dir={}", dir.join("data").display()))
            .arg(format!("--cache-dir={}", common::cache_dir().display()))
            .arg("--node-id=node-r")
            .arg("--log=info");
        if let Some(f) = failpoints {
            c.env("FAILPOINTS", f);
        }
        NodePlugin {
            child: c.spawn().expect("kmshost csi"),
        }
    }

    async fn client(&self, dir: &Path) -> kmshost::csi::client::Client {
        let ep = format!("unix://{}", dir.join("csi.sock").display());
        for _ in 0..600 {
            if let Ok(c) = kmshost::csi::client::Client::connect(&ep).await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the node plugin never listened");
    }

    /// SIGKILL: a crash, or a rolling update that did not wait.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, and its exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.child.wait().unwrap()
    }
}

/// Restarts of the node plugin, as a DaemonSet rolling update or a crash
/// does them, with the real binary: killed mid-NodeStage (held at a
/// failpoint once the dm-crypt mapping is open, before the mount), the new
/// process finishes the stage; killed with the volume published, the
/// workload's mount keeps working and the next process unpublishes,
/// unstages and deletes it; SIGTERM ends the last one cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the QEMU guest kernel, driven by dm_crypt_lifecycle_in_a_guest_kernel"]
async fn guest_restart_lifecycle() {
    use kmshost::csi::proto;
    assert!(
        std::env::var_os("KMSHOST_IN_GUEST").is_some(),
        "run by dm_crypt_lifecycle_in_a_guest_kernel inside the guest"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    common::write_secret(
        &dir.join("secrets"),
        "kek-r",
        &[("encryptionPassphrase", b"restart-test-passphrase")],
    );
    let config =
        serde_json::json!({"meta-r": {"encryptionKMSType": "metadata", "secretName": "kek-r"}});
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let (staging, target) = (dir.join("staging"), dir.join("pods/p/vol"));
    let stage = |id: String| proto::NodeStageVolumeRequest {
        volume_id: id,
        staging_target_path: staging.to_string_lossy().into(),
        volume_capability: Some(mount_cap("ext4")),
        ..Default::default()
    };
    let publish = |id: String| proto::NodePublishVolumeRequest {
        volume_id: id,
        staging_target_path: staging.to_string_lossy().into(),
        target_path: target.to_string_lossy().into(),
        volume_capability: Some(mount_cap("ext4")),
        ..Default::default()
    };

    // Killed mid-NodeStage, once the mapping is open.
    let p = NodePlugin::start(dir, Some("csi0.stage.open=pause"));
    let mut c = p.client(dir).await;
    let id = c
        .controller
        .create_volume(proto::CreateVolumeRequest {
            name: "pvc-restart".into(),
            capacity_range: Some(proto::CapacityRange {
                required_bytes: 64 * MIB,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![mount_cap("ext4")],
            parameters: [("encrypted", "true"), ("encryptionKMSID", "meta-r")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap()
        .volume_id;
    let mapper = PathBuf::from(format!("/dev/mapper/luks-{id}"));
    let mut node = c.node.clone();
    let held = tokio::spawn({
        let req = stage(id.clone());
        async move { node.node_stage_volume(req).await }
    });
    for _ in 0..1200 {
        if mapper.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(mapper.exists(), "the stage reached the open mapping");
    p.kill();
    assert!(held.await.unwrap().is_err(), "its caller saw it die");
    assert!(mapper.exists(), "the mapping outlives the process");

    // The new process finishes the stage; publish; write.
    let p = NodePlugin::start(dir, None);
    let mut c = p.client(dir).await;
    c.node.node_stage_volume(stage(id.clone())).await.unwrap();
    c.node
        .node_publish_volume(publish(id.clone()))
        .await
        .unwrap();
    std::fs::write(target.join("kept.txt"), "written before a restart").unwrap();

    // Killed with the volume published: the workload's mount keeps working.
    p.kill();
    assert_eq!(
        std::fs::read_to_string(target.join("kept.txt")).unwrap(),
        "written before a restart"
    );
    std::fs::write(target.join("during.txt"), "written while no plugin ran").unwrap();

    // The next process sees it as it is: the same calls again are no-ops,
    // then unpublish, unstage, delete.
    let p = NodePlugin::start(dir, None);
    let mut c = p.client(dir).await;
    c.node.node_stage_volume(stage(id.clone())).await.unwrap();
    c.node
        .node_publish_volume(publish(id.clone()))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(target.join("during.txt")).unwrap(),
        "written while no plugin ran"
    );
    c.node
        .node_unpublish_volume(proto::NodeUnpublishVolumeRequest {
            volume_id: id.clone(),
            target_path: target.to_string_lossy().into(),
        })
        .await
        .unwrap();
    c.node
        .node_unstage_volume(proto::NodeUnstageVolumeRequest {
            volume_id: id.clone(),
            staging_target_path: staging.to_string_lossy().into(),
        })
        .await
        .unwrap();
    assert!(!mapper.exists(), "closed");
    c.controller
        .delete_volume(proto::DeleteVolumeRequest {
            volume_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!dir.join("data/images").join(format!("{id}.img")).exists());
    assert!(
        dir.join("data/images").is_dir(),
        "the image directory is where it was looked for"
    );
    let status = p.terminate();
    assert!(status.success(), "SIGTERM ends it cleanly: {status:?}");
    println!("{RESTART_PASS}");
}
