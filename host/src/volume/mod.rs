//! Volumes: where their blocks live ([`Backend`]) and what kmshost knows
//! about them ([`VolumeRecord`], [`SnapshotRecord`] in a [`RecordStore`]).
//!
//! The first backend is [`ImageFileBackend`]: sparse image files in a data
//! directory, attached with loop devices at stage time. [`rbd`] keeps them
//! as Ceph RBD images. Other block sources implement the same trait.

mod image;
mod placement;
pub mod rbd;
mod record;
pub mod sys;

pub use image::ImageFileBackend;
pub use placement::{Backends, Placement, Renamed};
pub use record::{
    ContentSource, Encryption, KeyHolding, RecordStore, SnapshotRecord, VolumeRecord, VolumeState,
};

use std::path::{Path, PathBuf};

/// What went wrong below the CSI layer.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A file-system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A node tool failed.
    #[error("{program}: {message}")]
    Tool {
        /// The program.
        program: String,
        /// Its message.
        message: String,
    },
    /// Not offered by this backend or node.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// The volume or snapshot does not exist.
    #[error("{0} does not exist")]
    Missing(String),
    /// In use elsewhere (an RBD image with watchers): retry later.
    #[error("{0}")]
    Busy(String),
    /// The storage refused the credentials' user this operation.
    #[error("{0}")]
    Denied(String),
    /// The storage was not reached: retry later.
    #[error("{0}")]
    Unavailable(String),
    /// Not possible in the volume's present state (an RBD image not mapped
    /// on this node).
    #[error("{0}")]
    Precondition(String),
    /// A stored record could not be read.
    #[error("record {path}: {message}")]
    Record {
        /// The record file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Where a new volume's blocks come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockSource<'a> {
    /// Zeroes (a new, empty volume).
    Empty,
    /// A copy of another volume.
    Volume(&'a str),
    /// A copy of a snapshot.
    Snapshot(&'a str),
}

/// A source of block devices for volumes. Methods are blocking; every one
/// is idempotent, so a retried call after a crash converges.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// A short name for logs (`image-file`).
    fn name(&self) -> &'static str;
    /// Creates volume `id` of `size` bytes from `source`, replacing any
    /// partial result of an earlier attempt.
    fn create(&self, id: &str, size: u64, source: BlockSource<'_>) -> Result<(), VolumeError>;
    /// Copies volume `volume` into snapshot `snapshot`.
    fn snapshot(&self, volume: &str, snapshot: &str) -> Result<(), VolumeError>;
    /// Removes volume or snapshot `id` (no error if already gone).
    fn remove(&self, id: &str) -> Result<(), VolumeError>;
    /// Whether `id` exists.
    fn exists(&self, id: &str) -> bool;
    /// Current size of `id` in bytes.
    fn size(&self, id: &str) -> Result<u64, VolumeError>;
    /// Grows volume `id` to `size` bytes (never shrinks); an attached
    /// device is told about the new size.
    fn grow(&self, id: &str, size: u64) -> Result<(), VolumeError>;
    /// Attaches `id` as a block device (returns the existing one if
    /// already attached).
    fn attach(&self, id: &str) -> Result<PathBuf, VolumeError>;
    /// The attached block device of `id`, if any.
    fn attached(&self, id: &str) -> Result<Option<PathBuf>, VolumeError>;
    /// Detaches `id` (no error if not attached).
    fn detach(&self, id: &str) -> Result<(), VolumeError>;
    /// Bytes available for new volumes.
    fn available_bytes(&self) -> Result<u64, VolumeError>;
    /// Checks, before anything is created or recorded, that new volumes
    /// can be made here (RBD: the pool exists and the user reaches it).
    fn check_ready(&self) -> Result<(), VolumeError> {
        Ok(())
    }
    /// A path libcryptsetup can open for header operations on `id` when it
    /// is not attached (the image file itself), or why there is none.
    fn header_path(&self, id: &str) -> Result<PathBuf, VolumeError>;
    /// Records on the volume itself how its key is held, where the backend
    /// keeps per-volume metadata (RBD: ceph-csi's image-meta keys — the
    /// state, `encryptionPrepared` until `formatted`, then `encrypted`, and
    /// a wrapping kmsID's blob). Elsewhere a no-op: the record holds it.
    fn set_key_reference(
        &self,
        id: &str,
        formatted: bool,
        wrapped: Option<&str>,
    ) -> Result<(), VolumeError> {
        let _ = (id, formatted, wrapped);
        Ok(())
    }
    /// What the volume itself records of its key, where the backend keeps
    /// per-volume metadata: whether it is formatted, and a wrapped key
    /// (base64 of the blob). `None`: nothing recorded, or no metadata.
    fn key_reference(&self, id: &str) -> Result<Option<KeyReference>, VolumeError> {
        let _ = id;
        Ok(None)
    }
}

/// What a volume records of its own key ([`Backend::key_reference`]).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyReference {
    /// Its LUKS2 header is written.
    pub formatted: bool,
    /// A wrapping kmsID's blob, base64 (what [`KeyHolding::Wrapped`]
    /// holds); `None` for a key kept in the KMS under the volume ID.
    pub wrapped: Option<String>,
}

impl std::fmt::Debug for KeyReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyReference")
            .field("formatted", &self.formatted)
            .field("wrapped", &self.wrapped.as_ref().map(String::len))
            .finish()
    }
}

/// Creates `dir` (and parents) with mode 0700 if missing.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), VolumeError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Io {
        path: path.to_path_buf(),
        source,
    }
}
