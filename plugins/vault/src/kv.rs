//! The KV secrets engine, v1 and v2, laid out as ceph-csi lays it out.

use crate::auth;
use crate::config::{KvVersion, VaultConfig};
use kmshost_plugin_sdk::http::{Request, Response};
use kmshost_plugin_sdk::{KmsError, Result};
use zeroize::Zeroizing;

fn secret_path(cfg: &VaultConfig, kind: &str, key_id: &str) -> String {
    let mut p = format!("/v1/{}/", cfg.mount);
    if cfg.kv == KvVersion::V2 {
        p.push_str(kind);
        p.push('/');
    }
    if !cfg.prefix.is_empty() {
        p.push_str(&cfg.prefix);
        p.push('/');
    }
    p.push_str(key_id);
    p
}

/// Maps Vault's answers to errors, with Vault's own diagnostics (which carry
/// no secrets) and a clear word for a sealed Vault.
pub fn check(resp: Response, what: &str) -> Result<Response> {
    if resp.status == 503 && String::from_utf8_lossy(&resp.body).contains("sealed") {
        return Err(KmsError::Unavailable(format!("{what}: Vault is sealed")));
    }
    resp.error_for_status(what)
}

/// Sends a request built by `build` with a token, logging in again once if
/// a cached token was refused.
pub fn send(cfg: &VaultConfig, build: impl Fn() -> Request) -> Result<Response> {
    for attempt in 0..2 {
        let token = auth::token(cfg)?;
        let mut req = build()
            .header("x-vault-token", token.as_bytes())
            .header("x-vault-request", "true")
            .timeout_secs(cfg.timeout_secs);
        if let Some(ns) = &cfg.namespace {
            req = req.header("x-vault-namespace", ns);
        }
        let resp = req.send()?;
        if resp.status == 403 && attempt == 0 && auth::forget(cfg) {
            continue;
        }
        return Ok(resp);
    }
    unreachable!("the loop returns on its second pass")
}

/// Reads the passphrase stored for `key_id`.
pub fn get(cfg: &VaultConfig, key_id: &str) -> Result<Vec<u8>> {
    let path = secret_path(cfg, "data", key_id);
    let what = format!("reading {path}");
    let resp = send(cfg, || Request::get(format!("{}{path}", cfg.address)))?;
    if resp.status == 404 {
        return Err(KmsError::NotFound(format!(
            "{what}: no key stored for {key_id}"
        )));
    }
    let resp = check(resp, &what)?;
    // Typed, so only the passphrase is kept (serde skips the rest).
    #[derive(serde::Deserialize)]
    struct Data<T> {
        data: Option<T>,
    }
    #[derive(serde::Deserialize)]
    struct Stored {
        passphrase: Option<String>,
    }
    let stored = match cfg.kv {
        KvVersion::V1 => resp.json::<Data<Data<Stored>>>()?.data.and_then(|d| d.data),
        KvVersion::V2 => resp
            .json::<Data<Data<Data<Stored>>>>()?
            .data
            .and_then(|d| d.data)
            .and_then(|d| d.data),
    };
    let pass = stored.and_then(|s| s.passphrase).ok_or_else(|| {
        KmsError::Integrity(format!("{what}: no passphrase in the stored secret"))
    })?;
    Ok(pass.into_bytes())
}

/// Stores `key` for `key_id`, replacing any previous value.
pub fn put(cfg: &VaultConfig, key_id: &str, key: &[u8]) -> Result<()> {
    let pass = std::str::from_utf8(key).map_err(|_| {
        KmsError::Other("Vault stores passphrases as text; this key is not UTF-8".into())
    })?;
    // Serialized straight from the borrowed key into a zeroizing buffer: no
    // intermediate JSON value keeps a copy.
    #[derive(serde::Serialize)]
    struct Passphrase<'a> {
        passphrase: &'a str,
    }
    #[derive(serde::Serialize)]
    struct Data<T> {
        data: T,
    }
    let inner = Data {
        data: Passphrase { passphrase: pass },
    };
    let body = match cfg.kv {
        KvVersion::V1 => serde_json::to_vec(&inner),
        KvVersion::V2 => serde_json::to_vec(&Data { data: inner }),
    };
    let body = Zeroizing::new(body.map_err(|_| KmsError::Other("cannot encode".into()))?);
    let path = secret_path(cfg, "data", key_id);
    let what = format!("writing {path}");
    let resp = send(cfg, || {
        Request::post(format!("{}{path}", cfg.address))
            .header("content-type", "application/json")
            .body(body.to_vec())
    })?;
    check(resp, &what)?;
    Ok(())
}

/// Deletes the key: on KV v2 all versions and metadata when
/// `vaultDestroyKeys` is true (the default), else a soft delete of the
/// latest version. A missing key is not an error.
pub fn delete(cfg: &VaultConfig, key_id: &str) -> Result<()> {
    let kind = if cfg.destroy_keys { "metadata" } else { "data" };
    let path = secret_path(cfg, kind, key_id);
    let what = format!("deleting {path}");
    let resp = send(cfg, || Request::delete(format!("{}{path}", cfg.address)))?;
    if resp.status == 404 {
        return Ok(());
    }
    check(resp, &what)?;
    Ok(())
}
