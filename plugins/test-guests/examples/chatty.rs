//! Output case: `wrap(key_id)` writes `key_id` KiB to stdout and stderr and
//! logs through the host's log interface; the host must capture it, bounded.
use kmshost_plugin_sdk::{Options, PluginInfo, Provider, Result, export_provider, log};
use std::io::Write;

struct Chatty;
impl Provider for Chatty {
    fn info() -> PluginInfo {
        kmshost_test_guests::info("chatty")
    }
    fn configure(_: &mut Options) -> Result<Self> {
        Ok(Chatty)
    }
    fn wrap(&self, key_id: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let kib: usize = key_id.parse().unwrap_or(0);
        let line = [b'x'; 1023];
        for _ in 0..kib {
            let mut out = std::io::stdout();
            let _ = out.write_all(&line);
            let _ = out.write_all(b"\n");
            let _ = std::io::stderr().write_all(b"e");
        }
        let _ = std::io::stdout().flush();
        for i in 0..kib {
            log::info(&format!("chatty log line {i}"));
        }
        Ok(plaintext.to_vec())
    }
}
export_provider!(Chatty);
