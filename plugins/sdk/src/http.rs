//! A small blocking HTTP client.
//!
//! The host decides where a request may go (the kmsID's allow-list) and does
//! TLS itself, so a plugin simply names an `https://` URL. Statuses map to
//! [`KmsError`] cases with [`Response::error_for_status`].
//!
//! [`Request::send`] goes through `kmshost:plugin/outbound-http`: one host
//! call per exchange. [`Request::send_wasi`] goes through the standard
//! `wasi:http/outgoing-handler` under the same policy (about twenty resource
//! calls per exchange); both give the same results.

use crate::bindings::kmshost::plugin::outbound_http;
use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingResponse, Method as WasiMethod, OutgoingBody,
    OutgoingRequest, RequestOptions, Scheme,
};
use crate::bindings::wasi::io::streams::StreamError;
use crate::{KmsError, Result};
use zeroize::Zeroize;

/// How long to wait for a connection and for the first byte (nanoseconds).
const DEFAULT_TIMEOUT_NS: u64 = 10_000_000_000;

/// HTTP methods the SDK speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// POST
    Post,
    /// PUT
    Put,
    /// DELETE
    Delete,
    /// PATCH
    Patch,
    /// LIST (Vault's extension method)
    List,
}

/// An outbound request under construction.
///
/// Its headers (a token) and body (a key to wrap) may be secret: `Debug`
/// shows the method, the URL without its query, header names and the body's
/// length only, and both are zeroized when the request is dropped or sent.
#[derive(Clone)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    timeout_ns: u64,
}

/// A received response with its whole body.
#[derive(Clone)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Response headers (lower-case names).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Response {
    // The body may carry key material: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl Drop for Response {
    // A KV read or a Transit decrypt returns a key in the body.
    fn drop(&mut self) {
        self.body.zeroize();
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &self.url.split('?').next().unwrap_or(""))
            .field("headers", &names)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        zeroize_parts(&mut self.headers, &mut self.body);
    }
}

fn zeroize_parts(headers: &mut [(String, Vec<u8>)], body: &mut Vec<u8>) {
    for (_, v) in headers.iter_mut() {
        v.zeroize();
    }
    body.zeroize();
}

impl Request {
    /// A request with `method` to `url` (`http://` or `https://`).
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Request {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout_ns: DEFAULT_TIMEOUT_NS,
        }
    }
    /// A GET request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new(Method::Get, url)
    }
    /// A POST request.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new(Method::Post, url)
    }
    /// A PUT request.
    pub fn put(url: impl Into<String>) -> Self {
        Self::new(Method::Put, url)
    }
    /// A DELETE request.
    pub fn delete(url: impl Into<String>) -> Self {
        Self::new(Method::Delete, url)
    }
    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.as_ref().to_vec()));
        self
    }
    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
    /// Sets a JSON body and the content-type header.
    pub fn json<T: serde::Serialize>(self, value: &T) -> Result<Self> {
        let body = serde_json::to_vec(value)
            .map_err(|e| KmsError::Other(format!("cannot encode request: {e}")))?;
        Ok(self.header("content-type", "application/json").body(body))
    }
    /// Sets the connect and first-byte timeout.
    pub fn timeout_secs(mut self, secs: u64) -> Self {
        self.timeout_ns = secs.saturating_mul(1_000_000_000);
        self
    }

    /// Sends the request and reads the whole response (one host call).
    pub fn send(mut self) -> Result<Response> {
        let method = match self.method {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::List => "LIST",
        };
        let timeout_ms = (self.timeout_ns / 1_000_000).min(u32::MAX as u64) as u32;
        let headers = std::mem::take(&mut self.headers)
            .into_iter()
            .filter(|(n, _)| n != "content-length")
            .collect();
        let mut req = outbound_http::Request {
            method: method.into(),
            url: std::mem::take(&mut self.url),
            headers,
            body: std::mem::take(&mut self.body),
            timeout_ms,
        };
        let sent = crate::host::http_send(&req);
        zeroize_parts(&mut req.headers, &mut req.body);
        let mut resp = sent?;
        Ok(Response {
            status: resp.status,
            headers: std::mem::take(&mut resp.headers),
            body: std::mem::take(&mut resp.body),
        })
    }

    /// Sends the request through `wasi:http/outgoing-handler` and reads the
    /// whole response.
    pub fn send_wasi(self) -> Result<Response> {
        if cfg!(not(target_arch = "wasm32")) {
            return self.send(); // the mock host answers both exits alike
        }
        self.send_wasi_import()
    }

    fn send_wasi_import(self) -> Result<Response> {
        let req = self.wasi_request()?;
        let options = RequestOptions::new();
        let _ = options.set_connect_timeout(Some(self.timeout_ns));
        let _ = options.set_first_byte_timeout(Some(self.timeout_ns));
        let _ = options.set_between_bytes_timeout(Some(self.timeout_ns));
        let future = outgoing_handler::handle(req, Some(options))
            .map_err(|e| map_error_code(&self.url, e))?;
        let incoming = loop {
            match future.get() {
                Some(result) => break result,
                None => future.subscribe().block(),
            }
        };
        let resp = incoming
            .map_err(|_| KmsError::Other("response already taken".into()))?
            .map_err(|e| map_error_code(&self.url, e))?;
        read_wasi_response(resp)
    }

    /// The `wasi:http` request: method, URL parts, headers (with a declared
    /// length, so the host sends a plain body, or none when it is empty),
    /// and the body written and finished.
    fn wasi_request(&self) -> Result<OutgoingRequest> {
        let (scheme, authority, path) = split_url(&self.url)?;
        let headers = Fields::new();
        for (name, value) in &self.headers {
            headers
                .append(name, value)
                .map_err(|e| KmsError::Other(format!("bad header {name}: {e:?}")))?;
        }
        if !self.body.is_empty() && !self.headers.iter().any(|(n, _)| n == "content-length") {
            headers
                .append("content-length", self.body.len().to_string().as_bytes())
                .map_err(|e| KmsError::Other(format!("bad header content-length: {e:?}")))?;
        }
        let req = OutgoingRequest::new(headers);
        let method = match self.method {
            Method::Get => WasiMethod::Get,
            Method::Post => WasiMethod::Post,
            Method::Put => WasiMethod::Put,
            Method::Delete => WasiMethod::Delete,
            Method::Patch => WasiMethod::Patch,
            Method::List => WasiMethod::Other("LIST".into()),
        };
        let bad = |what: &str| KmsError::Other(format!("invalid request {what}"));
        req.set_method(&method).map_err(|_| bad("method"))?;
        req.set_scheme(Some(&scheme)).map_err(|_| bad("scheme"))?;
        req.set_authority(Some(authority))
            .map_err(|_| bad("authority"))?;
        req.set_path_with_query(Some(path))
            .map_err(|_| bad("path"))?;
        if !self.body.is_empty() {
            let body = req.body().map_err(|_| bad("body"))?;
            {
                let stream = body.write().map_err(|_| bad("body stream"))?;
                for chunk in self.body.chunks(4096) {
                    stream
                        .blocking_write_and_flush(chunk)
                        .map_err(|e| stream_error("sending the request body", e))?;
                }
            }
            OutgoingBody::finish(body, None).map_err(|e| map_error_code(&self.url, e))?;
        }
        Ok(req)
    }
}

/// Status, headers (names lower-cased) and the whole body of a `wasi:http`
/// response.
fn read_wasi_response(resp: IncomingResponse) -> Result<Response> {
    let status = resp.status();
    let headers = resp
        .headers()
        .entries()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let incoming_body = resp
        .consume()
        .map_err(|_| KmsError::Other("response body already taken".into()))?;
    let mut body = Vec::new();
    {
        let stream = incoming_body
            .stream()
            .map_err(|_| KmsError::Other("response body stream already taken".into()))?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(e) => return Err(stream_error("reading the response body", e)),
            }
        }
    }
    let _trailers = IncomingBody::finish(incoming_body);
    Ok(Response {
        status,
        headers,
        body,
    })
}

impl Response {
    /// The first value of header `name` (case-insensitive) as text.
    pub fn header(&self, name: &str) -> Option<String> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Passes a 2xx response through and turns any other status into the
    /// matching error: 401/403 → `denied`, 404 → `not-found`, 408/429/5xx →
    /// `unavailable`, the rest → `other`. `what` names the operation.
    pub fn error_for_status(self, what: &str) -> Result<Response> {
        if self.is_success() {
            return Ok(self);
        }
        let detail = self.error_detail();
        let msg = format!("{what}: HTTP {}{detail}", self.status);
        Err(match self.status {
            401 | 403 => KmsError::Denied(msg),
            404 | 410 => KmsError::NotFound(msg),
            408 | 429 | 500..=599 => KmsError::Unavailable(msg),
            _ => KmsError::Other(msg),
        })
    }

    /// How long to wait before retrying a throttled (429) or failing (5xx)
    /// request, in milliseconds: the `retry-after` seconds, at most
    /// `max_ms`; half a second (or `max_ms` if less) when absent or not a
    /// number of seconds.
    pub fn retry_after_ms(&self, max_ms: u64) -> u64 {
        self.header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(500, |s| s.saturating_mul(1000))
            .min(max_ms)
    }

    /// An OAuth 2.0 token response (RFC 6749 §5.1: `access_token`,
    /// `token_type`, `expires_in`): the bearer token, kept in the host's
    /// cache under `cache_key` until shortly before it expires
    /// ([`crate::cache::token_ttl`]). `what` names the login in errors;
    /// the token is never in one.
    pub fn bearer_token(&self, cache_key: &str, what: &str) -> Result<zeroize::Zeroizing<String>> {
        #[derive(serde::Deserialize)]
        struct Token {
            access_token: String,
            #[serde(default)]
            token_type: Option<String>,
            #[serde(default)]
            expires_in: u64,
        }
        let t: Token = serde_json::from_slice(&self.body).map_err(|_| {
            KmsError::Other(format!(
                "{what}: the reply is not a token (HTTP {})",
                self.status
            ))
        })?;
        let access = zeroize::Zeroizing::new(t.access_token);
        let bearer = t
            .token_type
            .as_deref()
            .is_none_or(|k| k.eq_ignore_ascii_case("bearer"));
        if access.is_empty() || !bearer {
            return Err(KmsError::Other(format!(
                "{what}: no bearer token in the reply"
            )));
        }
        crate::cache::set(
            cache_key,
            access.as_bytes(),
            crate::cache::token_ttl(t.expires_in),
        );
        Ok(access)
    }

    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| {
            KmsError::Other(format!("unexpected response (HTTP {}): {e}", self.status))
        })
    }

    /// A short, printable excerpt of an error body (error bodies carry
    /// diagnostics, not keys).
    fn error_detail(&self) -> String {
        let text: String = String::from_utf8_lossy(&self.body)
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        if text.trim().is_empty() {
            String::new()
        } else {
            format!(": {}", text.trim())
        }
    }
}

/// A login at a token endpoint (OAuth 2.0 client credentials, or a
/// service's own grant): POSTs the form body `form` to `url`, and returns
/// the bearer token, kept in the host's cache under `cache_key`
/// ([`Response::bearer_token`]). A refusal (400, 401, 403) is `denied`
/// with `reason(body)` — the service's own words, which the caller keeps
/// short and free of the request; other failures map as
/// [`Response::error_for_status`]. `what` names the login in errors.
pub fn login_for_token(
    url: &str,
    form: &str,
    timeout_secs: u64,
    cache_key: &str,
    what: &str,
    reason: impl Fn(&[u8]) -> String,
) -> Result<zeroize::Zeroizing<String>> {
    let resp = Request::post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .timeout_secs(timeout_secs)
        .body(form.as_bytes().to_vec())
        .send()?;
    match resp.status {
        200..=299 => resp.bearer_token(cache_key, what),
        400 | 401 | 403 => Err(KmsError::Denied(format!(
            "{what}: HTTP {}: {}",
            resp.status,
            reason(&resp.body)
        ))),
        _ => Err(resp
            .error_for_status(what)
            .err()
            .unwrap_or_else(|| KmsError::Other(what.to_string()))),
    }
}

/// Splits `scheme://authority/path?query`.
fn split_url(url: &str) -> Result<(Scheme, &str, &str)> {
    let (scheme, rest) = if let Some(r) = url.strip_prefix("https://") {
        (Scheme::Https, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (Scheme::Http, r)
    } else {
        return Err(KmsError::Other(format!(
            "URL must start with http:// or https://: {url}"
        )));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(KmsError::Other(format!("URL has no host: {url}")));
    }
    Ok((scheme, authority, path))
}

fn stream_error(what: &str, e: StreamError) -> KmsError {
    match e {
        StreamError::Closed => KmsError::Unavailable(format!("{what}: connection closed")),
        StreamError::LastOperationFailed(err) => {
            KmsError::Unavailable(format!("{what}: {}", err.to_debug_string()))
        }
    }
}

/// Maps a `wasi:http` error code to the contract's error cases.
pub fn map_error_code(url: &str, e: ErrorCode) -> KmsError {
    use ErrorCode as E;
    match e {
        E::HttpRequestDenied => KmsError::Denied(format!(
            "request to {} denied by the host: not on this kmsID's allow-list",
            redact_url(url)
        )),
        E::TlsCertificateError | E::TlsAlertReceived(_) | E::TlsProtocolError => {
            KmsError::Denied(format!("TLS with {} failed: {e:?}", redact_url(url)))
        }
        E::HttpResponseBodySize(_) | E::HttpResponseHeaderSize(_) => KmsError::Other(format!(
            "response from {} exceeds the host's size limit",
            redact_url(url)
        )),
        E::InternalError(Some(msg)) => KmsError::Unavailable(format!("{}: {msg}", redact_url(url))),
        other => KmsError::Unavailable(format!("{}: {other:?}", redact_url(url))),
    }
}

/// The URL without its query string (queries may carry tokens).
fn redact_url(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[test]
    fn debug_never_shows_header_values_query_or_body() {
        let req = Request::post("https://vault.example:8200/v1/transit/encrypt/k?token=q-secret")
            .header("X-Vault-Token", "hvs.header-secret")
            .body(b"plaintext-secret".to_vec());
        let shown = format!("{req:?}");
        for secret in ["hvs.header-secret", "q-secret", "plaintext-secret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(
            shown.contains("x-vault-token") && shown.contains("body_len: 16"),
            "{shown}"
        );
        let resp = Response {
            status: 200,
            headers: vec![],
            body: b"key-secret".to_vec(),
        };
        assert!(!format!("{resp:?}").contains("key-secret"));
    }

    #[test]
    fn dropped_parts_are_zeroized() {
        let mut headers = vec![("a".to_string(), b"tok".to_vec())];
        let mut body = b"key".to_vec();
        zeroize_parts(&mut headers, &mut body);
        assert!(headers[0].1.is_empty() && body.is_empty());
    }
}
