//! Deadline case: `wrap(key_id)` busy-loops for `key_id` iterations
//! (`forever` never stops), then echoes the plaintext.
use kmshost_plugin_sdk::{Options, PluginInfo, Provider, Result, export_provider};

struct Spin;
impl Provider for Spin {
    fn info() -> PluginInfo {
        kmshost_test_guests::info("spin")
    }
    fn configure(_: &mut Options) -> Result<Self> {
        Ok(Spin)
    }
    fn wrap(&self, key_id: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let n: u64 = if key_id == "forever" {
            u64::MAX
        } else {
            key_id.parse().unwrap_or(0)
        };
        let mut acc = 0u64;
        let mut i = 0u64;
        while i < n {
            acc = std::hint::black_box(acc.wrapping_mul(31).wrapping_add(i));
            i += 1;
        }
        std::hint::black_box(acc);
        Ok(plaintext.to_vec())
    }
}
export_provider!(Spin);
