//! `kmshost demo`: the main job on the embedded default, step by step.
//!
//! A sparse image file gets a random 256-bit passphrase, wrapped by the
//! embedded `secret` plugin (ceph-csi `metadata` type) under a KEK derived
//! from a passphrase Secret; the image is LUKS2-formatted with it, the
//! wrapped key is kept in the LUKS2 header, unwrapped again to unlock, the
//! passphrase is rotated, and everything is cleaned up.

use crate::config::{ConfigSource, HostDefaults};
use crate::kms::{KeyId, Kms, generate_passphrase};
use crate::luks::{self, FormatParams, KmsToken, LuksError};
use crate::sandbox::{Sandbox, SandboxConfig};
use crate::secrets::MountedSecrets;
use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::PathBuf;
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

    s.step("write the KEK passphrase Secret (mounted-Secret layout)")?;
    let secrets_dir = dir.join("secrets");
    let secret_dir = secrets_dir.join("demo-kek");
    std::fs::create_dir_all(&secret_dir)?;
    let kek_pass = generate_passphrase();
    std::fs::write(secret_dir.join("encryptionPassphrase"), kek_pass.expose())?;
    s.done("secrets/demo-kek/encryptionPassphrase")?;

    s.step("load the embedded `secret` plugin for kmsID demo-metadata")?;
    let config =
        r#"{"demo-metadata": {"encryptionKMSType": "metadata", "secretName": "demo-kek"}}"#;
    let sandbox = Sandbox::new(SandboxConfig {
        cache_dir: Some(
            opts.cache_dir
                .clone()
                .unwrap_or_else(crate::host_setup::default_cache_dir),
        ),
        ..Default::default()
    })?;
    let kms = Kms::new(
        ConfigSource::from_text(config, HostDefaults::default())?,
        sandbox,
        Arc::new(MountedSecrets::new(&secrets_dir)),
    );
    let rt = kms.runtime("demo-metadata").await?;
    let info = rt.info().await?;
    s.done(&format!(
        "{} v{}, sha256 {}…, compiled {}",
        info.name,
        info.version,
        &hex::encode(rt.plugin().sha256)[..16],
        if rt.plugin().from_cache {
            "from cache"
        } else {
            "now (cached for next time)"
        }
    ))?;

    s.step("create a sparse image file")?;
    let image = dir.join("volume.img");
    let f = std::fs::File::create(&image)?;
    f.set_len(size)?;
    drop(f);
    s.done(&format!("{} ({} MiB)", image.display(), size >> 20))?;

    let volume = KeyId::new("pvc-demo-0001")?;
    s.step("generate a volume passphrase")?;
    let pass = generate_passphrase();
    s.done(&format!(
        "{} bytes, 256 bits of entropy (never printed)",
        pass.len()
    ))?;

    s.step("wrap it with the plugin (AES-256-GCM, AAD = volume ID)")?;
    let wrapped = kms.wrap("demo-metadata", &volume, &pass).await?;
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
        kms_id: rt.kms_id().clone(),
        key_id: volume.to_string(),
        wrapped: Some(wrapped.clone()),
        keyslots: vec![slot],
    };
    let token_id = luks::write_token(&image, &token)?;
    s.done(&format!("token {token_id} (type {})", luks::TOKEN_TYPE))?;

    s.step("read the token, unwrap through the plugin, verify unlock")?;
    let t = luks::read_token(&image)?.context("token missing")?;
    let unwrapped = kms
        .unwrap(
            t.kms_id.as_str(),
            &KeyId::new(t.key_id.clone())?,
            t.wrapped.as_ref().context("no wrapped key")?,
        )
        .await?;
    let opened = luks::verify(&image, &unwrapped)?;
    s.done(&format!("keyslot {opened} opens"))?;

    s.step("replay the blob for another volume (must fail)")?;
    match kms
        .unwrap("demo-metadata", &KeyId::new("pvc-other")?, &wrapped)
        .await
    {
        Err(e) if e.grpc_code() == crate::kms::GrpcCode::DataLoss => {
            s.done("refused: integrity error")?
        }
        Err(e) => bail!("unexpected error: {e}"),
        Ok(_) => bail!("a blob unwrapped for another volume"),
    }

    s.step("rotate the passphrase (new slot, store, verify, kill old)")?;
    let new_pass = generate_passphrase();
    let new_slot = luks::add_keyslot(&image, &unwrapped, &new_pass, params.pbkdf)?;
    let new_wrapped = kms.wrap("demo-metadata", &volume, &new_pass).await?;
    luks::write_token(
        &image,
        &KmsToken {
            wrapped: Some(new_wrapped.clone()),
            keyslots: vec![new_slot],
            ..token
        },
    )?;
    let back = kms.unwrap("demo-metadata", &volume, &new_wrapped).await?;
    if luks::verify(&image, &back)? != new_slot {
        bail!("rotated passphrase does not open the new keyslot");
    }
    luks::kill_keyslot(&image, slot)?;
    let slots = luks::active_keyslots(&image)?;
    match luks::verify(&image, &unwrapped) {
        Err(LuksError::WrongPassphrase(_)) => {}
        other => bail!("old passphrase still works after rotation: {other:?}"),
    }
    s.done(&format!(
        "active keyslots {slots:?}; old passphrase refused"
    ))?;

    s.step("try to format the volume again (must be refused)")?;
    match luks::format(&image, &new_pass, &params) {
        Err(LuksError::AlreadyFormatted { found, .. }) => {
            s.done(&format!("refused: holds {found}"))?
        }
        other => bail!("formatting over LUKS was not refused: {other:?}"),
    }

    s.step("clean up")?;
    if opts.keep {
        s.done(&format!("kept {}", dir.display()))?;
    } else {
        std::fs::remove_file(&image)?;
        std::fs::remove_dir_all(&secrets_dir)?;
        s.done("image and secrets removed")?;
    }
    writeln!(s.out, "demo finished: every step passed")?;
    Ok(())
}
