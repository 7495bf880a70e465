//! Host-resource case: the `signing` import (contract 0.1.4), as option
//! `mode` says; option `name` is the certificate it names.
//!
//! - `sign`: wrap signs the plaintext (RS256) and returns the signature,
//!   then the certificate's x5t#S256 after a `.` (obeyed when `name` is
//!   granted).
//! - `big`: wrap asks for a signature over 8 KiB + 1.
//! - `flood`: wrap signs 9 times, and fails with the refusal.
//! - `steal`: wrap reads key `CLIENT_CERT` of Secret `name` with
//!   `secrets.get`: the certificate's private key, which the host holds.
use kmshost_plugin_sdk::signing::{self, Algorithm};
use kmshost_plugin_sdk::{Options, PluginInfo, Provider, Result, export_provider, secret};

struct SignerProbe {
    mode: String,
    name: String,
}

impl Provider for SignerProbe {
    fn info() -> PluginInfo {
        kmshost_test_guests::info("signer_probe")
    }
    fn configure(options: &mut Options) -> Result<Self> {
        let _ = options.take("CERT");
        Ok(SignerProbe {
            mode: options.or("mode", "sign"),
            name: options.or("name", "cert"),
        })
    }
    fn wrap(&self, _key_id: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        match self.mode.as_str() {
            "big" => signing::sign(&self.name, Algorithm::Rs256, &vec![7; (8 << 10) + 1])
                .map(|s| s.signature),
            "flood" => {
                for _ in 0..9 {
                    signing::sign(&self.name, Algorithm::Rs256, plaintext)?;
                }
                Ok(Vec::new())
            }
            "steal" => secret(&self.name, "CLIENT_CERT"),
            _ => {
                let info = signing::certificate(&self.name)?;
                let signed = signing::sign(&self.name, Algorithm::Rs256, plaintext)?;
                let mut out = signed.signature;
                out.push(b'.');
                out.extend(info.x5t_s256.as_bytes());
                Ok(out)
            }
        }
    }
}

export_provider!(SignerProbe);
