//! What kmshost keeps about each volume and snapshot: one JSON file each,
//! written atomically (temporary file, fsync, rename), never holding a key
//! in the clear — only which kmsID holds it, or the provider's wrapped blob.

use super::{VolumeError, create_private_dir, io_err};
use crate::kms::WrappedKey;
use crate::luks::Pbkdf;
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
    pub kms_id: String,
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
}

/// Records as JSON files in a directory.
#[derive(Debug, Clone)]
pub struct RecordStore {
    dir: PathBuf,
}

impl RecordStore {
    /// A store in `dir` (created 0700 if missing).
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, VolumeError> {
        let dir = dir.into();
        create_private_dir(&dir)?;
        Ok(RecordStore { dir })
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
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// Every volume record, sorted by ID.
    pub fn volumes(&self) -> Result<Vec<VolumeRecord>, VolumeError> {
        let mut ids: Vec<String> = std::fs::read_dir(&self.dir)
            .map_err(io_err(&self.dir))?
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                let id = name.strip_suffix(".json")?;
                (!id.starts_with('.')).then(|| id.to_string())
            })
            .collect();
        ids.sort();
        let mut out = Vec::new();
        for id in ids {
            if let Ok(Some(r)) = self.read::<VolumeRecord>(&id) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
