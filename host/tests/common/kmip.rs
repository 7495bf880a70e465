//! A real KMIP server for tests: PyKMIP (PyPI `pykmip`, installed by
//! scripts/test.sh into target/peers-venv), with mutual TLS over a test
//! PKI. PyKMIP speaks TLS 1.2 with ECDSA suites only, so every certificate
//! here is ECDSA P-256 (`../shared/PEERS.md`).
//!
//! One server per test binary ([`shared`]): it is started once, by a
//! thread that lives as long as the process, and dies with it
//! (`PR_SET_PDEATHSIG`).

use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The venv's `bin` directory holding `pykmip-server` and `python`.
pub fn pykmip_bin() -> Option<PathBuf> {
    let dir = match std::env::var_os("KMSHOST_PYKMIP") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/peers-venv/bin"),
    };
    dir.join("pykmip-server").exists().then_some(dir)
}

/// The venv's bin directory, or: panics if peers are required
/// (`KMSHOST_REQUIRE_PEERS=1`, as scripts/test.sh sets), else says loudly
/// that the test is skipped.
pub fn require_pykmip(test: &str) -> Option<PathBuf> {
    match pykmip_bin() {
        Some(p) => Some(p),
        None if std::env::var_os("KMSHOST_REQUIRE_PEERS").is_some() => {
            panic!("{test}: PyKMIP is required but not installed (run scripts/test.sh)")
        }
        None => {
            eprintln!("SKIPPED {test}: PyKMIP not installed (scripts/test.sh installs it)");
            None
        }
    }
}

/// The test PKI, all PEM: a CA, the server's certificate (localhost,
/// 127.0.0.1), a client certificate from the CA, and a client certificate
/// from another CA (which the server must refuse).
pub struct KmipPki {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
    pub rogue_cert_pem: String,
    pub rogue_key_pem: String,
}

fn ca(name: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    (cert, Issuer::new(params, key))
}

fn client(issuer: &Issuer<'_, KeyPair>, cn: &str) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A fresh PKI (ECDSA P-256: rcgen's default key).
pub fn kmip_pki() -> KmipPki {
    let (ca_cert, issuer) = ca("kmshost test CA");
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = params.signed_by(&key, &issuer).unwrap();
    let (client_cert_pem, client_key_pem) = client(&issuer, "kmshost");
    let (_, rogue_issuer) = ca("rogue CA");
    let (rogue_cert_pem, rogue_key_pem) = client(&rogue_issuer, "kmshost");
    KmipPki {
        ca_pem: ca_cert.pem(),
        server_cert_pem: server.pem(),
        server_key_pem: key.serialize_pem(),
        client_cert_pem,
        client_key_pem,
        rogue_cert_pem,
        rogue_key_pem,
    }
}

/// A running PyKMIP server.
pub struct PyKmip {
    pub port: u16,
    pub pki: KmipPki,
    bin: PathBuf,
    dir: PathBuf,
    pid: u32,
}

impl PyKmip {
    /// `127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates and activates an AES-256 key with PyKMIP's own client (the
    /// same client identity the tests give kmshost, so the server's
    /// ownership policy lets both use it); returns its unique identifier.
    pub fn create_aes_key(&self) -> String {
        self.client_script(
            "uid = c.create(enums.CryptographicAlgorithm.AES, 256)\nc.activate(uid)\nprint(uid)",
        )
    }

    /// Runs `body` with `c`, an open PyKMIP client of the test identity,
    /// and returns its last line of output.
    pub fn client_script(&self, body: &str) -> String {
        let script = format!(
            "import warnings\nwarnings.filterwarnings('ignore')\n\
             from kmip.pie import client\nfrom kmip import enums\n\
             c = client.ProxyKmipClient(hostname='127.0.0.1', port={port}, cert='{d}/client.pem', key='{d}/client.key', ca='{d}/ca.pem', config_file='/dev/null', kmip_version=enums.KMIPVersion.KMIP_1_4)\n\
             c.open()\n{body}\nc.close()\n",
            port = self.port,
            d = self.dir.display(),
        );
        let out = Command::new(self.bin.join("python"))
            .arg("-c")
            .arg(script)
            .output()
            .expect("running PyKMIP's client");
        assert!(
            out.status.success(),
            "PyKMIP client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Stops the server at once (SIGKILL: PyKMIP takes seconds to stop on
    /// SIGTERM).
    pub fn kill(&self) {
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

fn write_config(dir: &Path, port: u16, pki: &KmipPki) {
    for (name, pem) in [
        ("ca.pem", &pki.ca_pem),
        ("server.pem", &pki.server_cert_pem),
        ("server.key", &pki.server_key_pem),
        ("client.pem", &pki.client_cert_pem),
        ("client.key", &pki.client_key_pem),
    ] {
        std::fs::write(dir.join(name), pem).unwrap();
    }
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    let d = dir.display();
    std::fs::write(
        dir.join("server.conf"),
        format!(
            "[server]\nhostname=127.0.0.1\nport={port}\ncertificate_path={d}/server.pem\n\
             key_path={d}/server.key\nca_path={d}/ca.pem\nauth_suite=TLS1.2\n\
             enable_tls_client_auth=True\ndatabase_path={d}/db.sqlite\npolicy_path={d}/policies\n\
             logging_level=INFO\n"
        ),
    )
    .unwrap();
}

/// Starts a server on a free port; waits until it accepts connections.
fn start(bin: PathBuf) -> PyKmip {
    let pki = kmip_pki();
    let dir = tempfile::tempdir().unwrap().keep();
    let port = super::free_port();
    write_config(&dir, port, &pki);
    let (tx, rx) = std::sync::mpsc::channel();
    let (server, conf, log) = (
        bin.join("pykmip-server"),
        dir.join("server.conf"),
        dir.join("server.log"),
    );
    // The child dies with the thread that spawned it: a thread that lives
    // as long as the child, or the test process.
    std::thread::spawn(move || {
        let mut cmd = Command::new(server);
        cmd.arg("-f").arg(conf).arg("-l").arg(log);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("starting pykmip-server");
        tx.send(child.id()).unwrap();
        // Waiting keeps this thread (and so the server) alive, and reaps
        // the server when it is killed.
        let _ = child.wait();
    });
    let pid = rx.recv().unwrap();
    let s = PyKmip {
        port,
        pki,
        bin,
        dir,
        pid,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if s.log().contains("Starting connection service")
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    s.kill();
    panic!("PyKMIP did not start within 30 s: {}", s.log())
}

/// The binary's one PyKMIP server (started on first use).
pub fn shared(bin: PathBuf) -> Arc<PyKmip> {
    static SERVER: OnceLock<Arc<PyKmip>> = OnceLock::new();
    SERVER.get_or_init(|| Arc::new(start(bin))).clone()
}

/// A separate server (for tests that stop theirs).
pub fn own(bin: PathBuf) -> PyKmip {
    start(bin)
}
