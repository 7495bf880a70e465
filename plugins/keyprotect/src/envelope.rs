//! Envelope mode (ceph-csi): the volume key is wrapped with the customer
//! root key, the volume ID as additional authenticated data, and the blob
//! is kept with the volume.
//!
//! Two blob formats, both read:
//! * **ceph-csi's**: standard base64 of Key Protect's ciphertext string. The
//!   plaintext sent was the passphrase text itself (ceph-csi's passphrases
//!   are base64 text, which the service requires), so it comes back as-is.
//! * **kmshost's**: JSON `{"kmshost":1,"ciphertext":"…"}`. kmshost's
//!   passphrases are URL-safe base64, which the service refuses as a
//!   plaintext, so the plaintext sent is the standard base64 of the key's
//!   bytes and is decoded on the way back.
//!
//! After a root-key rotation the service answers an unwrap with the key
//! wrapped again under the newest version: [`unwrap`] returns that blob,
//! in the format it was given, for the host to keep.

use crate::api::{self, Action, Call};
use crate::config::KpConfig;
use kmshost_plugin_sdk::encoding::{b64_decode, b64_encode, url_encode};
use kmshost_plugin_sdk::http::Method;
use kmshost_plugin_sdk::{KmsError, Result};
use zeroize::Zeroizing;

/// The format of a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `base64(ciphertext)`, the passphrase text as the plaintext.
    CephCsi,
    /// The kmshost JSON envelope, base64 of the key as the plaintext.
    Kmshost,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Blob {
    kmshost: u32,
    ciphertext: String,
}

/// The blob's format and Key Protect ciphertext.
pub fn parse(blob: &[u8]) -> Result<(Format, String)> {
    let bad = || KmsError::Integrity("the wrapped key is not a Key Protect blob".into());
    if blob.first() == Some(&b'{') {
        let b: Blob = serde_json::from_slice(blob).map_err(|_| bad())?;
        if b.kmshost != 1 || b.ciphertext.is_empty() {
            return Err(bad());
        }
        return Ok((Format::Kmshost, b.ciphertext));
    }
    let text = std::str::from_utf8(blob).map_err(|_| bad())?;
    let ct = b64_decode("the wrapped key", text).map_err(|_| bad())?;
    let ct = String::from_utf8(ct).map_err(|_| bad())?;
    if ct.is_empty() {
        return Err(bad());
    }
    Ok((Format::CephCsi, ct))
}

/// A blob of `format` around `ciphertext`.
pub fn encode(format: Format, ciphertext: String) -> Vec<u8> {
    match format {
        Format::CephCsi => b64_encode(ciphertext.as_bytes()).into_bytes(),
        Format::Kmshost => serde_json::to_vec(&Blob {
            kmshost: 1,
            ciphertext,
        })
        .unwrap_or_default(),
    }
}

/// Wraps `key` for `key_id` with `root_key`: a kmshost-format blob.
pub fn wrap(cfg: &KpConfig, root_key: &str, key_id: &str, key: &[u8]) -> Result<Vec<u8>> {
    let plaintext = Zeroizing::new(b64_encode(key));
    let body = Zeroizing::new(
        serde_json::to_vec(&serde_json::json!({"plaintext": plaintext.as_str(), "aad": [key_id]}))
            .map_err(|_| KmsError::Other("cannot encode the wrap request".into()))?,
    );
    let call = action_call(root_key, key_id, "wrap", body);
    let resp = api::send(cfg, &call)?;
    #[derive(serde::Deserialize)]
    struct Wrapped {
        ciphertext: String,
    }
    let w: Wrapped = resp.json()?;
    if w.ciphertext.is_empty() {
        return Err(KmsError::Other(format!(
            "{}: no ciphertext in the reply",
            call.what
        )));
    }
    Ok(encode(Format::Kmshost, w.ciphertext))
}

/// What an unwrap gives: the key, and the blob rewrapped under the root
/// key's newest version when the service made one.
pub struct Unwrapped {
    /// The volume key.
    pub key: Zeroizing<Vec<u8>>,
    /// The blob to keep instead of the old one, in the old one's format.
    pub rewrapped: Option<Vec<u8>>,
}

/// Unwraps `blob` for `key_id` with `root_key`.
pub fn unwrap(cfg: &KpConfig, root_key: &str, key_id: &str, blob: &[u8]) -> Result<Unwrapped> {
    let (format, ciphertext) = parse(blob)?;
    let body = Zeroizing::new(
        serde_json::to_vec(&serde_json::json!({"ciphertext": ciphertext, "aad": [key_id]}))
            .map_err(|_| KmsError::Other("cannot encode the unwrap request".into()))?,
    );
    let call = action_call(root_key, key_id, "unwrap", body);
    let resp = api::send(cfg, &call)?;
    #[derive(serde::Deserialize)]
    struct Reply {
        plaintext: String,
        #[serde(default)]
        ciphertext: Option<String>,
    }
    let r: Reply = resp.json()?;
    let plaintext = Zeroizing::new(r.plaintext);
    let key = match format {
        Format::CephCsi => Zeroizing::new(plaintext.as_bytes().to_vec()),
        Format::Kmshost => Zeroizing::new(b64_decode("the unwrapped plaintext", &plaintext)?),
    };
    if key.is_empty() {
        return Err(KmsError::Integrity(format!("{}: an empty key", call.what)));
    }
    let rewrapped = r
        .ciphertext
        .filter(|c| !c.is_empty() && *c != ciphertext)
        .map(|c| encode(format, c));
    Ok(Unwrapped { key, rewrapped })
}

fn action_call(
    root_key: &str,
    key_id: &str,
    action: &str,
    body: Zeroizing<Vec<u8>>,
) -> Call<'static> {
    let (content_type, kind) = match action {
        "wrap" => ("application/vnd.ibm.kms.key_action_wrap+json", Action::Wrap),
        _ => (
            "application/vnd.ibm.kms.key_action_unwrap+json",
            Action::Unwrap,
        ),
    };
    Call {
        method: Method::Post,
        path: format!("keys/{}/actions/{action}", url_encode(root_key)),
        content_type,
        body,
        headers: Vec::new(),
        what: format!("{action} volume {key_id} with root key {root_key}"),
        action: kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_blob_formats_parse_and_encode_back() {
        let ceph = b64_encode(b"eyJjaXBoZXJ0ZXh0Ijoi...");
        let (f, ct) = parse(ceph.as_bytes()).unwrap();
        assert_eq!(
            (f, ct.as_str()),
            (Format::CephCsi, "eyJjaXBoZXJ0ZXh0Ijoi...")
        );
        assert_eq!(encode(f, ct), ceph.as_bytes());
        let own = encode(Format::Kmshost, "abc=".into());
        assert_eq!(own, br#"{"kmshost":1,"ciphertext":"abc="}"#);
        assert_eq!(parse(&own).unwrap(), (Format::Kmshost, "abc=".into()));
        for bad in [
            &b""[..],
            b"{}",
            br#"{"kmshost":2,"ciphertext":"a"}"#,
            b"not base64!",
            b"\xff\xfe",
        ] {
            assert!(matches!(parse(bad), Err(KmsError::Integrity(_))), "{bad:?}");
        }
    }
}
