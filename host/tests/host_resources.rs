//! What a hostile plugin can make the host spend, measured in a process of
//! its own (one test, so nothing else allocates or opens files beside it):
//! memory for hoarded resource handles, and sockets for requests it never
//! awaits. Each bound is the cap's, not the
//! plugin's: the numbers before the caps were ~290 MB per call and
//! 1,500–2,100 sockets per call.

mod common;

use common::http::{Recorded, Reply, TestServer};
use kmshost::kms::{KeyId, Kms, KmsError, SandboxCause, SecretBytes};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

include!(concat!(env!("OUT_DIR"), "/test_guests.rs"));

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

async fn wrap(kms: &Kms, id: &str, key_id: &str, plaintext: &str) -> Result<Vec<u8>, KmsError> {
    kms.wrap(
        id,
        &KeyId::new(key_id).unwrap(),
        &SecretBytes::new(plaintext.as_bytes().to_vec()),
    )
    .await
    .map(|w| w.into_bytes())
}

#[test]
fn what_a_plugin_can_make_the_host_spend_is_bounded() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let srv = TestServer::start(
            "127.0.0.1:0",
            Arc::new(|_: &Recorded| {
                Reply::Delayed(Duration::from_millis(300), Box::new(Reply::ok("hi")))
            }),
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let kms = common::kms(
            &json!({
                "hoard": {"encryptionKMSType": "test-guest", "kmshostPlugin": HOARDER,
                          "allowedHosts": srv.url(), "kmshostTimeoutMs": "20000"},
                "other": {"encryptionKMSType": "test-guest", "kmshostPlugin": HOARDER},
            }),
            dir.path(),
            None,
        );
        // Compile and warm up outside the measurements.
        wrap(&kms, "hoard", "dropped-1", "x").await.unwrap();
        wrap(&kms, "other", "dropped-1", "x").await.unwrap();

        // Hoarded header objects: the call stops at the handle cap, and the
        // memory goes with the instance.
        let rss0 = status_kib("VmRSS:");
        for _ in 0..5 {
            let e = wrap(&kms, "hoard", "fields-100000", "x").await.unwrap_err();
            assert!(
                matches!(
                    e,
                    KmsError::Sandbox {
                        cause: SandboxCause::HostLimit(_),
                        ..
                    }
                ),
                "{e}"
            );
        }
        let grown = status_kib("VmRSS:").saturating_sub(rss0);
        assert!(
            grown < 48 << 10,
            "RSS grew {grown} KiB over 5 hoarding calls"
        );

        // Requests never awaited: at most MAX_IN_FLIGHT sockets while the
        // call runs, none once it is over.
        let fd0 = open_fds();
        for _ in 0..5 {
            let out = wrap(&kms, "hoard", "requests-200", &srv.url())
                .await
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&out),
                "err ErrorCode::ConnectionLimitReached"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let fds = open_fds();
        assert!(fds <= fd0 + 2, "{fd0} fds before, {fds} after");
        assert!(
            srv.requests.lock().unwrap().len() <= 5 * kmshost::sandbox::outbound::MAX_IN_FLIGHT,
            "more requests reached the server than may be in flight"
        );
        // Another kmsID is served all along.
        assert_eq!(wrap(&kms, "other", "dropped-3", "x").await.unwrap(), b"3");
    });
}
