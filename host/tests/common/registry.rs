//! A real OCI registry for tests: Debian's `docker-registry` (2.8) on
//! loopback with filesystem storage, pushed to with PyPI `oras` (oras-py,
//! in the venv scripts/test.sh makes), as a vendor's CI would push.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const REGISTRY: &str = "/usr/bin/docker-registry";

fn python() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/peers-venv/bin/python")
}

/// Whether the registry and the pusher are installed; panics when peers
/// are required (`KMSHOST_REQUIRE_PEERS=1`, as scripts/test.sh sets) and
/// they are not, else says loudly that the test is skipped.
pub fn require_registry(test: &str) -> bool {
    let has_oras = Command::new(python())
        .args(["-c", "import oras.client"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    match (Path::new(REGISTRY).exists(), has_oras) {
        (true, true) => true,
        _ if std::env::var_os("KMSHOST_REQUIRE_PEERS").is_some() => {
            panic!("{test}: docker-registry and oras are required (run scripts/test.sh)")
        }
        _ => {
            eprintln!(
                "SKIPPED {test}: docker-registry or oras not installed (scripts/test.sh installs them)"
            );
            false
        }
    }
}

/// A running registry.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub host: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry on a free loopback port and waits until it answers.
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(REGISTRY)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry");
        let host = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&host).is_err() {
            assert!(Instant::now() < deadline, "registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            child,
            host,
            _dir: dir,
        }
    }

    /// Pushes `wasm` as `repo:tag` with a single `application/wasm` layer;
    /// returns the manifest digest (`sha256:…`).
    pub fn push(&self, wasm: &[u8], repo_tag: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plugin.wasm");
        std::fs::write(&file, wasm).unwrap();
        let script = format!(
            "import oras.client\n\
             c = oras.client.OrasClient(hostname={host:?}, insecure=True)\n\
             r = c.push(target={target:?}, files=['plugin.wasm:application/wasm'], disable_path_validation=True)\n\
             assert r.status_code == 201, r.status_code\n\
             print(r.headers['Docker-Content-Digest'])\n",
            host = self.host,
            target = format!("{}/{repo_tag}", self.host),
        );
        let out = Command::new(python())
            .current_dir(dir.path())
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "oras push: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
