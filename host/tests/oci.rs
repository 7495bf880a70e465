//! Signed plugins from a real OCI registry (Debian's docker-registry on
//! loopback, pushed with oras): an admin's one entry —
//! `kmshostPlugin: oci://…@sha256:…` and the vendor's public key — pulls,
//! verifies and runs the plugin; unsigned, wrongly signed, unknown-digest,
//! altered-in-cache and unreachable plugins each give a clear error naming
//! the option, and never run.

mod common;

use common::registry::{Registry, require_registry};
use kmshost::config::{ConfigError, HostDefaults};
use kmshost::kms::{KeyId, KmsError, generate_passphrase};
use serde_json::json;

#[cfg_attr(
    peers_missing,
    ignore = "needs docker-registry and oras: scripts/test.sh installs them"
)]
#[tokio::test(flavor = "multi_thread")]
async fn signed_plugins_from_a_registry_run_and_nothing_else_does() {
    if !require_registry("oci") {
        return;
    }
    let registry = Registry::start();
    let (sk, pk) = kmshost::signing::generate_key_pair();
    let (other_sk, _) = kmshost::signing::generate_key_pair();
    let plugin = kmshost::plugins::SECRET_WASM;
    let signed = kmshost::signing::sign(plugin, &sk).unwrap();
    let good = registry.push(&signed, "acme/secret:1.0");
    let unsigned = registry.push(plugin, "acme/unsigned:1.0");
    let other = registry.push(
        &kmshost::signing::sign(plugin, &other_sk).unwrap(),
        "acme/other:1.0",
    );

    let dir = tempfile::tempdir().unwrap();
    common::write_secret(dir.path(), "kek", &[("encryptionPassphrase", b"oci test")]);
    let cache = dir.path().join("cache");
    let host = &registry.host;
    let dead = format!("127.0.0.1:{}", common::free_port());
    let entry = |reference: String| {
        json!({"encryptionKMSType": "metadata", "secretName": "kek",
               "kmshostPlugin": reference, "kmshostPluginPublicKey": pk})
    };
    let missing = format!("sha256:{}", "0".repeat(64));
    let config = json!({
        "good": entry(format!("oci://{host}/acme/secret:1.0@{good}")),
        "unsigned": entry(format!("oci://{host}/acme/unsigned:1.0@{unsigned}")),
        "other-key": entry(format!("oci://{host}/acme/other:1.0@{other}")),
        "unknown-digest": entry(format!("oci://{host}/acme/secret:1.0@{missing}")),
        // Content-addressed: a digest already in the cache needs no registry,
        // so the unreachable case names one that is not.
        "unreachable": entry(format!("oci://{dead}/acme/secret:1.0@sha256:{}", "1".repeat(64))),
        "tag-only": entry(format!("oci://{host}/acme/secret:1.0")),
        "no-key": {"encryptionKMSType": "metadata", "secretName": "kek",
                   "kmshostPlugin": format!("oci://{host}/acme/secret:1.0@{good}")}
    });
    let defaults = HostDefaults {
        plugin_cache: Some(cache.clone()),
        ..Default::default()
    };
    let kms = common::kms_with_defaults(&config, dir.path(), None, defaults.clone());
    let v = KeyId::new("pvc-oci").unwrap();
    let key = generate_passphrase();

    // The signed plugin: pulled, verified, run.
    let blob = kms.wrap("good", &v, &key).await.unwrap();
    assert_eq!(kms.unwrap("good", &v, &blob).await.unwrap(), key);
    let cached = cache
        .join("oci")
        .join(format!("sha256-{}.wasm", &good["sha256:".len()..]));
    assert_eq!(std::fs::read(&cached).unwrap(), signed);

    // Each refusal names the option and says why; none of them runs.
    let refusal = |e: KmsError| match e {
        KmsError::InvalidConfig {
            option, message, ..
        } => format!("{option}: {message}"),
        KmsError::PluginLoad { message, .. } => format!("load: {message}"),
        KmsError::Unavailable { message, .. } => format!("unavailable: {message}"),
        other => panic!("{other}"),
    };
    let cases = [
        (
            "unsigned",
            "kmshostPlugin: plugin oci://",
            "the plugin is not signed",
        ),
        (
            "other-key",
            "kmshostPlugin: plugin oci://",
            "no valid signature by the trusted key",
        ),
        ("unknown-digest", "load: ", "manifest"),
        ("unreachable", "unavailable: registry", "unreachable"),
        ("tag-only", "kmshostPlugin: ", "has no digest: pin it"),
        (
            "no-key",
            "kmshostPluginPublicKey: ",
            "is required for an oci:// plugin",
        ),
    ];
    for (id, starts, contains) in cases {
        let e = match kms.wrap(id, &v, &key).await {
            Ok(_) => panic!("{id}: ran"),
            Err(e) => refusal(e),
        };
        assert!(e.starts_with(starts) && e.contains(contains), "{id}: {e}");
    }
    assert_eq!(kms.warm_instances(), 1, "only the signed plugin ever ran");

    // A cached plugin altered on disk is refused at the next use: the
    // signature is checked every time the file is read.
    let mut altered = signed.clone();
    let at = altered.len() - 64;
    altered[at] ^= 1;
    std::fs::write(&cached, &altered).unwrap();
    let table = kmshost::config::ConfigSource::from_text(&config.to_string(), defaults)
        .unwrap()
        .load()
        .unwrap();
    match table.get("good").unwrap_err() {
        ConfigError::InvalidConfig {
            option, message, ..
        } => {
            assert_eq!(option, "kmshostPlugin");
            assert!(message.contains("no valid signature"), "{message}");
        }
        e => panic!("{e}"),
    }
}
