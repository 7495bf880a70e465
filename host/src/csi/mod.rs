//! The CSI driver: Identity, Controller and Node services over gRPC on a
//! unix socket, plus csi-addons' `EncryptionKeyRotation`.
//!
//! Volumes live in a [`Backend`] (sparse image files first); encrypted
//! volumes are LUKS2 with a random 256-bit passphrase that a kmsID wraps or
//! stores. The call flow is in `docs/csi.md`; in short:
//!
//! - **CreateVolume** records the volume (`creating`), creates its blocks,
//!   seals a new passphrase with the kmsID (wrap, else put), and marks it
//!   `ready`. A retry resumes; the same name with other settings is
//!   `AlreadyExists`.
//! - **NodeStage** attaches the device, fetches the key through the plugin,
//!   formats on first use only (never over any signature), opens it as
//!   `luks-<volume>`, creates the filesystem if blank, mounts it.
//! - **DeleteVolume** marks the record `deleting`, removes the blocks, then
//!   the key, then the record: the key is never deleted while the volume's
//!   data exists, and a KMS refusal fails the call (retried) with the
//!   record kept, so no key is ever orphaned silently.
//!
//! Every call takes a per-volume lock; a concurrent call gets `Aborted`.

mod adopt;
pub mod client;
mod controller;
mod error;
pub mod keys;
mod locks;
mod node;
pub mod params;
pub mod proto;
mod service;

pub use error::{CsiError, code_of};
pub use locks::{VolumeGuard, VolumeLocks};
pub use service::{serve, unix_channel};

use crate::kms::Kms;
use crate::volume::{Backend, Backends, Placement, RecordStore};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Generated gRPC services (tonic, from [`proto`]'s messages).
#[allow(missing_docs, clippy::all)]
pub mod grpc {
    include!(concat!(env!("OUT_DIR"), "/csi.v1.Identity.rs"));
    include!(concat!(env!("OUT_DIR"), "/csi.v1.Controller.rs"));
    include!(concat!(env!("OUT_DIR"), "/csi.v1.Node.rs"));
    include!(concat!(
        env!("OUT_DIR"),
        "/encryptionkeyrotation.EncryptionKeyRotationController.rs"
    ));
    /// csi-addons' `identity.Identity` (its own module: the name is CSI's too).
    pub mod addons {
        include!(concat!(env!("OUT_DIR"), "/identity.Identity.rs"));
    }
}

/// The driver name reported by GetPluginInfo.
pub const DRIVER_NAME: &str = "kmshost.csi.k8s.io";
/// Extra bytes an encrypted volume's image gets for its LUKS2 header, so
/// the usable size is what the CO asked for.
pub const LUKS_OVERHEAD: u64 = 16 << 20;
/// Size of a volume created without a capacity range.
pub const DEFAULT_CAPACITY: u64 = 1 << 30;
/// The smallest volume kmshost creates.
pub const MIN_CAPACITY: u64 = 16 << 20;
/// The smallest filesystem `mkfs.xfs` makes (xfsprogs 5.19 and later,
/// Debian 12's 6.1 among them): an xfs volume is never smaller.
pub const XFS_MIN_CAPACITY: u64 = 300 << 20;

/// Driver settings.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// GetPluginInfo name.
    pub name: String,
    /// This node's ID (NodeGetInfo).
    pub node_id: String,
    /// Filesystem when neither the capability nor the StorageClass names one.
    pub default_fs_type: String,
    /// How many NodeStage key fetches + keyslot unlocks run at once: bounds
    /// memory when the KDF is memory-hard (argon2id × this many).
    pub max_concurrent_unlocks: usize,
    /// After SIGTERM, how long in-flight calls get to finish before the
    /// process exits anyway (each call is safe to cut short: the CO retries
    /// it, and it converges).
    pub shutdown_grace: std::time::Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            name: DRIVER_NAME.into(),
            node_id: hostname(),
            default_fs_type: "ext4".into(),
            max_concurrent_unlocks: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            shutdown_grace: std::time::Duration::from_secs(50),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Serves the CSI driver on `endpoint` with volumes as image files under
/// `data_dir/images` and their records under `data_dir/records`, until
/// SIGTERM or Ctrl-C.
pub async fn run_image_file_driver(
    kms: Arc<Kms>,
    data_dir: &std::path::Path,
    endpoint: &str,
    config: DriverConfig,
) -> Result<(), CsiError> {
    let backend = crate::volume::ImageFileBackend::new(data_dir.join("images"))?;
    let driver = Driver::new(kms, Arc::new(backend), data_dir.join("records"), config)?;
    serve_until_signalled(driver, endpoint).await
}

/// Serves the CSI driver on `endpoint` with volumes as RBD images in the
/// clusters of ceph-csi's cluster config `clusters`, and their records
/// under `data_dir/records`, until SIGTERM or Ctrl-C.
pub async fn run_rbd_driver(
    kms: Arc<Kms>,
    clusters: crate::volume::rbd::ClusterConfig,
    data_dir: &std::path::Path,
    endpoint: &str,
    config: DriverConfig,
) -> Result<(), CsiError> {
    let backends = crate::volume::rbd::RbdVolumes::new(clusters);
    let driver = Driver::new(kms, Arc::new(backends), data_dir.join("records"), config)?;
    serve_until_signalled(driver, endpoint).await
}

async fn serve_until_signalled(driver: Driver, endpoint: &str) -> Result<(), CsiError> {
    let grace = driver.config.shutdown_grace;
    let signalled = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            },
            Err(_) => drop(tokio::signal::ctrl_c().await),
        }
    };
    serve_draining(Arc::new(driver), endpoint, signalled, grace).await
}

/// Serves until `signalled`, then stops taking calls and gives those in
/// flight `grace` to finish; past it, returns anyway (a call cut short is
/// retried by the CO and converges, as after a crash).
pub async fn serve_draining(
    driver: Arc<Driver>,
    endpoint: &str,
    signalled: impl Future<Output = ()> + Send,
    grace: std::time::Duration,
) -> Result<(), CsiError> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = serve(driver, endpoint, async {
        let _ = stopped.await;
    });
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => return r,
        () = signalled => {}
    }
    tracing::info!(
        grace_secs = grace.as_secs_f64(),
        "shutting down: draining calls in flight"
    );
    let _ = stop.send(());
    match tokio::time::timeout(grace, server).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(
                grace_secs = grace.as_secs_f64(),
                "calls still in flight after the grace period: exiting; the CO retries them"
            );
            Ok(())
        }
    }
}

/// The driver: what the gRPC services call.
pub struct Driver {
    kms: Arc<Kms>,
    backends: Arc<dyn Backends>,
    records: RecordStore,
    locks: Arc<VolumeLocks>,
    unlocks: Arc<Semaphore>,
    config: DriverConfig,
    /// This driver's number in the process (its crash points' prefix).
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    instance: u64,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("backends", &self.backends.name())
            .field("records", &self.records.dir())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// A driver keeping volume records in `state_dir`, volumes in
    /// `backends`, keys with `kms`.
    pub fn new(
        kms: Arc<Kms>,
        backends: Arc<dyn Backends>,
        state_dir: impl Into<PathBuf>,
        config: DriverConfig,
    ) -> Result<Self, CsiError> {
        let records = RecordStore::new(state_dir.into())?;
        Ok(Driver {
            kms,
            backends,
            records,
            locks: Arc::new(VolumeLocks::default()),
            unlocks: Arc::new(Semaphore::new(config.max_concurrent_unlocks.max(1))),
            config,
            instance: {
                static DRIVERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                DRIVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            },
        })
    }

    /// The KMS facade.
    pub fn kms(&self) -> &Arc<Kms> {
        &self.kms
    }

    /// The per-volume locks (a caller holding one makes CSI calls on that
    /// volume fail with `Aborted`).
    pub fn locks(&self) -> &Arc<VolumeLocks> {
        &self.locks
    }

    /// The volume records.
    pub fn records(&self) -> &RecordStore {
        &self.records
    }

    /// The backends.
    pub fn backends(&self) -> &Arc<dyn Backends> {
        &self.backends
    }

    /// The backend volume (or snapshot) `id` lives in, for calls that need
    /// no credentials (is it attached?): its record's placement, or the
    /// default one when it has no record.
    pub fn backend_of(&self, id: &str) -> Result<Arc<dyn Backend>, CsiError> {
        let placement = match self.records.volume(id)? {
            Some(r) => r.placement,
            None => match self.records.snapshot(id)? {
                Some(s) => s.placement,
                None => Placement::default(),
            },
        };
        Ok(self.backends.open(&placement, None)?)
    }

    /// The crash point of step `step` of this driver (the `fail` crate's
    /// name for it, `csi<N>.<step>`, N counting drivers in the process from
    /// 0): configured with `fail::cfg(name, "1*return")` (or the
    /// `FAILPOINTS` environment variable), the next call reaching the step
    /// stops there with `Internal`, as if the process had died right after
    /// it. The step names are listed in docs/csi.md. Compiled in only with
    /// the `failpoints` feature (the test suite's), never in a release
    /// build.
    #[cfg(feature = "failpoints")]
    pub fn failpoint(&self, step: &str) -> String {
        format!("csi{}.{step}", self.instance)
    }

    #[cfg_attr(not(feature = "failpoints"), allow(clippy::unused_self))]
    fn step(&self, name: &str) -> Result<(), CsiError> {
        #[cfg(feature = "failpoints")]
        fail::fail_point!(&self.failpoint(name), |_| Err(CsiError::internal(format!(
            "injected failure after {name}"
        ))));
        let _ = name;
        Ok(())
    }
}

/// Which backend a call acts on: a volume's placement, with the secrets
/// its request carries (the Ceph user of an RBD StorageClass).
#[derive(Clone, Copy)]
struct At<'a> {
    placement: &'a Placement,
    secrets: Option<&'a proto::Map>,
}

impl<'a> At<'a> {
    /// `placement` with `secrets` (none when the map is empty).
    fn new(placement: &'a Placement, secrets: &'a proto::Map) -> Self {
        At {
            placement,
            secrets: (!secrets.is_empty()).then_some(secrets),
        }
    }

    /// `placement`, for a call that carries no secrets.
    fn local(placement: &'a Placement) -> Self {
        At {
            placement,
            secrets: None,
        }
    }
}

impl Driver {
    /// Runs the backend operation `f` on volume (or snapshot) `id`, in the
    /// backend `at` names, off the async workers.
    async fn on_backend<T: Send + 'static>(
        &self,
        at: At<'_>,
        id: &str,
        f: impl FnOnce(&dyn Backend, &str) -> Result<T, crate::volume::VolumeError> + Send + 'static,
    ) -> Result<T, CsiError> {
        let b = self.backends.open(at.placement, at.secrets)?;
        let id = id.to_string();
        blocking(move || Ok(f(b.as_ref(), &id)?)).await
    }

    /// Bytes the backend has free for new volumes at `placement` (`None`:
    /// it reports no capacity — thin RBD pools).
    async fn available_bytes(&self, placement: &Placement) -> Result<Option<u64>, CsiError> {
        if !self.backends.reports_capacity() {
            return Ok(None);
        }
        self.on_backend(At::local(placement), "", |b, _| b.available_bytes())
            .await
            .map(Some)
    }
}

/// The size of a volume's blocks: the capacity, plus room for the LUKS2
/// header when encrypted.
fn image_size(capacity: u64, encrypted: bool) -> u64 {
    capacity + if encrypted { LUKS_OVERHEAD } else { 0 }
}

/// Runs blocking work (libcryptsetup, loop devices, mounts) off the async
/// workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CsiError> + Send + 'static,
) -> Result<T, CsiError> {
    tokio::task::spawn_blocking(f).await?
}

/// A volume ID derived from the CreateVolume name: the same name always
/// maps to the same ID, which makes CreateVolume idempotent across crashes.
pub fn volume_id_for(name: &str) -> String {
    derived_id("kh-vol-", name)
}

/// A snapshot ID derived from the CreateSnapshot name.
pub fn snapshot_id_for(name: &str) -> String {
    derived_id("kh-snap-", name)
}

fn derived_id(prefix: &str, name: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(name.as_bytes());
    format!("{prefix}{}", hex::encode(&h[..16]))
}

/// Checks a volume or snapshot ID from the CO: required, and never a path
/// (letters, digits, `-`, `_`, `.` only).
fn check_id(what: &str, id: &str) -> Result<(), CsiError> {
    if id.is_empty() {
        return Err(CsiError::invalid(format!("{what} is required")));
    }
    crate::kms::KeyId::new(id).map_err(|e| CsiError::invalid(format!("{what}: {e}")))?;
    Ok(())
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
