//! Ambient-authority case: `wrap(_, probe)` tries what a plugin must not have —
//! `env` (environment variables), `fs:<path>` (read a file), `tcp:<addr>`
//! (open a socket) — and returns what it found, or the error text.
use kmshost_plugin_sdk::{Options, PluginInfo, Provider, Result, export_provider};

struct AmbientProbe;
impl Provider for AmbientProbe {
    fn info() -> PluginInfo {
        kmshost_test_guests::info("ambient_probe")
    }
    fn configure(_: &mut Options) -> Result<Self> {
        Ok(AmbientProbe)
    }
    fn wrap(&self, _key_id: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let probe = String::from_utf8_lossy(plaintext).into_owned();
        let key_id = probe.as_str();
        let out = if key_id == "env" {
            let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
            format!("env:{}", vars.join(","))
        } else if let Some(path) = key_id.strip_prefix("fs:") {
            match std::fs::read(path) {
                Ok(b) => format!("read:{}", b.len()),
                Err(e) => format!("error:{e}"),
            }
        } else if let Some(addr) = key_id.strip_prefix("tcp:") {
            match std::net::TcpStream::connect(addr) {
                Ok(_) => "connected".to_string(),
                Err(e) => format!("error:{e}"),
            }
        } else {
            "unknown probe".to_string()
        };
        Ok(out.into_bytes())
    }
}
export_provider!(AmbientProbe);
