//! The `kmshost` binary end to end.

mod common;

use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_kmshost");
const SECRET_WASM: &str = concat!(env!("OUT_DIR"), "/secret.wasm");

include!(concat!(env!("OUT_DIR"), "/test_guests.rs"));

fn cache() -> String {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("compile-cache")
        .display()
        .to_string()
}

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env("KMSHOST_CACHE_DIR", cache())
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_everywhere() {
    for args in [
        vec!["--help"],
        vec!["demo", "--help"],
        vec!["kms", "--help"],
        vec!["kms", "wrap", "--help"],
        vec!["kms", "unwrap", "--help"],
        vec!["kms", "rewrap", "--help"],
        vec!["kms", "get", "--help"],
        vec!["kms", "put", "--help"],
        vec!["kms", "delete", "--help"],
        vec!["plugin", "inspect", "--help"],
        vec!["plugins", "--help"],
    ] {
        let out = run(&args, None);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("Usage:"), "{args:?}");
    }
}

#[test]
fn demo_runs_every_step() {
    let out = run(&["demo"], None);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("demo finished: every step passed"),
        "{stdout}"
    );
    for step in [
        "wrap it with the plugin",
        "LUKS2-format",
        "rotate the passphrase",
        "must be refused",
        "clean up",
    ] {
        assert!(stdout.contains(step), "missing step {step:?}:\n{stdout}");
    }
}

fn setup(dir: &Path) -> (String, String) {
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(secrets.join("kek")).unwrap();
    std::fs::write(
        secrets.join("kek").join("encryptionPassphrase"),
        "cli-test-passphrase",
    )
    .unwrap();
    let cfg = dir.join("config.json");
    std::fs::write(
        &cfg,
        json!({
            "meta": {"encryptionKMSType": "metadata", "secretName": "kek"},
            "bad": {"encryptionKMSType": "metadata", "secretName": "kek", "bogusOption": "1"},
            "typo": {"encryptionKMSType": "no-such-type"},
        })
        .to_string(),
    )
    .unwrap();
    (cfg.display().to_string(), secrets.display().to_string())
}

/// `--audit-log`: one JSON line per key operation, naming the kmsID, the
/// plugin and its sha256, the volume, the operation and its result —
/// and neither the key nor the wrapped blob.
#[test]
fn audit_log_has_a_line_per_key_operation_and_no_key_material() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, secrets) = setup(dir.path());
    let audit = dir.path().join("audit.jsonl");
    let audit_arg = audit.display().to_string();
    let op = |verb: &str, volume: &str, stdin: &[u8]| {
        let args = [
            "kms",
            verb,
            "--config",
            &cfg,
            "--secrets-dir",
            &secrets,
            "--audit-log",
            &audit_arg,
            "--kms-id",
            "meta",
            volume,
        ];
        run(&args, Some(stdin))
    };
    let key = b"audited-passphrase-0123456789abc";
    let wrapped = op("wrap", "pvc-audit", key);
    assert!(wrapped.status.success(), "{}", text(&wrapped.stderr));
    let blob = text(&wrapped.stdout);
    assert!(op("unwrap", "pvc-audit", blob.as_bytes()).status.success());
    // The blob is bound to its volume: under another one it fails.
    assert!(!op("unwrap", "pvc-other", blob.as_bytes()).status.success());

    let log = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seen: Vec<(&str, &str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["operation"].as_str().unwrap(),
                l["volume"].as_str().unwrap(),
                l["result"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("wrap", "pvc-audit", "ok"),
            // The host's checks of a new blob are key operations too: it
            // opens to the key, and not under another key ID.
            ("unwrap", "pvc-audit", "ok"),
            ("unwrap", "kmshost-binding-check", "integrity"),
            ("unwrap", "pvc-audit", "ok"),
            ("unwrap", "pvc-other", "integrity"),
        ]
    );
    let sha = sha256_hex(&std::fs::read(SECRET_WASM).unwrap());
    for l in &lines {
        assert_eq!(l["kms_id"], "meta");
        assert_eq!(l["plugin_sha256"], sha.as_str(), "{l}");
        assert!(l["plugin"].as_str().is_some_and(|p| !p.is_empty()));
        assert!(l["tenant"].is_null());
        assert!(l["latency_ms"].as_f64().unwrap() >= 0.0);
        let t = l["time"].as_str().unwrap();
        assert!(
            t.len() == 24 && t.ends_with('Z') && t.as_bytes()[10] == b'T',
            "{t}"
        );
    }
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(key);
    for secret in ["audited-passphrase", b64.as_str(), blob.trim()] {
        assert!(!log.contains(secret), "the audit log holds {secret}");
    }
}

/// The `.cwasm` entries in a directory.
fn entries(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cwasm"))
        .collect()
}

/// `plugin precompile` (what the image build runs) writes an entry per
/// embedded plugin, readable by a non-root driver and writable by nobody
/// else; a driver given `--precompiled-dir` then runs the plugin from it
/// without compiling into its own cache. A bad directory is refused,
/// naming the flag.
#[test]
fn precompiled_plugins_run_without_compiling() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let pre = dir.path().join("precompiled");
    let pre_arg = pre.display().to_string();
    let out = run(&["plugin", "precompile", "--out", &pre_arg], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| l.split(':').next().unwrap().to_string())
        .collect();
    assert_eq!(
        listed,
        ["secret", "vault", "kmip", "keyprotect", "pkcs11", "azure"]
    );
    let sha = sha256_hex(&std::fs::read(SECRET_WASM).unwrap());
    let secret_entry = entries(&pre).into_iter().find(|n| n.starts_with(&sha));
    let meta = std::fs::metadata(pre.join(secret_entry.expect("secret's entry"))).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);

    let (cfg, secrets) = setup(dir.path());
    let wrap = |cache: &Path, precompiled: Option<&str>| {
        let cache = cache.display().to_string();
        let mut args = vec!["kms", "wrap", "--config", &cfg, "--secrets-dir", &secrets];
        args.extend(["--cache-dir", &cache, "--kms-id", "meta", "pvc-pre"]);
        if let Some(p) = precompiled {
            args.extend(["--precompiled-dir", p]);
        }
        run(&args, Some(b"precompiled-passphrase-0123456789"))
    };
    let own = dir.path().join("own-cache");
    let out = wrap(&own, Some(&pre_arg));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(entries(&own), Vec::<String>::new(), "nothing compiled");
    let other = dir.path().join("other-cache");
    assert!(wrap(&other, None).status.success());
    assert_eq!(
        entries(&other).len(),
        1,
        "without it, the plugin is compiled"
    );

    let missing = dir.path().join("missing").display().to_string();
    let out = wrap(&own, Some(&missing));
    assert!(!out.status.success());
    let e = text(&out.stderr);
    assert!(
        e.contains("--precompiled-dir") && e.contains(&missing),
        "{e}"
    );
    std::fs::set_permissions(&pre, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = wrap(&own, Some(&pre_arg));
    let e = text(&out.stderr);
    assert!(!out.status.success() && e.contains("777"), "{e}");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Long by design: one scenario end to end, each step checked where it happens.
#[test]
fn kms_wrap_unwrap_never_echo_keys_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, secrets) = setup(dir.path());
    let base = [
        "--config",
        &cfg,
        "--secrets-dir",
        &secrets,
        "--kms-id",
        "meta",
    ];
    let key = b"my-volume-passphrase-0123456789";

    let mut args = vec!["kms", "wrap"];
    args.extend(base);
    args.push("pvc-1");
    let out = run(&args, Some(key));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let blob = text(&out.stdout);
    assert!(!blob.contains("my-volume-passphrase"));
    assert!(!text(&out.stderr).contains("my-volume-passphrase"));

    // unwrap without --reveal: only a length.
    let mut args = vec!["kms", "unwrap"];
    args.extend(base);
    args.push("pvc-1");
    let out = run(&args, Some(blob.as_bytes()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("my-volume-passphrase"));
    assert!(!text(&out.stderr).contains("my-volume-passphrase"));
    assert!(
        text(&out.stderr).contains("31 bytes"),
        "{}",
        text(&out.stderr)
    );

    // --reveal prints it; --out writes a 0600 file.
    let mut reveal = args.clone();
    reveal.push("--reveal");
    let out = run(&reveal, Some(blob.as_bytes()));
    assert_eq!(
        text(&out.stdout).trim_end(),
        "my-volume-passphrase-0123456789"
    );
    let keyfile = dir.path().join("key.out");
    let kf = keyfile.display().to_string();
    let mut to_file = args.clone();
    to_file.extend(["--out", &kf]);
    let out = run(&to_file, Some(blob.as_bytes()));
    assert!(out.status.success());
    assert_eq!(std::fs::read(&keyfile).unwrap(), key);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&keyfile).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // rewrap: a new blob for the same key.
    let mut rewrap = vec!["kms", "rewrap"];
    rewrap.extend(base);
    rewrap.push("pvc-1");
    let out = run(&rewrap, Some(blob.as_bytes()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let blob2 = text(&out.stdout);
    assert_ne!(blob2.trim(), blob.trim());
    assert!(!blob2.contains("my-volume-passphrase"));
    let out = run(&reveal, Some(blob2.as_bytes()));
    assert_eq!(
        text(&out.stdout).trim_end(),
        "my-volume-passphrase-0123456789"
    );

    // Replayed for another volume: fails, exit code non-zero, clear message.
    let mut other = vec!["kms", "unwrap"];
    other.extend(base);
    other.push("pvc-2");
    let out = run(&other, Some(blob.as_bytes()));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("integrity"),
        "{}",
        text(&out.stderr)
    );

    // No value on stdin: a clear error, not an empty key.
    let mut args = vec!["kms", "wrap"];
    args.extend(base);
    args.push("pvc-1");
    let out = run(&args, Some(b""));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no input"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn plugins_lists_kms_ids_and_validates() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, secrets) = setup(dir.path());
    let out = run(
        &["plugins", "--config", &cfg, "--secrets-dir", &secrets],
        None,
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("meta\n  type:            metadata"),
        "{stdout}"
    );
    assert!(stdout.contains("secret (embedded)"), "{stdout}");
    assert!(stdout.contains("granted secrets: kek"), "{stdout}");
    assert!(stdout.contains("allowed hosts:   (none)"), "{stdout}");
    assert!(
        stdout.contains("kmsID typo: option encryptionKMSType"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("cli-test-passphrase"),
        "secret value printed"
    );
    assert!(
        !out.status.success(),
        "a broken kmsID must fail the listing"
    );

    let out = run(
        &[
            "plugins",
            "--config",
            &cfg,
            "--secrets-dir",
            &secrets,
            "--validate",
        ],
        None,
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("options:         valid"), "{stdout}");
    assert!(
        stdout.contains("option bogusOption: is not an option of plugin secret (type metadata)"),
        "{stdout}"
    );
}

#[test]
fn plugin_inspect_shows_what_a_reviewer_needs() {
    let out = run(&["plugin", "inspect", SECRET_WASM], None);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    use sha2::Digest;
    let sha = hex::encode(sha2::Sha256::digest(std::fs::read(SECRET_WASM).unwrap()));
    assert!(stdout.contains(&format!("sha256:  {sha}")), "{stdout}");
    assert!(
        stdout.contains("world:   kmshost:plugin/kms-plugin@0.1"),
        "{stdout}"
    );
    assert!(stdout.contains("kmshost:plugin/secrets@0.1.4"), "{stdout}");
    assert!(
        stdout.contains(
            "kmshost:plugin/outbound-http@0.1.4 (instance)  — network: only the kmsID's allowed hosts"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("kmshost:plugin/provider@0.1.4"), "{stdout}");
    assert!(stdout.contains("loads:   yes"), "{stdout}");
    // The manifest, as an admin needs it: types, capabilities, options
    // and what the host does with each.
    for line in [
        "manifest: secret (contract 0.1.4)",
        "  type kubernetes-secret: store, service-account token",
        "  type metadata: wrap",
        "  secretName [Secret] required (types metadata) — the Secret is granted",
        "  kubernetesCAFromSecret [TlsCa] (types kubernetes-secret) — read by the host, never passed to the plugin",
    ] {
        assert!(stdout.contains(line), "{line:?} missing:\n{stdout}");
    }

    // A plugin without one is said to have none; one with a broken one
    // will not load.
    let out = run(&["plugin", "inspect", TRAPPER], None);
    assert!(
        text(&out.stdout).contains("manifest: none"),
        "{}",
        text(&out.stdout)
    );
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.wasm");
    let bad = serde_json::json!({"manifest": 1, "contract": "0.1.0", "name": "x", "types": {}});
    std::fs::write(
        &broken,
        common::with_manifest(&std::fs::read(TRAPPER).unwrap(), &bad),
    )
    .unwrap();
    let out = run(&["plugin", "inspect", &broken.display().to_string()], None);
    let stdout = text(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("loads:   NO, it will not load: it has an invalid manifest: manifest types: must name at least one type"),
        "{stdout}"
    );

    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm").unwrap();
    let out = run(&["plugin", "inspect", &junk.display().to_string()], None);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not a loadable component"),
        "{}",
        text(&out.stderr)
    );
}

/// The README's lifecycle: `kmshost csi` serving, `kmshost volume` calling.
///
/// Long by design: one scenario end to end, each step checked where it happens.
#[test]
fn csi_driver_and_volume_commands_run_a_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, secrets) = setup(dir.path());
    let endpoint = format!("unix://{}", dir.path().join("csi.sock").display());
    let data = dir.path().join("data").display().to_string();
    // The driver's log goes to a file so a failed step can show it.
    let log_path = dir.path().join("driver.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut driver = Command::new(BIN)
        .args(["csi", "--config", &cfg, "--secrets-dir", &secrets])
        .args([
            "--endpoint",
            &endpoint,
            "--data-dir",
            &data,
            "--node-id",
            "n1",
        ])
        .env("KMSHOST_CACHE_DIR", cache())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = driver.id();
    let vol = |args: &[&str]| -> Output {
        let mut a = vec!["volume", "--endpoint", endpoint.as_str()];
        a.extend_from_slice(args);
        run(&a, None)
    };
    let ok = |out: Output| -> String {
        assert!(
            out.status.success(),
            "{}\ndriver {}:\n{}",
            text(&out.stderr),
            std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default(),
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        text(&out.stdout).trim().to_string()
    };
    // Wait for the socket.
    let mut probe = String::new();
    for _ in 0..100 {
        let out = vol(&["probe"]);
        if out.status.success() {
            probe = text(&out.stdout);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Clients that hang up before the driver answers never take it down
    // (a write to their closed socket must not end the process).
    for _ in 0..20 {
        drop(std::os::unix::net::UnixStream::connect(dir.path().join("csi.sock")).unwrap());
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(
        vol(&["probe"]).status.success(),
        "driver died: {}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    // setup() configures two broken kmsIDs: not ready until they are fixed.
    assert!(
        probe.contains("kmshost.csi.k8s.io") && probe.contains("ready=false"),
        "{probe}"
    );
    std::fs::write(
        &cfg,
        json!({"meta": {"encryptionKMSType": "metadata", "secretName": "kek"}}).to_string(),
    )
    .unwrap();
    assert!(ok(vol(&["probe"])).contains("ready=true"));

    let id = ok(vol(&["create", "pvc-cli", "--size", "24Mi"]));
    assert!(id.starts_with("kh-vol-"), "{id}");
    let staging = dir.path().join("staging").display().to_string();
    let target = dir.path().join("pod").display().to_string();
    ok(vol(&["stage", &id, &staging]));
    ok(vol(&["publish", &id, &staging, &target]));
    std::fs::write(Path::new(&target).join("f"), b"via the CLI").unwrap();
    ok(vol(&["unpublish", &id, &target]));
    ok(vol(&["unstage", &id, &staging]));
    let listed = ok(vol(&["list"]));
    assert!(
        listed.contains(&id) && listed.contains("encrypted=false"),
        "{listed}"
    );

    let enc = ok(vol(&[
        "create",
        "pvc-cli-enc",
        "--size",
        "24Mi",
        "-p",
        "encrypted=true",
        "-p",
        "encryptionKMSID=meta",
    ]));
    ok(vol(&["rotate-key", &enc]));
    let snap = ok(vol(&["snapshot", "snap-cli", &enc]));
    let restored = ok(vol(&[
        "create",
        "pvc-cli-restored",
        "-p",
        "encrypted=true",
        "-p",
        "encryptionKMSID=meta",
        "--from-snapshot",
        &snap,
    ]));
    assert!(restored.starts_with("kh-vol-"));

    // Errors carry the CSI status and name what is wrong.
    let bad = vol(&[
        "create",
        "pvc-bad",
        "-p",
        "encrypted=true",
        "-p",
        "encryptionKMSID=nope",
    ]);
    assert!(!bad.status.success());
    let err = text(&bad.stderr);
    assert!(
        err.contains("nope") && err.contains("not configured"),
        "{err}"
    );

    for v in [&id, &enc, &restored] {
        ok(vol(&["delete", v]));
    }
    ok(vol(&["delete-snapshot", &snap]));
    assert_eq!(ok(vol(&["list"])), "");
    driver.kill().unwrap();
    driver.wait().unwrap();
    // libcryptsetup's messages go through the log, not straight to stderr:
    // unstaging an unencrypted volume (no device-mapper here) prints none.
    let stderr = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        stderr.lines().all(|l| !l.starts_with("Cannot initialize")),
        "{stderr}"
    );
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Binary keys are wrapped byte for byte (`--in FILE` or stdin); `--text`
/// is the one explicit way to drop a trailing line ending.
#[test]
fn kms_wrap_keeps_binary_keys_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, secrets) = setup(dir.path());
    // Through `metadata` the blob is opaque: the round trip is the check.
    let base = |op: &'static str, id: &'static str| -> Vec<String> {
        [
            op,
            "--config",
            &cfg,
            "--secrets-dir",
            &secrets,
            "--kms-id",
            "meta",
            id,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let unwrap_to_file = |blob: &[u8], name: &str| -> Vec<u8> {
        let out_file = dir.path().join(name);
        let mut a = vec!["kms".to_string()];
        a.extend(base("unwrap", "pvc-b"));
        a.extend(["--out".into(), out_file.display().to_string()]);
        let out = run(&strs(&a), Some(blob));
        assert!(out.status.success(), "{}", text(&out.stderr));
        std::fs::read(out_file).unwrap()
    };
    let key = b"abc\n\n\r\n\x00\xff";
    let key_file = dir.path().join("key.bin");
    std::fs::write(&key_file, key).unwrap();
    let mut a = vec!["kms".to_string()];
    a.extend(base("wrap", "pvc-b"));
    a.extend(["--in".into(), key_file.display().to_string()]);
    let out = run(&strs(&a), None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(unwrap_to_file(&out.stdout, "from-file"), key);

    // On stdin too; with --text exactly one line ending goes.
    let mut a = vec!["kms".to_string()];
    a.extend(base("wrap", "pvc-b"));
    let out = run(&strs(&a), Some(b"abc\n\n"));
    assert_eq!(unwrap_to_file(&out.stdout, "stdin"), b"abc\n\n");
    a.push("--text".into());
    let out = run(&strs(&a), Some(b"abc\r\n"));
    assert_eq!(unwrap_to_file(&out.stdout, "text"), b"abc");
}

/// `--out` always leaves a 0600 file and never writes through a symlink.
#[test]
fn key_files_are_0600_and_never_follow_symlinks() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, secrets) = setup(dir.path());
    let base = [
        "--config",
        &cfg,
        "--secrets-dir",
        &secrets,
        "--kms-id",
        "meta",
        "pvc-1",
    ];
    let mut wrap = vec!["kms", "wrap"];
    wrap.extend(base);
    let blob = run(&wrap, Some(b"file-mode-key")).stdout;
    let unwrap_to = |target: &Path| {
        let t = target.display().to_string();
        let mut a = vec!["kms", "unwrap"];
        a.extend(base);
        a.extend(["--out", &t]);
        let out = run(&a, Some(&blob));
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    // An existing world-readable file: replaced by a 0600 one.
    let existing = dir.path().join("existing.key");
    std::fs::write(&existing, "old").unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o644)).unwrap();
    unwrap_to(&existing);
    let meta = std::fs::metadata(&existing).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read(&existing).unwrap(), b"file-mode-key");
    // A symlink planted at the target: the file it points to is untouched.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "victim data").unwrap();
    let link = dir.path().join("link.key");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    unwrap_to(&link);
    assert_eq!(std::fs::read(&victim).unwrap(), b"victim data");
    let meta = std::fs::symlink_metadata(&link).unwrap();
    assert!(meta.is_file(), "the link was replaced by a regular file");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read(&link).unwrap(), b"file-mode-key");
}

/// A component that imports what the host does not provide exports the
/// provider all the same: inspect says it will not load, and why, with the
/// same check as loading, and exits non-zero.
#[test]
fn plugin_inspect_says_a_plugin_will_not_load() {
    let out = run(&["plugin", "inspect", STRAY_IMPORT], None);
    let stdout = text(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("world:   kmshost:plugin/kms-plugin@0.1"),
        "{stdout}"
    );
    assert!(stdout.contains("loads:   NO, it will not load"), "{stdout}");
    assert!(stdout.contains("acme:stray/backdoor"), "{stdout}");
}

/// Failures exit with a code per class (README: "Exit codes"), print one
/// `error:` line without a backtrace even with `RUST_BACKTRACE=1`, and a
/// closed stdout ends the process quietly instead of a panic.
///
/// Long by design: one scenario end to end, each step checked where it happens.
#[test]
fn exit_codes_name_the_class_and_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, secrets) = setup(dir.path());
    let kms_args = |op: &'static str, id: &'static str, volume: &'static str| -> Vec<String> {
        [
            "kms",
            op,
            "--config",
            &cfg,
            "--secrets-dir",
            &secrets,
            "--kms-id",
            id,
            volume,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let blob = run(
        &strs(&kms_args("wrap", "meta", "pvc-1")),
        Some(b"exit-code-key"),
    )
    .stdout;
    let code = |args: Vec<String>, stdin: Option<&[u8]>| {
        let out = Command::new(BIN)
            .args(&args)
            .env("KMSHOST_CACHE_DIR", cache())
            .env("RUST_BACKTRACE", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                if let Some(s) = stdin {
                    c.stdin.take().unwrap().write_all(s)?;
                }
                c.wait_with_output()
            })
            .unwrap();
        let err = text(&out.stderr);
        assert!(!err.to_lowercase().contains("backtrace"), "{err}");
        assert_eq!(
            err.lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "{err}"
        );
        out.status.code()
    };
    // Replayed for another volume: integrity.
    assert_eq!(
        code(kms_args("unwrap", "meta", "pvc-2"), Some(&blob)),
        Some(7)
    );
    // An unknown kmsID: configuration.
    assert_eq!(code(kms_args("wrap", "nope", "pvc-1"), Some(b"k")), Some(3));
    // A kmsID whose option the plugin refuses: configuration too.
    assert_eq!(code(kms_args("wrap", "bad", "pvc-1"), Some(b"k")), Some(3));

    // `kmshost plugins … | head -c 1`: no panic when the reader goes away.
    // 2,000 kmsIDs make a report larger than a pipe's buffer, so writes go
    // on after the reader is gone.
    let many = dir.path().join("many.json");
    let entries: serde_json::Map<String, serde_json::Value> = (0..2000)
        .map(|i| {
            (
                format!("meta-{i}"),
                json!({"encryptionKMSType": "metadata", "secretName": "kek"}),
            )
        })
        .collect();
    std::fs::write(&many, serde_json::Value::Object(entries).to_string()).unwrap();
    let many = many.display().to_string();
    let mut child = Command::new(BIN)
        .args(["plugins", "--config", &many, "--secrets-dir", &secrets])
        .env("KMSHOST_CACHE_DIR", cache())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Read;
        let mut first = [0u8; 1];
        let mut stdout = child.stdout.take().unwrap();
        stdout.read_exact(&mut first).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
}

/// `kmshost csi --rbd-cluster-config`: a cluster config ceph-csi would
/// refuse stops the driver at start, naming the flag and the entry.
#[test]
fn csi_with_a_bad_rbd_cluster_config_names_the_flag_and_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, secrets) = setup(dir.path());
    let clusters = dir.path().join("ceph-csi-config.json");
    std::fs::write(&clusters, r#"[{"clusterID": "rook-ceph", "monitors": []}]"#).unwrap();
    let endpoint = format!("unix://{}", dir.path().join("csi.sock").display());
    let out = run(
        &[
            "csi",
            "--config",
            &cfg,
            "--secrets-dir",
            &secrets,
            "--endpoint",
            &endpoint,
            "--data-dir",
            &dir.path().join("data").display().to_string(),
            "--rbd-cluster-config",
            &clusters.display().to_string(),
        ],
        None,
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("--rbd-cluster-config"), "{err}");
    assert!(
        err.contains("clusterID \"rook-ceph\" has no monitors"),
        "{err}"
    );
}
