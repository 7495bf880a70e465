//! The `wasi:http` hook: every outbound request of a plugin is checked
//! against its kmsID's allow-list (scheme, host, port, Host header), sent by
//! the host with the kmsID's TLS settings, and its response body is capped.
//! Redirects are never followed by the host; a plugin that follows one
//! issues a new request, which meets the allow-list again.

use crate::capability::AllowList;
use crate::kms::KmsId;
use crate::net::{self, Connect, NetError};
use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// A kmsID's network policy.
#[derive(Debug)]
pub struct Outbound {
    /// The kmsID (for logs).
    pub kms_id: KmsId,
    /// The plugin name (for logs).
    pub plugin: String,
    /// Where it may connect.
    pub allow: AllowList,
    /// TLS and timeouts.
    pub connect: Connect,
    /// Largest response body.
    pub max_response_bytes: usize,
    /// Keep-alive connections of this kmsID.
    pub pool: net::Pool,
}

/// The hook object living in each store; records what it denied during the
/// current call so the host can name the root cause.
#[derive(Debug)]
pub struct OutboundHooks {
    policy: Arc<Outbound>,
    /// Denials and limit hits seen since the last [`OutboundHooks::take_events`].
    events: Arc<Mutex<Vec<String>>>,
}

impl OutboundHooks {
    /// Hooks enforcing `policy`.
    pub fn new(policy: Arc<Outbound>) -> Self {
        OutboundHooks {
            policy,
            events: Arc::default(),
        }
    }

    /// Takes the denials recorded so far.
    pub fn take_events(&self) -> Vec<String> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

fn map_net_error(e: &NetError) -> Error {
    match e {
        NetError::Connect { .. } => Error::ConnectionRefused,
        NetError::Timeout(_) => Error::ConnectionTimeout,
        NetError::Tls { .. } if e.is_certificate_error() => Error::TlsCertificateError,
        NetError::Tls { .. } => Error::TlsProtocolError,
        NetError::ServerName(_) => Error::TlsCertificateError,
        NetError::Http { .. } => Error::HttpProtocolError,
    }
}

impl WasiHttpHooks for OutboundHooks {
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
        Box::new(async move {
            let uri = request.uri().clone();
            let scheme = uri.scheme_str().unwrap_or("");
            let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
            let host_header = request
                .headers()
                .get(http::header::HOST)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            let target = match policy
                .allow
                .check(scheme, authority, host_header.as_deref())
            {
                Ok(t) => t,
                Err(denial) => {
                    tracing::debug!(
                        kms_id = %policy.kms_id,
                        plugin = %policy.plugin,
                        %denial,
                        "outbound request denied"
                    );
                    events
                        .lock()
                        .unwrap()
                        .push(format!("outbound request denied: {denial}"));
                    return Err(Error::HttpRequestDenied);
                }
            };
            let (mut parts, body) = request.into_parts();
            parts.uri = http::Uri::builder()
                .path_and_query(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
                .build()
                .map_err(|_| Error::HttpRequestUriInvalid)?;
            let mut connect = policy.connect.clone();
            if let Some(o) = options {
                if let Some(t) = o.connect_timeout {
                    connect.connect_timeout =
                        connect.connect_timeout.min(t.max(Duration::from_millis(1)));
                }
                if let Some(t) = o.first_byte_timeout {
                    connect.first_byte_timeout = connect
                        .first_byte_timeout
                        .min(t.max(Duration::from_millis(1)));
                }
            }
            let body = body
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
                .boxed_unsync();
            let resp = policy
                .pool
                .send(&target, &connect, http::Request::from_parts(parts, body))
                .await
                .map_err(|e| {
                    tracing::debug!(kms_id = %policy.kms_id, plugin = %policy.plugin, "outbound request failed: {e}");
                    map_net_error(&e)
                })?;
            let limit = policy.max_response_bytes;
            let declared = resp
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > limit as u64) {
                events.lock().unwrap().push(format!(
                    "response body of {} bytes exceeds the limit of {limit}",
                    declared.unwrap_or(0)
                ));
                return Err(Error::HttpResponseBodySize(declared));
            }
            let (parts, incoming) = resp.into_parts();
            let capped = CappedBody {
                incoming: Some(incoming),
                remaining: limit,
                limit,
                events: events.clone(),
            };
            let resp = http::Response::from_parts(parts, capped.boxed_unsync());
            Ok((
                resp,
                Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// A response body that fails once more than `limit` bytes arrived.
struct CappedBody {
    incoming: Option<hyper::body::Incoming>,
    remaining: usize,
    limit: usize,
    events: Arc<Mutex<Vec<String>>>,
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
                            .lock()
                            .unwrap()
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
