//! The contract is a promise (wit/CHANGELOG.md): the SDK carries exactly
//! the repository's WIT, and a plugin built against contract 0.1.0 —
//! committed as bytes in `tests/fixtures/contract-0.1.0.wasm` (the `secret`
//! plugin as first built with a manifest) — keeps loading and working in
//! every later kmshost, its blobs readable by the embedded plugin; so does
//! the same plugin built against 0.1.1 (`contract-0.1.1.wasm`), the
//! `keyprotect` plugin built against 0.1.2 and the `pkcs11` plugin built
//! against 0.1.3 (each the first to import what its contract added).

mod common;

use kmshost::kms::{KeyId, KmsError, generate_passphrase};
use serde_json::json;
use sha2::Digest;
use std::path::{Path, PathBuf};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/contract-0.1.0.wasm"
);

/// The fixture's bytes never change: a rebuilt plugin is not the promise.
const FIXTURE_SHA256: &str = "6e50a1731782b50b87aaa93079149cd022e9e816ec1b47087d441a4b11fe00de";

/// The `secret` plugin as built against contract 0.1.1 (the contract that
/// added `tls-stream`), committed as bytes before any later contract.
const FIXTURE_0_1_1: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/contract-0.1.1.wasm"
);
const FIXTURE_0_1_1_SHA256: &str =
    "93d1393746f7ca57d4f1632559972d7487493764dcd07162955f8e35a1b0f434";

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn the_sdk_carries_the_repositorys_wit() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (wit, sdk) = (root.join("wit"), root.join("plugins/sdk/wit"));
    let (mut a, mut b) = (Vec::new(), Vec::new());
    files(&wit, &mut a);
    files(&sdk, &mut b);
    let rel = |base: &Path, v: &[PathBuf]| -> Vec<PathBuf> {
        let mut r: Vec<_> = v
            .iter()
            .map(|p| p.strip_prefix(base).unwrap().to_path_buf())
            .collect();
        r.sort();
        r
    };
    assert_eq!(
        rel(&wit, &a),
        rel(&sdk, &b),
        "run: cp -r wit/. plugins/sdk/wit/"
    );
    for p in rel(&wit, &a) {
        assert!(
            std::fs::read(wit.join(&p)).unwrap() == std::fs::read(sdk.join(&p)).unwrap(),
            "plugins/sdk/wit/{} differs from wit/{0}: run cp -r wit/. plugins/sdk/wit/",
            p.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_built_against_contract_0_1_0_keeps_working() {
    keeps_working(FIXTURE, FIXTURE_SHA256, "0.1.0").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_built_against_contract_0_1_1_keeps_working() {
    keeps_working(FIXTURE_0_1_1, FIXTURE_0_1_1_SHA256, "0.1.1").await;
}

/// The fixture at `path` (pinned by `sha256`, declaring `contract`) loads,
/// wraps and unwraps bound to the volume, and its blobs and today's
/// embedded plugin's are readable both ways.
async fn keeps_working(path: &str, sha256: &str, contract: &str) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), sha256);
    let declared = kmshost::manifest::read(&bytes).unwrap();
    assert_eq!(declared.contract.as_deref(), Some(contract));

    let dir = tempfile::tempdir().unwrap();
    common::write_secret(
        dir.path(),
        "kek",
        &[("encryptionPassphrase", b"fixture passphrase")],
    );
    let kms = common::kms(
        &json!({
            "old": {"encryptionKMSType": "metadata", "secretName": "kek", "kmshostPlugin": path},
            "new": {"encryptionKMSType": "metadata", "secretName": "kek"}
        }),
        dir.path(),
        None,
    );
    let (v1, v2) = (KeyId::new("pvc-1").unwrap(), KeyId::new("pvc-2").unwrap());
    let dek = generate_passphrase();
    let blob = kms.wrap("old", &v1, &dek).await.unwrap();
    assert_eq!(kms.unwrap("old", &v1, &blob).await.unwrap(), dek);
    let e = kms.unwrap("old", &v2, &blob).await.unwrap_err();
    assert!(matches!(e, KmsError::Integrity { .. }), "{e}");
    // What the old plugin wrote, today's embedded plugin reads, and back.
    assert_eq!(kms.unwrap("new", &v1, &blob).await.unwrap(), dek);
    let blob = kms.wrap("new", &v1, &dek).await.unwrap();
    assert_eq!(kms.unwrap("old", &v1, &blob).await.unwrap(), dek);
}

/// The `keyprotect` plugin as built against contract 0.1.2 (the contract
/// that added `rewrap`), committed as bytes before any later contract: it
/// keeps loading, wrapping, and handing back rewrapped keys, and its blobs
/// open with the embedded plugin.
const FIXTURE_0_1_2: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/contract-0.1.2-keyprotect.wasm"
);
const FIXTURE_0_1_2_SHA256: &str =
    "84861d73ca5dabc0337858c15e9472fbeaf11ba0530d7af31d5c53a2a4643d70";

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_built_against_contract_0_1_2_keeps_working() {
    use common::keyprotect::{API_KEY, FakeKeyProtect, INSTANCE};
    let bytes = std::fs::read(FIXTURE_0_1_2).unwrap();
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&bytes)),
        FIXTURE_0_1_2_SHA256
    );
    let d = kmshost::manifest::read(&bytes).unwrap();
    assert_eq!(d.contract.as_deref(), Some("0.1.2"));
    let kp = FakeKeyProtect::start().await;
    let root = kp.create_root_key();
    let dir = tempfile::tempdir().unwrap();
    common::write_secret(
        dir.path(),
        "kp-creds",
        &[
            ("IBM_KP_SERVICE_API_KEY", API_KEY.as_bytes()),
            ("IBM_KP_CUSTOMER_ROOT_KEY", root.as_bytes()),
        ],
    );
    let entry = |plugin: Option<&str>| {
        let mut e = json!({"encryptionKMSType": "ibmkeyprotect", "IBM_KP_SERVICE_INSTANCE_ID": INSTANCE,
            "IBM_KP_BASE_URL": kp.base_url(), "IBM_KP_TOKEN_URL": kp.token_url(),
            "IBM_KP_SECRET_NAME": "kp-creds"});
        if let Some(p) = plugin {
            e["kmshostPlugin"] = p.into();
        }
        e
    };
    let kms = common::kms(
        &json!({"old": entry(Some(FIXTURE_0_1_2)), "new": entry(None)}),
        dir.path(),
        None,
    );
    let v = KeyId::new("pvc-0-1-2").unwrap();
    let dek = generate_passphrase();
    let kmshost::kms::Sealed::Wrapped(blob) = kms.tenant(None).seal("old", &v, &dek).await.unwrap()
    else {
        panic!("wraps")
    };
    assert_eq!(kms.unwrap("new", &v, &blob).await.unwrap(), dek);
    kp.rotate(&root);
    let (got, rewrapped) = kms
        .tenant(None)
        .unwrap_current("old", &v, &blob)
        .await
        .unwrap();
    assert_eq!(got, dek);
    let rewrapped = rewrapped.expect("the 0.1.2 plugin's rewrap.offer is kept");
    assert_eq!(kms.unwrap("new", &v, &rewrapped).await.unwrap(), dek);
}

/// The `pkcs11` plugin as built against contract 0.1.3 (the contract that
/// added `hsm`), committed as bytes before any later contract: it keeps
/// loading, wrapping inside SoftHSM2 and handing back keys rewrapped
/// under a new label, and its blobs open with the embedded plugin.
const FIXTURE_0_1_3: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/contract-0.1.3-pkcs11.wasm"
);
const FIXTURE_0_1_3_SHA256: &str =
    "fefa75222e342400540c67185ddc72c368d08b4425fec3f97ea99832c51ea8bf";

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_built_against_contract_0_1_3_keeps_working() {
    use common::softhsm::{MODULE, PIN, softhsm};
    let Some(_) = softhsm("contract 0.1.3") else {
        return;
    };
    let bytes = std::fs::read(FIXTURE_0_1_3).unwrap();
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&bytes)),
        FIXTURE_0_1_3_SHA256
    );
    let d = kmshost::manifest::read(&bytes).unwrap();
    assert_eq!(d.contract.as_deref(), Some("0.1.3"));
    let dir = tempfile::tempdir().unwrap();
    common::write_secret(dir.path(), "hsm-pin", &[("PIN", PIN.as_bytes())]);
    let entry = |plugin: Option<&str>, current: &str, old: Option<&str>| {
        let mut e = json!({"encryptionKMSType": "pkcs11", "PKCS11_MODULE": "softhsm",
            "PKCS11_TOKEN_LABEL": "kmshost-b", "PKCS11_PIN_SECRET_NAME": "hsm-pin",
            "PKCS11_KEY_LABEL": current});
        if let Some(p) = plugin {
            e["kmshostPlugin"] = p.into();
        }
        if let Some(o) = old {
            e["PKCS11_OLD_KEY_LABELS"] = o.into();
        }
        e
    };
    let modules =
        kmshost::capability::hsm::HsmModules::parse([format!("softhsm={MODULE}").as_str()])
            .unwrap();
    let kms = common::kms(
        &json!({"old": entry(Some(FIXTURE_0_1_3), "key-1", None),
            "old-rotated": entry(Some(FIXTURE_0_1_3), "key-3", Some("key-1")),
            "new": entry(None, "key-3", Some("key-1"))}),
        dir.path(),
        None,
    )
    .with_hsm_modules(std::sync::Arc::new(modules));
    let v = KeyId::new("pvc-0-1-3").unwrap();
    let dek = generate_passphrase();
    let kmshost::kms::Sealed::Wrapped(blob) = kms.tenant(None).seal("old", &v, &dek).await.unwrap()
    else {
        panic!("wraps")
    };
    assert_eq!(kms.unwrap("new", &v, &blob).await.unwrap(), dek);
    let (got, rewrapped) = kms
        .tenant(None)
        .unwrap_current("old-rotated", &v, &blob)
        .await
        .unwrap();
    assert_eq!(got, dek);
    let rewrapped = rewrapped.expect("the 0.1.3 plugin's rewrap.offer is kept");
    assert_eq!(kms.unwrap("new", &v, &rewrapped).await.unwrap(), dek);
    let e = kms
        .unwrap("old", &KeyId::new("pvc-other").unwrap(), &blob)
        .await
        .unwrap_err();
    assert!(matches!(e, KmsError::Integrity { .. }), "{e}");
}
