//! ceph-csi's encryption keys in RBD image metadata, so an image carries
//! its own key reference and its state the way ceph-csi writes them:
//!
//! | key | value |
//! |---|---|
//! | `rbd.csi.ceph.com/dek` | a metadata-type KMS's wrapped DEK |
//! | `rbd.csi.ceph.com/encrypted` | `encryptionPrepared`, then `encrypted` |
//!
//! Older ceph-csi releases wrote the same keys with a leading dot; both
//! are read (the current name first), and only the current name is
//! written.

use std::collections::BTreeMap;

/// The wrapped DEK's key (ceph-csi's `rbd.csi.ceph.com/dek`).
pub const DEK: &str = "rbd.csi.ceph.com/dek";
/// The encryption state's key.
pub const ENCRYPTED: &str = "rbd.csi.ceph.com/encrypted";
/// The wrapped DEK's key as older ceph-csi releases wrote it.
pub const LEGACY_DEK: &str = ".rbd.csi.ceph.com/dek";
/// The encryption state's key as older ceph-csi releases wrote it.
pub const LEGACY_ENCRYPTED: &str = ".rbd.csi.ceph.com/encrypted";

/// The record's form of a wrapped key (base64 of the blob) from the
/// image's `rbd.csi.ceph.com/dek` value. ceph-csi's `metadata` KMS writes
/// its blob as JSON text (`{"dek": …, "nonce": …}`): that text is the
/// blob. kmshost's blobs are binary, so it writes them base64-encoded.
pub fn holding_blob(dek: &str) -> String {
    use base64::Engine as _;
    if dek.trim_start().starts_with('{') {
        base64::engine::general_purpose::STANDARD.encode(dek.as_bytes())
    } else {
        dek.to_string()
    }
}

/// An image's encryption state, as ceph-csi records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncryptionState {
    /// Key sealed, LUKS header not yet written (ceph-csi
    /// `encryptionPrepared`): the first NodeStage formats.
    Prepared,
    /// LUKS2 header written (ceph-csi `encrypted`).
    Encrypted,
}

impl EncryptionState {
    /// ceph-csi's value.
    pub fn as_str(self) -> &'static str {
        match self {
            EncryptionState::Prepared => "encryptionPrepared",
            EncryptionState::Encrypted => "encrypted",
        }
    }

    /// Parses ceph-csi's value; anything else (`""`, an unknown word) is
    /// not an encryption state.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "encryptionPrepared" => Some(EncryptionState::Prepared),
            "encrypted" => Some(EncryptionState::Encrypted),
            _ => None,
        }
    }
}

/// What an image's metadata says about its encryption.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageEncryption {
    /// The state, if recorded.
    pub state: Option<EncryptionState>,
    /// The wrapped DEK (base64 text as ceph-csi stores it), if recorded.
    pub dek: Option<String>,
}

impl ImageEncryption {
    /// Reads both the current and the dotted legacy keys from an image's
    /// metadata; the current key wins where both are set.
    pub fn from_meta(meta: &BTreeMap<String, String>) -> Self {
        let get = |now: &str, old: &str| {
            meta.get(now)
                .or_else(|| meta.get(old))
                .filter(|v| !v.is_empty())
                .cloned()
        };
        ImageEncryption {
            state: get(ENCRYPTED, LEGACY_ENCRYPTED)
                .as_deref()
                .and_then(EncryptionState::parse),
            dek: get(DEK, LEGACY_DEK),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_current_and_legacy_keys() {
        type Case = (
            &'static [(&'static str, &'static str)],
            Option<EncryptionState>,
            Option<&'static str>,
        );
        let cases: &[Case] = &[
            (&[], None, None),
            (
                &[(DEK, "new"), (ENCRYPTED, "encrypted")],
                Some(EncryptionState::Encrypted),
                Some("new"),
            ),
            (
                &[
                    (LEGACY_DEK, "old"),
                    (LEGACY_ENCRYPTED, "encryptionPrepared"),
                ],
                Some(EncryptionState::Prepared),
                Some("old"),
            ),
            (
                &[
                    (DEK, "new"),
                    (LEGACY_DEK, "old"),
                    (LEGACY_ENCRYPTED, "encrypted"),
                ],
                Some(EncryptionState::Encrypted),
                Some("new"),
            ),
            (&[(DEK, ""), (ENCRYPTED, "bogus")], None, None),
        ];
        for (kv, state, dek) in cases {
            let e = ImageEncryption::from_meta(&meta(kv));
            assert_eq!(e.state, *state, "{kv:?}");
            assert_eq!(e.dek.as_deref(), *dek, "{kv:?}");
        }
    }

    #[test]
    fn ceph_csi_json_blobs_are_the_blob_and_kmshosts_are_base64() {
        use base64::Engine as _;
        let json = r#"{"dek":"q83vASNFZ4k=","nonce":"AAECAwQFBgcICQoL"}"#;
        let b = holding_blob(json);
        assert_eq!(
            base64::engine::general_purpose::STANDARD.decode(b).unwrap(),
            json.as_bytes()
        );
        assert_eq!(holding_blob("S01TSAE="), "S01TSAE=");
    }

    #[test]
    fn state_words_are_ceph_csis() {
        for s in [EncryptionState::Prepared, EncryptionState::Encrypted] {
            assert_eq!(EncryptionState::parse(s.as_str()), Some(s));
        }
        assert_eq!(EncryptionState::Prepared.as_str(), "encryptionPrepared");
    }
}
