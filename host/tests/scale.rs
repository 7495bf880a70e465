//! Scale: many kmsIDs and many tenants, each used once and then again, in a
//! process of its own (one test, so the memory measured is this test's).
//! Warm instances share one host budget (least recently used evicted first,
//! also when a new instance needs a slot), an instance whose memory grew is
//! released after its call, and the probe holds nothing — so the 129th
//! kmsID, the 1,000th tenant and the probe all keep working, and memory
//! stays bounded.

mod common;

use common::csi::CsiHarness;
use kmshost::kms::{KeyId, SecretBytes, generate_passphrase};
use serde_json::json;

include!(concat!(env!("OUT_DIR"), "/test_guests.rs"));

fn rss_mib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib >> 10
}

const KMS_IDS: usize = 1000;
const TENANTS: usize = 1000;
/// `metadata` kmsIDs: each call of a new one runs scrypt (32 MiB) once.
const METADATA_IDS: usize = 24;

#[test]
fn a_thousand_kms_ids_and_a_thousand_tenants_each_twice() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut config = serde_json::Map::new();
        for i in 0..KMS_IDS {
            config.insert(
                format!("k{i}"),
                json!({"encryptionKMSType": "test-guest", "kmshostPlugin": TRAPPER}),
            );
        }
        config.insert(
            "tenanted".into(),
            json!({"encryptionKMSType": "test-guest", "kmshostPlugin": TRAPPER}),
        );
        for i in 0..METADATA_IDS {
            config.insert(
                format!("meta{i}"),
                json!({"encryptionKMSType": "metadata", "secretName": common::csi::PASSPHRASE_SECRET}),
            );
        }
        let h = CsiHarness::start(&serde_json::Value::Object(config)).await;
        let kms = h.driver.kms();
        let sandbox_budget = kmshost::sandbox::SandboxConfig::default().max_warm;
        let key = |s: &str| KeyId::new(s).unwrap();
        let ok = SecretBytes::new(b"ok".to_vec());

        h.driver.probe().await.unwrap();
        let rss0 = rss_mib();
        for round in 0..2 {
            for i in 0..KMS_IDS {
                let w = kms.wrap(&format!("k{i}"), &key("fine"), &ok).await;
                assert_eq!(w.map(|w| w.into_bytes()).unwrap(), b"ok", "round {round}, kmsID k{i}");
            }
            for t in 0..TENANTS {
                let tenant = format!("t{t}");
                let w = kms.tenant(Some(&tenant)).wrap("tenanted", &key("fine"), &ok).await;
                assert_eq!(w.map(|w| w.into_bytes()).unwrap(), b"ok", "round {round}, tenant {tenant}");
            }
            // The probe stays ready all along, and holds nothing.
            let before = kms.warm_instances();
            h.driver.probe().await.unwrap();
            assert_eq!(kms.warm_instances(), before);
            assert!(kms.warm_instances() <= sandbox_budget);
        }
        let per_runtime_kib = (rss_mib().saturating_sub(rss0) << 10) / (KMS_IDS + TENANTS) as u64;
        eprintln!("scale: {} runtimes, {per_runtime_kib} KiB of RSS each", KMS_IDS + TENANTS);
        assert!(per_runtime_kib <= 64, "{per_runtime_kib} KiB per idle runtime");

        // `metadata`: scrypt grows each new kmsID's instance to 32 MiB+;
        // those instances are released after their call, not kept warm.
        let rss1 = rss_mib();
        let dek = generate_passphrase();
        for i in 0..METADATA_IDS {
            let id = format!("meta{i}");
            let w = kms.wrap(&id, &key("pvc-1"), &dek).await.unwrap();
            assert_eq!(kms.unwrap(&id, &key("pvc-1"), &w).await.unwrap(), dek);
        }
        let grown = rss_mib().saturating_sub(rss1);
        eprintln!("scale: {METADATA_IDS} metadata kmsIDs grew RSS by {grown} MiB");
        assert!(grown < 256, "RSS grew {grown} MiB for {METADATA_IDS} metadata kmsIDs");
        h.stop().await;
    });
}
