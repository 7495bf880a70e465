//! IAM: the API key is exchanged for a bearer token at the token URL, and
//! the token is kept in the host's cache until shortly before it expires,
//! so one exchange serves every operation of its lifetime.

use crate::config::KpConfig;
use kmshost_plugin_sdk::encoding::form_urlencoded;
use kmshost_plugin_sdk::http::login_for_token;
use kmshost_plugin_sdk::{Result, cache};
use zeroize::Zeroizing;

/// The cache entry holding the bearer token.
pub const TOKEN_CACHE_KEY: &str = "iam-token";
/// The grant type of an API-key exchange.
const GRANT_TYPE: &str = "urn:ibm:params:oauth:grant-type:apikey";

/// A bearer token for the next request: the cached one, or a new one.
pub fn token(cfg: &KpConfig) -> Result<Zeroizing<String>> {
    match cache::token(TOKEN_CACHE_KEY)? {
        Some(t) => Ok(t),
        None => exchange(cfg),
    }
}

/// Forgets the cached token (Key Protect refused it); returns whether
/// there was one, so the caller retries once with a new token.
pub fn forget() -> bool {
    cache::forget(TOKEN_CACHE_KEY)
}

fn exchange(cfg: &KpConfig) -> Result<Zeroizing<String>> {
    let api_key = cfg.api_key()?;
    let body = Zeroizing::new(form_urlencoded([
        ("grant_type", GRANT_TYPE),
        ("apikey", api_key.as_str()),
    ]));
    let what = format!("IAM token exchange at {}", cfg.token_url);
    login_for_token(
        &cfg.token_url,
        &body,
        cfg.timeout_secs,
        TOKEN_CACHE_KEY,
        &what,
        iam_error,
    )
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
