//! Conformance case: a key store that panics whenever its backend fails
//! (gone, answering too much, never answering) instead of reporting an
//! error the host can act on. `get(id)` GETs `<ENDPOINT>/<id>` and returns
//! the body. `kmshost plugin test` must fail it; the sandbox stops it as a
//! trap and the host goes on.
use kmshost_plugin_sdk::http::Request;
use kmshost_plugin_sdk::{Capabilities, Options, PluginInfo, Provider, Result, export_provider};

struct Fragile {
    endpoint: String,
}

impl Provider for Fragile {
    fn info() -> PluginInfo {
        PluginInfo {
            capabilities: Capabilities::STORE,
            ..kmshost_test_guests::info("fragile")
        }
    }
    fn configure(options: &mut Options) -> Result<Self> {
        Ok(Fragile {
            endpoint: options.required("ENDPOINT")?,
        })
    }
    fn get(&self, key_id: &str) -> Result<Vec<u8>> {
        let r = Request::get(format!("{}/{key_id}", self.endpoint))
            .send()
            .unwrap_or_else(|e| panic!("the backend failed: {e:?}"));
        Ok(r.body.clone())
    }
}
export_provider!(Fragile);
