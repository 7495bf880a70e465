//! The host side of `kmshost:plugin/signing`: a plugin names a certificate
//! its kmsID's options grant (the value of a `signing-cert` option, such as
//! `AZURE_CERT_SECRET_NAME`); the host reads that Secret itself, parses the
//! certificate and key ([`crate::capability::signing`]), and signs the
//! plugin's payload with an allowed algorithm. The plugin gets signatures
//! and thumbprints; never the key, and never the Secret (it is withheld
//! from `secrets.get`).
//!
//! The Secret is read at each use, so a renewed certificate takes effect
//! at the next signature; a parse is kept while the Secret's bytes stay the
//! same. Uses are bounded per operation and counted per kmsID.

use super::bindings::kmshost::plugin::signing;
use super::bindings::kmshost::plugin::types::KmsError as WitError;
use super::state::HostState;
use crate::capability::signing::{Algorithm, SigningCert};
use crate::secrets::{SecretError, SecretRef};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Largest payload a plugin may have signed (a JWT's header and claims).
pub const MAX_PAYLOAD: usize = 8 << 10;
/// `signing` calls (certificate lookups and signatures) per operation.
pub const MAX_CALLS: u32 = 8;

/// One certificate a kmsID may sign with.
pub struct CertGrant {
    /// The name the plugin uses: the option's value as written.
    pub name: String,
    /// The option naming it, for errors.
    pub option: String,
    /// The Secret holding the PEM.
    pub secret: SecretRef,
    /// The Secret's key holding it (`CLIENT_CERT`).
    pub key: String,
    parsed: Mutex<Option<([u8; 32], Arc<SigningCert>)>>,
}

impl CertGrant {
    /// A grant of `key` of `secret`, named `name` by option `option`.
    pub fn new(name: String, option: String, secret: SecretRef, key: String) -> Self {
        CertGrant {
            name,
            option,
            secret,
            key,
            parsed: Mutex::new(None),
        }
    }
}

/// A kmsID's signing certificates and how often they were used.
#[derive(Default)]
pub struct SigningGrant {
    /// The certificates.
    pub certs: Vec<CertGrant>,
    /// Signatures made for this kmsID.
    pub uses: AtomicU64,
}

impl std::fmt::Debug for SigningGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.certs.iter().map(|c| c.secret.to_string()).collect();
        f.debug_struct("SigningGrant")
            .field("certs", &names)
            .field("uses", &self.uses.load(Ordering::Relaxed))
            .finish()
    }
}

fn algorithm(a: signing::Algorithm) -> Algorithm {
    match a {
        signing::Algorithm::Rs256 => Algorithm::Rs256,
        signing::Algorithm::Ps256 => Algorithm::Ps256,
    }
}

impl HostState {
    /// The checks every `signing` call passes, then the parsed certificate.
    async fn signing_cert(&mut self, name: &str) -> Result<Arc<SigningCert>, WitError> {
        let kms_id = self.shared.kms_id.clone();
        let grant = self.shared.signing.clone();
        let Some(cert) = grant.certs.iter().find(|c| c.name == name) else {
            let granted: Vec<&str> = grant.certs.iter().map(|c| c.name.as_str()).collect();
            return Err(self.deny(format!(
                "certificate {name:?} is not granted to kmsID {kms_id} (granted: {})",
                if granted.is_empty() {
                    "none".into()
                } else {
                    granted.join(", ")
                }
            )));
        };
        self.signing_calls += 1;
        if self.signing_calls > MAX_CALLS {
            return Err(self.deny(format!(
                "more than {MAX_CALLS} signing calls in one operation"
            )));
        }
        let invalid = |message: String| {
            WitError::InvalidConfig(super::bindings::kmshost::plugin::types::ConfigError {
                option: cert.option.clone(),
                message,
            })
        };
        let pem = match self.shared.secrets.read(&cert.secret).await {
            Ok(Some(data)) => data.get(&cert.key).cloned().ok_or_else(|| {
                invalid(format!("Secret {} has no key {:?}", cert.secret, cert.key))
            })?,
            Ok(None) => return Err(invalid(format!("Secret {} not found", cert.secret))),
            Err(SecretError::Unavailable { secret, message }) => {
                return Err(WitError::Unavailable(format!("Secret {secret}: {message}")));
            }
            Err(e) => return Err(invalid(e.to_string())),
        };
        let digest: [u8; 32] = Sha256::digest(pem.expose()).into();
        let mut parsed = cert.parsed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((d, c)) = parsed.as_ref()
            && *d == digest
        {
            return Ok(c.clone());
        }
        let c = SigningCert::from_pem(&pem)
            .map_err(|e| invalid(format!("Secret {} key {:?}: {e}", cert.secret, cert.key)))?;
        let c = Arc::new(c);
        *parsed = Some((digest, c.clone()));
        Ok(c)
    }
}

fn info(c: &SigningCert) -> signing::CertificateInfo {
    signing::CertificateInfo {
        x5t: c.x5t().to_string(),
        x5t_s256: c.x5t_s256().to_string(),
        chain: c.chain().to_vec(),
    }
}

impl signing::Host for HostState {
    async fn certificate(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<signing::CertificateInfo, WitError>> {
        Ok(self.signing_cert(&name).await.map(|c| info(&c)))
    }

    async fn sign(
        &mut self,
        name: String,
        alg: signing::Algorithm,
        payload: Vec<u8>,
    ) -> wasmtime::Result<Result<signing::Signed, WitError>> {
        let cert = match self.signing_cert(&name).await {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        if payload.len() > MAX_PAYLOAD {
            return Ok(Err(self.deny(format!(
                "a payload of {} bytes to sign: at most {MAX_PAYLOAD}",
                payload.len()
            ))));
        }
        let alg = algorithm(alg);
        let signature = match cert.sign(alg, &payload) {
            Ok(s) => s,
            Err(e) => return Ok(Err(WitError::Other(e.to_string()))),
        };
        let uses = self.shared.signing.uses.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(
            kms_id = %self.shared.kms_id,
            plugin = %self.shared.plugin,
            certificate = %name,
            alg = alg.jws_name(),
            x5t_s256 = cert.x5t_s256(),
            uses,
            "signing: signed {} bytes",
            payload.len()
        );
        Ok(Ok(signing::Signed {
            signature,
            certificate: info(&cert),
        }))
    }
}
