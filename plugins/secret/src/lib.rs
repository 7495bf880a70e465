//! The `secret` plugin: kmshost's embedded default, needing no KMS server.
//!
//! Two modes, chosen by `encryptionKMSType`:
//!
//! * `metadata` (ceph-csi's type of that name): envelope encryption under a
//!   key-encryption key derived with scrypt from a passphrase kept in a
//!   Kubernetes Secret (`secretName`, key `encryptionPassphrase`). See
//!   [`metadata`].
//! * `kubernetes-secret`: a key store keeping each volume key in its own
//!   Kubernetes Secret, through the API server. See [`store`].

use kmshost_plugin_sdk::{Capabilities, Options, PluginInfo, Provider, Result, export_provider};

kmshost_plugin_sdk::manifest!("../kmshost-plugin.json");

pub mod metadata;
pub mod store;

/// The plugin: one of the two modes.
pub enum SecretPlugin {
    /// ceph-csi `metadata`.
    Metadata(metadata::Metadata),
    /// `kubernetes-secret`.
    Store(store::Store),
}

impl Provider for SecretPlugin {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "secret".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            capabilities: Capabilities::STORE | Capabilities::WRAP,
            description: "passphrase-derived key wrapping (ceph-csi metadata) and Kubernetes Secret key storage".into(),
        }
    }

    fn configure(options: &mut Options) -> Result<Self> {
        let kms_type = options.required("encryptionKMSType")?;
        match kms_type.as_str() {
            "metadata" => Ok(SecretPlugin::Metadata(metadata::Metadata::configure(
                options,
            )?)),
            "kubernetes-secret" => Ok(SecretPlugin::Store(store::Store::configure(options)?)),
            other => Err(kmshost_plugin_sdk::invalid_config(
                "encryptionKMSType",
                format!(
                    "the secret plugin serves `metadata` and `kubernetes-secret`, not {other:?}"
                ),
            )),
        }
    }

    fn get(&self, key_id: &str) -> Result<Vec<u8>> {
        match self {
            SecretPlugin::Store(s) => s.get(key_id),
            SecretPlugin::Metadata(_) => Err(unsupported("get", "metadata")),
        }
    }

    fn put(&self, key_id: &str, key: &[u8]) -> Result<()> {
        match self {
            SecretPlugin::Store(s) => s.put(key_id, key),
            SecretPlugin::Metadata(_) => Err(unsupported("put", "metadata")),
        }
    }

    fn delete(&self, key_id: &str) -> Result<()> {
        match self {
            SecretPlugin::Store(s) => s.delete(key_id),
            SecretPlugin::Metadata(_) => Err(unsupported("delete", "metadata")),
        }
    }

    fn wrap(&self, key_id: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        match self {
            SecretPlugin::Metadata(m) => m.wrap(key_id, plaintext),
            SecretPlugin::Store(_) => Err(unsupported("wrap", "kubernetes-secret")),
        }
    }

    fn unwrap(&self, key_id: &str, ciphertext: &[u8]) -> Result<Vec<u8>> {
        match self {
            SecretPlugin::Metadata(m) => m.unwrap(key_id, ciphertext),
            SecretPlugin::Store(_) => Err(unsupported("unwrap", "kubernetes-secret")),
        }
    }
}

fn unsupported(op: &str, mode: &str) -> kmshost_plugin_sdk::KmsError {
    kmshost_plugin_sdk::KmsError::Unsupported(format!("{op} is not offered by the {mode} mode"))
}

export_provider!(SecretPlugin);
