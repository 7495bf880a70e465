//! Text case: a plugin that floods the host with text. `wrap` does what
//! option `mode` says, or else what its key-id says:
//!
//! - `error`: fails with a 2 MiB error of forged log lines;
//! - `option`: fails with `invalid-config` naming a 200 KiB multi-line option;
//! - `log`: logs a 2 MiB multi-line warning, writes 1 MiB of lines to
//!   stdout, then succeeds;
//! - `quiet`: fails with a short, plain message.
//!
//! Its self-description (`info`) is multi-line and 1 MiB long too.
use kmshost_plugin_sdk::{
    Capabilities, KmsError, Options, PluginInfo, Provider, Result, export_provider, invalid_config,
    log,
};
use std::io::Write;

const FORGED: &str = "2026-01-01T00:00:00Z  WARN kmshost: forged line\n";

struct Loud {
    mode: Option<String>,
}
impl Provider for Loud {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "loud\nWARN forged".into(),
            version: "1\x1b[31m".into(),
            capabilities: Capabilities::WRAP,
            description: FORGED.repeat((1 << 20) / FORGED.len()),
        }
    }
    fn configure(options: &mut Options) -> Result<Self> {
        Ok(Loud {
            mode: options.take("mode"),
        })
    }
    fn wrap(&self, key_id: &str, _plaintext: &[u8]) -> Result<Vec<u8>> {
        let flood = || FORGED.repeat((2 << 20) / FORGED.len());
        match self.mode.as_deref().unwrap_or(key_id) {
            "error" => Err(KmsError::Other(flood())),
            "option" => Err(invalid_config(&"o\n".repeat(100 << 10), flood())),
            "log" => {
                log::warn(&flood());
                let mut out = std::io::stdout();
                for _ in 0..(1 << 20) / FORGED.len() {
                    let _ = out.write_all(FORGED.as_bytes());
                }
                let _ = out.flush();
                Ok(b"logged".to_vec())
            }
            _ => Err(KmsError::Other("plain failure".into())),
        }
    }
}
export_provider!(Loud);
