//! `metadata` mode: wrap volume keys under a passphrase-derived KEK.
//!
//! Blob formats:
//!
//! * **kmshost v1** (written by `wrap`): `"KMSH" | 0x01 | salt[16] | nonce[12] |
//!   AES-256-GCM(ciphertext ‖ tag)`, with KEK = scrypt(passphrase, salt,
//!   N=32768, r=8, p=1) and associated data `"kmshost-secret-v1\0" ‖ key-id`,
//!   so a blob cannot be replayed for another volume. The salt is random per
//!   passphrase and the derived KEK is kept in the host's per-kmsID cache, so
//!   scrypt runs once per passphrase, not once per volume.
//! * **ceph-csi** (read by `unwrap`, so existing volumes keep working): the
//!   JSON `{"dek": b64, "nonce": b64}` with KEK = scrypt(passphrase, salt =
//!   volume ID) and no associated data.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use kmshost_plugin_sdk::{KmsError, Options, Result, cache, secret};
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use zeroize::{Zeroize, Zeroizing};

const MAGIC: &[u8; 4] = b"KMSH";
const VERSION: u8 = 1;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const HEADER_LEN: usize = MAGIC.len() + 1 + SALT_LEN + NONCE_LEN;
const AAD_PREFIX: &[u8] = b"kmshost-secret-v1\0";
/// The Secret key holding the passphrase, as in ceph-csi.
pub const PASSPHRASE_KEY: &str = "encryptionPassphrase";
/// How long the host may keep a derived KEK.
const KEK_TTL_SECS: u32 = 3600;

/// Configured `metadata` mode.
pub struct Metadata {
    secret_name: String,
}

impl Metadata {
    /// Reads `secretName` (required) and `secretNamespace` (resolved by the
    /// host, which grants the Secret from that namespace).
    pub fn configure(options: &mut Options) -> Result<Self> {
        let secret_name = options.required("secretName")?;
        let _ = options.take("secretNamespace");
        Ok(Metadata { secret_name })
    }

    fn passphrase(&self) -> Result<Zeroizing<Vec<u8>>> {
        let p = Zeroizing::new(secret(&self.secret_name, PASSPHRASE_KEY)?);
        if p.is_empty() {
            return Err(KmsError::InvalidConfig(kmshost_plugin_sdk::ConfigError {
                option: "secretName".into(),
                message: format!("Secret {} has an empty {PASSPHRASE_KEY}", self.secret_name),
            }));
        }
        Ok(p)
    }

    /// Wraps `plaintext` for `key_id` in the kmshost v1 format.
    pub fn wrap(&self, key_id: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let passphrase = self.passphrase()?;
        let (salt, cipher) = wrap_cipher(&passphrase)?;
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        let aad = aad(key_id);
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| internal("encryption failed"))?;
        let mut out = Vec::with_capacity(HEADER_LEN + ct.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&salt);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Unwraps a kmshost v1 blob, or a ceph-csi `metadata` JSON blob.
    pub fn unwrap(&self, key_id: &str, blob: &[u8]) -> Result<Vec<u8>> {
        if blob.first() == Some(&b'{') {
            return self.unwrap_ceph_csi(key_id, blob);
        }
        if blob.len() < HEADER_LEN + 16 || &blob[..4] != MAGIC {
            return Err(KmsError::Integrity(
                "not a wrapped key of the secret plugin".into(),
            ));
        }
        if blob[4] != VERSION {
            return Err(KmsError::Integrity(format!(
                "wrapped key format version {} is not supported",
                blob[4]
            )));
        }
        let salt: [u8; SALT_LEN] = blob[5..5 + SALT_LEN].try_into().expect("length checked");
        let nonce = &blob[5 + SALT_LEN..HEADER_LEN];
        let passphrase = self.passphrase()?;
        let cipher = unwrap_cipher(&passphrase, &salt)?;
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: &blob[HEADER_LEN..],
                    aad: &aad(key_id),
                },
            )
            .map_err(|_| {
                KmsError::Integrity(
                    "wrapped key does not authenticate: wrong passphrase, wrong volume, or corrupt"
                        .into(),
                )
            })
    }

    fn unwrap_ceph_csi(&self, key_id: &str, blob: &[u8]) -> Result<Vec<u8>> {
        #[derive(serde::Deserialize)]
        struct Legacy {
            dek: String,
            nonce: String,
        }
        let legacy: Legacy = serde_json::from_slice(blob)
            .map_err(|_| KmsError::Integrity("malformed ceph-csi metadata blob".into()))?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let ct = b64
            .decode(legacy.dek)
            .map_err(|_| KmsError::Integrity("malformed ceph-csi metadata blob".into()))?;
        let nonce = b64
            .decode(legacy.nonce)
            .map_err(|_| KmsError::Integrity("malformed ceph-csi metadata blob".into()))?;
        if nonce.len() != NONCE_LEN {
            return Err(KmsError::Integrity(
                "ceph-csi metadata blob has a bad nonce".into(),
            ));
        }
        let passphrase = self.passphrase()?;
        let kek = derive(&passphrase, key_id.as_bytes())?;
        let cipher = Aes256Gcm::new_from_slice(&kek[..]).map_err(|_| internal("bad KEK length"))?;
        cipher
            .decrypt(Nonce::from_slice(&nonce), ct.as_slice())
            .map_err(|_| {
                KmsError::Integrity(
                    "ceph-csi metadata blob does not authenticate: wrong passphrase or volume"
                        .into(),
                )
            })
    }
}

fn aad(key_id: &str) -> Vec<u8> {
    let mut aad = AAD_PREFIX.to_vec();
    aad.extend_from_slice(key_id.as_bytes());
    aad
}

/// scrypt with ceph-csi's parameters.
fn derive(passphrase: &[u8], salt: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
    let params = scrypt::Params::new(15, 8, 1, 32).map_err(|_| internal("scrypt parameters"))?;
    let mut kek = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(passphrase, salt, &params, &mut kek[..]).map_err(|_| internal("scrypt"))?;
    Ok(kek)
}

/// A hash naming a value derived from this passphrase (and salt), so the
/// passphrase itself never becomes a cache key.
fn fingerprint(passphrase: &[u8], salt: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"kmshost-secret-cache\0");
    h.update((salt.len() as u32).to_be_bytes());
    h.update(salt);
    h.update(passphrase);
    h.finalize().into()
}

fn cache_key(kind: &str, passphrase: &[u8], salt: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(kind.len() + 65);
    s.push_str(kind);
    s.push('/');
    for b in fingerprint(passphrase, salt) {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// Ciphers kept for the life of this (warm) instance, keyed by the
/// fingerprint of the passphrase they were derived from: the passphrase is
/// still read on every call, so a changed Secret takes effect at once.
struct Memo {
    wrap: Option<([u8; 32], [u8; SALT_LEN], Aes256Gcm)>,
    unwrap: Option<([u8; 32], Aes256Gcm)>,
}

thread_local! {
    static MEMO: RefCell<Memo> = const { RefCell::new(Memo { wrap: None, unwrap: None }) };
}

fn wrap_cipher(passphrase: &[u8]) -> Result<([u8; SALT_LEN], Aes256Gcm)> {
    let fp = fingerprint(passphrase, &[]);
    if let Some((f, salt, c)) = MEMO.with(|m| m.borrow().wrap.clone())
        && f == fp
    {
        return Ok((salt, c));
    }
    let (salt, kek) = current_kek(passphrase)?;
    let cipher = Aes256Gcm::new_from_slice(&kek[..]).map_err(|_| internal("bad KEK length"))?;
    MEMO.with(|m| m.borrow_mut().wrap = Some((fp, salt, cipher.clone())));
    Ok((salt, cipher))
}

fn unwrap_cipher(passphrase: &[u8], salt: &[u8; SALT_LEN]) -> Result<Aes256Gcm> {
    let fp = fingerprint(passphrase, salt);
    if let Some((f, c)) = MEMO.with(|m| m.borrow().unwrap.clone())
        && f == fp
    {
        return Ok(c);
    }
    let kek = kek_for_salt(passphrase, salt)?;
    let cipher = Aes256Gcm::new_from_slice(&kek[..]).map_err(|_| internal("bad KEK length"))?;
    MEMO.with(|m| m.borrow_mut().unwrap = Some((fp, cipher.clone())));
    Ok(cipher)
}

/// The (salt, KEK) used for new wraps under this passphrase: cached, or a new
/// random salt and one scrypt run.
fn current_kek(passphrase: &[u8]) -> Result<([u8; SALT_LEN], Zeroizing<[u8; 32]>)> {
    let key = cache_key("wrap-kek", passphrase, &[]);
    if let Some(mut v) = cache::get(&key) {
        if v.len() == SALT_LEN + 32 {
            let salt: [u8; SALT_LEN] = v[..SALT_LEN].try_into().expect("length checked");
            let mut kek = Zeroizing::new([0u8; 32]);
            kek.copy_from_slice(&v[SALT_LEN..]);
            v.zeroize();
            return Ok((salt, kek));
        }
        v.zeroize();
    }
    let mut salt = [0u8; SALT_LEN];
    fill_random(&mut salt)?;
    let kek = derive(passphrase, &salt)?;
    let mut entry = Zeroizing::new(Vec::with_capacity(SALT_LEN + 32));
    entry.extend_from_slice(&salt);
    entry.extend_from_slice(&kek[..]);
    cache::set(&key, &entry, KEK_TTL_SECS);
    cache::set(&cache_key("kek", passphrase, &salt), &kek[..], KEK_TTL_SECS);
    Ok((salt, kek))
}

/// The KEK for an existing blob's salt: cached, or one scrypt run.
fn kek_for_salt(passphrase: &[u8], salt: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
    let key = cache_key("kek", passphrase, salt);
    if let Some(mut v) = cache::get(&key) {
        if v.len() == 32 {
            let mut kek = Zeroizing::new([0u8; 32]);
            kek.copy_from_slice(&v);
            v.zeroize();
            return Ok(kek);
        }
        v.zeroize();
    }
    let kek = derive(passphrase, salt)?;
    cache::set(&key, &kek[..], KEK_TTL_SECS);
    Ok(kek)
}

fn fill_random(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|_| internal("no randomness available"))
}

fn internal(what: &str) -> KmsError {
    KmsError::Other(format!("secret plugin: {what}"))
}
