//! Controller calls: create (empty, clone, restore), delete, expand,
//! snapshots, listing, validation — and key rotation.

use super::proto::{self, volume_capability::AccessType, volume_capability::Mode};
use super::{
    At, CsiError, DEFAULT_CAPACITY, Driver, MIN_CAPACITY, blocking, check_id, image_size, keys,
    now_unix, params, snapshot_id_for, volume_id_for,
};
use crate::kms::generate_passphrase;
use crate::luks;
use crate::volume::{
    BlockSource, ContentSource, Encryption, KeyHolding, Placement, SnapshotRecord, VolumeRecord,
    VolumeState,
};
use tonic::Code;

const MIB: u64 = 1 << 20;

/// Volume IDs start with this (snapshots with `kh-snap-`).
const VOLUME_PREFIX: &str = "kh-vol-";

/// Access modes an image-file volume supports: one node at a time. Every
/// one of them is also advertised (`SINGLE_NODE_MULTI_WRITER`).
pub(super) const SUPPORTED_MODES: &[Mode] = &[
    Mode::SingleNodeWriter,
    Mode::SingleNodeReaderOnly,
    Mode::SingleNodeSingleWriter,
    Mode::SingleNodeMultiWriter,
];

/// Why a capability is not supported, if it is not.
pub(super) fn capability_problem(c: &proto::VolumeCapability) -> Option<String> {
    let mode = c
        .access_mode
        .as_ref()
        .and_then(|m| Mode::try_from(m.mode).ok())
        .unwrap_or(Mode::Unknown);
    if !SUPPORTED_MODES.contains(&mode) {
        return Some(format!(
            "access mode {mode:?} is not supported (volumes attach to one node at a time)"
        ));
    }
    match &c.access_type {
        None => Some("access_type (block or mount) is required".into()),
        Some(AccessType::Block(_)) => None,
        Some(AccessType::Mount(m)) => (!m.fs_type.is_empty()
            && !params::FS_TYPES.contains(&m.fs_type.as_str()))
        .then(|| format!("filesystem {:?} is not offered", m.fs_type)),
    }
}

fn check_capabilities(caps: &[proto::VolumeCapability]) -> Result<(), CsiError> {
    if caps.is_empty() {
        return Err(CsiError::invalid("volume_capabilities is required"));
    }
    for c in caps {
        if let Some(p) = capability_problem(c) {
            return Err(CsiError::invalid(p));
        }
    }
    Ok(())
}

/// The smallest size a filesystem the volume may be staged with can be
/// made at: a mount capability's fs type, or else the StorageClass's.
fn fs_floor(caps: &[proto::VolumeCapability], default_fs: &str) -> u64 {
    let xfs = caps.iter().any(|c| match &c.access_type {
        Some(AccessType::Mount(m)) if m.fs_type.is_empty() => default_fs == "xfs",
        Some(AccessType::Mount(m)) => m.fs_type == "xfs",
        _ => false,
    });
    if xfs { super::XFS_MIN_CAPACITY } else { 0 }
}

/// The capacity to provision for `range`, at least `floor` bytes.
fn capacity(range: Option<proto::CapacityRange>, floor: u64) -> Result<u64, CsiError> {
    let (req, lim) = range
        .map(|r| (r.required_bytes, r.limit_bytes))
        .unwrap_or((0, 0));
    if req < 0 || lim < 0 {
        return Err(CsiError::invalid("capacity_range: negative bytes"));
    }
    let (req, lim) = (req as u64, lim as u64);
    if lim != 0 && req > lim {
        return Err(CsiError::new(
            Code::OutOfRange,
            format!("capacity_range: required {req} > limit {lim}"),
        ));
    }
    let want = if req == 0 {
        // No size asked: a copy gets its source's size, a new volume the
        // default.
        let default = if floor > 0 { floor } else { DEFAULT_CAPACITY };
        if lim == 0 { default } else { lim.min(default) }
    } else {
        req
    };
    let size = want.max(floor).max(MIN_CAPACITY).div_ceil(MIB) * MIB;
    if lim != 0 && size > lim {
        return Err(CsiError::new(
            Code::OutOfRange,
            format!(
                "capacity_range: limit {lim} is below the smallest volume kmshost can make ({size})"
            ),
        ));
    }
    Ok(size)
}

fn fits(range: Option<proto::CapacityRange>, size: u64) -> bool {
    let (req, lim) = range
        .map(|r| (r.required_bytes.max(0) as u64, r.limit_bytes.max(0) as u64))
        .unwrap_or((0, 0));
    size >= req && (lim == 0 || size <= lim)
}

pub(super) fn volume_context(r: &VolumeRecord) -> proto::Map {
    let mut m = proto::Map::new();
    m.insert(params::ENCRYPTED.into(), r.encryption.is_some().to_string());
    if let Some(e) = &r.encryption {
        m.insert(params::KMS_ID.into(), e.kms_id.to_string());
        // A node without the record uses the kmsID as this tenant too.
        if let Some(t) = &e.tenant {
            m.insert(params::PVC_NAMESPACE.into(), t.clone());
        }
    }
    m.insert(params::FS_TYPE.into(), r.fs_type.clone());
    for (k, v) in r.placement.context(&r.volume_id) {
        m.insert(k.into(), v);
    }
    m
}

fn to_volume(r: &VolumeRecord) -> proto::Volume {
    use proto::volume_content_source::{SnapshotSource, Type, VolumeSource};
    proto::Volume {
        capacity_bytes: r.capacity_bytes as i64,
        volume_id: r.volume_id.clone(),
        volume_context: volume_context(r),
        content_source: r
            .content_source
            .as_ref()
            .map(|s| proto::VolumeContentSource {
                r#type: Some(match s {
                    ContentSource::Volume(v) => Type::Volume(VolumeSource {
                        volume_id: v.clone(),
                    }),
                    ContentSource::Snapshot(s) => Type::Snapshot(SnapshotSource {
                        snapshot_id: s.clone(),
                    }),
                }),
            }),
    }
}

fn to_snapshot(r: &SnapshotRecord) -> proto::Snapshot {
    proto::Snapshot {
        size_bytes: r.size_bytes as i64,
        snapshot_id: r.snapshot_id.clone(),
        source_volume_id: r.source_volume_id.clone(),
        creation_time: Some(proto::Timestamp {
            seconds: r.created_unix,
            nanos: 0,
        }),
        ready_to_use: r.state == VolumeState::Ready,
    }
}

/// Where a new volume's content comes from, as the records know it.
struct Parent {
    source: ContentSource,
    id: String,
    capacity: u64,
    encryption: Option<Encryption>,
    placement: Placement,
}

impl Driver {
    fn parent(&self, src: Option<&proto::VolumeContentSource>) -> Result<Option<Parent>, CsiError> {
        use proto::volume_content_source::Type;
        let Some(t) = src.and_then(|s| s.r#type.as_ref()) else {
            return Ok(None);
        };
        match t {
            Type::Volume(v) => {
                check_id("volume_content_source.volume.volume_id", &v.volume_id)?;
                let r = self
                    .records
                    .volume(&v.volume_id)?
                    .filter(|r| r.state == VolumeState::Ready)
                    .ok_or_else(|| {
                        CsiError::not_found(format!("source volume {} does not exist", v.volume_id))
                    })?;
                Ok(Some(Parent {
                    source: ContentSource::Volume(r.volume_id.clone()),
                    id: r.volume_id,
                    capacity: r.capacity_bytes,
                    encryption: r.encryption,
                    placement: r.placement,
                }))
            }
            Type::Snapshot(s) => {
                check_id("volume_content_source.snapshot.snapshot_id", &s.snapshot_id)?;
                let r = self
                    .records
                    .snapshot(&s.snapshot_id)?
                    .filter(|r| r.state == VolumeState::Ready)
                    .ok_or_else(|| {
                        CsiError::not_found(format!("snapshot {} does not exist", s.snapshot_id))
                    })?;
                Ok(Some(Parent {
                    source: ContentSource::Snapshot(r.snapshot_id.clone()),
                    id: r.snapshot_id,
                    capacity: r.size_bytes,
                    encryption: r.encryption,
                    placement: r.placement,
                }))
            }
        }
    }

    /// CreateVolume: validate everything first, record the volume as
    /// `creating`, create its blocks, seal its key, mark it `ready`. A retry
    /// resumes where an interrupted call stopped.
    pub async fn create_volume(
        &self,
        req: proto::CreateVolumeRequest,
    ) -> Result<proto::CreateVolumeResponse, CsiError> {
        if req.name.is_empty() {
            return Err(CsiError::invalid("name is required"));
        }
        check_capabilities(&req.volume_capabilities)?;
        let p = params::parse_for(
            &req.parameters,
            &self.config.default_fs_type,
            self.backends.parameters(),
        )?;
        let placement = self.backends.placement(&req.parameters)?;
        if let Some(kms_id) = &p.kms_id {
            // An unknown or broken kmsID (or tenant setting) fails before
            // anything is created.
            self.kms
                .check_configured(kms_id.as_str(), p.tenant.as_deref())
                .await?;
        }
        let id = volume_id_for(&req.name);
        let _guard = self.locks.try_lock(&id)?;
        let parent = self.parent(req.volume_content_source.as_ref())?;
        if let Some(par) = &parent
            && par.placement != placement
        {
            return Err(CsiError::invalid(format!(
                "a copy of {} stays where its source is ({:?}); the StorageClass asks for {:?}",
                par.id, par.placement, placement
            )));
        }
        let floor = parent
            .as_ref()
            .map(|p| p.capacity)
            .unwrap_or(0)
            .max(fs_floor(&req.volume_capabilities, &p.fs_type));
        let size = capacity(req.capacity_range, floor)?;
        let existing = self.records.volume(&id)?;
        if let Some(r) = &existing
            && let Some(done) = resume_or_refuse(r, &req, &p, parent.as_ref())?
        {
            return Ok(done);
        }
        let encryption = encryption_for(parent.as_ref(), &p)?;
        let encrypted = encryption.is_some();
        let bytes = image_size(size, encrypted);
        if existing.is_none() {
            // A bad pool or Ceph user fails before anything is recorded.
            self.on_backend(At::new(&placement, &req.secrets), &id, |b, _| {
                b.check_ready()
            })
            .await?;
            self.check_room(&placement, bytes, size).await?;
        }
        let mut rec = VolumeRecord {
            version: 1,
            volume_id: id.clone(),
            name: req.name.clone(),
            capacity_bytes: size,
            state: VolumeState::Creating,
            fs_type: p.fs_type.clone(),
            encryption,
            content_source: parent.as_ref().map(|p| p.source.clone()),
            parameters_digest: p.digest.clone(),
            created_unix: now_unix(),
            placement,
            adopted: false,
        };
        self.records.put_volume(&rec)?;
        self.step("create.record")?;
        let at = At::new(&rec.placement, &req.secrets);
        self.create_blocks(at, &id, bytes, parent.as_ref()).await?;
        self.step("create.blocks")?;
        if let Some(enc) = rec.encryption.clone() {
            let key = self.seal_new_key(at, &id, &enc, parent.as_ref()).await?;
            self.set_key_reference(at, &id, enc.formatted, &key).await?;
            if let Some(e) = rec.encryption.as_mut() {
                e.key = key;
            }
            self.step("create.key")?;
        }
        rec.state = VolumeState::Ready;
        self.records.put_volume(&rec)?;
        tracing::info!(volume = %id, name = %req.name, encrypted, "volume created");
        Ok(proto::CreateVolumeResponse {
            volume: Some(to_volume(&rec)),
        })
    }

    /// Records on the volume how its key is held (RBD image metadata;
    /// nothing for image files).
    pub(super) async fn set_key_reference(
        &self,
        at: At<'_>,
        id: &str,
        formatted: bool,
        key: &KeyHolding,
    ) -> Result<(), CsiError> {
        let blob = match key {
            KeyHolding::Wrapped { blob } => Some(blob.clone()),
            _ => None,
        };
        self.on_backend(at, id, move |b, id| {
            b.set_key_reference(id, formatted, blob.as_deref())
        })
        .await
    }

    /// Refuses a volume that would not fit in the data directory.
    async fn check_room(
        &self,
        placement: &Placement,
        bytes: u64,
        size: u64,
    ) -> Result<(), CsiError> {
        let Some(available) = self.available_bytes(placement).await? else {
            return Ok(());
        };
        if bytes > available {
            return Err(CsiError::new(
                Code::OutOfRange,
                format!(
                    "capacity {size} bytes is beyond what the data directory has free \
                     ({available} bytes)"
                ),
            ));
        }
        Ok(())
    }

    /// The volume's blocks: empty, or a copy of its parent's.
    async fn create_blocks(
        &self,
        at: At<'_>,
        id: &str,
        bytes: u64,
        parent: Option<&Parent>,
    ) -> Result<(), CsiError> {
        let src = parent.map(|p| (p.source.clone(), p.id.clone()));
        self.on_backend(at, id, move |b, id| {
            let source = match &src {
                None => BlockSource::Empty,
                Some((ContentSource::Volume(_), pid)) => BlockSource::Volume(pid),
                Some((ContentSource::Snapshot(_), pid)) => BlockSource::Snapshot(pid),
            };
            b.create(id, bytes, source)
        })
        .await
    }

    /// Seals the new volume's passphrase (a fresh one, or its parent's for
    /// a copy) with its kmsID. On failure nothing was stored and the CO
    /// never saw the volume: its blocks and record are undone, so a CO that
    /// gives up leaves nothing behind.
    async fn seal_new_key(
        &self,
        at: At<'_>,
        id: &str,
        enc: &Encryption,
        parent: Option<&Parent>,
    ) -> Result<KeyHolding, CsiError> {
        let passphrase = match parent {
            Some(par) => {
                let pe = par.encryption.as_ref().expect("checked by encryption_for");
                keys::open(&self.kms, pe, &par.id)
                    .await
                    .map_err(|e| e.context(format!("source {}", par.id)))?
            }
            None => generate_passphrase(),
        };
        let sealed = keys::seal(
            &self.kms,
            &enc.kms_id,
            enc.tenant.as_deref(),
            id,
            &passphrase,
        );
        match sealed.await {
            Ok(holding) => Ok(holding),
            Err(e) => {
                let _ = self.on_backend(at, id, |b, id| b.remove(id)).await;
                let _ = self.records.remove(id);
                Err(e)
            }
        }
    }

    /// DeleteVolume: blocks first, then the key, then the record (of an
    /// adopted volume, only the record).
    pub async fn delete_volume(
        &self,
        req: proto::DeleteVolumeRequest,
    ) -> Result<proto::DeleteVolumeResponse, CsiError> {
        check_id("volume_id", &req.volume_id)?;
        let id = req.volume_id;
        let _guard = self.locks.try_lock(&id)?;
        let Some(rec) = self.records.volume(&id)? else {
            return Ok(proto::DeleteVolumeResponse {});
        };
        let at = At::new(&rec.placement, &req.secrets);
        if self
            .on_backend(at, &id, |b, id| b.attached(id))
            .await?
            .is_some()
        {
            return Err(CsiError::precondition(format!(
                "volume {id} is still staged on a node; NodeUnstageVolume first"
            )));
        }
        if rec.adopted {
            // Not made here: its image and key belong to whoever made it.
            self.records.remove(&id)?;
            tracing::info!(volume = %id, "adopted volume forgotten; its image and key are kept");
            return Ok(proto::DeleteVolumeResponse {});
        }
        if rec.state != VolumeState::Deleting {
            let mut marked = rec.clone();
            marked.state = VolumeState::Deleting;
            self.records.put_volume(&marked)?;
        }
        self.step("delete.mark")?;
        self.on_backend(at, &id, |b, id| b.remove(id)).await?;
        self.step("delete.blocks")?;
        if let Some(enc) = &rec.encryption {
            keys::release(&self.kms, enc, &id).await?;
        }
        self.step("delete.key")?;
        self.records.remove(&id)?;
        tracing::info!(volume = %id, "volume deleted");
        Ok(proto::DeleteVolumeResponse {})
    }

    /// ValidateVolumeCapabilities.
    pub async fn validate_volume_capabilities(
        &self,
        req: proto::ValidateVolumeCapabilitiesRequest,
    ) -> Result<proto::ValidateVolumeCapabilitiesResponse, CsiError> {
        check_id("volume_id", &req.volume_id)?;
        if req.volume_capabilities.is_empty() {
            return Err(CsiError::invalid("volume_capabilities is required"));
        }
        self.records
            .volume(&req.volume_id)?
            .filter(|r| r.state == VolumeState::Ready)
            .ok_or_else(|| {
                CsiError::not_found(format!("volume {} does not exist", req.volume_id))
            })?;
        if let Some(problem) = req.volume_capabilities.iter().find_map(capability_problem) {
            return Ok(proto::ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message: problem,
            });
        }
        Ok(proto::ValidateVolumeCapabilitiesResponse {
            confirmed: Some(proto::validate_volume_capabilities_response::Confirmed {
                volume_context: req.volume_context,
                volume_capabilities: req.volume_capabilities,
                parameters: req.parameters,
            }),
            message: String::new(),
        })
    }

    /// ListVolumes, paged by index.
    pub async fn list_volumes(
        &self,
        req: proto::ListVolumesRequest,
    ) -> Result<proto::ListVolumesResponse, CsiError> {
        // The token is the last volume ID of the previous page: it stays
        // valid when volumes come and go, and a page reads only its own
        // records ([`crate::volume::RecordStore::ids`]).
        let after = match req.starting_token.as_str() {
            "" => None,
            t if t.starts_with(VOLUME_PREFIX) && check_id("starting_token", t).is_ok() => Some(t),
            t => {
                return Err(CsiError::new(
                    Code::Aborted,
                    format!("starting_token {t:?} is not valid"),
                ));
            }
        };
        let max = usize::try_from(req.max_entries)
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or(usize::MAX);
        let mut entries = Vec::new();
        let mut cursor = after.map(str::to_string);
        loop {
            let want = (max - entries.len()).min(256);
            let ids = self.records.ids(VOLUME_PREFIX, cursor.as_deref(), want)?;
            let Some(last) = ids.last().cloned() else {
                break;
            };
            for id in ids {
                if let Some(r) = self.records.volume(&id)?
                    && r.state == VolumeState::Ready
                {
                    entries.push(proto::list_volumes_response::Entry {
                        volume: Some(to_volume(&r)),
                    });
                }
                if entries.len() == max {
                    let more = !self.records.ids(VOLUME_PREFIX, Some(&id), 1)?.is_empty();
                    return Ok(proto::ListVolumesResponse {
                        entries,
                        next_token: if more { id } else { String::new() },
                    });
                }
            }
            cursor = Some(last);
        }
        Ok(proto::ListVolumesResponse {
            entries,
            next_token: String::new(),
        })
    }

    /// GetCapacity: bytes free in the data directory (not offered for
    /// thin RBD pools).
    pub async fn get_capacity(&self) -> Result<proto::GetCapacityResponse, CsiError> {
        let Some(available) = self.available_bytes(&Placement::default()).await? else {
            return Err(CsiError::new(
                Code::Unimplemented,
                format!(
                    "GetCapacity: {} volumes are thin-provisioned; no capacity is reported",
                    self.backends.name()
                ),
            ));
        };
        Ok(proto::GetCapacityResponse {
            available_capacity: available as i64,
        })
    }

    /// ControllerExpandVolume: grows the blocks; the node grows the LUKS
    /// mapping and the filesystem.
    pub async fn controller_expand_volume(
        &self,
        req: proto::ControllerExpandVolumeRequest,
    ) -> Result<proto::ControllerExpandVolumeResponse, CsiError> {
        check_id("volume_id", &req.volume_id)?;
        let id = req.volume_id.clone();
        let _guard = self.locks.try_lock(&id)?;
        let mut rec = self
            .records
            .volume(&id)?
            .filter(|r| r.state == VolumeState::Ready)
            .ok_or_else(|| CsiError::not_found(format!("volume {id} does not exist")))?;
        let range = req
            .capacity_range
            .ok_or_else(|| CsiError::invalid("capacity_range is required"))?;
        let size = capacity(Some(range), rec.capacity_bytes)?;
        if size > rec.capacity_bytes {
            let available = self.available_bytes(&rec.placement).await?;
            if let Some(available) = available
                && size - rec.capacity_bytes > available
            {
                return Err(CsiError::new(
                    Code::OutOfRange,
                    format!(
                        "growing {id} by {} bytes is beyond what the data directory has free \
                         ({available} bytes)",
                        size - rec.capacity_bytes
                    ),
                ));
            }
            let bytes = image_size(size, rec.encryption.is_some());
            self.on_backend(At::new(&rec.placement, &req.secrets), &id, move |b, id| {
                b.grow(id, bytes)
            })
            .await?;
            rec.capacity_bytes = size;
            self.records.put_volume(&rec)?;
            tracing::info!(volume = %id, size, "volume expanded");
        }
        Ok(proto::ControllerExpandVolumeResponse {
            capacity_bytes: rec.capacity_bytes as i64,
            node_expansion_required: true,
        })
    }

    /// CreateSnapshot: a copy of the blocks, with the key re-stored under
    /// the snapshot's ID in the source's kmsID.
    pub async fn create_snapshot(
        &self,
        req: proto::CreateSnapshotRequest,
    ) -> Result<proto::CreateSnapshotResponse, CsiError> {
        if req.name.is_empty() {
            return Err(CsiError::invalid("name is required"));
        }
        check_id("source_volume_id", &req.source_volume_id)?;
        let sid = snapshot_id_for(&req.name);
        let _g1 = self.locks.try_lock(&sid)?;
        let _g2 = self.locks.try_lock(&req.source_volume_id)?;
        if let Some(r) = self.records.snapshot(&sid)? {
            if r.source_volume_id != req.source_volume_id {
                return Err(CsiError::new(
                    Code::AlreadyExists,
                    format!(
                        "snapshot {} exists for another volume ({})",
                        req.name, r.source_volume_id
                    ),
                ));
            }
            if r.state == VolumeState::Ready {
                return Ok(proto::CreateSnapshotResponse {
                    snapshot: Some(to_snapshot(&r)),
                });
            }
        }
        let src = self
            .records
            .volume(&req.source_volume_id)?
            .filter(|r| r.state == VolumeState::Ready)
            .ok_or_else(|| {
                CsiError::not_found(format!("volume {} does not exist", req.source_volume_id))
            })?;
        let mut rec = SnapshotRecord {
            version: 1,
            snapshot_id: sid.clone(),
            name: req.name.clone(),
            source_volume_id: src.volume_id.clone(),
            size_bytes: src.capacity_bytes,
            state: VolumeState::Creating,
            fs_type: src.fs_type.clone(),
            encryption: src.encryption.clone().map(|e| Encryption {
                key: KeyHolding::Pending,
                ..e
            }),
            created_unix: now_unix(),
            placement: src.placement.clone(),
        };
        self.records.put_snapshot(&rec)?;
        self.step("snapshot.record")?;
        let s = sid.clone();
        let at = At::new(&src.placement, &req.secrets);
        self.on_backend(at, &src.volume_id, move |b, vid| b.snapshot(vid, &s))
            .await?;
        self.step("snapshot.blocks")?;
        if let (Some(enc), Some(src_enc)) = (rec.encryption.as_mut(), &src.encryption) {
            let passphrase = keys::open(&self.kms, src_enc, &src.volume_id).await?;
            enc.key = keys::seal(
                &self.kms,
                &enc.kms_id,
                enc.tenant.as_deref(),
                &sid,
                &passphrase,
            )
            .await?;
            self.set_key_reference(at, &sid, src_enc.formatted, &enc.key)
                .await?;
            self.step("snapshot.key")?;
        }
        rec.state = VolumeState::Ready;
        self.records.put_snapshot(&rec)?;
        tracing::info!(snapshot = %sid, volume = %src.volume_id, "snapshot created");
        Ok(proto::CreateSnapshotResponse {
            snapshot: Some(to_snapshot(&rec)),
        })
    }

    /// DeleteSnapshot: blocks, then key, then record.
    pub async fn delete_snapshot(
        &self,
        req: proto::DeleteSnapshotRequest,
    ) -> Result<proto::DeleteSnapshotResponse, CsiError> {
        check_id("snapshot_id", &req.snapshot_id)?;
        let id = req.snapshot_id;
        let _guard = self.locks.try_lock(&id)?;
        let Some(mut rec) = self.records.snapshot(&id)? else {
            return Ok(proto::DeleteSnapshotResponse {});
        };
        rec.state = VolumeState::Deleting;
        self.records.put_snapshot(&rec)?;
        self.on_backend(At::new(&rec.placement, &req.secrets), &id, |b, id| {
            b.remove(id)
        })
        .await?;
        if let Some(enc) = &rec.encryption {
            keys::release(&self.kms, enc, &id).await?;
        }
        self.records.remove(&id)?;
        Ok(proto::DeleteSnapshotResponse {})
    }

    /// Rotates the LUKS passphrase of an encrypted volume without downtime:
    /// a new passphrase goes into a spare keyslot, is stored with the
    /// kmsID, verified, and only then are the other keyslots killed. Works
    /// whether or not the volume is staged.
    pub async fn rotate_key(
        &self,
        req: proto::EncryptionKeyRotateRequest,
    ) -> Result<proto::EncryptionKeyRotateResponse, CsiError> {
        check_id("volume_id", &req.volume_id)?;
        if !req.encryption_key.is_empty() {
            return Err(CsiError::invalid(
                "encryption_key: kmshost generates volume keys itself (256 random bits); a \
                 caller-chosen key is refused",
            ));
        }
        let id = req.volume_id.clone();
        let _guard = self.locks.try_lock(&id)?;
        let mut rec = self
            .records
            .volume(&id)?
            .filter(|r| r.state == VolumeState::Ready)
            .ok_or_else(|| CsiError::not_found(format!("volume {id} does not exist")))?;
        let Some(enc) = rec.encryption.clone() else {
            return Err(CsiError::precondition(format!(
                "volume {id} is not encrypted"
            )));
        };
        let old = keys::open(&self.kms, &enc, &id).await?;
        let placement = rec.placement.clone();
        let at = At::new(&placement, &req.secrets);
        let dev = self
            .on_backend(at, &id, |b, id| {
                b.attached(id)?.map_or_else(|| b.header_path(id), Ok)
            })
            .await?;
        let new = generate_passphrase();
        let d = dev.clone();
        let is_luks = blocking(move || Ok(luks::is_luks2(&d))).await?;
        if !is_luks {
            // Never formatted: nothing on the device depends on the key yet.
            let holding =
                keys::seal(&self.kms, &enc.kms_id, enc.tenant.as_deref(), &id, &new).await?;
            self.set_key_reference(at, &id, false, &holding).await?;
            if let Some(e) = rec.encryption.as_mut() {
                e.key = holding;
            }
            self.records.put_volume(&rec)?;
            return Ok(proto::EncryptionKeyRotateResponse {});
        }
        self.rotate_formatted(at, &mut rec, &enc, dev, old, new)
            .await?;
        Ok(proto::EncryptionKeyRotateResponse {})
    }

    /// Rotation of a formatted volume, in the order that never loses
    /// access: a new keyslot for the new key, the key sealed and read back,
    /// the record, then the header's token, and only then the old slots go.
    async fn rotate_formatted(
        &self,
        at: At<'_>,
        rec: &mut VolumeRecord,
        enc: &Encryption,
        dev: std::path::PathBuf,
        old: crate::kms::Passphrase,
        new: crate::kms::Passphrase,
    ) -> Result<(), CsiError> {
        let id = rec.volume_id.clone();
        let (d, o, n, pbkdf) = (dev.clone(), old, new.clone(), enc.pbkdf);
        let new_slot = blocking(move || {
            luks::verify(&d, &o).map_err(|e| {
                CsiError::from(e).context("the key the KMS holds does not open the volume")
            })?;
            Ok(luks::add_keyslot(&d, &o, &n, pbkdf)?)
        })
        .await?;
        self.step("rotate.keyslot")?;
        let holding = keys::seal(&self.kms, &enc.kms_id, enc.tenant.as_deref(), &id, &new).await?;
        self.step("rotate.store")?;
        let mut fresh = enc.clone();
        fresh.key = holding;
        let check = keys::open(&self.kms, &fresh, &id).await?;
        if check != new {
            return Err(CsiError::new(
                Code::DataLoss,
                format!("volume {id}: the KMS returned another key than the one just stored"),
            ));
        }
        self.set_key_reference(at, &id, true, &fresh.key).await?;
        rec.encryption = Some(fresh.clone());
        self.records.put_volume(rec)?;
        self.step("rotate.record")?;
        let token = luks::KmsToken {
            kms_id: fresh.kms_id.clone(),
            key_id: id.clone(),
            wrapped: fresh.key.wrapped_key(),
            keyslots: vec![new_slot],
        };
        blocking(move || keep_only_the_new_slot(&dev, &new, new_slot, &token)).await?;
        tracing::info!(volume = %id, keyslot = new_slot, "volume key rotated");
        Ok(())
    }
}

/// After a rotation: the new key opens `new_slot`, the header's token says
/// so, and every other keyslot is killed.
fn keep_only_the_new_slot(
    dev: &std::path::Path,
    new: &crate::kms::Passphrase,
    new_slot: u32,
    token: &luks::KmsToken,
) -> Result<(), CsiError> {
    let slot = luks::verify(dev, new)?;
    if slot != new_slot {
        return Err(CsiError::internal(format!(
            "the new key opened keyslot {slot}, expected {new_slot}"
        )));
    }
    luks::write_token(dev, token)?;
    for s in luks::active_keyslots(dev)? {
        if s != new_slot {
            luks::kill_keyslot(dev, s)?;
        }
    }
    Ok(())
}

/// For a volume already recorded under this name: the answer if it is
/// ready (the same request again), `None` to resume an interrupted create,
/// or the reason the request conflicts with it.
fn resume_or_refuse(
    r: &VolumeRecord,
    req: &proto::CreateVolumeRequest,
    p: &params::VolumeParams,
    parent: Option<&Parent>,
) -> Result<Option<proto::CreateVolumeResponse>, CsiError> {
    let same = r.name == req.name
        && r.parameters_digest == p.digest
        && r.content_source == parent.map(|p| p.source.clone())
        && fits(req.capacity_range, r.capacity_bytes);
    if !same {
        return Err(CsiError::new(
            Code::AlreadyExists,
            format!(
                "volume {} ({}) exists with another size, source or parameters",
                req.name, r.volume_id
            ),
        ));
    }
    match r.state {
        VolumeState::Ready => Ok(Some(proto::CreateVolumeResponse {
            volume: Some(to_volume(r)),
        })),
        VolumeState::Deleting => Err(CsiError::precondition(format!(
            "volume {} is being deleted; retry DeleteVolume first",
            r.volume_id
        ))),
        VolumeState::Creating => {
            tracing::info!(volume = %r.volume_id, "resuming an interrupted CreateVolume");
            Ok(None)
        }
    }
}

/// What the new volume's encryption will be: none, the StorageClass's, or
/// for a copy its parent's LUKS settings with the key re-stored under the
/// new ID (maybe in another kmsID). A copy keeps its parent's encryption
/// state: kmshost never encrypts existing data in place, nor copies
/// encrypted data out in the clear.
fn encryption_for(
    parent: Option<&Parent>,
    p: &params::VolumeParams,
) -> Result<Option<Encryption>, CsiError> {
    let pending = |kms_id: &crate::types::KmsId| Encryption {
        kms_id: kms_id.clone(),
        tenant: p.tenant.clone(),
        key: KeyHolding::Pending,
        cipher: p.format.cipher.clone(),
        cipher_mode: p.format.cipher_mode.clone(),
        key_size_bits: p.format.key_size_bits,
        pbkdf: p.format.pbkdf,
        sector_size: p.format.sector_size,
        formatted: false,
    };
    match (parent, &p.kms_id) {
        (None, None) => Ok(None),
        (None, Some(kms_id)) => Ok(Some(pending(kms_id))),
        (Some(par), kms_id) => match (&par.encryption, kms_id) {
            (None, None) => Ok(None),
            (Some(_), None) => Err(CsiError::invalid(format!(
                "source {} is encrypted: the StorageClass must set encrypted=true and an \
                 encryptionKMSID for the copy",
                par.id
            ))),
            (None, Some(_)) => Err(CsiError::invalid(format!(
                "source {} is not encrypted: kmshost cannot encrypt existing data in place",
                par.id
            ))),
            (Some(pe), Some(kms_id)) => Ok(Some(Encryption {
                kms_id: kms_id.clone(),
                tenant: p.tenant.clone(),
                key: KeyHolding::Pending,
                ..pe.clone()
            })),
        },
    }
}
