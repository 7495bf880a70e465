//! The contract is a promise (wit/CHANGELOG.md): the SDK carries exactly
//! the repository's WIT, and a plugin built against contract 0.1.0 —
//! committed as bytes in `tests/fixtures/contract-0.1.0.wasm` (the `secret`
//! plugin as first built with a manifest) — keeps loading and working in
//! every later kmshost, its blobs readable by the embedded plugin.

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
    let bytes = std::fs::read(FIXTURE).unwrap();
    assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), FIXTURE_SHA256);
    let declared = kmshost::manifest::read(&bytes).unwrap();
    assert_eq!(declared.contract.as_deref(), Some("0.1.0"));

    let dir = tempfile::tempdir().unwrap();
    common::write_secret(
        dir.path(),
        "kek",
        &[("encryptionPassphrase", b"fixture passphrase")],
    );
    let kms = common::kms(
        &json!({
            "old": {"encryptionKMSType": "metadata", "secretName": "kek", "kmshostPlugin": FIXTURE},
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
