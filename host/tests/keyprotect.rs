//! The `keyprotect` plugin against the fake IAM + Key Protect
//! (`common::keyprotect`, strict about what it accepts): ceph-csi's
//! envelope (wrap/unwrap bound to the volume, blobs ceph-csi wrote), root
//! key rotation, deleted and disabled root keys, the token's lifetime,
//! throttling and outages, a refused API key, Rook's store mode, and a CSI
//! lifecycle.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::keyprotect::{API_KEY, FakeKeyProtect, INSTANCE, KeyState};
use kmshost::kms::{KeyId, Kms, KmsError, Sealed, generate_passphrase};
use kmshost::types::{SecretBytes, WrappedKey};
use serde_json::{Value, json};
use std::path::Path;

fn key(s: &str) -> KeyId {
    KeyId::new(s).unwrap()
}

/// The ceph-csi Secret; without a root key it is Rook's.
fn write_credentials(dir: &Path, name: &str, api_key: &str, root_key: Option<&str>) {
    let mut data: Vec<(&str, &[u8])> = vec![("IBM_KP_SERVICE_API_KEY", api_key.as_bytes())];
    if let Some(k) = root_key {
        data.push(("IBM_KP_CUSTOMER_ROOT_KEY", k.as_bytes()));
    }
    common::write_secret(dir, name, &data);
}

/// ceph-csi's entry for the fake.
fn csi_entry(kp: &FakeKeyProtect) -> Value {
    json!({"encryptionKMSType": "ibmkeyprotect", "IBM_KP_SERVICE_INSTANCE_ID": INSTANCE,
           "IBM_KP_BASE_URL": kp.base_url(), "IBM_KP_TOKEN_URL": kp.token_url(),
           "IBM_KP_REGION": "us-south-2"})
}

/// Rook's connection details for the fake.
fn rook_entry(kp: &FakeKeyProtect) -> Value {
    json!({"KMS_PROVIDER": "ibmkeyprotect", "IBM_KP_SERVICE_INSTANCE_ID": INSTANCE,
           "IBM_BASE_URL": kp.base_url(), "IBM_TOKEN_URL": kp.token_url(),
           "IBM_KP_SECRET_NAME": "rook-kp"})
}

/// A facade with kmsIDs `kp` (ceph-csi, root key `root`) and `rook`.
fn kms_for(dir: &Path, kp: &FakeKeyProtect, root: &str) -> Kms {
    write_credentials(dir, "ceph-csi-kp-credentials", API_KEY, Some(root));
    write_credentials(dir, "rook-kp", API_KEY, None);
    common::kms(
        &json!({"kp": csi_entry(kp), "rook": rook_entry(kp)}),
        dir,
        None,
    )
}

fn sealed(s: Sealed) -> WrappedKey {
    match s {
        Sealed::Wrapped(w) => w,
        Sealed::Stored => panic!("a ceph-csi ibmkeyprotect kmsID wraps"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn envelope_wraps_with_the_root_key_bound_to_the_volume() {
    let kp = FakeKeyProtect::start().await;
    let root = kp.create_root_key();
    let dir = tempfile::tempdir().unwrap();
    let kms = kms_for(dir.path(), &kp, &root);
    let v = key("0001-0009-rook-ceph-0000000000000002-kp-a");
    let dek = generate_passphrase();
    // seal: wrap, then the host's checks (hides the key, unwraps to it,
    // does not unwrap for another volume).
    let blob = sealed(kms.tenant(None).seal("kp", &v, &dek).await.unwrap());
    let stored: Value = serde_json::from_slice(blob.as_bytes()).unwrap();
    assert_eq!(stored["kmshost"], 1, "{stored}");
    assert_eq!(kms.unwrap("kp", &v, &blob).await.unwrap(), dek);
    let other = kms.unwrap("kp", &key("pvc-other"), &blob).await;
    assert!(
        matches!(other, Err(KmsError::Integrity { .. })),
        "{other:?}"
    );

    // What went over the wire: the documented headers, the volume as AAD,
    // the key as standard base64 (the service refuses anything else).
    let reqs = kp.kp_requests();
    let wrap = reqs
        .iter()
        .find(|r| r.path == format!("/api/v2/keys/{root}/actions/wrap"))
        .expect("a wrap request");
    assert_eq!(wrap.header("bluemix-instance"), Some(INSTANCE));
    assert_eq!(
        wrap.header("content-type"),
        Some("application/vnd.ibm.kms.key_action_wrap+json")
    );
    let corr = wrap.header("correlation-id").unwrap();
    assert_eq!(corr.len(), 36, "{corr}");
    let body: Value = serde_json::from_slice(&wrap.body).unwrap();
    assert_eq!(body["aad"], json!([v.as_str()]));
    assert_eq!(
        B64.decode(body["plaintext"].as_str().unwrap()).unwrap(),
        dek.expose()
    );
    // A tampered blob is an integrity failure.
    let mut t = stored.clone();
    let ct = t["ciphertext"].as_str().unwrap().to_string();
    t["ciphertext"] = format!("A{}", &ct[1..]).into();
    let e = kms
        .unwrap("kp", &v, &WrappedKey::new(serde_json::to_vec(&t).unwrap()))
        .await;
    assert!(matches!(e, Err(KmsError::Integrity { .. })), "{e:?}");
}

/// A blob exactly as ceph-csi writes it (standard base64 of the service's
/// ciphertext, the passphrase text itself as the plaintext) opens to that
/// passphrase: existing volumes keep working.
#[tokio::test(flavor = "multi_thread")]
async fn a_blob_written_by_ceph_csi_unwraps() {
    let kp = FakeKeyProtect::start().await;
    let root = kp.create_root_key();
    let dir = tempfile::tempdir().unwrap();
    let kms = kms_for(dir.path(), &kp, &root);
    let v = "0001-0009-rook-ceph-0000000000000002-ceph-csi";
    // ceph-csi's passphrase: base64 of 20 random bytes (here one the
    // service accepts as standard base64).
    let passphrase = B64.encode([7u8; 20]);
    let ct = kp.wrap_direct(&root, &passphrase, &[v]);
    let blob = WrappedKey::new(B64.encode(ct).into_bytes());
    let got = kms.unwrap("kp", &key(v), &blob).await.unwrap();
    assert_eq!(got.expose(), passphrase.as_bytes());
}

#[tokio::test(flavor = "multi_thread")]
async fn one_token_exchange_serves_many_operations_and_an_expired_one_is_renewed_once() {
    let kp = FakeKeyProtect::start().await;
    let root = kp.create_root_key();
    let dir = tempfile::tempdir().unwrap();
    let kms = kms_for(dir.path(), &kp, &root);
    let v = key("pvc-token");
    let dek = generate_passphrase();
    let blob = kms.wrap("kp", &v, &dek).await.unwrap();
    for _ in 0..30 {
        assert_eq!(kms.unwrap("kp", &v, &blob).await.unwrap(), dek);
    }
    assert_eq!(kp.exchanges(), 1, "one exchange for the token's lifetime");
    assert_eq!(kp.refused_tokens(), 0);
    // The service stops accepting the token: one refusal, one new exchange,
    // and the operation succeeds.
    kp.expire_tokens();
    assert_eq!(kms.unwrap("kp", &v, &blob).await.unwrap(), dek);
    assert_eq!((kp.exchanges(), kp.refused_tokens()), (2, 1));
    for _ in 0..5 {
        kms.unwrap("kp", &v, &blob).await.unwrap();
    }
    assert_eq!(kp.exchanges(), 2);
}

/// A token is renewed before it expires, not after a refusal: with a
/// two-second token the host's cache drops it after one second (nine tenths
/// of short lifetimes), so the next operation exchanges the API key again
/// while the old token is still valid. (One real second: the host cache
/// runs on the system clock.)
#[tokio::test(flavor = "multi_thread")]
async fn a_token_is_renewed_before_it_expires() {
    let kp = FakeKeyProtect::start().await;
    kp.set_token_lifetime(2);
    let root = kp.create_root_key();
    let dir = tempfile::tempdir().unwrap();
    let kms = kms_for(dir.path(), &kp, &root);
    let v = key("pvc-short-token");
    let dek = generate_passphrase();
    let blob = kms.wrap("kp", &v, &dek).await.unwrap();
    assert_eq!(kp.exchanges(), 1);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(kms.unwrap("kp", &v, &blob).await.unwrap(), dek);
    assert_eq!((kp.exchanges(), kp.refused_tokens()), (2, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_api_key_is_denied_and_never_printed() {
    let kp = FakeKeyProtect::start().await;
    let root = kp.create_root_key();
    let dir = tempfile::tempdir().unwrap();
    let kms = kms_for(dir.path(), &kp, &root);
    let wrong = "wrong-api-key-do-not-print-me";
    write_credentials(dir.path(), "ceph-csi-kp-credentials", wrong, Some(&root));
    let e = kms
        .wrap("kp", &key("pvc-denied"), &generate_passphrase())
        .await
        .unwrap_err();
    assert!(matches!(e, KmsError::Denied { .. }), "{e:?}");
    let text = format!("{e} {e:?}");
    assert!(text.contains("BXNIM0415E"), "{text}");
    assert!(!text.contains(wrong), "{text}");
    assert!(!e.is_retryable());
    assert_eq!(kp.exchanges(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_or_disabled_root_key_is_an_integrity_failure_never_retried() {
    let kp = FakeKeyProtect::start().await;
    let root = kp.create_root_key();
    let dir = tempfile::tempdir().unwrap();
    let kms = kms_for(dir.path(), &kp, &root);
    let v = key("pvc-gone");
    let blob = kms.wrap("kp", &v, &generate_passphrase()).await.unwrap();
    for (state, status, code) in [
        (KeyState::Disabled, "409", "KEY_ACTION_INVALID_STATE_ERR"),
        (KeyState::Deleted, "410", "KEY_DELETED_ERR"),
    ] {
        kp.set_state(&root, state);
        let before = kp.kp_requests().len();
        let e = kms.unwrap("kp", &v, &blob).await.unwrap_err();
        assert!(matches!(e, KmsError::Integrity { .. }), "{e:?}");
        assert!(!e.is_retryable());
        let text = e.to_string();
        for part in [status, code, INSTANCE, root.as_str(), v.as_str()] {
            assert!(text.contains(part), "{part} in {text}");
        }
        assert_eq!(kp.kp_requests().len(), before + 1, "not retried");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn throttling_is_retried_once_and_outages_are_unavailable() {
    let kp = FakeKeyProtect::start().await;
    let root = kp.create_root_key();
    let dir = tempfile::tempdir().unwrap();
    let kms = kms_for(dir.path(), &kp, &root);
    let v = key("pvc-busy");
    let dek = generate_passphrase();
    let blob = kms.wrap("kp", &v, &dek).await.unwrap();
    kp.throttle(1);
    assert_eq!(kms.unwrap("kp", &v, &blob).await.unwrap(), dek);
    kp.throttle(2);
    let e = kms.unwrap("kp", &v, &blob).await.unwrap_err();
    assert!(matches!(e, KmsError::Unavailable { .. }), "{e:?}");
    assert!(e.is_retryable() && e.to_string().contains("429"), "{e}");
    kp.outage(1);
    let e = kms.unwrap("kp", &v, &blob).await.unwrap_err();
    assert!(e.is_retryable() && e.to_string().contains("503"), "{e}");
    assert_eq!(kms.unwrap("kp", &v, &blob).await.unwrap(), dek, "recovered");
}

#[tokio::test(flavor = "multi_thread")]
async fn rook_mode_imports_standard_keys_named_after_the_volume() {
    let kp = FakeKeyProtect::start().await;
    let root = kp.create_root_key();
    let dir = tempfile::tempdir().unwrap();
    let kms = kms_for(dir.path(), &kp, &root);
    let v = key("pvc-rook-1");
    let dek = generate_passphrase();
    // No root key in Rook's Secret: the host stores the key instead.
    let s = kms.tenant(None).seal("rook", &v, &dek).await.unwrap();
    assert_eq!(s, Sealed::Stored);
    let keys = kp.standard_keys();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].name, v.as_str());
    assert_eq!(B64.decode(&keys[0].payload).unwrap(), dek.expose());
    assert_eq!(kms.get("rook", &v).await.unwrap(), dek);
    // Put again replaces: the new key exists before the old one goes.
    let dek2 = generate_passphrase();
    kms.put("rook", &v, &dek2).await.unwrap();
    assert_eq!(kp.standard_keys().len(), 1);
    assert_eq!(kms.get("rook", &v).await.unwrap(), dek2);
    kms.delete("rook", &v).await.unwrap();
    assert!(kp.standard_keys().is_empty());
    kms.delete("rook", &v).await.unwrap(); // idempotent
    let e = kms.get("rook", &v).await.unwrap_err();
    assert!(matches!(e, KmsError::NotFound { .. }), "{e:?}");
    // A key Rook imported (its payload is the key text) reads back as-is.
    kp.import_as_rook(
        "rook-ceph-osd-encryption-key-set1-data-0",
        "c2VjcmV0LWtleQ==",
    );
    let got = kms
        .get("rook", &key("rook-ceph-osd-encryption-key-set1-data-0"))
        .await
        .unwrap();
    assert_eq!(got, SecretBytes::new(b"c2VjcmV0LWtleQ==".to_vec()));
    // An envelope kmsID does not store, and a store kmsID does not wrap.
    let e = kms.get("kp", &v).await.unwrap_err();
    assert!(matches!(e, KmsError::Unsupported { .. }), "{e:?}");
    let e = kms.wrap("rook", &v, &dek).await.unwrap_err();
    assert!(matches!(e, KmsError::Unsupported { .. }), "{e:?}");
    // Deletes send Prefer: return=minimal.
    let del = kp
        .kp_requests()
        .into_iter()
        .find(|r| r.method == "DELETE")
        .unwrap();
    assert_eq!(del.header("prefer"), Some("return=minimal"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_configuration_names_the_option() {
    let kp = FakeKeyProtect::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut no_instance = csi_entry(&kp);
    no_instance
        .as_object_mut()
        .unwrap()
        .remove("IBM_KP_SERVICE_INSTANCE_ID");
    let kms = common::kms(&json!({"a": no_instance}), dir.path(), None);
    let cases = [("a", "IBM_KP_SERVICE_INSTANCE_ID")];
    for (id, option) in cases {
        match kms.validate(id).await.unwrap_err() {
            KmsError::InvalidConfig { option: o, .. } => assert_eq!(o, option, "{id}"),
            e => panic!("{id}: {e:?}"),
        }
    }
    // A Secret without the API key: named at use.
    common::write_secret(dir.path(), "ceph-csi-kp-credentials", &[("OTHER", b"x")]);
    let kms = common::kms(&json!({"kp": csi_entry(&kp)}), dir.path(), None);
    let e = kms.get("kp", &key("pvc-x")).await.unwrap_err();
    match e {
        KmsError::InvalidConfig {
            option, message, ..
        } => {
            assert_eq!(option, "IBM_KP_SECRET_NAME");
            assert!(message.contains("IBM_KP_SERVICE_API_KEY"), "{message}");
        }
        e => panic!("{e:?}"),
    }
}

/// After a root-key rotation the service answers an unwrap with the key
/// rewrapped under the newest version; the plugin hands it back
/// (`rewrap.offer`) and the host returns it, checked, for keeping — in the
/// blob's own format, so a ceph-csi blob stays one ceph-csi can read.
#[tokio::test(flavor = "multi_thread")]
async fn a_root_key_rotation_hands_back_the_rewrapped_key() {
    let kp = FakeKeyProtect::start().await;
    let root = kp.create_root_key();
    let dir = tempfile::tempdir().unwrap();
    let kms = kms_for(dir.path(), &kp, &root);
    let v = key("pvc-rotated");
    let dek = generate_passphrase();
    let old = kms.wrap("kp", &v, &dek).await.unwrap();
    let t = kms.tenant(None);
    assert!(t.unwrap_current("kp", &v, &old).await.unwrap().1.is_none());
    kp.rotate(&root);
    let (got, new) = t.unwrap_current("kp", &v, &old).await.unwrap();
    assert_eq!(got, dek);
    let new = new.expect("the rewrapped key");
    assert_ne!(new, old);
    let json: Value = serde_json::from_slice(new.as_bytes()).unwrap();
    assert_eq!(json["kmshost"], 1);
    // The new blob opens, offers nothing more, and the old one still opens.
    assert!(t.unwrap_current("kp", &v, &new).await.unwrap().1.is_none());
    assert_eq!(kms.unwrap("kp", &v, &old).await.unwrap(), dek);
    // `kmshost kms rewrap` takes the offered blob: no new wrap is sent.
    let wraps = |kp: &FakeKeyProtect| {
        kp.kp_requests()
            .iter()
            .filter(|r| r.path.ends_with("/actions/wrap"))
            .count()
    };
    let before = wraps(&kp);
    kp.rotate(&root);
    let r = kms.rewrap("kp", &v, &new).await.unwrap();
    assert_ne!(r, new);
    assert_eq!(wraps(&kp), before);
    assert_eq!(kms.unwrap("kp", &v, &r).await.unwrap(), dek);

    // A ceph-csi blob comes back as a ceph-csi blob.
    let passphrase = B64.encode([9u8; 20]);
    let ceph = WrappedKey::new(
        B64.encode(kp.wrap_direct(&root, &passphrase, &["pvc-c"]))
            .into_bytes(),
    );
    kp.rotate(&root);
    let (got, new) = t.unwrap_current("kp", &key("pvc-c"), &ceph).await.unwrap();
    assert_eq!(got.expose(), passphrase.as_bytes());
    let new = new.unwrap();
    assert!(
        B64.decode(new.as_bytes()).is_ok(),
        "base64 text, as ceph-csi writes"
    );
}

/// The CSI driver with ceph-csi's and Rook's Key Protect kmsIDs (formatting
/// at the first NodeStage; activation needs device-mapper, which the QEMU
/// guest has): the envelope's blob lives in the record, a root-key rotation
/// replaces it at the next stage, LUKS rotation replaces the key, and
/// DeleteVolume removes Rook's key from the service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csi_lifecycle_with_key_protect_kms_ids() {
    use common::csi::{CsiHarness, metadata_config, mount_cap};
    use kmshost::luks;
    use kmshost::volume::KeyHolding;
    const MIB: i64 = 1 << 20;
    let kp = FakeKeyProtect::start().await;
    let root = kp.create_root_key();
    let mut config = metadata_config();
    config["kp-csi"] = csi_entry(&kp);
    config["kp-rook"] = rook_entry(&kp);
    let h = CsiHarness::start(&config).await;
    write_credentials(&h.secrets, "ceph-csi-kp-credentials", API_KEY, Some(&root));
    write_credentials(&h.secrets, "rook-kp", API_KEY, None);
    for (kms_id, name) in [("kp-csi", "pvc-kp-csi"), ("kp-rook", "pvc-kp-rook")] {
        let id = h.create_encrypted(name, 32 * MIB, kms_id).await;
        let holding = h.holding(&id);
        match kms_id {
            "kp-csi" => assert!(matches!(holding, KeyHolding::Wrapped { .. }), "{holding:?}"),
            _ => assert_eq!(holding, KeyHolding::Stored),
        }
        let key1 = h.passphrase(&id).await;
        let staging = h.path(&format!("staging-{name}"));
        let e = h.stage(&id, &staging, mount_cap("")).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        luks::verify(&h.image(&id), &key1).unwrap();
        if kms_id == "kp-csi" {
            // The root key rotates; the next stage keeps the rewrapped key.
            kp.rotate(&root);
            h.stage(&id, &staging, mount_cap("")).await.unwrap_err();
            let now = h.holding(&id);
            assert_ne!(now, holding, "the record holds the rewrapped key");
            assert_eq!(h.passphrase(&id).await, key1);
        }
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
    }
    assert!(
        kp.standard_keys().is_empty(),
        "Rook's key deleted with its volume"
    );
    h.stop().await;
}
