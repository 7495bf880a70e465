//! The `azure` plugin: Azure Key Vault for ceph-csi's and Rook's `azure-kv`
//! type. Each volume's passphrase is kept as a Key Vault secret named after
//! the volume ID ([`vault`]), exactly where ceph-csi keeps it, so volumes
//! move between the two drivers as they are.
//!
//! Login is Entra ID's client-certificate flow ([`login`]): the plugin
//! builds the JWT client assertion and the host signs it with the
//! certificate's private key, which it reads from `AZURE_CERT_SECRET_NAME`
//! and never hands over (`signing`, contract 0.1.4). The access token is
//! cached by the host for its lifetime.

kmshost_plugin_sdk::manifest!("../kmshost-plugin.json");

pub mod config;
pub mod login;
pub mod vault;

#[cfg(test)]
mod tests;

use config::AzureConfig;
use kmshost_plugin_sdk::{Capabilities, Options, PluginInfo, Provider, Result, export_provider};

/// The configured plugin.
#[derive(Debug)]
pub struct Azure {
    config: AzureConfig,
}

impl Provider for Azure {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "azure".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            capabilities: Capabilities::STORE,
            description: "Azure Key Vault: passphrases as secrets, client-certificate login".into(),
        }
    }

    fn configure(options: &mut Options) -> Result<Self> {
        Ok(Azure {
            config: AzureConfig::from_options(options)?,
        })
    }

    fn get(&self, key_id: &str) -> Result<Vec<u8>> {
        vault::get(&self.config, key_id)
    }

    fn put(&self, key_id: &str, key: &[u8]) -> Result<()> {
        vault::put(&self.config, key_id, key)
    }

    fn delete(&self, key_id: &str) -> Result<()> {
        vault::delete(&self.config, key_id)
    }
}

export_provider!(Azure);
