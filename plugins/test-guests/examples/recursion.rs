//! Stack case: `wrap(key_id)` recurses `key_id` levels deep on the wasm
//! stack (no locals spill to the linear-memory stack), so the host's
//! `max_wasm_stack` is what stops it.
use kmshost_plugin_sdk::{Options, PluginInfo, Provider, Result, export_provider};

#[inline(never)]
fn depth(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    // Not a tail call: the addition happens after the recursive call returns.
    1 + depth(std::hint::black_box(n - 1))
}

struct Recursion;
impl Provider for Recursion {
    fn info() -> PluginInfo {
        kmshost_test_guests::info("recursion")
    }
    fn configure(_: &mut Options) -> Result<Self> {
        Ok(Recursion)
    }
    fn wrap(&self, key_id: &str, _plaintext: &[u8]) -> Result<Vec<u8>> {
        let n: u64 = key_id.parse().unwrap_or(0);
        Ok(depth(n).to_le_bytes().to_vec())
    }
}
export_provider!(Recursion);
