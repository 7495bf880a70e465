//! The embedded `secret` plugin end to end through the host: ceph-csi
//! `metadata` wrapping (new and legacy formats) and the Kubernetes Secret
//! key store against a fake API server.

mod common;

use aes_gcm::aead::{Aead, KeyInit};
use base64::Engine as _;
use common::http::{Recorded, Reply, TestServer};
use kmshost::config::HostDefaults;
use kmshost::kms::{KeyId, Kms, KmsError, SecretBytes, WrappedKey, generate_passphrase};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;

fn key(s: &str) -> KeyId {
    KeyId::new(s).unwrap()
}

fn metadata_kms(dir: &Path, passphrase: &[u8]) -> Kms {
    common::write_secret(dir, "kek", &[("encryptionPassphrase", passphrase)]);
    common::kms(
        &json!({"meta": {"encryptionKMSType": "metadata", "secretName": "kek"}}),
        dir,
        None,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_round_trip_binds_the_volume() {
    let dir = tempfile::tempdir().unwrap();
    let kms = metadata_kms(dir.path(), b"correct horse battery staple");
    let dek = generate_passphrase();
    let w = kms.wrap("meta", &key("pvc-1"), &dek).await.unwrap();
    assert!(
        !w.as_bytes()
            .windows(dek.len())
            .any(|win| win == dek.expose())
    );
    assert_eq!(kms.unwrap("meta", &key("pvc-1"), &w).await.unwrap(), dek);
    // Two wraps of the same key differ (random nonce).
    let w2 = kms.wrap("meta", &key("pvc-1"), &dek).await.unwrap();
    assert_ne!(w, w2);
    // Replayed for another volume: integrity, never retried.
    let err = kms.unwrap("meta", &key("pvc-2"), &w).await.unwrap_err();
    assert!(matches!(err, KmsError::Integrity { .. }), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(kmshost::csi::code_of(&err), tonic::Code::DataLoss);
    // A flipped bit: integrity.
    let mut bad = w.as_bytes().to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let err = kms
        .unwrap("meta", &key("pvc-1"), &WrappedKey::new(bad))
        .await
        .unwrap_err();
    assert!(matches!(err, KmsError::Integrity { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_wrong_passphrase_is_an_integrity_error() {
    let dir = tempfile::tempdir().unwrap();
    let kms = metadata_kms(dir.path(), b"first passphrase");
    let dek = generate_passphrase();
    let w = kms.wrap("meta", &key("pvc-1"), &dek).await.unwrap();
    // The admin replaces the passphrase Secret: old blobs no longer open,
    // and the error says why without printing anything secret.
    let other = tempfile::tempdir().unwrap();
    let kms2 = metadata_kms(other.path(), b"second passphrase");
    let err = kms2.unwrap("meta", &key("pvc-1"), &w).await.unwrap_err();
    assert!(matches!(err, KmsError::Integrity { .. }), "{err}");
    let text = format!("{err} {err:?}");
    assert!(!text.contains("passphrase\""), "{text}");
    assert!(!text.contains("first"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_reads_ceph_csi_blobs() {
    // A blob exactly as ceph-csi's secretsMetadataKMS writes it:
    // KEK = scrypt(passphrase, salt = volumeID, N=32768, r=8, p=1),
    // AES-256-GCM without associated data, JSON {"dek","nonce"} in base64.
    let passphrase = b"ceph-csi-passphrase";
    let volume = "0001-0009-rook-ceph-0000000000000002-7c1e4a9b";
    let dek = b"the-old-luks-passphrase";
    let mut kek = [0u8; 32];
    scrypt::scrypt(
        passphrase,
        volume.as_bytes(),
        &scrypt::Params::new(15, 8, 1, 32).unwrap(),
        &mut kek,
    )
    .unwrap();
    let nonce = [7u8; 12];
    let ct = aes_gcm::Aes256Gcm::new_from_slice(&kek)
        .unwrap()
        .encrypt(aes_gcm::Nonce::from_slice(&nonce), dek.as_slice())
        .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let blob = json!({"dek": b64.encode(&ct), "nonce": b64.encode(nonce)}).to_string();

    let dir = tempfile::tempdir().unwrap();
    let kms = metadata_kms(dir.path(), passphrase);
    let got = kms
        .unwrap(
            "meta",
            &key(volume),
            &WrappedKey::new(blob.clone().into_bytes()),
        )
        .await
        .unwrap();
    assert_eq!(got.expose(), dek);
    // ceph-csi also bound the volume (through the salt).
    let err = kms
        .unwrap(
            "meta",
            &key("another-volume"),
            &WrappedKey::new(blob.into_bytes()),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, KmsError::Integrity { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_caches_the_derived_kek() {
    let dir = tempfile::tempdir().unwrap();
    let kms = metadata_kms(dir.path(), b"cached passphrase");
    let cached = async || kms.plugin_report("meta", None).await.unwrap().cached_values;
    assert_eq!(cached().await, 0);
    let dek = generate_passphrase();
    let t = std::time::Instant::now();
    let w = kms.wrap("meta", &key("pvc-a"), &dek).await.unwrap();
    let first = t.elapsed();
    assert!(cached().await > 0, "KEK not cached");
    let t = std::time::Instant::now();
    for i in 0..10 {
        kms.wrap("meta", &key(&format!("pvc-{i}")), &dek)
            .await
            .unwrap();
    }
    kms.unwrap("meta", &key("pvc-a"), &w).await.unwrap();
    // Eleven more operations cost less than the one scrypt run.
    assert!(t.elapsed() < first, "{:?} vs {:?}", t.elapsed(), first);
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_requires_secret_name_and_rejects_unknown_options() {
    let dir = tempfile::tempdir().unwrap();
    let kms = common::kms(
        &json!({
            "nosecret": {"encryptionKMSType": "metadata"},
            "typo": {"encryptionKMSType": "metadata", "secretName": "kek", "secretNamspace": "x"},
            "good": {"encryptionKMSType": "metadata", "secretName": "kek"},
        }),
        dir.path(),
        None,
    );
    common::write_secret(dir.path(), "kek", &[("encryptionPassphrase", b"p")]);
    match kms
        .wrap("nosecret", &key("v"), &SecretBytes::new(vec![1]))
        .await
        .unwrap_err()
    {
        KmsError::InvalidConfig { kms_id, option, .. } => {
            assert_eq!(
                (kms_id.as_str(), option.as_str()),
                ("nosecret", "secretName")
            )
        }
        e => panic!("{e}"),
    }
    match kms
        .wrap("typo", &key("v"), &SecretBytes::new(vec![1]))
        .await
        .unwrap_err()
    {
        KmsError::InvalidConfig { kms_id, option, .. } => {
            assert_eq!(
                (kms_id.as_str(), option.as_str()),
                ("typo", "secretNamspace")
            )
        }
        e => panic!("{e}"),
    }
    // The other kmsIDs' mistakes do not affect this one.
    assert!(
        kms.wrap("good", &key("v"), &SecretBytes::new(vec![1]))
            .await
            .is_ok()
    );
}

/// A `kubernetes-secret` kmsID talking to `api` with the token `token`.
fn k8s_store(dir: &Path, api: String, token: &str) -> Kms {
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let defaults = HostDefaults {
        kube_api_address: Some(api),
        namespace: "csi".into(),
        ..Default::default()
    };
    common::kms_with_defaults(
        &json!({"k8s": {"encryptionKMSType": "kubernetes-secret"}}),
        dir,
        Some(&token_file),
        defaults,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_secret_store_against_fake_apiserver() {
    let (store, handler) = common::kube::fake_apiserver("sa-token-123");
    let srv = TestServer::start("127.0.0.1:0", handler).await;
    let dir = tempfile::tempdir().unwrap();
    let kms = k8s_store(dir.path(), srv.url(), "sa-token-123");
    let described = kms.describe().unwrap();
    let entry = described
        .iter()
        .flatten()
        .find(|d| d.kms_id == "k8s")
        .unwrap();
    assert_eq!(
        entry.allowed_hosts.len(),
        1,
        "the API server, and nothing else, is allowed"
    );

    let dek = generate_passphrase();
    let v = key("pvc-0001_Weird.Name");
    kms.put("k8s", &v, &dek).await.unwrap();
    {
        let store = store.lock().unwrap();
        assert_eq!(store.len(), 1);
        let (k, secret) = store.iter().next().unwrap();
        assert!(k.starts_with("csi/kmshost-key-"), "{k}");
        assert_eq!(
            secret["metadata"]["annotations"]["kmshost.io/key-id"],
            "pvc-0001_Weird.Name"
        );
        assert_eq!(
            secret["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "kmshost"
        );
        let stored = base64::engine::general_purpose::STANDARD
            .decode(secret["data"]["passphrase"].as_str().unwrap())
            .unwrap();
        assert_eq!(stored, dek.expose());
    }
    assert_eq!(kms.get("k8s", &v).await.unwrap(), dek);
    // put again replaces (409 → PUT).
    let dek2 = generate_passphrase();
    kms.put("k8s", &v, &dek2).await.unwrap();
    assert_eq!(kms.get("k8s", &v).await.unwrap(), dek2);
    kms.delete("k8s", &v).await.unwrap();
    assert!(store.lock().unwrap().is_empty());
    let err = kms.get("k8s", &v).await.unwrap_err();
    assert!(matches!(err, KmsError::NotFound { .. }), "{err}");
    // delete is idempotent.
    kms.delete("k8s", &v).await.unwrap();
    // Every request carried the granted token; wrap is not offered.
    assert!(
        srv.requests
            .lock()
            .unwrap()
            .iter()
            .all(|r| r.header("authorization") == Some("Bearer sa-token-123"))
    );
    let err = kms.wrap("k8s", &v, &dek).await.unwrap_err();
    assert!(matches!(err, KmsError::Unsupported { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_secret_store_wrong_token_is_denied() {
    let (_store, handler) = common::kube::fake_apiserver("right-token");
    let srv = TestServer::start("127.0.0.1:0", handler).await;
    let dir = tempfile::tempdir().unwrap();
    let kms = k8s_store(dir.path(), srv.url(), "wrong-token");
    let err = kms.get("k8s", &key("v")).await.unwrap_err();
    assert!(matches!(err, KmsError::Denied { .. }), "{err}");
    assert!(
        !err.to_string().contains("wrong-token"),
        "token leaked: {err}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_secret_store_server_down_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let port = common::free_port();
    let kms = k8s_store(dir.path(), format!("http://127.0.0.1:{port}"), "t");
    let err = kms.get("k8s", &key("v")).await.unwrap_err();
    assert!(matches!(err, KmsError::Unavailable { .. }), "{err}");
    assert!(err.is_retryable());
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_read_through_the_kubernetes_api() {
    // The passphrase Secret exists only in the (fake) API server.
    let passphrase = base64::engine::general_purpose::STANDARD.encode("api-passphrase");
    let srv = TestServer::start(
        "127.0.0.1:0",
        Arc::new(move |r: &Recorded| {
            if r.header("authorization") != Some("Bearer driver-token") {
                return Reply::json(401, json!({"kind": "Status", "code": 401}));
            }
            match r.path.as_str() {
                "/api/v1/namespaces/ceph-csi/secrets/kek" => Reply::json(
                    200,
                    json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "kek", "namespace": "ceph-csi"},
                           "data": {"encryptionPassphrase": passphrase}}),
                ),
                _ => Reply::json(404, json!({"kind": "Status", "code": 404})),
            }
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "driver-token\n").unwrap();
    let api = Arc::new(kmshost::secrets::KubeApi::new(&srv.url(), token, None, "default").unwrap());
    let kms = Kms::new(
        kmshost::config::ConfigSource::from_text(
            &json!({"meta": {"encryptionKMSType": "metadata", "secretName": "kek", "secretNamespace": "ceph-csi"},
                    "missing": {"encryptionKMSType": "metadata", "secretName": "nope"}})
            .to_string(),
            HostDefaults::default(),
        )
        .unwrap(),
        common::sandbox(),
        Arc::new(kmshost::secrets::KubeSecrets::new(api)),
    );
    let dek = generate_passphrase();
    let w = kms.wrap("meta", &key("pvc-1"), &dek).await.unwrap();
    assert_eq!(kms.unwrap("meta", &key("pvc-1"), &w).await.unwrap(), dek);
    assert!(
        srv.requests
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.path == "/api/v1/namespaces/ceph-csi/secrets/kek")
    );
    // A granted Secret that does not exist: not-found, naming it.
    let err = kms.wrap("missing", &key("pvc-1"), &dek).await.unwrap_err();
    assert!(
        matches!(err, KmsError::NotFound { .. }) && err.to_string().contains("nope"),
        "{err}"
    );
}
