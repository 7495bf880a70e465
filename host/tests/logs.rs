//! Logs: `kms.<op>` spans carry kmsID, plugin and volume, and no key
//! material reaches them. One test per process: it installs the global
//! subscriber.

mod common;

include!(concat!(env!("OUT_DIR"), "/test_guests.rs"));

use kmshost::kms::{KeyId, Kms, SecretBytes};
use serde_json::json;
use std::path::Path;
use std::sync::{Arc, Mutex};

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

/// Long by design: one scenario end to end, each step checked where it happens.
#[test]
fn logs_carry_spans_and_never_key_material() {
    use std::io::Write;
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink = Sink::default();
    let writer = sink.clone();
    // The binary's filter at its most verbose.
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(kmshost::logging::filter("trace"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let dir = tempfile::tempdir().unwrap();
    let kek = b"log-test-kek-passphrase";
    let dek = SecretBytes::new(b"log-test-volume-key-0123456789".to_vec());
    // Global, in a process of its own: tracing caches per-callsite interest
    // process-wide, so a thread-scoped subscriber racing other tests'
    // threads can miss spans.
    tracing::subscriber::set_global_default(subscriber).unwrap();
    {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let kms = metadata_kms(dir.path(), kek);
            let w = kms.wrap("meta", &key("pvc-log"), &dek).await.unwrap();
            kms.unwrap("meta", &key("pvc-log"), &w).await.unwrap();
            let _ = kms.unwrap("meta", &key("pvc-other"), &w).await.unwrap_err();
            tracing::debug!(dek = ?dek, "a careless debug print of a key");
            // A plugin flooding the log and stdout with forged lines.
            let loud = common::kms(
                &json!({"loud": {"encryptionKMSType": "test-guest", "kmshostPlugin": LOUD}}),
                dir.path(),
                None,
            );
            let out = loud.wrap("loud", &key("log"), &dek).await.unwrap();
            assert_eq!(out.as_bytes(), b"logged");
        });
    }
    let logs = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("kms.wrap"), "{logs}");
    assert!(logs.contains("kms.unwrap"), "{logs}");
    assert!(
        logs.contains("kms_id=\"meta\"") || logs.contains("kms_id=meta"),
        "{logs}"
    );
    assert!(logs.contains("volume=pvc-log"), "{logs}");
    assert!(logs.contains("plugin=secret"), "{logs}");
    assert!(logs.contains("REDACTED"), "{logs}");
    assert!(
        !logs.contains("log-test-volume-key"),
        "key material in logs:\n{logs}"
    );
    assert!(
        !logs.contains("log-test-kek-passphrase"),
        "passphrase in logs:\n{logs}"
    );
    // The flood is one escaped, capped record per channel: no forged line
    // starts a line of its own, and Wasmtime's own per-write tracing of
    // the plugin's stdout is held back.
    let forged: Vec<&str> = logs.lines().filter(|l| l.contains("forged line")).collect();
    assert!(!forged.is_empty(), "the plugin's log record is kept");
    assert!(
        forged.len() <= 2,
        "{} lines: {:?}",
        forged.len(),
        &forged[..3]
    );
    assert!(forged.iter().all(|l| !l.starts_with("2026-01-01")));
    assert!(forged.iter().all(|l| l.len() < 4096), "capped");
    assert!(
        !logs.contains("worker writing"),
        "wasmtime-wasi output tracing"
    );
}
