//! Sandbox abuse cases, each an obeyed/violated pair asserting the root
//! cause, and each followed by a healthy call on the same host. One test
//! guest component per case (plugins/test-guests/examples); a guest without
//! a module here is a compile error.

mod common;

use common::http::{Reply, TestServer, test_pki};
use kmshost::kms::{KeyId, Kms, KmsError, SandboxCause, SecretBytes};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

include!(concat!(env!("OUT_DIR"), "/test_guests.rs"));

macro_rules! assert_test_exists {
    ($name:ident) => {
        #[allow(unused_imports)]
        use self::$name as _;
    };
}
foreach_test_guest!(assert_test_exists);

fn key(s: &str) -> KeyId {
    KeyId::new(s).unwrap()
}

fn bytes(s: &str) -> SecretBytes {
    SecretBytes::new(s.as_bytes().to_vec())
}

/// A kmsID `t` running `guest` with extra options.
fn guest_kms(guest: &str, extra: serde_json::Value, secrets: &Path) -> Kms {
    let mut entry = json!({"encryptionKMSType": "test-guest", "kmshostPlugin": guest});
    for (k, v) in extra.as_object().unwrap() {
        entry[k] = v.clone();
    }
    common::kms(&json!({ "t": entry }), secrets, None)
}

async fn wrap(kms: &Kms, key_id: &str, plaintext: &str) -> Result<Vec<u8>, KmsError> {
    kms.wrap("t", &key(key_id), &bytes(plaintext))
        .await
        .map(|w| w.into_bytes())
}

fn cause(e: &KmsError) -> &SandboxCause {
    match e {
        KmsError::Sandbox { cause, .. } => cause,
        other => panic!("expected a sandbox error, got {other}"),
    }
}

mod spin {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn deadline_obeyed() {
        let dir = tempfile::tempdir().unwrap();
        let kms = guest_kms(SPIN, json!({"kmshostTimeoutMs": "5000"}), dir.path());
        assert_eq!(wrap(&kms, "100000", "echo").await.unwrap(), b"echo");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn deadline_violated() {
        let dir = tempfile::tempdir().unwrap();
        let kms = guest_kms(SPIN, json!({"kmshostTimeoutMs": "300"}), dir.path());
        let t = std::time::Instant::now();
        let err = wrap(&kms, "forever", "x").await.unwrap_err();
        assert_eq!(cause(&err), &SandboxCause::Deadline(300), "{err}");
        assert!(err.is_retryable());
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "took {:?}",
            t.elapsed()
        );
        // The same host keeps serving.
        assert_eq!(wrap(&kms, "10", "again").await.unwrap(), b"again");
    }
}

/// Per-kmsID concurrency: a kmsID spinning in every call it can get never
/// takes the sandbox's instances from another kmsID.
mod concurrency {
    use super::*;

    fn two_kms_ids(dir: &Path, limit: u32) -> Kms {
        common::kms(
            &json!({
                "slow": {"encryptionKMSType": "test-guest", "kmshostPlugin": SPIN,
                         "kmshostTimeoutMs": "1500", "kmshostMaxConcurrency": limit.to_string()},
                "fast": {"encryptionKMSType": "test-guest", "kmshostPlugin": SPIN},
            }),
            dir,
            None,
        )
    }

    async fn spin(kms: &Kms, id: &str, n: &str) -> Result<WrappedKeyBytes, KmsError> {
        kms.wrap(id, &key(n), &bytes("x"))
            .await
            .map(|w| w.into_bytes())
    }
    type WrappedKeyBytes = Vec<u8>;

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrency_limit_obeyed() {
        let dir = tempfile::tempdir().unwrap();
        let kms = two_kms_ids(dir.path(), 4);
        let calls = (0..4).map(|_| spin(&kms, "slow", "1000"));
        for r in futures::future::join_all(calls).await {
            assert_eq!(r.unwrap(), b"x");
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrency_limit_violated() {
        let dir = tempfile::tempdir().unwrap();
        let kms = Arc::new(two_kms_ids(dir.path(), 4));
        // 40 calls that spin until their deadline: more than the test
        // sandbox's 32 instances.
        let hogs: Vec<_> = (0..40)
            .map(|_| {
                let kms = kms.clone();
                tokio::spawn(async move { spin(&kms, "slow", "forever").await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Another kmsID is served meanwhile.
        let t = Instant::now();
        assert_eq!(spin(&kms, "fast", "10").await.unwrap(), b"x");
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        // Four ran until their deadline; the rest waited for a place and
        // were refused with that root cause — except the few that got a
        // place in the tick their own (equal) deadline expired.
        let mut busy = 0;
        for h in hogs {
            match cause(&h.await.unwrap().unwrap_err()) {
                SandboxCause::Busy(4) => busy += 1,
                SandboxCause::Deadline(1500) => {}
                other => panic!("{other}"),
            }
        }
        assert!(
            busy >= 20,
            "only {busy} of 36 waiting calls were refused as busy"
        );
    }
}

mod memory_hog {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn memory_limit_obeyed() {
        let dir = tempfile::tempdir().unwrap();
        let kms = guest_kms(
            MEMORY_HOG,
            json!({"kmshostMemoryLimitMiB": "64"}),
            dir.path(),
        );
        assert!(wrap(&kms, "16", "x").await.is_ok());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn memory_limit_violated() {
        let dir = tempfile::tempdir().unwrap();
        let kms = guest_kms(
            MEMORY_HOG,
            json!({"kmshostMemoryLimitMiB": "64"}),
            dir.path(),
        );
        let err = wrap(&kms, "200", "x").await.unwrap_err();
        assert_eq!(cause(&err), &SandboxCause::Memory(64 << 20), "{err}");
        assert!(!err.is_retryable());
        assert!(wrap(&kms, "1", "x").await.is_ok(), "host keeps serving");
    }
}

mod recursion {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn stack_limit_obeyed() {
        let dir = tempfile::tempdir().unwrap();
        let kms = guest_kms(RECURSION, json!({}), dir.path());
        let out = wrap(&kms, "1000", "x").await.unwrap();
        assert_eq!(u64::from_le_bytes(out.try_into().unwrap()), 1000);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn stack_limit_violated() {
        let dir = tempfile::tempdir().unwrap();
        let kms = guest_kms(RECURSION, json!({}), dir.path());
        let err = wrap(&kms, "100000000", "x").await.unwrap_err();
        assert_eq!(cause(&err), &SandboxCause::StackOverflow, "{err}");
        assert!(wrap(&kms, "10", "x").await.is_ok(), "host keeps serving");
    }
}

mod trapper {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn panic_is_contained() {
        let dir = tempfile::tempdir().unwrap();
        let kms = guest_kms(TRAPPER, json!({}), dir.path());
        let warm = async || kms.plugin_report("t", None).await.unwrap().warm_instances;
        assert_eq!(wrap(&kms, "fine", "ok").await.unwrap(), b"ok");
        assert_eq!(warm().await, 1, "a good instance is kept");
        // The kept instance traps: it is discarded, not returned.
        let err = wrap(&kms, "panic", "x").await.unwrap_err();
        assert!(matches!(cause(&err), SandboxCause::Trap(_)), "{err}");
        assert_eq!(warm().await, 0, "a trapped instance is never reused");
        let err = wrap(&kms, "unreachable", "x").await.unwrap_err();
        assert!(matches!(cause(&err), SandboxCause::Trap(_)), "{err}");
        assert_eq!(warm().await, 0);
        assert_eq!(wrap(&kms, "fine", "after").await.unwrap(), b"after");
        assert_eq!(warm().await, 1);
    }
}

mod chatty {
    use super::*;

    /// Every event the host logs while `f` runs on this thread.
    #[derive(Clone, Default)]
    struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Logs {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    // Current-thread runtime: the collector set for this thread sees every
    // event of the call.
    #[tokio::test]
    async fn output_is_captured_and_bounded() {
        use kmshost::sandbox::state::{CAPTURE_BYTES, MAX_LOG_RECORDS_PER_CALL};
        let logs = Logs::default();
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("kmshost=debug")
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let dir = tempfile::tempdir().unwrap();
        let kms = guest_kms(CHATTY, json!({}), dir.path());
        // 256 KiB to stdout and 256 bytes to stderr, far beyond the capture
        // cap, and 256 log records: the plugin is neither blocked nor
        // trapped.
        assert_eq!(wrap(&kms, "256", "quiet").await.unwrap(), b"quiet");
        let text = logs.text();
        // Captured: the output reaches the host's log, as one record.
        let output: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("plugin output: "))
            .collect();
        assert_eq!(output.len(), 1, "{text:.2000}");
        assert!(output[0].contains("xxxxxxxx"), "{:.300}", output[0]);
        // Bounded: exactly the cap is kept, the rest counted as dropped.
        let written = 256 * 1024 + 256;
        let dropped = format!("dropped_bytes={}", written - CAPTURE_BYTES);
        assert!(
            output[0].contains(&dropped),
            "want {dropped}: {:.300}",
            output[0]
        );
        // The plugin's log records are capped per call.
        let records = text
            .lines()
            .filter(|l| l.contains("chatty log line"))
            .count();
        assert_eq!(records, MAX_LOG_RECORDS_PER_CALL as usize);
        // And the host keeps serving.
        assert_eq!(wrap(&kms, "1", "again").await.unwrap(), b"again");
    }
}

mod ambient_probe {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn no_environment_files_or_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let srv = TestServer::start("127.0.0.1:0", Arc::new(|_| Reply::ok("x"))).await;
        let kms = guest_kms(AMBIENT_PROBE, json!({}), dir.path());
        // SAFETY-free check that the host *has* an environment to leak.
        assert!(std::env::vars().count() > 0);
        let env = wrap(&kms, "k", "env").await.unwrap();
        assert_eq!(
            env,
            b"env:",
            "environment leaked: {}",
            String::from_utf8_lossy(&env)
        );
        for path in ["/etc/passwd", "/", "."] {
            let out =
                String::from_utf8(wrap(&kms, "k", &format!("fs:{path}")).await.unwrap()).unwrap();
            assert!(out.starts_with("error:"), "{path}: {out}");
        }
        let out = String::from_utf8(wrap(&kms, "k", &format!("tcp:{}", srv.addr)).await.unwrap())
            .unwrap();
        assert!(out.starts_with("error:"), "socket opened: {out}");
        assert_eq!(srv.count(), 0, "a raw socket reached the server");
    }
}

mod secret_reader {
    use super::*;

    fn two_kms_ids(dir: &Path) -> Kms {
        common::write_secret(dir, "alpha-creds", &[("token", b"alpha-token")]);
        common::write_secret(dir, "beta-creds", &[("token", b"beta-token")]);
        common::kms(
            &json!({
                "alpha": {"encryptionKMSType": "test-guest", "kmshostPlugin": SECRET_READER, "kmshostSecrets": "alpha-creds"},
                "beta": {"encryptionKMSType": "test-guest", "kmshostPlugin": SECRET_READER, "kmshostSecrets": "beta-creds"},
            }),
            dir,
            None,
        )
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn secret_grant_obeyed() {
        let dir = tempfile::tempdir().unwrap();
        let kms = two_kms_ids(dir.path());
        let v = kms
            .wrap("alpha", &key("v"), &bytes("alpha-creds/token"))
            .await
            .unwrap();
        assert_eq!(v.as_bytes(), b"alpha-token");
        let err = kms
            .wrap("alpha", &key("v"), &bytes("alpha-creds/nokey"))
            .await
            .unwrap_err();
        assert!(matches!(err, KmsError::NotFound { .. }), "{err}");
    }

    /// A Secret option whose manifest names `tls-keys` (as kmip's names
    /// CA_CERT, CLIENT_CERT, CLIENT_KEY beside UNIQUE_IDENTIFIER): the plugin
    /// reads the Secret's other keys, never those.
    fn tls_keyed(dir: &Path) -> Kms {
        let pki = test_pki();
        common::write_secret(
            dir,
            "creds",
            &[
                ("CA_CERT", pki.ca_pem.as_bytes()),
                ("CLIENT_CERT", pki.client_cert_pem.as_bytes()),
                ("CLIENT_KEY", pki.client_key_pem.as_bytes()),
                ("UNIQUE_IDENTIFIER", b"key-7"),
            ],
        );
        let m = json!({"manifest": 1, "contract": "0.1.4", "name": "secret_reader",
            "types": {"test-guest": {"capabilities": ["wrap"]}},
            "options": [{"name": "tokenSecretName", "kind": "secret",
                "tls-keys": {"ca": "CA_CERT", "client-cert": "CLIENT_CERT", "client-key": "CLIENT_KEY"}}]});
        let path = dir.join("keyed.wasm");
        let bytes = common::with_manifest(&std::fs::read(SECRET_READER).unwrap(), &m);
        std::fs::write(&path, bytes).unwrap();
        guest_kms(
            path.to_str().unwrap(),
            json!({"tokenSecretName": "creds"}),
            dir,
        )
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn tls_key_grant_obeyed() {
        let dir = tempfile::tempdir().unwrap();
        let kms = tls_keyed(dir.path());
        let v = wrap(&kms, "v", "creds/UNIQUE_IDENTIFIER").await.unwrap();
        assert_eq!(v, b"key-7");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn tls_key_grant_violated() {
        let dir = tempfile::tempdir().unwrap();
        let kms = tls_keyed(dir.path());
        for key in ["CLIENT_KEY", "CLIENT_CERT", "CA_CERT"] {
            let e = wrap(&kms, "v", &format!("creds/{key}")).await.unwrap_err();
            assert!(matches!(e, KmsError::Denied { .. }), "{key}: {e}");
            assert!(e.to_string().contains("TLS material"), "{key}: {e}");
            assert!(!e.to_string().contains("PRIVATE KEY"), "{e}");
        }
        assert_eq!(
            wrap(&kms, "v", "creds/UNIQUE_IDENTIFIER").await.unwrap(),
            b"key-7"
        );
    }

    /// Grants are keyed by the Secret as the option wrote it: the same
    /// name in two namespaces is two grants, each read in its namespace,
    /// and the bare name is neither.
    #[tokio::test(flavor = "multi_thread")]
    async fn namespaced_grants_obeyed() {
        let dir = tempfile::tempdir().unwrap();
        common::write_secret(dir.path(), "ns1/acme", &[("token", b"ns1-token")]);
        common::write_secret(dir.path(), "ns2/acme", &[("token", b"ns2-token")]);
        let kms = common::kms(
            &json!({"t": {"encryptionKMSType": "test-guest", "kmshostPlugin": SECRET_READER,
                          "kmshostSecrets": "ns1/acme, ns2/acme"}}),
            dir.path(),
            None,
        );
        for (asked, want) in [
            ("ns1/acme/token", "ns1-token"),
            ("ns2/acme/token", "ns2-token"),
        ] {
            let v = kms.wrap("t", &key("v"), &bytes(asked)).await.unwrap();
            assert_eq!(v.as_bytes(), want.as_bytes(), "{asked}");
        }
        let err = wrap(&kms, "v", "acme/token").await.unwrap_err();
        assert!(matches!(err, KmsError::Denied { .. }), "{err}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn secret_grant_violated() {
        let dir = tempfile::tempdir().unwrap();
        let kms = two_kms_ids(dir.path());
        // alpha asks for beta's Secret: denied, naming the root cause.
        let err = kms
            .wrap("alpha", &key("v"), &bytes("beta-creds/token"))
            .await
            .unwrap_err();
        match &err {
            KmsError::Denied { kms_id, message } => {
                assert_eq!(kms_id.as_str(), "alpha");
                assert!(message.contains("not granted"), "{message}");
                assert!(!message.contains("beta-token"));
            }
            other => panic!("expected denied, got {other}"),
        }
        // An existing Secret that no kmsID was granted is just as invisible.
        common::write_secret(dir.path(), "other", &[("token", b"other-token")]);
        assert!(matches!(
            kms.wrap("beta", &key("v"), &bytes("other/token")).await,
            Err(KmsError::Denied { .. })
        ));
        // The host keeps serving the granted one.
        let v = kms
            .wrap("beta", &key("v"), &bytes("beta-creds/token"))
            .await
            .unwrap();
        assert_eq!(v.as_bytes(), b"beta-token");
    }

    /// Secrets the host reads for TLS (a CA, a client certificate and its
    /// private key) are never readable by the plugin, even when another
    /// option grants the same Secret by name.
    #[tokio::test(flavor = "multi_thread")]
    async fn tls_secrets_are_withheld_from_the_plugin() {
        let dir = tempfile::tempdir().unwrap();
        let pki = test_pki();
        common::write_secret(
            dir.path(),
            "client-tls",
            &[
                ("tls.crt", pki.client_cert_pem.as_bytes()),
                ("tls.key", pki.client_key_pem.as_bytes()),
            ],
        );
        common::write_secret(dir.path(), "ca", &[("ca.crt", pki.ca_pem.as_bytes())]);
        common::write_secret(dir.path(), "creds", &[("token", b"plain")]);
        let kms = guest_kms(
            SECRET_READER,
            json!({"kmshostSecrets": "creds,client-tls,ca",
                   "kmshostClientCertFromSecret": "client-tls",
                   "kmshostCAFromSecret": "ca"}),
            dir.path(),
        );
        for spec in ["client-tls/tls.key", "client-tls/tls.crt", "ca/ca.crt"] {
            let err = wrap(&kms, "v", spec).await.unwrap_err();
            match &err {
                KmsError::Denied { message, .. } => {
                    assert!(message.contains("TLS material"), "{message}")
                }
                other => panic!("{spec}: expected denied, got {other}"),
            }
            assert!(!err.to_string().contains("PRIVATE KEY"), "{err}");
        }
        // The rest of the grant still works.
        assert_eq!(wrap(&kms, "v", "creds/token").await.unwrap(), b"plain");
    }
}

mod http_probe {
    use super::*;

    /// The two ways out of the sandbox; every case runs through both, since
    /// both must enforce the same policy.
    const VIAS: [&str; 2] = ["kmshost", "wasi"];

    fn probe(url: &str, via: &str) -> String {
        json!({"url": url, "via": via}).to_string()
    }

    fn status_body(out: &[u8]) -> (u16, Vec<u8>) {
        let s = String::from_utf8_lossy(out);
        let (status, body) = s.split_once('\n').unwrap();
        (status.parse().unwrap(), body.as_bytes().to_vec())
    }

    async fn server() -> TestServer {
        TestServer::start(
            "127.0.0.1:0",
            Arc::new(|r| match r.path.as_str() {
                "/big" => Reply::ok(vec![b'x'; 300_000]),
                "/big-chunked" => Reply::Chunked(200, vec![vec![b'y'; 100_000]; 3]),
                "/slow" => Reply::Delayed(Duration::from_millis(200), Box::new(Reply::ok("late"))),
                "/silent" => Reply::Delayed(Duration::from_secs(600), Box::new(Reply::ok("never"))),
                "/stalled" => Reply::Stalled(200, b"half".to_vec()),
                p if p.starts_with("/redirect/") => Reply::Full(
                    302,
                    vec![(
                        "location".into(),
                        format!("http://{}/stolen", &p["/redirect/".len()..]),
                    )],
                    vec![],
                ),
                _ => Reply::ok("hello"),
            }),
        )
        .await
    }

    /// Fails the test, rather than hanging it, if no deadline fires.
    async fn guard<T>(f: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(30), f)
            .await
            .expect("no deadline fired within 30 s")
    }

    /// A server that answers slowly, within the kmsID's timeout.
    #[tokio::test(flavor = "multi_thread")]
    async fn network_deadline_obeyed() {
        for via in VIAS {
            let dir = tempfile::tempdir().unwrap();
            let srv = server().await;
            let kms = guest_kms(
                HTTP_PROBE,
                json!({"allowedHosts": srv.url(), "kmshostTimeoutMs": "5000"}),
                dir.path(),
            );
            let out = wrap(&kms, "k", &probe(&format!("{}/slow", srv.url()), via))
                .await
                .unwrap();
            assert_eq!(status_body(&out), (200, b"late".to_vec()), "via {via}");
        }
    }

    /// A server that sends its head and then stalls mid-body: no request
    /// timeout covers the body, so the call's deadline ends it (the plugin
    /// is parked in the host, not running, so the epoch cannot).
    #[tokio::test(flavor = "multi_thread")]
    async fn network_deadline_violated() {
        for via in VIAS {
            let dir = tempfile::tempdir().unwrap();
            let srv = server().await;
            let kms = guest_kms(
                HTTP_PROBE,
                json!({"allowedHosts": srv.url(), "kmshostTimeoutMs": "300"}),
                dir.path(),
            );
            let t = Instant::now();
            let err = guard(wrap(
                &kms,
                "k",
                &probe(&format!("{}/stalled", srv.url()), via),
            ))
            .await
            .unwrap_err();
            assert_eq!(
                cause(&err),
                &SandboxCause::Deadline(300),
                "via {via}: {err}"
            );
            assert!(err.is_retryable());
            let took = t.elapsed();
            assert!(
                took >= Duration::from_millis(300) && took < Duration::from_secs(5),
                "via {via}: took {took:?}"
            );
            let out = wrap(&kms, "k", &probe(&format!("{}/ok", srv.url()), via))
                .await
                .unwrap();
            assert_eq!(
                status_body(&out),
                (200, b"hello".to_vec()),
                "host keeps serving"
            );
        }
    }

    /// A plugin's own request timeout, shorter than the kmsID's, is kept:
    /// a silent server is given up on after it, and the plugin gets to
    /// handle the failure (a retryable error, not a killed instance).
    #[tokio::test(flavor = "multi_thread")]
    async fn request_timeout_obeyed() {
        for via in VIAS {
            let dir = tempfile::tempdir().unwrap();
            let srv = server().await;
            let kms = guest_kms(
                HTTP_PROBE,
                json!({"allowedHosts": srv.url(), "kmshostTimeoutMs": "20000"}),
                dir.path(),
            );
            let spec =
                json!({"url": format!("{}/silent", srv.url()), "via": via, "timeout_secs": 1});
            let t = Instant::now();
            let err = guard(wrap(&kms, "k", &spec.to_string())).await.unwrap_err();
            let took = t.elapsed();
            assert!(
                matches!(err, KmsError::Unavailable { .. }),
                "via {via}: {err}"
            );
            assert!(
                took >= Duration::from_secs(1) && took < Duration::from_secs(10),
                "via {via}: took {took:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn allow_list_obeyed() {
        for via in VIAS {
            let dir = tempfile::tempdir().unwrap();
            let srv = server().await;
            let kms = guest_kms(HTTP_PROBE, json!({"allowedHosts": srv.url()}), dir.path());
            let out = wrap(&kms, "k", &probe(&format!("{}/ok", srv.url()), via))
                .await
                .unwrap();
            assert_eq!(status_body(&out), (200, b"hello".to_vec()));
            let seen = srv.requests.lock().unwrap()[0].clone();
            assert_eq!(seen.host.as_deref(), Some(srv.addr.to_string().as_str()));
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn allow_list_violated() {
        for via in VIAS {
            let dir = tempfile::tempdir().unwrap();
            let allowed = server().await;
            let other = server().await;
            let kms = guest_kms(
                HTTP_PROBE,
                json!({"allowedHosts": allowed.url()}),
                dir.path(),
            );
            let err = wrap(&kms, "k", &probe(&format!("{}/ok", other.url()), via))
                .await
                .unwrap_err();
            match &err {
                KmsError::Denied { message, .. } => {
                    assert!(message.contains("not on the allow-list"), "{message}")
                }
                e => panic!("expected denied, got {e}"),
            }
            assert_eq!(other.count(), 0);
            // Empty allow-list: nothing at all.
            let none = guest_kms(HTTP_PROBE, json!({}), dir.path());
            let err = wrap(&none, "k", &probe(&format!("{}/ok", allowed.url()), via))
                .await
                .unwrap_err();
            assert!(
                err.to_string().contains("no outbound hosts are allowed"),
                "{err}"
            );
            assert_eq!(allowed.count(), 0);
            // The host keeps serving allowed requests.
            assert!(
                wrap(&kms, "k", &probe(&format!("{}/ok", allowed.url()), via))
                    .await
                    .is_ok()
            );
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn ip_literal_bypass_denied() {
        for via in VIAS {
            let dir = tempfile::tempdir().unwrap();
            let srv = server().await;
            let port = srv.addr.port();
            // Allowed by name; the plugin tries the same server by IP, and by
            // the numeric spellings resolvers accept for 127.0.0.1.
            let kms = guest_kms(
                HTTP_PROBE,
                json!({"allowedHosts": format!("http://localhost:{port}")}),
                dir.path(),
            );
            for host in ["127.0.0.1", "2130706433", "127.1", "0x7f.0.0.1"] {
                let err = wrap(&kms, "k", &probe(&format!("http://{host}:{port}/ok"), via))
                    .await
                    .unwrap_err();
                assert!(matches!(err, KmsError::Denied { .. }), "{host}: {err}");
            }
            assert_eq!(srv.count(), 0, "an IP-literal request got through");
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn host_header_bypass_denied() {
        for via in VIAS {
            let dir = tempfile::tempdir().unwrap();
            let srv = server().await;
            let kms = guest_kms(HTTP_PROBE, json!({"allowedHosts": srv.url()}), dir.path());
            let spec = json!({"url": format!("{}/ok", srv.url()), "headers": [["host", "evil.example.com"]], "via": via});
            let err = guard(wrap(&kms, "k", &spec.to_string())).await.unwrap_err();
            assert!(
                err.to_string().to_lowercase().contains("forbidden"),
                "{err}"
            );
            assert!(
                srv.requests
                    .lock()
                    .unwrap()
                    .iter()
                    .all(|r| r.host.as_deref() != Some("evil.example.com")),
                "a request carried the forged Host"
            );
            // Without the forged header the same request works.
            assert!(
                wrap(&kms, "k", &probe(&format!("{}/ok", srv.url()), via))
                    .await
                    .is_ok()
            );
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn redirect_to_other_host_not_followed() {
        for via in VIAS {
            let dir = tempfile::tempdir().unwrap();
            let allowed = server().await;
            let other = server().await;
            let kms = guest_kms(
                HTTP_PROBE,
                json!({"allowedHosts": allowed.url()}),
                dir.path(),
            );
            let url = format!("{}/redirect/{}", allowed.url(), other.addr);
            // The host hands the 302 to the plugin instead of following it.
            let out = wrap(&kms, "k", &probe(&url, via)).await.unwrap();
            assert_eq!(status_body(&out).0, 302);
            // A plugin that follows it itself meets the allow-list again.
            let spec = json!({"url": url, "follow": true, "via": via});
            let err = guard(wrap(&kms, "k", &spec.to_string())).await.unwrap_err();
            assert!(matches!(err, KmsError::Denied { .. }), "{err}");
            assert_eq!(other.count(), 0, "the redirect target was contacted");
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn response_cap_obeyed() {
        for via in VIAS {
            let dir = tempfile::tempdir().unwrap();
            let srv = server().await;
            let kms = guest_kms(
                HTTP_PROBE,
                json!({"allowedHosts": srv.url(), "kmshostMaxResponseBytes": "400000"}),
                dir.path(),
            );
            let out = wrap(&kms, "k", &probe(&format!("{}/big", srv.url()), via))
                .await
                .unwrap();
            assert_eq!(status_body(&out).1.len(), 300_000);
            let out = wrap(
                &kms,
                "k",
                &probe(&format!("{}/big-chunked", srv.url()), via),
            )
            .await
            .unwrap();
            assert_eq!(status_body(&out).1.len(), 300_000);
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn response_cap_violated() {
        for via in VIAS {
            let dir = tempfile::tempdir().unwrap();
            let srv = server().await;
            let kms = guest_kms(
                HTTP_PROBE,
                json!({"allowedHosts": srv.url(), "kmshostMaxResponseBytes": "200000"}),
                dir.path(),
            );
            for path in ["/big", "/big-chunked"] {
                let err = wrap(&kms, "k", &probe(&format!("{}{path}", srv.url()), via))
                    .await
                    .unwrap_err();
                assert!(err.to_string().contains("limit"), "{path}: {err}");
            }
            assert!(
                wrap(&kms, "k", &probe(&format!("{}/ok", srv.url()), via))
                    .await
                    .is_ok()
            );
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn tls_uses_the_kms_id_ca() {
        for via in VIAS {
            let dir = tempfile::tempdir().unwrap();
            let pki = test_pki();
            let srv = TestServer::start_tls(
                "127.0.0.1:0",
                Arc::new(|_| Reply::ok("secure")),
                pki.server.clone(),
            )
            .await;
            let url = format!("https://127.0.0.1:{}/ok", srv.addr.port());
            let allowed = format!("https://127.0.0.1:{}", srv.addr.port());
            common::write_secret(dir.path(), "kms-ca", &[("ca.crt", pki.ca_pem.as_bytes())]);
            // With the kmsID's CA: verified and served.
            let kms = guest_kms(
                HTTP_PROBE,
                json!({"allowedHosts": allowed, "kmshostCAFromSecret": "kms-ca"}),
                dir.path(),
            );
            let out = wrap(&kms, "k", &probe(&url, via)).await.unwrap();
            assert_eq!(status_body(&out), (200, b"secure".to_vec()));
            // Without it (system roots): the certificate is refused.
            let kms = guest_kms(HTTP_PROBE, json!({"allowedHosts": allowed}), dir.path());
            let err = wrap(&kms, "k", &probe(&url, via)).await.unwrap_err();
            assert!(
                matches!(err, KmsError::Denied { .. }) && err.to_string().contains("TLS"),
                "{err}"
            );
            // Skip-verify only when the admin says so.
            let kms = guest_kms(
                HTTP_PROBE,
                json!({"allowedHosts": allowed, "kmshostInsecureSkipVerify": "true"}),
                dir.path(),
            );
            assert!(wrap(&kms, "k", &probe(&url, via)).await.is_ok());
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn tls_client_certificate_is_presented_by_the_host() {
        for via in VIAS {
            let dir = tempfile::tempdir().unwrap();
            let pki = test_pki();
            let srv = TestServer::start_tls(
                "127.0.0.1:0",
                Arc::new(|_| Reply::ok("mutual")),
                pki.server_mtls.clone(),
            )
            .await;
            let url = format!("https://127.0.0.1:{}/ok", srv.addr.port());
            let allowed = format!("https://127.0.0.1:{}", srv.addr.port());
            common::write_secret(dir.path(), "kms-ca", &[("ca.crt", pki.ca_pem.as_bytes())]);
            common::write_secret(
                dir.path(),
                "kms-client",
                &[
                    ("tls.crt", pki.client_cert_pem.as_bytes()),
                    ("tls.key", pki.client_key_pem.as_bytes()),
                ],
            );
            // Without a client certificate the server refuses the handshake.
            let kms = guest_kms(
                HTTP_PROBE,
                json!({"allowedHosts": allowed, "kmshostCAFromSecret": "kms-ca"}),
                dir.path(),
            );
            assert!(wrap(&kms, "k", &probe(&url, via)).await.is_err());
            assert_eq!(srv.count(), 0);
            // With the kmsID's client certificate (held by the host) it serves.
            let kms = guest_kms(
                HTTP_PROBE,
                json!({"allowedHosts": allowed, "kmshostCAFromSecret": "kms-ca", "kmshostClientCertFromSecret": "kms-client"}),
                dir.path(),
            );
            let out = wrap(&kms, "k", &probe(&url, via)).await.unwrap();
            assert_eq!(status_body(&out), (200, b"mutual".to_vec()));
            // The plugin itself cannot read the key Secret: it is not granted.
            let reader = common::kms(
                &json!({"t": {"encryptionKMSType": "test-guest", "kmshostPlugin": SECRET_READER,
                              "kmshostClientCertFromSecret": "kms-client"}}),
                dir.path(),
                None,
            );
            let err = wrap(&reader, "k", "kms-client/tls.key").await.unwrap_err();
            assert!(matches!(err, KmsError::Denied { .. }), "{err}");
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn connections_are_kept_alive_per_kms_id() {
        let dir = tempfile::tempdir().unwrap();
        let srv = server().await;
        let cfg = json!({
            "a": {"encryptionKMSType": "test-guest", "kmshostPlugin": HTTP_PROBE, "allowedHosts": srv.url()},
            "b": {"encryptionKMSType": "test-guest", "kmshostPlugin": HTTP_PROBE, "allowedHosts": srv.url()},
        });
        let kms = common::kms(&cfg, dir.path(), None);
        let spec = probe(&format!("{}/ok", srv.url()), "kmshost");
        let wasi = probe(&format!("{}/ok", srv.url()), "wasi");
        // Both transports, in both orders, on one connection: the host
        // drives it itself for `outbound-http`, and hands it to a task of
        // its own once `wasi:http` (which streams the body later) used it.
        // A wasi:http exchange hands its connection back once the task
        // that streamed its body has finished; the next call waits for
        // that (as a steady client's next request would come later), so
        // a busy machine cannot make the test open a second connection.
        let returned = async |kms: &kmshost::kms::Kms| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while kms.plugin_report("a", None).await.unwrap().idle_connections == 0 {
                assert!(Instant::now() < deadline, "the connection never came back");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        kms.wrap("a", &key("k"), &bytes(&spec)).await.unwrap();
        kms.wrap("a", &key("k"), &bytes(&wasi)).await.unwrap();
        returned(&kms).await;
        for _ in 0..3 {
            kms.wrap("a", &key("k"), &bytes(&spec)).await.unwrap();
        }
        kms.wrap("a", &key("k"), &bytes(&wasi)).await.unwrap();
        returned(&kms).await;
        assert_eq!(srv.count(), 6);
        assert_eq!(
            srv.connections.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "no keep-alive"
        );
        // Another kmsID never shares the first one's connections.
        kms.wrap("b", &key("k"), &bytes(&spec)).await.unwrap();
        assert_eq!(srv.connections.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    /// A server that closes idle keep-alive connections (as every server
    /// does after its idle timeout): the next request notices before
    /// reusing one and opens a new connection, instead of failing.
    #[tokio::test(flavor = "multi_thread")]
    async fn idle_connection_closed_by_the_server_is_not_reused() {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        // The server answers, keeps the connection until the test says the
        // client holds it idle, then closes it and says so: no timing.
        let (close, close_rx) = std::sync::mpsc::channel::<()>();
        let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel::<()>();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                    line.clear();
                }
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nidle")
                    .unwrap();
                // Kept alive as far as the client knows, until closed here.
                if close_rx.recv().is_err() {
                    return;
                }
                let _ = stream.shutdown(std::net::Shutdown::Both);
                drop((reader, stream));
                let _ = closed_tx.send(());
            }
        });
        for via in VIAS {
            let dir = tempfile::tempdir().unwrap();
            let kms = guest_kms(HTTP_PROBE, json!({"allowedHosts": url}), dir.path());
            for _ in 0..2 {
                let out = wrap(&kms, "k", &probe(&format!("{url}/x"), via))
                    .await
                    .unwrap();
                assert_eq!(status_body(&out), (200, b"idle".to_vec()), "via {via}");
                let deadline = Instant::now() + Duration::from_secs(10);
                while kms.plugin_report("t", None).await.unwrap().idle_connections == 0 {
                    assert!(
                        Instant::now() < deadline,
                        "via {via}: never idle in the pool"
                    );
                    tokio::task::yield_now().await;
                }
                close.send(()).unwrap();
                closed.recv().await.unwrap();
                // The client sees the close before the next request (what
                // this test is about); a request racing the close is the
                // pool's retry, tested in capability::net.
                while kms.plugin_report("t", None).await.unwrap().idle_connections > 0 {
                    assert!(
                        Instant::now() < deadline,
                        "via {via}: the close was never seen"
                    );
                    tokio::task::yield_now().await;
                }
            }
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 4);
    }
}

/// Compile-cache poisoning: a cached entry is trusted only if it carries
/// this host's tag for exactly these wasm bytes, is owned by the host's
/// user and is not reached through a symlink.
mod compile_cache {
    use super::*;
    use kmshost::config::{ConfigSource, HostDefaults};
    use kmshost::sandbox::{Sandbox, SandboxConfig};
    use kmshost::secrets::MountedSecrets;
    use std::os::unix::fs::PermissionsExt;

    fn sandbox(cache: &Path) -> Result<Arc<Sandbox>, kmshost::sandbox::SandboxError> {
        Sandbox::new(SandboxConfig {
            cache_dir: Some(cache.to_path_buf()),
            max_instances: 4,
            ..Default::default()
        })
    }

    /// kmsID `trapper` (pinned) and `spin`, over a private cache.
    fn facade(cache: &Path, pin: Option<[u8; 32]>) -> Kms {
        let mut trapper = json!({"encryptionKMSType": "test-guest", "kmshostPlugin": TRAPPER});
        if let Some(p) = pin {
            trapper["kmshostPluginSHA256"] = json!(hex::encode(p));
        }
        let config = json!({"trapper": trapper,
            "spin": {"encryptionKMSType": "test-guest", "kmshostPlugin": SPIN}});
        Kms::new(
            ConfigSource::from_text(&config.to_string(), HostDefaults::default()).unwrap(),
            sandbox(cache).unwrap(),
            Arc::new(MountedSecrets::new(cache.join("no-secrets"))),
        )
    }

    fn entry_of(cache: &Path, sha256: &[u8; 32]) -> std::path::PathBuf {
        let prefix = hex::encode(sha256);
        std::fs::read_dir(cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.starts_with(&prefix) && name.ends_with(".cwasm")
            })
            .expect("cache entry")
    }

    /// Compiles both guests into `cache`; returns (trapper's sha256 and
    /// entry, spin's entry).
    async fn fill(cache: &Path) -> ([u8; 32], std::path::PathBuf, std::path::PathBuf) {
        let kms = facade(cache, None);
        let t = kms.plugin_report("trapper", None).await.unwrap();
        let s = kms.plugin_report("spin", None).await.unwrap();
        (
            t.sha256,
            entry_of(cache, &t.sha256),
            entry_of(cache, &s.sha256),
        )
    }

    async fn loaded(cache: &Path, pin: [u8; 32]) -> (bool, String) {
        let kms = facade(cache, Some(pin));
        let report = kms.plugin_report("trapper", None).await.unwrap();
        (
            report.from_cache,
            kms.plugin_about("trapper").await.unwrap().name,
        )
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn another_plugins_code_is_refused_and_the_pinned_plugin_runs() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let (pin, trapper, spin) = fill(&cache).await;
        assert_eq!(loaded(&cache, pin).await, (true, "trapper".into()));
        // A local user swaps spin's compiled code in under trapper's name.
        std::fs::copy(&spin, &trapper).unwrap();
        assert_eq!(loaded(&cache, pin).await, (false, "trapper".into()));
        // The entry was rewritten with the right code and is trusted again.
        assert_eq!(loaded(&cache, pin).await, (true, "trapper".into()));
        let k = facade(&cache, Some(pin));
        let w = k.wrap("trapper", &key("fine"), &bytes("ok")).await.unwrap();
        assert_eq!(w.as_bytes(), b"ok");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn entries_of_another_owner_or_behind_a_symlink_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let (pin, trapper, _) = fill(&cache).await;
        // Owned by another user (as root here; a real attacker owns the file).
        std::os::unix::fs::chown(&trapper, Some(65534), Some(65534)).unwrap();
        assert_eq!(loaded(&cache, pin).await, (false, "trapper".into()));
        // A symlink to a genuine entry elsewhere is not followed.
        let elsewhere = dir.path().join("genuine.cwasm");
        std::fs::rename(&trapper, &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &trapper).unwrap();
        assert_eq!(loaded(&cache, pin).await, (false, "trapper".into()));
        assert!(!std::fs::symlink_metadata(&trapper).unwrap().is_symlink());
        assert_eq!(loaded(&cache, pin).await, (true, "trapper".into()));
    }

    fn with_precompiled(
        cache: &Path,
        pre: &Path,
    ) -> Result<Arc<Sandbox>, kmshost::sandbox::SandboxError> {
        Sandbox::new(SandboxConfig {
            cache_dir: Some(cache.to_path_buf()),
            precompiled_dir: Some(pre.to_path_buf()),
            max_instances: 4,
            ..Default::default()
        })
    }

    /// Whether trapper loads from a cache (writable or precompiled), over a
    /// fresh writable cache each time.
    fn from_precompiled(dir: &Path, pre: &Path, round: &str) -> bool {
        let cache = dir.join(format!("cache-{round}"));
        let sandbox = with_precompiled(&cache, pre).unwrap();
        let wasm = std::fs::read(TRAPPER).unwrap();
        sandbox.load("trapper", &wasm, None).unwrap().from_cache
    }

    /// The image's precompiled directory: an entry is used when it is the
    /// code of exactly these wasm bytes and nobody but root (or kmshost)
    /// can have written it; otherwise the plugin is compiled as usual.
    #[tokio::test(flavor = "multi_thread")]
    async fn precompiled_entries_load_only_when_sound() {
        let dir = tempfile::tempdir().unwrap();
        let pre = dir.path().join("precompiled");
        let builder = sandbox(&dir.path().join("builder-cache")).unwrap();
        let trapper = builder
            .precompile("trapper", &std::fs::read(TRAPPER).unwrap(), &pre)
            .unwrap();
        let spin = builder
            .precompile("spin", &std::fs::read(SPIN).unwrap(), &pre)
            .unwrap();
        assert!(from_precompiled(dir.path(), &pre, "sound"));
        assert!(
            !std::fs::read_dir(dir.path().join("cache-sound"))
                .unwrap()
                .any(|e| { e.unwrap().file_name().to_string_lossy().ends_with(".cwasm") }),
            "nothing compiled into the writable cache"
        );

        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        mode(&trapper, 0o666);
        assert!(!from_precompiled(dir.path(), &pre, "writable"));
        mode(&trapper, 0o644);
        std::os::unix::fs::chown(&trapper, Some(65534), None).unwrap();
        assert!(!from_precompiled(dir.path(), &pre, "foreign"));
        std::os::unix::fs::chown(&trapper, Some(0), None).unwrap();
        let genuine = std::fs::read(&trapper).unwrap();
        std::fs::copy(&spin, &trapper).unwrap();
        assert!(!from_precompiled(dir.path(), &pre, "swapped"));
        let mut flipped = genuine.clone();
        *flipped.last_mut().unwrap() ^= 1;
        std::fs::write(&trapper, &flipped).unwrap();
        assert!(!from_precompiled(dir.path(), &pre, "corrupt"));
        std::fs::write(&trapper, &genuine).unwrap();
        assert!(from_precompiled(dir.path(), &pre, "restored"));

        // The directory itself: a symlink, a writable or a missing one is
        // refused at start, naming it.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&pre, &link).unwrap();
        let e = with_precompiled(&dir.path().join("c"), &link)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("symlinks are refused"), "{e}");
        mode(&pre, 0o777);
        let e = with_precompiled(&dir.path().join("c"), &pre)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("777"), "{e}");
        let e = with_precompiled(&dir.path().join("c"), &dir.path().join("none"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("precompiled directory") && e.contains("none"),
            "{e}"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_unsafe_cache_directory_or_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        sandbox(&cache).unwrap();
        let key = dir.path().join("cache.key");
        assert_eq!(
            std::fs::read(&key).unwrap().len(),
            32,
            "key beside the cache"
        );
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        mode(&key, 0o644);
        let e = sandbox(&cache)
            .err()
            .expect("readable key refused")
            .to_string();
        assert!(e.contains("cache.key") && e.contains("644"), "{e}");
        mode(&key, 0o600);
        mode(&cache, 0o777);
        let e = sandbox(&cache)
            .err()
            .expect("writable dir refused")
            .to_string();
        assert!(e.contains("777"), "{e}");
        mode(&cache, 0o700);
        std::os::unix::fs::chown(&cache, Some(65534), None).unwrap();
        let e = sandbox(&cache)
            .err()
            .expect("foreign dir refused")
            .to_string();
        assert!(e.contains("uid 65534"), "{e}");
        // SAFETY: geteuid has no preconditions.
        std::os::unix::fs::chown(&cache, Some(unsafe { libc::geteuid() }), None).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&cache, &link).unwrap();
        assert!(sandbox(&link).is_err(), "symlinked cache refused");
        assert!(sandbox(&cache).is_ok());
    }
}

/// A plugin that panics when its backend fails is stopped as a trap, and
/// the host goes on (`kmshost plugin test` fails it: tests/plugin_test.rs).
mod fragile {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_plugin_panicking_on_a_backend_error_is_a_trap() {
        let dir = tempfile::tempdir().unwrap();
        let port = common::free_port();
        let url = format!("http://127.0.0.1:{port}");
        let kms = guest_kms(
            FRAGILE,
            json!({"ENDPOINT": url, "allowedHosts": url}),
            dir.path(),
        );
        let e = kms.get("t", &key("k")).await.unwrap_err();
        assert!(matches!(cause(&e), SandboxCause::Trap(_)), "{e}");
        let e = kms.get("t", &key("k")).await.unwrap_err();
        assert!(
            matches!(cause(&e), SandboxCause::Trap(_)),
            "the next call traps alike: {e}"
        );
    }
}

/// Key invariants: nothing a plugin returns can weaken a volume. Sealing a
/// volume key (what CreateVolume and rotation do) verifies the blob, the
/// round trip and the binding to the key-id before anything is recorded.
mod key_liar {
    use super::*;
    use kmshost::kms::{Sealed, generate_passphrase};

    fn liar(mode: &str, dir: &Path) -> Kms {
        guest_kms(KEY_LIAR, json!({"mode": mode}), dir)
    }

    async fn seal(kms: &Kms, id: &str) -> Result<Sealed, KmsError> {
        kms.tenant(None)
            .seal("t", &key(id), &generate_passphrase())
            .await
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn key_invariants_obeyed() {
        let dir = tempfile::tempdir().unwrap();
        let kms = liar("honest", dir.path());
        let p = generate_passphrase();
        let Sealed::Wrapped(w) = kms.tenant(None).seal("t", &key("pvc-1"), &p).await.unwrap()
        else {
            panic!("honest wraps")
        };
        assert_eq!(kms.unwrap("t", &key("pvc-1"), &w).await.unwrap(), p);
        // Bound to its key-id.
        let e = kms.unwrap("t", &key("pvc-2"), &w).await.unwrap_err();
        assert!(matches!(e, KmsError::Integrity { .. }), "{e}");
        assert!(matches!(seal(&kms, "pvc-2").await, Ok(Sealed::Wrapped(_))));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn key_invariants_violated() {
        let dir = tempfile::tempdir().unwrap();
        for (mode, says) in [
            ("echo", "contains the key in clear"),
            ("unbound", "does not bind blobs"),
            ("short", "another key than the one just sealed"),
            ("huge", "returned 1048576 bytes"),
            ("store-liar", "get after put returned another key"),
        ] {
            let kms = liar(mode, dir.path());
            match seal(&kms, "pvc-1").await {
                Err(e @ KmsError::Integrity { .. }) => {
                    assert!(e.to_string().contains(says), "{mode}: {e}");
                    assert!(!e.is_retryable(), "{mode}");
                }
                other => panic!("{mode}: expected integrity, got {other:?}"),
            }
        }
        // The host keeps serving an honest kmsID.
        assert!(seal(&liar("honest", dir.path()), "pvc-1").await.is_ok());
    }

    /// The key_liar guest with a manifest declaring `capabilities`.
    fn declared(mode: &str, capabilities: serde_json::Value, dir: &Path) -> Kms {
        let m = json!({"manifest": 1, "contract": "0.1.4", "name": "key_liar",
            "types": {"test-guest": {"capabilities": capabilities}},
            "options": [{"name": "mode", "kind": "plain"}]});
        let path = dir.join("declared.wasm");
        let bytes = common::with_manifest(&std::fs::read(KEY_LIAR).unwrap(), &m);
        std::fs::write(&path, bytes).unwrap();
        guest_kms(path.to_str().unwrap(), json!({"mode": mode}), dir)
    }

    /// The manifest routes keys: a type declaring only `store` is never
    /// asked to wrap (the honest liar would wrap well; its store lies, so
    /// sealing fails on the store's check), and one declaring only `wrap`
    /// gets no fallback to a store it did not declare.
    #[tokio::test(flavor = "multi_thread")]
    async fn declared_capabilities_route_keys() {
        let dir = tempfile::tempdir().unwrap();
        let kms = declared("honest", json!(["store"]), dir.path());
        let e = seal(&kms, "pvc-1").await.unwrap_err();
        assert!(e.to_string().contains("get after put"), "{e}");
        let kms = declared("honest", json!(["wrap", "store"]), dir.path());
        assert!(matches!(seal(&kms, "pvc-1").await, Ok(Sealed::Wrapped(_))));
        let kms = declared("store-liar", json!(["wrap"]), dir.path());
        let e = seal(&kms, "pvc-1").await.unwrap_err();
        assert!(matches!(e, KmsError::Unsupported { .. }), "{e}");
    }
}

/// Plugin text: every string a plugin hands the host is capped (about
/// 1 KiB) and its control characters escaped before it reaches an error, a
/// log line or a report.
mod loud {
    use super::*;
    use kmshost::sandbox::plugin_text::MAX_PLUGIN_TEXT;

    fn bounded(s: &str) {
        assert!(s.len() <= MAX_PLUGIN_TEXT + 64, "{} bytes", s.len());
        assert!(!s.contains('\n') && !s.contains('\x1b'), "{s:?}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn plugin_text_cap_obeyed() {
        let dir = tempfile::tempdir().unwrap();
        let kms = guest_kms(LOUD, json!({}), dir.path());
        let e = wrap(&kms, "quiet", "x").await.unwrap_err();
        assert_eq!(e.to_string(), "kmsID t: plain failure");
        assert_eq!(wrap(&kms, "log", "x").await.unwrap(), b"logged");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn plugin_text_cap_violated() {
        let dir = tempfile::tempdir().unwrap();
        let kms = guest_kms(LOUD, json!({}), dir.path());
        let e = wrap(&kms, "error", "x").await.unwrap_err();
        let text = e.to_string();
        bounded(&text);
        assert!(text.contains("forged line\\n2026"), "{text}");
        assert!(text.contains("more bytes)"), "{text}");
        match wrap(&kms, "option", "x").await.unwrap_err() {
            KmsError::InvalidConfig {
                option, message, ..
            } => {
                assert!(option.len() <= 200, "{}", option.len());
                assert!(!option.contains('\n'));
                bounded(&message);
            }
            other => panic!("{other}"),
        }
        let info = kms.plugin_about("t").await.unwrap();
        assert_eq!(info.name, "loud\\nWARN forged");
        assert_eq!(info.version, "1\\u{1b}[31m");
        bounded(&info.description);
    }
}

/// Linking: a component importing an interface the host does not provide
/// never loads, and the error names the import.
mod stray_import {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn unknown_import_is_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let kms = guest_kms(STRAY_IMPORT, json!({}), dir.path());
        match wrap(&kms, "v", "x").await.unwrap_err() {
            KmsError::PluginLoad { message, .. } => {
                assert!(message.contains("does not provide"), "{message}");
                assert!(message.contains("acme:stray/backdoor"), "{message}");
            }
            other => panic!("expected a load error, got {other}"),
        }
    }
}

/// One deadline per operation: a cold instance's instantiate and configure
/// count against the same `kmshostTimeoutMs` as the call.
mod slow_start {
    use super::*;

    fn cold(configure_ms: u64, timeout_ms: u64, dir: &Path) -> Kms {
        guest_kms(
            SLOW_START,
            json!({"configure_ms": configure_ms.to_string(),
                   "kmshostTimeoutMs": timeout_ms.to_string(),
                   "kmshostInstanceReuse": "false"}),
            dir,
        )
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn one_deadline_obeyed() {
        let dir = tempfile::tempdir().unwrap();
        let kms = cold(300, 3000, dir.path());
        assert_eq!(wrap(&kms, "300", "x").await.unwrap(), b"x");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn one_deadline_violated() {
        let dir = tempfile::tempdir().unwrap();
        // Each half fits the deadline alone; together they do not.
        let kms = cold(700, 1000, dir.path());
        kms.plugin_report("t", None).await.unwrap(); // compiled outside the timing
        let t = Instant::now();
        let err = wrap(&kms, "700", "x").await.unwrap_err();
        assert_eq!(cause(&err), &SandboxCause::Deadline(1000), "{err}");
        assert!(
            t.elapsed() < Duration::from_millis(1300),
            "took {:?}",
            t.elapsed()
        );
        // A call that fits is served.
        assert_eq!(wrap(&kms, "10", "x").await.unwrap(), b"x");
    }
}

/// Host resources a plugin can make the host hold: resource handles and
/// header bytes per instance, `wasi:http` requests in flight, and nothing
/// kept after a call (an instance still holding any is discarded).
mod hoarder {
    use super::*;

    fn hoarder(dir: &Path, allowed: Option<&str>) -> Kms {
        let mut extra = json!({"kmshostTimeoutMs": "10000"});
        if let Some(a) = allowed {
            extra["allowedHosts"] = json!(a);
        }
        guest_kms(HOARDER, extra, dir)
    }

    async fn warm(kms: &Kms) -> usize {
        kms.plugin_report("t", None).await.unwrap().warm_instances
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn resource_handles_obeyed() {
        let dir = tempfile::tempdir().unwrap();
        let kms = hoarder(dir.path(), None);
        assert_eq!(wrap(&kms, "dropped-2000", "x").await.unwrap(), b"2000");
        assert_eq!(warm(&kms).await, 1, "an instance that let go is reused");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn resource_handles_violated() {
        let dir = tempfile::tempdir().unwrap();
        let kms = hoarder(dir.path(), None);
        let err = wrap(&kms, "fields-100000", "x").await.unwrap_err();
        match cause(&err) {
            SandboxCause::HostLimit(m) => assert!(m.contains("256"), "{m}"),
            other => panic!("{other}"),
        }
        // Under the cap but kept after the call: not reused.
        assert_eq!(wrap(&kms, "fields-100", "x").await.unwrap(), b"100");
        assert_eq!(
            warm(&kms).await,
            0,
            "an instance holding resources is dropped"
        );
        assert_eq!(wrap(&kms, "dropped-10", "x").await.unwrap(), b"10");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn requests_in_flight_obeyed() {
        let srv = TestServer::start(
            "127.0.0.1:0",
            Arc::new(|_: &common::http::Recorded| Reply::ok("hi")),
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let kms = hoarder(dir.path(), Some(&srv.url()));
        let out = wrap(&kms, "requests-1", &srv.url()).await.unwrap();
        assert_eq!(out, b"ok 200");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn requests_in_flight_violated() {
        // A server that answers slowly keeps each request in flight.
        let srv = TestServer::start(
            "127.0.0.1:0",
            Arc::new(|_: &common::http::Recorded| {
                Reply::Delayed(Duration::from_millis(200), Box::new(Reply::ok("hi")))
            }),
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let kms = hoarder(dir.path(), Some(&srv.url()));
        let out = wrap(&kms, "requests-50", &srv.url()).await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out),
            "err ErrorCode::ConnectionLimitReached"
        );
        let reached = srv.requests.lock().unwrap().len();
        assert!(
            reached <= kmshost::sandbox::outbound::MAX_IN_FLIGHT,
            "{reached} requests reached the server"
        );
        assert_eq!(
            warm(&kms).await,
            0,
            "an instance with requests in flight is dropped"
        );
        // The next call starts clean.
        assert_eq!(
            wrap(&kms, "requests-1", &srv.url()).await.unwrap(),
            b"ok 200"
        );
    }
}

/// `tls-stream`: where a plugin may open streams, how many it may hold,
/// how many bytes it may move per call, and how long a read may wait —
/// each limit obeyed and violated, then a healthy call.
mod stream_probe {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A TLS server (the test PKI's) on loopback: echoes what it reads, or
    /// (`silent`) reads and never answers.
    async fn tls_server(pki: &common::http::TestPki, silent: bool) -> String {
        let acceptor = tokio_rustls::TlsAcceptor::from(pki.server.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 64 << 10];
                    while let Ok(n) = tls.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        if !silent && tls.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    /// kmsID `t` running the guest, allowed `allowed`, trusting the test CA.
    fn kms_for(
        pki: &common::http::TestPki,
        dir: &Path,
        allowed: &str,
        extra: serde_json::Value,
    ) -> Kms {
        common::write_secret(dir, "test-ca", &[("ca.crt", pki.ca_pem.as_bytes())]);
        let mut opts = json!({"allowedHosts": allowed, "kmshostCAFromSecret": "test-ca"});
        for (k, v) in extra.as_object().unwrap() {
            opts[k] = v.clone();
        }
        guest_kms(STREAM_PROBE, opts, dir)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn stream_endpoint_obeyed() {
        let pki = test_pki();
        let echo = tls_server(&pki, false).await;
        let dir = tempfile::tempdir().unwrap();
        let kms = kms_for(&pki, dir.path(), &format!("tls://{echo}"), json!({}));
        for _ in 0..3 {
            let back = wrap(&kms, "v", &format!("echo {echo} 5")).await.unwrap();
            assert_eq!(back, b"xxxxx");
        }
        let r = kms.plugin_report("t", None).await.unwrap();
        assert_eq!(r.idle_streams, 1, "released, pooled and reused: {r:?}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn stream_endpoint_violated() {
        let pki = test_pki();
        let echo = tls_server(&pki, false).await;
        let other = tls_server(&pki, false).await;
        let dir = tempfile::tempdir().unwrap();
        // An https:// entry for the same host and port allows no stream.
        let kms = kms_for(
            &pki,
            dir.path(),
            &format!("tls://{echo},https://{other}"),
            json!({}),
        );
        for target in [other.clone(), format!("tls://{echo}"), "127.0.0.1".into()] {
            let e = wrap(&kms, "v", &format!("echo {target} 5"))
                .await
                .unwrap_err();
            assert!(matches!(e, KmsError::Denied { .. }), "{target}: {e}");
        }
        let e = wrap(&kms, "v", &format!("echo {other} 5"))
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("add tls://{other} to allowedHosts")),
            "the denial tells the admin the entry to add: {e}"
        );
        assert_eq!(
            wrap(&kms, "v", &format!("echo {echo} 2")).await.unwrap(),
            b"xx"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn stream_connections_obeyed() {
        let pki = test_pki();
        let echo = tls_server(&pki, false).await;
        let dir = tempfile::tempdir().unwrap();
        let kms = kms_for(&pki, dir.path(), &format!("tls://{echo}"), json!({}));
        let n = kmshost::sandbox::outbound::MAX_IN_FLIGHT;
        let held = wrap(&kms, "v", &format!("hold {echo} {n}")).await.unwrap();
        assert_eq!(held, format!("held {n}").as_bytes());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn stream_connections_violated() {
        let pki = test_pki();
        let echo = tls_server(&pki, false).await;
        let dir = tempfile::tempdir().unwrap();
        let kms = kms_for(&pki, dir.path(), &format!("tls://{echo}"), json!({}));
        let n = kmshost::sandbox::outbound::MAX_IN_FLIGHT;
        let e = wrap(&kms, "v", &format!("hold {echo} {}", n + 1))
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("already holds {n} connections")),
            "{e}"
        );
        // The streams it held were closed with its call: the next one runs.
        assert_eq!(
            wrap(&kms, "v", &format!("echo {echo} 3")).await.unwrap(),
            b"xxx"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn stream_bytes_obeyed() {
        let pki = test_pki();
        let echo = tls_server(&pki, false).await;
        let dir = tempfile::tempdir().unwrap();
        let kms = kms_for(
            &pki,
            dir.path(),
            &format!("tls://{echo}"),
            json!({"kmshostMaxResponseBytes": "1024"}),
        );
        let back = wrap(&kms, "v", &format!("echo {echo} 1024")).await.unwrap();
        assert_eq!(back.len(), 1024);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn stream_bytes_violated() {
        let pki = test_pki();
        let echo = tls_server(&pki, false).await;
        let dir = tempfile::tempdir().unwrap();
        let kms = kms_for(
            &pki,
            dir.path(),
            &format!("tls://{echo}"),
            json!({"kmshostMaxResponseBytes": "1024"}),
        );
        // Sending past the limit, and asking to read past it (refused
        // before anything is allocated or read, even for 4 GiB).
        for cmd in [
            format!("echo {echo} 1025"),
            format!("peek {echo} 4294967295"),
        ] {
            let e = wrap(&kms, "v", &cmd).await.unwrap_err();
            assert!(matches!(e, KmsError::Plugin { .. }), "{cmd}: {e}");
            assert!(
                e.to_string().contains("limit of 1024 bytes per call"),
                "{cmd}: {e}"
            );
        }
        assert_eq!(
            wrap(&kms, "v", &format!("echo {echo} 4")).await.unwrap(),
            b"xxxx"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn stream_read_timeout_obeyed() {
        let pki = test_pki();
        let echo = tls_server(&pki, false).await;
        let dir = tempfile::tempdir().unwrap();
        let kms = kms_for(&pki, dir.path(), &format!("tls://{echo}"), json!({}));
        let back = wrap(&kms, "v", &format!("silent {echo} 1 300"))
            .await
            .unwrap();
        assert_eq!(back, b"x", "an answer within the read timeout");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn stream_read_timeout_violated() {
        let pki = test_pki();
        let silent = tls_server(&pki, true).await;
        let echo = tls_server(&pki, false).await;
        let dir = tempfile::tempdir().unwrap();
        let kms = kms_for(
            &pki,
            dir.path(),
            &format!("tls://{silent},tls://{echo}"),
            json!({"kmshostTimeoutMs": "20000"}),
        );
        let t = Instant::now();
        let e = wrap(&kms, "v", &format!("silent {silent} 1 300"))
            .await
            .unwrap_err();
        let took = t.elapsed();
        // The plugin's read timeout, not the call's 20 s deadline: a
        // timeout (DEADLINE_EXCEEDED), named.
        assert!(matches!(e, KmsError::TimedOut { .. }), "{e}");
        assert!(e.to_string().contains("timed out after 300 ms"), "{e}");
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_secs(5),
            "{took:?}"
        );
        assert_eq!(
            wrap(&kms, "v", &format!("echo {echo} 1")).await.unwrap(),
            b"x"
        );
    }
}

/// `rewrap.offer` (contract 0.1.2): a plugin may hand back, during an
/// unwrap, the key wrapped under its backend's current key version. The
/// host keeps only one blob per unwrap, within the blob size limit, only
/// from an unwrap, and only one that hides the key and unwraps to the same
/// key; anything else is refused or dropped and the unwrap still stands.
mod rewrapper {
    use super::*;
    use kmshost::kms::generate_passphrase;
    use kmshost::types::WrappedKey;

    fn rewrapper(mode: &str, dir: &Path) -> Kms {
        guest_kms(REWRAPPER, json!({"mode": mode}), dir)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn rewrap_offer_obeyed() {
        let dir = tempfile::tempdir().unwrap();
        let kms = rewrapper("honest", dir.path());
        let (v, p) = (key("pvc-1"), generate_passphrase());
        let old = kms.wrap("t", &v, &p).await.unwrap();
        assert!(old.as_bytes().starts_with(b"v1"));
        let (got, offered) = kms
            .tenant(None)
            .unwrap_current("t", &v, &old)
            .await
            .unwrap();
        assert_eq!(got, p);
        let new = offered.expect("the offered blob is kept");
        assert!(new.as_bytes().starts_with(b"v2"), "{new:?}");
        // `kmshost kms rewrap` takes the offered blob (no second wrap).
        let r = kms.rewrap("t", &v, &old).await.unwrap();
        assert_eq!(r, new);
        // A current blob offers nothing.
        let (_, again) = kms
            .tenant(None)
            .unwrap_current("t", &v, &new)
            .await
            .unwrap();
        assert!(again.is_none());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn rewrap_offer_violated() {
        let dir = tempfile::tempdir().unwrap();
        let (v, p) = (key("pvc-1"), generate_passphrase());
        for mode in ["too-big", "liar", "reveal"] {
            let kms = rewrapper(mode, dir.path());
            let old = kms.wrap("t", &v, &p).await.unwrap();
            let (got, offered) = kms
                .tenant(None)
                .unwrap_current("t", &v, &old)
                .await
                .unwrap_or_else(|e| panic!("{mode}: the unwrap stands: {e}"));
            assert_eq!(got, p, "{mode}");
            assert!(offered.is_none(), "{mode}: {offered:?} kept");
            // rewrap falls back to a fresh, verified wrap.
            let r = kms.rewrap("t", &v, &old).await.unwrap();
            assert!(r.as_bytes().starts_with(b"v1"), "{mode}");
        }
        // At most one offer per unwrap: the second is refused (the guest
        // fails the unwrap if it was taken), the first kept.
        let kms = rewrapper("twice", dir.path());
        let old = kms.wrap("t", &v, &p).await.unwrap();
        let (_, offered) = kms
            .tenant(None)
            .unwrap_current("t", &v, &old)
            .await
            .unwrap();
        let first: WrappedKey = offered.unwrap();
        assert_eq!(kms.unwrap("t", &v, &first).await.unwrap(), p);
        // Never outside an unwrap (the guest fails the wrap if taken).
        let kms = rewrapper("in-wrap", dir.path());
        kms.wrap("t", &v, &p).await.unwrap();
    }
}

/// The `hsm` import (contract 0.1.3): a plugin names key labels; only the
/// labels the admin granted in the entry work, within the size and call
/// limits, and a kmsID without an HSM has none. Against SoftHSM2.
mod hsm_probe {
    use super::*;
    use common::softhsm::{MODULE, PIN, softhsm};
    use kmshost::kms::generate_passphrase;

    /// The guest with a manifest declaring the HSM options, its entry
    /// granting `key-1` on token `kmshost-a` (or, without `hsm`, a manifest
    /// and entry with no HSM at all).
    fn probe(mode: &str, label: &str, hsm: bool, dir: &Path) -> Kms {
        let mut options = vec![
            json!({"name": "mode", "kind": "plain"}),
            json!({"name": "label", "kind": "plain"}),
        ];
        if hsm {
            options.extend([
                json!({"name": "MODULE", "kind": "hsm-module"}),
                json!({"name": "TOKEN", "kind": "hsm-token"}),
                json!({"name": "PIN", "kind": "hsm-pin", "key": "PIN"}),
                json!({"name": "KEYS", "kind": "hsm-key"}),
            ]);
        }
        let m = json!({"manifest": 1, "contract": "0.1.4", "name": "hsm_probe",
            "types": {"test-guest": {"capabilities": ["wrap"]}}, "options": options});
        let path = dir.join(format!("hsm-probe-{mode}-{label}-{hsm}.wasm"));
        std::fs::write(
            &path,
            common::with_manifest(&std::fs::read(HSM_PROBE).unwrap(), &m),
        )
        .unwrap();
        common::write_secret(dir, "pin", &[("PIN", PIN.as_bytes())]);
        let mut extra = json!({"mode": mode, "label": label});
        if hsm {
            extra["MODULE"] = "softhsm".into();
            extra["TOKEN"] = "kmshost-a".into();
            extra["PIN"] = "pin".into();
            extra["KEYS"] = "key-1".into();
        }
        guest_kms(path.to_str().unwrap(), extra, dir).with_hsm_modules(Arc::new(
            kmshost::capability::hsm::HsmModules::parse([format!("softhsm={MODULE}").as_str()])
                .unwrap(),
        ))
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn hsm_labels_obeyed() {
        let Some(_) = softhsm("hsm_probe") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let kms = probe("seal", "key-1", true, dir.path());
        let p = generate_passphrase();
        let kmshost::kms::Sealed::Wrapped(w) =
            kms.tenant(None).seal("t", &key("pvc-1"), &p).await.unwrap()
        else {
            panic!("wraps")
        };
        assert_eq!(kms.unwrap("t", &key("pvc-1"), &w).await.unwrap(), p);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn hsm_labels_violated() {
        let Some(_) = softhsm("hsm_probe") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let p = generate_passphrase();
        for (mode, label, hsm, says) in [
            (
                "seal",
                "key-2",
                true,
                "HSM key \"key-2\" is not granted to kmsID t",
            ),
            ("big", "key-1", true, "at most 4096"),
            ("flood", "key-1", true, "more than 16 HSM calls"),
            ("seal", "key-1", false, "has no HSM"),
        ] {
            let kms = probe(mode, label, hsm, dir.path());
            match kms.wrap("t", &key("pvc-1"), &p).await {
                Err(e @ KmsError::Denied { .. }) => {
                    assert!(e.to_string().contains(says), "{mode}/{label}: {e}")
                }
                other => panic!("{mode}/{label}/{hsm}: {other:?}"),
            }
        }
        // The host keeps serving a well-behaved kmsID.
        let kms = probe("seal", "key-1", true, dir.path());
        kms.wrap("t", &key("pvc-1"), &p).await.unwrap();
    }
}

mod signer_probe {
    use super::*;
    use common::azure::TestCert;
    use kmshost::kms::generate_passphrase;

    /// The guest with a manifest declaring a signing-cert option `CERT`
    /// (key `CLIENT_CERT`), its entry granting Secret `cert` for signing
    /// and, through `kmshostSecrets`, for reading too (or, without
    /// `signing`, a manifest and entry with no certificate at all).
    fn probe(mode: &str, name: &str, signing: bool, dir: &Path, cert: &TestCert) -> Kms {
        let mut options = vec![
            json!({"name": "mode", "kind": "plain"}),
            json!({"name": "name", "kind": "plain"}),
        ];
        if signing {
            options.push(json!({"name": "CERT", "kind": "signing-cert", "key": "CLIENT_CERT"}));
        }
        let m = json!({"manifest": 1, "contract": "0.1.4", "name": "signer_probe",
            "types": {"test-guest": {"capabilities": ["wrap"]}}, "options": options});
        let path = dir.join(format!("signer-probe-{mode}-{name}-{signing}.wasm"));
        std::fs::write(
            &path,
            common::with_manifest(&std::fs::read(SIGNER_PROBE).unwrap(), &m),
        )
        .unwrap();
        common::write_secret(
            dir,
            "cert",
            &[("CLIENT_CERT", cert.client_cert().as_bytes())],
        );
        let mut extra = json!({"mode": mode, "name": name, "kmshostSecrets": "cert"});
        if signing {
            extra["CERT"] = "cert".into();
        }
        guest_kms(path.to_str().unwrap(), extra, dir)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn signing_grant_obeyed() {
        let dir = tempfile::tempdir().unwrap();
        let cert = TestCert::rsa(2048);
        let kms = probe("sign", "cert", true, dir.path(), &cert);
        let p = generate_passphrase();
        let out = kms.wrap("t", &key("pvc-1"), &p).await.unwrap().into_bytes();
        let dot = out.len() - cert.x5t_s256().len() - 1;
        assert_eq!(&out[dot + 1..], cert.x5t_s256().as_bytes());
        // The signature is the certificate's key's, over what the guest gave.
        let der = rustls::pki_types::CertificateDer::from(cert.der.clone());
        let ee = webpki::EndEntityCert::try_from(&der).unwrap();
        ee.verify_signature(
            webpki::ring::RSA_PKCS1_2048_8192_SHA256,
            p.expose(),
            &out[..dot],
        )
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn signing_grant_violated() {
        let dir = tempfile::tempdir().unwrap();
        let cert = TestCert::rsa(2048);
        let p = generate_passphrase();
        for (mode, name, signing, says) in [
            (
                "sign",
                "other",
                true,
                "certificate \"other\" is not granted to kmsID t",
            ),
            ("sign", "cert", false, "granted: none"),
            ("big", "cert", true, "at most 8192"),
            ("flood", "cert", true, "more than 8 signing calls"),
            ("steal", "cert", true, "signing key"),
        ] {
            let kms = probe(mode, name, signing, dir.path(), &cert);
            match kms.wrap("t", &key("pvc-1"), &p).await {
                Err(e @ KmsError::Denied { .. }) => {
                    let text = e.to_string();
                    assert!(text.contains(says), "{mode}/{name}/{signing}: {text}");
                    assert!(!text.contains("PRIVATE KEY"), "{text}");
                }
                other => panic!("{mode}/{name}/{signing}: {other:?}"),
            }
        }
        // The host keeps serving a well-behaved kmsID.
        let kms = probe("sign", "cert", true, dir.path(), &cert);
        kms.wrap("t", &key("pvc-1"), &p).await.unwrap();
    }
}
