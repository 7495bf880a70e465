//! On-disk cache of compiled plugin components, so a restart does not run
//! Cranelift again.
//!
//! Loading a cached artifact maps native code, so an entry is trusted only
//! when all of these hold, and is otherwise discarded and recompiled:
//!
//! - the cache directory is owned by the host's effective user, is not a
//!   symlink, and is not group- or world-writable (checked at open);
//! - the entry is a regular file owned by that user, opened without
//!   following symlinks, not group- or world-writable;
//! - its HMAC-SHA256 tag verifies under the **cache key**, a 256-bit key
//!   kept outside the cache directory (`<cache dir>.key`, mode 0600, same
//!   ownership rules), over the engine's compatibility hash, the sha256 of
//!   the exact wasm bytes, and the compiled code. An entry copied from
//!   another plugin, another engine or another machine does not verify.
//!
//! Entries are keyed by the sha256 of the component and the engine's
//! compatibility hash, written atomically with mode 0600 in a directory
//! created 0700.
//!
//! A container image also ships a **precompiled directory** (`kmshost
//! plugin precompile`, at image build): read-only entries for the
//! first-party plugins, consulted when the writable cache has none. They
//! cannot carry this host's tag (no host existed yet, and a key shipped in
//! the image is no secret), so they are trusted the way the binary beside
//! them is: the directory and each entry are owned by root (or kmshost's
//! user), writable by nobody else, and not reached through a symlink. Their
//! tag is a plain digest over the same fields, which still binds an entry
//! to its wasm bytes and engine and catches corruption.

use ring::hmac;
use std::fs::{File, Metadata};
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Bytes of the tag at the start of every entry.
const TAG_LEN: usize = 32;
/// Domain separation for the tag.
const TAG_DOMAIN: &[u8] = b"kmshost compile cache v1\0";
/// Domain separation for a precompiled entry's digest.
const PRECOMPILED_DOMAIN: &[u8] = b"kmshost precompiled v1\0";

/// A compile cache directory and its key.
#[derive(Clone)]
pub struct CompileCache {
    dir: PathBuf,
    key: hmac::Key,
    precompiled: Option<PathBuf>,
}

impl std::fmt::Debug for CompileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompileCache")
            .field("dir", &self.dir)
            .field("key", &"REDACTED")
            .field("precompiled", &self.precompiled)
            .finish()
    }
}

fn refuse(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, message)
}

/// Owner is the effective user and nobody else may write.
fn check_owned(path: &Path, meta: &Metadata, forbidden_mode: u32) -> std::io::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        return Err(refuse(format!(
            "{} is owned by uid {}, not by kmshost's uid {euid}",
            path.display(),
            meta.uid()
        )));
    }
    if meta.mode() & forbidden_mode != 0 {
        return Err(refuse(format!(
            "{} has mode {:o}: it must not be accessible to group or others beyond {:o}",
            path.display(),
            meta.mode() & 0o777,
            0o777 & !forbidden_mode
        )));
    }
    Ok(())
}

fn open_nofollow(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

impl CompileCache {
    /// Opens (creating, mode 0700) the cache at `dir`, with its key at
    /// `<dir>.key` (created on first use).
    pub fn open(dir: impl Into<PathBuf>) -> std::io::Result<Self> {
        let dir = dir.into();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let meta = std::fs::symlink_metadata(&dir)?;
        if !meta.is_dir() {
            return Err(refuse(format!(
                "compile cache {} is not a directory (symlinks are refused)",
                dir.display()
            )));
        }
        check_owned(&dir, &meta, 0o022)?;
        let key = load_or_create_key(&key_path(&dir))?;
        Ok(CompileCache {
            dir,
            key,
            precompiled: None,
        })
    }

    /// Also consults the read-only precompiled directory `dir` (made by
    /// [`write_precompiled`]), which must exist, be a real directory owned
    /// by root or kmshost's user, and be writable by nobody else.
    pub fn with_precompiled(mut self, dir: &Path) -> std::io::Result<Self> {
        let meta = std::fs::symlink_metadata(dir).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("precompiled directory {}: {e}", dir.display()),
            )
        })?;
        if !meta.is_dir() {
            return Err(refuse(format!(
                "precompiled directory {} is not a directory (symlinks are refused)",
                dir.display()
            )));
        }
        check_root_or_owned(dir, &meta)?;
        self.precompiled = Some(dir.to_path_buf());
        Ok(self)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_for(&self, engine: &Engine, sha256: &[u8; 32]) -> PathBuf {
        self.dir.join(entry_name(engine, sha256))
    }

    fn tag(&self, engine: &Engine, sha256: &[u8; 32], code: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(TAG_DOMAIN);
        ctx.update(&compat_hash(engine).to_le_bytes());
        ctx.update(sha256);
        ctx.update(code);
        ctx.sign()
    }

    /// The compiled code of a trusted entry at `path`, or why it is not.
    fn read_entry(
        &self,
        engine: &Engine,
        sha256: &[u8; 32],
        path: &Path,
    ) -> std::io::Result<Vec<u8>> {
        read_tagged(
            path,
            |meta| check_owned(path, meta, 0o022),
            |tag, code| constant_time_eq(self.tag(engine, sha256, code).as_ref(), tag),
            "does not carry this host's tag for these wasm bytes",
        )
    }

    /// The compiled component for `wasm` (whose sha256 is `sha256`): from
    /// the cache if a trusted entry exists, else compiled and stored.
    /// Returns whether it was a hit.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
        sha256: &[u8; 32],
    ) -> wasmtime::Result<(Component, bool)> {
        let path = self.path_for(engine, sha256);
        match self.read_entry(engine, sha256, &path) {
            Ok(code) => {
                // SAFETY: the tag proves these bytes were produced by
                // `precompile_component` of an engine with this
                // compatibility hash, for exactly these wasm bytes, by a
                // holder of this host's cache key.
                match unsafe { Component::deserialize(engine, &code) } {
                    Ok(c) => return Ok((c, true)),
                    Err(e) => self.discard(&path, &format!("{e:#}")),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => self.discard(&path, &e.to_string()),
        }
        if let Some(c) = self.precompiled_component(engine, sha256) {
            return Ok((c, true));
        }
        let compiled = engine.precompile_component(wasm)?;
        let tag = self.tag(engine, sha256, &compiled);
        if let Err(e) = write_atomic(&path, &[tag.as_ref(), &compiled]) {
            tracing::warn!(path = %path.display(), "cannot write compile cache entry: {e}");
        }
        // SAFETY: `compiled` was just produced by this engine.
        let component = unsafe { Component::deserialize(engine, &compiled)? };
        Ok((component, false))
    }

    /// The component from the precompiled directory, if it holds a sound
    /// entry for these wasm bytes and this engine. A missing entry is
    /// normal (a vendor's plugin, another CPU architecture); a bad one is
    /// logged and left alone (it is read-only).
    fn precompiled_component(&self, engine: &Engine, sha256: &[u8; 32]) -> Option<Component> {
        let path = self.precompiled.as_ref()?.join(entry_name(engine, sha256));
        let code = match read_precompiled(engine, sha256, &path) {
            Ok(code) => code,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring precompiled entry: {e}");
                return None;
            }
        };
        // SAFETY: the entry is root's (or kmshost's own) and writable by
        // nobody else, like the kmshost binary itself, and its digest binds
        // it to exactly these wasm bytes and this engine's compatibility
        // hash, as `write_precompiled` made it.
        match unsafe { Component::deserialize(engine, &code) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring precompiled entry: {e:#}");
                None
            }
        }
    }

    fn discard(&self, path: &Path, why: &str) {
        tracing::warn!(path = %path.display(), "discarding compile cache entry: {why}");
        if let Err(e) = std::fs::remove_file(path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), "cannot remove compile cache entry: {e}");
        }
    }
}

/// `<sha256 of the wasm>-<engine compatibility hash>.cwasm`.
fn entry_name(engine: &Engine, sha256: &[u8; 32]) -> String {
    format!("{}-{:016x}.cwasm", hex::encode(sha256), compat_hash(engine))
}

/// A precompiled entry's digest: over what an entry's tag covers, with no
/// key.
fn precompiled_digest(engine: &Engine, sha256: &[u8; 32], code: &[u8]) -> [u8; TAG_LEN] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(PRECOMPILED_DOMAIN);
    h.update(compat_hash(engine).to_le_bytes());
    h.update(sha256);
    h.update(code);
    h.finalize().into()
}

/// Owned by root or by kmshost's user, and writable by nobody else.
fn check_root_or_owned(path: &Path, meta: &Metadata) -> std::io::Result<()> {
    if meta.uid() == 0 {
        if meta.mode() & 0o022 != 0 {
            return Err(refuse(format!(
                "{} has mode {:o}: it must not be writable by group or others",
                path.display(),
                meta.mode() & 0o777
            )));
        }
        return Ok(());
    }
    check_owned(path, meta, 0o022)
}

fn read_precompiled(engine: &Engine, sha256: &[u8; 32], path: &Path) -> std::io::Result<Vec<u8>> {
    read_tagged(
        path,
        |meta| check_root_or_owned(path, meta),
        |tag, code| precompiled_digest(engine, sha256, code)[..] == *tag,
        "is not the precompiled code of these wasm bytes for this engine",
    )
}

/// The compiled code of the entry at `path`: a regular file (never reached
/// through a symlink) that passes `owner`, holding a tag and the code that
/// `sound(tag, code)` accepts; otherwise why not, with `mismatch` saying
/// what a bad tag means.
fn read_tagged(
    path: &Path,
    owner: impl FnOnce(&Metadata) -> std::io::Result<()>,
    sound: impl FnOnce(&[u8], &[u8]) -> bool,
    mismatch: &str,
) -> std::io::Result<Vec<u8>> {
    let mut f = open_nofollow(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(refuse(format!("{} is not a regular file", path.display())));
    }
    owner(&meta)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.read_to_end(&mut bytes)?;
    if bytes.len() < TAG_LEN {
        return Err(refuse(format!("{} is truncated", path.display())));
    }
    let code = bytes.split_off(TAG_LEN);
    if !sound(&bytes, &code) {
        return Err(refuse(format!("{} {mismatch}", path.display())));
    }
    Ok(code)
}

/// Compiles `wasm` (whose sha256 is `sha256`) with `engine` into the
/// precompiled directory `dir` (created 0755): an entry readable by all,
/// written by whoever builds the image. Returns the entry's path.
pub fn write_precompiled(
    engine: &Engine,
    dir: &Path,
    wasm: &[u8],
    sha256: &[u8; 32],
) -> wasmtime::Result<PathBuf> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)?;
    let code = engine.precompile_component(wasm)?;
    let digest = precompiled_digest(engine, sha256, &code);
    let path = dir.join(entry_name(engine, sha256));
    write_atomic(&path, &[&digest, &code])?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    Ok(path)
}

/// Equality that takes the same time wherever the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn compat_hash(engine: &Engine) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    h.finish()
}

/// `<dir>.key`: beside the cache, never inside it.
fn key_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".key");
    dir.with_file_name(name)
}

/// The cache key at `path`, created on first use. Created complete under a
/// temporary name and hard-linked into place, so a concurrent opener sees
/// either no key or the whole key.
fn load_or_create_key(path: &Path) -> std::io::Result<hmac::Key> {
    let mut raw = zeroize::Zeroizing::new([0u8; 32]);
    if let Err(e) = read_key(path, &mut raw) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(e);
        }
        use rand::RngCore;
        rand::rng().fill_bytes(&mut raw[..]);
        let tmp = temp_beside(path);
        write_new(&tmp, &[&raw[..]])?;
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_key(path, &mut raw)?,
            Err(e) => return Err(e),
        }
    }
    Ok(hmac::Key::new(hmac::HMAC_SHA256, &raw[..]))
}

fn read_key(path: &Path, raw: &mut [u8; 32]) -> std::io::Result<()> {
    let mut f = open_nofollow(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() || meta.len() != 32 {
        return Err(refuse(format!(
            "compile cache key {} must be a 32-byte regular file",
            path.display()
        )));
    }
    check_owned(path, &meta, 0o077)?;
    f.read_exact(&mut raw[..])
}

/// A fresh name beside `path` for a file written before it is renamed or
/// linked into place.
fn temp_beside(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        ".tmp{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    path.with_file_name(name)
}

/// Writes `parts` to a new file (mode 0600, never through a symlink).
fn write_new(path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    for p in parts {
        f.write_all(p)?;
    }
    f.sync_all()
}

fn write_atomic(path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    let tmp = temp_beside(path);
    let written = write_new(&tmp, parts).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
