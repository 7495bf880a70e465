//! Entra ID login with a client certificate (OAuth 2.0 client credentials
//! with a JWT client assertion): the assertion is built here and signed by
//! the host with the certificate's key (`signing` import, contract 0.1.4),
//! exchanged at the tenant's token endpoint, and the access token is kept
//! in the host's cache until shortly before it expires — one login per
//! token lifetime.

use crate::config::AzureConfig;
use kmshost_plugin_sdk::bindings::kmshost::plugin::signing::Algorithm;
use kmshost_plugin_sdk::encoding::{b64url_encode, form_urlencoded};
use kmshost_plugin_sdk::http::login_for_token;
use kmshost_plugin_sdk::{KmsError, Result, cache, signing};
use zeroize::Zeroizing;

/// The cache entry holding the access token.
pub const TOKEN_CACHE_KEY: &str = "entra-token";
/// `client_assertion_type` of a JWT client assertion (RFC 7523).
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How long an assertion is valid, in seconds (MSAL's ten minutes).
pub const ASSERTION_LIFETIME: u64 = 600;

/// A bearer token for the next request: the cached one, or a new one.
pub fn token(cfg: &AzureConfig) -> Result<Zeroizing<String>> {
    match cache::token(TOKEN_CACHE_KEY)? {
        Some(t) => Ok(t),
        None => login(cfg),
    }
}

/// Forgets the cached token (Key Vault refused it); returns whether there
/// was one, so the caller logs in again once.
pub fn forget() -> bool {
    cache::forget(TOKEN_CACHE_KEY)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A random `jti`: a UUID v4.
fn jti() -> String {
    let mut b = [0u8; 16];
    // Without randomness the assertion would repeat: refuse instead.
    if getrandom::fill(&mut b).is_err() {
        return String::new();
    }
    kmshost_plugin_sdk::encoding::uuid_v4(b)
}

/// The signed client assertion for one login.
pub fn assertion(cfg: &AzureConfig) -> Result<String> {
    let cert = signing::certificate(&cfg.cert)?;
    let jti = jti();
    if jti.is_empty() {
        return Err(KmsError::Other(
            "no randomness for the assertion's jti".into(),
        ));
    }
    let now = now();
    let claims = serde_json::json!({
        "aud": cfg.token_url,
        "iss": cfg.client_id,
        "sub": cfg.client_id,
        "jti": jti,
        "nbf": now,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME,
    });
    let claims = b64url_encode(claims.to_string().as_bytes());
    let mut thumbprints = cert;
    // Once more if the certificate was renewed between the two calls.
    for _ in 0..2 {
        let header = match cfg.algorithm {
            Algorithm::Rs256 => {
                serde_json::json!({"alg": "RS256", "typ": "JWT", "x5t": thumbprints.x5t})
            }
            Algorithm::Ps256 => {
                serde_json::json!({"alg": "PS256", "typ": "JWT", "x5t#S256": thumbprints.x5t_s256})
            }
        };
        let input = format!("{}.{claims}", b64url_encode(header.to_string().as_bytes()));
        let signed = signing::sign(&cfg.cert, cfg.algorithm, input.as_bytes())?;
        if signed.certificate.x5t_s256 == thumbprints.x5t_s256 {
            return Ok(format!("{input}.{}", b64url_encode(&signed.signature)));
        }
        thumbprints = signed.certificate;
    }
    Err(KmsError::Unavailable(format!(
        "certificate {} changed while the login assertion was signed; try again",
        cfg.cert
    )))
}

fn login(cfg: &AzureConfig) -> Result<Zeroizing<String>> {
    let assertion = Zeroizing::new(assertion(cfg)?);
    let body = Zeroizing::new(form_urlencoded([
        ("client_id", cfg.client_id.as_str()),
        ("scope", cfg.scope.as_str()),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", assertion.as_str()),
        ("grant_type", "client_credentials"),
    ]));
    let what = format!(
        "Entra ID login of client {} in tenant {}",
        cfg.client_id, cfg.tenant_id
    );
    login_for_token(
        &cfg.token_url,
        &body,
        cfg.timeout_secs,
        TOKEN_CACHE_KEY,
        &what,
        entra_error,
    )
}

/// Entra ID's error (`error`, `error_description`: the AADSTS code says
/// why), short and printable; never the request.
fn entra_error(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct EntraError {
        #[serde(default)]
        error: String,
        #[serde(default)]
        error_description: String,
    }
    match serde_json::from_slice::<EntraError>(body) {
        Ok(e) if !e.error.is_empty() => {
            // The description's first line carries the AADSTS code and why;
            // the rest is trace and correlation IDs.
            let first = e.error_description.lines().next().unwrap_or_default();
            let text: String = format!("{} {first}", e.error)
                .chars()
                .filter(|c| !c.is_control())
                .take(400)
                .collect();
            text.trim().to_string()
        }
        _ => "the client assertion was refused".into(),
    }
}
