//! [`RbdVolumes`]: the RBD driver's [`Backends`] — ceph-csi's StorageClass
//! parameters to a [`Placement`], and a [`RbdBackend`] for a placement as
//! the Ceph user of the request's Secret.

use super::super::{Backend, Backends, Placement, Renamed, VolumeError};
use super::{ClusterConfig, Credentials, ImageOptions, RbdBackend, RbdCli};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// `clusterID`: the cluster-config entry holding the monitors.
pub const CLUSTER_ID: &str = "clusterID";
/// `pool`: the pool for the images.
pub const POOL: &str = "pool";
/// `dataPool`: an erasure-coded pool for the image data.
pub const DATA_POOL: &str = "dataPool";
/// `imageFeatures`: RBD image features, comma-separated.
pub const IMAGE_FEATURES: &str = "imageFeatures";
/// `imageFormat`: only `2` (ceph-csi's only format too).
pub const IMAGE_FORMAT: &str = "imageFormat";
/// `mounter`: `krbd` (the default); `rbd-nbd` is not offered.
pub const MOUNTER: &str = "mounter";
/// `imageName`: in a volume context, the image of the volume.
pub const IMAGE_NAME: &str = "imageName";

const PARAMETERS: &[&str] = &[
    CLUSTER_ID,
    POOL,
    DATA_POOL,
    IMAGE_FEATURES,
    IMAGE_FORMAT,
    MOUNTER,
];

/// RBD images in the clusters of a ceph-csi cluster config.
#[derive(Debug, Clone)]
pub struct RbdVolumes {
    clusters: ClusterConfig,
    program: PathBuf,
    key_dir: PathBuf,
    connect_timeout_secs: u32,
}

impl RbdVolumes {
    /// Volumes in `clusters`, with `rbd` from `PATH` and key files in the
    /// system temporary directory.
    pub fn new(clusters: ClusterConfig) -> Self {
        RbdVolumes {
            clusters,
            program: "rbd".into(),
            key_dir: std::env::temp_dir(),
            connect_timeout_secs: super::cli::CONNECT_TIMEOUT_SECS,
        }
    }

    /// Writes the one-call key files under `dir`.
    pub fn with_key_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.key_dir = dir.into();
        self
    }

    /// Gives up reaching a monitor after `secs` seconds.
    pub fn with_connect_timeout(mut self, secs: u32) -> Self {
        self.connect_timeout_secs = secs;
        self
    }

    /// Uses `program` instead of `rbd` from `PATH`.
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }
}

fn param<'a>(p: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    p.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
}

impl Backends for RbdVolumes {
    fn name(&self) -> &'static str {
        "rbd"
    }

    fn parameters(&self) -> &'static [&'static str] {
        PARAMETERS
    }

    fn placement(&self, p: &HashMap<String, String>) -> Result<Placement, VolumeError> {
        let cluster_id = param(p, CLUSTER_ID)
            .ok_or_else(|| VolumeError::Invalid(format!("parameter {CLUSTER_ID} is required")))?;
        self.clusters
            .get(cluster_id)
            .map_err(|e| VolumeError::Invalid(format!("parameter {CLUSTER_ID}: {e}")))?;
        let pool = param(p, POOL)
            .ok_or_else(|| VolumeError::Invalid(format!("parameter {POOL} is required")))?;
        if let Some(f) = param(p, IMAGE_FORMAT).filter(|f| *f != "2") {
            return Err(VolumeError::Invalid(format!(
                "parameter {IMAGE_FORMAT}: {f:?} is not offered (only \"2\")"
            )));
        }
        if let Some(m) = param(p, MOUNTER).filter(|m| *m != "krbd") {
            return Err(VolumeError::Invalid(format!(
                "parameter {MOUNTER}: {m:?} is not offered (only \"krbd\", the kernel driver)"
            )));
        }
        let opts = ImageOptions::new(
            pool,
            param(p, DATA_POOL),
            param(p, IMAGE_FEATURES).unwrap_or(""),
        )?;
        Ok(Placement::Rbd {
            cluster_id: cluster_id.to_string(),
            pool: opts.pool,
            data_pool: opts.data_pool,
            features: opts.features,
            renamed: None,
        })
    }

    fn adopt(
        &self,
        id: &str,
        context: &HashMap<String, String>,
    ) -> Result<Option<Placement>, VolumeError> {
        let Some(image) = param(context, IMAGE_NAME) else {
            return Ok(None);
        };
        let name_ok = image.len() <= 512
            && !image.starts_with('-')
            && image
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !name_ok {
            return Err(VolumeError::Invalid(format!(
                "volume context {IMAGE_NAME}: {image:?} is not an image name"
            )));
        }
        let Placement::Rbd {
            cluster_id,
            pool,
            data_pool,
            features,
            ..
        } = self
            .placement(context)
            .map_err(|e| VolumeError::Invalid(format!("volume context of {id}: {e}")))?
        else {
            unreachable!("RbdVolumes places on RBD")
        };
        Ok(Some(Placement::Rbd {
            cluster_id,
            pool,
            data_pool,
            features,
            renamed: (image != id).then(|| Renamed {
                volume_id: id.to_string(),
                image: image.to_string(),
            }),
        }))
    }

    fn open(
        &self,
        placement: &Placement,
        secrets: Option<&HashMap<String, String>>,
    ) -> Result<Arc<dyn Backend>, VolumeError> {
        let Placement::Rbd {
            cluster_id,
            pool,
            data_pool,
            features,
            renamed,
        } = placement
        else {
            return Err(VolumeError::Unsupported(format!(
                "this driver keeps volumes in RBD; {placement:?} is not served here"
            )));
        };
        let cluster = self.clusters.get(cluster_id)?;
        let creds = match secrets {
            Some(s) if !s.is_empty() => Some(Credentials::from_secrets(s)?),
            _ => None,
        };
        let cli = RbdCli::with_creds(cluster, creds)
            .with_program(&self.program)
            .with_key_dir(&self.key_dir)
            .with_connect_timeout(self.connect_timeout_secs);
        let mut opts = ImageOptions::new(pool, data_pool.as_deref(), &features.join(","))?;
        opts.renamed = renamed.clone();
        Ok(Arc::new(RbdBackend::new(cli, opts)))
    }

    fn reports_capacity(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volumes() -> RbdVolumes {
        RbdVolumes::new(
            ClusterConfig::parse(r#"[{"clusterID":"rook-ceph","monitors":["10.0.0.1:6789"]}]"#)
                .unwrap(),
        )
    }

    fn p(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn storage_class_parameters_as_ceph_csi_names_them() {
        let got = volumes()
            .placement(&p(&[
                ("clusterID", "rook-ceph"),
                ("pool", "replicapool"),
                ("dataPool", "ec-data"),
                ("imageFormat", "2"),
                ("imageFeatures", "layering,exclusive-lock"),
                ("mounter", "krbd"),
            ]))
            .unwrap();
        assert_eq!(
            got,
            Placement::Rbd {
                cluster_id: "rook-ceph".into(),
                pool: "replicapool".into(),
                data_pool: Some("ec-data".into()),
                features: vec!["layering".into(), "exclusive-lock".into()],
                renamed: None,
            }
        );
    }

    #[test]
    fn bad_parameters_are_named() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("pool", "rbd")], "parameter clusterID is required"),
            (
                &[("clusterID", "other"), ("pool", "rbd")],
                "parameter clusterID: clusterID \"other\" is not in the cluster config (known: rook-ceph)",
            ),
            (&[("clusterID", "rook-ceph")], "parameter pool is required"),
            (
                &[
                    ("clusterID", "rook-ceph"),
                    ("pool", "rbd"),
                    ("mounter", "rbd-nbd"),
                ],
                "parameter mounter: \"rbd-nbd\" is not offered",
            ),
            (
                &[
                    ("clusterID", "rook-ceph"),
                    ("pool", "rbd"),
                    ("imageFormat", "1"),
                ],
                "parameter imageFormat: \"1\"",
            ),
            (
                &[("clusterID", "rook-ceph"), ("pool", "a/b")],
                "parameter pool: \"a/b\" is not a pool name",
            ),
            (
                &[
                    ("clusterID", "rook-ceph"),
                    ("pool", "rbd"),
                    ("imageFeatures", "fast-diff"),
                ],
                "parameter imageFeatures: fast-diff needs object-map",
            ),
        ];
        for (kv, want) in cases {
            let e = volumes().placement(&p(kv)).unwrap_err().to_string();
            assert!(e.contains(want), "{kv:?}: {e}");
        }
    }

    #[test]
    fn open_needs_an_rbd_placement_and_names_missing_secret_keys() {
        let v = volumes();
        let e = v.open(&Placement::ImageFile, None).unwrap_err().to_string();
        assert!(e.contains("keeps volumes in RBD"), "{e}");
        let rbd = v
            .placement(&p(&[("clusterID", "rook-ceph"), ("pool", "rbd")]))
            .unwrap();
        let e = v
            .open(&rbd, Some(&p(&[("userID", "csi")])))
            .unwrap_err()
            .to_string();
        assert!(e.contains("has no userKey"), "{e}");
        // Without secrets the backend opens for node-local calls only.
        let b = v.open(&rbd, None).unwrap();
        let e = b.size("kh-vol-x").unwrap_err().to_string();
        assert!(e.contains("carries no Ceph credentials"), "{e}");
    }
}
