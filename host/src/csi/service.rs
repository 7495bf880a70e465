//! The gRPC services over a unix socket, and a client channel for tools and
//! tests.

use super::grpc::addons::identity_server::{
    Identity as AddonsIdentity, IdentityServer as AddonsIdentityServer,
};
use super::grpc::{
    controller_server::{Controller, ControllerServer},
    encryption_key_rotation_controller_server::{
        EncryptionKeyRotationController, EncryptionKeyRotationControllerServer,
    },
    identity_server::{Identity, IdentityServer},
    node_server::{Node, NodeServer},
};
use super::proto::{self, *};
use super::{CsiError, Driver};
use std::path::PathBuf;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use tracing::Instrument;

type R<T> = Result<Response<T>, Status>;

/// Runs `f` inside a `csi.<call>` span, logging the outcome (never secrets:
/// only the call, the volume and the status).
async fn traced<T>(
    call: &'static str,
    volume: &str,
    f: impl Future<Output = Result<T, CsiError>>,
) -> R<T> {
    let span = tracing::info_span!("csi", call, volume);
    async move {
        let started = std::time::Instant::now();
        let r = f.await;
        match &r {
            Ok(_) => tracing::debug!("ok"),
            Err(e) => tracing::warn!(code = ?e.code, error = %e.message, "failed"),
        }
        let code = r.as_ref().map_or_else(|e| e.code, |_| tonic::Code::Ok);
        crate::telemetry::metrics()
            .csi_operations
            .get_or_create(&crate::telemetry::labels(&[
                ("method", call),
                ("code", &format!("{code:?}")),
            ]))
            .observe(started.elapsed().as_secs_f64());
        r.map(Response::new).map_err(Status::from)
    }
    .instrument(span)
    .await
}

/// The services, sharing one [`Driver`].
#[derive(Debug, Clone)]
struct Services(Arc<Driver>);

#[tonic::async_trait]
impl Identity for Services {
    async fn get_plugin_info(&self, _: Request<GetPluginInfoRequest>) -> R<GetPluginInfoResponse> {
        Ok(Response::new(GetPluginInfoResponse {
            name: self.0.config.name.clone(),
            vendor_version: env!("CARGO_PKG_VERSION").into(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<GetPluginCapabilitiesRequest>,
    ) -> R<GetPluginCapabilitiesResponse> {
        use proto::plugin_capability::{
            ExpansionType, Service, ServiceType, Type, VolumeExpansion,
        };
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities: vec![
                PluginCapability {
                    r#type: Some(Type::Service(Service {
                        r#type: ServiceType::ControllerService as i32,
                    })),
                },
                PluginCapability {
                    r#type: Some(Type::VolumeExpansion(VolumeExpansion {
                        r#type: ExpansionType::Online as i32,
                    })),
                },
            ],
        }))
    }

    async fn probe(&self, _: Request<ProbeRequest>) -> R<ProbeResponse> {
        let ready = self.0.probe().await;
        if let Err(why) = &ready {
            tracing::warn!(%why, "probe: not ready");
        }
        Ok(Response::new(ProbeResponse {
            ready: Some(ready.is_ok()),
        }))
    }
}

#[tonic::async_trait]
impl Controller for Services {
    async fn create_volume(&self, r: Request<CreateVolumeRequest>) -> R<CreateVolumeResponse> {
        let r = r.into_inner();
        let name = r.name.clone();
        traced("CreateVolume", &name, self.0.create_volume(r)).await
    }
    async fn delete_volume(&self, r: Request<DeleteVolumeRequest>) -> R<DeleteVolumeResponse> {
        let r = r.into_inner();
        let v = r.volume_id.clone();
        traced("DeleteVolume", &v, self.0.delete_volume(r)).await
    }
    async fn validate_volume_capabilities(
        &self,
        r: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> R<ValidateVolumeCapabilitiesResponse> {
        let r = r.into_inner();
        let v = r.volume_id.clone();
        traced(
            "ValidateVolumeCapabilities",
            &v,
            self.0.validate_volume_capabilities(r),
        )
        .await
    }
    async fn list_volumes(&self, r: Request<ListVolumesRequest>) -> R<ListVolumesResponse> {
        traced("ListVolumes", "", self.0.list_volumes(r.into_inner())).await
    }
    async fn get_capacity(&self, _: Request<GetCapacityRequest>) -> R<GetCapacityResponse> {
        traced("GetCapacity", "", self.0.get_capacity()).await
    }
    async fn controller_get_capabilities(
        &self,
        _: Request<ControllerGetCapabilitiesRequest>,
    ) -> R<ControllerGetCapabilitiesResponse> {
        use proto::controller_service_capability::{Rpc, RpcType};
        let capacity = self.0.backends().reports_capacity();
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities: [
                RpcType::CreateDeleteVolume,
                RpcType::CreateDeleteSnapshot,
                RpcType::CloneVolume,
                RpcType::ExpandVolume,
                RpcType::ListVolumes,
                RpcType::GetCapacity,
                RpcType::SingleNodeMultiWriter,
            ]
            .into_iter()
            .filter(|t| capacity || *t != RpcType::GetCapacity)
            .map(|t| ControllerServiceCapability {
                rpc: Some(Rpc { r#type: t as i32 }),
            })
            .collect(),
        }))
    }
    async fn create_snapshot(
        &self,
        r: Request<CreateSnapshotRequest>,
    ) -> R<CreateSnapshotResponse> {
        let r = r.into_inner();
        let v = r.source_volume_id.clone();
        traced("CreateSnapshot", &v, self.0.create_snapshot(r)).await
    }
    async fn delete_snapshot(
        &self,
        r: Request<DeleteSnapshotRequest>,
    ) -> R<DeleteSnapshotResponse> {
        let r = r.into_inner();
        let v = r.snapshot_id.clone();
        traced("DeleteSnapshot", &v, self.0.delete_snapshot(r)).await
    }
    async fn controller_expand_volume(
        &self,
        r: Request<ControllerExpandVolumeRequest>,
    ) -> R<ControllerExpandVolumeResponse> {
        let r = r.into_inner();
        let v = r.volume_id.clone();
        traced(
            "ControllerExpandVolume",
            &v,
            self.0.controller_expand_volume(r),
        )
        .await
    }
}

#[tonic::async_trait]
impl Node for Services {
    async fn node_stage_volume(
        &self,
        r: Request<NodeStageVolumeRequest>,
    ) -> R<NodeStageVolumeResponse> {
        let r = r.into_inner();
        let v = r.volume_id.clone();
        traced("NodeStageVolume", &v, self.0.node_stage_volume(r)).await
    }
    async fn node_unstage_volume(
        &self,
        r: Request<NodeUnstageVolumeRequest>,
    ) -> R<NodeUnstageVolumeResponse> {
        let r = r.into_inner();
        let v = r.volume_id.clone();
        traced("NodeUnstageVolume", &v, self.0.node_unstage_volume(r)).await
    }
    async fn node_publish_volume(
        &self,
        r: Request<NodePublishVolumeRequest>,
    ) -> R<NodePublishVolumeResponse> {
        let r = r.into_inner();
        let v = r.volume_id.clone();
        traced("NodePublishVolume", &v, self.0.node_publish_volume(r)).await
    }
    async fn node_unpublish_volume(
        &self,
        r: Request<NodeUnpublishVolumeRequest>,
    ) -> R<NodeUnpublishVolumeResponse> {
        let r = r.into_inner();
        let v = r.volume_id.clone();
        traced("NodeUnpublishVolume", &v, self.0.node_unpublish_volume(r)).await
    }
    async fn node_get_volume_stats(
        &self,
        r: Request<NodeGetVolumeStatsRequest>,
    ) -> R<NodeGetVolumeStatsResponse> {
        let r = r.into_inner();
        let v = r.volume_id.clone();
        traced("NodeGetVolumeStats", &v, self.0.node_get_volume_stats(r)).await
    }
    async fn node_expand_volume(
        &self,
        r: Request<NodeExpandVolumeRequest>,
    ) -> R<NodeExpandVolumeResponse> {
        let r = r.into_inner();
        let v = r.volume_id.clone();
        traced("NodeExpandVolume", &v, self.0.node_expand_volume(r)).await
    }
    async fn node_get_capabilities(
        &self,
        _: Request<NodeGetCapabilitiesRequest>,
    ) -> R<NodeGetCapabilitiesResponse> {
        use proto::node_service_capability::{Rpc, RpcType};
        Ok(Response::new(NodeGetCapabilitiesResponse {
            capabilities: [
                RpcType::StageUnstageVolume,
                RpcType::GetVolumeStats,
                RpcType::ExpandVolume,
                RpcType::VolumeCondition,
                RpcType::SingleNodeMultiWriter,
            ]
            .into_iter()
            .map(|t| NodeServiceCapability {
                rpc: Some(Rpc { r#type: t as i32 }),
            })
            .collect(),
        }))
    }
    async fn node_get_info(&self, _: Request<NodeGetInfoRequest>) -> R<NodeGetInfoResponse> {
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.0.config.node_id.clone(),
            max_volumes_per_node: 0,
        }))
    }
}

#[tonic::async_trait]
impl EncryptionKeyRotationController for Services {
    async fn encryption_key_rotate(
        &self,
        r: Request<EncryptionKeyRotateRequest>,
    ) -> R<EncryptionKeyRotateResponse> {
        let r = r.into_inner();
        let v = r.volume_id.clone();
        traced("EncryptionKeyRotate", &v, self.0.rotate_key(r)).await
    }
}

/// csi-addons' Identity: the csi-addons sidecar registers the driver with
/// the cluster's csi-addons controller for what this answers — key
/// rotation, served where volumes are staged (rotation opens the mapped
/// device).
#[tonic::async_trait]
impl AddonsIdentity for Services {
    async fn get_identity(&self, _: Request<GetIdentityRequest>) -> R<GetIdentityResponse> {
        Ok(Response::new(GetIdentityResponse {
            name: self.0.config.name.clone(),
            vendor_version: env!("CARGO_PKG_VERSION").into(),
            manifest: Default::default(),
        }))
    }

    async fn get_capabilities(
        &self,
        _: Request<GetCapabilitiesRequest>,
    ) -> R<GetCapabilitiesResponse> {
        use proto::addons_capability::{
            EncryptionKeyRotation, RotationType, Service, ServiceType, Type,
        };
        Ok(Response::new(GetCapabilitiesResponse {
            capabilities: vec![
                AddonsCapability {
                    r#type: Some(Type::Service(Service {
                        r#type: ServiceType::NodeService as i32,
                    })),
                },
                AddonsCapability {
                    r#type: Some(Type::EncryptionKeyRotation(EncryptionKeyRotation {
                        r#type: RotationType::Encryptionkeyrotation as i32,
                    })),
                },
            ],
        }))
    }

    async fn probe(&self, r: Request<ProbeRequest>) -> R<ProbeResponse> {
        Identity::probe(self, r).await
    }
}

impl Driver {
    /// Probe: ready when the KMS configuration loads, every kmsID in it is
    /// valid and its plugin loads and accepts its options, and the state
    /// directory is writable. The error says what is broken.
    pub async fn probe(&self) -> Result<(), String> {
        let described = self.kms.describe().map_err(|e| e.to_string())?;
        for d in described {
            let d = d.map_err(|e| e.to_string())?;
            self.kms
                .validate(&d.kms_id)
                .await
                .map_err(|e| e.to_string())?;
        }
        let probe = self.records.dir().join(".probe");
        std::fs::write(&probe, b"ok").map_err(|e| format!("{}: {e}", probe.display()))?;
        let _ = std::fs::remove_file(&probe);
        Ok(())
    }
}

/// The socket path of a CSI endpoint `unix:///path` (or `unix:/path`, or a
/// bare path).
pub fn socket_path(endpoint: &str) -> Result<PathBuf, CsiError> {
    let p = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .unwrap_or(endpoint);
    if p.is_empty() || !p.starts_with('/') {
        return Err(CsiError::invalid(format!(
            "endpoint {endpoint:?}: expected unix:///absolute/path"
        )));
    }
    Ok(PathBuf::from(p))
}

/// Serves Identity, Controller, Node and EncryptionKeyRotation on the unix
/// socket `endpoint` until `shutdown` completes. A stale socket file is
/// replaced; any other file at that path is an error.
pub async fn serve(
    driver: Arc<Driver>,
    endpoint: &str,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), CsiError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let path = socket_path(endpoint)?;
    if let Ok(m) = std::fs::symlink_metadata(&path) {
        if !m.file_type().is_socket() {
            return Err(CsiError::invalid(format!(
                "{} exists and is not a socket",
                path.display()
            )));
        }
        std::fs::remove_file(&path)
            .map_err(|e| CsiError::internal(format!("{}: {e}", path.display())))?;
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| CsiError::internal(format!("{}: {e}", parent.display())))?;
    }
    let listener = tokio::net::UnixListener::bind(&path)
        .map_err(|e| CsiError::internal(format!("{}: {e}", path.display())))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| CsiError::internal(format!("{}: {e}", path.display())))?;
    tracing::info!(endpoint = %path.display(), "CSI driver listening");
    let s = Services(driver);
    tonic::transport::Server::builder()
        .add_service(IdentityServer::new(s.clone()))
        .add_service(ControllerServer::new(s.clone()))
        .add_service(NodeServer::new(s.clone()))
        .add_service(EncryptionKeyRotationControllerServer::new(s.clone()))
        .add_service(AddonsIdentityServer::new(s))
        .serve_with_incoming_shutdown(
            futures::stream::unfold(listener, |l| async move {
                let conn = l.accept().await.map(|(stream, _)| stream);
                Some((conn, l))
            }),
            shutdown,
        )
        .await
        .map_err(|e| CsiError::internal(format!("gRPC server: {e}")))?;
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// A gRPC channel to the CSI endpoint `endpoint` (a unix socket).
pub async fn unix_channel(endpoint: &str) -> Result<tonic::transport::Channel, CsiError> {
    let path = socket_path(endpoint)?;
    tonic::transport::Endpoint::from_static("http://kmshost.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .map_err(|e| CsiError::new(tonic::Code::Unavailable, format!("{endpoint}: {e}")))
}
