//! The host side of `kmshost:plugin/hsm`: a plugin names a key label; the
//! host checks it is granted to the kmsID, bounds the sizes and the number
//! of calls, and runs the PKCS#11 operation ([`crate::capability::hsm`]) on
//! a blocking thread under the operation's deadline.

use super::bindings::kmshost::plugin::hsm;
use super::bindings::kmshost::plugin::types::KmsError as WitError;
use super::state::HostState;
use crate::capability::hsm::{HsmError, HsmToken};
use std::sync::Arc;

/// Largest plaintext a plugin may seal.
pub const MAX_PLAINTEXT: usize = 4 << 10;
/// Largest ciphertext a plugin may open.
pub const MAX_CIPHERTEXT: usize = 16 << 10;
/// Largest AAD.
pub const MAX_AAD: usize = 1 << 10;
/// HSM calls per operation.
pub const MAX_CALLS: u32 = 16;

/// A kmsID's HSM: its token and the key labels granted to it.
pub struct HsmGrant {
    /// The token (module, label, PIN and session pool: all host-side).
    pub token: Arc<HsmToken>,
    /// Labels the plugin may name.
    pub labels: Vec<String>,
}

impl std::fmt::Debug for HsmGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmGrant")
            .field("token", &self.token)
            .field("labels", &self.labels)
            .finish()
    }
}

fn wit_error(e: HsmError) -> WitError {
    let m = e.to_string();
    match e {
        HsmError::ModuleNotAllowed(_) | HsmError::Denied { .. } => WitError::Denied(m),
        HsmError::KeyNotFound { .. } => WitError::NotFound(m),
        HsmError::Integrity { .. } => WitError::Integrity(m),
        HsmError::Module { .. } | HsmError::TokenNotFound { .. } | HsmError::Unavailable { .. } => {
            WitError::Unavailable(m)
        }
    }
}

enum Op {
    Encrypt,
    Decrypt,
}

impl HostState {
    /// The checks every `hsm` call passes, then the operation.
    async fn hsm_call(
        &mut self,
        op: Op,
        label: String,
        data: Vec<u8>,
        aad: Vec<u8>,
    ) -> Result<Vec<u8>, WitError> {
        let kms_id = self.shared.kms_id.clone();
        let Some(grant) = self.shared.hsm.clone() else {
            return Err(self.deny(format!(
                "kmsID {kms_id} has no HSM: its entry names no PKCS#11 module, token and PIN"
            )));
        };
        if !grant.labels.contains(&label) {
            return Err(self.deny(format!(
                "HSM key {label:?} is not granted to kmsID {kms_id}: add it to the entry's key labels (granted: {})",
                grant.labels.join(", ")
            )));
        }
        self.hsm_calls += 1;
        let (max, what) = match op {
            Op::Encrypt => (MAX_PLAINTEXT, "plaintext"),
            Op::Decrypt => (MAX_CIPHERTEXT, "ciphertext"),
        };
        if self.hsm_calls > MAX_CALLS {
            return Err(self.deny(format!("more than {MAX_CALLS} HSM calls in one operation")));
        }
        if data.len() > max || aad.len() > MAX_AAD {
            return Err(self.deny(format!(
                "HSM {what} of {} bytes or AAD of {} bytes: at most {max} and {MAX_AAD}",
                data.len(),
                aad.len()
            )));
        }
        let token = grant.token.clone();
        let run = tokio::task::spawn_blocking(move || match op {
            Op::Encrypt => token.encrypt(&label, &data, &aad),
            Op::Decrypt => token
                .decrypt(&label, &data, &aad)
                .map(|k| k.expose().to_vec()),
        });
        let left = self
            .until
            .map(|u| u.saturating_duration_since(std::time::Instant::now()))
            .unwrap_or_default();
        match crate::deadline::timeout(left, run).await {
            Ok(Ok(r)) => r.map_err(wit_error),
            Ok(Err(_)) => Err(WitError::Other("the HSM call failed on its thread".into())),
            Err(_) => {
                self.timed_out = true;
                Err(WitError::Unavailable(format!(
                    "the HSM did not answer within kmsID {kms_id}'s deadline"
                )))
            }
        }
    }
}

impl hsm::Host for HostState {
    async fn encrypt(
        &mut self,
        label: String,
        plaintext: Vec<u8>,
        aad: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, WitError>> {
        Ok(self.hsm_call(Op::Encrypt, label, plaintext, aad).await)
    }

    async fn decrypt(
        &mut self,
        label: String,
        ciphertext: Vec<u8>,
        aad: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, WitError>> {
        Ok(self.hsm_call(Op::Decrypt, label, ciphertext, aad).await)
    }
}
