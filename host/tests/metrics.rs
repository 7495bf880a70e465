//! Metrics end to end: the endpoint serves OpenMetrics text that a real
//! parser (the Prometheus Python client's) accepts, and its series move as
//! key operations, sandbox stops, allow-list denials and CSI calls happen.
//! Its own test binary: the registry is the process's.

mod common;

include!(concat!(env!("OUT_DIR"), "/test_guests.rs"));

use common::csi::{CsiHarness, metadata_config};
use kmshost::kms::{KeyId, SecretBytes};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

fn python() -> Option<PathBuf> {
    let p =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/peers-venv/bin/python");
    let has_parser = p.exists()
        && std::process::Command::new(&p)
            .args(["-c", "import prometheus_client"])
            .status()
            .is_ok_and(|s| s.success());
    if has_parser {
        return Some(p);
    }
    if std::env::var_os("KMSHOST_REQUIRE_PEERS").is_some() {
        panic!("the venv's prometheus_client is missing (scripts/bootstrap.sh installs it)");
    }
    eprintln!("SKIPPED: no prometheus_client in target/peers-venv (run scripts/test.sh)");
    None
}

/// GET /metrics, parsed by prometheus_client's OpenMetrics parser.
async fn scrape(python: &std::path::Path, url: &str) -> (String, Vec<Sample>) {
    let r = reqwest::get(url).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        kmshost::telemetry::CONTENT_TYPE
    );
    let text = r.text().await.unwrap();
    let script = "import json, sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\n\
        print(json.dumps([[s.name, s.labels, s.value] for f in parse(sys.stdin.read()) for s in f.samples]))";
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: Vec<(String, BTreeMap<String, String>, f64)> =
        serde_json::from_slice(&out.stdout).unwrap();
    (text, samples)
}

/// The value of sample `name` whose labels include all of `want` (0 if none).
fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_with_operations() {
    let Some(python) = python() else {
        return;
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    tokio::spawn(kmshost::telemetry::serve(listener));
    let not_found = reqwest::get(url.replace("/metrics", "/other"))
        .await
        .unwrap();
    assert_eq!(not_found.status(), 404);

    let dir = tempfile::tempdir().unwrap();
    common::write_secret(
        dir.path(),
        "kek",
        &[("encryptionPassphrase", b"metrics-test-passphrase")],
    );
    let kms = common::kms(
        &json!({
            "meta": {"encryptionKMSType": "metadata", "secretName": "kek"},
            "spin": {"encryptionKMSType": "test-guest", "kmshostPlugin": SPIN, "kmshostTimeoutMs": "300"},
            "probe": {"encryptionKMSType": "test-guest", "kmshostPlugin": HTTP_PROBE},
        }),
        dir.path(),
        None,
    );
    let key = |s: &str| KeyId::new(s).unwrap();
    let volume = "kh-vol-metrics-0001";
    let secret = b"a-passphrase-never-in-metrics-000";
    let (_, before) = scrape(&python, &url).await;
    let ops = "kmshost_kms_operations_latency_seconds_count";
    let wrap_ok = [("kms_id", "meta"), ("method", "wrap"), ("status", "ok")];
    assert_eq!(value(&before, ops, &wrap_ok), 0.0);

    let blob = kms
        .wrap("meta", &key(volume), &SecretBytes::new(secret.to_vec()))
        .await
        .unwrap();
    kms.unwrap("meta", &key(volume), &blob).await.unwrap();
    kms.unwrap("meta", &key("kh-vol-other"), &blob)
        .await
        .unwrap_err();
    kms.wrap("spin", &key("forever"), &SecretBytes::new(b"x".to_vec()))
        .await
        .unwrap_err();
    let denied = json!({"url": "http://127.0.0.1:9/", "via": "kmshost"}).to_string();
    let _ = kms
        .wrap("probe", &key("k"), &SecretBytes::new(denied.into_bytes()))
        .await;

    let h = CsiHarness::start(&metadata_config()).await;
    h.create("pvc-metrics", 16 << 20, &[], None).await.unwrap();
    h.create("", 16 << 20, &[], None).await.unwrap_err();

    let (text, after) = scrape(&python, &url).await;
    assert_eq!(value(&after, ops, &wrap_ok), 1.0, "{text}");
    let unwraps = |status| [("kms_id", "meta"), ("method", "unwrap"), ("status", status)];
    assert!(value(&after, ops, &unwraps("ok")) >= 1.0);
    assert_eq!(value(&after, ops, &unwraps("integrity")), 1.0);
    let deadline = [
        ("kms_id", "spin"),
        ("method", "wrap"),
        ("status", "deadline"),
    ];
    assert_eq!(value(&after, ops, &deadline), 1.0);
    let stop = [("kms_id", "spin"), ("cause", "deadline")];
    assert_eq!(value(&after, "kmshost_sandbox_stops_total", &stop), 1.0);
    assert!(
        value(
            &after,
            "kmshost_sandbox_denials_total",
            &[("kms_id", "probe")]
        ) >= 1.0
    );
    assert!(
        value(
            &after,
            "kmshost_sandbox_instantiations_total",
            &[("kms_id", "meta")]
        ) >= 1.0
    );
    assert!(
        value(
            &after,
            "kmshost_sandbox_warm_hits_total",
            &[("kms_id", "meta")]
        ) >= 1.0
    );
    assert!(
        value(
            &after,
            "kmshost_plugin_cache_requests_total",
            &[("kms_id", "meta"), ("result", "stored")]
        ) >= 1.0,
        "the metadata plugin keeps its derived key in the host cache"
    );
    let csi = "kmshost_csi_operations_seconds_count";
    let create = |code| [("method", "CreateVolume"), ("code", code)];
    assert_eq!(value(&after, csi, &create("Ok")), 1.0);
    assert_eq!(value(&after, csi, &create("InvalidArgument")), 1.0);

    // Labels are the documented ones, and nothing secret or per-volume.
    let allowed = [
        "kms_id", "plugin", "method", "status", "cause", "result", "code", "le",
    ];
    for (name, labels, _) in &after {
        for k in labels.keys() {
            assert!(allowed.contains(&k.as_str()), "{name}: label {k}");
        }
    }
    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(secret)
    };
    for leak in [
        volume,
        "pvc-metrics",
        "a-passphrase-never",
        b64.as_str(),
        "metrics-test-passphrase",
    ] {
        assert!(!text.contains(leak), "the metrics hold {leak}");
    }
    // Every family now has a sample: what the monitoring files query exists.
    monitoring_queries_what_is_exported(&text);
    h.stop().await;
}

/// The sample names exposition `text` can carry, from its `# TYPE` lines.
fn exported_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_count", "_sum"],
            other => panic!("{name}: unexpected type {other}"),
        };
        names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
    }
    names
}

fn promtool() -> Option<&'static str> {
    let p = "/usr/bin/promtool";
    if std::path::Path::new(p).exists() {
        return Some(p);
    }
    if std::env::var_os("KMSHOST_REQUIRE_PEERS").is_some() {
        panic!("promtool is missing (scripts/bootstrap.sh installs Debian's prometheus)");
    }
    eprintln!("SKIPPED: no promtool (run scripts/test.sh)");
    None
}

fn monitoring_dir() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/monitoring")
}

/// deploy/monitoring: Prometheus itself checks the alert rules and runs
/// their unit tests (they fire on the series that should fire them, and
/// only those).
#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let Some(promtool) = promtool() else {
        return;
    };
    for args in [
        &["check", "rules", "alerts.yaml"][..],
        &["test", "rules", "alerts-test.yaml"][..],
    ] {
        let out = std::process::Command::new(promtool)
            .args(args)
            .current_dir(monitoring_dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every kmshost series the alert rules and the dashboard query is one
/// exposition `text` (with a sample in every family) carries.
fn monitoring_queries_what_is_exported(text: &str) {
    let exported = exported_names(text);
    assert!(exported.len() >= 7, "{exported:?}");
    let dir = monitoring_dir();
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("dashboard.json")).unwrap())
            .unwrap();
    assert!(
        dashboard["panels"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
    );
    for file in ["alerts.yaml", "alerts-test.yaml", "dashboard.json"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let mut used = 0;
        for (i, _) in text.match_indices("kmshost_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            assert!(exported.contains(&name), "{file}: {name} is not exported");
            used += 1;
        }
        assert!(used > 0, "{file} queries no kmshost series");
    }
}
