//! The outbound-HTTP capability: one policy object per kmsID
//! ([`HttpPolicy`]) and one enforcement point per resource, used by both
//! ways out of the guest (`kmshost:plugin/outbound-http`, one host call per
//! exchange, and `wasi:http`, for plugins built with other HTTP clients):
//!
//! | resource | enforced by |
//! |---|---|
//! | where: scheme, host, port, `Host` header | [`HttpPolicy::authorize`] (the kmsID's [`AllowList`]) |
//! | which headers the plugin may set | [`forbidden_header`] |
//! | how long: connect and first byte | [`HttpPolicy::connect_within`] (the kmsID's, never longer) |
//! | how much: the response body | [`HttpPolicy::declared_too_large`], then the transport's read cap |
//! | connections | the kmsID's own [`Transport`] (a keep-alive [`net::Pool`]) |
//!
//! Every refusal is logged at debug and recorded in the call's [`Events`],
//! which the host adds to the error it reports. The transport is a trait so
//! tests can put a substitute behind the policy.
//!
//! Both exits stay: `outbound-http` is the fast path (vault bench, KV get
//! 1.20 → 1.07 of native, docs/performance.md) and `wasi:http` serves
//! plugins that bring their own HTTP client; neither has policy of its own.

use super::allow_list::{AllowList, Target};
use super::net::{self, Connect, Fetched, NetError, PoolBody};
use crate::types::KmsId;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

/// A boxed future of a transport.
pub type TransportFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, NetError>> + Send + 'a>>;

/// How the host sends a kmsID's requests once the policy allowed them.
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// The whole exchange: the response with its body read up to `limit`
    /// bytes (`body: None` beyond it).
    fn fetch<'a>(
        &'a self,
        target: &'a Target,
        conn: &'a Connect,
        req: http::Request<PoolBody>,
        limit: usize,
    ) -> TransportFuture<'a, Fetched>;

    /// The response head; its body streams as the caller reads it.
    fn send<'a>(
        &'a self,
        target: &'a Target,
        conn: &'a Connect,
        req: http::Request<PoolBody>,
    ) -> TransportFuture<'a, http::Response<hyper::body::Incoming>>;

    /// Connections kept open and idle now (observability; 0 if unknown).
    fn idle_connections(&self) -> usize {
        0
    }
}

impl Transport for net::Pool {
    fn idle_connections(&self) -> usize {
        self.idle_count()
    }

    fn fetch<'a>(
        &'a self,
        target: &'a Target,
        conn: &'a Connect,
        req: http::Request<PoolBody>,
        limit: usize,
    ) -> TransportFuture<'a, Fetched> {
        Box::pin(net::Pool::fetch(self, target, conn, req, limit))
    }

    fn send<'a>(
        &'a self,
        target: &'a Target,
        conn: &'a Connect,
        req: http::Request<PoolBody>,
    ) -> TransportFuture<'a, http::Response<hyper::body::Incoming>> {
        Box::pin(net::Pool::send(self, target, conn, req))
    }
}

/// Headers a plugin may never set, on either exit: the host sets `host`,
/// and hop-by-hop headers belong to the host's connection. (`outbound-http`
/// also refuses `content-length`, which the host sets from the body;
/// `wasi:http` checks a declared length against the body it sends.)
pub const FORBIDDEN_HEADERS: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "host",
    "http2-settings",
];

/// Whether a plugin may not set header `name`.
pub fn forbidden_header(name: &http::HeaderName) -> bool {
    FORBIDDEN_HEADERS.contains(&name.as_str())
}

/// A kmsID's outbound-HTTP policy.
#[derive(Debug)]
pub struct HttpPolicy {
    /// The kmsID (for logs).
    pub kms_id: KmsId,
    /// The plugin name (for logs).
    pub plugin: String,
    /// Where it may connect.
    pub allow: AllowList,
    /// TLS and the kmsID's timeouts.
    pub connect: Connect,
    /// Largest response body.
    pub max_response_bytes: usize,
    /// How allowed requests are sent: the kmsID's own connections.
    pub transport: Box<dyn Transport>,
    /// The kmsID's idle TLS streams (`tls-stream`, [`super::stream`]).
    pub streams: super::stream::StreamPool,
}

impl HttpPolicy {
    /// The kmsID's connections kept open and idle now.
    pub fn idle_connections(&self) -> usize {
        self.transport.idle_connections()
    }

    /// The policy of `kms_id`'s plugin: `allow`-listed endpoints reached
    /// with `tls` (verifying `server_name` instead of the URL host if set),
    /// connect within min(`timeout`, 10 s) and answer within `timeout`,
    /// bodies up to `max_response_bytes`, on connections of its own.
    pub fn new(
        kms_id: KmsId,
        plugin: String,
        allow: AllowList,
        tls: std::sync::Arc<rustls::ClientConfig>,
        server_name: Option<String>,
        timeout: Duration,
        max_response_bytes: usize,
    ) -> Self {
        HttpPolicy {
            kms_id,
            plugin,
            allow,
            connect: Connect {
                tls: Some(tls),
                server_name,
                connect_timeout: timeout.min(Duration::from_secs(10)),
                first_byte_timeout: timeout,
            },
            max_response_bytes,
            transport: Box::new(net::Pool::default()),
            streams: Default::default(),
        }
    }

    /// Checks `uri` (and a Host header, if the plugin set one) against the
    /// allow-list. A denial is logged at debug and recorded in `events`.
    pub fn authorize(
        &self,
        uri: &http::Uri,
        host_header: Option<&str>,
        events: &Events,
    ) -> Result<Target, String> {
        let scheme = uri.scheme_str().unwrap_or("");
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
        if !matches!(scheme, "http" | "https") {
            return Err(self.deny(events, &format!("scheme {scheme:?} is not HTTP")));
        }
        self.allow
            .check(scheme, authority, host_header)
            .map_err(|denial| self.deny(events, &denial.to_string()))
    }

    /// Records and logs a refusal; the text for the plugin's error.
    pub fn deny(&self, events: &Events, what: &str) -> String {
        let what = crate::plugin_text::sanitize(what);
        tracing::debug!(
            kms_id = %self.kms_id,
            plugin = %self.plugin,
            denial = %what,
            "outbound request denied"
        );
        crate::telemetry::metrics()
            .denials
            .get_or_create(&crate::telemetry::labels(&[
                ("kms_id", &self.kms_id.to_string()),
                ("plugin", &self.plugin),
            ]))
            .inc();
        let denial = format!("outbound request denied: {what}");
        events.push(denial.clone());
        denial
    }

    /// The connection settings, with the plugin's timeouts applied where
    /// they are shorter than the kmsID's (never zero).
    pub fn connect_within(
        &self,
        connect_timeout: Option<Duration>,
        first_byte: Option<Duration>,
    ) -> Connect {
        let shorter = |own: Duration, asked: Option<Duration>| match asked {
            Some(t) => own.min(t.max(Duration::from_millis(1))),
            None => own,
        };
        let mut connect = self.connect.clone();
        connect.connect_timeout = shorter(connect.connect_timeout, connect_timeout);
        connect.first_byte_timeout = shorter(connect.first_byte_timeout, first_byte);
        connect
    }

    /// The declared `content-length` when it exceeds the kmsID's response
    /// cap (recorded in `events`); `None` if it fits or is not declared.
    pub fn declared_too_large(&self, headers: &http::HeaderMap, events: &Events) -> Option<u64> {
        let limit = self.max_response_bytes;
        let declared = net::declared_length(headers).filter(|n| *n > limit as u64)?;
        events.push(format!(
            "response body of {declared} bytes exceeds the limit of {limit}"
        ));
        Some(declared)
    }

    /// Logs a failed exchange (at debug: the error goes to the plugin).
    pub fn failed(&self, e: &NetError) {
        tracing::debug!(kms_id = %self.kms_id, plugin = %self.plugin, "outbound request failed: {e}");
    }
}

/// Denials and limit hits of one call, for the error the host reports: the
/// first [`Events::KEPT`], each sanitized, and a count of the rest, so a
/// plugin looping over refused requests cannot grow host memory.
#[derive(Debug, Default)]
pub struct Events(Mutex<(Vec<String>, usize)>);

impl Events {
    /// Events kept per call.
    pub const KEPT: usize = 8;

    /// Records `event` (plugin text in it is capped and escaped).
    pub fn push(&self, event: String) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.0.len() < Self::KEPT {
            g.0.push(crate::plugin_text::sanitize(&event));
        } else {
            g.1 += 1;
        }
    }

    /// What was recorded since the last call, with a count of what was not
    /// kept.
    pub fn take(&self) -> Vec<String> {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (mut kept, dropped) = (std::mem::take(&mut g.0), std::mem::take(&mut g.1));
        if dropped > 0 {
            kept.push(format!("and {dropped} more"));
        }
        kept
    }
}

/// A substitute transport for tests: records what the policy let through
/// and answers `fetch` with a canned response (capped like the real one).
#[cfg(test)]
pub(crate) mod fake {
    use super::*;
    use std::sync::Arc;

    /// One request as the transport received it.
    #[derive(Debug, Clone)]
    pub struct Sent {
        pub target: String,
        pub method: String,
        pub uri: String,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
        pub connect_timeout: Duration,
        pub first_byte_timeout: Duration,
    }

    impl Sent {
        pub fn header(&self, name: &str) -> Option<String> {
            self.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    /// Records requests; answers `status` with `body`.
    #[derive(Debug, Clone)]
    pub struct Recording {
        sent: Arc<Mutex<Vec<Sent>>>,
        status: u16,
        body: Vec<u8>,
    }

    impl Recording {
        pub fn answering(status: u16, body: &[u8]) -> Self {
            Recording {
                sent: Arc::default(),
                status,
                body: body.to_vec(),
            }
        }

        pub fn requests(&self) -> Vec<Sent> {
            self.sent.lock().unwrap().clone()
        }
    }

    impl Transport for Recording {
        fn fetch<'a>(
            &'a self,
            target: &'a Target,
            conn: &'a Connect,
            req: http::Request<PoolBody>,
            limit: usize,
        ) -> TransportFuture<'a, Fetched> {
            Box::pin(async move {
                use http_body_util::BodyExt;
                let (parts, body) = req.into_parts();
                let body = body.collect().await.expect("request body").to_bytes();
                self.sent.lock().unwrap().push(Sent {
                    target: target.to_string(),
                    method: parts.method.to_string(),
                    uri: parts.uri.to_string(),
                    headers: parts
                        .headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
                        .collect(),
                    body: body.to_vec(),
                    connect_timeout: conn.connect_timeout,
                    first_byte_timeout: conn.first_byte_timeout,
                });
                let (parts, ()) = http::Response::builder()
                    .status(self.status)
                    .body(())
                    .unwrap()
                    .into_parts();
                let body = (self.body.len() <= limit).then(|| self.body.clone());
                Ok(Fetched { parts, body })
            })
        }

        fn send<'a>(
            &'a self,
            target: &'a Target,
            _conn: &'a Connect,
            _req: http::Request<PoolBody>,
        ) -> TransportFuture<'a, http::Response<hyper::body::Incoming>> {
            Box::pin(async move { Err(NetError::Closed(target.to_string())) })
        }
    }

    /// A policy allowing only `https://kms.example:8200`, responses up to
    /// 1 KiB, with `transport` behind it (and a handle on what it saw).
    pub fn policy(transport: Recording) -> (HttpPolicy, Recording) {
        let seen = transport.clone();
        let p = HttpPolicy {
            kms_id: KmsId::new("k").unwrap(),
            plugin: "p".into(),
            allow: AllowList::parse_list("https://kms.example:8200").unwrap(),
            connect: Connect {
                tls: None,
                server_name: None,
                connect_timeout: Duration::from_secs(5),
                first_byte_timeout: Duration::from_secs(10),
            },
            max_response_bytes: 1024,
            transport: Box::new(transport),
            streams: Default::default(),
        };
        (p, seen)
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{Recording, policy};
    use super::*;

    #[test]
    fn denials_are_recorded_sanitized_and_logged_never_sent() {
        let (p, sent) = policy(Recording::answering(200, b""));
        let events = Events::default();
        for (uri, host) in [
            ("https://evil.example:8200/", None),
            ("https://kms.example:8200/", Some("evil.example\nforged")),
        ] {
            let err = p
                .authorize(&uri.parse().unwrap(), host, &events)
                .unwrap_err();
            assert!(err.starts_with("outbound request denied"), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
        assert_eq!(events.take().len(), 2);
        let ok = p.authorize(
            &"https://kms.example:8200/x".parse().unwrap(),
            None,
            &events,
        );
        assert_eq!(ok.unwrap().to_string(), "https://kms.example:8200");
        assert!(sent.requests().is_empty());
    }

    #[test]
    fn a_plugin_may_shorten_timeouts_never_lengthen_or_zero_them() {
        let (p, _) = policy(Recording::answering(200, b""));
        let c = p.connect_within(Some(Duration::from_secs(1)), Some(Duration::from_secs(60)));
        assert_eq!(c.connect_timeout, Duration::from_secs(1));
        assert_eq!(c.first_byte_timeout, Duration::from_secs(10));
        let c = p.connect_within(Some(Duration::ZERO), None);
        assert_eq!(c.connect_timeout, Duration::from_millis(1));
        assert_eq!(c.first_byte_timeout, Duration::from_secs(10));
    }

    #[test]
    fn a_declared_body_over_the_cap_is_recorded() {
        let (p, _) = policy(Recording::answering(200, b""));
        let events = Events::default();
        let mut h = http::HeaderMap::new();
        h.insert(http::header::CONTENT_LENGTH, "1024".parse().unwrap());
        assert_eq!(p.declared_too_large(&h, &events), None);
        h.insert(http::header::CONTENT_LENGTH, "1025".parse().unwrap());
        assert_eq!(p.declared_too_large(&h, &events), Some(1025));
        assert_eq!(events.take().len(), 1);
    }

    #[test]
    fn events_keep_eight_and_count_the_rest() {
        let events = Events::default();
        for i in 0..20 {
            events.push(format!("denied {i}\nforged line"));
        }
        let kept = events.take();
        assert_eq!(kept.len(), Events::KEPT + 1);
        assert_eq!(kept.last().unwrap(), "and 12 more");
        assert!(kept.iter().all(|e| !e.contains('\n')), "{kept:?}");
        assert!(events.take().is_empty(), "taken once");
    }

    /// The host's list covers every header wasmtime would forbid by
    /// default, so `wasi:http` loses nothing by using it.
    #[test]
    fn the_forbidden_list_covers_wasmtimes() {
        for name in wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.iter() {
            assert!(forbidden_header(name), "{name}");
        }
        assert!(!forbidden_header(&http::HeaderName::from_static(
            "authorization"
        )));
    }
}
