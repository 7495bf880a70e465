//! The container image, built here from this build's binary with
//! `scripts/build-image.sh` (buildah, chroot isolation, vfs storage) and
//! run: its version, every program kmshost runs, a CSI probe and a clean
//! SIGTERM, and a key operation whose plugin runs from the image's
//! precompiled directory, as root (the node plugin) and as the
//! controller's non-root user.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_kmshost");
const TAG: &str = "localhost/kmshost:test";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// buildah over the test's own storage.
struct Buildah {
    root: tempfile::TempDir,
}

impl Buildah {
    fn cmd(&self) -> Command {
        let mut c = Command::new("buildah");
        c.env("STORAGE_DRIVER", "vfs")
            .env("BUILDAH_ISOLATION", "chroot")
            .arg("--root")
            .arg(self.root.path().join("storage"))
            .arg("--runroot")
            .arg(self.root.path().join("run"));
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "buildah {args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout).trim().to_string()
    }

    /// Runs `script` with sh in container `ctr` as `user`.
    fn run(&self, ctr: &str, user: &str, script: &str) -> Output {
        self.cmd()
            .args(["run", "--user", user, ctr, "--", "sh", "-ec", script])
            .output()
            .unwrap()
    }
}

/// Every program host/src names in `run("…"` or `Command::new("…"` (the
/// literal may start on the next line), plus
/// `rbd` (the RBD backend's program is a field, default `rbd`).
fn programs_kmshost_runs() -> Vec<String> {
    let mut found = vec!["rbd".to_string()];
    let mut dirs = vec![repo().join("host/src")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
                continue;
            }
            let src = std::fs::read_to_string(&p).unwrap();
            for marker in ["run(", "Command::new("] {
                for (at, _) in src.match_indices(marker) {
                    let Some(rest) = src[at + marker.len()..].trim_start().strip_prefix('"') else {
                        continue;
                    };
                    let name = &rest[..rest.find('"').unwrap()];
                    if !found.iter().any(|f| f == name) {
                        found.push(name.to_string());
                    }
                }
            }
        }
    }
    found.sort();
    found
}

/// A metadata kmsID and its Secret, readable by any user.
fn test_files(dir: &Path) {
    let kek = dir.join("secrets/kek");
    std::fs::create_dir_all(&kek).unwrap();
    std::fs::write(kek.join("encryptionPassphrase"), "image-test-passphrase").unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"meta": {"encryptionKMSType": "metadata", "secretName": "kek"}}"#,
    )
    .unwrap();
    for d in [dir, &dir.join("secrets"), &kek] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// A wrap through the `meta` kmsID with a fresh compile cache, then the
/// cache's compiled entries (none when the plugin ran precompiled).
const WRAP: &str = "c=$(mktemp -d)/cache
printf image-passphrase-0123456789abcdef | kmshost kms wrap --config /test/config.json \
  --secrets-dir /test/secrets --cache-dir \"$c\" --kms-id meta pvc-image >/dev/null
ls \"$c\" | grep -c cwasm || true";

/// The driver serves, answers a probe, and exits 0 on SIGTERM.
const PROBE: &str = "d=$(mktemp -d)
kmshost csi --config /test/config.json --secrets-dir /test/secrets \
  --endpoint unix://$d/csi.sock --data-dir $d/data --cache-dir $d/cache --node-id image &
pid=$!
ok=no
for i in $(seq 100); do
  if kmshost volume --endpoint unix://$d/csi.sock probe >/dev/null 2>&1; then ok=yes; break; fi
  sleep 0.1
done
echo probe $ok
kill -TERM $pid
wait $pid
echo exited $?";

#[test]
fn the_image_builds_and_runs_the_driver_with_precompiled_plugins() {
    let missing: Vec<_> = ["buildah", "mmdebstrap", "objcopy"]
        .into_iter()
        .filter(|t| Command::new(t).arg("--version").output().is_err())
        .collect();
    assert!(
        missing.is_empty(),
        "{missing:?} missing: scripts/bootstrap.sh installs them"
    );
    let b = Buildah {
        root: tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap(),
    };
    let built = Command::new(repo().join("scripts/build-image.sh"))
        .args(["--binary", BIN, "--tag", TAG, "--root"])
        .arg(b.root.path())
        .output()
        .unwrap();
    let log = text(&built.stdout);
    assert!(built.status.success(), "{log}{}", text(&built.stderr));
    let size = log.lines().last().unwrap_or_default();
    assert!(size.starts_with(&format!("image {TAG} size")), "{log}");
    println!("{size}");

    let ctr = b.ok(&["from", "--quiet", TAG]);
    let version = b.run(&ctr, "0", "kmshost --version");
    let ours = Command::new(BIN).arg("--version").output().unwrap();
    assert_eq!(
        text(&version.stdout),
        text(&ours.stdout),
        "{}",
        text(&version.stderr)
    );

    let programs = programs_kmshost_runs();
    assert!(programs.len() >= 10, "{programs:?}");
    let check = format!(
        "for p in {}; do command -v \"$p\" >/dev/null || echo \"$p\"; done",
        programs.join(" ")
    );
    let out = b.run(&ctr, "0", &check);
    assert_eq!(text(&out.stdout), "", "programs missing from the image");

    let files = tempfile::tempdir().unwrap();
    test_files(files.path());
    b.ok(&[
        "copy",
        "--quiet",
        &ctr,
        &files.path().display().to_string(),
        "/test",
    ]);
    let out = b.run(&ctr, "0", PROBE);
    let said = text(&out.stdout);
    assert!(
        said.contains("probe yes") && said.contains("exited 0"),
        "{said}{}",
        text(&out.stderr)
    );

    // Root (the node plugin) and the controller's user both run the
    // plugin from the image's precompiled entries: nothing is compiled.
    for user in ["0", "65532:65532"] {
        let out = b.run(&ctr, user, WRAP);
        assert!(out.status.success(), "as {user}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), "0", "as {user}: compiled nothing");
    }
    // Without the image's setting the same wrap compiles: the check above
    // can fail.
    let out = b.run(&ctr, "0", &format!("unset KMSHOST_PRECOMPILED_DIR\n{WRAP}"));
    assert_eq!(text(&out.stdout).trim(), "1", "{}", text(&out.stderr));
    b.ok(&["rm", &ctr]);
}
