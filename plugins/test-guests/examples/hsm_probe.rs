//! Host-resource case: the `hsm` import (contract 0.1.3), as option `mode`
//! says; option `label` is the key label it names.
//!
//! - `seal`: wrap = HSM encrypt under `label` with the key-id as AAD; unwrap
//!   = HSM decrypt (obeyed when `label` is granted).
//! - `big`: wrap asks the HSM to seal 5 KiB.
//! - `flood`: wrap calls the HSM 17 times, and fails with the refusal.
use kmshost_plugin_sdk::{Options, PluginInfo, Provider, Result, export_provider, hsm};

struct HsmProbe {
    mode: String,
    label: String,
}

impl Provider for HsmProbe {
    fn info() -> PluginInfo {
        kmshost_test_guests::info("hsm_probe")
    }
    fn configure(options: &mut Options) -> Result<Self> {
        let _ = options.take("KEYS");
        Ok(HsmProbe {
            mode: options.or("mode", "seal"),
            label: options.or("label", "key-1"),
        })
    }
    fn wrap(&self, key_id: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        match self.mode.as_str() {
            "big" => hsm::encrypt(&self.label, &vec![7; 5 << 10], key_id.as_bytes()),
            "flood" => {
                for _ in 0..17 {
                    hsm::encrypt(&self.label, plaintext, key_id.as_bytes())?;
                }
                Ok(Vec::new())
            }
            _ => hsm::encrypt(&self.label, plaintext, key_id.as_bytes()),
        }
    }
    fn unwrap(&self, key_id: &str, ciphertext: &[u8]) -> Result<Vec<u8>> {
        hsm::decrypt(&self.label, ciphertext, key_id.as_bytes())
    }
}

export_provider!(HsmProbe);
