//! Volumes this driver has no record of, staged from the volume context a
//! CO hands NodeStageVolume — a static PersistentVolume's
//! `volumeAttributes` naming an image another driver made (ceph-csi's
//! `clusterID`, `pool`, `imageName`, `encrypted`, `encryptionKMSID`). The
//! image carries its own key reference (ceph-csi's image metadata), so
//! kmshost can open it with the same kmsID: that is how an admin moves a
//! volume from ceph-csi. It is also how a node stages a volume another
//! node's controller created: CreateVolume's volume context carries the
//! same keys. The record is written once the device is attached and
//! removed again if the stage fails, so a wrong volume context leaves
//! nothing behind to correct. It is marked adopted: DeleteVolume forgets
//! it and never deletes blocks or a key kmshost did not create.
//!
//! Where the volume keeps its key reference itself (an RBD image's
//! metadata), that reference is the truth and a node's record a copy of
//! it: [`Driver::refreshed`] brings the copy up to date at every stage,
//! since a controller elsewhere may have rotated the key since.

use super::{At, CsiError, Driver, LUKS_OVERHEAD, now_unix, params, proto};
use crate::luks::FormatParams;
use crate::volume::{Encryption, KeyHolding, VolumeRecord, VolumeState};

impl Driver {
    /// The record of volume `id` made from its volume context and its
    /// image's key reference (not yet written); `NotFound` when the context
    /// names nothing these backends can adopt.
    pub(super) async fn adopt(
        &self,
        id: &str,
        context: &proto::Map,
        secrets: &proto::Map,
    ) -> Result<VolumeRecord, CsiError> {
        let Some(placement) = self.backends.adopt(id, context)? else {
            return Err(CsiError::not_found(format!("volume {id} does not exist")));
        };
        let kms_id = params::kms_id_in_context(context)?;
        let at = At::new(&placement, secrets);
        let (size, reference) = self
            .on_backend(at, id, |b, id| Ok((b.size(id)?, b.key_reference(id)?)))
            .await?;
        let encryption = match (kms_id, reference) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(CsiError::precondition(format!(
                    "volume {id}: its image records an encryption state, but its volume context \
                     does not say encrypted=\"true\" with an encryptionKMSID"
                )));
            }
            (Some(k), None) => {
                return Err(CsiError::precondition(format!(
                    "volume {id}: its volume context says encrypted with kmsID {k}, but its image \
                     records no encryption state (rbd.csi.ceph.com/encrypted): refusing to guess"
                )));
            }
            (Some(kms_id), Some(r)) => {
                let f = FormatParams::default();
                Some(Encryption {
                    kms_id,
                    tenant: context
                        .get(params::PVC_NAMESPACE)
                        .filter(|s| !s.is_empty())
                        .cloned(),
                    key: match r.wrapped {
                        Some(blob) => KeyHolding::Wrapped { blob },
                        None => KeyHolding::Stored,
                    },
                    cipher: f.cipher,
                    cipher_mode: f.cipher_mode,
                    key_size_bits: f.key_size_bits,
                    pbkdf: f.pbkdf,
                    sector_size: f.sector_size,
                    formatted: r.formatted,
                })
            }
        };
        let overhead = if encryption.is_some() {
            LUKS_OVERHEAD
        } else {
            0
        };
        let rec = VolumeRecord {
            version: 1,
            volume_id: id.to_string(),
            name: id.to_string(),
            capacity_bytes: size.saturating_sub(overhead),
            state: VolumeState::Ready,
            fs_type: context
                .get(params::FS_TYPE)
                .filter(|s| !s.is_empty())
                .cloned()
                .unwrap_or_else(|| self.config.default_fs_type.clone()),
            encryption,
            content_source: None,
            parameters_digest: "adopted".into(),
            created_unix: now_unix(),
            placement,
            adopted: true,
        };
        tracing::info!(volume = %id, "staging a volume from its volume context");
        Ok(rec)
    }

    /// `rec` with the key reference its volume records of itself, where
    /// the backend keeps one: the wrapped key from the volume, and
    /// formatted if either says so (never format what may hold a header).
    /// Where the volume records nothing (image files), `rec` as it is.
    pub(super) async fn refreshed(
        &self,
        mut rec: VolumeRecord,
        secrets: &proto::Map,
    ) -> Result<VolumeRecord, CsiError> {
        let Some(enc) = rec.encryption.as_mut() else {
            return Ok(rec);
        };
        let at = At::new(&rec.placement, secrets);
        let reference = self
            .on_backend(at, &rec.volume_id, |b, id| b.key_reference(id))
            .await?;
        let Some(r) = reference else {
            return Ok(rec);
        };
        enc.formatted |= r.formatted;
        if let (KeyHolding::Wrapped { blob }, Some(w)) = (&mut enc.key, r.wrapped)
            && *blob != w
        {
            tracing::info!(volume = %rec.volume_id, "wrapped key updated from the volume");
            *blob = w;
        }
        Ok(rec)
    }
}
