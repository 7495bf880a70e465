//! Logging in, and keeping the token between calls in the host's cache so
//! one login serves many operations.

use crate::config::{Auth, VaultConfig};
use kmshost_plugin_sdk::http::Request;
use kmshost_plugin_sdk::{KmsError, Result, SERVICE_ACCOUNT_SECRET, cache, secret_string};
use zeroize::Zeroizing;

const TOKEN_CACHE_KEY: &str = "vault-token";

/// A token for the next request.
pub fn token(cfg: &VaultConfig) -> Result<Zeroizing<String>> {
    match &cfg.auth {
        Auth::Token { secret } => Ok(Zeroizing::new(secret_string(secret, "token")?)),
        Auth::Kubernetes { login_path, role } => match cache::token(TOKEN_CACHE_KEY)? {
            Some(t) => Ok(t),
            None => login_kubernetes(cfg, login_path, role),
        },
    }
}

/// Forgets a cached token the server refused (expired or revoked); returns
/// whether there was one to forget (so a retry can log in again).
pub fn forget(cfg: &VaultConfig) -> bool {
    match cfg.auth {
        Auth::Kubernetes { .. } => cache::forget(TOKEN_CACHE_KEY),
        Auth::Token { .. } => false,
    }
}

fn login_kubernetes(cfg: &VaultConfig, login_path: &str, role: &str) -> Result<Zeroizing<String>> {
    let jwt = Zeroizing::new(secret_string(SERVICE_ACCOUNT_SECRET, "token")?);
    let body = Zeroizing::new(
        serde_json::to_vec(&serde_json::json!({"role": role, "jwt": jwt.as_str()}))
            .map_err(|_| KmsError::Other("cannot encode the login request".into()))?,
    );
    let mut req = Request::post(format!("{}{login_path}", cfg.address))
        .header("content-type", "application/json")
        .header("x-vault-request", "true")
        .timeout_secs(cfg.timeout_secs)
        .body(body.to_vec());
    if let Some(ns) = &cfg.auth_namespace {
        req = req.header("x-vault-namespace", ns);
    }
    let resp = crate::kv::check(req.send()?, &format!("Kubernetes login (role {role})"))?;
    #[derive(serde::Deserialize)]
    struct Login {
        auth: AuthInfo,
    }
    #[derive(serde::Deserialize)]
    struct AuthInfo {
        client_token: String,
        #[serde(default)]
        lease_duration: u64,
    }
    let login: Login = resp.json()?;
    let token = Zeroizing::new(login.auth.client_token);
    // Renew well before expiry: cache for the lease less a minute (or a
    // tenth of it for short leases).
    let lease = login.auth.lease_duration;
    let ttl = match lease {
        0 => 300,
        l if l > 600 => l - 60,
        l => (l * 9 / 10).max(1),
    };
    cache::set(
        TOKEN_CACHE_KEY,
        token.as_bytes(),
        ttl.min(u32::MAX as u64) as u32,
    );
    Ok(token)
}
