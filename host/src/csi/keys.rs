//! The volume key's round trip through a kmsID: seal a new passphrase
//! (wrap it if the provider wraps, else store it), open it again, release
//! it when the volume is gone.

use super::CsiError;
use crate::kms::{KeyId, Kms, KmsError, KmsId, Passphrase, Sealed, WrappedKey};
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
    kms_id: &KmsId,
    tenant: Option<&str>,
    id: &str,
    passphrase: &Passphrase,
) -> Result<KeyHolding, CsiError> {
    let key = key_id(id)?;
    Ok(
        match kms
            .tenant(tenant)
            .seal(kms_id.as_str(), &key, passphrase)
            .await?
        {
            Sealed::Wrapped(w) => KeyHolding::wrapped(&w),
            Sealed::Stored => KeyHolding::Stored,
        },
    )
}

/// The passphrase of the volume (or snapshot) `id`.
pub async fn open(kms: &Kms, enc: &Encryption, id: &str) -> Result<Passphrase, CsiError> {
    Ok(open_current(kms, enc, id).await?.0)
}

/// The passphrase of `id`, and for a wrapped key the blob the provider
/// handed back wrapped under its current key version, checked
/// ([`crate::kms::TenantKms::unwrap_current`]): the caller keeps it in the
/// record in place of the old one.
pub async fn open_current(
    kms: &Kms,
    enc: &Encryption,
    id: &str,
) -> Result<(Passphrase, Option<WrappedKey>), CsiError> {
    let key = key_id(id)?;
    let kms = kms.tenant(enc.tenant.as_deref());
    match &enc.key {
        KeyHolding::Pending => Err(CsiError::precondition(format!(
            "{id}: its key was never stored (CreateVolume did not finish)"
        ))),
        KeyHolding::Stored => Ok((kms.get(enc.kms_id.as_str(), &key).await?, None)),
        KeyHolding::Wrapped { .. } => {
            let w = enc.key.wrapped_key().ok_or_else(|| {
                CsiError::new(
                    tonic::Code::DataLoss,
                    format!("{id}: the wrapped key in its record is not base64"),
                )
            })?;
            Ok(kms.unwrap_current(enc.kms_id.as_str(), &key, &w).await?)
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
        .delete(enc.kms_id.as_str(), &key_id(id)?)
        .await
    {
        Ok(()) | Err(KmsError::NotFound { .. }) => Ok(()),
        Err(KmsError::Unsupported { .. }) if pending => Ok(()),
        Err(e) => Err(CsiError::from(e).context(format!("volume {id}: the key was not deleted"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigSource, HostDefaults};
    use crate::sandbox::{Sandbox, SandboxConfig};
    use crate::secrets::MountedSecrets;
    use std::sync::Arc;
    use tonic::Code;

    /// A facade with one `metadata` kmsID `meta` (the embedded `secret`
    /// plugin wrapping with a passphrase Secret).
    fn metadata_kms(dir: &std::path::Path) -> Kms {
        let secret = dir.join("kek");
        std::fs::create_dir_all(&secret).unwrap();
        std::fs::write(secret.join("encryptionPassphrase"), b"unit test passphrase").unwrap();
        let config = r#"{"meta": {"encryptionKMSType": "metadata", "secretName": "kek"}}"#;
        let cache = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/unit-compile-cache");
        let sandbox = Sandbox::new(SandboxConfig {
            cache_dir: Some(cache.into()),
            max_instances: 4,
            ..Default::default()
        })
        .unwrap();
        Kms::new(
            ConfigSource::from_text(config, HostDefaults::default()).unwrap(),
            sandbox,
            Arc::new(MountedSecrets::new(dir)),
        )
    }

    fn encryption(key: KeyHolding) -> Encryption {
        Encryption {
            kms_id: crate::types::KmsId::new("meta").unwrap(),
            tenant: None,
            key,
            cipher: "aes".into(),
            cipher_mode: "xts-plain64".into(),
            key_size_bits: 512,
            pbkdf: crate::luks::Pbkdf::MACHINE_KEY,
            sector_size: 512,
            formatted: false,
        }
    }

    #[tokio::test]
    async fn a_sealed_key_opens_for_its_volume_only() {
        let dir = tempfile::tempdir().unwrap();
        let kms = metadata_kms(dir.path());
        let pass = crate::kms::generate_passphrase();
        let meta = KmsId::new("meta").unwrap();
        let held = seal(&kms, &meta, None, "vol-1", &pass).await.unwrap();
        assert!(matches!(held, KeyHolding::Wrapped { .. }), "{held:?}");
        let enc = encryption(held);
        assert_eq!(open(&kms, &enc, "vol-1").await.unwrap(), pass);
        // The record's blob moved to another volume: refused as data loss.
        let err = open(&kms, &enc, "vol-2").await.unwrap_err();
        assert_eq!(err.code, Code::DataLoss, "{err}");
        // A wrapped key goes with its record: releasing calls nothing.
        release(&kms, &enc, "vol-1").await.unwrap();
    }

    #[tokio::test]
    async fn keys_never_recorded_or_unreadable_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let kms = metadata_kms(dir.path());
        let err = open(&kms, &encryption(KeyHolding::Pending), "vol-1")
            .await
            .unwrap_err();
        assert_eq!(err.code, Code::FailedPrecondition, "{err}");
        assert!(err.message.contains("never stored"), "{err}");
        let corrupt = encryption(KeyHolding::Wrapped {
            blob: "not base64!".into(),
        });
        let err = open(&kms, &corrupt, "vol-1").await.unwrap_err();
        assert_eq!(err.code, Code::DataLoss, "{err}");
        let err = open(&kms, &corrupt, "../etc").await.unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument, "{err}");
    }

    #[tokio::test]
    async fn release_tolerates_only_what_cannot_orphan_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let kms = metadata_kms(dir.path());
        // Pending with a wrapping provider: nothing was stored (its delete
        // is `unsupported`), so nothing is left behind.
        release(&kms, &encryption(KeyHolding::Pending), "vol-1")
            .await
            .unwrap();
        // A record saying the key is stored, at a provider that cannot
        // delete: an error naming the volume, never a silent success.
        let err = release(&kms, &encryption(KeyHolding::Stored), "vol-1")
            .await
            .unwrap_err();
        assert!(
            err.message.contains("vol-1: the key was not deleted"),
            "{err}"
        );
    }
}
