//! Identifiers and key material: the leaf every layer speaks, depending on
//! nothing else in the crate.
//!
//! Key material lives only in [`SecretBytes`] (and the aliases built on it):
//! its `Debug` prints `REDACTED`, it has no `Display`, and it is zeroized when
//! dropped. [`KeyId`] and [`KmsId`] are validated on construction.

use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Bytes that must never be printed: passphrases, keys, tokens.
///
/// `Debug` prints `SecretBytes(REDACTED, N bytes)`; the bytes are zeroized on
/// drop. Use [`SecretBytes::expose`] at the one place they are needed.
#[derive(Clone, Default, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Takes ownership of `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(bytes)
    }
    /// The secret bytes. Do not log, format or copy them into plain types.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(v: Vec<u8>) -> Self {
        SecretBytes(v)
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(REDACTED, {} bytes)", self.0.len())
    }
}

/// A volume passphrase (the LUKS key). Redacting and zeroizing.
pub type Passphrase = SecretBytes;

/// A volume key wrapped by a KMS: not secret by itself (it is stored with the
/// volume), but opaque. `Debug` shows only its length and a short hash.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey(Vec<u8>);

impl WrappedKey {
    /// The largest blob the host accepts from a plugin (a wrap's result, a
    /// rewrap's offer) and keeps with a volume.
    pub const MAX_BYTES: usize = 16 << 10;

    /// Wraps the blob bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        WrappedKey(bytes)
    }
    /// The blob.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    /// Consumes into the blob.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use sha2::Digest;
        let h = sha2::Sha256::digest(&self.0);
        write!(
            f,
            "WrappedKey({} bytes, sha256:{})",
            self.0.len(),
            hex::encode(&h[..6])
        )
    }
}

/// Why an identifier was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty identifier.
    #[error("{what} must not be empty")]
    Empty {
        /// Which identifier.
        what: &'static str,
    },
    /// Too long.
    #[error("{what} is longer than {max} bytes")]
    TooLong {
        /// Which identifier.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// Contains a character outside the allowed set.
    #[error("{what} {value:?} contains {ch:?}: only letters, digits and - _ . are allowed")]
    BadChar {
        /// Which identifier.
        what: &'static str,
        /// The value (identifiers are not secret).
        value: String,
        /// The first offending character.
        ch: char,
    },
}

fn validate(what: &'static str, s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { what });
    }
    if s.len() > max {
        return Err(IdError::TooLong { what, max });
    }
    if let Some(ch) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(IdError::BadChar {
            what,
            value: s.to_string(),
            ch,
        });
    }
    if s == "." || s == ".." {
        return Err(IdError::BadChar {
            what,
            value: s.to_string(),
            ch: '.',
        });
    }
    Ok(())
}

/// Defines a validated identifier newtype: 1–253 bytes of letters, digits,
/// `-`, `_`, `.` (so never a path or URL separator), printed as itself.
macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            #[doc = concat!("Validates a ", $what, ": 1–253 bytes of letters, digits, `-`, `_`, `.`.")]
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                validate($what, &s, 253)?;
                Ok($name(s))
            }
            #[doc = concat!("The ", $what, ".")]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        /// Stored as its string (records, tokens): the on-disk form of a
        /// plain string, validated again when read.
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

identifier!(
    /// The name of one KMS configuration (a key of ceph-csi's `config.json`).
    KmsId,
    "kmsID"
);

identifier!(
    /// The identifier a key is stored under: the volume handle.
    ///
    /// Path characters (`/`, `\`, NUL) and `..` are rejected, so a key-id can
    /// never escape a directory or a URL path segment.
    KeyId,
    "key-id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_bytes_debug_is_redacted() {
        let s = SecretBytes::new(b"hunter2-super-secret".to_vec());
        let dbg = format!("{s:?}");
        assert!(dbg.contains("REDACTED"), "{dbg}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        let nested = format!("{:?}", Some(vec![s.clone()]));
        assert!(!nested.contains("hunter2"), "{nested}");
    }

    #[test]
    fn wrapped_key_debug_hides_bytes() {
        let w = WrappedKey::new(b"0123456789abcdef".to_vec());
        let dbg = format!("{w:?}");
        assert!(dbg.starts_with("WrappedKey(16 bytes, sha256:"), "{dbg}");
        assert!(!dbg.contains("0123456789"), "{dbg}");
    }

    #[test]
    fn key_ids_reject_path_characters() {
        for bad in ["", "a/b", "../x", "..", ".", "a\\b", "a\0b", "a b", "vol:1"] {
            assert!(KeyId::new(bad).is_err(), "{bad:?} accepted");
        }
        for good in [
            "pvc-123",
            "0001-0009-rook-ceph-0000000000000001-abc",
            "vol_1.a",
        ] {
            assert!(KeyId::new(good).is_ok(), "{good:?} rejected");
        }
        assert!(matches!(
            KeyId::new("x".repeat(254)),
            Err(IdError::TooLong { .. })
        ));
    }

    #[test]
    fn identifiers_are_stored_as_strings_and_validated_when_read() {
        let id = KmsId::new("vault-1").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"vault-1\"");
        assert_eq!(serde_json::from_str::<KmsId>("\"vault-1\"").unwrap(), id);
        let err = serde_json::from_str::<KmsId>("\"../x\"").unwrap_err();
        assert!(err.to_string().contains("kmsID"), "{err}");
    }
}
