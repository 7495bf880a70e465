//! One HTTP/1.1 exchange over TCP or TLS, used for plugin traffic (after the
//! allow-list said yes) and for the host's own Kubernetes API calls.

use crate::capability::allow_list::{Host, Scheme, Target};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Why an exchange failed before a response arrived.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// TCP connect failed.
    #[error("connecting to {target}: {source}")]
    Connect {
        /// Where.
        target: String,
        /// Why.
        source: std::io::Error,
    },
    /// Connect or first-byte timeout.
    #[error("timed out talking to {0}")]
    Timeout(String),
    /// The TLS handshake failed (certificate, protocol).
    #[error("TLS with {target}: {source}")]
    Tls {
        /// Where.
        target: String,
        /// Why.
        source: std::io::Error,
    },
    /// The server name is not valid for TLS.
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    /// HTTP protocol error.
    #[error("HTTP with {target}: {source}")]
    Http {
        /// Where.
        target: String,
        /// Why.
        source: hyper::Error,
    },
}

impl NetError {
    /// Whether this is a certificate verification failure.
    pub fn is_certificate_error(&self) -> bool {
        match self {
            NetError::Tls { source, .. } => source
                .get_ref()
                .and_then(|e| e.downcast_ref::<rustls::Error>())
                .is_some_and(|e| {
                    matches!(
                        e,
                        rustls::Error::InvalidCertificate(_)
                            | rustls::Error::NoCertificatesPresented
                    )
                }),
            _ => false,
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// Connection parameters.
#[derive(Clone)]
pub struct Connect {
    /// TLS client config for https targets.
    pub tls: Option<Arc<ClientConfig>>,
    /// Name to verify instead of the target host.
    pub server_name: Option<String>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Time to the response head.
    pub first_byte_timeout: Duration,
}

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connect")
            .field("tls", &self.tls.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// The request body type of pooled connections.
pub type PoolBody =
    http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Most idle connections kept per target.
pub const MAX_IDLE_PER_TARGET: usize = 8;

/// Keep-alive connections of one kmsID, per target. Never shared between
/// kmsIDs (each has its own TLS identity and allow-list).
#[derive(Default)]
pub struct Pool {
    idle: std::sync::Mutex<
        std::collections::HashMap<String, Vec<hyper::client::conn::http1::SendRequest<PoolBody>>>,
    >,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n: usize = self.idle.lock().unwrap().values().map(Vec::len).sum();
        f.debug_struct("Pool").field("idle", &n).finish()
    }
}

impl Pool {
    /// Sends `req` (origin-form URI) to `target`, reusing an idle connection
    /// if one is ready; the response body streams while the connection task
    /// (spawned on the current runtime) runs.
    pub async fn send(
        &self,
        target: &Target,
        conn: &Connect,
        req: http::Request<PoolBody>,
    ) -> Result<http::Response<hyper::body::Incoming>, NetError> {
        let key = target.to_string();
        let reused = {
            let mut idle = self.idle.lock().unwrap();
            let list = idle.entry(key.clone()).or_default();
            list.retain(|s| !s.is_closed());
            list.iter()
                .position(|s| s.is_ready())
                .map(|i| list.swap_remove(i))
        };
        let mut sender = match reused {
            Some(s) => s,
            None => connect::<PoolBody>(target, conn).await?,
        };
        let resp = crate::deadline::timeout(conn.first_byte_timeout, sender.send_request(req))
            .await
            .map_err(|_| NetError::Timeout(key.clone()))?
            .map_err(|source| NetError::Http {
                target: key.clone(),
                source,
            })?;
        // Back to the pool: it becomes ready again once this response's
        // body has been read; until then `send` skips it.
        let mut idle = self.idle.lock().unwrap();
        let list = idle.entry(key).or_default();
        if list.len() < MAX_IDLE_PER_TARGET {
            list.push(sender);
        }
        Ok(resp)
    }
}

/// Opens a connection (TCP, TLS for https) and performs the HTTP/1.1
/// handshake; the connection task is spawned.
async fn connect<B>(
    target: &Target,
    conn: &Connect,
) -> Result<hyper::client::conn::http1::SendRequest<B>, NetError>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let t = target.to_string();
    let addr = match &target.host {
        Host::Name(n) => format!("{n}:{}", target.port),
        Host::V4(a) => format!("{a}:{}", target.port),
        Host::V6(a) => format!("[{a}]:{}", target.port),
    };
    let tcp = crate::deadline::timeout(conn.connect_timeout, TcpStream::connect(&addr))
        .await
        .map_err(|_| NetError::Timeout(t.clone()))?
        .map_err(|source| NetError::Connect {
            target: t.clone(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Stream> = match target.scheme {
        Scheme::Http => Box::new(tcp),
        Scheme::Https => {
            let tls = conn
                .tls
                .clone()
                .ok_or_else(|| NetError::ServerName("no TLS configuration".into()))?;
            let name =
                match (&conn.server_name, &target.host) {
                    (Some(n), _) => ServerName::try_from(n.clone())
                        .map_err(|_| NetError::ServerName(n.clone()))?,
                    (None, Host::Name(n)) => ServerName::try_from(n.clone())
                        .map_err(|_| NetError::ServerName(n.clone()))?,
                    (None, Host::V4(a)) => ServerName::IpAddress((*a).into()),
                    (None, Host::V6(a)) => ServerName::IpAddress((*a).into()),
                };
            let s = crate::deadline::timeout(
                conn.connect_timeout,
                tokio_rustls::TlsConnector::from(tls).connect(name, tcp),
            )
            .await
            .map_err(|_| NetError::Timeout(t.clone()))?
            .map_err(|source| NetError::Tls {
                target: t.clone(),
                source,
            })?;
            Box::new(s)
        }
    };
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|source| NetError::Http {
            target: t.clone(),
            source,
        })?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Reads a whole body up to `limit` bytes; `None` if it is larger.
pub async fn read_body_limited(
    body: hyper::body::Incoming,
    limit: usize,
) -> Result<Option<Vec<u8>>, hyper::Error> {
    let mut out = Vec::new();
    let mut body = body;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if out.len() + data.len() > limit {
                return Ok(None);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(Some(out))
}
