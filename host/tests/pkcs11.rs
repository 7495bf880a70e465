//! The `pkcs11` plugin through the host's HSM capability against SoftHSM2:
//! wrap/unwrap bound to the volume, rotation to a new key label with old
//! volumes still opening (and rewrapped), a wrong PIN (never printed), a
//! module the host was not started with, a token that is not there, many
//! volumes at once through one session pool, and a CSI lifecycle.

mod common;

use common::softhsm::{MODULE, PIN, softhsm};
use kmshost::capability::hsm::HsmModules;
use kmshost::kms::{KeyId, Kms, KmsError, Sealed, generate_passphrase};
use kmshost::types::WrappedKey;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;

fn key(s: &str) -> KeyId {
    KeyId::new(s).unwrap()
}

fn entry(token: &str, current: &str, old: Option<&str>) -> Value {
    let mut e = json!({"encryptionKMSType": "pkcs11", "PKCS11_MODULE": "softhsm",
        "PKCS11_TOKEN_LABEL": token, "PKCS11_PIN_SECRET_NAME": "hsm-pin",
        "PKCS11_KEY_LABEL": current});
    if let Some(o) = old {
        e["PKCS11_OLD_KEY_LABELS"] = o.into();
    }
    e
}

fn kms_for(dir: &Path, config: Value) -> Kms {
    common::write_secret(dir, "hsm-pin", &[("PIN", format!("{PIN}\n").as_bytes())]);
    common::write_secret(dir, "wrong-pin", &[("PIN", b"0000-wrong-pin-do-not-print")]);
    let modules = [
        format!("softhsm={MODULE}"),
        "missing=/usr/lib/kmshost-test/no-such-pkcs11.so".to_string(),
    ];
    common::kms(&config, dir, None).with_hsm_modules(Arc::new(
        HsmModules::parse(modules.iter().map(String::as_str)).unwrap(),
    ))
}

fn wrapped(s: Sealed) -> WrappedKey {
    match s {
        Sealed::Wrapped(w) => w,
        Sealed::Stored => panic!("a pkcs11 kmsID wraps"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wraps_inside_the_hsm_bound_to_the_volume() {
    let Some(_) = softhsm("pkcs11 wrap") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let kms = kms_for(
        dir.path(),
        json!({"hsm": entry("kmshost-a", "key-1", None)}),
    );
    let (v, dek) = (key("pvc-hsm-1"), generate_passphrase());
    let blob = wrapped(kms.tenant(None).seal("hsm", &v, &dek).await.unwrap());
    let b: Value = serde_json::from_slice(blob.as_bytes()).unwrap();
    assert_eq!(b["label"], "key-1");
    assert_eq!(kms.unwrap("hsm", &v, &blob).await.unwrap(), dek);
    let e = kms
        .unwrap("hsm", &key("pvc-hsm-2"), &blob)
        .await
        .unwrap_err();
    assert!(matches!(e, KmsError::Integrity { .. }), "{e:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_key_label_wraps_and_old_volumes_open_and_are_rewrapped() {
    let Some(_) = softhsm("pkcs11 rotation") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let kms = kms_for(
        dir.path(),
        json!({"v1": entry("kmshost-a", "key-1", None),
               "v2": entry("kmshost-a", "key-2", Some("key-1")),
               "v2-only": entry("kmshost-a", "key-2", None)}),
    );
    let (v, dek) = (key("pvc-rotate"), generate_passphrase());
    let old = kms.wrap("v1", &v, &dek).await.unwrap();
    let (got, new) = kms
        .tenant(None)
        .unwrap_current("v2", &v, &old)
        .await
        .unwrap();
    assert_eq!(got, dek);
    let new = new.expect("rewrapped under key-2");
    let b: Value = serde_json::from_slice(new.as_bytes()).unwrap();
    assert_eq!(b["label"], "key-2");
    assert_eq!(
        kms.rewrap("v2", &v, &old).await.unwrap().as_bytes().len(),
        new.as_bytes().len()
    );
    assert_eq!(kms.unwrap("v2-only", &v, &new).await.unwrap(), dek);
    // Without the old label listed, the old volume is refused by name.
    match kms.unwrap("v2-only", &v, &old).await.unwrap_err() {
        KmsError::InvalidConfig {
            option, message, ..
        } => {
            assert_eq!(option, "PKCS11_OLD_KEY_LABELS");
            assert!(message.contains("key-1"), "{message}");
        }
        e => panic!("{e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_pin_a_missing_token_or_an_unknown_module_are_named() {
    let Some(_) = softhsm("pkcs11 errors") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut wrong_pin = entry("kmshost-b", "key-1", None);
    wrong_pin["PKCS11_PIN_SECRET_NAME"] = "wrong-pin".into();
    let mut luna = entry("kmshost-a", "key-1", None);
    luna["PKCS11_MODULE"] = "luna".into();
    let mut missing = entry("kmshost-a", "key-1", None);
    missing["PKCS11_MODULE"] = "missing".into();
    let kms = kms_for(
        dir.path(),
        json!({"pin": wrong_pin, "gone": entry("no-such-token", "key-1", None), "luna": luna,
               "missing": missing, "nokey": entry("kmshost-a", "no-such-key", None)}),
    );
    let (v, dek) = (key("pvc-err"), generate_passphrase());
    let e = kms.wrap("pin", &v, &dek).await.unwrap_err();
    assert!(matches!(e, KmsError::Denied { .. }), "{e:?}");
    let text = format!("{e} {e:?}");
    assert!(
        !text.contains("0000-wrong-pin-do-not-print") && !text.contains(PIN),
        "{text}"
    );
    let e = kms.wrap("gone", &v, &dek).await.unwrap_err();
    assert!(
        e.is_retryable() && e.to_string().contains("no-such-token"),
        "{e}"
    );
    match kms.wrap("luna", &v, &dek).await.unwrap_err() {
        KmsError::InvalidConfig {
            option, message, ..
        } => {
            assert_eq!(option, "PKCS11_MODULE");
            assert!(message.contains("--pkcs11-module luna="), "{message}");
        }
        e => panic!("{e:?}"),
    }
    // A module the node names but does not have: unavailable, naming it.
    let e = kms.wrap("missing", &v, &dek).await.unwrap_err();
    assert!(matches!(e, KmsError::Unavailable { .. }), "{e:?}");
    assert!(e.to_string().contains("no-such-pkcs11.so"), "{e}");
    let e = kms.wrap("nokey", &v, &dek).await.unwrap_err();
    assert!(
        matches!(e, KmsError::NotFound { .. }) && e.to_string().contains("no-such-key"),
        "{e:?}"
    );
    // The PIN's Secret is the host's: the plugin cannot read it.
    let d = kms.describe().unwrap();
    let pin = d.iter().flatten().find(|d| d.kms_id == "pin").unwrap();
    assert!(
        !pin.granted_secrets.iter().any(|s| s.contains("wrong-pin")),
        "{:?}",
        pin.granted_secrets
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_volumes_at_once_through_one_kms_id() {
    let Some(_) = softhsm("pkcs11 concurrency") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let kms = Arc::new(kms_for(
        dir.path(),
        json!({"hsm": entry("kmshost-b", "key-2", None)}),
    ));
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let kms = kms.clone();
            tokio::spawn(async move {
                let (v, dek) = (key(&format!("pvc-many-{i}")), generate_passphrase());
                let blob = kms.wrap("hsm", &v, &dek).await.unwrap();
                assert_eq!(kms.unwrap("hsm", &v, &blob).await.unwrap(), dek);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// The CSI driver with a `pkcs11` kmsID (formatting at the first
/// NodeStage; activation needs device-mapper, which the QEMU guest has):
/// the wrapped key lives in the record, rotation to a new key label
/// rewraps it at the next stage, LUKS rotation replaces the key, delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csi_lifecycle_with_a_pkcs11_kms_id() {
    use common::csi::{CsiHarness, metadata_config, mount_cap};
    use kmshost::luks;
    use kmshost::volume::KeyHolding;
    let Some(_) = softhsm("pkcs11 csi") else {
        return;
    };
    let mut config = metadata_config();
    config["hsm"] = entry("kmshost-a", "key-1", None);
    let h = CsiHarness::start(&config).await;
    common::write_secret(&h.secrets, "hsm-pin", &[("PIN", PIN.as_bytes())]);
    let id = h.create_encrypted("pvc-hsm-csi", 32 << 20, "hsm").await;
    let first = h.holding(&id);
    assert!(matches!(first, KeyHolding::Wrapped { .. }), "{first:?}");
    let key1 = h.passphrase(&id).await;
    let staging = h.path("staging-hsm");
    let e = h.stage(&id, &staging, mount_cap("")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    luks::verify(&h.image(&id), &key1).unwrap();
    // A new key label: the next stage keeps the key rewrapped under it.
    config["hsm"] = entry("kmshost-a", "key-2", Some("key-1"));
    h.set_config(&config);
    h.stage(&id, &staging, mount_cap("")).await.unwrap_err();
    let now = h.holding(&id);
    assert_ne!(now, first);
    assert_eq!(h.passphrase(&id).await, key1);
    h.rotate(&id).await.unwrap();
    let key2 = h.passphrase(&id).await;
    assert_ne!(key1, key2);
    luks::verify(&h.image(&id), &key2).unwrap();
    h.delete(&id).await.unwrap();
    assert!(h.record(&id).is_none());
    h.stop().await;
}
