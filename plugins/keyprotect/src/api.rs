//! Requests to the Key Protect API (`{base}/api/v2/...`): the headers every
//! request carries, one re-login when the token is refused, one bounded
//! retry when throttled, and the service's error envelope turned into the
//! contract's errors — each naming the instance and the key, never the API
//! key or the token.

use crate::config::KpConfig;
use crate::iam;
use kmshost_plugin_sdk::http::{Method, Request, Response};
use kmshost_plugin_sdk::{KmsError, Result, pause};
use zeroize::Zeroizing;

/// What a request does, for the error mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `keys/{id}/actions/wrap`.
    Wrap,
    /// `keys/{id}/actions/unwrap`: a refused ciphertext is an integrity
    /// failure (altered, or bound to another volume).
    Unwrap,
    /// Creating, reading, listing or deleting keys.
    Manage,
}

/// One API request.
pub struct Call<'a> {
    /// The method.
    pub method: Method,
    /// The path under `/api/v2/`.
    pub path: String,
    /// `content-type` of the body.
    pub content_type: &'a str,
    /// The body (may hold a key: zeroized).
    pub body: Zeroizing<Vec<u8>>,
    /// More headers (`prefer`).
    pub headers: Vec<(&'a str, &'a str)>,
    /// What it is, for messages: "wrap with root key k1".
    pub what: String,
    /// For the error mapping.
    pub action: Action,
}

impl Call<'_> {
    /// A call without a body.
    pub fn new(method: Method, path: String, what: String, action: Action) -> Self {
        Call {
            method,
            path,
            content_type: "",
            body: Zeroizing::new(Vec::new()),
            headers: Vec::new(),
            what,
            action,
        }
    }
}

/// Sends `call` and returns a 2xx response.
pub fn send(cfg: &KpConfig, call: &Call<'_>) -> Result<Response> {
    let (mut relogged, mut throttled) = (false, false);
    loop {
        let resp = send_once(cfg, call)?;
        match resp.status {
            200..=299 => return Ok(resp),
            // The cached token expired early or was revoked: log in again once.
            401 if !relogged && iam::forget() => relogged = true,
            429 if !throttled => {
                throttled = true;
                pause(resp.retry_after_ms(2000));
            }
            _ => return Err(error(cfg, &resp, &call.what, call.action)),
        }
    }
}

fn send_once(cfg: &KpConfig, call: &Call<'_>) -> Result<Response> {
    let token = iam::token(cfg)?;
    let bearer = Zeroizing::new(format!("Bearer {}", token.as_str()));
    let mut req = Request::new(call.method, cfg.api(&call.path))
        .header("authorization", bearer.as_bytes())
        .header("bluemix-instance", &cfg.instance_id)
        .header("correlation-id", correlation_id())
        .header("accept", "application/json")
        .timeout_secs(cfg.timeout_secs);
    if let Some(ring) = &cfg.key_ring {
        req = req.header("x-kms-key-ring", ring);
    }
    if !call.content_type.is_empty() {
        req = req
            .header("content-type", call.content_type)
            .body(call.body.to_vec());
    }
    for (k, v) in &call.headers {
        req = req.header(k, v);
    }
    req.send()
}

/// A fresh correlation ID (a UUID v4), so the service's logs and ours meet.
fn correlation_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        b = [0; 16];
    }
    kmshost_plugin_sdk::encoding::uuid_v4(b)
}

/// The contract's error for a Key Protect error response.
pub fn error(cfg: &KpConfig, resp: &Response, what: &str, action: Action) -> KmsError {
    let reason = reason(&resp.body);
    let msg = format!(
        "Key Protect instance {}: {what}: HTTP {}{reason}",
        cfg.instance_id, resp.status
    );
    match (resp.status, action) {
        (401 | 403, _) => KmsError::Denied(msg),
        (404, _) => KmsError::NotFound(msg),
        // The root key was deleted, or is disabled or not yet active:
        // retrying cannot help.
        (410, _) | (409, Action::Wrap | Action::Unwrap) => KmsError::Integrity(msg),
        (400 | 422, Action::Unwrap) => KmsError::Integrity(msg),
        (408 | 429 | 500..=599, _) => KmsError::Unavailable(msg),
        _ => KmsError::Other(msg),
    }
}

/// `: CODE: message` from the error envelope
/// (`resources[0].reasons[0]`, or `errorMsg`), short and printable.
fn reason(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(default)]
        resources: Vec<ErrorResource>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorResource {
        #[serde(default, rename = "errorMsg")]
        error_msg: String,
        #[serde(default)]
        reasons: Vec<Reason>,
    }
    #[derive(serde::Deserialize)]
    struct Reason {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let Ok(e) = serde_json::from_slice::<Envelope>(body) else {
        return String::new();
    };
    let Some(r) = e.resources.first() else {
        return String::new();
    };
    let text = match r.reasons.first() {
        Some(x) if !x.code.is_empty() => format!("{}: {}", x.code, x.message),
        _ => r.error_msg.clone(),
    };
    let text: String = text.chars().filter(|c| !c.is_control()).take(300).collect();
    if text.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", text.trim())
    }
}
