//! The `keyprotect` plugin: IBM Key Protect and Hyper Protect Crypto
//! Services (and on-premises instances of the same API), for ceph-csi's
//! `ibmkeyprotect` type and Rook's `KMS_PROVIDER: ibmkeyprotect`.
//!
//! * **Envelope (ceph-csi)**, when the Secret holds
//!   `IBM_KP_CUSTOMER_ROOT_KEY`: volume keys are wrapped with that root key,
//!   bound to the volume ID as AAD ([`envelope`]).
//! * **Store (Rook)**, when it does not: volume keys are imported as
//!   standard keys named after the volume ([`store`]).
//!
//! The API key is exchanged at IAM for a token the host caches ([`iam`]).
//! After a root-key rotation, an unwrap's rewrapped ciphertext is handed
//! to the host (`rewrap.offer`, contract 0.1.2), which keeps it with the
//! volume.

kmshost_plugin_sdk::manifest!("../kmshost-plugin.json");

pub mod api;
pub mod config;
pub mod envelope;
pub mod iam;
pub mod store;
#[cfg(test)]
mod tests;

use config::{KpConfig, ROOT_KEY};
use kmshost_plugin_sdk::{
    Capabilities, KmsError, Options, PluginInfo, Provider, Result, export_provider, invalid_config,
};

/// The configured plugin.
#[derive(Debug)]
pub struct KeyProtect {
    config: KpConfig,
}

impl KeyProtect {
    /// The root key, for an envelope operation.
    fn root_key(&self, op: &str) -> Result<String> {
        match self.config.root_key()? {
            Some(k) => Ok(k),
            None if op == "wrap" => Err(KmsError::Unsupported(format!(
                "wrap: Secret {} has no {ROOT_KEY}, so this kmsID stores keys in Key Protect as imported standard keys (Rook)",
                self.config.secret_name
            ))),
            None => Err(invalid_config(
                "IBM_KP_SECRET_NAME",
                format!(
                    "Secret {} has no {ROOT_KEY}: the root key this volume's key was wrapped with",
                    self.config.secret_name
                ),
            )),
        }
    }

    /// Refuses store operations on an envelope kmsID.
    fn store_mode(&self, op: &str) -> Result<()> {
        match self.config.root_key()? {
            None => Ok(()),
            Some(k) => Err(KmsError::Unsupported(format!(
                "{op}: this kmsID wraps keys with root key {k} (ceph-csi); keys are not stored in Key Protect"
            ))),
        }
    }
}

impl Provider for KeyProtect {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "keyprotect".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            capabilities: Capabilities::STORE | Capabilities::WRAP,
            description: "IBM Key Protect / HPCS: root-key wrapping, imported standard keys".into(),
        }
    }

    fn configure(options: &mut Options) -> Result<Self> {
        Ok(KeyProtect {
            config: KpConfig::from_options(options)?,
        })
    }

    fn get(&self, key_id: &str) -> Result<Vec<u8>> {
        self.store_mode("get")?;
        store::get(&self.config, key_id)
    }

    fn put(&self, key_id: &str, key: &[u8]) -> Result<()> {
        self.store_mode("put")?;
        store::put(&self.config, key_id, key)
    }

    fn delete(&self, key_id: &str) -> Result<()> {
        self.store_mode("delete")?;
        store::delete(&self.config, key_id)
    }

    fn wrap(&self, key_id: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let root = self.root_key("wrap")?;
        envelope::wrap(&self.config, &root, key_id, plaintext)
    }

    fn unwrap(&self, key_id: &str, ciphertext: &[u8]) -> Result<Vec<u8>> {
        let root = self.root_key("unwrap")?;
        let u = envelope::unwrap(&self.config, &root, key_id, ciphertext)?;
        // After a root-key rotation: hand the host the key wrapped under the
        // newest version. A refusal leaves the old blob, which still works.
        if let Some(blob) = &u.rewrapped
            && let Err(e) = kmshost_plugin_sdk::offer_rewrapped(blob)
        {
            kmshost_plugin_sdk::log::warn(&format!(
                "volume {key_id}: the host did not take the rewrapped key: {e:?}"
            ));
        }
        Ok(u.key.to_vec())
    }
}

export_provider!(KeyProtect);
