//! Trap case: `wrap("panic")` panics, `wrap("unreachable")` executes an
//! unreachable instruction, anything else echoes.
use kmshost_plugin_sdk::{Options, PluginInfo, Provider, Result, export_provider};

struct Trapper;
impl Provider for Trapper {
    fn info() -> PluginInfo {
        kmshost_test_guests::info("trapper")
    }
    fn configure(_: &mut Options) -> Result<Self> {
        Ok(Trapper)
    }
    fn wrap(&self, key_id: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        match key_id {
            "panic" => panic!("trapper was asked to panic"),
            "unreachable" => std::process::abort(),
            _ => Ok(plaintext.to_vec()),
        }
    }
}
export_provider!(Trapper);
