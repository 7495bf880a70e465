//! `kmshost demo`: the main job on the embedded default, step by step.
//!
//! A sparse image file gets a random 256-bit passphrase, wrapped by the
//! embedded `secret` plugin (ceph-csi `metadata` type) under a KEK derived
//! from a passphrase Secret; the image is LUKS2-formatted with it, the
//! wrapped key is kept in the LUKS2 header, unwrapped again to unlock, the
//! passphrase is rotated, and everything is cleaned up.

use crate::config::{ConfigError, ConfigSource, HostDefaults};
use crate::kms::{KeyId, Kms, KmsError, Passphrase, WrappedKey, generate_passphrase};
use crate::luks::{self, FormatParams, KmsToken, LuksError};
use crate::sandbox::{Sandbox, SandboxConfig, SandboxError};
use crate::secrets::MountedSecrets;
use crate::types::IdError;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Demo settings.
#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    /// Work directory (a temporary one if `None`).
    pub dir: Option<PathBuf>,
    /// Keep the work directory.
    pub keep: bool,
    /// Compile cache.
    pub cache_dir: Option<PathBuf>,
    /// Image size in MiB.
    pub size_mib: u64,
}

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A step did not behave as it must.
    #[error("{0}")]
    Failed(String),
    /// Writing progress or a file.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The KMS facade.
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// Its configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The sandbox could not start.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// LUKS2.
    #[error(transparent)]
    Luks(#[from] LuksError),
    /// An identifier.
    #[error(transparent)]
    Id(#[from] IdError),
}

type Result<T> = std::result::Result<T, DemoError>;

fn failed<T>(what: impl Into<String>) -> Result<T> {
    Err(DemoError::Failed(what.into()))
}

const KMS_ID: &str = "demo-metadata";

struct Steps<'a, W: Write> {
    out: &'a mut W,
    n: u32,
    t: Instant,
}

impl<W: Write> Steps<'_, W> {
    fn step(&mut self, what: &str) -> Result<()> {
        self.n += 1;
        self.t = Instant::now();
        write!(self.out, "[{:>2}] {what} ... ", self.n)?;
        self.out.flush()?;
        Ok(())
    }
    fn done(&mut self, detail: &str) -> Result<()> {
        writeln!(
            self.out,
            "ok ({} ms) {detail}",
            self.t.elapsed().as_millis()
        )?;
        Ok(())
    }
}

/// The volume as the demo goes: its image, the passphrase that opens it,
/// its wrapped key and the token in its header.
struct Volume {
    image: PathBuf,
    key_id: KeyId,
    pass: Passphrase,
    wrapped: WrappedKey,
    slot: u32,
    token: KmsToken,
    params: FormatParams,
}

/// Runs the demo, writing progress to `out`.
pub async fn run<W: Write>(opts: DemoOptions, out: &mut W) -> Result<()> {
    let tmp;
    let dir = match &opts.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::Builder::new().prefix("kmshost-demo-").tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let size = opts.size_mib.max(32) << 20;
    writeln!(
        out,
        "kmshost demo: LUKS2 volume keyed through the embedded `secret` plugin"
    )?;
    writeln!(out, "work directory: {}", dir.display())?;
    let mut s = Steps {
        out,
        n: 0,
        t: Instant::now(),
    };
    let secrets_dir = dir.join("secrets");
    let kms = start(&mut s, &secrets_dir, &opts).await?;
    let mut vol = create(&mut s, &kms, &dir, size).await?;
    reopen(&mut s, &kms, &vol).await?;
    rotate(&mut s, &kms, &mut vol).await?;
    s.step("try to format the volume again (must be refused)")?;
    match luks::format(&vol.image, &vol.pass, &vol.params) {
        Err(LuksError::AlreadyFormatted { found, .. }) => {
            s.done(&format!("refused: holds {found}"))?
        }
        other => return failed(format!("formatting over LUKS was not refused: {other:?}")),
    }
    s.step("clean up")?;
    if opts.keep {
        s.done(&format!("kept {}", dir.display()))?;
    } else {
        std::fs::remove_file(&vol.image)?;
        std::fs::remove_dir_all(&secrets_dir)?;
        s.done("image and secrets removed")?;
    }
    writeln!(s.out, "demo finished: every step passed")?;
    Ok(())
}

/// The KEK passphrase Secret, and a facade with one `metadata` kmsID.
async fn start<W: Write>(
    s: &mut Steps<'_, W>,
    secrets_dir: &Path,
    opts: &DemoOptions,
) -> Result<Kms> {
    s.step("write the KEK passphrase Secret (mounted-Secret layout)")?;
    let secret_dir = secrets_dir.join("demo-kek");
    std::fs::create_dir_all(&secret_dir)?;
    let kek_pass = generate_passphrase();
    std::fs::write(secret_dir.join("encryptionPassphrase"), kek_pass.expose())?;
    s.done("secrets/demo-kek/encryptionPassphrase")?;

    s.step("load the embedded `secret` plugin for kmsID demo-metadata")?;
    let config =
        r#"{"demo-metadata": {"encryptionKMSType": "metadata", "secretName": "demo-kek"}}"#;
    let cache_dir = opts
        .cache_dir
        .clone()
        .unwrap_or_else(crate::host_setup::default_cache_dir);
    let sandbox = Sandbox::new(SandboxConfig {
        cache_dir: Some(cache_dir),
        ..Default::default()
    })?;
    let kms = Kms::new(
        ConfigSource::from_text(config, HostDefaults::default())?,
        sandbox,
        Arc::new(MountedSecrets::new(secrets_dir)),
    );
    let info = kms.plugin_about(KMS_ID).await?;
    let report = kms.plugin_report(KMS_ID, None).await?;
    let compiled = if report.from_cache {
        "from cache"
    } else {
        "now (cached for next time)"
    };
    s.done(&format!(
        "{} v{}, sha256 {}…, compiled {compiled}",
        info.name,
        info.version,
        &hex::encode(report.sha256)[..16],
    ))?;
    Ok(kms)
}

/// A new image, its passphrase wrapped by the plugin, LUKS2-formatted, the
/// wrapped key kept in its header.
async fn create<W: Write>(
    s: &mut Steps<'_, W>,
    kms: &Kms,
    dir: &Path,
    size: u64,
) -> Result<Volume> {
    s.step("create a sparse image file")?;
    let image = dir.join("volume.img");
    std::fs::File::create(&image)?.set_len(size)?;
    s.done(&format!("{} ({} MiB)", image.display(), size >> 20))?;

    let key_id = KeyId::new("pvc-demo-0001")?;
    s.step("generate a volume passphrase")?;
    let pass = generate_passphrase();
    s.done(&format!(
        "{} bytes, 256 bits of entropy (never printed)",
        pass.len()
    ))?;

    s.step("wrap it with the plugin (AES-256-GCM, AAD = volume ID)")?;
    let wrapped = kms.wrap(KMS_ID, &key_id, &pass).await?;
    s.done(&format!(
        "{} byte blob, sha256 {}…",
        wrapped.as_bytes().len(),
        &hex::encode(Sha256::digest(wrapped.as_bytes()))[..16]
    ))?;

    s.step("LUKS2-format the image (refuses any existing signature)")?;
    let params = FormatParams::default();
    let slot = luks::format(&image, &pass, &params)?;
    s.done(&format!(
        "{}-{}, {}-bit key, keyslot {slot}, {:?}",
        params.cipher, params.cipher_mode, params.key_size_bits, params.pbkdf
    ))?;

    s.step("keep the wrapped key and kmsID in the LUKS2 header (token)")?;
    let token = KmsToken {
        kms_id: crate::types::KmsId::new(KMS_ID)?,
        key_id: key_id.to_string(),
        wrapped: Some(wrapped.clone()),
        keyslots: vec![slot],
    };
    let token_id = luks::write_token(&image, &token)?;
    s.done(&format!("token {token_id} (type {})", luks::TOKEN_TYPE))?;
    Ok(Volume {
        image,
        key_id,
        pass,
        wrapped,
        slot,
        token,
        params,
    })
}

/// What a node does: the header names the kmsID and holds the blob; the
/// plugin unwraps it for this volume, and for no other.
async fn reopen<W: Write>(s: &mut Steps<'_, W>, kms: &Kms, vol: &Volume) -> Result<()> {
    s.step("read the token, unwrap through the plugin, verify unlock")?;
    let Some(t) = luks::read_token(&vol.image)? else {
        return failed("token missing");
    };
    let Some(wrapped) = t.wrapped.as_ref() else {
        return failed("no wrapped key in the token");
    };
    let key_id = KeyId::new(t.key_id.clone())?;
    let unwrapped = kms.unwrap(t.kms_id.as_str(), &key_id, wrapped).await?;
    let opened = luks::verify(&vol.image, &unwrapped)?;
    s.done(&format!("keyslot {opened} opens"))?;

    s.step("replay the blob for another volume (must fail)")?;
    let other = KeyId::new("pvc-other")?;
    match kms.unwrap(KMS_ID, &other, &vol.wrapped).await {
        Err(KmsError::Integrity { .. }) => s.done("refused: integrity error"),
        Err(e) => failed(format!("unexpected error: {e}")),
        Ok(_) => failed("a blob unwrapped for another volume"),
    }
}

/// Rotation: a new keyslot, its key wrapped and kept, verified, then the
/// old slot killed and the old passphrase refused.
async fn rotate<W: Write>(s: &mut Steps<'_, W>, kms: &Kms, vol: &mut Volume) -> Result<()> {
    s.step("rotate the passphrase (new slot, store, verify, kill old)")?;
    let new_pass = generate_passphrase();
    let new_slot = luks::add_keyslot(&vol.image, &vol.pass, &new_pass, vol.params.pbkdf)?;
    let new_wrapped = kms.wrap(KMS_ID, &vol.key_id, &new_pass).await?;
    let token = KmsToken {
        wrapped: Some(new_wrapped.clone()),
        keyslots: vec![new_slot],
        ..vol.token.clone()
    };
    luks::write_token(&vol.image, &token)?;
    let back = kms.unwrap(KMS_ID, &vol.key_id, &new_wrapped).await?;
    if luks::verify(&vol.image, &back)? != new_slot {
        return failed("rotated passphrase does not open the new keyslot");
    }
    luks::kill_keyslot(&vol.image, vol.slot)?;
    let slots = luks::active_keyslots(&vol.image)?;
    match luks::verify(&vol.image, &vol.pass) {
        Err(LuksError::WrongPassphrase(_)) => {}
        other => {
            return failed(format!(
                "old passphrase still works after rotation: {other:?}"
            ));
        }
    }
    s.done(&format!(
        "active keyslots {slots:?}; old passphrase refused"
    ))?;
    vol.pass = new_pass;
    vol.wrapped = new_wrapped;
    vol.slot = new_slot;
    vol.token = token;
    Ok(())
}
