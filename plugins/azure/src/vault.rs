//! Key Vault secrets, as ceph-csi's `azure-kv` keeps passphrases: one
//! secret per volume, named after the volume ID, its value the passphrase
//! text. Put is Set Secret (a new version), get is Get Secret (the latest
//! version), delete is Delete Secret — a soft delete, never a purge, like
//! ceph-csi, and idempotent.
//!
//! Every request carries the cached token; a 401 challenge means it was
//! refused, so the token is dropped and the request sent once more after a
//! new login. A throttled (429) or failing (5xx) request is retried once,
//! after `retry-after` (at most two seconds). A secret name still held by
//! a soft-deleted secret (409) is recovered, then set.

use crate::config::{AzureConfig, secret_name};
use crate::login;
use kmshost_plugin_sdk::http::{Method, Request, Response};
use kmshost_plugin_sdk::{KmsError, Result, pause};
use zeroize::Zeroizing;

/// What a request is, for messages and the error mapping.
struct Call {
    method: Method,
    path: String,
    body: Zeroizing<Vec<u8>>,
    what: String,
}

/// Stores `passphrase` as the secret named `key_id`.
pub fn put(cfg: &AzureConfig, key_id: &str, passphrase: &[u8]) -> Result<()> {
    let name = secret_name(key_id)?;
    let value = std::str::from_utf8(passphrase).map_err(|_| {
        KmsError::Other("Key Vault keeps passphrases as text; this key is not UTF-8".into())
    })?;
    let body = serde_json::to_vec(&serde_json::json!({ "value": value }))
        .map_err(|_| KmsError::Other("cannot encode the secret".into()))?;
    let set = Call {
        method: Method::Put,
        path: format!("secrets/{name}"),
        body: Zeroizing::new(body),
        what: format!("set secret {name}"),
    };
    match send(cfg, &set) {
        Err(Deleted) => {
            recover(cfg, name)?;
            send_after_recovery(cfg, &set)
        }
        Err(Recovering) => send_after_recovery(cfg, &set),
        other => other.map_err(into_kms).map(drop),
    }
}

/// The passphrase kept in the secret named `key_id`.
pub fn get(cfg: &AzureConfig, key_id: &str) -> Result<Vec<u8>> {
    let name = secret_name(key_id)?;
    let call = Call {
        method: Method::Get,
        path: format!("secrets/{name}"),
        body: Zeroizing::new(Vec::new()),
        what: format!("get secret {name}"),
    };
    let resp = send(cfg, &call).map_err(into_kms)?;
    #[derive(serde::Deserialize)]
    struct Bundle {
        value: Option<String>,
    }
    let b: Bundle = resp.json()?;
    let v = Zeroizing::new(b.value.unwrap_or_default());
    if v.is_empty() {
        return Err(KmsError::Integrity(format!(
            "{}: the secret has no value",
            call.what
        )));
    }
    Ok(v.as_bytes().to_vec())
}

/// Soft-deletes the secret named `key_id`; a secret already gone is fine.
pub fn delete(cfg: &AzureConfig, key_id: &str) -> Result<()> {
    let name = secret_name(key_id)?;
    let call = Call {
        method: Method::Delete,
        path: format!("secrets/{name}"),
        body: Zeroizing::new(Vec::new()),
        what: format!("delete secret {name}"),
    };
    match send(cfg, &call) {
        Ok(_) => Ok(()),
        Err(Failed(KmsError::NotFound(_))) => Ok(()),
        Err(e) => Err(into_kms(e)),
    }
}

/// Recovers the soft-deleted secret `name`, so it can be set again.
fn recover(cfg: &AzureConfig, name: &str) -> Result<()> {
    let call = Call {
        method: Method::Post,
        path: format!("deletedsecrets/{name}/recover"),
        body: Zeroizing::new(Vec::new()),
        what: format!(
            "recover soft-deleted secret {name} (its name is taken until it is recovered or purged; the app needs the secret recover permission)"
        ),
    };
    send(cfg, &call).map_err(into_kms).map(drop)
}

/// Recovery takes a moment on the real service (the name answers 409
/// `ObjectIsBeingRecovered` meanwhile): set, a few times.
fn send_after_recovery(cfg: &AzureConfig, set: &Call) -> Result<()> {
    for _ in 0..4 {
        match send(cfg, set) {
            Err(Deleted | Recovering) | Err(Failed(KmsError::NotFound(_))) => pause(500),
            other => return other.map_err(into_kms).map(drop),
        }
    }
    send(cfg, set).map_err(into_kms).map(drop)
}

/// How a request failed.
enum Failure {
    /// 409: the name belongs to a soft-deleted secret.
    Deleted,
    /// 409: the secret is being recovered; it is usable in a moment.
    Recovering,
    /// Anything else, as the contract's error.
    Failed(KmsError),
}
use Failure::{Deleted, Failed, Recovering};

fn into_kms(f: Failure) -> KmsError {
    match f {
        Deleted => KmsError::Other("the secret is soft-deleted".into()),
        Recovering => KmsError::Unavailable("the secret is still being recovered".into()),
        Failed(e) => e,
    }
}

fn send(cfg: &AzureConfig, call: &Call) -> core::result::Result<Response, Failure> {
    let (mut relogged, mut retried) = (false, false);
    loop {
        let resp = send_once(cfg, call).map_err(Failed)?;
        match resp.status {
            200..=299 => return Ok(resp),
            401 if !relogged => {
                login::forget();
                relogged = true;
            }
            429 | 500..=599 if !retried => {
                retried = true;
                pause(resp.retry_after_ms(2000));
            }
            409 => match error_code(&resp.body).as_deref() {
                Some(c) if c.contains("BeingRecovered") => return Err(Recovering),
                Some(c) if c.contains("Deleted") => return Err(Deleted),
                _ => return Err(Failed(error(cfg, &resp, &call.what))),
            },
            _ => return Err(Failed(error(cfg, &resp, &call.what))),
        }
    }
}

fn send_once(cfg: &AzureConfig, call: &Call) -> Result<Response> {
    let token = login::token(cfg)?;
    let bearer = Zeroizing::new(format!("Bearer {}", token.as_str()));
    let mut req = Request::new(call.method, cfg.vault(&call.path))
        .header("authorization", bearer.as_bytes())
        .header("accept", "application/json")
        .timeout_secs(cfg.timeout_secs);
    if !call.body.is_empty() {
        req = req
            .header("content-type", "application/json")
            .body(call.body.to_vec());
    }
    req.send()
}

/// The contract's error for a Key Vault error response, naming the vault,
/// the operation and the service's code; never the token.
fn error(cfg: &AzureConfig, resp: &Response, what: &str) -> KmsError {
    let (code, message) = error_body(&resp.body);
    let mut msg = format!(
        "Azure Key Vault {}: {what}: HTTP {}",
        cfg.vault_url, resp.status
    );
    if !code.is_empty() {
        msg.push_str(&format!(": {code}"));
    }
    if !message.is_empty() {
        msg.push_str(&format!(": {message}"));
    }
    if resp.status == 401
        && let Some(c) = resp.header("www-authenticate")
    {
        msg.push_str(&format!(" (challenge: {})", printable(&c, 300)));
    }
    match resp.status {
        401 => KmsError::Denied(msg),
        403 => KmsError::Denied(format!(
            "{msg} (the app needs secret get, set and delete: an access policy, or the Key Vault Secrets Officer role)"
        )),
        404 => KmsError::NotFound(msg),
        408 | 429 | 500..=599 => KmsError::Unavailable(msg),
        _ => KmsError::Other(msg),
    }
}

fn error_code(body: &[u8]) -> Option<String> {
    let (code, _) = error_body(body);
    (!code.is_empty()).then_some(code)
}

/// `{"error":{"code","message","innererror":{"code"}}}`: the innermost
/// code and the message, short and printable.
fn error_body(body: &[u8]) -> (String, String) {
    #[derive(serde::Deserialize, Default)]
    struct Envelope {
        #[serde(default)]
        error: Option<Inner>,
    }
    #[derive(serde::Deserialize, Default)]
    struct Inner {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
        #[serde(default)]
        innererror: Option<Box<Inner>>,
    }
    let Some(e) = serde_json::from_slice::<Envelope>(body)
        .ok()
        .and_then(|e| e.error)
    else {
        return (String::new(), String::new());
    };
    let code = match &e.innererror {
        Some(i) if !i.code.is_empty() => i.code.clone(),
        _ => e.code.clone(),
    };
    (printable(&code, 64), printable(&e.message, 300))
}

fn printable(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect::<String>()
        .trim()
        .to_string()
}
