//! A CSI driver on a temporary unix socket, and a real gRPC client for it.

use kmshost::config::{ConfigSource, HostDefaults};
use kmshost::csi::client::Client;
use kmshost::csi::proto::{self, volume_capability};
use kmshost::csi::{Driver, DriverConfig};
use kmshost::kms::Kms;
use kmshost::secrets::{ChainedSecrets, MountedSecrets};
use kmshost::volume::{Backends, ImageFileBackend};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The drain a harness gives calls in flight when stopped (the driver's
/// default).
const GRACE: Duration = Duration::from_secs(50);

/// A running driver.
pub struct CsiHarness {
    pub dir: tempfile::TempDir,
    pub driver: Arc<Driver>,
    pub client: Client,
    pub config_path: PathBuf,
    pub secrets: PathBuf,
    /// The secrets every call that takes them carries (an RBD
    /// StorageClass's Ceph user); empty by default.
    pub request_secrets: HashMap<String, String>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// The passphrase Secret of the `metadata` kmsIDs.
pub const PASSPHRASE_SECRET: &str = "kms-pass";

/// A config with two `metadata` kmsIDs (different passphrases).
pub fn metadata_config() -> serde_json::Value {
    serde_json::json!({
        "meta-a": {"encryptionKMSType": "metadata", "secretName": PASSPHRASE_SECRET},
        "meta-b": {"encryptionKMSType": "metadata", "secretName": "kms-pass-b"},
    })
}

impl CsiHarness {
    /// Starts a driver with `config` (written to a file, so tests can change
    /// it while the driver runs).
    pub async fn start(config: &serde_json::Value) -> Self {
        Self::start_with(config, None).await
    }

    /// As [`CsiHarness::start`], reading tenant ConfigMaps from `config_maps`.
    pub async fn start_with(
        config: &serde_json::Value,
        config_maps: Option<Arc<dyn kmshost::secrets::ConfigMapSource>>,
    ) -> Self {
        Self::start_full(config, config_maps, None, HashMap::new(), GRACE).await
    }

    /// As [`CsiHarness::start`]; [`CsiHarness::stop`] then gives calls in
    /// flight `grace` to finish (SIGTERM's drain).
    pub async fn start_draining(config: &serde_json::Value, grace: Duration) -> Self {
        Self::start_full(config, None, None, HashMap::new(), grace).await
    }

    /// As [`CsiHarness::start`], with volumes in `backends` (RBD) and
    /// `request_secrets` on every call that takes secrets.
    pub async fn start_on(
        config: &serde_json::Value,
        backends: Arc<dyn Backends>,
        request_secrets: HashMap<String, String>,
    ) -> Self {
        Self::start_full(config, None, Some(backends), request_secrets, GRACE).await
    }

    async fn start_full(
        config: &serde_json::Value,
        config_maps: Option<Arc<dyn kmshost::secrets::ConfigMapSource>>,
        backends: Option<Arc<dyn Backends>>,
        request_secrets: HashMap<String, String>,
        grace: Duration,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets");
        super::write_secret(
            &secrets,
            PASSPHRASE_SECRET,
            &[("encryptionPassphrase", b"correct horse battery staple")],
        );
        super::write_secret(
            &secrets,
            "kms-pass-b",
            &[("encryptionPassphrase", b"another passphrase entirely")],
        );
        let config_path = dir.path().join("config.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let kms = Kms::new(
            ConfigSource::new(&config_path, HostDefaults::default()),
            super::sandbox(),
            Arc::new(ChainedSecrets::new().with(Arc::new(MountedSecrets::new(&secrets)))),
        );
        let kms = match config_maps {
            Some(c) => kms.with_config_maps(c),
            None => kms,
        };
        // SoftHSM2 may be used, by the name `softhsm` (loaded only when an
        // entry names it; super::softhsm::softhsm sets it up first).
        let kms = kms.with_hsm_modules(Arc::new(
            kmshost::capability::hsm::HsmModules::parse([format!(
                "softhsm={}",
                super::softhsm::MODULE
            )
            .as_str()])
            .unwrap(),
        ));
        let backends = backends
            .unwrap_or_else(|| Arc::new(ImageFileBackend::new(dir.path().join("images")).unwrap()));
        let driver = Arc::new(
            Driver::new(
                Arc::new(kms),
                backends,
                dir.path().join("records"),
                DriverConfig {
                    node_id: "node-1".into(),
                    ..Default::default()
                },
            )
            .unwrap(),
        );
        let endpoint = format!("unix://{}", dir.path().join("csi.sock").display());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let d = driver.clone();
        let ep = endpoint.clone();
        let server = tokio::spawn(async move {
            let stopped = async {
                let _ = rx.await;
            };
            kmshost::csi::serve_draining(d, &ep, stopped, grace)
                .await
                .unwrap();
        });
        let mut client = None;
        for _ in 0..100 {
            if let Ok(c) = Client::connect(&endpoint).await {
                client = Some(c);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        CsiHarness {
            dir,
            driver,
            client: client.expect("driver socket"),
            config_path,
            secrets,
            request_secrets,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// Replaces the KMS configuration file.
    pub fn set_config(&self, config: &serde_json::Value) {
        std::fs::write(&self.config_path, config.to_string()).unwrap();
    }

    /// A path under the harness directory.
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// The image file of a volume.
    pub fn image(&self, id: &str) -> PathBuf {
        self.dir.path().join("images").join(format!("{id}.img"))
    }

    /// CreateVolume.
    pub async fn create(
        &self,
        name: &str,
        size: i64,
        params: &[(&str, &str)],
        source: Option<proto::volume_content_source::Type>,
    ) -> Result<proto::Volume, tonic::Status> {
        self.client
            .controller
            .clone()
            .create_volume(proto::CreateVolumeRequest {
                name: name.into(),
                capacity_range: Some(proto::CapacityRange {
                    required_bytes: size,
                    limit_bytes: 0,
                }),
                volume_capabilities: vec![mount_cap("")],
                parameters: params
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<HashMap<_, _>>(),
                secrets: self.request_secrets.clone(),
                volume_content_source: source
                    .map(|t| proto::VolumeContentSource { r#type: Some(t) }),
            })
            .await
            .map(|r| r.into_inner().volume.unwrap())
    }

    /// DeleteVolume.
    pub async fn delete(&self, id: &str) -> Result<(), tonic::Status> {
        self.client
            .controller
            .clone()
            .delete_volume(proto::DeleteVolumeRequest {
                volume_id: id.into(),
                secrets: self.request_secrets.clone(),
            })
            .await
            .map(|_| ())
    }

    /// NodeStageVolume.
    pub async fn stage(
        &self,
        id: &str,
        staging: &Path,
        cap: proto::VolumeCapability,
    ) -> Result<(), tonic::Status> {
        self.stage_from(id, staging, cap, proto::Map::new()).await
    }

    /// NodeStageVolume with a volume context (what CreateVolume returned,
    /// or a static PersistentVolume's `volumeAttributes`).
    pub async fn stage_from(
        &self,
        id: &str,
        staging: &Path,
        cap: proto::VolumeCapability,
        volume_context: proto::Map,
    ) -> Result<(), tonic::Status> {
        self.client
            .node
            .clone()
            .node_stage_volume(proto::NodeStageVolumeRequest {
                volume_id: id.into(),
                staging_target_path: staging.to_string_lossy().into(),
                volume_capability: Some(cap),
                volume_context,
                secrets: self.request_secrets.clone(),
                ..Default::default()
            })
            .await
            .map(|_| ())
    }

    /// NodeUnstageVolume.
    pub async fn unstage(&self, id: &str, staging: &Path) -> Result<(), tonic::Status> {
        self.client
            .node
            .clone()
            .node_unstage_volume(proto::NodeUnstageVolumeRequest {
                volume_id: id.into(),
                staging_target_path: staging.to_string_lossy().into(),
            })
            .await
            .map(|_| ())
    }

    /// NodePublishVolume.
    pub async fn publish(
        &self,
        id: &str,
        staging: &Path,
        target: &Path,
        cap: proto::VolumeCapability,
        readonly: bool,
    ) -> Result<(), tonic::Status> {
        self.client
            .node
            .clone()
            .node_publish_volume(proto::NodePublishVolumeRequest {
                volume_id: id.into(),
                staging_target_path: staging.to_string_lossy().into(),
                target_path: target.to_string_lossy().into(),
                volume_capability: Some(cap),
                readonly,
                ..Default::default()
            })
            .await
            .map(|_| ())
    }

    /// NodeUnpublishVolume.
    pub async fn unpublish(&self, id: &str, target: &Path) -> Result<(), tonic::Status> {
        self.client
            .node
            .clone()
            .node_unpublish_volume(proto::NodeUnpublishVolumeRequest {
                volume_id: id.into(),
                target_path: target.to_string_lossy().into(),
            })
            .await
            .map(|_| ())
    }

    /// ControllerExpandVolume to `bytes`, with the request secrets.
    pub async fn expand(
        &self,
        id: &str,
        bytes: i64,
    ) -> Result<proto::ControllerExpandVolumeResponse, tonic::Status> {
        self.client
            .controller
            .clone()
            .controller_expand_volume(proto::ControllerExpandVolumeRequest {
                volume_id: id.into(),
                capacity_range: Some(proto::CapacityRange {
                    required_bytes: bytes,
                    limit_bytes: 0,
                }),
                secrets: self.request_secrets.clone(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    }

    /// NodeExpandVolume of the volume staged or published at `path`, with
    /// the request secrets.
    pub async fn node_expand(
        &self,
        id: &str,
        path: &Path,
    ) -> Result<proto::NodeExpandVolumeResponse, tonic::Status> {
        self.client
            .node
            .clone()
            .node_expand_volume(proto::NodeExpandVolumeRequest {
                volume_id: id.into(),
                volume_path: path.to_string_lossy().into(),
                secrets: self.request_secrets.clone(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    }

    /// EncryptionKeyRotate.
    pub async fn rotate(&self, id: &str) -> Result<(), tonic::Status> {
        self.client
            .rotation
            .clone()
            .encryption_key_rotate(proto::EncryptionKeyRotateRequest {
                volume_id: id.into(),
                secrets: self.request_secrets.clone(),
                ..Default::default()
            })
            .await
            .map(|_| ())
    }

    /// Whether volume `id`'s block device is attached on this node.
    pub fn attached(&self, id: &str) -> bool {
        let backend = self.driver.backend_of(id).unwrap();
        backend.attached(id).unwrap().is_some()
    }

    /// The volume record.
    pub fn record(&self, id: &str) -> Option<kmshost::volume::VolumeRecord> {
        self.driver.records().volume(id).unwrap()
    }

    /// Creates the encrypted volume `name` with kmsID `kms_id` (panics if
    /// CreateVolume fails); returns its volume ID.
    pub async fn create_encrypted(&self, name: &str, size: i64, kms_id: &str) -> String {
        let params = [("encrypted", "true"), ("encryptionKMSID", kms_id)];
        self.create(name, size, &params, None)
            .await
            .unwrap_or_else(|e| panic!("CreateVolume {name} with {kms_id}: {e:?}"))
            .volume_id
    }

    /// How volume `id`'s record holds its key (panics if it has no record
    /// or is not encrypted).
    pub fn holding(&self, id: &str) -> kmshost::volume::KeyHolding {
        self.record(id)
            .and_then(|r| r.encryption)
            .unwrap_or_else(|| panic!("{id}: no encrypted record"))
            .key
    }

    /// The passphrase volume `id`'s record holds now, opened the way the
    /// node opens it (`csi::keys::open`: unwrapped, or fetched from the
    /// store).
    pub async fn passphrase(&self, id: &str) -> kmshost::kms::Passphrase {
        let enc = self
            .record(id)
            .unwrap()
            .encryption
            .expect("an encrypted volume");
        kmshost::csi::keys::open(self.driver.kms(), &enc, id)
            .await
            .unwrap()
    }

    /// Stops the server.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(s) = self.server.take() {
            let _ = s.await;
        }
    }
}

impl Drop for CsiHarness {
    fn drop(&mut self) {
        // Leave no mounts or loop devices behind, whatever a test did.
        let root = self.dir.path().to_path_buf();
        if let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") {
            let mut mounts: Vec<_> = kmshost::volume::sys::parse_mountinfo(&text)
                .into_iter()
                .filter(|m| m.target.starts_with(&root))
                .collect();
            mounts.reverse();
            for m in mounts {
                let _ = std::process::Command::new("umount").arg(&m.target).status();
            }
        }
        if let Ok(rd) = std::fs::read_dir(root.join("images")) {
            for e in rd.flatten() {
                if let Ok(devs) = kmshost::volume::sys::loops_for(&e.path()) {
                    for d in devs {
                        let _ = kmshost::volume::sys::loop_detach(&d.path);
                    }
                }
            }
        }
    }
}

/// A mount capability (single-node writer).
pub fn mount_cap(fs: &str) -> proto::VolumeCapability {
    kmshost::csi::client::capability(false, fs)
}

/// A block capability (single-node writer).
pub fn block_cap() -> proto::VolumeCapability {
    kmshost::csi::client::capability(true, "")
}

/// A capability with `mode`.
pub fn cap_with_mode(mode: volume_capability::Mode) -> proto::VolumeCapability {
    let mut c = mount_cap("");
    c.access_mode = Some(volume_capability::AccessMode { mode: mode as i32 });
    c
}

/// Clone source.
pub fn from_volume(id: &str) -> Option<proto::volume_content_source::Type> {
    Some(proto::volume_content_source::Type::Volume(
        proto::volume_content_source::VolumeSource {
            volume_id: id.into(),
        },
    ))
}

/// Restore source.
pub fn from_snapshot(id: &str) -> Option<proto::volume_content_source::Type> {
    Some(proto::volume_content_source::Type::Snapshot(
        proto::volume_content_source::SnapshotSource {
            snapshot_id: id.into(),
        },
    ))
}

/// `blkid`'s TYPE of a file or device.
pub fn blkid_type(path: &Path) -> Option<String> {
    kmshost::volume::sys::probe_type(path).unwrap()
}

/// MiB.
pub const MIB: i64 = 1 << 20;
