//! The CSI v1 messages kmshost speaks (package `csi.v1`), and csi-addons'
//! `encryptionkeyrotation` messages, written from the specifications' field
//! definitions as prost messages (no protoc, no copied `.proto` files).
//!
//! Only the fields kmshost reads or writes are declared; protobuf skips
//! unknown fields, so newer COs and sidecars stay compatible. Field numbers
//! are the specification's and must never change.
//!
//! Messages that carry `secrets` (fields the spec marks `csi_secret`) do not
//! derive `Debug`: their `Debug` prints the volume and `secrets: REDACTED`.

use std::collections::HashMap;
use std::fmt;

/// `map<string, string>`.
pub type Map = HashMap<String, String>;

macro_rules! redacted_debug {
    ($name:ident, $($field:ident),*) => {
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    $(.field(stringify!($field), &self.$field))*
                    .field("secrets", &"REDACTED")
                    .finish_non_exhaustive()
            }
        }
    };
}

// ---------------------------------------------------------------- Identity

/// `GetPluginInfoRequest`: empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetPluginInfoRequest {}

/// `GetPluginInfoResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetPluginInfoResponse {
    /// Driver name in domain notation.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Driver version.
    #[prost(string, tag = "2")]
    pub vendor_version: String,
    /// Opaque extra information.
    #[prost(map = "string, string", tag = "3")]
    pub manifest: Map,
}

/// `GetPluginCapabilitiesRequest`: empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetPluginCapabilitiesRequest {}

/// `GetPluginCapabilitiesResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetPluginCapabilitiesResponse {
    /// What the plugin offers.
    #[prost(message, repeated, tag = "1")]
    pub capabilities: Vec<PluginCapability>,
}

/// `PluginCapability`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PluginCapability {
    /// The capability.
    #[prost(oneof = "plugin_capability::Type", tags = "1, 2")]
    pub r#type: Option<plugin_capability::Type>,
}

/// Nested types of [`PluginCapability`].
pub mod plugin_capability {
    /// `PluginCapability.Service`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Service {
        /// A `ServiceType` value.
        #[prost(enumeration = "ServiceType", tag = "1")]
        pub r#type: i32,
    }
    /// `PluginCapability.Service.Type`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum ServiceType {
        /// Unknown.
        Unknown = 0,
        /// The plugin serves the Controller service.
        ControllerService = 1,
        /// Volumes are not reachable from every node.
        VolumeAccessibilityConstraints = 2,
    }
    /// `PluginCapability.VolumeExpansion`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct VolumeExpansion {
        /// An `ExpansionType` value.
        #[prost(enumeration = "ExpansionType", tag = "1")]
        pub r#type: i32,
    }
    /// `PluginCapability.VolumeExpansion.Type`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum ExpansionType {
        /// Unknown.
        Unknown = 0,
        /// Volumes can be expanded while published.
        Online = 1,
        /// Volumes can be expanded only while unpublished.
        Offline = 2,
    }
    /// The `type` oneof.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Type {
        /// A service.
        #[prost(message, tag = "1")]
        Service(Service),
        /// Volume expansion.
        #[prost(message, tag = "2")]
        VolumeExpansion(VolumeExpansion),
    }
}

/// `ProbeRequest`: empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProbeRequest {}

/// `ProbeResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProbeResponse {
    /// `google.protobuf.BoolValue ready`.
    #[prost(message, optional, tag = "1")]
    pub ready: Option<bool>,
}

// -------------------------------------------------------------- Volumes

/// `CapacityRange`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct CapacityRange {
    /// At least this many bytes (0: unspecified).
    #[prost(int64, tag = "1")]
    pub required_bytes: i64,
    /// At most this many bytes (0: unspecified).
    #[prost(int64, tag = "2")]
    pub limit_bytes: i64,
}

/// `VolumeCapability`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VolumeCapability {
    /// Block or mount.
    #[prost(oneof = "volume_capability::AccessType", tags = "1, 2")]
    pub access_type: Option<volume_capability::AccessType>,
    /// Access mode.
    #[prost(message, optional, tag = "3")]
    pub access_mode: Option<volume_capability::AccessMode>,
}

/// Nested types of [`VolumeCapability`].
pub mod volume_capability {
    /// `VolumeCapability.BlockVolume`: empty.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BlockVolume {}
    /// `VolumeCapability.MountVolume`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MountVolume {
        /// Filesystem type (empty: the driver's default).
        #[prost(string, tag = "1")]
        pub fs_type: String,
        /// Mount options.
        #[prost(string, repeated, tag = "2")]
        pub mount_flags: Vec<String>,
        /// Group to own the volume.
        #[prost(string, tag = "3")]
        pub volume_mount_group: String,
    }
    /// `VolumeCapability.AccessMode`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AccessMode {
        /// A [`Mode`] value.
        #[prost(enumeration = "Mode", tag = "1")]
        pub mode: i32,
    }
    /// `VolumeCapability.AccessMode.Mode`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum Mode {
        /// Unknown.
        Unknown = 0,
        /// Read-write on one node.
        SingleNodeWriter = 1,
        /// Read-only on one node.
        SingleNodeReaderOnly = 2,
        /// Read-only on many nodes.
        MultiNodeReaderOnly = 3,
        /// One writer, many readers, many nodes.
        MultiNodeSingleWriter = 4,
        /// Many writers on many nodes.
        MultiNodeMultiWriter = 5,
        /// Read-write by one workload on one node.
        SingleNodeSingleWriter = 6,
        /// Read-write by many workloads on one node.
        SingleNodeMultiWriter = 7,
    }
    /// The `access_type` oneof.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum AccessType {
        /// Raw block device.
        #[prost(message, tag = "1")]
        Block(BlockVolume),
        /// Mounted filesystem.
        #[prost(message, tag = "2")]
        Mount(MountVolume),
    }
}

/// `VolumeContentSource`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VolumeContentSource {
    /// Snapshot or volume.
    #[prost(oneof = "volume_content_source::Type", tags = "1, 2")]
    pub r#type: Option<volume_content_source::Type>,
}

/// Nested types of [`VolumeContentSource`].
pub mod volume_content_source {
    /// `VolumeContentSource.SnapshotSource`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SnapshotSource {
        /// The snapshot.
        #[prost(string, tag = "1")]
        pub snapshot_id: String,
    }
    /// `VolumeContentSource.VolumeSource`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct VolumeSource {
        /// The volume to clone.
        #[prost(string, tag = "1")]
        pub volume_id: String,
    }
    /// The `type` oneof.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Type {
        /// Restore from a snapshot.
        #[prost(message, tag = "1")]
        Snapshot(SnapshotSource),
        /// Clone a volume.
        #[prost(message, tag = "2")]
        Volume(VolumeSource),
    }
}

/// `Volume`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Volume {
    /// Size in bytes.
    #[prost(int64, tag = "1")]
    pub capacity_bytes: i64,
    /// The volume ID.
    #[prost(string, tag = "2")]
    pub volume_id: String,
    /// Static properties passed back to node calls.
    #[prost(map = "string, string", tag = "3")]
    pub volume_context: Map,
    /// Where the content came from.
    #[prost(message, optional, tag = "4")]
    pub content_source: Option<VolumeContentSource>,
}

/// `CreateVolumeRequest`.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct CreateVolumeRequest {
    /// Idempotency name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Wanted size.
    #[prost(message, optional, tag = "2")]
    pub capacity_range: Option<CapacityRange>,
    /// Capabilities the volume must support.
    #[prost(message, repeated, tag = "3")]
    pub volume_capabilities: Vec<VolumeCapability>,
    /// StorageClass parameters.
    #[prost(map = "string, string", tag = "4")]
    pub parameters: Map,
    /// Provisioner secrets.
    #[prost(map = "string, string", tag = "5")]
    pub secrets: Map,
    /// Clone or restore source.
    #[prost(message, optional, tag = "6")]
    pub volume_content_source: Option<VolumeContentSource>,
}
redacted_debug!(CreateVolumeRequest, name, capacity_range, parameters);

/// `CreateVolumeResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateVolumeResponse {
    /// The volume.
    #[prost(message, optional, tag = "1")]
    pub volume: Option<Volume>,
}

/// `DeleteVolumeRequest`.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct DeleteVolumeRequest {
    /// The volume.
    #[prost(string, tag = "1")]
    pub volume_id: String,
    /// Provisioner secrets.
    #[prost(map = "string, string", tag = "2")]
    pub secrets: Map,
}
redacted_debug!(DeleteVolumeRequest, volume_id);

/// `DeleteVolumeResponse`: empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteVolumeResponse {}

/// `ValidateVolumeCapabilitiesRequest`.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct ValidateVolumeCapabilitiesRequest {
    /// The volume.
    #[prost(string, tag = "1")]
    pub volume_id: String,
    /// Its context.
    #[prost(map = "string, string", tag = "2")]
    pub volume_context: Map,
    /// Capabilities to check.
    #[prost(message, repeated, tag = "3")]
    pub volume_capabilities: Vec<VolumeCapability>,
    /// StorageClass parameters.
    #[prost(map = "string, string", tag = "4")]
    pub parameters: Map,
    /// Secrets.
    #[prost(map = "string, string", tag = "5")]
    pub secrets: Map,
}
redacted_debug!(ValidateVolumeCapabilitiesRequest, volume_id);

/// `ValidateVolumeCapabilitiesResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValidateVolumeCapabilitiesResponse {
    /// Set when every capability is supported.
    #[prost(message, optional, tag = "1")]
    pub confirmed: Option<validate_volume_capabilities_response::Confirmed>,
    /// Why not, otherwise.
    #[prost(string, tag = "2")]
    pub message: String,
}

/// Nested types of [`ValidateVolumeCapabilitiesResponse`].
pub mod validate_volume_capabilities_response {
    /// `Confirmed`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Confirmed {
        /// The validated context.
        #[prost(map = "string, string", tag = "1")]
        pub volume_context: super::Map,
        /// The validated capabilities.
        #[prost(message, repeated, tag = "2")]
        pub volume_capabilities: Vec<super::VolumeCapability>,
        /// The validated parameters.
        #[prost(map = "string, string", tag = "3")]
        pub parameters: super::Map,
    }
}

/// `ListVolumesRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListVolumesRequest {
    /// Page size (0: all).
    #[prost(int32, tag = "1")]
    pub max_entries: i32,
    /// Where to continue.
    #[prost(string, tag = "2")]
    pub starting_token: String,
}

/// `ListVolumesResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListVolumesResponse {
    /// One page.
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<list_volumes_response::Entry>,
    /// Token for the next page (empty: done).
    #[prost(string, tag = "2")]
    pub next_token: String,
}

/// Nested types of [`ListVolumesResponse`].
pub mod list_volumes_response {
    /// `Entry`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Entry {
        /// The volume.
        #[prost(message, optional, tag = "1")]
        pub volume: Option<super::Volume>,
    }
}

/// `GetCapacityRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetCapacityRequest {
    /// Capabilities the capacity is for.
    #[prost(message, repeated, tag = "1")]
    pub volume_capabilities: Vec<VolumeCapability>,
    /// StorageClass parameters.
    #[prost(map = "string, string", tag = "2")]
    pub parameters: Map,
}

/// `GetCapacityResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetCapacityResponse {
    /// Bytes available for new volumes.
    #[prost(int64, tag = "1")]
    pub available_capacity: i64,
}

/// `ControllerGetCapabilitiesRequest`: empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ControllerGetCapabilitiesRequest {}

/// `ControllerGetCapabilitiesResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ControllerGetCapabilitiesResponse {
    /// Supported controller RPCs.
    #[prost(message, repeated, tag = "1")]
    pub capabilities: Vec<ControllerServiceCapability>,
}

/// `ControllerServiceCapability` (only its `rpc` case).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ControllerServiceCapability {
    /// `RPC rpc = 1` (the oneof's only case).
    #[prost(message, optional, tag = "1")]
    pub rpc: Option<controller_service_capability::Rpc>,
}

/// Nested types of [`ControllerServiceCapability`].
pub mod controller_service_capability {
    /// `ControllerServiceCapability.RPC`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Rpc {
        /// A [`RpcType`] value.
        #[prost(enumeration = "RpcType", tag = "1")]
        pub r#type: i32,
    }
    /// `ControllerServiceCapability.RPC.Type`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum RpcType {
        /// Unknown.
        Unknown = 0,
        /// CreateVolume / DeleteVolume.
        CreateDeleteVolume = 1,
        /// ControllerPublish / Unpublish.
        PublishUnpublishVolume = 2,
        /// ListVolumes.
        ListVolumes = 3,
        /// GetCapacity.
        GetCapacity = 4,
        /// CreateSnapshot / DeleteSnapshot.
        CreateDeleteSnapshot = 5,
        /// ListSnapshots.
        ListSnapshots = 6,
        /// Clones.
        CloneVolume = 7,
        /// Read-only publish.
        PublishReadonly = 8,
        /// ControllerExpandVolume.
        ExpandVolume = 9,
        /// `SINGLE_NODE_SINGLE_WRITER` and `SINGLE_NODE_MULTI_WRITER` access
        /// modes are supported.
        SingleNodeMultiWriter = 13,
    }
}

/// `Timestamp` (`google.protobuf.Timestamp`).
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `Snapshot`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Snapshot {
    /// Size of the source volume.
    #[prost(int64, tag = "1")]
    pub size_bytes: i64,
    /// The snapshot ID.
    #[prost(string, tag = "2")]
    pub snapshot_id: String,
    /// The volume it was taken of.
    #[prost(string, tag = "3")]
    pub source_volume_id: String,
    /// When.
    #[prost(message, optional, tag = "4")]
    pub creation_time: Option<Timestamp>,
    /// Whether it can be restored.
    #[prost(bool, tag = "5")]
    pub ready_to_use: bool,
}

/// `CreateSnapshotRequest`.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct CreateSnapshotRequest {
    /// The volume.
    #[prost(string, tag = "1")]
    pub source_volume_id: String,
    /// Idempotency name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Secrets.
    #[prost(map = "string, string", tag = "3")]
    pub secrets: Map,
    /// VolumeSnapshotClass parameters.
    #[prost(map = "string, string", tag = "4")]
    pub parameters: Map,
}
redacted_debug!(CreateSnapshotRequest, source_volume_id, name);

/// `CreateSnapshotResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateSnapshotResponse {
    /// The snapshot.
    #[prost(message, optional, tag = "1")]
    pub snapshot: Option<Snapshot>,
}

/// `DeleteSnapshotRequest`.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct DeleteSnapshotRequest {
    /// The snapshot.
    #[prost(string, tag = "1")]
    pub snapshot_id: String,
    /// Secrets.
    #[prost(map = "string, string", tag = "2")]
    pub secrets: Map,
}
redacted_debug!(DeleteSnapshotRequest, snapshot_id);

/// `DeleteSnapshotResponse`: empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteSnapshotResponse {}

/// `ControllerExpandVolumeRequest`.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct ControllerExpandVolumeRequest {
    /// The volume.
    #[prost(string, tag = "1")]
    pub volume_id: String,
    /// New size.
    #[prost(message, optional, tag = "2")]
    pub capacity_range: Option<CapacityRange>,
    /// Secrets.
    #[prost(map = "string, string", tag = "3")]
    pub secrets: Map,
    /// How the volume is used.
    #[prost(message, optional, tag = "4")]
    pub volume_capability: Option<VolumeCapability>,
}
redacted_debug!(ControllerExpandVolumeRequest, volume_id, capacity_range);

/// `ControllerExpandVolumeResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ControllerExpandVolumeResponse {
    /// The new size.
    #[prost(int64, tag = "1")]
    pub capacity_bytes: i64,
    /// Whether NodeExpandVolume must follow.
    #[prost(bool, tag = "2")]
    pub node_expansion_required: bool,
}

// ------------------------------------------------------------------ Node

/// `NodeStageVolumeRequest`.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct NodeStageVolumeRequest {
    /// The volume.
    #[prost(string, tag = "1")]
    pub volume_id: String,
    /// From ControllerPublish (unused).
    #[prost(map = "string, string", tag = "2")]
    pub publish_context: Map,
    /// Global mount point (a directory).
    #[prost(string, tag = "3")]
    pub staging_target_path: String,
    /// How the volume is used.
    #[prost(message, optional, tag = "4")]
    pub volume_capability: Option<VolumeCapability>,
    /// Node-stage secrets.
    #[prost(map = "string, string", tag = "5")]
    pub secrets: Map,
    /// From CreateVolume.
    #[prost(map = "string, string", tag = "6")]
    pub volume_context: Map,
}
redacted_debug!(NodeStageVolumeRequest, volume_id, staging_target_path);

/// `NodeStageVolumeResponse`: empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeStageVolumeResponse {}

/// `NodeUnstageVolumeRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeUnstageVolumeRequest {
    /// The volume.
    #[prost(string, tag = "1")]
    pub volume_id: String,
    /// Global mount point.
    #[prost(string, tag = "2")]
    pub staging_target_path: String,
}

/// `NodeUnstageVolumeResponse`: empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeUnstageVolumeResponse {}

/// `NodePublishVolumeRequest`.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct NodePublishVolumeRequest {
    /// The volume.
    #[prost(string, tag = "1")]
    pub volume_id: String,
    /// From ControllerPublish (unused).
    #[prost(map = "string, string", tag = "2")]
    pub publish_context: Map,
    /// Global mount point.
    #[prost(string, tag = "3")]
    pub staging_target_path: String,
    /// Per-workload path.
    #[prost(string, tag = "4")]
    pub target_path: String,
    /// How the volume is used.
    #[prost(message, optional, tag = "5")]
    pub volume_capability: Option<VolumeCapability>,
    /// Publish read-only.
    #[prost(bool, tag = "6")]
    pub readonly: bool,
    /// Node-publish secrets.
    #[prost(map = "string, string", tag = "7")]
    pub secrets: Map,
    /// From CreateVolume.
    #[prost(map = "string, string", tag = "8")]
    pub volume_context: Map,
}
redacted_debug!(NodePublishVolumeRequest, volume_id, target_path, readonly);

/// `NodePublishVolumeResponse`: empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodePublishVolumeResponse {}

/// `NodeUnpublishVolumeRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeUnpublishVolumeRequest {
    /// The volume.
    #[prost(string, tag = "1")]
    pub volume_id: String,
    /// Per-workload path.
    #[prost(string, tag = "2")]
    pub target_path: String,
}

/// `NodeUnpublishVolumeResponse`: empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeUnpublishVolumeResponse {}

/// `NodeGetVolumeStatsRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeGetVolumeStatsRequest {
    /// The volume.
    #[prost(string, tag = "1")]
    pub volume_id: String,
    /// A path where it is published.
    #[prost(string, tag = "2")]
    pub volume_path: String,
    /// Its staging path.
    #[prost(string, tag = "3")]
    pub staging_target_path: String,
}

/// `VolumeUsage`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VolumeUsage {
    /// Available units.
    #[prost(int64, tag = "1")]
    pub available: i64,
    /// Total units.
    #[prost(int64, tag = "2")]
    pub total: i64,
    /// Used units.
    #[prost(int64, tag = "3")]
    pub used: i64,
    /// A [`volume_usage::Unit`] value.
    #[prost(enumeration = "volume_usage::Unit", tag = "4")]
    pub unit: i32,
}

/// Nested types of [`VolumeUsage`].
pub mod volume_usage {
    /// `VolumeUsage.Unit`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum Unit {
        /// Unknown.
        Unknown = 0,
        /// Bytes.
        Bytes = 1,
        /// Inodes.
        Inodes = 2,
    }
}

/// `VolumeCondition`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VolumeCondition {
    /// Whether something is wrong.
    #[prost(bool, tag = "1")]
    pub abnormal: bool,
    /// What.
    #[prost(string, tag = "2")]
    pub message: String,
}

/// `NodeGetVolumeStatsResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeGetVolumeStatsResponse {
    /// Usage in bytes (and inodes for filesystems).
    #[prost(message, repeated, tag = "1")]
    pub usage: Vec<VolumeUsage>,
    /// Health.
    #[prost(message, optional, tag = "2")]
    pub volume_condition: Option<VolumeCondition>,
}

/// `NodeExpandVolumeRequest`.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct NodeExpandVolumeRequest {
    /// The volume.
    #[prost(string, tag = "1")]
    pub volume_id: String,
    /// A path where it is published.
    #[prost(string, tag = "2")]
    pub volume_path: String,
    /// New size.
    #[prost(message, optional, tag = "3")]
    pub capacity_range: Option<CapacityRange>,
    /// Its staging path.
    #[prost(string, tag = "4")]
    pub staging_target_path: String,
    /// How the volume is used.
    #[prost(message, optional, tag = "5")]
    pub volume_capability: Option<VolumeCapability>,
    /// Node-expand secrets.
    #[prost(map = "string, string", tag = "6")]
    pub secrets: Map,
}
redacted_debug!(NodeExpandVolumeRequest, volume_id, volume_path);

/// `NodeExpandVolumeResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeExpandVolumeResponse {
    /// The new size.
    #[prost(int64, tag = "1")]
    pub capacity_bytes: i64,
}

/// `NodeGetCapabilitiesRequest`: empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeGetCapabilitiesRequest {}

/// `NodeGetCapabilitiesResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeGetCapabilitiesResponse {
    /// Supported node RPCs.
    #[prost(message, repeated, tag = "1")]
    pub capabilities: Vec<NodeServiceCapability>,
}

/// `NodeServiceCapability` (only its `rpc` case).
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeServiceCapability {
    /// `RPC rpc = 1` (the oneof's only case).
    #[prost(message, optional, tag = "1")]
    pub rpc: Option<node_service_capability::Rpc>,
}

/// Nested types of [`NodeServiceCapability`].
pub mod node_service_capability {
    /// `NodeServiceCapability.RPC`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Rpc {
        /// A [`RpcType`] value.
        #[prost(enumeration = "RpcType", tag = "1")]
        pub r#type: i32,
    }
    /// `NodeServiceCapability.RPC.Type`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum RpcType {
        /// Unknown.
        Unknown = 0,
        /// NodeStage / NodeUnstage.
        StageUnstageVolume = 1,
        /// NodeGetVolumeStats.
        GetVolumeStats = 2,
        /// NodeExpandVolume.
        ExpandVolume = 3,
        /// Volume condition in stats.
        VolumeCondition = 4,
        /// `SINGLE_NODE_SINGLE_WRITER` and `SINGLE_NODE_MULTI_WRITER` access
        /// modes are supported.
        SingleNodeMultiWriter = 5,
    }
}

/// `NodeGetInfoRequest`: empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeGetInfoRequest {}

/// `NodeGetInfoResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeGetInfoResponse {
    /// This node.
    #[prost(string, tag = "1")]
    pub node_id: String,
    /// Volume limit (0: none).
    #[prost(int64, tag = "2")]
    pub max_volumes_per_node: i64,
}

// ------------------------------------------- csi-addons key rotation

/// `encryptionkeyrotation.EncryptionKeyRotateRequest`.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct EncryptionKeyRotateRequest {
    /// The volume.
    #[prost(string, tag = "1")]
    pub volume_id: String,
    /// Where it is available (node plugins).
    #[prost(string, tag = "2")]
    pub volume_path: String,
    /// A caller-chosen new key. kmshost refuses it: keys are generated by
    /// the host (≥ 256 bits) so the cheap keyslot KDF stays safe.
    #[prost(string, tag = "3")]
    pub encryption_key: String,
    /// Parameters.
    #[prost(map = "string, string", tag = "4")]
    pub parameters: Map,
    /// Secrets.
    #[prost(map = "string, string", tag = "5")]
    pub secrets: Map,
}
redacted_debug!(EncryptionKeyRotateRequest, volume_id);

/// `encryptionkeyrotation.EncryptionKeyRotateResponse`: empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EncryptionKeyRotateResponse {}

// ------------------------------------------------- csi-addons identity

/// `identity.GetIdentityRequest` (csi-addons): empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetIdentityRequest {}

/// `identity.GetIdentityResponse` (csi-addons).
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetIdentityResponse {
    /// Driver name in domain notation (the CSI driver's name).
    #[prost(string, tag = "1")]
    pub name: String,
    /// Driver version.
    #[prost(string, tag = "2")]
    pub vendor_version: String,
    /// Opaque extra information.
    #[prost(map = "string, string", tag = "3")]
    pub manifest: Map,
}

/// `identity.GetCapabilitiesRequest` (csi-addons): empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetCapabilitiesRequest {}

/// `identity.GetCapabilitiesResponse` (csi-addons).
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetCapabilitiesResponse {
    /// What the driver offers csi-addons.
    #[prost(message, repeated, tag = "1")]
    pub capabilities: Vec<AddonsCapability>,
}

/// `identity.Capability` (csi-addons); only the cases kmshost offers.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AddonsCapability {
    /// The capability.
    #[prost(oneof = "addons_capability::Type", tags = "1, 6")]
    pub r#type: Option<addons_capability::Type>,
}

/// Nested types of [`AddonsCapability`].
pub mod addons_capability {
    /// `Capability.Service`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Service {
        /// A `ServiceType` value.
        #[prost(enumeration = "ServiceType", tag = "1")]
        pub r#type: i32,
    }
    /// `Capability.Service.Type`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum ServiceType {
        /// Unknown.
        Unknown = 0,
        /// RPCs that need the storage system (like a CSI controller).
        ControllerService = 1,
        /// RPCs that need the volume staged on this node.
        NodeService = 2,
    }
    /// `Capability.EncryptionKeyRotation`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EncryptionKeyRotation {
        /// A `RotationType` value.
        #[prost(enumeration = "RotationType", tag = "1")]
        pub r#type: i32,
    }
    /// `Capability.EncryptionKeyRotation.Type`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum RotationType {
        /// Unknown.
        Unknown = 0,
        /// `EncryptionKeyRotate` is served.
        Encryptionkeyrotation = 1,
    }
    /// The `type` oneof (tag 6 is csi-addons' `encryption_key_rotation`).
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Type {
        /// A service.
        #[prost(message, tag = "1")]
        Service(Service),
        /// Key rotation.
        #[prost(message, tag = "6")]
        EncryptionKeyRotation(EncryptionKeyRotation),
    }
}
