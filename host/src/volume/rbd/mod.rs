//! Ceph RBD volumes, the way ceph-csi users run them: images in a pool of
//! a cluster named by `clusterID` in ceph-csi's cluster config, reached as
//! the Ceph user of the StorageClass's Secret (`userID`, `userKey`), with
//! an encrypted image's key reference in its own metadata under
//! ceph-csi's keys.
//!
//! The room holds: [`cluster`] (the `config.json` clusterID → monitors
//! map), [`cli`] (running `rbd` as one user against one cluster), [`meta`]
//! (ceph-csi's image-metadata keys), [`RbdBackend`] (the [`Backend`]
//! operations on images) and [`RbdVolumes`] (StorageClass parameters to a
//! placement, and a backend per placement and request Secret).
//!
//! # Where a volume is: its record
//!
//! A volume's cluster and pool are kept in its record
//! ([`super::Placement`]) and passed to the node in the volume context
//! (`clusterID`, `pool`, `imageName`, as ceph-csi does); the volume ID
//! stays `kh-vol-<hash of the name>`, which keeps CreateVolume idempotent
//! across crashes and the ID usable as a KMS key name. ceph-csi instead
//! encodes the cluster and pool in the ID, because it keeps no state of
//! its own; kmshost has its records. The image is named by the volume ID.
//!
//! # The `rbd` CLI, not librbd
//!
//! kmshost drives the `rbd` tool with `--format json` rather than linking
//! librbd:
//! - ceph-csi itself uses the CLI for map/unmap, and the tool is what a
//!   Ceph admin debugs with: what kmshost does can be replayed by hand;
//! - no maintained Rust crate wraps librbd, and a hand-written FFI would
//!   put Ceph's C++ client — its threads, its `abort()` on internal
//!   asserts, its ABI per release — inside the process that holds the
//!   KMS credentials and signing keys; a separate process crashes alone;
//! - a call costs one process start (30–130 ms), small beside the
//!   control-plane operations it serves.
//!
//! The costs are handled in [`cli`]: the user's key goes in a 0600 file for
//! one call, never in argv; `-c /dev/null` keeps the node's `/etc/ceph` out;
//! every call has a deadline; errors are cut to ceph's one-line reason.
//!
//! [`Backend`]: super::Backend

pub mod backend;
pub mod cli;
pub mod cluster;
pub mod meta;
pub mod volumes;

pub use backend::{ImageOptions, RbdBackend};
pub use cli::{Credentials, RbdCli};
pub use cluster::{Cluster, ClusterConfig};
pub use meta::{EncryptionState, ImageEncryption};
pub use volumes::RbdVolumes;
