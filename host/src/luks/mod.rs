//! LUKS2 through libcryptsetup: format (never over an existing signature),
//! passphrase verification, keyslots, the kmshost LUKS2 token (kmsID and
//! wrapped key kept with the volume), activation, status and resize.
//!
//! Passphrases arrive as [`Passphrase`]: they are handed to libcryptsetup
//! and never logged or formatted.

mod signature;

pub use signature::{Signature, probe_signature};

use crate::types::{KmsId, Passphrase, WrappedKey};
use base64::Engine as _;
use libcryptsetup_rs::consts::flags::{
    CryptActivate, CryptDeactivate, CryptPbkdf, CryptVolumeKey as CryptVolumeKeyFlags,
};
use libcryptsetup_rs::consts::vals::{CryptKdf, CryptStatusInfo, EncryptionFormat, KeyslotInfo};
use libcryptsetup_rs::{
    CryptDevice, CryptInit, CryptParamsLuks2, CryptPbkdfType, Either, LibcryptErr, TokenInput,
};
use std::os::raw::{c_char, c_int, c_void};
use std::path::{Path, PathBuf};

/// The LUKS2 token type kmshost writes.
pub const TOKEN_TYPE: &str = "kmshost";
/// LUKS2 keyslots available.
pub const MAX_KEYSLOTS: u32 = 32;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum LuksError {
    /// The device already carries a signature (or data): refusing to format.
    #[error("{path} already holds {found}: refusing to format it")]
    AlreadyFormatted {
        /// The device.
        path: PathBuf,
        /// What was found.
        found: Signature,
    },
    /// No keyslot opened with this passphrase.
    #[error("{0}: no keyslot matches the passphrase")]
    WrongPassphrase(PathBuf),
    /// Not a LUKS2 device.
    #[error("{0} is not a LUKS2 device")]
    NotLuks(PathBuf),
    /// Device-mapper is not available (containers without /dev/mapper).
    #[error("device-mapper is not available here: {0}")]
    NoDeviceMapper(String),
    /// The token is missing or malformed.
    #[error("{path}: {message}")]
    Token {
        /// The device.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Invalid parameters.
    #[error("invalid LUKS parameters: {0}")]
    Params(String),
    /// I/O on the device.
    #[error("{path}: {source}")]
    Io {
        /// The device.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Another libcryptsetup error.
    #[error("{path}: libcryptsetup: {message}")]
    Crypt {
        /// The device.
        path: PathBuf,
        /// The error.
        message: String,
    },
}

/// Key-derivation for keyslots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Pbkdf {
    /// PBKDF2-SHA256 with a fixed iteration count (≥ 1000).
    Pbkdf2 {
        /// Iterations.
        iterations: u32,
    },
    /// Argon2id with fixed costs.
    Argon2id {
        /// Iterations (time cost).
        iterations: u32,
        /// Memory in KiB.
        memory_kib: u32,
        /// Threads.
        parallel: u32,
    },
    /// Argon2id benchmarked by libcryptsetup to take `time_ms`, with a
    /// memory cap (cryptsetup's default, used by ceph-csi with
    /// `--pbkdf-memory 32768`).
    Argon2idTimed {
        /// Target unlock time.
        time_ms: u32,
        /// Memory cap in KiB.
        memory_kib: u32,
    },
}

impl Pbkdf {
    /// kmshost's default for machine-generated passphrases of ≥ 256 bits of
    /// entropy: a brute-force search is infeasible whatever the KDF, so the
    /// KDF only costs unlock time (see docs/security-model.md).
    pub const MACHINE_KEY: Pbkdf = Pbkdf::Pbkdf2 { iterations: 1000 };
    /// ceph-csi's setting: `--pbkdf-memory 32768` with cryptsetup's
    /// default argon2id and 2 s target.
    pub const CEPH_CSI: Pbkdf = Pbkdf::Argon2idTimed {
        time_ms: 2000,
        memory_kib: 32768,
    };

    fn to_crypt(self) -> CryptPbkdfType {
        match self {
            Pbkdf::Pbkdf2 { iterations } => CryptPbkdfType {
                type_: CryptKdf::Pbkdf2,
                hash: Some("sha256".into()),
                time_ms: 0,
                iterations,
                max_memory_kb: 0,
                parallel_threads: 0,
                flags: CryptPbkdf::NO_BENCHMARK,
            },
            Pbkdf::Argon2id {
                iterations,
                memory_kib,
                parallel,
            } => CryptPbkdfType {
                type_: CryptKdf::Argon2Id,
                hash: Some("sha256".into()),
                time_ms: 0,
                iterations,
                max_memory_kb: memory_kib,
                parallel_threads: parallel,
                flags: CryptPbkdf::NO_BENCHMARK,
            },
            Pbkdf::Argon2idTimed {
                time_ms,
                memory_kib,
            } => CryptPbkdfType {
                type_: CryptKdf::Argon2Id,
                hash: Some("sha256".into()),
                time_ms,
                iterations: 0,
                max_memory_kb: memory_kib,
                parallel_threads: 4,
                flags: CryptPbkdf::empty(),
            },
        }
    }

    /// Checks the costs are within what libcryptsetup accepts and safe.
    pub fn validate(self) -> Result<(), LuksError> {
        match self {
            Pbkdf::Pbkdf2 { iterations } if iterations < 1000 => Err(LuksError::Params(
                "pbkdf2 needs at least 1000 iterations".into(),
            )),
            Pbkdf::Argon2id {
                iterations,
                memory_kib,
                parallel,
            } if iterations < 4 || memory_kib < 32 || parallel == 0 => Err(LuksError::Params(
                "argon2id needs iterations ≥ 4, memory ≥ 32 KiB, threads ≥ 1".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// How to format a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatParams {
    /// Cipher (`aes`).
    pub cipher: String,
    /// Cipher mode (`xts-plain64`).
    pub cipher_mode: String,
    /// Volume key size in bits (512 for AES-256-XTS).
    pub key_size_bits: usize,
    /// Keyslot KDF.
    pub pbkdf: Pbkdf,
    /// Encryption sector size (512 or 4096); 0 lets libcryptsetup choose.
    pub sector_size: u32,
    /// LUKS2 label.
    pub label: Option<String>,
}

impl Default for FormatParams {
    fn default() -> Self {
        FormatParams {
            cipher: "aes".into(),
            cipher_mode: "xts-plain64".into(),
            key_size_bits: 512,
            pbkdf: Pbkdf::MACHINE_KEY,
            sector_size: 0,
            label: None,
        }
    }
}

/// The kmshost token: which kmsID holds the key, and (for wrapping
/// providers) the wrapped key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsToken {
    /// The kmsID.
    pub kms_id: KmsId,
    /// The key-id (volume handle) the key was stored or wrapped under.
    pub key_id: String,
    /// The wrapped passphrase, for wrapping providers.
    pub wrapped: Option<WrappedKey>,
    /// The keyslots it unlocks.
    pub keyslots: Vec<u32>,
}

fn crypt_err(path: &Path, e: LibcryptErr) -> LuksError {
    if let LibcryptErr::IOError(io) = &e {
        match io.raw_os_error() {
            Some(1) => {
                return LuksError::WrongPassphrase(path.to_path_buf());
            }
            Some(95) | Some(19) => return LuksError::NoDeviceMapper(io.to_string()),
            _ => {}
        }
    }
    LuksError::Crypt {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Routes libcryptsetup's (and, through it, libdevmapper's) log into
/// tracing instead of its default of printing errors to stderr. Set once
/// for the process, before the first libcryptsetup call.
fn route_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        libcryptsetup_rs::set_log_callback::<()>(Some(log_to_tracing), None);
    });
}

/// libcryptsetup's log levels (`CRYPT_LOG_*`).
const LOG_NORMAL: c_int = 0;
const LOG_ERROR: c_int = 1;
const LOG_VERBOSE: c_int = 2;

unsafe extern "C" fn log_to_tracing(level: c_int, msg: *const c_char, _usr: *mut c_void) {
    if msg.is_null() {
        return;
    }
    // SAFETY: libcryptsetup passes a NUL-terminated string that lives for
    // the duration of the call.
    let text = unsafe { std::ffi::CStr::from_ptr(msg) }.to_string_lossy();
    let text = text.trim();
    match level {
        LOG_ERROR => tracing::info!(target: "libcryptsetup", "{text}"),
        LOG_NORMAL | LOG_VERBOSE => tracing::debug!(target: "libcryptsetup", "{text}"),
        _ => tracing::trace!(target: "libcryptsetup", "{text}"),
    }
}

fn open(path: &Path) -> Result<CryptDevice, LuksError> {
    route_log();
    let mut dev = CryptInit::init(path).map_err(|e| crypt_err(path, e))?;
    dev.context_handle()
        .load::<()>(Some(EncryptionFormat::Luks2), None)
        .map_err(|_| LuksError::NotLuks(path.to_path_buf()))?;
    Ok(dev)
}

/// Formats `path` as LUKS2 with `passphrase` in keyslot 0. Refuses a device
/// that holds any signature or any non-zero data in its first MiB.
pub fn format(
    path: &Path,
    passphrase: &Passphrase,
    params: &FormatParams,
) -> Result<u32, LuksError> {
    params.pbkdf.validate()?;
    if !params.key_size_bits.is_multiple_of(8) || !(128..=1024).contains(&params.key_size_bits) {
        return Err(LuksError::Params(format!(
            "key size {} bits",
            params.key_size_bits
        )));
    }
    if passphrase.is_empty() {
        return Err(LuksError::Params("empty passphrase".into()));
    }
    if let Some(found) = probe_signature(path).map_err(|source| LuksError::Io {
        path: path.to_path_buf(),
        source,
    })? {
        return Err(LuksError::AlreadyFormatted {
            path: path.to_path_buf(),
            found,
        });
    }
    route_log();
    let mut dev = CryptInit::init(path).map_err(|e| crypt_err(path, e))?;
    let pbkdf = params.pbkdf.to_crypt();
    dev.settings_handle()
        .set_pbkdf_type(&pbkdf)
        .map_err(|e| crypt_err(path, e))?;
    let luks = CryptParamsLuks2 {
        pbkdf: Some(pbkdf),
        integrity: None,
        integrity_params: None,
        data_alignment: 0,
        data_device: None,
        sector_size: params.sector_size,
        label: params.label.clone(),
        subsystem: None,
    };
    let mut luks_ref: libcryptsetup_rs::CryptParamsLuks2Ref<'_> =
        (&luks).try_into().map_err(|e| crypt_err(path, e))?;
    dev.context_handle()
        .format(
            EncryptionFormat::Luks2,
            (&params.cipher, &params.cipher_mode),
            None,
            Either::Right(params.key_size_bits / 8),
            Some(&mut luks_ref),
        )
        .map_err(|e| crypt_err(path, e))?;
    dev.keyslot_handle()
        .add_by_key(
            Some(0),
            None,
            passphrase.expose(),
            CryptVolumeKeyFlags::empty(),
        )
        .map_err(|e| crypt_err(path, e))
}

/// Whether `path` is a LUKS2 device.
pub fn is_luks2(path: &Path) -> bool {
    open(path).is_ok()
}

/// Checks `passphrase` against the keyslots; returns the keyslot it opens.
pub fn verify(path: &Path, passphrase: &Passphrase) -> Result<u32, LuksError> {
    let mut dev = open(path)?;
    dev.activate_handle()
        .activate_by_passphrase(None, None, passphrase.expose(), CryptActivate::empty())
        .map_err(|e| match crypt_err(path, e) {
            LuksError::Crypt { .. } => LuksError::WrongPassphrase(path.to_path_buf()),
            other => other,
        })
}

/// Adds `new` in a free keyslot (authorised by `existing`); returns it.
pub fn add_keyslot(
    path: &Path,
    existing: &Passphrase,
    new: &Passphrase,
    pbkdf: Pbkdf,
) -> Result<u32, LuksError> {
    pbkdf.validate()?;
    let mut dev = open(path)?;
    dev.settings_handle()
        .set_pbkdf_type(&pbkdf.to_crypt())
        .map_err(|e| crypt_err(path, e))?;
    dev.keyslot_handle()
        .add_by_passphrase(None, existing.expose(), new.expose())
        .map_err(|e| crypt_err(path, e))
}

/// Removes keyslot `slot`. Refuses to remove the last active keyslot.
pub fn kill_keyslot(path: &Path, slot: u32) -> Result<(), LuksError> {
    let active = active_keyslots(path)?;
    if !active.contains(&slot) {
        return Err(LuksError::Params(format!("keyslot {slot} is not active")));
    }
    if active.len() == 1 {
        return Err(LuksError::Params(format!(
            "keyslot {slot} is the last one: refusing to lose the volume"
        )));
    }
    let mut dev = open(path)?;
    dev.keyslot_handle()
        .destroy(slot)
        .map_err(|e| crypt_err(path, e))
}

/// The active keyslots.
pub fn active_keyslots(path: &Path) -> Result<Vec<u32>, LuksError> {
    let mut dev = open(path)?;
    let mut out = Vec::new();
    for slot in 0..MAX_KEYSLOTS {
        if let Ok(KeyslotInfo::Active | KeyslotInfo::ActiveLast) = dev.keyslot_handle().status(slot)
        {
            out.push(slot);
        }
    }
    Ok(out)
}

/// Replaces the passphrase: adds `new` in a spare keyslot, verifies it, then
/// kills the keyslot `old` opened. The volume is never without a working
/// keyslot. Returns the new keyslot.
pub fn rotate(
    path: &Path,
    old: &Passphrase,
    new: &Passphrase,
    pbkdf: Pbkdf,
) -> Result<u32, LuksError> {
    let old_slot = verify(path, old)?;
    let new_slot = add_keyslot(path, old, new, pbkdf)?;
    let check = verify(path, new)?;
    if check != new_slot {
        return Err(LuksError::Params(format!(
            "new passphrase opened keyslot {check}, expected {new_slot}"
        )));
    }
    kill_keyslot(path, old_slot)?;
    Ok(new_slot)
}

fn token_json(t: &KmsToken) -> serde_json::Value {
    let mut v = serde_json::json!({
        "type": TOKEN_TYPE,
        "keyslots": t.keyslots.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        "version": 1,
        "kms_id": t.kms_id.as_str(),
        "key_id": t.key_id,
    });
    if let Some(w) = &t.wrapped {
        v["wrapped_key"] = base64::engine::general_purpose::STANDARD
            .encode(w.as_bytes())
            .into();
    }
    v
}

fn find_token(dev: &mut CryptDevice) -> Option<(u32, serde_json::Value)> {
    (0..MAX_KEYSLOTS).find_map(|i| {
        let v = dev.token_handle().json_get(i).ok()?;
        (v.get("type")? == TOKEN_TYPE).then_some((i, v))
    })
}

/// Writes (or replaces) the kmshost token.
pub fn write_token(path: &Path, token: &KmsToken) -> Result<u32, LuksError> {
    let mut dev = open(path)?;
    let json = token_json(token);
    let existing = find_token(&mut dev).map(|(i, _)| i);
    let input = match existing {
        Some(i) => TokenInput::ReplaceToken(i, &json),
        None => TokenInput::AddToken(&json),
    };
    dev.token_handle()
        .json_set(input)
        .map_err(|e| crypt_err(path, e))
}

/// Reads the kmshost token, if any.
pub fn read_token(path: &Path) -> Result<Option<KmsToken>, LuksError> {
    let mut dev = open(path)?;
    let Some((_, v)) = find_token(&mut dev) else {
        return Ok(None);
    };
    let bad = |m: &str| LuksError::Token {
        path: path.to_path_buf(),
        message: format!("kmshost token: {m}"),
    };
    let kms_id = v
        .get("kms_id")
        .and_then(|x| x.as_str())
        .ok_or_else(|| bad("no kms_id"))?;
    let kms_id = KmsId::new(kms_id).map_err(|e| bad(&e.to_string()))?;
    let key_id = v
        .get("key_id")
        .and_then(|x| x.as_str())
        .ok_or_else(|| bad("no key_id"))?
        .to_string();
    let wrapped = match v.get("wrapped_key").and_then(|x| x.as_str()) {
        None => None,
        Some(b) => Some(WrappedKey::new(
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|_| bad("wrapped_key is not base64"))?,
        )),
    };
    let keyslots = v
        .get("keyslots")
        .and_then(|x| x.as_array())
        .map(|a| a.iter().filter_map(|s| s.as_str()?.parse().ok()).collect())
        .unwrap_or_default();
    Ok(Some(KmsToken {
        kms_id,
        key_id,
        wrapped,
        keyslots,
    }))
}

/// Opens the volume as `/dev/mapper/<name>` (needs device-mapper).
pub fn activate(
    path: &Path,
    name: &str,
    passphrase: &Passphrase,
    read_only: bool,
) -> Result<u32, LuksError> {
    let mut dev = open(path)?;
    // Like ceph-csi's `--disable-keyring`: the volume key stays in the dm
    // table (root-only), not the kernel keyring, so a later resize does not
    // need the passphrase again.
    dev.context_handle()
        .volume_key_keyring(false)
        .map_err(|e| crypt_err(path, e))?;
    let flags = if read_only {
        CryptActivate::READONLY
    } else {
        CryptActivate::empty()
    };
    dev.activate_handle()
        .activate_by_passphrase(Some(name), None, passphrase.expose(), flags)
        .map_err(|e| crypt_err(path, e))
}

/// Closes `/dev/mapper/<name>`.
pub fn deactivate(name: &str) -> Result<(), LuksError> {
    let path = PathBuf::from(format!("/dev/mapper/{name}"));
    route_log();
    let mut dev =
        CryptInit::init_by_name_and_header(name, None).map_err(|e| crypt_err(&path, e))?;
    dev.activate_handle()
        .deactivate(name, CryptDeactivate::empty())
        .map_err(|e| crypt_err(&path, e))
}

/// Whether `/dev/mapper/<name>` is active.
pub fn is_active(name: &str) -> bool {
    route_log();
    matches!(
        libcryptsetup_rs::status(None, name),
        Ok(CryptStatusInfo::Active | CryptStatusInfo::Busy)
    )
}

/// Grows (or shrinks) the active mapping `name` to `sectors` 512-byte
/// sectors; 0 means the whole underlying device.
pub fn resize(name: &str, sectors: u64) -> Result<(), LuksError> {
    let path = PathBuf::from(format!("/dev/mapper/{name}"));
    route_log();
    let mut dev =
        CryptInit::init_by_name_and_header(name, None).map_err(|e| crypt_err(&path, e))?;
    dev.context_handle()
        .resize(name, sectors)
        .map_err(|e| crypt_err(&path, e))
}
