//! Memory case: `wrap(key_id)` allocates and touches `key_id` MiB.
use kmshost_plugin_sdk::{Options, PluginInfo, Provider, Result, export_provider};

struct Hog;
impl Provider for Hog {
    fn info() -> PluginInfo {
        kmshost_test_guests::info("memory_hog")
    }
    fn configure(_: &mut Options) -> Result<Self> {
        Ok(Hog)
    }
    fn wrap(&self, key_id: &str, _plaintext: &[u8]) -> Result<Vec<u8>> {
        let mib: usize = key_id.parse().unwrap_or(0);
        let mut chunks = Vec::new();
        for _ in 0..mib {
            chunks.push(vec![0xA5u8; 1 << 20]);
        }
        let total: usize = chunks.iter().map(|c| c[c.len() - 1] as usize).sum();
        Ok(total.to_le_bytes().to_vec())
    }
}
export_provider!(Hog);
