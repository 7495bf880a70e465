//! The Transit engine: envelope encryption bound to the volume.
//!
//! `wrap` = `encrypt/<key>` and `unwrap` = `decrypt/<key>` with the volume ID
//! as the derived-key `context`, so a blob only decrypts for its own volume.
//! The key must be created with `derived=true` (Vault refuses a context
//! otherwise, and the plugin says so). Rotating the Transit key keeps old
//! blobs decrypting; the host's `rewrap` moves a blob to the newest version.

use crate::config::VaultConfig;
use crate::kv::{check, send};
use base64::Engine as _;
use kmshost_plugin_sdk::http::Request;
use kmshost_plugin_sdk::{KmsError, Result, cache, invalid_config};
use zeroize::Zeroizing;

fn b64_encode(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn b64_decode(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(s).ok()
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
    #[derive(serde::Serialize)]
    struct Encrypt<'a> {
        plaintext: &'a str,
        context: &'a str,
    }
    let plaintext = Zeroizing::new(b64_encode(plaintext));
    let body = Zeroizing::new(
        serde_json::to_vec(&Encrypt {
            plaintext: &plaintext,
            context: &b64_encode(key_id.as_bytes()),
        })
        .map_err(|_| KmsError::Other("cannot encode".into()))?,
    );
    let resp = send(cfg, || {
        Request::post(format!("{}{path}", cfg.address))
            .header("content-type", "application/json")
            .body(body.to_vec())
    })?;
    let resp =
        check(resp, &format!("encrypting with {mount}/{key}")).map_err(|e| key_error(cfg, e))?;
    #[derive(serde::Deserialize)]
    struct Encrypted {
        data: Option<Ciphertext>,
    }
    #[derive(serde::Deserialize)]
    struct Ciphertext {
        ciphertext: Option<String>,
    }
    let v: Encrypted = resp.json()?;
    let ct = v
        .data
        .and_then(|d| d.ciphertext)
        .ok_or_else(|| KmsError::Other("Transit returned no ciphertext".into()))?;
    Ok(ct.into_bytes())
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
