//! Node calls: stage (attach, unlock, format on first use, mkfs, mount),
//! publish (bind mount), and their reverses; expansion and stats.

use super::proto::{self, volume_capability::AccessType};
use super::{At, CsiError, Driver, blocking, check_id, keys};
use crate::luks::{self, FormatParams};
use crate::volume::{Encryption, KeyHolding, VolumeRecord, VolumeState, sys};
use std::path::{Path, PathBuf};

/// The device-mapper name of an open encrypted volume.
pub fn mapper_name(volume_id: &str) -> String {
    format!("luks-{volume_id}")
}

enum Access {
    Block,
    Mount { fs_type: String, flags: Vec<String> },
}

fn access(cap: Option<&proto::VolumeCapability>, rec: &VolumeRecord) -> Result<Access, CsiError> {
    let cap = cap.ok_or_else(|| CsiError::invalid("volume_capability is required"))?;
    if let Some(p) = super::controller::capability_problem(cap) {
        return Err(CsiError::invalid(p));
    }
    Ok(match &cap.access_type {
        Some(AccessType::Mount(m)) => Access::Mount {
            fs_type: if m.fs_type.is_empty() {
                rec.fs_type.clone()
            } else {
                m.fs_type.clone()
            },
            flags: m.mount_flags.clone(),
        },
        _ => Access::Block,
    })
}

fn required_path(what: &str, p: &str) -> Result<PathBuf, CsiError> {
    if p.is_empty() {
        return Err(CsiError::invalid(format!("{what} is required")));
    }
    let path = PathBuf::from(p);
    if !path.is_absolute() || path.components().any(|c| c.as_os_str() == "..") {
        return Err(CsiError::invalid(format!(
            "{what} {p:?} must be an absolute path without \"..\""
        )));
    }
    Ok(path)
}

/// What is mounted at a node path, as seen from one volume.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AtPath {
    /// Nothing is mounted there.
    Empty,
    /// The volume is: its filesystem (or a bind mount of it), or its device
    /// node bind-mounted (a published block volume).
    Volume {
        /// Mounted read-only.
        read_only: bool,
    },
    /// Something else is (its mount source).
    Other(String),
}

/// What is at `path`, compared with the volume's staged `device` by device
/// number, so the same device under another name still matches.
fn at_path(path: &Path, device: Option<&Path>) -> Result<AtPath, CsiError> {
    let Some(m) = sys::mount_at(path)? else {
        return Ok(AtPath::Empty);
    };
    let dev = device.and_then(sys::device_number);
    let same =
        dev.is_some_and(|d| m.dev == d || (!path.is_dir() && sys::device_number(path) == Some(d)));
    Ok(if same {
        AtPath::Volume {
            read_only: m.read_only(),
        }
    } else {
        AtPath::Other(m.source)
    })
}

impl Driver {
    /// What is at `path` as seen from volume `rec` (none: an unknown or
    /// unstaged volume, whose device nothing can match).
    async fn at(&self, rec: Option<&VolumeRecord>, path: &Path) -> Result<AtPath, CsiError> {
        let device = match rec {
            Some(r) => self.staged_device(r).await?,
            None => None,
        };
        let p = path.to_path_buf();
        blocking(move || at_path(&p, device.as_deref())).await
    }

    fn ready_volume(&self, id: &str) -> Result<VolumeRecord, CsiError> {
        let r = self
            .records
            .volume(id)?
            .ok_or_else(|| CsiError::not_found(format!("volume {id} does not exist")))?;
        Self::ready(r)
    }

    /// `r`, if its volume is ready for use.
    fn ready(r: VolumeRecord) -> Result<VolumeRecord, CsiError> {
        let id = &r.volume_id;
        if r.state != VolumeState::Ready {
            return Err(CsiError::precondition(format!(
                "volume {id} is {:?}, not ready",
                r.state
            )));
        }
        Ok(r)
    }

    /// The block device a staged volume is used through: the open LUKS
    /// mapping, or the attached device of an unencrypted volume.
    async fn staged_device(&self, rec: &VolumeRecord) -> Result<Option<PathBuf>, CsiError> {
        if rec.encryption.is_some() {
            let name = mapper_name(&rec.volume_id);
            return blocking(move || {
                Ok(luks::is_active(&name).then(|| PathBuf::from(format!("/dev/mapper/{name}"))))
            })
            .await;
        }
        self.on_backend(At::local(&rec.placement), &rec.volume_id, |b, id| {
            b.attached(id)
        })
        .await
    }

    /// Closes the volume's LUKS mapping if it is open, then detaches its
    /// device: the end of NodeUnstage, and the undo of a failed NodeStage.
    async fn close_and_detach(&self, at: At<'_>, id: &str) -> Result<(), CsiError> {
        let b = self.backends.open(at.placement, at.secrets)?;
        let id = id.to_string();
        blocking(move || {
            let name = mapper_name(&id);
            if luks::is_active(&name) {
                luks::deactivate(&name)?;
            }
            Ok(b.detach(&id)?)
        })
        .await
    }

    /// Fetches the key, formats on first use, opens the mapping.
    async fn unlock(
        &self,
        secrets: &proto::Map,
        rec: &mut VolumeRecord,
        enc: &Encryption,
        dev: &Path,
    ) -> Result<PathBuf, CsiError> {
        let id = rec.volume_id.clone();
        let name = mapper_name(&id);
        let mapped = PathBuf::from(format!("/dev/mapper/{name}"));
        let n = name.clone();
        if blocking(move || Ok(luks::is_active(&n))).await? {
            return Ok(mapped);
        }
        let _permit = self
            .unlocks
            .acquire()
            .await
            .map_err(|_| CsiError::internal("unlock limiter closed"))?;
        let (passphrase, rewrapped) = keys::open_current(&self.kms, enc, &id).await?;
        let d = dev.to_path_buf();
        if !blocking(move || Ok(luks::is_luks2(&d))).await? {
            self.format_first_use(&id, enc, dev, &passphrase).await?;
        }
        let rewrapped_now = rewrapped.is_some();
        let wrapped = match rewrapped {
            Some(w) => Some(self.keep_rewrapped(rec, &w)?),
            None => enc.key.wrapped_key(),
        };
        // The header names its kmsID and (for wrapping providers) carries
        // the wrapped key, so the volume describes itself.
        let token = luks::KmsToken {
            kms_id: enc.kms_id.clone(),
            key_id: id.clone(),
            wrapped,
            keyslots: Vec::new(),
        };
        let (d, p, n) = (dev.to_path_buf(), passphrase.clone(), name.clone());
        blocking(move || open_with_token(&d, &p, &n, token)).await?;
        if let Some(e) = rec.encryption.clone()
            && (!e.formatted || rewrapped_now)
        {
            let placement = rec.placement.clone();
            self.set_key_reference(At::new(&placement, secrets), &id, true, &e.key)
                .await?;
            if let Some(e) = rec.encryption.as_mut() {
                e.formatted = true;
            }
            self.records.put_volume(rec)?;
        }
        Ok(mapped)
    }

    /// Records the blob the provider rewrapped under its current key
    /// version (checked by the facade) in place of the old one: the old
    /// blob keeps working until the provider retires its key version, the
    /// new one after that too.
    fn keep_rewrapped(
        &self,
        rec: &mut VolumeRecord,
        w: &crate::kms::WrappedKey,
    ) -> Result<crate::kms::WrappedKey, CsiError> {
        if let Some(e) = rec.encryption.as_mut() {
            e.key = KeyHolding::wrapped(w);
            let kms_id = e.kms_id.clone();
            self.records.put_volume(rec)?;
            tracing::info!(volume = %rec.volume_id, %kms_id, "kept the key rewrapped under the provider's current key version");
        }
        Ok(w.clone())
    }

    /// LUKS2-formats a blank device on first use, only with a key of the
    /// exact shape kmshost generates: whatever a plugin returns, a weak key
    /// never formats a volume.
    async fn format_first_use(
        &self,
        id: &str,
        enc: &Encryption,
        dev: &Path,
        passphrase: &crate::kms::Passphrase,
    ) -> Result<(), CsiError> {
        if !crate::kms::checks::is_generated_passphrase(passphrase) {
            return Err(CsiError::precondition(format!(
                "volume {id}: kmsID {} returned a key of {} bytes that kmshost did not generate; \
                 refusing to format the volume with it",
                enc.kms_id,
                passphrase.len()
            )));
        }
        let params = FormatParams {
            cipher: enc.cipher.clone(),
            cipher_mode: enc.cipher_mode.clone(),
            key_size_bits: enc.key_size_bits,
            pbkdf: enc.pbkdf,
            sector_size: enc.sector_size,
            label: None,
        };
        let (d, p) = (dev.to_path_buf(), passphrase.clone());
        blocking(move || Ok(luks::format(&d, &p, &params)?))
            .await
            .map_err(|e| e.context(format!("volume {id}")))?;
        tracing::info!(volume = %id, "formatted LUKS2 on first use");
        self.step("stage.format")
    }

    /// NodeStageVolume.
    pub async fn node_stage_volume(
        &self,
        req: proto::NodeStageVolumeRequest,
    ) -> Result<proto::NodeStageVolumeResponse, CsiError> {
        check_id("volume_id", &req.volume_id)?;
        let staging = required_path("staging_target_path", &req.staging_target_path)?;
        let id = req.volume_id.clone();
        let _guard = self.locks.try_lock(&id)?;
        // An adopted record was just made from the volume's own key
        // reference; a kept one is brought up to date with it.
        let (mut rec, adopted) = match self.records.volume(&id)? {
            Some(r) => (self.refreshed(Self::ready(r)?, &req.secrets).await?, false),
            None => (
                self.adopt(&id, &req.volume_context, &req.secrets).await?,
                true,
            ),
        };
        let access = access(req.volume_capability.as_ref(), &rec)?;
        if let Access::Mount { .. } = access {
            match self.at(Some(&rec), &staging).await? {
                AtPath::Empty => {}
                AtPath::Volume { .. } => return Ok(proto::NodeStageVolumeResponse {}),
                AtPath::Other(source) => {
                    return Err(CsiError::new(
                        tonic::Code::AlreadyExists,
                        format!(
                            "staging path {} already has {source} mounted",
                            staging.display()
                        ),
                    ));
                }
            }
        }
        let placement = rec.placement.clone();
        let at = At::new(&placement, &req.secrets);
        let dev = self.on_backend(at, &id, |b, id| b.attach(id)).await?;
        if adopted && let Err(e) = self.records.put_volume(&rec) {
            self.undo_stage(at, &id, adopted).await;
            return Err(e.into());
        }
        self.step("stage.attach")?;
        let device = match rec.encryption.clone() {
            Some(enc) => match self.unlock(&req.secrets, &mut rec, &enc, &dev).await {
                Ok(d) => d,
                Err(e) => {
                    self.undo_stage(at, &id, adopted).await;
                    return Err(e);
                }
            },
            None => {
                let d = dev.clone();
                if blocking(move || Ok(sys::probe_type(&d)?)).await?.as_deref()
                    == Some("crypto_LUKS")
                {
                    self.undo_stage(at, &id, adopted).await;
                    return Err(CsiError::precondition(format!(
                        "volume {id} holds a LUKS header but is recorded as unencrypted: refusing \
                         to use it"
                    )));
                }
                dev
            }
        };
        self.step("stage.open")?;
        if let Access::Mount { fs_type, flags } = access {
            let (d, s) = (device.clone(), staging.clone());
            let vid = id.clone();
            let mounted = blocking(move || {
                match sys::probe_type(&d)? {
                    None => sys::mkfs(&fs_type, &d)?,
                    Some(t) if t == fs_type => {}
                    Some(t) => {
                        return Err(CsiError::precondition(format!(
                            "volume {vid} holds {t}, not {fs_type}: refusing to reformat it"
                        )));
                    }
                }
                std::fs::create_dir_all(&s)
                    .map_err(|e| CsiError::internal(format!("{}: {e}", s.display())))?;
                sys::mount(&d, &s, Some(&fs_type), &flags)?;
                Ok(())
            })
            .await;
            if let Err(e) = mounted {
                // Leave the node as it was: close what this call opened.
                self.undo_stage(at, &id, adopted).await;
                return Err(e);
            }
        }
        tracing::info!(volume = %id, staging = %staging.display(), "volume staged");
        Ok(proto::NodeStageVolumeResponse {})
    }

    /// Leaves the node as a failed NodeStage found it: closes and detaches
    /// what it opened, and forgets a volume it was adopting (so a corrected
    /// volume context is read afresh on the next try).
    async fn undo_stage(&self, at: At<'_>, id: &str, adopted: bool) {
        // The stage's own error is what the caller needs; a failed undo is
        // logged, and the next NodeStage or NodeUnstage finishes it.
        if let Err(e) = self.close_and_detach(at, id).await {
            tracing::warn!(volume = %id, error = %e, "could not undo a failed stage");
        }
        if adopted && let Err(e) = self.records.remove(id) {
            tracing::warn!(volume = %id, error = %e, "could not forget a failed adoption");
        }
    }

    /// NodeUnstageVolume: unmount, close, detach (each only if present).
    pub async fn node_unstage_volume(
        &self,
        req: proto::NodeUnstageVolumeRequest,
    ) -> Result<proto::NodeUnstageVolumeResponse, CsiError> {
        check_id("volume_id", &req.volume_id)?;
        let staging = required_path("staging_target_path", &req.staging_target_path)?;
        let id = req.volume_id.clone();
        let _guard = self.locks.try_lock(&id)?;
        let rec = self.records.volume(&id)?;
        match self.at(rec.as_ref(), &staging).await? {
            AtPath::Empty => {}
            AtPath::Volume { .. } => {
                let s = staging.clone();
                blocking(move || Ok(sys::umount(&s)?)).await?;
            }
            AtPath::Other(source) => {
                return Err(CsiError::precondition(format!(
                    "staging path {} holds {source}, not volume {id}: nothing was unmounted or \
                     closed",
                    staging.display()
                )));
            }
        }
        if let Some(r) = &rec
            && let Some(device) = self.staged_device(r).await?
        {
            let still = blocking(move || Ok(sys::mounts_of(&device)?)).await?;
            if !still.is_empty() {
                let at: Vec<String> = still.iter().map(|p| p.display().to_string()).collect();
                return Err(CsiError::precondition(format!(
                    "volume {id} is still mounted at {}: unpublish (or unstage from) there first",
                    at.join(", ")
                )));
            }
        }
        let placement = rec.map(|r| r.placement).unwrap_or_default();
        self.close_and_detach(At::local(&placement), &id).await?;
        Ok(proto::NodeUnstageVolumeResponse {})
    }

    /// NodePublishVolume: bind-mounts the staged filesystem (or device) at
    /// the target, read-only if asked.
    pub async fn node_publish_volume(
        &self,
        req: proto::NodePublishVolumeRequest,
    ) -> Result<proto::NodePublishVolumeResponse, CsiError> {
        check_id("volume_id", &req.volume_id)?;
        let staging = required_path("staging_target_path", &req.staging_target_path)?;
        let target = required_path("target_path", &req.target_path)?;
        let id = req.volume_id.clone();
        let _guard = self.locks.try_lock(&id)?;
        let rec = self.ready_volume(&id)?;
        let access = access(req.volume_capability.as_ref(), &rec)?;
        let source = match access {
            Access::Block => self.staged_device(&rec).await?.ok_or_else(|| {
                CsiError::precondition(format!("volume {id} is not staged on this node"))
            })?,
            Access::Mount { .. } => match self.at(Some(&rec), &staging).await? {
                AtPath::Volume { .. } => staging,
                AtPath::Empty => {
                    return Err(CsiError::precondition(format!(
                        "volume {id} is not staged at {}",
                        staging.display()
                    )));
                }
                AtPath::Other(other) => {
                    return Err(CsiError::precondition(format!(
                        "staging path {} holds {other}, not volume {id}",
                        staging.display()
                    )));
                }
            },
        };
        let readonly = req.readonly;
        match self.at(Some(&rec), &target).await? {
            AtPath::Empty => {}
            AtPath::Volume { read_only } if read_only == readonly => {
                return Ok(proto::NodePublishVolumeResponse {});
            }
            AtPath::Volume { read_only } => {
                return Err(CsiError::new(
                    tonic::Code::AlreadyExists,
                    format!(
                        "volume {id} is already published at {} with readonly={read_only}",
                        target.display()
                    ),
                ));
            }
            AtPath::Other(other) => {
                return Err(CsiError::new(
                    tonic::Code::AlreadyExists,
                    format!("target {} already has {other} mounted", target.display()),
                ));
            }
        }
        let block = matches!(access, Access::Block);
        blocking(move || bind_mount(&source, &target, block, readonly)).await?;
        Ok(proto::NodePublishVolumeResponse {})
    }

    /// NodeUnpublishVolume: unmounts and removes the target.
    pub async fn node_unpublish_volume(
        &self,
        req: proto::NodeUnpublishVolumeRequest,
    ) -> Result<proto::NodeUnpublishVolumeResponse, CsiError> {
        check_id("volume_id", &req.volume_id)?;
        let target = required_path("target_path", &req.target_path)?;
        let id = req.volume_id.clone();
        let _guard = self.locks.try_lock(&id)?;
        let rec = self.records.volume(&id)?;
        loop {
            match self.at(rec.as_ref(), &target).await? {
                AtPath::Empty => break,
                AtPath::Volume { .. } => {
                    let t = target.clone();
                    blocking(move || Ok(sys::umount(&t)?)).await?;
                }
                AtPath::Other(other) => {
                    return Err(CsiError::precondition(format!(
                        "target {} holds {other}, not volume {id}: not unmounted",
                        target.display()
                    )));
                }
            }
        }
        blocking(move || {
            let r = if target.is_dir() {
                std::fs::remove_dir(&target)
            } else {
                std::fs::remove_file(&target)
            };
            match r {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(CsiError::internal(format!("{}: {e}", target.display()))),
            }
        })
        .await?;
        Ok(proto::NodeUnpublishVolumeResponse {})
    }

    /// NodeExpandVolume: refreshes the device, grows the LUKS mapping and
    /// the filesystem.
    pub async fn node_expand_volume(
        &self,
        req: proto::NodeExpandVolumeRequest,
    ) -> Result<proto::NodeExpandVolumeResponse, CsiError> {
        check_id("volume_id", &req.volume_id)?;
        let id = req.volume_id.clone();
        let _guard = self.locks.try_lock(&id)?;
        let rec = self.ready_volume(&id)?;
        let path = required_path("volume_path", &req.volume_path)?;
        if !matches!(self.at(Some(&rec), &path).await?, AtPath::Volume { .. }) {
            return Err(CsiError::not_found(format!(
                "volume {id} is not staged or published at {}",
                path.display()
            )));
        }
        let encrypted = rec.encryption.is_some();
        let bytes = super::image_size(rec.capacity_bytes, encrypted);
        self.on_backend(At::new(&rec.placement, &req.secrets), &id, move |b, id| {
            b.grow(id, bytes)
        })
        .await?;
        let device = self.staged_device(&rec).await?.ok_or_else(|| {
            CsiError::precondition(format!("volume {id} is not staged on this node"))
        })?;
        let size = blocking(move || {
            if encrypted {
                luks::resize(&mapper_name(&id), 0)?;
            }
            if path.is_dir()
                && let Some(m) = sys::mount_at(&path)?
            {
                sys::grow_fs(&m.fs_type, &device, &path)?;
            }
            Ok(sys::device_size(&device)?)
        })
        .await?;
        Ok(proto::NodeExpandVolumeResponse {
            capacity_bytes: size as i64,
        })
    }

    /// NodeGetVolumeStats: bytes and inodes of a mounted volume, size of a
    /// block one.
    pub async fn node_get_volume_stats(
        &self,
        req: proto::NodeGetVolumeStatsRequest,
    ) -> Result<proto::NodeGetVolumeStatsResponse, CsiError> {
        use proto::volume_usage::Unit;
        check_id("volume_id", &req.volume_id)?;
        let id = &req.volume_id;
        let rec = self
            .records
            .volume(id)?
            .ok_or_else(|| CsiError::not_found(format!("volume {id} does not exist")))?;
        let path = required_path("volume_path", &req.volume_path)?;
        if !path.exists() {
            return Err(CsiError::not_found(format!(
                "volume path {} does not exist",
                path.display()
            )));
        }
        if !matches!(self.at(Some(&rec), &path).await?, AtPath::Volume { .. }) {
            return Err(CsiError::not_found(format!(
                "volume {id} is not staged or published at {}",
                path.display()
            )));
        }
        blocking(move || {
            let usage = if path.is_dir() {
                let s = sys::fs_stats(&path)?;
                vec![
                    proto::VolumeUsage {
                        available: s.available_bytes as i64,
                        total: s.total_bytes as i64,
                        used: s.used_bytes as i64,
                        unit: Unit::Bytes as i32,
                    },
                    proto::VolumeUsage {
                        available: s.free_inodes as i64,
                        total: s.total_inodes as i64,
                        used: s.total_inodes.saturating_sub(s.free_inodes) as i64,
                        unit: Unit::Inodes as i32,
                    },
                ]
            } else {
                vec![proto::VolumeUsage {
                    total: sys::device_size(&path)? as i64,
                    unit: Unit::Bytes as i32,
                    ..Default::default()
                }]
            };
            Ok(proto::NodeGetVolumeStatsResponse {
                usage,
                volume_condition: Some(proto::VolumeCondition {
                    abnormal: false,
                    message: String::new(),
                }),
            })
        })
        .await
    }
}

/// Opens the LUKS2 device `dev` as `name` with `passphrase`, after making
/// its header's token name the keyslot the passphrase opens. A wrong key is
/// a precondition failure naming the kmsID.
fn open_with_token(
    dev: &Path,
    passphrase: &crate::kms::Passphrase,
    name: &str,
    token: luks::KmsToken,
) -> Result<(), CsiError> {
    let slot = luks::verify(dev, passphrase).map_err(|e| match e {
        luks::LuksError::WrongPassphrase(_) => CsiError::precondition(format!(
            "volume {}: the key from kmsID {} does not open it (wrong key)",
            token.key_id, token.kms_id
        )),
        other => other.into(),
    })?;
    let want = luks::KmsToken {
        keyslots: vec![slot],
        ..token
    };
    if luks::read_token(dev)?.as_ref() != Some(&want) {
        luks::write_token(dev, &want)?;
    }
    luks::activate(dev, name, passphrase, false)?;
    Ok(())
}

/// Bind-mounts `source` at `target` (a file for a block device, a
/// directory for a filesystem, created if missing), read-only if asked.
fn bind_mount(source: &Path, target: &Path, block: bool, readonly: bool) -> Result<(), CsiError> {
    let made = if block {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| CsiError::internal(format!("{}: {e}", parent.display())))?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(target)
            .map(|_| ())
    } else {
        std::fs::create_dir_all(target)
    };
    made.map_err(|e| CsiError::internal(format!("{}: {e}", target.display())))?;
    sys::mount(source, target, None, &["bind".to_string()])?;
    if readonly {
        sys::mount(
            Path::new("none"),
            target,
            None,
            &["remount".into(), "bind".into(), "ro".into()],
        )?;
    }
    Ok(())
}
