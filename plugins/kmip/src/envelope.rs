//! ceph-csi mode: volume keys wrapped under the KMIP key `UNIQUE_IDENTIFIER`,
//! the blob kept with the volume.
//!
//! Blob formats (JSON, as ceph-csi stores them; byte strings in base64):
//!
//! * **kmshost v1, server-side crypto** (`USE_CRYPTO_RPC` true, the
//!   default): `{"kmshost":1, "dek": Encrypt(K), "nonce": iv, "sealed":
//!   n ‖ AES-256-GCM_K(volume key)}`. K is a fresh random 256-bit key, sent
//!   to the server's Encrypt (AES-CBC-PKCS5, random 16-byte IV — ceph-csi's
//!   parameters) and used here to seal the volume key with associated data
//!   `"kmshost-kmip-v1\0" ‖ key-id`. Unwrapping needs the server's Decrypt
//!   as before, and CBC's malleability buys nothing: any change to the blob
//!   or a different key-id fails GCM's check (`integrity`).
//! * **kmshost v1, local crypto** (`USE_CRYPTO_RPC: "false"`, for IBM
//!   GKLM): `{"kmshost":1, "dek": AES-256-GCM(volume key), "nonce": n}`
//!   under the key material Get returns, with the same associated data.
//! * **ceph-csi** (read by `unwrap`, so existing volumes keep opening):
//!   `{"dek", "nonce"}` — Decrypt of `dek` with IV `nonce`, or (local
//!   crypto) GCM without associated data. These blobs carry no binding to
//!   their volume; that is ceph-csi's format, logged when read.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use kmshost_plugin_sdk::{KmsError, Result};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

const AAD_PREFIX: &[u8] = b"kmshost-kmip-v1\0";
/// The IV size ceph-csi uses for server-side CBC.
pub const IV_LEN: usize = 16;
const GCM_NONCE_LEN: usize = 12;

/// A blob as stored.
#[derive(Debug, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Blob {
    /// 1 for kmshost's formats; absent in ceph-csi's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kmshost: Option<u32>,
    /// Server-side: Encrypt's output. Local: the GCM ciphertext.
    #[serde(with = "b64")]
    pub dek: Vec<u8>,
    /// Server-side: the CBC IV. Local: the GCM nonce.
    #[serde(with = "b64")]
    pub nonce: Vec<u8>,
    /// kmshost server-side only: GCM nonce ‖ sealed volume key.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "b64")]
    pub sealed: Vec<u8>,
}

mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

impl Blob {
    /// Parses a stored blob; anything else is an `integrity` failure.
    pub fn parse(bytes: &[u8]) -> Result<Blob> {
        let b: Blob = serde_json::from_slice(bytes)
            .map_err(|_| KmsError::Integrity("the wrapped key is not a KMIP blob".into()))?;
        if b.kmshost.is_some_and(|v| v != 1) {
            return Err(KmsError::Integrity(format!(
                "unknown kmshost KMIP blob version {:?}",
                b.kmshost
            )));
        }
        Ok(b)
    }

    /// The stored bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Whether this is ceph-csi's unbound format.
    pub fn is_ceph_csi(&self) -> bool {
        self.kmshost.is_none()
    }
}

/// `n` random bytes.
pub fn random(n: usize) -> Result<Zeroizing<Vec<u8>>> {
    let mut b = Zeroizing::new(vec![0u8; n]);
    getrandom::fill(&mut b).map_err(|_| KmsError::Other("no randomness available".into()))?;
    Ok(b)
}

fn aad(key_id: &str) -> Vec<u8> {
    [AAD_PREFIX, key_id.as_bytes()].concat()
}

fn cipher(key: &[u8]) -> Result<Aes256Gcm> {
    Aes256Gcm::new_from_slice(key).map_err(|_| {
        KmsError::Other(format!(
            "the KMIP key is {} bytes; AES-256 needs 32",
            key.len()
        ))
    })
}

/// Seals `plaintext` under `key` for `key_id` (bound when `bind`):
/// returns (nonce, ciphertext).
pub fn seal(key: &[u8], key_id: &str, plaintext: &[u8], bind: bool) -> Result<(Vec<u8>, Vec<u8>)> {
    let nonce = random(GCM_NONCE_LEN)?.to_vec();
    let aad = if bind { aad(key_id) } else { Vec::new() };
    let ct = cipher(key)?
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| KmsError::Other("sealing failed".into()))?;
    Ok((nonce, ct))
}

/// Opens what [`seal`] sealed; any mismatch is `integrity`.
pub fn open(
    key: &[u8],
    key_id: &str,
    nonce: &[u8],
    ct: &[u8],
    bind: bool,
) -> Result<Zeroizing<Vec<u8>>> {
    if nonce.len() != GCM_NONCE_LEN {
        return Err(KmsError::Integrity(
            "the wrapped key's nonce has the wrong size".into(),
        ));
    }
    let aad = if bind { aad(key_id) } else { Vec::new() };
    cipher(key)?
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
        .map(Zeroizing::new)
        .map_err(|_| {
            KmsError::Integrity(format!(
                "the wrapped key does not open for {key_id}: altered, or wrapped for another volume or under another key"
            ))
        })
}

/// `sealed` split into (nonce, ciphertext).
pub fn split_sealed(sealed: &[u8]) -> Result<(&[u8], &[u8])> {
    if sealed.len() <= GCM_NONCE_LEN {
        return Err(KmsError::Integrity("the wrapped key is truncated".into()));
    }
    Ok(sealed.split_at(GCM_NONCE_LEN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_binds_the_key_id() {
        let key = [7u8; 32];
        let (n, ct) = seal(&key, "vol-a", b"passphrase", true).unwrap();
        assert_eq!(&*open(&key, "vol-a", &n, &ct, true).unwrap(), b"passphrase");
        assert!(matches!(
            open(&key, "vol-b", &n, &ct, true),
            Err(KmsError::Integrity(_))
        ));
        assert!(matches!(
            open(&key, "vol-a", &n, &ct, false),
            Err(KmsError::Integrity(_))
        ));
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert!(matches!(
            open(&key, "vol-a", &n, &bad, true),
            Err(KmsError::Integrity(_))
        ));
        assert!(matches!(cipher(&[0; 16]), Err(KmsError::Other(m)) if m.contains("16 bytes")));
    }

    #[test]
    fn ceph_csi_blobs_parse_and_others_are_integrity_failures() {
        // ceph-csi's json.Marshal of encryptedMetadataDEK.
        let b = Blob::parse(br#"{"dek":"AQID","nonce":"BAUG"}"#).unwrap();
        assert!(b.is_ceph_csi());
        assert_eq!((b.dek, b.nonce), (vec![1, 2, 3], vec![4, 5, 6]));
        for bad in [
            &b"not json"[..],
            br#"{"dek":"AQID"}"#,
            br#"{"dek":"!","nonce":""}"#,
            br#"{"kmshost":2,"dek":"","nonce":""}"#,
            br#"{"dek":"","nonce":"","x":1}"#,
        ] {
            assert!(
                matches!(Blob::parse(bad), Err(KmsError::Integrity(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let ours = Blob {
            kmshost: Some(1),
            dek: vec![1],
            nonce: vec![2],
            sealed: vec![3],
        };
        let text = String::from_utf8(ours.to_bytes()).unwrap();
        assert_eq!(
            text,
            r#"{"kmshost":1,"dek":"AQ==","nonce":"Ag==","sealed":"Aw=="}"#
        );
    }
}
