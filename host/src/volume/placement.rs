//! Where each volume lives ([`Placement`], kept in its record) and how the
//! driver gets a [`Backend`] for it ([`Backends`]): from the StorageClass's
//! parameters for a new volume, and from the record plus the request's
//! secrets (the Ceph user of an RBD StorageClass) for every later call.

use super::{Backend, VolumeError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// Where a volume's blocks are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Placement {
    /// An image file in the driver's data directory (records written
    /// before placements existed read as this).
    #[default]
    ImageFile,
    /// An RBD image.
    Rbd {
        /// The StorageClass's `clusterID`.
        cluster_id: String,
        /// The StorageClass's `pool`.
        pool: String,
        /// The StorageClass's `dataPool`, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data_pool: Option<String>,
        /// The image features (from `imageFeatures`).
        features: Vec<String>,
        /// A volume whose image is not named by its volume ID: an image
        /// another driver made (ceph-csi's `csi-vol-<uuid>`), staged from
        /// its volume context.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        renamed: Option<Renamed>,
    },
}

/// Volume `volume_id`'s image is `image`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renamed {
    /// The volume ID.
    pub volume_id: String,
    /// Its image's name.
    pub image: String,
}

impl Placement {
    /// The key-value pairs a volume's context carries for it (ceph-csi's
    /// names: `clusterID`, `pool`, `imageName`).
    pub fn context(&self, id: &str) -> Vec<(&'static str, String)> {
        match self {
            Placement::ImageFile => Vec::new(),
            Placement::Rbd {
                cluster_id,
                pool,
                renamed,
                ..
            } => vec![
                ("clusterID", cluster_id.clone()),
                ("pool", pool.clone()),
                (
                    "imageName",
                    match renamed {
                        Some(r) if r.volume_id == id => r.image.clone(),
                        _ => id.to_string(),
                    },
                ),
            ],
        }
    }
}

/// The backends a driver offers: how StorageClass parameters become a
/// [`Placement`], and a [`Backend`] for a placement.
pub trait Backends: Send + Sync + std::fmt::Debug {
    /// A short name for logs (`image-file`, `rbd`).
    fn name(&self) -> &'static str;
    /// The StorageClass parameters these backends read (beyond the
    /// encryption ones).
    fn parameters(&self) -> &'static [&'static str];
    /// The placement StorageClass parameters `params` ask for; a parameter
    /// at fault is named.
    fn placement(&self, params: &HashMap<String, String>) -> Result<Placement, VolumeError>;
    /// The backend for `placement`, acting with a request's `secrets`
    /// (`None`: a call that carries none, such as NodeUnstageVolume; what
    /// needs them then fails, naming the Secret to set).
    fn open(
        &self,
        placement: &Placement,
        secrets: Option<&HashMap<String, String>>,
    ) -> Result<Arc<dyn Backend>, VolumeError>;
    /// Whether GetCapacity means something (thin RBD pools: no).
    fn reports_capacity(&self) -> bool {
        true
    }
    /// Where volume `id`, which this driver has no record of, is — from
    /// the volume context a CO hands NodeStageVolume (a static
    /// PersistentVolume's `volumeAttributes`: ceph-csi's `clusterID`,
    /// `pool`, `imageName`). `None`: these backends adopt nothing.
    fn adopt(
        &self,
        id: &str,
        context: &HashMap<String, String>,
    ) -> Result<Option<Placement>, VolumeError> {
        let _ = (id, context);
        Ok(None)
    }
}

impl Backends for super::ImageFileBackend {
    fn name(&self) -> &'static str {
        "image-file"
    }

    fn parameters(&self) -> &'static [&'static str] {
        &[]
    }

    fn placement(&self, _: &HashMap<String, String>) -> Result<Placement, VolumeError> {
        Ok(Placement::ImageFile)
    }

    fn open(
        &self,
        placement: &Placement,
        _: Option<&HashMap<String, String>>,
    ) -> Result<Arc<dyn Backend>, VolumeError> {
        match placement {
            Placement::ImageFile => Ok(Arc::new(self.clone())),
            other => Err(VolumeError::Unsupported(format!(
                "this driver keeps volumes as image files; {other:?} is not served here"
            ))),
        }
    }
}
