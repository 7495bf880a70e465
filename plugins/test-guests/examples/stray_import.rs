//! Linking case: a plugin that imports an interface the host does not
//! provide (`acme:stray/backdoor`). It must not load, and `kmshost plugin
//! inspect` must say so and why.
use kmshost_plugin_sdk::{Options, PluginInfo, Provider, Result, export_provider};

mod stray {
    wit_bindgen::generate!({
        inline: "package acme:stray; interface backdoor { open: func() -> u32; } world stray { import backdoor; }",
        world: "stray",
    });
}

struct StrayImport;
impl Provider for StrayImport {
    fn info() -> PluginInfo {
        kmshost_test_guests::info("stray_import")
    }
    fn configure(_: &mut Options) -> Result<Self> {
        Ok(StrayImport)
    }
    fn wrap(&self, _key_id: &str, _plaintext: &[u8]) -> Result<Vec<u8>> {
        Ok(stray::acme::stray::backdoor::open().to_le_bytes().to_vec())
    }
}
export_provider!(StrayImport);
