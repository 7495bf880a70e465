//! The `kmip` plugin against a real KMIP server (PyKMIP) with mutual TLS,
//! through the host's TLS streams: ceph-csi's envelope mode (server-side
//! Encrypt/Decrypt, and `USE_CRYPTO_RPC: "false"`), Rook's store mode, a
//! wrong client certificate, a server that is down, a server that stalls,
//! an endpoint not allowed, and a CSI lifecycle. One PyKMIP per binary.

mod common;

use base64::Engine as _;
use common::kmip::{PyKmip, require_pykmip, shared};
use kmshost::kms::{KeyId, Kms, KmsError, Sealed, generate_passphrase};
use kmshost::types::WrappedKey;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn key(s: &str) -> KeyId {
    KeyId::new(s).unwrap()
}

/// The ceph-csi Secret: TLS material (the host's) and, for the envelope
/// mode, the wrapping key's identifier (the plugin's).
fn write_credentials(dir: &Path, name: &str, s: &PyKmip, uid: Option<&str>, rogue: bool) {
    let (cert, key) = match rogue {
        false => (&s.pki.client_cert_pem, &s.pki.client_key_pem),
        true => (&s.pki.rogue_cert_pem, &s.pki.rogue_key_pem),
    };
    let mut data: Vec<(&str, &[u8])> = vec![
        ("CA_CERT", s.pki.ca_pem.as_bytes()),
        ("CLIENT_CERT", cert.as_bytes()),
        ("CLIENT_KEY", key.as_bytes()),
    ];
    if let Some(u) = uid {
        data.push(("UNIQUE_IDENTIFIER", u.as_bytes()));
    }
    common::write_secret(dir, name, &data);
}

/// A facade with kmsIDs `csi` (envelope, server-side crypto), `local`
/// (envelope, `USE_CRYPTO_RPC: "false"`) and `rook` (store).
fn kms_for(dir: &Path, s: &PyKmip, uid: &str) -> Kms {
    write_credentials(dir, "ceph-csi-kmip-credentials", s, Some(uid), false);
    write_credentials(dir, "rook-kmip", s, None, false);
    common::kms(
        &json!({
            "csi": {"encryptionKMSType": "kmip", "KMIP_ENDPOINT": s.endpoint(),
                    "TLS_SERVER_NAME": "localhost"},
            "local": {"encryptionKMSType": "kmip", "KMIP_ENDPOINT": s.endpoint(),
                      "USE_CRYPTO_RPC": "false"},
            "rook": {"KMS_PROVIDER": "kmip", "KMIP_ENDPOINT": s.endpoint(),
                     "tokenSecretName": "rook-kmip", "READ_TIMEOUT": "5"},
        }),
        dir,
        None,
    )
}

#[cfg_attr(peers_missing, ignore = "needs PyKMIP: scripts/test.sh installs it")]
#[tokio::test(flavor = "multi_thread")]
async fn ceph_csi_mode_wraps_with_the_servers_encrypt_bound_to_the_volume() {
    let Some(bin) = require_pykmip("kmip envelope") else {
        return;
    };
    let s = shared(bin);
    let uid = s.create_aes_key();
    let dir = tempfile::tempdir().unwrap();
    let kms = kms_for(dir.path(), &s, &uid);
    let v = key("0001-0009-rook-ceph-0000000000000002-kmip-a");
    let dek = generate_passphrase();
    for kms_id in ["csi", "local"] {
        // seal = wrap, then the host's checks: hides the key, unwraps to
        // it, and does not unwrap for another volume.
        let Sealed::Wrapped(blob) = kms.tenant(None).seal(kms_id, &v, &dek).await.unwrap() else {
            panic!("{kms_id}: a ceph-csi kmip kmsID wraps");
        };
        let stored: serde_json::Value = serde_json::from_slice(blob.as_bytes()).unwrap();
        assert_eq!(stored["kmshost"], 1, "{stored}");
        let iv_len = match kms_id {
            "csi" => 16, // ceph-csi's CBC IV, sent to the server
            _ => 12,     // a GCM nonce
        };
        let nonce = base64::engine::general_purpose::STANDARD
            .decode(stored["nonce"].as_str().unwrap())
            .unwrap();
        assert_eq!(nonce.len(), iv_len, "{kms_id}");
        assert_eq!(kms.unwrap(kms_id, &v, &blob).await.unwrap(), dek);
        let other = kms
            .unwrap(
                kms_id,
                &key("0001-0009-rook-ceph-0000000000000002-kmip-b"),
                &blob,
            )
            .await;
        assert!(
            matches!(other, Err(KmsError::Integrity { .. })),
            "{kms_id}: {other:?}"
        );
        // Any change to the blob is an integrity failure, not garbage.
        let mut tampered: serde_json::Value = stored.clone();
        let field = if kms_id == "csi" { "sealed" } else { "dek" };
        let mut b = base64::engine::general_purpose::STANDARD
            .decode(tampered[field].as_str().unwrap())
            .unwrap();
        let last = b.len() - 1;
        b[last] ^= 1;
        tampered[field] = base64::engine::general_purpose::STANDARD.encode(&b).into();
        let tampered = WrappedKey::new(serde_json::to_vec(&tampered).unwrap());
        let e = kms.unwrap(kms_id, &v, &tampered).await;
        assert!(
            matches!(e, Err(KmsError::Integrity { .. })),
            "{kms_id}: {e:?}"
        );
    }
}

/// A blob exactly as ceph-csi writes it (`{"dek","nonce"}`: the server's
/// AES-CBC-PKCS5 Encrypt of the passphrase with a 16-byte IV, made here
/// with PyKMIP's own client) opens: existing volumes keep working.
#[cfg_attr(peers_missing, ignore = "needs PyKMIP: scripts/test.sh installs it")]
#[tokio::test(flavor = "multi_thread")]
async fn a_blob_written_by_ceph_csi_unwraps() {
    let Some(bin) = require_pykmip("kmip ceph-csi blob") else {
        return;
    };
    let s = shared(bin);
    let uid = s.create_aes_key();
    let out = s.client_script(&format!(
        "import base64, json\n\
         iv = bytes(range(16))\n\
         ct, _ = c.encrypt(b'ceph-csi passphrase', uid='{uid}', cryptographic_parameters={{'block_cipher_mode': enums.BlockCipherMode.CBC, 'padding_method': enums.PaddingMethod.PKCS5, 'cryptographic_algorithm': enums.CryptographicAlgorithm.AES}}, iv_counter_nonce=iv)\n\
         print(json.dumps({{'dek': base64.b64encode(ct).decode(), 'nonce': base64.b64encode(iv).decode()}}))"
    ));
    let dir = tempfile::tempdir().unwrap();
    let kms = kms_for(dir.path(), &s, &uid);
    let blob = WrappedKey::new(out.into_bytes());
    let v = key("0001-0009-rook-ceph-0000000000000002-legacy");
    let back = kms.unwrap("csi", &v, &blob).await.unwrap();
    assert_eq!(back.expose(), b"ceph-csi passphrase");
}

#[cfg_attr(peers_missing, ignore = "needs PyKMIP: scripts/test.sh installs it")]
#[tokio::test(flavor = "multi_thread")]
async fn rook_mode_registers_secret_data_named_after_the_volume() {
    let Some(bin) = require_pykmip("kmip store") else {
        return;
    };
    let s = shared(bin);
    let dir = tempfile::tempdir().unwrap();
    let kms = kms_for(dir.path(), &s, "unused");
    let v = key("0001-0009-rook-ceph-0000000000000002-rook-a");
    let dek = generate_passphrase();
    assert!(matches!(
        kms.tenant(None).seal("rook", &v, &dek).await.unwrap(),
        Sealed::Stored
    ));
    // On the server: one Secret Data object named after the volume, active.
    let found = s.client_script(&format!(
        "from kmip.core.factories.attributes import AttributeFactory\nf = AttributeFactory()\n\
         uids = c.locate(attributes=[f.create_attribute(enums.AttributeType.NAME, '{v}')])\n\
         print(len(uids), c.get_attributes(uids[0], ['State'])[1][0].attribute_value.value.name)"
    ));
    assert_eq!(found, "1 ACTIVE");
    assert_eq!(kms.get("rook", &v).await.unwrap(), dek);
    // Replace: the new key, and still one object.
    let dek2 = generate_passphrase();
    kms.put("rook", &v, &dek2).await.unwrap();
    assert_eq!(kms.get("rook", &v).await.unwrap(), dek2);
    let count = s.client_script(&format!(
        "from kmip.core.factories.attributes import AttributeFactory\nf = AttributeFactory()\n\
         print(len(c.locate(attributes=[f.create_attribute(enums.AttributeType.NAME, '{v}')])))"
    ));
    assert_eq!(count, "1");
    kms.delete("rook", &v).await.unwrap();
    assert!(matches!(
        kms.get("rook", &v).await,
        Err(KmsError::NotFound { .. })
    ));
    kms.delete("rook", &v).await.unwrap(); // idempotent
}

#[cfg_attr(peers_missing, ignore = "needs PyKMIP: scripts/test.sh installs it")]
#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificate_from_another_ca_is_denied() {
    let Some(bin) = require_pykmip("kmip wrong certificate") else {
        return;
    };
    let s = shared(bin);
    let dir = tempfile::tempdir().unwrap();
    write_credentials(dir.path(), "ceph-csi-kmip-credentials", &s, Some("1"), true);
    let kms = common::kms(
        &json!({"k": {"encryptionKMSType": "kmip", "KMIP_ENDPOINT": s.endpoint()}}),
        dir.path(),
        None,
    );
    let e = kms
        .wrap("k", &key("pvc-1"), &generate_passphrase())
        .await
        .unwrap_err();
    // PyKMIP refuses the certificate with an alert: denied, never retried.
    assert!(matches!(e, KmsError::Denied { .. }), "{e:?}");
    assert!(!e.is_retryable());
    assert!(e.to_string().contains(&s.endpoint()), "{e}");
}

#[cfg_attr(peers_missing, ignore = "needs PyKMIP: scripts/test.sh installs it")]
#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_is_down_is_unavailable() {
    let Some(bin) = require_pykmip("kmip down") else {
        return;
    };
    let s = shared(bin);
    let dir = tempfile::tempdir().unwrap();
    write_credentials(
        dir.path(),
        "ceph-csi-kmip-credentials",
        &s,
        Some("1"),
        false,
    );
    let down = format!("127.0.0.1:{}", common::free_port());
    let kms = common::kms(
        &json!({"k": {"encryptionKMSType": "kmip", "KMIP_ENDPOINT": down}}),
        dir.path(),
        None,
    );
    let e = kms
        .wrap("k", &key("pvc-1"), &generate_passphrase())
        .await
        .unwrap_err();
    assert!(matches!(e, KmsError::Unavailable { .. }), "{e:?}");
    assert!(e.is_retryable());
    assert!(e.to_string().contains(&format!("tls://{down}")), "{e}");
}

/// A TLS server (the test PKI's) that completes the handshake, reads the
/// request, and never answers.
async fn stalling_server(s: &PyKmip) -> (String, tokio::task::JoinHandle<()>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = vec![CertificateDer::from_pem_slice(s.pki.server_cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(s.pki.server_key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 4096];
                let _ = tls.read(&mut buf).await;
                held.push(tls); // never answered, never closed
            }
        }
    });
    (addr, task)
}

#[cfg_attr(peers_missing, ignore = "needs PyKMIP: scripts/test.sh installs it")]
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_server_times_out_by_read_timeout_and_others_are_served() {
    let Some(bin) = require_pykmip("kmip stall") else {
        return;
    };
    let s = shared(bin);
    let uid = s.create_aes_key();
    let (stalled, task) = stalling_server(&s).await;
    let dir = tempfile::tempdir().unwrap();
    write_credentials(
        dir.path(),
        "ceph-csi-kmip-credentials",
        &s,
        Some(&uid),
        false,
    );
    let kms = Arc::new(common::kms(
        &json!({
            "stalled": {"encryptionKMSType": "kmip", "KMIP_ENDPOINT": stalled,
                        "READ_TIMEOUT": "1", "WRITE_TIMEOUT": "30"},
            "healthy": {"encryptionKMSType": "kmip", "KMIP_ENDPOINT": s.endpoint()},
        }),
        dir.path(),
        None,
    ));
    let k2 = kms.clone();
    let stalled_call = tokio::spawn(async move {
        let t = Instant::now();
        let r = k2
            .wrap("stalled", &key("pvc-s"), &generate_passphrase())
            .await;
        (r, t.elapsed())
    });
    // Meanwhile another kmsID is served.
    let t = Instant::now();
    let v = key("pvc-h");
    let dek = generate_passphrase();
    let blob = kms.wrap("healthy", &v, &dek).await.unwrap();
    assert_eq!(kms.unwrap("healthy", &v, &blob).await.unwrap(), dek);
    let healthy = t.elapsed();
    let (r, took) = stalled_call.await.unwrap();
    let e = r.unwrap_err();
    assert!(matches!(e, KmsError::TimedOut { .. }), "{e:?}");
    assert!(e.to_string().contains("timed out after 1000 ms"), "{e}");
    // READ_TIMEOUT (1 s), not WRITE_TIMEOUT (30 s) nor the call's 30 s.
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(
        healthy < took,
        "the healthy kmsID waited for the stalled one: {healthy:?}"
    );
    task.abort();
}

#[cfg_attr(peers_missing, ignore = "needs PyKMIP: scripts/test.sh installs it")]
#[tokio::test(flavor = "multi_thread")]
async fn pooled_connections_are_reused_and_a_dead_server_is_unavailable() {
    let Some(bin) = require_pykmip("kmip pool") else {
        return;
    };
    let s = common::kmip::own(bin.clone());
    let uid = s.create_aes_key();
    let dir = tempfile::tempdir().unwrap();
    write_credentials(
        dir.path(),
        "ceph-csi-kmip-credentials",
        &s,
        Some(&uid),
        false,
    );
    let kms = common::kms(
        &json!({"k": {"encryptionKMSType": "kmip", "KMIP_ENDPOINT": s.endpoint()}}),
        dir.path(),
        None,
    );
    let v = key("pvc-pool");
    let dek = generate_passphrase();
    let blob = kms.wrap("k", &v, &dek).await.unwrap();
    for _ in 0..5 {
        assert_eq!(kms.unwrap("k", &v, &blob).await.unwrap(), dek);
    }
    let report = kms.plugin_report("k", None).await.unwrap();
    assert_eq!(report.idle_streams, 1, "one connection, reused: {report:?}");
    s.kill();
    let e = kms.unwrap("k", &v, &blob).await.unwrap_err();
    assert!(matches!(e, KmsError::Unavailable { .. }), "{e:?}");
}

/// A CSI lifecycle on kmip kmsIDs, as far as this container allows (LUKS
/// formatting at the first NodeStage; activation needs device-mapper, which
/// the QEMU guest test covers): ceph-csi's envelope keeps the wrapped key
/// with the volume, Rook's store keeps it on the server, rotation replaces
/// it, and DeleteVolume removes what it should.
#[cfg_attr(peers_missing, ignore = "needs PyKMIP: scripts/test.sh installs it")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csi_lifecycle_with_kmip_kms_ids() {
    use common::csi::{CsiHarness, metadata_config, mount_cap};
    use kmshost::luks;
    use kmshost::volume::KeyHolding;
    const MIB: i64 = 1 << 20;
    let Some(bin) = require_pykmip("kmip csi") else {
        return;
    };
    let s = shared(bin);
    let uid = s.create_aes_key();
    let mut config = metadata_config();
    config["kmip-csi"] = json!({"encryptionKMSType": "kmip", "KMIP_ENDPOINT": s.endpoint()});
    config["kmip-rook"] = json!({"KMS_PROVIDER": "kmip", "KMIP_ENDPOINT": s.endpoint(),
                                 "tokenSecretName": "rook-kmip"});
    let h = CsiHarness::start(&config).await;
    write_credentials(
        &h.secrets,
        "ceph-csi-kmip-credentials",
        &s,
        Some(&uid),
        false,
    );
    write_credentials(&h.secrets, "rook-kmip", &s, None, false);
    let kms = h.driver.kms().clone();

    for (kms_id, name) in [("kmip-csi", "pvc-kmip-csi"), ("kmip-rook", "pvc-kmip-rook")] {
        let id = h.create_encrypted(name, 32 * MIB, kms_id).await;
        let v = key(&id);
        let holding = h.holding(&id);
        match kms_id {
            "kmip-csi" => assert!(matches!(holding, KeyHolding::Wrapped { .. }), "{holding:?}"),
            _ => assert_eq!(holding, KeyHolding::Stored),
        }
        let key1 = h.passphrase(&id).await;
        // The first stage formats, then stops at device-mapper here.
        let e = h
            .stage(&id, &h.path(&format!("staging-{name}")), mount_cap(""))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        luks::verify(&h.image(&id), &key1).unwrap();
        h.rotate(&id).await.unwrap();
        let key2 = h.passphrase(&id).await;
        assert_ne!(key1, key2, "{kms_id}: rotated");
        luks::verify(&h.image(&id), &key2).unwrap();
        assert!(
            luks::verify(&h.image(&id), &key1).is_err(),
            "{kms_id}: old slot killed"
        );
        h.delete(&id).await.unwrap();
        assert!(h.record(&id).is_none());
        if kms_id == "kmip-rook" {
            assert!(matches!(
                kms.get(kms_id, &v).await,
                Err(KmsError::NotFound { .. })
            ));
        }
    }
    h.stop().await;
}
