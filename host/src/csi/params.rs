//! StorageClass parameters: ceph-csi's names (`encrypted`,
//! `encryptionKMSID`, `encryptionType`) and kmshost's own LUKS settings,
//! with safe defaults. Unknown parameters are refused, naming the
//! parameter, so a typo never silently yields an unencrypted volume.

use super::CsiError;
use crate::luks::{FormatParams, Pbkdf};
use crate::types::KmsId;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// `encrypted`: `"true"` to encrypt (ceph-csi).
pub const ENCRYPTED: &str = "encrypted";
/// `encryptionKMSID`: the kmsID holding the volume key (ceph-csi).
pub const KMS_ID: &str = "encryptionKMSID";
/// `encryptionType`: `block` (ceph-csi; `file` is not offered).
pub const ENCRYPTION_TYPE: &str = "encryptionType";
/// `csi.storage.k8s.io/fstype`: the filesystem for mount access.
pub const FS_TYPE: &str = "csi.storage.k8s.io/fstype";
/// `csi.storage.k8s.io/pvc/namespace`: the PVC's namespace (the tenant).
pub const PVC_NAMESPACE: &str = "csi.storage.k8s.io/pvc/namespace";
/// `encryptionCipher`: `aes-xts-plain64` (default), `serpent-xts-plain64`,
/// `twofish-xts-plain64`.
pub const CIPHER: &str = "encryptionCipher";
/// `encryptionKeySize`: volume key bits, 256 or 512 (default 512: AES-256
/// in XTS mode).
pub const KEY_SIZE: &str = "encryptionKeySize";
/// `encryptionPBKDF`: keyslot KDF — `pbkdf2` (default), `argon2id`, or
/// `ceph-csi` (argon2id benchmarked to 2 s, 32 MiB: ceph-csi's flags).
pub const PBKDF: &str = "encryptionPBKDF";
/// `encryptionPBKDFIterations`: KDF iterations (pbkdf2 ≥ 1000, default
/// 1000; argon2id ≥ 4, default 4).
pub const PBKDF_ITERATIONS: &str = "encryptionPBKDFIterations";
/// `encryptionPBKDFMemory`: argon2id memory in KiB (default 32768).
pub const PBKDF_MEMORY: &str = "encryptionPBKDFMemory";
/// `encryptionPBKDFParallel`: argon2id threads (default 1).
pub const PBKDF_PARALLEL: &str = "encryptionPBKDFParallel";
/// `encryptionSectorSize`: 512 or 4096 (default: libcryptsetup's choice).
pub const SECTOR_SIZE: &str = "encryptionSectorSize";

const KNOWN: &[&str] = &[
    ENCRYPTED,
    KMS_ID,
    ENCRYPTION_TYPE,
    FS_TYPE,
    "fsType",
    CIPHER,
    KEY_SIZE,
    PBKDF,
    PBKDF_ITERATIONS,
    PBKDF_MEMORY,
    PBKDF_PARALLEL,
    SECTOR_SIZE,
];

/// Ciphers offered: XTS modes only (no ECB, no unauthenticated CBC).
pub const CIPHERS: &[&str] = &[
    "aes-xts-plain64",
    "serpent-xts-plain64",
    "twofish-xts-plain64",
];

/// Filesystems offered for mount access.
pub const FS_TYPES: &[&str] = &["ext4", "xfs"];

/// What the StorageClass asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeParams {
    /// The kmsID, when encrypted.
    pub kms_id: Option<KmsId>,
    /// The PVC's namespace (`csi.storage.k8s.io/pvc/namespace`, passed by
    /// the external-provisioner with `--extra-create-metadata`): the tenant
    /// the kmsID is used as.
    pub tenant: Option<String>,
    /// Filesystem for mount access.
    pub fs_type: String,
    /// LUKS settings (used when encrypted).
    pub format: FormatParams,
    /// sha256 over the parameters, to tell a retried CreateVolume from a
    /// conflicting one.
    pub digest: String,
}

fn number<T: std::str::FromStr>(
    p: &HashMap<String, String>,
    key: &str,
) -> Result<Option<T>, CsiError> {
    p.get(key)
        .map(|v| {
            v.trim()
                .parse()
                .map_err(|_| CsiError::invalid(format!("parameter {key}: {v:?} is not a number")))
        })
        .transpose()
}

/// Parses StorageClass parameters; `default_fs` applies when no fstype is
/// given.
pub fn parse(p: &HashMap<String, String>, default_fs: &str) -> Result<VolumeParams, CsiError> {
    parse_for(p, default_fs, &[])
}

/// As [`parse`], also accepting the parameters `backend` names (which the
/// backend reads itself: RBD's `clusterID`, `pool`, …).
pub fn parse_for(
    p: &HashMap<String, String>,
    default_fs: &str,
    backend: &[&str],
) -> Result<VolumeParams, CsiError> {
    let mut unknown: Vec<&str> = p
        .keys()
        .map(String::as_str)
        .filter(|k| {
            !KNOWN.contains(k) && !backend.contains(k) && !k.starts_with("csi.storage.k8s.io/")
        })
        .collect();
    if !unknown.is_empty() {
        unknown.sort_unstable();
        let known: Vec<&str> = KNOWN.iter().chain(backend).copied().collect();
        let (what, verb) = match unknown.len() {
            1 => ("parameter", "is"),
            _ => ("parameters", "are"),
        };
        return Err(CsiError::invalid(format!(
            "{what} {} {verb} not known to kmshost (known: {})",
            unknown.join(", "),
            known.join(", ")
        )));
    }
    let encrypted = encrypted(p)?;
    if let Some(t) = p.get(ENCRYPTION_TYPE)
        && t != "block"
    {
        return Err(CsiError::invalid(format!(
            "parameter {ENCRYPTION_TYPE}: {t:?} is not offered (only \"block\": LUKS2)"
        )));
    }
    let fs_type = p
        .get(FS_TYPE)
        .or_else(|| p.get("fsType"))
        .filter(|s| !s.is_empty())
        .cloned()
        .unwrap_or_else(|| default_fs.to_string());
    if !FS_TYPES.contains(&fs_type.as_str()) {
        return Err(CsiError::invalid(format!(
            "parameter {FS_TYPE}: {fs_type:?} is not offered ({})",
            FS_TYPES.join(", ")
        )));
    }
    Ok(VolumeParams {
        kms_id: kms_id(p, encrypted)?,
        tenant: p.get(PVC_NAMESPACE).filter(|s| !s.is_empty()).cloned(),
        fs_type,
        format: format(p)?,
        digest: digest(p),
    })
}

/// `encrypted`: true or false (empty is false).
fn encrypted(p: &HashMap<String, String>) -> Result<bool, CsiError> {
    match p.get(ENCRYPTED).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(false),
        Some(v) if v == "true" => Ok(true),
        Some(v) if v == "false" || v.is_empty() => Ok(false),
        Some(v) => Err(CsiError::invalid(format!(
            "parameter {ENCRYPTED}: {v:?} is neither \"true\" nor \"false\""
        ))),
    }
}

/// The kmsID a volume context names, if it says `encrypted: "true"` (a
/// static PersistentVolume's attributes, ceph-csi's names).
pub fn kms_id_in_context(ctx: &HashMap<String, String>) -> Result<Option<KmsId>, CsiError> {
    let encrypted = encrypted(ctx)?;
    kms_id(ctx, encrypted)
}

/// `encryptionKMSID`: required when encrypted (no implicit passphrase).
fn kms_id(p: &HashMap<String, String>, encrypted: bool) -> Result<Option<KmsId>, CsiError> {
    match (encrypted, p.get(KMS_ID).map(|s| s.trim())) {
        (false, _) => Ok(None),
        (true, None | Some("") | Some("default")) => Err(CsiError::invalid(format!(
            "parameter {KMS_ID} is required when {ENCRYPTED}=true: kmshost has no implicit \
             passphrase; name a kmsID (the embedded default is a `metadata` kmsID)"
        ))),
        (true, Some(id)) => KmsId::new(id)
            .map(Some)
            .map_err(|e| CsiError::invalid(format!("parameter {KMS_ID}: {e}"))),
    }
}

/// The LUKS2 settings: cipher, key size, keyslot KDF, sector size.
fn format(p: &HashMap<String, String>) -> Result<FormatParams, CsiError> {
    let mut format = FormatParams::default();
    if let Some(c) = p.get(CIPHER) {
        if !CIPHERS.contains(&c.as_str()) {
            return Err(CsiError::invalid(format!(
                "parameter {CIPHER}: {c:?} is not offered ({})",
                CIPHERS.join(", ")
            )));
        }
        let (cipher, mode) = c.split_once('-').expect("every offered cipher has a mode");
        format.cipher = cipher.into();
        format.cipher_mode = mode.into();
    }
    if let Some(bits) = number::<usize>(p, KEY_SIZE)? {
        if bits != 256 && bits != 512 {
            return Err(CsiError::invalid(format!(
                "parameter {KEY_SIZE}: {bits} (XTS takes 256 or 512 bits)"
            )));
        }
        format.key_size_bits = bits;
    }
    format.pbkdf = pbkdf(p)?;
    if let Some(s) = number::<u32>(p, SECTOR_SIZE)? {
        if s != 512 && s != 4096 {
            return Err(CsiError::invalid(format!(
                "parameter {SECTOR_SIZE}: {s} (512 or 4096)"
            )));
        }
        format.sector_size = s;
    }
    Ok(format)
}

/// The keyslot KDF and its cost parameters.
fn pbkdf(p: &HashMap<String, String>) -> Result<Pbkdf, CsiError> {
    let iterations = number::<u32>(p, PBKDF_ITERATIONS)?;
    let memory = number::<u32>(p, PBKDF_MEMORY)?;
    let parallel = number::<u32>(p, PBKDF_PARALLEL)?;
    let pbkdf = match p.get(PBKDF).map(String::as_str).unwrap_or("pbkdf2") {
        "pbkdf2" => {
            if memory.is_some() || parallel.is_some() {
                return Err(CsiError::invalid(format!(
                    "parameters {PBKDF_MEMORY}/{PBKDF_PARALLEL} apply to argon2id only"
                )));
            }
            Pbkdf::Pbkdf2 {
                iterations: iterations.unwrap_or(1000),
            }
        }
        "argon2id" => Pbkdf::Argon2id {
            iterations: iterations.unwrap_or(4),
            memory_kib: memory.unwrap_or(32768),
            parallel: parallel.unwrap_or(1),
        },
        "ceph-csi" => Pbkdf::CEPH_CSI,
        other => {
            return Err(CsiError::invalid(format!(
                "parameter {PBKDF}: {other:?} (pbkdf2, argon2id or ceph-csi)"
            )));
        }
    };
    pbkdf
        .validate()
        .map_err(|e| CsiError::invalid(format!("parameter {PBKDF}: {e}")))?;
    Ok(pbkdf)
}

/// sha256 over the parameters that shape the volume (not the
/// provisioner's metadata, but its fstype), to tell a retried
/// CreateVolume from a conflicting one.
fn digest(p: &HashMap<String, String>) -> String {
    let mut pairs: Vec<_> = p
        .iter()
        .filter(|(k, _)| !k.starts_with("csi.storage.k8s.io/") || k.as_str() == FS_TYPE)
        .collect();
    pairs.sort();
    let mut h = Sha256::new();
    for (k, v) in pairs {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parameters_table() {
        let ok = parse(
            &p(&[
                ("encrypted", "true"),
                ("encryptionKMSID", "vault-1"),
                ("csi.storage.k8s.io/fstype", "xfs"),
                ("csi.storage.k8s.io/pvc/name", "data"),
                ("encryptionCipher", "serpent-xts-plain64"),
                ("encryptionKeySize", "256"),
                ("encryptionPBKDF", "argon2id"),
                ("encryptionPBKDFMemory", "65536"),
            ]),
            "ext4",
        )
        .unwrap();
        assert_eq!(ok.kms_id.as_ref().map(|k| k.as_str()), Some("vault-1"));
        assert_eq!(ok.fs_type, "xfs");
        assert_eq!(ok.format.cipher, "serpent");
        assert_eq!(ok.format.cipher_mode, "xts-plain64");
        assert_eq!(ok.format.key_size_bits, 256);
        assert_eq!(
            ok.format.pbkdf,
            Pbkdf::Argon2id {
                iterations: 4,
                memory_kib: 65536,
                parallel: 1
            }
        );
        let plain = parse(&p(&[]), "ext4").unwrap();
        assert_eq!(plain.kms_id, None);
        assert_eq!(plain.format.pbkdf, Pbkdf::MACHINE_KEY);

        let bad: &[(&[(&str, &str)], &str)] = &[
            (&[("encrypted", "yes")], "encrypted"),
            (&[("encrypted", "true")], "encryptionKMSID"),
            (
                &[("encrypted", "true"), ("encryptionKMSID", "default")],
                "encryptionKMSID",
            ),
            (&[("encryptionType", "file")], "encryptionType"),
            (&[("encryptionCipher", "aes-ecb")], "encryptionCipher"),
            (&[("encryptionKeySize", "128")], "encryptionKeySize"),
            (&[("encryptionKeySize", "big")], "encryptionKeySize"),
            (&[("encryptionPBKDFIterations", "10")], "encryptionPBKDF"),
            (
                &[("encryptionPBKDFMemory", "1024")],
                "encryptionPBKDFMemory",
            ),
            (&[("encryptionSectorSize", "1024")], "encryptionSectorSize"),
            (&[("csi.storage.k8s.io/fstype", "btrfs")], "fstype"),
            (&[("encryptionKMSId", "x")], "encryptionKMSId"),
        ];
        for (pairs, names) in bad {
            let e = parse(&p(pairs), "ext4").unwrap_err();
            assert_eq!(e.code, tonic::Code::InvalidArgument, "{pairs:?}");
            assert!(e.message.contains(names), "{pairs:?}: {}", e.message);
        }
    }

    #[test]
    fn digest_ignores_pvc_metadata_but_not_settings() {
        let a = parse(&p(&[("csi.storage.k8s.io/pvc/name", "a")]), "ext4").unwrap();
        let b = parse(&p(&[("csi.storage.k8s.io/pvc/name", "b")]), "ext4").unwrap();
        let c = parse(&p(&[("encryptionKeySize", "256")]), "ext4").unwrap();
        assert_eq!(a.digest, b.digest);
        assert_ne!(a.digest, c.digest);
    }
}
