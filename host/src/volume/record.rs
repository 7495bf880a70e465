//! What kmshost keeps about each volume and snapshot: one JSON file each,
//! written atomically (temporary file, fsync, rename), never holding a key
//! in the clear — only which kmsID holds it, or the provider's wrapped blob.

use super::{VolumeError, create_private_dir, io_err};
use crate::luks::Pbkdf;
use crate::types::{KmsId, WrappedKey};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where a volume is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VolumeState {
    /// CreateVolume started; a retry resumes it.
    Creating,
    /// Usable.
    Ready,
    /// DeleteVolume started: the data may be gone already, the key not yet.
    Deleting,
}

/// How the volume key is held by its kmsID.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum KeyHolding {
    /// No key yet (CreateVolume was interrupted before storing it).
    Pending,
    /// A key-store provider keeps it under the volume ID (get/put/delete).
    Stored,
    /// A wrapping provider wrapped it; the blob is kept here.
    Wrapped {
        /// The wrapped key, base64.
        blob: String,
    },
}

impl std::fmt::Debug for KeyHolding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyHolding::Pending => f.write_str("Pending"),
            KeyHolding::Stored => f.write_str("Stored"),
            KeyHolding::Wrapped { blob } => write!(f, "Wrapped({} base64 chars)", blob.len()),
        }
    }
}

impl KeyHolding {
    /// A holding for a wrapped blob.
    pub fn wrapped(w: &WrappedKey) -> Self {
        KeyHolding::Wrapped {
            blob: base64::engine::general_purpose::STANDARD.encode(w.as_bytes()),
        }
    }

    /// The wrapped blob, if this is one.
    pub fn wrapped_key(&self) -> Option<WrappedKey> {
        match self {
            KeyHolding::Wrapped { blob } => base64::engine::general_purpose::STANDARD
                .decode(blob)
                .ok()
                .map(WrappedKey::new),
            _ => None,
        }
    }
}

/// A volume's (or snapshot's) encryption settings and key location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// The kmsID holding the key.
    pub kms_id: KmsId,
    /// The tenant (the PVC's namespace) the kmsID is used as, if known:
    /// per-tenant settings and token ([`crate::config::tenant`]).
    #[serde(default)]
    pub tenant: Option<String>,
    /// How it holds it.
    pub key: KeyHolding,
    /// Cipher (`aes`).
    pub cipher: String,
    /// Cipher mode (`xts-plain64`).
    pub cipher_mode: String,
    /// Volume key size in bits.
    pub key_size_bits: usize,
    /// Keyslot KDF.
    pub pbkdf: Pbkdf,
    /// Encryption sector size (0: libcryptsetup's choice).
    pub sector_size: u32,
    /// Whether the device carries its LUKS2 header yet (ceph-csi:
    /// "encryptionPrepared" → "encrypted"). Formatting happens at the
    /// first NodeStage.
    pub formatted: bool,
}

/// Where a volume's content came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContentSource {
    /// A clone of this volume.
    Volume(String),
    /// Restored from this snapshot.
    Snapshot(String),
}

/// What kmshost knows about a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// Record format version.
    pub version: u32,
    /// The volume ID.
    pub volume_id: String,
    /// The CreateVolume name.
    pub name: String,
    /// Usable capacity in bytes (what the CO asked for).
    pub capacity_bytes: u64,
    /// Life state.
    pub state: VolumeState,
    /// Default filesystem for mount access.
    pub fs_type: String,
    /// Encryption, if encrypted.
    pub encryption: Option<Encryption>,
    /// Clone or restore source.
    pub content_source: Option<ContentSource>,
    /// sha256 of the creation parameters, to tell a retry from a conflict.
    pub parameters_digest: String,
    /// Creation time (Unix seconds).
    pub created_unix: i64,
    /// Where its blocks are (an image file in records written before).
    #[serde(default)]
    pub placement: super::Placement,
    /// Staged from a volume context, not created by this driver (an
    /// image ceph-csi made, or one another node's controller made):
    /// DeleteVolume forgets it and leaves its blocks and its key alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,
}

/// What kmshost knows about a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// Record format version.
    pub version: u32,
    /// The snapshot ID.
    pub snapshot_id: String,
    /// The CreateSnapshot name.
    pub name: String,
    /// The volume it copies.
    pub source_volume_id: String,
    /// The source's capacity.
    pub size_bytes: u64,
    /// Life state.
    pub state: VolumeState,
    /// The source's filesystem default.
    pub fs_type: String,
    /// Encryption (the key is re-stored under the snapshot ID).
    pub encryption: Option<Encryption>,
    /// Creation time (Unix seconds).
    pub created_unix: i64,
    /// Where its blocks are: the source's placement.
    #[serde(default)]
    pub placement: super::Placement,
}

/// Records as JSON files in a directory, with an in-memory sorted index
/// of their IDs (read from the directory once, then kept by this store's
/// writes and removals), so a page of a listing reads only that page's
/// records whatever their number.
#[derive(Debug, Clone)]
pub struct RecordStore {
    dir: PathBuf,
    index: std::sync::Arc<std::sync::Mutex<Option<std::collections::BTreeSet<String>>>>,
}

impl RecordStore {
    /// A store in `dir` (created 0700 if missing).
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, VolumeError> {
        let dir = dir.into();
        create_private_dir(&dir)?;
        Ok(RecordStore {
            dir,
            index: Default::default(),
        })
    }

    /// Runs `f` on the index, reading the directory the first time.
    fn with_index<R>(
        &self,
        f: impl FnOnce(&mut std::collections::BTreeSet<String>) -> R,
    ) -> Result<R, VolumeError> {
        let mut guard = self.index.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let ids = std::fs::read_dir(&self.dir)
                .map_err(io_err(&self.dir))?
                .filter_map(|e| {
                    let name = e.ok()?.file_name().into_string().ok()?;
                    let id = name.strip_suffix(".json")?;
                    (!id.starts_with('.')).then(|| id.to_string())
                })
                .collect();
            *guard = Some(ids);
        }
        Ok(f(guard.as_mut().expect("loaded above")))
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn read<T: for<'de> Deserialize<'de>>(&self, id: &str) -> Result<Option<T>, VolumeError> {
        let p = self.path(id);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| VolumeError::Record {
                    path: p.clone(),
                    message: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    fn write<T: Serialize>(&self, id: &str, value: &T) -> Result<(), VolumeError> {
        use std::io::Write;
        let p = self.path(id);
        let tmp = self.dir.join(format!(".{id}.json.tmp"));
        let body = serde_json::to_vec_pretty(value).map_err(|e| VolumeError::Record {
            path: p.clone(),
            message: e.to_string(),
        })?;
        let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&body).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &p).map_err(io_err(&p))?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.with_index(|ids| ids.insert(id.to_string()))?;
        Ok(())
    }

    /// The volume record `id`.
    pub fn volume(&self, id: &str) -> Result<Option<VolumeRecord>, VolumeError> {
        self.read(id)
    }

    /// Writes a volume record.
    pub fn put_volume(&self, r: &VolumeRecord) -> Result<(), VolumeError> {
        self.write(&r.volume_id, r)
    }

    /// The snapshot record `id`.
    pub fn snapshot(&self, id: &str) -> Result<Option<SnapshotRecord>, VolumeError> {
        self.read(id)
    }

    /// Writes a snapshot record.
    pub fn put_snapshot(&self, r: &SnapshotRecord) -> Result<(), VolumeError> {
        self.write(&r.snapshot_id, r)
    }

    /// Removes record `id` (no error if gone).
    pub fn remove(&self, id: &str) -> Result<(), VolumeError> {
        let p = self.path(id);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&p)(e)),
        }
        self.with_index(|ids| ids.remove(id))?;
        Ok(())
    }

    /// Up to `limit` record IDs starting with `prefix`, after `after` (in
    /// ID order; from the first without it). Costs the length of the answer,
    /// not the number of records.
    pub fn ids(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, VolumeError> {
        use std::ops::Bound;
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a.to_string()),
            _ => Bound::Included(prefix.to_string()),
        };
        self.with_index(|ids| {
            ids.range((start, Bound::Unbounded))
                .take_while(|id| id.starts_with(prefix))
                .take(limit)
                .cloned()
                .collect()
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> VolumeRecord {
        VolumeRecord {
            version: 1,
            volume_id: id.into(),
            name: id.into(),
            capacity_bytes: 1,
            state: VolumeState::Ready,
            fs_type: "ext4".into(),
            encryption: None,
            content_source: None,
            parameters_digest: String::new(),
            created_unix: 0,
            placement: Default::default(),
            adopted: false,
        }
    }

    #[test]
    fn ids_page_by_prefix_and_follow_writes_and_removals() {
        let dir = tempfile::tempdir().unwrap();
        // Records already on disk are indexed when the store first lists.
        std::fs::create_dir_all(dir.path()).unwrap();
        let first = RecordStore::new(dir.path()).unwrap();
        for id in ["kh-vol-b", "kh-vol-a", "kh-snap-a"] {
            first.put_volume(&record(id)).unwrap();
        }
        let s = RecordStore::new(dir.path()).unwrap();
        assert_eq!(
            s.ids("kh-vol-", None, 10).unwrap(),
            ["kh-vol-a", "kh-vol-b"]
        );
        assert_eq!(
            s.ids("kh-vol-", Some("kh-vol-a"), 10).unwrap(),
            ["kh-vol-b"]
        );
        assert_eq!(s.ids("kh-vol-", None, 1).unwrap(), ["kh-vol-a"]);
        // A token before the prefix starts at the prefix; one past it ends.
        assert_eq!(s.ids("kh-vol-", Some("kh-snap-z"), 10).unwrap().len(), 2);
        assert!(s.ids("kh-vol-", Some("kh-vol-z"), 10).unwrap().is_empty());
        // Writes and removals through the store keep the index.
        s.put_volume(&record("kh-vol-c")).unwrap();
        s.remove("kh-vol-a").unwrap();
        assert_eq!(
            s.ids("kh-vol-", None, 10).unwrap(),
            ["kh-vol-b", "kh-vol-c"]
        );
        assert_eq!(s.ids("kh-snap-", None, 10).unwrap(), ["kh-snap-a"]);
    }
}
