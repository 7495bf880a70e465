//! [`RbdBackend`]: volumes as RBD images in one pool of one cluster, as
//! one Ceph user — the [`Backend`] operations, plus the image metadata
//! where an encrypted image keeps its key reference.
//!
//! Copies (clones, restores, snapshots) are clone v2 children of a
//! temporary snapshot, flattened at once and the snapshot removed: every
//! image stands alone, so deleting a parent never waits on its children,
//! at the price of a full data copy per clone (ceph-csi keeps shallow
//! chains and flattens past a depth; kmshost may later).

use super::super::{Backend, BlockSource, KeyReference, VolumeError};
use super::cli::{CallError, Failure, RbdCli};
use super::meta::{self, EncryptionState, ImageEncryption};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The RBD image features kmshost knows, in ceph's words.
pub const FEATURES: &[&str] = &[
    "layering",
    "exclusive-lock",
    "object-map",
    "fast-diff",
    "deep-flatten",
    "journaling",
];

/// Features when the StorageClass names none (ceph-csi's default).
pub const DEFAULT_FEATURES: &str = "layering";

/// Where and how new images are made: the StorageClass's `pool`,
/// `dataPool` and `imageFeatures`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageOptions {
    /// The pool holding the images (and their metadata).
    pub pool: String,
    /// An erasure-coded pool for the data, if any.
    pub data_pool: Option<String>,
    /// Image features (`layering` always among them: copies need it).
    pub features: Vec<String>,
    /// A volume whose image is not named by its volume ID.
    pub renamed: Option<super::super::Renamed>,
}

impl ImageOptions {
    /// Checks `pool`, `data_pool` and the comma-separated `features`
    /// (empty: [`DEFAULT_FEATURES`]), naming the parameter at fault.
    pub fn new(pool: &str, data_pool: Option<&str>, features: &str) -> Result<Self, VolumeError> {
        check_pool("pool", pool)?;
        if let Some(d) = data_pool {
            check_pool("dataPool", d)?;
        }
        Ok(ImageOptions {
            pool: pool.to_string(),
            data_pool: data_pool.map(str::to_string),
            features: parse_features(features)?,
            renamed: None,
        })
    }
}

/// A pool name as an argument: non-empty, no `/` or `@` (they would
/// change the image spec), no leading `-`, nothing unprintable.
fn check_pool(param: &str, pool: &str) -> Result<(), VolumeError> {
    if pool.is_empty()
        || pool.len() > 256
        || pool.starts_with('-')
        || pool
            .chars()
            .any(|c| c == '/' || c == '@' || c.is_whitespace() || c.is_control())
    {
        return Err(VolumeError::Invalid(format!(
            "parameter {param}: {pool:?} is not a pool name"
        )));
    }
    Ok(())
}

/// `imageFeatures`: known features, with their dependencies present
/// (ceph refuses `object-map` without `exclusive-lock` with a bare
/// EINVAL; this says which).
fn parse_features(s: &str) -> Result<Vec<String>, VolumeError> {
    let s = if s.trim().is_empty() {
        DEFAULT_FEATURES
    } else {
        s
    };
    let mut out = vec!["layering".to_string()];
    for f in s.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        if !FEATURES.contains(&f) {
            return Err(VolumeError::Invalid(format!(
                "parameter imageFeatures: {f:?} is not an RBD image feature ({})",
                FEATURES.join(", ")
            )));
        }
        if !out.iter().any(|o| o == f) {
            out.push(f.to_string());
        }
    }
    let has = |f: &str| out.iter().any(|o| o == f);
    for (f, needs) in [
        ("object-map", "exclusive-lock"),
        ("fast-diff", "object-map"),
        ("journaling", "exclusive-lock"),
    ] {
        if has(f) && !has(needs) {
            return Err(VolumeError::Invalid(format!(
                "parameter imageFeatures: {f} needs {needs}"
            )));
        }
    }
    Ok(out)
}

/// Volumes as images `<pool>/<volume ID>`.
#[derive(Debug, Clone)]
pub struct RbdBackend {
    cli: RbdCli,
    opts: ImageOptions,
}

#[derive(Deserialize)]
struct Info {
    size: u64,
}

#[derive(Deserialize)]
struct Mapped {
    pool: String,
    #[serde(default)]
    namespace: String,
    name: String,
    #[serde(default)]
    snap: String,
    device: String,
}

impl RbdBackend {
    /// Images in `opts.pool`, reached through `cli`.
    pub fn new(cli: RbdCli, opts: ImageOptions) -> Self {
        RbdBackend { cli, opts }
    }

    /// The image name of volume `id`.
    fn image<'a>(&'a self, id: &'a str) -> &'a str {
        match &self.opts.renamed {
            Some(r) if r.volume_id == id => &r.image,
            _ => id,
        }
    }

    fn spec(&self, id: &str) -> String {
        format!("{}/{}", self.opts.pool, self.image(id))
    }

    /// The snapshot a copy into `target` is taken from.
    fn copy_snap(&self, source: &str, target: &str) -> String {
        format!("{}@kmshost-copy-{target}", self.spec(source))
    }

    /// Runs `rbd args`; a failure becomes an error naming the cluster,
    /// pool and user, and what to check.
    fn rbd(&self, what: &str, args: &[&str]) -> Result<Vec<u8>, VolumeError> {
        self.cli.run(args).map_err(|e| self.error(what, e))
    }

    fn error(&self, what: &str, e: CallError) -> VolumeError {
        let (cluster, pool, user) = (self.cli.cluster_id(), &self.opts.pool, self.cli.user_id());
        let at = format!("rbd {what} (cluster {cluster}, pool {pool}, user {user})");
        match e.failure {
            Failure::Missing if e.message.contains("opening pool") => {
                VolumeError::Invalid(format!(
                    "{at}: {} — the pool does not exist in cluster {cluster} (StorageClass parameter pool)",
                    e.message
                ))
            }
            Failure::Missing => VolumeError::Missing(format!("{at}: {}", e.message)),
            Failure::Busy => VolumeError::Busy(format!(
                "{at}: {} — the image is still in use (mapped or watched by a client; a crashed \
                 node's watch expires in about 30 s)",
                e.message
            )),
            Failure::Denied => VolumeError::Denied(format!(
                "{at}: {} — client.{user} needs caps `mon 'profile rbd' osd 'profile rbd pool={pool}'`",
                e.message
            )),
            Failure::Unreachable => VolumeError::Unavailable(format!(
                "{at}: {} — check the monitors of clusterID {cluster} in the cluster config, and \
                 the userID/userKey in the StorageClass's Secret (a wrong key looks the same)",
                e.message
            )),
            Failure::NoCredentials => VolumeError::Invalid(format!(
                "{at}: {} — set the StorageClass's csi.storage.k8s.io/provisioner-secret-*, \
                 controller-expand-secret-* and node-stage-secret-* to a Secret holding them",
                e.message
            )),
            Failure::NoKernel => VolumeError::Unsupported(format!(
                "{at}: the kernel RBD driver (rbd.ko) is not available on this node: {}",
                e.message
            )),
            Failure::Exists | Failure::Other => VolumeError::Tool {
                program: "rbd".into(),
                message: format!("{what} (cluster {cluster}, pool {pool}): {}", e.message),
            },
        }
    }

    fn info(&self, id: &str) -> Result<Option<Info>, VolumeError> {
        let spec = self.spec(id);
        match self.rbd("info", &["info", "--format", "json", &spec]) {
            Ok(out) => serde_json::from_slice(&out)
                .map(Some)
                .map_err(|e| VolumeError::Tool {
                    program: "rbd".into(),
                    message: format!("info {spec}: unreadable output: {e}"),
                }),
            Err(VolumeError::Missing(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `--image-feature` and `--data-pool` for a new image.
    fn create_args(&self) -> Vec<String> {
        let mut a = vec!["--image-feature".into(), self.opts.features.join(",")];
        if let Some(d) = &self.opts.data_pool {
            a.extend(["--data-pool".into(), d.clone()]);
        }
        a
    }

    fn resize(&self, id: &str, size: u64) -> Result<(), VolumeError> {
        let (spec, size) = (self.spec(id), format!("{size}B"));
        self.rbd(
            "resize",
            &["resize", "--no-progress", "--size", &size, &spec],
        )?;
        Ok(())
    }

    /// Makes `target` a standalone copy of image `source`: a temporary
    /// snapshot, a clone v2 child of it, flattened, the snapshot removed.
    /// A retry after a crash at any step starts over cleanly.
    fn copy(&self, source: &str, target: &str) -> Result<(), VolumeError> {
        self.remove(target)?;
        let snap = self.copy_snap(source, target);
        self.remove_snap(&snap)?;
        match self.rbd("snap create", &["snap", "create", "--no-progress", &snap]) {
            Err(VolumeError::Missing(m)) => {
                return Err(VolumeError::Missing(format!("source {source}: {m}")));
            }
            r => r?,
        };
        let spec = self.spec(target);
        let mut args = vec!["clone", "--rbd-default-clone-format", "2"];
        let extra = self.create_args();
        args.extend(extra.iter().map(String::as_str));
        args.extend([snap.as_str(), spec.as_str()]);
        self.rbd("clone", &args)?;
        self.rbd("flatten", &["flatten", "--no-progress", &spec])?;
        self.remove_snap(&snap)
    }

    fn remove_snap(&self, snap: &str) -> Result<(), VolumeError> {
        match self.rbd("snap rm", &["snap", "rm", "--no-progress", snap]) {
            Ok(_) | Err(VolumeError::Missing(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The clients watching the image (`rbd status`), by address.
    fn watchers(&self, id: &str) -> Result<Vec<String>, VolumeError> {
        #[derive(Deserialize)]
        struct Status {
            #[serde(default)]
            watchers: Vec<Watcher>,
        }
        #[derive(Deserialize)]
        struct Watcher {
            address: String,
            client: u64,
        }
        let spec = self.spec(id);
        let out = self.rbd("status", &["status", "--format", "json", &spec])?;
        let s: Status = serde_json::from_slice(&out).map_err(|e| VolumeError::Tool {
            program: "rbd".into(),
            message: format!("status {spec}: unreadable output: {e}"),
        })?;
        Ok(s.watchers
            .iter()
            .map(|w| format!("client.{} at {}", w.client, w.address))
            .collect())
    }

    /// The image's metadata (`rbd image-meta list`).
    pub fn meta_list(&self, id: &str) -> Result<BTreeMap<String, String>, VolumeError> {
        let spec = self.spec(id);
        let out = self.rbd(
            "image-meta list",
            &["image-meta", "list", "--format", "json", &spec],
        )?;
        if out.iter().all(u8::is_ascii_whitespace) {
            return Ok(BTreeMap::new());
        }
        serde_json::from_slice(&out).map_err(|e| VolumeError::Tool {
            program: "rbd".into(),
            message: format!("image-meta list {spec}: unreadable output: {e}"),
        })
    }

    /// Sets one metadata key.
    pub fn meta_set(&self, id: &str, key: &str, value: &str) -> Result<(), VolumeError> {
        let spec = self.spec(id);
        self.rbd("image-meta set", &["image-meta", "set", &spec, key, value])?;
        Ok(())
    }

    /// Removes one metadata key (no error if absent).
    pub fn meta_remove(&self, id: &str, key: &str) -> Result<(), VolumeError> {
        let spec = self.spec(id);
        match self.rbd("image-meta remove", &["image-meta", "remove", &spec, key]) {
            Ok(_) | Err(VolumeError::Missing(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// What the image's metadata says about its encryption (current and
    /// legacy ceph-csi keys).
    pub fn encryption(&self, id: &str) -> Result<ImageEncryption, VolumeError> {
        Ok(ImageEncryption::from_meta(&self.meta_list(id)?))
    }

    /// Records the encryption state and, for a wrapping kmsID, the wrapped
    /// DEK (ceph-csi's keys): the DEK first, so an image never says
    /// `encryptionPrepared` without the key reference it needs.
    pub fn set_encryption(
        &self,
        id: &str,
        state: EncryptionState,
        dek: Option<&str>,
    ) -> Result<(), VolumeError> {
        if let Some(d) = dek {
            self.meta_set(id, meta::DEK, d)?;
        }
        self.meta_set(id, meta::ENCRYPTED, state.as_str())
    }

    /// The mapped devices of this pool's image `id` (all of them, so a
    /// double map is seen).
    fn mapped(&self, id: &str) -> Result<Vec<PathBuf>, VolumeError> {
        let out = self
            .cli
            .run_local(&["device", "list", "--format", "json"])
            .map_err(|e| self.error("device list", e))?;
        let all: Vec<Mapped> = if out.iter().all(u8::is_ascii_whitespace) {
            Vec::new()
        } else {
            serde_json::from_slice(&out).map_err(|e| VolumeError::Tool {
                program: "rbd".into(),
                message: format!("device list: unreadable output: {e}"),
            })?
        };
        Ok(all
            .into_iter()
            .filter(|m| {
                m.pool == self.opts.pool
                    && m.namespace.is_empty()
                    && m.name == self.image(id)
                    && (m.snap.is_empty() || m.snap == "-")
            })
            .map(|m| PathBuf::from(m.device))
            .collect())
    }
}

/// Tells krbd to re-read the header of mapped device `dev` (`/dev/rbdN`).
fn refresh(dev: &std::path::Path) -> Result<(), VolumeError> {
    let n = dev
        .to_str()
        .and_then(|d| d.strip_prefix("/dev/rbd"))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| VolumeError::Tool {
            program: "rbd".into(),
            message: format!("{} is not a krbd device", dev.display()),
        })?;
    let p = PathBuf::from(format!("/sys/bus/rbd/devices/{n}/refresh"));
    std::fs::write(&p, b"1").map_err(super::super::io_err(&p))
}

impl Backend for RbdBackend {
    fn name(&self) -> &'static str {
        "rbd"
    }

    fn create(&self, id: &str, size: u64, source: BlockSource<'_>) -> Result<(), VolumeError> {
        match source {
            BlockSource::Empty => {
                self.remove(id)?;
                let (spec, size) = (self.spec(id), format!("{size}B"));
                let mut args = vec!["create", "--size", &size];
                let extra = self.create_args();
                args.extend(extra.iter().map(String::as_str));
                args.push(&spec);
                self.rbd("create", &args)?;
            }
            BlockSource::Volume(src) | BlockSource::Snapshot(src) => {
                self.copy(src, id)?;
                if self.size(id)? < size {
                    self.resize(id, size)?;
                }
            }
        }
        Ok(())
    }

    fn snapshot(&self, volume: &str, snapshot: &str) -> Result<(), VolumeError> {
        self.copy(volume, snapshot)
    }

    /// Refuses while any client watches the image, as ceph-csi's
    /// DeleteVolume does. `rbd rm` alone would go further: it asks the
    /// exclusive lock's owner to let go and, when the owner does not answer
    /// (a node that hangs, or lost its network, and might still write),
    /// blocklists it and removes the image under it. Here a node is only
    /// fenced once its watch has expired (the OSD's watch timeout, 30 s by
    /// default): by then it is gone, and `rbd rm` breaks its stale lock.
    fn remove(&self, id: &str) -> Result<(), VolumeError> {
        let spec = self.spec(id);
        let watchers = match self.watchers(id) {
            Err(VolumeError::Missing(_)) => return Ok(()),
            w => w?,
        };
        if !watchers.is_empty() {
            let (cluster, pool) = (self.cli.cluster_id(), &self.opts.pool);
            return Err(VolumeError::Busy(format!(
                "rbd rm (cluster {cluster}, pool {pool}): image {} is still watched by {} — in \
                 use on a node (unstage it there), or the watch of a crashed node, which \
                 expires in about 30 s; retry then",
                self.image(id),
                watchers.join(", ")
            )));
        }
        // A crash in the middle of a copy from this image leaves its
        // temporary snapshot, which would block the removal.
        match self.rbd("snap purge", &["snap", "purge", "--no-progress", &spec]) {
            Err(VolumeError::Missing(_)) => return Ok(()),
            r => r?,
        };
        match self.rbd("rm", &["rm", "--no-progress", &spec]) {
            Ok(_) | Err(VolumeError::Missing(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn exists(&self, id: &str) -> bool {
        matches!(self.info(id), Ok(Some(_)))
    }

    fn size(&self, id: &str) -> Result<u64, VolumeError> {
        self.info(id)?
            .map(|i| i.size)
            .ok_or_else(|| VolumeError::Missing(format!("volume {id}")))
    }

    fn grow(&self, id: &str, size: u64) -> Result<(), VolumeError> {
        if self.size(id)? < size {
            self.resize(id, size)?;
        }
        // krbd learns of the new size from a header watch, in its own
        // time; a refresh makes a mapped device see it now.
        for dev in self.mapped(id)? {
            refresh(&dev)?;
        }
        Ok(())
    }

    fn attach(&self, id: &str) -> Result<PathBuf, VolumeError> {
        if let Some(dev) = self.attached(id)? {
            return Ok(dev);
        }
        let spec = self.spec(id);
        let out = self.rbd(
            "device map",
            &[
                "device",
                "map",
                "--device-type",
                "krbd",
                "-o",
                "noudev",
                &spec,
            ],
        )?;
        let dev = String::from_utf8_lossy(&out).trim().to_string();
        if !dev.starts_with("/dev/rbd") {
            return Err(VolumeError::Tool {
                program: "rbd".into(),
                message: format!("device map {spec}: unexpected output {dev:?}"),
            });
        }
        Ok(PathBuf::from(dev))
    }

    fn attached(&self, id: &str) -> Result<Option<PathBuf>, VolumeError> {
        Ok(self.mapped(id)?.into_iter().next())
    }

    fn detach(&self, id: &str) -> Result<(), VolumeError> {
        for dev in self.mapped(id)? {
            let dev = dev.display().to_string();
            // Unmapping is node-local: NodeUnstageVolume carries no
            // credentials, and needs none.
            self.cli
                .run_local(&["device", "unmap", "-o", "noudev", &dev])
                .map_err(|e| self.error("device unmap", e))?;
        }
        Ok(())
    }

    fn available_bytes(&self) -> Result<u64, VolumeError> {
        Err(VolumeError::Unsupported(
            "RBD pools are thin-provisioned: kmshost reports no capacity for them".into(),
        ))
    }

    fn set_key_reference(
        &self,
        id: &str,
        formatted: bool,
        wrapped: Option<&str>,
    ) -> Result<(), VolumeError> {
        let state = if formatted {
            EncryptionState::Encrypted
        } else {
            EncryptionState::Prepared
        };
        self.set_encryption(id, state, wrapped)
    }

    fn key_reference(&self, id: &str) -> Result<Option<KeyReference>, VolumeError> {
        let e = self.encryption(id)?;
        let Some(state) = e.state else {
            return Ok(None);
        };
        Ok(Some(KeyReference {
            formatted: state == EncryptionState::Encrypted,
            wrapped: e.dek.map(|d| meta::holding_blob(&d)),
        }))
    }

    fn check_ready(&self) -> Result<(), VolumeError> {
        let pool = &self.opts.pool;
        match self.cli.run(&["ls", "--format", "json", pool]) {
            Ok(_) => Ok(()),
            // `rbd ls` of a missing pool says "listing images failed: (2)".
            Err(e) if e.failure == Failure::Missing => Err(VolumeError::Invalid(format!(
                "pool {pool} does not exist in cluster {} (StorageClass parameter pool): {}",
                self.cli.cluster_id(),
                e.message
            ))),
            Err(e) => Err(self.error("ls", e)),
        }
    }

    fn header_path(&self, id: &str) -> Result<PathBuf, VolumeError> {
        Err(VolumeError::Precondition(format!(
            "volume {id} is not mapped on this node: LUKS header operations on an RBD image \
             need it mapped (NodeStage it first)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_default_dependencies_and_typos() {
        let ok: &[(&str, &[&str])] = &[
            ("", &["layering"]),
            ("layering", &["layering"]),
            (
                "layering,exclusive-lock,object-map,fast-diff,deep-flatten",
                &[
                    "layering",
                    "exclusive-lock",
                    "object-map",
                    "fast-diff",
                    "deep-flatten",
                ],
            ),
            ("exclusive-lock", &["layering", "exclusive-lock"]),
            (" layering , deep-flatten ", &["layering", "deep-flatten"]),
        ];
        for (s, want) in ok {
            assert_eq!(parse_features(s).unwrap(), *want, "{s}");
        }
        let bad = [
            ("layring", "\"layring\" is not an RBD image feature"),
            ("object-map", "object-map needs exclusive-lock"),
            ("exclusive-lock,fast-diff", "fast-diff needs object-map"),
            ("journaling", "journaling needs exclusive-lock"),
        ];
        for (s, want) in bad {
            let e = parse_features(s).unwrap_err().to_string();
            assert!(e.contains("imageFeatures") && e.contains(want), "{s}: {e}");
        }
    }

    #[test]
    fn pool_names_that_would_change_the_spec_are_refused() {
        for bad in ["", "a/b", "a@b", "-x", "a b", "a\nb"] {
            let e = ImageOptions::new(bad, None, "").unwrap_err().to_string();
            assert!(e.contains("parameter pool"), "{bad:?}: {e}");
        }
        let e = ImageOptions::new("rbd", Some("ec/x"), "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("parameter dataPool"), "{e}");
        let o = ImageOptions::new("replicapool", Some("ec-data"), "").unwrap();
        assert_eq!(o.data_pool.as_deref(), Some("ec-data"));
    }
}
