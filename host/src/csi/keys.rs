//! The volume key's round trip through a kmsID: seal a new passphrase
//! (wrap it if the provider wraps, else store it), open it again, release
//! it when the volume is gone.

use super::CsiError;
use crate::kms::{KeyId, Kms, KmsError, Passphrase, Sealed};
use crate::volume::{Encryption, KeyHolding};

fn key_id(id: &str) -> Result<KeyId, CsiError> {
    KeyId::new(id).map_err(|e| CsiError::invalid(e.to_string()))
}

/// Hands `passphrase` to `kms_id` under `id`, verified
/// ([`crate::kms::TenantKms::seal`]): a wrapping provider returns a blob
/// kmshost keeps with the volume; a provider that does not wrap
/// (`unsupported`) stores it instead.
pub async fn seal(
    kms: &Kms,
    kms_id: &str,
    tenant: Option<&str>,
    id: &str,
    passphrase: &Passphrase,
) -> Result<KeyHolding, CsiError> {
    let key = key_id(id)?;
    Ok(
        match kms.tenant(tenant).seal(kms_id, &key, passphrase).await? {
            Sealed::Wrapped(w) => KeyHolding::wrapped(&w),
            Sealed::Stored => KeyHolding::Stored,
        },
    )
}

/// The passphrase of the volume (or snapshot) `id`.
pub async fn open(kms: &Kms, enc: &Encryption, id: &str) -> Result<Passphrase, CsiError> {
    let key = key_id(id)?;
    let kms = kms.tenant(enc.tenant.as_deref());
    match &enc.key {
        KeyHolding::Pending => Err(CsiError::precondition(format!(
            "{id}: its key was never stored (CreateVolume did not finish)"
        ))),
        KeyHolding::Stored => Ok(kms.get(&enc.kms_id, &key).await?),
        KeyHolding::Wrapped { .. } => {
            let w = enc.key.wrapped_key().ok_or_else(|| {
                CsiError::new(
                    tonic::Code::DataLoss,
                    format!("{id}: the wrapped key in its record is not base64"),
                )
            })?;
            Ok(kms.unwrap(&enc.kms_id, &key, &w).await?)
        }
    }
}

/// Removes the key of `id` from its kmsID (a wrapped key lives in the
/// record and goes with it). A key already gone is fine. A `Pending` key
/// may have been stored by a CreateVolume that died before recording it,
/// so it is deleted too (a wrapping provider answers `unsupported`).
pub async fn release(kms: &Kms, enc: &Encryption, id: &str) -> Result<(), CsiError> {
    if matches!(enc.key, KeyHolding::Wrapped { .. }) {
        return Ok(());
    }
    let pending = enc.key == KeyHolding::Pending;
    match kms
        .tenant(enc.tenant.as_deref())
        .delete(&enc.kms_id, &key_id(id)?)
        .await
    {
        Ok(()) | Err(KmsError::NotFound { .. }) => Ok(()),
        Err(KmsError::Unsupported { .. }) if pending => Ok(()),
        Err(e) => Err(CsiError::from(e).context(format!("volume {id}: the key was not deleted"))),
    }
}
