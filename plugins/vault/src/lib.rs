//! The `vault` plugin: HashiCorp Vault and OpenBao for ceph-csi's `vault`,
//! `vaulttokens` and `vaulttenantsa` types and Rook's `KMS_PROVIDER: vault`.
//!
//! * Key store (KV v1 and v2): keys are stored exactly where and how
//!   ceph-csi stores them, so existing volumes keep working:
//!   `<backend path>[data/]<vaultPassphrasePath>/<volume ID>` holding
//!   `{"data": {"passphrase": "<key>"}}`.
//! * Envelope (Transit, with `vaultTransitKey`): wrap/unwrap bound to the
//!   volume ID as derived-key context.
//!
//! Token and Kubernetes authentication; the token is kept in the host cache.

kmshost_plugin_sdk::manifest!("../kmshost-plugin.json");

mod auth;
mod config;
mod kv;
mod transit;

use config::VaultConfig;
use kmshost_plugin_sdk::{Capabilities, Options, PluginInfo, Provider, Result, export_provider};

/// The configured plugin.
pub struct Vault {
    config: VaultConfig,
}

impl Provider for Vault {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "vault".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            capabilities: Capabilities::STORE | Capabilities::WRAP,
            description: "HashiCorp Vault / OpenBao: KV v1/v2 key store, Transit envelope".into(),
        }
    }

    fn configure(options: &mut Options) -> Result<Self> {
        Ok(Vault {
            config: VaultConfig::from_options(options)?,
        })
    }

    fn get(&self, key_id: &str) -> Result<Vec<u8>> {
        kv::get(&self.config, key_id)
    }

    fn put(&self, key_id: &str, key: &[u8]) -> Result<()> {
        kv::put(&self.config, key_id, key)
    }

    fn delete(&self, key_id: &str) -> Result<()> {
        kv::delete(&self.config, key_id)
    }

    fn wrap(&self, key_id: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        transit::wrap(&self.config, key_id, plaintext)
    }

    fn unwrap(&self, key_id: &str, ciphertext: &[u8]) -> Result<Vec<u8>> {
        transit::unwrap(&self.config, key_id, ciphertext)
    }
}

export_provider!(Vault);
