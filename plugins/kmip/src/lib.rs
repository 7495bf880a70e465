//! The `kmip` plugin: KMIP servers over the host's TLS streams, for
//! ceph-csi's `kmip` type and Rook's `KMS_PROVIDER: kmip`.
//!
//! * **ceph-csi mode** (envelope; the Secret named by `KMIP_SECRET_NAME`,
//!   default `ceph-csi-kmip-credentials`, holds `UNIQUE_IDENTIFIER`): volume
//!   keys are wrapped with the server's Encrypt/Decrypt under that key
//!   (AES-CBC-PKCS5, random 16-byte IV), or with `USE_CRYPTO_RPC: "false"`
//!   under the key material Get returns, sealed locally ([`envelope`]).
//! * **Rook mode** (key store; the Secret named by Rook's
//!   `tokenSecretName`): volume keys are registered as Secret Data named
//!   after the volume, found with Locate, removed with Revoke and Destroy.
//!
//! The Secret's `CA_CERT`, `CLIENT_CERT` and `CLIENT_KEY` are the host's:
//! it terminates TLS with them, and this plugin cannot read them.

kmshost_plugin_sdk::manifest!("../kmshost-plugin.json");

mod client;
mod envelope;
pub mod kmip;
mod store;
#[cfg(test)]
mod tests;
pub mod ttlv;

use client::Client;
use envelope::Blob;
use kmip::Op;
use kmshost_plugin_sdk::tls::Timeouts;
use kmshost_plugin_sdk::{
    Capabilities, KmsError, Options, PluginInfo, Provider, Result, export_provider, invalid_config,
    secret_string,
};
use zeroize::Zeroizing;

/// ceph-csi's default Secret name.
pub const DEFAULT_SECRET: &str = "ceph-csi-kmip-credentials";
/// The Secret key naming the wrapping key (ceph-csi mode).
pub const UNIQUE_IDENTIFIER: &str = "UNIQUE_IDENTIFIER";
/// ceph-csi's default read and write timeouts, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;

/// How keys are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// ceph-csi: wrapped under `UNIQUE_IDENTIFIER`, kept with the volume.
    Wrap,
    /// Rook: registered on the server as Secret Data.
    Store,
}

/// The configured plugin.
#[derive(Debug)]
pub struct Kmip {
    client: Client,
    secret_name: String,
    /// The option that named the Secret (for errors).
    secret_option: &'static str,
    mode: Mode,
    use_crypto_rpc: bool,
}

fn seconds(options: &mut Options, name: &str) -> Result<u32> {
    let s = options.u64(name, DEFAULT_TIMEOUT_SECS)?;
    if s > 3600 {
        return Err(invalid_config(
            name,
            format!("{s} seconds is more than an hour"),
        ));
    }
    Ok(s as u32 * 1000)
}

impl Kmip {
    /// The key that wraps volume keys (ceph-csi mode).
    fn wrapping_key(&self) -> Result<String> {
        match secret_string(&self.secret_name, UNIQUE_IDENTIFIER) {
            Ok(u) if !u.trim().is_empty() => Ok(u.trim().to_string()),
            Ok(_) | Err(KmsError::NotFound(_)) => Err(invalid_config(
                self.secret_option,
                format!(
                    "Secret {} has no {UNIQUE_IDENTIFIER}: the KMIP key that wraps volume keys",
                    self.secret_name
                ),
            )),
            Err(e) => Err(e),
        }
    }

    fn only_in(&self, mode: Mode, op: &str) -> Result<()> {
        if self.mode == mode {
            return Ok(());
        }
        Err(KmsError::Unsupported(match mode {
            Mode::Wrap => {
                format!("{op}: this kmsID keeps keys on the KMIP server (Rook's tokenSecretName)")
            }
            Mode::Store => format!(
                "{op}: this kmsID wraps keys under {UNIQUE_IDENTIFIER} (ceph-csi's KMIP_SECRET_NAME)"
            ),
        }))
    }

    /// The key material of the symmetric key `uid` (local crypto).
    fn key_material(&self, uid: &str) -> Result<Zeroizing<Vec<u8>>> {
        let payload = self.client.call(Op::Get, |_| kmip::by_uid(uid))?;
        kmip::key_material(&payload, 0x02).map(Zeroizing::new)
    }

    fn server_crypt(
        &self,
        op: Op,
        uid: &str,
        data: &[u8],
        iv: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let payload = self.client.call(op, |_| kmip::crypt(uid, data, iv))?;
        kmip::data(&payload, op).map(Zeroizing::new)
    }
}

impl Provider for Kmip {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "kmip".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            capabilities: Capabilities::WRAP | Capabilities::STORE,
            description:
                "KMIP 1.x/2.x: Encrypt/Decrypt envelope (ceph-csi), Secret Data store (Rook)".into(),
        }
    }

    fn configure(options: &mut Options) -> Result<Self> {
        let endpoint = options.required("KMIP_ENDPOINT")?;
        let rook = options.take("tokenSecretName");
        let csi = options.take("KMIP_SECRET_NAME");
        let (mode, secret_option) = match rook {
            Some(_) => (Mode::Store, "tokenSecretName"),
            None => (Mode::Wrap, "KMIP_SECRET_NAME"),
        };
        let secret_name = rook.or(csi).unwrap_or_else(|| DEFAULT_SECRET.into());
        let timeouts = Timeouts {
            connect_ms: 0,
            read_ms: seconds(options, "READ_TIMEOUT")?,
            write_ms: seconds(options, "WRITE_TIMEOUT")?,
        };
        let use_crypto_rpc = options.bool("USE_CRYPTO_RPC", true)?;
        Ok(Kmip {
            client: Client { endpoint, timeouts },
            secret_name,
            secret_option,
            mode,
            use_crypto_rpc,
        })
    }

    fn wrap(&self, key_id: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        self.only_in(Mode::Wrap, "wrap")?;
        let uid = self.wrapping_key()?;
        let blob = if self.use_crypto_rpc {
            let k = envelope::random(32)?;
            let iv = envelope::random(envelope::IV_LEN)?;
            let dek = self.server_crypt(Op::Encrypt, &uid, &k, &iv)?;
            let (n, ct) = envelope::seal(&k, key_id, plaintext, true)?;
            Blob {
                kmshost: Some(1),
                dek: dek.to_vec(),
                nonce: iv.to_vec(),
                sealed: [n, ct].concat(),
            }
        } else {
            let key = self.key_material(&uid)?;
            let (n, ct) = envelope::seal(&key, key_id, plaintext, true)?;
            Blob {
                kmshost: Some(1),
                dek: ct,
                nonce: n,
                sealed: Vec::new(),
            }
        };
        Ok(blob.to_bytes())
    }

    fn unwrap(&self, key_id: &str, ciphertext: &[u8]) -> Result<Vec<u8>> {
        self.only_in(Mode::Wrap, "unwrap")?;
        let blob = Blob::parse(ciphertext)?;
        let uid = self.wrapping_key()?;
        if blob.is_ceph_csi() {
            kmshost_plugin_sdk::log::warn(&format!(
                "{key_id}: unwrapping a blob written by ceph-csi (not bound to its volume)"
            ));
            return match self.use_crypto_rpc {
                true => Ok(self
                    .server_crypt(Op::Decrypt, &uid, &blob.dek, &blob.nonce)?
                    .to_vec()),
                false => {
                    let key = self.key_material(&uid)?;
                    Ok(envelope::open(&key, key_id, &blob.nonce, &blob.dek, false)?.to_vec())
                }
            };
        }
        if blob.sealed.is_empty() {
            let key = self.key_material(&uid)?;
            return Ok(envelope::open(&key, key_id, &blob.nonce, &blob.dek, true)?.to_vec());
        }
        let (n, ct) = envelope::split_sealed(&blob.sealed)?;
        let k = self.server_crypt(Op::Decrypt, &uid, &blob.dek, &blob.nonce)?;
        Ok(envelope::open(&k, key_id, n, ct, true)?.to_vec())
    }

    fn get(&self, key_id: &str) -> Result<Vec<u8>> {
        self.only_in(Mode::Store, "get")?;
        store::get(&self.client, key_id)
    }

    fn put(&self, key_id: &str, key: &[u8]) -> Result<()> {
        self.only_in(Mode::Store, "put")?;
        store::put(&self.client, key_id, key)
    }

    fn delete(&self, key_id: &str) -> Result<()> {
        self.only_in(Mode::Store, "delete")?;
        store::delete(&self.client, key_id)
    }
}

export_provider!(Kmip);
