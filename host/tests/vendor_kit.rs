//! The vendor kit end to end, as a vendor outside this repository uses it
//! (issue 13's "done means"): the SDK as `cargo package` publishes it,
//! `kmshost plugin new`, a plain `cargo build`, `kmshost plugin test`
//! passing unchanged; then `plugin keygen` and `plugin sign`, a push to a
//! real registry, and `plugin test` again on the `oci://` reference, pulled
//! and verified as a cluster would — and docs/plugin-guide.md showing
//! exactly the code and manifest the starter holds.

mod common;

use common::registry::{Registry, require_registry};
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_kmshost");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// The SDK as it would be published: `cargo package`'s unpacked crate.
fn packaged_sdk() -> PathBuf {
    let target = root().join("target/plugins-native");
    run(cargo()
        .current_dir(root().join("plugins"))
        .args([
            "package",
            "-p",
            "kmshost-plugin-sdk",
            "--allow-dirty",
            "--quiet",
        ])
        .arg("--target-dir")
        .arg(&target));
    let version = env!("CARGO_PKG_VERSION");
    target.join(format!("package/kmshost-plugin-sdk-{version}"))
}

/// The fenced block of `lang` that follows `marker` in the guide.
fn guide_block(marker: &str, lang: &str) -> String {
    let guide = std::fs::read_to_string(root().join("docs/plugin-guide.md")).unwrap();
    let at = guide
        .find(marker)
        .unwrap_or_else(|| panic!("docs/plugin-guide.md has no {marker}"));
    let fence = format!("```{lang}\n");
    let start = guide[at..].find(&fence).unwrap() + at + fence.len();
    let end = guide[start..].find("```").unwrap() + start;
    guide[start..end].to_string()
}

#[cfg_attr(
    peers_missing,
    ignore = "needs docker-registry and oras: scripts/test.sh installs them"
)]
#[test]
fn from_plugin_new_to_a_signed_plugin_from_a_registry_passing_plugin_test() {
    if !require_registry("vendor_kit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = dir.path().join("acme-kms");
    let sdk = packaged_sdk();
    let out = run(Command::new(BIN)
        .args(["plugin", "new", "acme-kms", "--dir"])
        .arg(&crate_dir)
        .arg("--sdk-path")
        .arg(&sdk));
    assert!(out.contains("src/lib.rs"), "{out}");

    // The guide shows the starter exactly.
    let lib = std::fs::read_to_string(crate_dir.join("src/lib.rs")).unwrap();
    assert_eq!(
        guide_block("<!-- starter: src/lib.rs -->", "rust"),
        lib,
        "guide and starter differ"
    );
    let manifest = std::fs::read_to_string(crate_dir.join("kmshost-plugin.json")).unwrap();
    assert_eq!(
        guide_block("<!-- starter: kmshost-plugin.json -->", "json"),
        manifest
    );

    // Its unit tests, natively against the SDK's mock host.
    let rustc = run(Command::new("rustc").arg("-vV"));
    let host_triple = rustc
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .unwrap()
        .to_string();
    let tests = run(cargo()
        .current_dir(&crate_dir)
        .args(["test", "--target", &host_triple])
        .env("CARGO_TARGET_DIR", root().join("target/vendor-kit")));
    assert!(tests.contains("test result: ok. 2 passed"), "{tests}");

    // A plain build, as the vendor runs it (a shared target dir only saves
    // time across runs).
    run(cargo()
        .current_dir(&crate_dir)
        .args(["build", "--release", "--quiet"])
        .env("CARGO_TARGET_DIR", root().join("target/vendor-kit")));
    let wasm = root().join("target/vendor-kit/wasm32-wasip2/release/acme_kms.wasm");

    // The suite, with the KEK Secret the starter's README describes.
    let kek = dir.path().join("secrets/acme-kms-kek");
    std::fs::create_dir_all(&kek).unwrap();
    std::fs::write(
        kek.join("kek"),
        "q0VW6w4S2hY4bRmBv0m3Fq2hKzq3k8bC3g0nE1x2ZaQ=\n",
    )
    .unwrap();
    let entry = dir.path().join("entry.json");
    std::fs::write(&entry, r#"{"ACME_KMS_SECRET_NAME": "acme-kms-kek"}"#).unwrap();
    let report = run(Command::new(BIN)
        .args(["plugin", "test"])
        .arg(&wasm)
        .arg("--config")
        .arg(&entry)
        .arg("--secrets-dir")
        .arg(dir.path().join("secrets"))
        .arg("--cache-dir")
        .arg(dir.path().join("cache")));
    assert_passes(&report);

    // Sign it, push it, and test what the registry serves, as admins get it.
    let sk = dir.path().join("acme.key");
    let pk = dir.path().join("acme.pub");
    let signed = dir.path().join("acme-kms.wasm");
    run(Command::new(BIN)
        .args(["plugin", "keygen", "--secret-key"])
        .arg(&sk)
        .arg("--public-key")
        .arg(&pk));
    run(Command::new(BIN)
        .args(["plugin", "sign"])
        .arg(&wasm)
        .arg("--key")
        .arg(&sk)
        .arg("-o")
        .arg(&signed));
    run(Command::new(BIN)
        .args(["plugin", "verify"])
        .arg(&signed)
        .arg("--key")
        .arg(&pk));
    let registry = Registry::start();
    let digest = registry.push(&std::fs::read(&signed).unwrap(), "acme/acme-kms:0.1.0");
    let reference = format!("oci://{}/acme/acme-kms:0.1.0@{digest}", registry.host);
    let public = std::fs::read_to_string(&pk).unwrap();
    let admin_entry = serde_json::json!({
        "ACME_KMS_SECRET_NAME": "acme-kms-kek",
        "kmshostPluginPublicKey": public
    });
    std::fs::write(&entry, admin_entry.to_string()).unwrap();
    let report = run(Command::new(BIN)
        .args(["plugin", "test", &reference, "--config"])
        .arg(&entry)
        .arg("--secrets-dir")
        .arg(dir.path().join("secrets"))
        .arg("--cache-dir")
        .arg(dir.path().join("cache")));
    assert!(report.contains(&reference), "{report}");
    assert_passes(&report);
}

fn assert_passes(report: &str) {
    assert!(report.contains("0 failed"), "{report}");
    for case in [
        "manifest",
        "wrap-round-trip",
        "wrap-binds-key-id",
        "tamper-is-integrity",
    ] {
        assert!(
            report
                .lines()
                .any(|l| l.starts_with("PASS") && l.contains(case)),
            "{case}:\n{report}"
        );
    }
}
