//! The Transit engine: envelope encryption bound to the volume.
//!
//! `wrap` = `encrypt/<key>` and `unwrap` = `decrypt/<key>` with the volume ID
//! as the derived-key `context`, so a blob only decrypts for its own volume.
//! The key must be created with `derived=true` (Vault refuses a context
//! otherwise, and the plugin says so). Rotating the Transit key keeps old
//! blobs decrypting; the host's `rewrap` moves a blob to the newest version.

use crate::config::VaultConfig;
use crate::kv::{check, send};
use kmshost_plugin_sdk::http::Request;
use kmshost_plugin_sdk::{KmsError, Result, cache, invalid_config};
use zeroize::Zeroizing;

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        if c == b'=' {
            break;
        }
        let v = B64.iter().position(|x| *x == c)? as u32;
        buf = buf << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    Some(out)
}

fn transit(cfg: &VaultConfig) -> Result<(&str, &str)> {
    let (mount, key) = match &cfg.transit_key {
        Some(k) => (cfg.transit_mount.as_str(), k.as_str()),
        None => {
            return Err(KmsError::Unsupported(
                "wrap/unwrap need the Transit engine: set vaultTransitKey".into(),
            ));
        }
    };
    ensure_derived(cfg, mount, key)?;
    Ok((mount, key))
}

/// Vault accepts a `context` for a non-derived key and ignores it, which
/// would leave blobs unbound to their volume: check the key is derived
/// before using it (remembered for five minutes in the host cache).
fn ensure_derived(cfg: &VaultConfig, mount: &str, key: &str) -> Result<()> {
    let cache_key = format!("transit-derived:{mount}/{key}");
    if cache::get(&cache_key).is_some() {
        return Ok(());
    }
    let path = format!("/v1/{mount}/keys/{key}");
    let resp = send(cfg, || Request::get(format!("{}{path}", cfg.address)))?;
    if resp.status == 404 {
        return Err(invalid_config(
            "vaultTransitKey",
            format!("Transit key {mount}/{key} does not exist"),
        ));
    }
    if resp.status == 403 {
        return Err(KmsError::Denied(format!(
            "reading {path}: the policy must allow `read` on {mount}/keys/{key} so kmshost can check the key is derived"
        )));
    }
    let v: serde_json::Value = check(resp, &format!("reading {path}"))?.json()?;
    if v["data"]["derived"].as_bool() != Some(true) {
        return Err(invalid_config(
            "vaultTransitKey",
            format!(
                "Transit key {mount}/{key} must be created with derived=true so blobs are bound to their volume"
            ),
        ));
    }
    cache::set(&cache_key, b"1", 300);
    Ok(())
}

fn key_error(cfg: &VaultConfig, e: KmsError) -> KmsError {
    match e {
        KmsError::Other(m) if m.contains("context") && m.contains("derived") => invalid_config(
            "vaultTransitKey",
            format!(
                "Transit key {:?} must be created with derived=true so blobs are bound to their volume ({m})",
                cfg.transit_key.as_deref().unwrap_or("")
            ),
        ),
        e => e,
    }
}

/// Encrypts `plaintext` for `key_id`; returns Vault's `vault:vN:…` text.
pub fn wrap(cfg: &VaultConfig, key_id: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
    let (mount, key) = transit(cfg)?;
    let path = format!("/v1/{mount}/encrypt/{key}");
    let body = Zeroizing::new(
        serde_json::to_vec(&serde_json::json!({
            "plaintext": b64_encode(plaintext),
            "context": b64_encode(key_id.as_bytes()),
        }))
        .map_err(|_| KmsError::Other("cannot encode".into()))?,
    );
    let resp = send(cfg, || {
        Request::post(format!("{}{path}", cfg.address))
            .header("content-type", "application/json")
            .body(body.to_vec())
    })?;
    let resp =
        check(resp, &format!("encrypting with {mount}/{key}")).map_err(|e| key_error(cfg, e))?;
    let v: serde_json::Value = resp.json()?;
    let ct = v["data"]["ciphertext"]
        .as_str()
        .ok_or_else(|| KmsError::Other("Transit returned no ciphertext".into()))?;
    Ok(ct.as_bytes().to_vec())
}

/// Decrypts a `vault:vN:…` blob for `key_id`.
pub fn unwrap(cfg: &VaultConfig, key_id: &str, blob: &[u8]) -> Result<Vec<u8>> {
    let (mount, key) = transit(cfg)?;
    let ct = std::str::from_utf8(blob)
        .ok()
        .filter(|s| s.starts_with("vault:v"))
        .ok_or_else(|| KmsError::Integrity("not a Vault Transit ciphertext".into()))?;
    let path = format!("/v1/{mount}/decrypt/{key}");
    let body = serde_json::to_vec(&serde_json::json!({
        "ciphertext": ct,
        "context": b64_encode(key_id.as_bytes()),
    }))
    .map_err(|_| KmsError::Other("cannot encode".into()))?;
    let resp = send(cfg, || {
        Request::post(format!("{}{path}", cfg.address))
            .header("content-type", "application/json")
            .body(body.clone())
    })?;
    // A blob for another volume, altered, or from another key: Vault
    // answers 400 ("message authentication failed", "invalid ciphertext").
    if resp.status == 400 {
        let text = String::from_utf8_lossy(&resp.body);
        if text.contains("derived") && text.contains("context") {
            return Err(key_error(cfg, KmsError::Other(text.into_owned())));
        }
        return Err(KmsError::Integrity(format!(
            "Transit {mount}/{key} refused the blob for {key_id}: wrong volume, wrong key, or corrupt"
        )));
    }
    let resp = check(resp, &format!("decrypting with {mount}/{key}"))?;
    let v: serde_json::Value = resp.json()?;
    let p = Zeroizing::new(
        v["data"]["plaintext"]
            .as_str()
            .ok_or_else(|| KmsError::Other("Transit returned no plaintext".into()))?
            .to_string(),
    );
    b64_decode(&p).ok_or_else(|| KmsError::Other("Transit returned invalid base64".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for s in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"fooba",
            b"foobar",
            &[0u8, 255, 17, 3],
        ] {
            assert_eq!(b64_decode(&b64_encode(s)).unwrap(), s);
        }
        assert_eq!(b64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(b64_encode(b"fo"), "Zm8=");
    }
}
