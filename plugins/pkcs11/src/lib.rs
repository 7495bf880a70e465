//! The `pkcs11` plugin: volume keys wrapped by an AES key inside an HSM
//! (SoftHSM2, Thales Luna, Entrust nShield, any PKCS#11 token), through the
//! host's `hsm` import. The host loads the module, logs into the token and
//! holds the PIN; this plugin only names key labels granted to its kmsID.
//!
//! Blob: `{"kmshost":1,"label":"<key label>","sealed":"<base64 IV ‖
//! ciphertext ‖ tag>"}`, AES-GCM with the volume ID as AAD. Rotation: a new
//! `PKCS11_KEY_LABEL` wraps from then on; labels in `PKCS11_OLD_KEY_LABELS`
//! still unwrap, and each such unwrap hands the host the key rewrapped
//! under the current label (`rewrap.offer`).
//!
//! No store mode: storing volume keys as token objects would make the HSM
//! a database of extractable secrets, which is what wrapping keys avoid.

kmshost_plugin_sdk::manifest!("../kmshost-plugin.json");

#[cfg(test)]
mod tests;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kmshost_plugin_sdk::{
    Capabilities, KmsError, Options, PluginInfo, Provider, Result, export_provider, hsm,
    invalid_config, log, offer_rewrapped,
};

/// The configured plugin.
#[derive(Debug)]
pub struct Pkcs11 {
    current: String,
    old: Vec<String>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Blob {
    kmshost: u32,
    label: String,
    sealed: String,
}

fn labels(v: &str) -> Vec<String> {
    v.split(',')
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

impl Pkcs11 {
    fn seal(&self, key_id: &str, key: &[u8]) -> Result<Vec<u8>> {
        let sealed = hsm::encrypt(&self.current, key, key_id.as_bytes())?;
        serde_json::to_vec(&Blob {
            kmshost: 1,
            label: self.current.clone(),
            sealed: STANDARD.encode(sealed),
        })
        .map_err(|_| KmsError::Other("cannot encode the blob".into()))
    }
}

impl Provider for Pkcs11 {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "pkcs11".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            capabilities: Capabilities::WRAP,
            description: "HSM root keys through PKCS#11: AES-GCM wrapping inside the token".into(),
        }
    }

    fn configure(options: &mut Options) -> Result<Self> {
        let current = options.required("PKCS11_KEY_LABEL")?;
        if labels(&current).len() != 1 {
            return Err(invalid_config(
                "PKCS11_KEY_LABEL",
                "names one key label (earlier ones go in PKCS11_OLD_KEY_LABELS)",
            ));
        }
        let old = labels(&options.or("PKCS11_OLD_KEY_LABELS", ""));
        if old.contains(&current) {
            return Err(invalid_config(
                "PKCS11_OLD_KEY_LABELS",
                format!("lists the current key {current:?}"),
            ));
        }
        Ok(Pkcs11 { current, old })
    }

    fn wrap(&self, key_id: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        self.seal(key_id, plaintext)
    }

    fn unwrap(&self, key_id: &str, ciphertext: &[u8]) -> Result<Vec<u8>> {
        let bad = || KmsError::Integrity("the wrapped key is not a pkcs11 blob".into());
        let b: Blob = serde_json::from_slice(ciphertext).map_err(|_| bad())?;
        if b.kmshost != 1 {
            return Err(bad());
        }
        if b.label != self.current && !self.old.contains(&b.label) {
            return Err(invalid_config(
                "PKCS11_OLD_KEY_LABELS",
                format!(
                    "volume {key_id} was wrapped with key {:?}: list it in PKCS11_OLD_KEY_LABELS to open it",
                    b.label
                ),
            ));
        }
        let sealed = STANDARD.decode(&b.sealed).map_err(|_| bad())?;
        let key = hsm::decrypt(&b.label, &sealed, key_id.as_bytes())?;
        if b.label != self.current {
            // Rotated: hand the host the key under the current label. A
            // refusal leaves the old blob, which still opens.
            match self.seal(key_id, &key).and_then(|n| offer_rewrapped(&n)) {
                Ok(()) => {}
                Err(e) => log::warn(&format!(
                    "volume {key_id}: not rewrapped with key {:?}: {e:?}",
                    self.current
                )),
            }
        }
        Ok(key)
    }
}

export_provider!(Pkcs11);
