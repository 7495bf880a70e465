//! IAM: the API key is exchanged for a bearer token at the token URL, and
//! the token is kept in the host's cache until shortly before it expires,
//! so one exchange serves every operation of its lifetime.

use crate::config::KpConfig;
use kmshost_plugin_sdk::encoding::form_urlencoded;
use kmshost_plugin_sdk::http::Request;
use kmshost_plugin_sdk::{KmsError, Result, cache};
use zeroize::Zeroizing;

/// The cache entry holding the bearer token.
pub const TOKEN_CACHE_KEY: &str = "iam-token";
/// The grant type of an API-key exchange.
const GRANT_TYPE: &str = "urn:ibm:params:oauth:grant-type:apikey";

/// A bearer token for the next request: the cached one, or a new one.
pub fn token(cfg: &KpConfig) -> Result<Zeroizing<String>> {
    if let Some(t) = cache::get(TOKEN_CACHE_KEY) {
        return Ok(Zeroizing::new(String::from_utf8(t)?));
    }
    exchange(cfg)
}

/// Forgets the cached token (Key Protect refused it); returns whether
/// there was one, so the caller retries once with a new token.
pub fn forget() -> bool {
    let had = cache::get(TOKEN_CACHE_KEY).is_some();
    cache::remove(TOKEN_CACHE_KEY);
    had
}

fn exchange(cfg: &KpConfig) -> Result<Zeroizing<String>> {
    let api_key = cfg.api_key()?;
    let body = Zeroizing::new(form_urlencoded([
        ("grant_type", GRANT_TYPE),
        ("apikey", api_key.as_str()),
    ]));
    let resp = Request::post(&cfg.token_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .timeout_secs(cfg.timeout_secs)
        .body(body.as_bytes().to_vec())
        .send()?;
    let what = format!("IAM token exchange at {}", cfg.token_url);
    match resp.status {
        200..=299 => {}
        400 | 401 | 403 => {
            return Err(KmsError::Denied(format!(
                "{what}: HTTP {}: {}",
                resp.status,
                iam_error(&resp.body)
            )));
        }
        _ => {
            return Err(resp
                .error_for_status(&what)
                .err()
                .unwrap_or(KmsError::Other(what)));
        }
    }
    resp.bearer_token(TOKEN_CACHE_KEY, &what)
}

/// IAM's error text (`errorMessage`, `errorCode`), never the request.
fn iam_error(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct IamError {
        #[serde(default, rename = "errorCode")]
        code: String,
        #[serde(default, rename = "errorMessage")]
        message: String,
    }
    match serde_json::from_slice::<IamError>(body) {
        Ok(e) if !e.message.is_empty() => format!("{} {}", e.code, e.message).trim().to_string(),
        _ => "the API key was refused".into(),
    }
}
