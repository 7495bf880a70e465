//! The two guest exits of the outbound-HTTP capability, as glue between
//! the guest's types and the policy in [`crate::capability::http`], which
//! decides everything: `kmshost:plugin/outbound-http` ([`exchange`], one
//! host call per exchange) and the `wasi:http` hook ([`OutboundHooks`]).
//! Redirects are never followed by the host; a plugin that follows one
//! issues a new request, which meets the allow-list again.

use super::bindings::kmshost::plugin::outbound_http::{
    Request as HttpRequest, Response as HttpResponse,
};
use super::bindings::kmshost::plugin::types::KmsError as WitError;
pub use crate::capability::http::Events;
use crate::capability::http::{HttpPolicy, forbidden_header};
use crate::capability::net::{self, NetError};
use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// `kmshost:plugin/outbound-http.send`: the whole exchange in one host
/// call, under the same policy as the `wasi:http` hook, on the same
/// keep-alive connections.
pub async fn exchange(
    policy: &HttpPolicy,
    req: HttpRequest,
    events: &Events,
) -> Result<HttpResponse, WitError> {
    // Queries may carry credentials: messages show the URL without one.
    let shown = req.url.split('?').next().unwrap_or("").to_string();
    let invalid = |what: String| WitError::Other(format!("invalid request to {shown}: {what}"));
    let uri: http::Uri = req.url.parse().map_err(|e| invalid(format!("URL: {e}")))?;
    let target = policy.authorize(&uri, None, events).map_err(|_| {
        WitError::Denied(format!(
            "request to {shown} denied by the host: not on this kmsID's allow-list"
        ))
    })?;
    let method = http::Method::from_bytes(req.method.as_bytes())
        .map_err(|_| invalid(format!("method {:?}", req.method)))?;
    let mut builder = http::Request::builder()
        .method(method)
        .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    for (name, value) in &req.headers {
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("header name {name:?}")))?;
        if forbidden_header(&name) || name == http::header::CONTENT_LENGTH {
            let denial = format!("header {name} is forbidden: the host sets it");
            policy.deny(events, &denial);
            return Err(WitError::Denied(format!("request to {shown}: {denial}")));
        }
        let value = http::HeaderValue::from_bytes(value)
            .map_err(|_| invalid(format!("value of header {name}")))?;
        builder = builder.header(name, value);
    }
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
    builder = builder.header(http::header::HOST, authority);
    if !req.body.is_empty() {
        builder = builder.header(http::header::CONTENT_LENGTH, req.body.len());
    }
    let body = http_body_util::Full::new(Bytes::from(req.body))
        .map_err(|never| match never {})
        .boxed_unsync();
    let request = builder.body(body).map_err(|e| invalid(e.to_string()))?;
    let timeout = (req.timeout_ms > 0).then(|| Duration::from_millis(req.timeout_ms.into()));
    let connect = policy.connect_within(timeout, timeout);
    let limit = policy.max_response_bytes;
    let fetched = policy
        .transport
        .fetch(&target, &connect, request, limit)
        .await
        .map_err(|e| {
            policy.failed(&e);
            match &e {
                NetError::Tls { .. } | NetError::ServerName(_) => {
                    WitError::Denied(format!("TLS with {shown} failed: {e}"))
                }
                _ => WitError::Unavailable(format!("{shown}: {e}")),
            }
        })?;
    let too_large = || {
        WitError::Other(format!(
            "response from {shown} exceeds the host's size limit"
        ))
    };
    let net::Fetched { parts, body } = fetched;
    let Some(body) = body else {
        // Over the cap: as declared (recorded with its size), or as
        // received.
        if policy.declared_too_large(&parts.headers, events).is_none() {
            events.push(format!("response body exceeds the limit of {limit} bytes"));
        }
        return Err(too_large());
    };
    Ok(HttpResponse {
        status: parts.status.as_u16(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
            .collect(),
        body,
    })
}

/// The hook object living in each store; records what it denied during the
/// current call so the host can name the root cause.
#[derive(Debug)]
pub struct OutboundHooks {
    policy: Arc<HttpPolicy>,
    /// Denials and limit hits seen since the last [`OutboundHooks::take_events`].
    events: Arc<Events>,
    /// `wasi:http` requests of this instance not finished: sent, or with a
    /// response whose body is still held.
    in_flight: Arc<AtomicUsize>,
}

/// Most `wasi:http` requests one instance may have in flight at once (an
/// unread response body counts). With `kmshostMaxConcurrency` instances per
/// kmsID, this bounds the kmsID's open connections.
pub const MAX_IN_FLIGHT: usize = 4;

/// One request or stream counted in [`OutboundHooks`]' in-flight total
/// while alive.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(count: &Arc<AtomicUsize>) -> Option<InFlight> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_IN_FLIGHT).then_some(n + 1)
            })
            .ok()
            .map(|_| InFlight(count.clone()))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl OutboundHooks {
    /// Hooks enforcing `policy`.
    pub fn new(policy: Arc<HttpPolicy>) -> Self {
        OutboundHooks {
            policy,
            events: Arc::default(),
            in_flight: Arc::default(),
        }
    }

    /// Takes an in-flight slot (for a TLS stream), if one is free.
    pub fn enter(&self) -> Option<InFlight> {
        InFlight::enter(&self.in_flight)
    }

    /// The kmsID's outbound policy.
    pub fn policy(&self) -> &Arc<HttpPolicy> {
        &self.policy
    }

    /// The current call's denials and limit hits.
    pub fn events(&self) -> &Arc<Events> {
        &self.events
    }

    /// `wasi:http` requests and TLS streams still in flight (sent, with a
    /// body held, or open).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Sends a request of `kmshost:plugin/outbound-http` under this
    /// store's policy.
    pub async fn exchange(&self, req: HttpRequest) -> Result<HttpResponse, WitError> {
        exchange(&self.policy, req, &self.events).await
    }

    /// Takes the denials recorded so far.
    pub fn take_events(&self) -> Vec<String> {
        self.events.take()
    }
}

fn map_net_error(e: &NetError) -> Error {
    match e {
        NetError::Connect { .. } => Error::ConnectionRefused,
        NetError::Timeout(_) => Error::ConnectionTimeout,
        NetError::Tls { .. } if e.is_certificate_error() => Error::TlsCertificateError,
        NetError::Tls { .. } => Error::TlsProtocolError,
        NetError::ServerName(_) => Error::TlsCertificateError,
        NetError::Http { .. } | NetError::Closed(_) => Error::HttpProtocolError,
    }
}

impl WasiHttpHooks for OutboundHooks {
    /// The policy's list: one list for both exits.
    fn forbidden_header_filter(&mut self) -> wasmtime_wasi_http::ForbiddenHeaderFilter {
        Arc::new(forbidden_header)
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), Error>> + Send>,
                    ),
                    Error,
                >,
            > + Send,
    > {
        let policy = self.policy.clone();
        let events = self.events.clone();
        let Some(in_flight) = InFlight::enter(&self.in_flight) else {
            events.push(format!(
                "more than {MAX_IN_FLIGHT} wasi:http requests in flight in one instance"
            ));
            return Box::new(async { Err(Error::ConnectionLimitReached) });
        };
        Box::new(async move {
            let uri = request.uri().clone();
            let host_header = request
                .headers()
                .get(http::header::HOST)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            let target = policy
                .authorize(&uri, host_header.as_deref(), &events)
                .map_err(|_| Error::HttpRequestDenied)?;
            let (mut parts, body) = request.into_parts();
            parts.uri = http::Uri::builder()
                .path_and_query(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
                .build()
                .map_err(|_| Error::HttpRequestUriInvalid)?;
            let connect = policy.connect_within(
                options.as_ref().and_then(|o| o.connect_timeout),
                options.as_ref().and_then(|o| o.first_byte_timeout),
            );
            let body = body
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
                .boxed_unsync();
            let resp = policy
                .transport
                .send(&target, &connect, http::Request::from_parts(parts, body))
                .await
                .map_err(|e| {
                    policy.failed(&e);
                    map_net_error(&e)
                })?;
            let limit = policy.max_response_bytes;
            if let Some(declared) = policy.declared_too_large(resp.headers(), &events) {
                return Err(Error::HttpResponseBodySize(Some(declared)));
            }
            let (parts, incoming) = resp.into_parts();
            let capped = CappedBody {
                incoming: Some(incoming),
                remaining: limit,
                limit,
                events: events.clone(),
                _in_flight: in_flight,
            };
            let resp = http::Response::from_parts(parts, capped.boxed_unsync());
            Ok((
                resp,
                Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// A response body that fails once more than `limit` bytes arrived. It
/// keeps its request counted in flight until it is dropped.
struct CappedBody {
    incoming: Option<hyper::body::Incoming>,
    remaining: usize,
    limit: usize,
    events: Arc<Events>,
    _in_flight: InFlight,
}

impl Body for CappedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let Some(incoming) = self.incoming.as_mut() else {
            return Poll::Ready(None);
        };
        match ready!(Pin::new(incoming).poll_frame(cx)) {
            None => Poll::Ready(None),
            Some(Err(e)) => Poll::Ready(Some(Err(Error::from(e)))),
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    if d.len() > self.remaining {
                        let limit = self.limit;
                        self.events
                            .push(format!("response body exceeds the limit of {limit} bytes"));
                        self.incoming = None;
                        return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(
                            limit as u64,
                        )))));
                    }
                    self.remaining -= d.len();
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capability::http::fake::{Recording, policy};

    fn request(url: &str, headers: &[(&str, &str)]) -> HttpRequest {
        HttpRequest {
            method: "GET".into(),
            url: url.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
            body: Vec::new(),
            timeout_ms: 0,
        }
    }

    #[tokio::test]
    async fn an_allowed_request_reaches_the_transport_as_the_host_shapes_it() {
        let (p, sent) = policy(Recording::answering(200, b"ok"));
        let events = Events::default();
        let mut req = request(
            "https://kms.example:8200/v1/secret/data/x?version=2",
            &[("x-vault-token", "t")],
        );
        req.method = "POST".into();
        req.body = b"{}".to_vec();
        req.timeout_ms = 500;
        let resp = exchange(&p, req, &events).await.unwrap();
        assert_eq!((resp.status, resp.body.as_slice()), (200, &b"ok"[..]));
        let seen = sent.requests();
        assert_eq!(seen.len(), 1);
        let r = &seen[0];
        assert_eq!(r.target, "https://kms.example:8200");
        assert_eq!(r.method, "POST");
        // Origin-form on the wire; Host and Content-Length set by the host.
        assert_eq!(r.uri, "/v1/secret/data/x?version=2");
        assert_eq!(r.header("host"), Some("kms.example:8200".into()));
        assert_eq!(r.header("content-length"), Some("2".into()));
        assert_eq!(r.header("x-vault-token"), Some("t".into()));
        assert_eq!(r.body, b"{}");
        // The plugin's shorter timeout applies to both phases.
        assert_eq!(r.connect_timeout, Duration::from_millis(500));
        assert_eq!(r.first_byte_timeout, Duration::from_millis(500));
        assert!(events.take().is_empty());
    }

    #[tokio::test]
    async fn a_host_off_the_list_is_denied_before_the_transport_and_the_query_never_echoed() {
        let (p, sent) = policy(Recording::answering(200, b""));
        let events = Events::default();
        for url in [
            "https://evil.example:8200/v1/x?token=s3cret",
            "http://kms.example:8200/v1/x?token=s3cret",
            "https://kms.example:8201/v1/x?token=s3cret",
        ] {
            let err = exchange(&p, request(url, &[]), &events).await.unwrap_err();
            let text = format!("{err:?}");
            assert!(matches!(err, WitError::Denied(_)), "{url}: {text}");
            assert!(!text.contains("s3cret"), "{text}");
        }
        let recorded = events.take();
        assert_eq!(recorded.len(), 3, "{recorded:?}");
        assert!(
            recorded
                .iter()
                .all(|e| e.starts_with("outbound request denied"))
        );
        assert!(sent.requests().is_empty(), "a denied request was sent");
    }

    #[tokio::test]
    async fn headers_the_host_sets_are_refused() {
        let (p, sent) = policy(Recording::answering(200, b""));
        for name in [
            "host",
            "Host",
            "content-length",
            "connection",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
        ] {
            let events = Events::default();
            let req = request("https://kms.example:8200/v1/x", &[(name, "v")]);
            let err = exchange(&p, req, &events).await.unwrap_err();
            assert!(
                matches!(&err, WitError::Denied(m) if m.contains("forbidden")),
                "{name}: {err:?}"
            );
            assert_eq!(events.take().len(), 1, "{name}");
        }
        assert!(sent.requests().is_empty());
    }

    #[tokio::test]
    async fn malformed_requests_are_the_plugins_error() {
        let (p, sent) = policy(Recording::answering(200, b""));
        let events = Events::default();
        let mut bad_method = request("https://kms.example:8200/", &[]);
        bad_method.method = "G T".into();
        for req in [
            request("not a url", &[]),
            bad_method,
            request("https://kms.example:8200/", &[("bad name", "v")]),
            request("https://kms.example:8200/", &[("x-ok", "line\nbreak")]),
        ] {
            let err = exchange(&p, req, &events).await.unwrap_err();
            assert!(matches!(err, WitError::Other(_)), "{err:?}");
        }
        assert!(sent.requests().is_empty());
    }

    #[tokio::test]
    async fn a_body_over_the_cap_is_refused_and_recorded() {
        let (p, _) = policy(Recording::answering(200, &[b'x'; 2048]));
        let events = Events::default();
        let req = request("https://kms.example:8200/big", &[]);
        let err = exchange(&p, req, &events).await.unwrap_err();
        assert!(
            matches!(&err, WitError::Other(m) if m.contains("size limit")),
            "{err:?}"
        );
        assert_eq!(events.take().len(), 1);
    }

    #[test]
    fn in_flight_requests_are_capped_and_released_on_drop() {
        let count = Arc::new(AtomicUsize::new(0));
        let held: Vec<_> = (0..MAX_IN_FLIGHT)
            .map(|_| InFlight::enter(&count).expect("under the cap"))
            .collect();
        assert!(InFlight::enter(&count).is_none(), "one more than the cap");
        drop(held);
        assert_eq!(count.load(Ordering::Acquire), 0);
        assert!(InFlight::enter(&count).is_some());
    }
}
