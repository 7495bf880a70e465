//! A mock host for plugin unit tests, on the build machine's own target
//! (`cargo test --target x86_64-unknown-linux-gnu`): granted Secrets, the
//! cache, the log and an HTTP handler of your own, so a provider's logic —
//! option handling, request shapes, status mapping, token caching — is
//! tested without building a component or running kmshost. It keeps the
//! host's rules where they matter to a plugin: a Secret not given is
//! `denied`, and with no handler every request is `denied`.
//!
//! ```ignore
//! use kmshost_plugin_sdk::mock::MockHost;
//! let host = MockHost::new()
//!     .secret("acme-credentials", "API_KEY", "k")
//!     .on_http(|req| Ok(MockHost::reply(200, r#"{"token":"t"}"#)))
//!     .install();
//! let p: MyKms = kmshost_plugin_sdk::mock::configure(&[("ACME_ENDPOINT", "https://a")])?;
//! p.wrap("pvc-1", b"key")?;
//! assert_eq!(host.requests()[0].url, "https://a/v1/wrap");
//! ```

use crate::bindings::kmshost::plugin::outbound_http;
use crate::{KmsError, Options, Provider, Result};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

/// A request the plugin sent, as the mock saw it. Its headers (a token)
/// and body (a key) may be secret: `Debug` shows the method, the URL
/// without its query, header names and the body's length only, as the
/// SDK's own `Request` does.
#[derive(Clone)]
pub struct MockRequest {
    /// The method (`GET`, `POST`, `LIST`, …).
    pub method: String,
    /// The absolute URL.
    pub url: String,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

impl std::fmt::Debug for MockRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("MockRequest")
            .field("method", &self.method)
            .field("url", &self.url.split('?').next().unwrap_or(""))
            .field("headers", &names)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl MockRequest {
    /// The value of header `name`, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// An answer from the HTTP handler: a response, or an error as the host
/// would report it (for example `KmsError::Unavailable` for a refused
/// connection).
pub type MockReply = Result<crate::http::Response>;

type Handler = Box<dyn FnMut(&MockRequest) -> MockReply>;

/// Answers `hsm` calls: `(encrypt?, label, data, aad)` → bytes.
type HsmHandler = Box<dyn FnMut(bool, &str, &[u8], &[u8]) -> Result<Vec<u8>>>;

/// Answers `signing.sign`: `(certificate name, algorithm, payload)` →
/// signature bytes.
type SignHandler = Box<dyn FnMut(&str, crate::signing::Algorithm, &[u8]) -> Result<Vec<u8>>>;

/// Answers what a plugin sends on a TLS stream: given the endpoint and the
/// bytes of one `send`, the bytes the server sends back (appended to what
/// the plugin can receive), or an error as the host would report it.
type StreamHandler = Box<dyn FnMut(&str, &[u8]) -> Result<Vec<u8>>>;

/// One open mock stream.
struct MockStream {
    endpoint: String,
    inbox: std::collections::VecDeque<u8>,
    reused: bool,
}

/// The mock host: build it, then [`MockHost::install`] it for the current
/// thread.
#[derive(Default)]
pub struct MockHost {
    secrets: BTreeMap<(String, String), Vec<u8>>,
    pub(crate) cache: HashMap<String, Vec<u8>>,
    pub(crate) logs: Vec<String>,
    requests: Vec<MockRequest>,
    handler: Option<Handler>,
    stream_handler: Option<StreamHandler>,
    streams: HashMap<usize, MockStream>,
    next_stream: usize,
    /// Released streams, per endpoint (the kmsID's pool).
    idle_streams: Vec<String>,
    streams_opened: usize,
    offers: Vec<Vec<u8>>,
    hsm_handler: Option<HsmHandler>,
    signer: Option<(String, crate::signing::CertificateInfo, SignHandler)>,
    signed: Vec<Vec<u8>>,
}

thread_local! {
    static HOST: RefCell<Option<MockHost>> = const { RefCell::new(None) };
}

impl MockHost {
    /// An empty host: no Secrets, no HTTP.
    pub fn new() -> Self {
        Self::default()
    }

    /// Grants `key` of Secret `name` with `value`.
    pub fn secret(mut self, name: &str, key: &str, value: impl AsRef<[u8]>) -> Self {
        self.secrets
            .insert((name.into(), key.into()), value.as_ref().to_vec());
        self
    }

    /// Answers the plugin's HTTP requests (both `send` and `send_wasi`).
    pub fn on_http(mut self, handler: impl FnMut(&MockRequest) -> MockReply + 'static) -> Self {
        self.handler = Some(Box::new(handler));
        self
    }

    /// Answers the plugin's TLS streams: `handler(endpoint, sent)` returns
    /// the bytes the server answers one `send` with. Without one, every
    /// `open` is `denied`, as for an endpoint not on the allow-list.
    pub fn on_stream(
        mut self,
        handler: impl FnMut(&str, &[u8]) -> Result<Vec<u8>> + 'static,
    ) -> Self {
        self.stream_handler = Some(Box::new(handler));
        self
    }

    /// Grants the certificate `name` (its public parts `certificate`) for
    /// `signing`: `handler(name, algorithm, payload)` makes the signature.
    pub fn on_sign(
        mut self,
        name: &str,
        certificate: crate::signing::CertificateInfo,
        handler: impl FnMut(&str, crate::signing::Algorithm, &[u8]) -> Result<Vec<u8>> + 'static,
    ) -> Self {
        self.signer = Some((name.to_string(), certificate, Box::new(handler)));
        self
    }

    /// Answers the plugin's `hsm` calls: `handler(encrypt, label, data,
    /// aad)` returns the ciphertext (`encrypt`) or the plaintext. Without
    /// one, every call is `denied`, as for a kmsID with no HSM.
    pub fn on_hsm(
        mut self,
        handler: impl FnMut(bool, &str, &[u8], &[u8]) -> Result<Vec<u8>> + 'static,
    ) -> Self {
        self.hsm_handler = Some(Box::new(handler));
        self
    }

    /// A response with `status` and a body.
    pub fn reply(status: u16, body: impl Into<Vec<u8>>) -> crate::http::Response {
        crate::http::Response {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Makes this the host of the current thread until the returned guard
    /// is dropped.
    pub fn install(self) -> Installed {
        HOST.with(|h| *h.borrow_mut() = Some(self));
        Installed { _private: () }
    }

    pub(crate) fn secret_value(&mut self, name: &str, key: &str) -> Result<Vec<u8>> {
        match self.secrets.get(&(name.to_string(), key.to_string())) {
            Some(v) => Ok(v.clone()),
            None if self.secrets.keys().any(|(n, _)| n == name) => Err(KmsError::NotFound(
                format!("secret {name} has no key {key} (mock host)"),
            )),
            None => Err(KmsError::Denied(format!(
                "secret {name} is not granted (mock host)"
            ))),
        }
    }

    /// `rewrap.offer`: kept, at most one per call as the host keeps it
    /// (the mock cannot tell calls apart, so at most one per install).
    pub(crate) fn offer(&mut self, blob: &[u8]) -> Result<()> {
        if !self.offers.is_empty() {
            return Err(KmsError::Denied(
                "rewrap.offer called twice (mock host)".into(),
            ));
        }
        self.offers.push(blob.to_vec());
        Ok(())
    }

    pub(crate) fn certificate(&mut self, name: &str) -> Result<crate::signing::CertificateInfo> {
        match &self.signer {
            Some((n, c, _)) if n == name => Ok(c.clone()),
            _ => Err(KmsError::Denied(format!(
                "certificate {name:?} is not granted (mock host: on_sign)"
            ))),
        }
    }

    pub(crate) fn sign(
        &mut self,
        name: &str,
        alg: crate::signing::Algorithm,
        payload: &[u8],
    ) -> Result<crate::signing::Signed> {
        let certificate = self.certificate(name)?;
        let (_, _, h) = self.signer.as_mut().expect("checked above");
        let signature = h(name, alg, payload)?;
        self.signed.push(payload.to_vec());
        Ok(crate::signing::Signed {
            signature,
            certificate,
        })
    }

    pub(crate) fn hsm(
        &mut self,
        encrypt: bool,
        label: &str,
        data: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>> {
        match self.hsm_handler.as_mut() {
            Some(h) => h(encrypt, label, data, aad),
            None => Err(KmsError::Denied("no HSM in this mock host (on_hsm)".into())),
        }
    }

    pub(crate) fn http(&mut self, req: &outbound_http::Request) -> Result<outbound_http::Response> {
        let seen = MockRequest {
            method: req.method.clone(),
            url: req.url.clone(),
            headers: req.headers.clone(),
            body: req.body.clone(),
        };
        self.requests.push(seen.clone());
        let handler = self.handler.as_mut().ok_or_else(|| {
            KmsError::Denied(format!("{}: no HTTP in this mock host (on_http)", req.url))
        })?;
        let mut r = handler(&seen)?;
        Ok(outbound_http::Response {
            status: r.status,
            headers: std::mem::take(&mut r.headers),
            body: std::mem::take(&mut r.body),
        })
    }
}

impl MockHost {
    pub(crate) fn stream_open(&mut self, endpoint: &str) -> Result<usize> {
        if self.stream_handler.is_none() {
            return Err(KmsError::Denied(format!(
                "stream to {endpoint}: no streams in this mock host (on_stream)"
            )));
        }
        let reused = match self.idle_streams.iter().position(|e| e == endpoint) {
            Some(i) => {
                self.idle_streams.remove(i);
                true
            }
            None => {
                self.streams_opened += 1;
                false
            }
        };
        self.next_stream += 1;
        let s = MockStream {
            endpoint: endpoint.to_string(),
            inbox: Default::default(),
            reused,
        };
        self.streams.insert(self.next_stream, s);
        Ok(self.next_stream)
    }

    fn stream(&mut self, id: usize) -> Result<&mut MockStream> {
        self.streams
            .get_mut(&id)
            .ok_or_else(|| KmsError::Unavailable("stream is closed (mock host)".into()))
    }

    pub(crate) fn stream_send(&mut self, id: usize, data: &[u8]) -> Result<()> {
        let endpoint = self.stream(id)?.endpoint.clone();
        let handler = self.stream_handler.as_mut().expect("opened with a handler");
        match handler(&endpoint, data) {
            Ok(answer) => {
                self.stream(id)?.inbox.extend(answer);
                Ok(())
            }
            Err(e) => {
                self.streams.remove(&id);
                Err(e)
            }
        }
    }

    pub(crate) fn stream_receive(&mut self, id: usize, len: u32) -> Result<Vec<u8>> {
        let s = self.stream(id)?;
        if s.inbox.len() < len as usize {
            let endpoint = s.endpoint.clone();
            self.streams.remove(&id);
            return Err(KmsError::Unavailable(format!(
                "tls://{endpoint} closed the connection before all bytes arrived (mock host)"
            )));
        }
        Ok(s.inbox.drain(..len as usize).collect())
    }

    pub(crate) fn stream_reused(&mut self, id: usize) -> bool {
        self.streams.get(&id).is_some_and(|s| s.reused)
    }

    pub(crate) fn stream_close(&mut self, id: usize, release: bool) {
        if let Some(s) = self.streams.remove(&id)
            && release
            && s.inbox.is_empty()
        {
            self.idle_streams.push(s.endpoint);
        }
    }
}

/// The installed host; dropping it uninstalls it.
pub struct Installed {
    _private: (),
}

impl Installed {
    /// Every request the plugin sent, in order.
    pub fn requests(&self) -> Vec<MockRequest> {
        with(|h| h.requests.clone())
    }
    /// Every log line, as `level: message`.
    pub fn logs(&self) -> Vec<String> {
        with(|h| h.logs.clone())
    }
    /// How many streams the plugin opened (not counting pooled ones it
    /// took back).
    pub fn streams_opened(&self) -> usize {
        with(|h| h.streams_opened)
    }
    /// The cache entry for `key`.
    pub fn cached(&self, key: &str) -> Option<Vec<u8>> {
        with(|h| h.cache.get(key).cloned())
    }
    /// The blob offered through `rewrap.offer`, if any.
    pub fn offered(&self) -> Option<Vec<u8>> {
        with(|h| h.offers.first().cloned())
    }

    /// The payloads the plugin had signed, in order.
    pub fn signed(&self) -> Vec<Vec<u8>> {
        with(|h| h.signed.clone())
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        HOST.with(|h| *h.borrow_mut() = None);
    }
}

/// Configures provider `P` from `options` as the host would: `configure`,
/// then leftovers refused by name.
pub fn configure<P: Provider>(options: &[(&str, &str)]) -> Result<P> {
    let mut o = Options::new(
        options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    let p = P::configure(&mut o)?;
    o.finish()?;
    Ok(p)
}

/// Like [`with`], but does nothing when no host is installed (a stream
/// dropped after its test's host).
pub(crate) fn try_with(f: impl FnOnce(&mut MockHost)) {
    HOST.with(|h| {
        if let Ok(mut h) = h.try_borrow_mut()
            && let Some(host) = h.as_mut()
        {
            f(host)
        }
    })
}

pub(crate) fn with<T>(f: impl FnOnce(&mut MockHost) -> T) -> T {
    HOST.with(|h| {
        let mut h = h.borrow_mut();
        let host = h
            .as_mut()
            .expect("no mock host installed on this thread: MockHost::new()…install()");
        f(host)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Request;
    use crate::{Capabilities, PluginInfo, cache, secret_string};

    /// A small provider using every host call.
    struct Echo {
        url: String,
    }

    impl Provider for Echo {
        fn info() -> PluginInfo {
            PluginInfo {
                name: "echo".into(),
                version: "0".into(),
                capabilities: Capabilities::STORE,
                description: String::new(),
            }
        }
        fn configure(o: &mut Options) -> Result<Self> {
            Ok(Echo {
                url: o.required("URL")?,
            })
        }
        fn get(&self, key_id: &str) -> Result<Vec<u8>> {
            let token = match cache::get("token") {
                Some(t) => String::from_utf8(t)?,
                None => secret_string("creds", "token")?,
            };
            cache::set("token", token.as_bytes(), 60);
            crate::log::info("getting");
            let r = Request::get(format!("{}/{key_id}", self.url))
                .header("authorization", format!("Bearer {token}"))
                .send()?
                .error_for_status("get")?;
            Ok(r.body.clone())
        }
    }

    #[test]
    fn a_provider_runs_against_the_mock_host() {
        let host = MockHost::new()
            .secret("creds", "token", "t0k\n")
            .on_http(|r| match r.url.as_str() {
                "https://kms/pvc-1" => Ok(MockHost::reply(200, "key-1")),
                _ => Ok(MockHost::reply(404, "")),
            })
            .install();
        let p: Echo = configure(&[("URL", "https://kms")]).unwrap();
        assert_eq!(p.get("pvc-1").unwrap(), b"key-1");
        assert!(matches!(p.get("pvc-2"), Err(KmsError::NotFound(_))));
        let reqs = host.requests();
        assert_eq!(reqs.len(), 2);
        assert_eq!(
            reqs[0].header("authorization").as_deref(),
            Some("Bearer t0k")
        );
        // Debug names the header, never its value (derived Debug would
        // print the token's bytes).
        assert_eq!(
            format!("{:?}", reqs[0]),
            r#"MockRequest { method: "GET", url: "https://kms/pvc-1", headers: ["authorization"], body_len: 0 }"#
        );
        assert_eq!(host.cached("token").as_deref(), Some(&b"t0k"[..]));
        assert_eq!(host.logs(), ["info: getting", "info: getting"]);
        // The host's rules: leftovers named, ungranted Secrets denied.
        let e = configure::<Echo>(&[("URL", "u"), ("URLL", "x")])
            .err()
            .unwrap();
        assert!(matches!(e, KmsError::InvalidConfig(c) if c.option == "URLL"));
        drop(host);
        let _bare = MockHost::new().install();
        let p: Echo = configure(&[("URL", "https://kms")]).unwrap();
        assert!(matches!(p.get("x"), Err(KmsError::Denied(_))));
    }
}
