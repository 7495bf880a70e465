//! Key invariants the host enforces on what a plugin returns: a plugin is
//! untrusted, so nothing it hands back may weaken a volume.
//!
//! - Keys going in and coming out are non-empty and at most
//!   [`MAX_KEY_BYTES`]; wrapped blobs at most [`MAX_WRAPPED_BYTES`].
//! - A wrapped blob never contains the key it wraps (a "wrap" that echoes
//!   the plaintext would put the key in clear on disk).
//! - Sealing a new volume key verifies the round trip (`unwrap(wrap(p)) ==
//!   p`, or `get` after `put`) before the key is recorded, and once per
//!   kmsID configuration that a blob does not unwrap under another key-id
//!   ([`super::Kms`] does the calls; this module holds the rules).
//! - A volume is formatted only with a passphrase of exactly the shape
//!   [`super::generate_passphrase`] makes ([`is_generated_passphrase`]).

use super::{KmsError, KmsId, Passphrase, WrappedKey};

/// Largest key (passphrase) accepted from a caller or a plugin.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest wrapped blob accepted from a plugin.
pub const MAX_WRAPPED_BYTES: usize = crate::types::WrappedKey::MAX_BYTES;
/// Length of a generated passphrase: 32 bytes, base64url without padding.
pub const GENERATED_PASSPHRASE_LEN: usize = 43;

fn kms_id(raw: &str) -> Result<KmsId, KmsError> {
    Ok(KmsId::new(raw)?)
}

fn integrity(kms_id: &str, message: String) -> KmsError {
    match KmsId::new(kms_id) {
        Ok(kms_id) => KmsError::Integrity { kms_id, message },
        Err(e) => e.into(),
    }
}

/// A key a caller hands in for `put` or `wrap`.
pub fn key_in(kms_id_raw: &str, key: &Passphrase) -> Result<(), KmsError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(KmsError::InvalidKey {
            kms_id: kms_id(kms_id_raw)?,
            message: format!(
                "a key must be 1 to {MAX_KEY_BYTES} bytes, not {}",
                key.len()
            ),
        });
    }
    Ok(())
}

/// A key a plugin returned from `op` (`get`, `unwrap`).
pub fn key_out(kms_id: &str, op: &str, key: &[u8]) -> Result<(), KmsError> {
    returned(
        kms_id,
        &format!("the plugin's {op} returned a key of"),
        key.len(),
        MAX_KEY_BYTES,
    )
}

/// A blob a plugin returned from `wrap`.
pub fn blob_out(kms_id: &str, blob: &[u8]) -> Result<(), KmsError> {
    returned(
        kms_id,
        "the plugin's wrap returned",
        blob.len(),
        MAX_WRAPPED_BYTES,
    )
}

/// `len` bytes that a plugin returned (`what`) must be 1 to `max`.
fn returned(kms_id: &str, what: &str, len: usize, max: usize) -> Result<(), KmsError> {
    if len == 0 || len > max {
        return Err(integrity(
            kms_id,
            format!("{what} {len} bytes (allowed: 1 to {max})"),
        ));
    }
    Ok(())
}

/// A blob that is to be kept with a volume must not carry its key in clear.
pub fn blob_hides_key(kms_id: &str, key: &Passphrase, blob: &WrappedKey) -> Result<(), KmsError> {
    let k = key.expose();
    if blob.as_bytes().windows(k.len()).any(|w| w == k) {
        return Err(integrity(
            kms_id,
            "the plugin's wrap returned a blob that contains the key in clear".into(),
        ));
    }
    Ok(())
}

/// What came back from the round trip is the key that went in.
pub fn round_trip(
    kms_id: &str,
    how: &str,
    sent: &Passphrase,
    back: &Passphrase,
) -> Result<(), KmsError> {
    if sent != back {
        return Err(integrity(
            kms_id,
            format!("{how} returned another key than the one just sealed"),
        ));
    }
    Ok(())
}

/// A blob unwrapped under another key-id: that must fail. `Ok` means the
/// plugin ignores the key-id, and any volume's blob would open any other.
pub fn binding(kms_id: &str, other: Result<Passphrase, KmsError>) -> Result<(), KmsError> {
    match other {
        Ok(_) => Err(integrity(
            kms_id,
            "the plugin unwrapped a blob under another key-id: it does not bind blobs to their volume"
                .into(),
        )),
        Err(e) if e.is_retryable() => Err(e),
        Err(_) => Ok(()),
    }
}

/// Whether `p` has exactly the shape of [`super::generate_passphrase`]:
/// 43 base64url characters (256 bits). Only such a passphrase is used to
/// format a volume.
pub fn is_generated_passphrase(p: &Passphrase) -> bool {
    let b = p.expose();
    b.len() == GENERATED_PASSPHRASE_LEN
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::{SecretBytes, generate_passphrase};

    fn p(s: &[u8]) -> Passphrase {
        SecretBytes::new(s.to_vec())
    }

    #[test]
    fn sizes_are_capped_both_ways() {
        for (len, ok) in [
            (0, false),
            (1, true),
            (MAX_KEY_BYTES, true),
            (MAX_KEY_BYTES + 1, false),
        ] {
            let k = p(&vec![b'k'; len]);
            assert_eq!(key_in("k", &k).is_ok(), ok, "{len}");
            assert_eq!(key_out("k", "get", k.expose()).is_ok(), ok, "{len}");
        }
        assert!(matches!(
            key_in("k", &p(b"")),
            Err(KmsError::InvalidKey { .. })
        ));
        assert!(matches!(
            key_out("k", "get", b""),
            Err(KmsError::Integrity { .. })
        ));
        for (len, ok) in [
            (0, false),
            (1, true),
            (MAX_WRAPPED_BYTES, true),
            (MAX_WRAPPED_BYTES + 1, false),
        ] {
            assert_eq!(blob_out("k", &vec![0; len]).is_ok(), ok, "{len}");
        }
    }

    #[test]
    fn a_blob_carrying_its_key_is_refused() {
        let key = p(b"secret-passphrase");
        for blob in [
            &b"secret-passphrase"[..],
            b"v1:secret-passphrase:tag",
            b"xxsecret-passphrase",
        ] {
            let e = blob_hides_key("k", &key, &WrappedKey::new(blob.to_vec())).unwrap_err();
            assert!(matches!(e, KmsError::Integrity { .. }), "{e}");
            assert!(!e.to_string().contains("secret-passphrase"), "{e}");
        }
        for blob in [&b"secret-passphras"[..], b"SECRET-PASSPHRASE", b"\x00\x01"] {
            assert!(blob_hides_key("k", &key, &WrappedKey::new(blob.to_vec())).is_ok());
        }
    }

    #[test]
    fn binding_needs_a_failure_that_is_not_transient() {
        let id = || KmsId::new("k").unwrap();
        assert!(binding("k", Ok(p(b"x"))).is_err());
        let integ = KmsError::Integrity {
            kms_id: id(),
            message: "tag".into(),
        };
        assert!(binding("k", Err(integ)).is_ok());
        let down = KmsError::Unavailable {
            kms_id: id(),
            message: "503".into(),
        };
        assert!(matches!(
            binding("k", Err(down)),
            Err(KmsError::Unavailable { .. })
        ));
    }

    #[test]
    fn only_the_generated_shape_formats_a_volume() {
        for _ in 0..64 {
            assert!(is_generated_passphrase(&generate_passphrase()));
        }
        let generated = generate_passphrase();
        let g = generated.expose();
        for bad in [
            &b"x"[..],
            &g[..42],
            &[g, b"A"].concat(),
            b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA+",
            b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
        ] {
            assert!(
                !is_generated_passphrase(&p(bad)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
