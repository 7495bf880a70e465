//! Ceph RBD volumes, the way ceph-csi users run them: images in a pool of
//! a cluster named by `clusterID` in ceph-csi's cluster config, reached as
//! the Ceph user of the StorageClass's Secret (`userID`, `userKey`), with
//! an encrypted image's key reference in its own metadata under
//! ceph-csi's keys.
//!
//! The room holds: [`cluster`] (the `config.json` clusterID → monitors
//! map), [`cli`] (running `rbd` as one user against one cluster), [`meta`]
//! (ceph-csi's image-metadata keys) and [`RbdBackend`] (the [`Backend`]
//! operations on images).
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

pub use backend::{ImageOptions, RbdBackend};
pub use cli::{Credentials, RbdCli};
pub use cluster::{Cluster, ClusterConfig};
pub use meta::{EncryptionState, ImageEncryption};
