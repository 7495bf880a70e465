//! A small CSI client over the unix socket, for `kmshost volume ...` (what
//! a CO would send, one call at a time). Each method is one CSI call, with
//! the answer reduced to what the command prints.

use super::grpc::addons::identity_client::IdentityClient as AddonsIdentityClient;
use super::grpc::{
    controller_client::ControllerClient,
    encryption_key_rotation_controller_client::EncryptionKeyRotationControllerClient,
    identity_client::IdentityClient, node_client::NodeClient,
};
use super::proto::{self, *};
use super::{CsiError, unix_channel};
use std::collections::HashMap;
use tonic::transport::Channel;

/// Clients of every service on one channel.
#[derive(Debug, Clone)]
pub struct Client {
    /// Identity.
    pub identity: IdentityClient<Channel>,
    /// Controller.
    pub controller: ControllerClient<Channel>,
    /// Node.
    pub node: NodeClient<Channel>,
    /// csi-addons key rotation.
    pub rotation: EncryptionKeyRotationControllerClient<Channel>,
    /// csi-addons identity (what the csi-addons sidecar asks).
    pub addons: AddonsIdentityClient<Channel>,
}

/// A block or mount capability with single-node-writer access.
pub fn capability(block: bool, fs_type: &str) -> proto::VolumeCapability {
    proto::VolumeCapability {
        access_type: Some(if block {
            volume_capability::AccessType::Block(volume_capability::BlockVolume {})
        } else {
            volume_capability::AccessType::Mount(volume_capability::MountVolume {
                fs_type: fs_type.into(),
                ..Default::default()
            })
        }),
        access_mode: Some(volume_capability::AccessMode {
            mode: volume_capability::Mode::SingleNodeWriter as i32,
        }),
    }
}

/// Parses a size: bytes, or with a `Ki`/`Mi`/`Gi`/`Ti` (or `K`/`M`/`G`/`T`,
/// also powers of two) suffix.
pub fn parse_size(s: &str) -> Result<u64, CsiError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| CsiError::invalid(format!("size {s:?}")))?;
    let shift = match unit.trim_end_matches('i').trim_end_matches('B') {
        "" => 0,
        "K" | "k" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => {
            return Err(CsiError::invalid(format!(
                "size {s:?}: unknown unit {unit:?}"
            )));
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| CsiError::invalid(format!("size {s:?} is too large")))
}

impl Client {
    /// Connects to `endpoint` (`unix:///path`).
    pub async fn connect(endpoint: &str) -> Result<Self, CsiError> {
        let ch = unix_channel(endpoint).await?;
        Ok(Client {
            identity: IdentityClient::new(ch.clone()),
            controller: ControllerClient::new(ch.clone()),
            node: NodeClient::new(ch.clone()),
            rotation: EncryptionKeyRotationControllerClient::new(ch.clone()),
            addons: AddonsIdentityClient::new(ch),
        })
    }
}

/// Where a new volume's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Empty.
    None,
    /// A clone of this volume.
    Volume(String),
    /// A restore of this snapshot.
    Snapshot(String),
}

fn range(size: &str) -> Result<Option<CapacityRange>, tonic::Status> {
    Ok(Some(CapacityRange {
        required_bytes: parse_size(size)? as i64,
        limit_bytes: 0,
    }))
}

fn path(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

/// `key=value` pairs into CSI parameters; the error names the bad pair.
pub fn parameters(pairs: &[String]) -> Result<HashMap<String, String>, CsiError> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => Err(CsiError::invalid(format!(
                "--param {p:?}: expected key=value"
            ))),
        })
        .collect()
}

type Status = tonic::Status;

impl Client {
    /// Probe and GetPluginInfo: `name version: ready=…`.
    pub async fn probe(&mut self) -> Result<String, Status> {
        let r = self.identity.probe(ProbeRequest {}).await?.into_inner();
        let info = self
            .identity
            .get_plugin_info(GetPluginInfoRequest {})
            .await?
            .into_inner();
        Ok(format!(
            "{} {}: ready={}",
            info.name,
            info.vendor_version,
            r.ready.unwrap_or(true)
        ))
    }

    /// CreateVolume (a mount volume); the new volume's ID.
    pub async fn create_volume(
        &mut self,
        name: String,
        size: &str,
        parameters: HashMap<String, String>,
        source: Source,
    ) -> Result<String, Status> {
        use volume_content_source::{SnapshotSource, Type, VolumeSource};
        let source = match source {
            Source::None => None,
            Source::Volume(volume_id) => Some(Type::Volume(VolumeSource { volume_id })),
            Source::Snapshot(snapshot_id) => Some(Type::Snapshot(SnapshotSource { snapshot_id })),
        };
        let v = self
            .controller
            .create_volume(CreateVolumeRequest {
                name,
                capacity_range: range(size)?,
                volume_capabilities: vec![capability(false, "")],
                parameters,
                secrets: Default::default(),
                volume_content_source: source.map(|t| VolumeContentSource { r#type: Some(t) }),
            })
            .await?
            .into_inner()
            .volume
            .ok_or_else(|| Status::internal("no volume in the response"))?;
        Ok(v.volume_id)
    }

    /// DeleteVolume.
    pub async fn delete_volume(&mut self, volume_id: String) -> Result<(), Status> {
        let req = DeleteVolumeRequest {
            volume_id,
            secrets: Default::default(),
        };
        self.controller.delete_volume(req).await.map(drop)
    }

    /// ListVolumes (first page): one `id<TAB>bytes<TAB>k=v,…` line each.
    pub async fn list_volumes(&mut self) -> Result<Vec<String>, Status> {
        let r = self
            .controller
            .list_volumes(ListVolumesRequest::default())
            .await?
            .into_inner();
        Ok(r.entries
            .into_iter()
            .filter_map(|e| e.volume)
            .map(|e| {
                let mut ctx: Vec<_> = e.volume_context.into_iter().collect();
                ctx.sort();
                let ctx: Vec<String> = ctx.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{}\t{}\t{}", e.volume_id, e.capacity_bytes, ctx.join(","))
            })
            .collect())
    }

    /// NodeStageVolume.
    pub async fn stage(
        &mut self,
        volume_id: String,
        staging: &std::path::Path,
        block: bool,
        fs_type: &str,
    ) -> Result<(), Status> {
        let req = NodeStageVolumeRequest {
            volume_id,
            staging_target_path: path(staging),
            volume_capability: Some(capability(block, fs_type)),
            ..Default::default()
        };
        self.node.node_stage_volume(req).await.map(drop)
    }

    /// NodeUnstageVolume.
    pub async fn unstage(
        &mut self,
        volume_id: String,
        staging: &std::path::Path,
    ) -> Result<(), Status> {
        let req = NodeUnstageVolumeRequest {
            volume_id,
            staging_target_path: path(staging),
        };
        self.node.node_unstage_volume(req).await.map(drop)
    }

    /// NodePublishVolume.
    pub async fn publish(
        &mut self,
        volume_id: String,
        staging: &std::path::Path,
        target: &std::path::Path,
        block: bool,
        readonly: bool,
    ) -> Result<(), Status> {
        let req = NodePublishVolumeRequest {
            volume_id,
            staging_target_path: path(staging),
            target_path: path(target),
            volume_capability: Some(capability(block, "")),
            readonly,
            ..Default::default()
        };
        self.node.node_publish_volume(req).await.map(drop)
    }

    /// NodeUnpublishVolume.
    pub async fn unpublish(
        &mut self,
        volume_id: String,
        target: &std::path::Path,
    ) -> Result<(), Status> {
        let req = NodeUnpublishVolumeRequest {
            volume_id,
            target_path: path(target),
        };
        self.node.node_unpublish_volume(req).await.map(drop)
    }

    /// ControllerExpandVolume, then NodeExpandVolume when `node_path` is
    /// given: the sizes each reports.
    pub async fn expand(
        &mut self,
        volume_id: String,
        size: &str,
        node_path: Option<&std::path::Path>,
    ) -> Result<(i64, Option<i64>), Status> {
        let r = self
            .controller
            .controller_expand_volume(ControllerExpandVolumeRequest {
                volume_id: volume_id.clone(),
                capacity_range: range(size)?,
                ..Default::default()
            })
            .await?
            .into_inner();
        let Some(p) = node_path else {
            return Ok((r.capacity_bytes, None));
        };
        let n = self
            .node
            .node_expand_volume(NodeExpandVolumeRequest {
                volume_id,
                volume_path: path(p),
                capacity_range: range(size)?,
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok((r.capacity_bytes, Some(n.capacity_bytes)))
    }

    /// CreateSnapshot; the snapshot's ID.
    pub async fn snapshot(
        &mut self,
        name: String,
        source_volume_id: String,
    ) -> Result<String, Status> {
        let s = self
            .controller
            .create_snapshot(CreateSnapshotRequest {
                source_volume_id,
                name,
                ..Default::default()
            })
            .await?
            .into_inner()
            .snapshot
            .ok_or_else(|| Status::internal("no snapshot in the response"))?;
        Ok(s.snapshot_id)
    }

    /// DeleteSnapshot.
    pub async fn delete_snapshot(&mut self, snapshot_id: String) -> Result<(), Status> {
        let req = DeleteSnapshotRequest {
            snapshot_id,
            ..Default::default()
        };
        self.controller.delete_snapshot(req).await.map(drop)
    }

    /// csi-addons EncryptionKeyRotate.
    pub async fn rotate_key(&mut self, volume_id: String) -> Result<(), Status> {
        let req = EncryptionKeyRotateRequest {
            volume_id,
            ..Default::default()
        };
        self.rotation.encryption_key_rotate(req).await.map(drop)
    }
}
