//! The TLS-stream capability (`kmshost:plugin/tls-stream`): byte streams
//! to a kmsID's allowed `tls://host:port` endpoints, for backends that do
//! not speak HTTP (KMIP). The host connects, verifies the server and
//! presents the kmsID's client certificate with the same TLS settings as
//! its HTTPS traffic; the plugin only reads and writes application bytes.
//!
//! | resource | enforced by |
//! |---|---|
//! | where | the kmsID's [`AllowList`] (`tls://` entries only) via [`HttpPolicy::authorize_stream`] |
//! | how long | [`StreamTimeouts::within`]: connect, each read, each write — each its own, never longer than the kmsID's |
//! | how much | [`CallBytes`]: bytes sent and received per call, each up to `kmshostMaxResponseBytes` |
//! | connections | per instance, counted with `wasi:http` requests in flight (the sandbox's glue); idle ones in the kmsID's own [`StreamPool`] |
//!
//! No wasm types here: the sandbox maps [`StreamError`] to the contract's
//! errors.

use super::allow_list::{Scheme, Target};
use super::http::{Events, HttpPolicy};
use super::net::{self, NetError};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// The TLS stream type.
type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// Most idle streams kept per endpoint.
pub const MAX_IDLE_PER_TARGET: usize = 4;
/// Most idle streams one kmsID keeps over all its endpoints.
pub const MAX_IDLE_PER_POOL: usize = 8;

/// Why a stream operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    /// Refused by the host's policy, or TLS failed (certificate,
    /// handshake): the contract's `denied`.
    #[error("{0}")]
    Denied(String),
    /// The connection could not be made, broke, or was closed: `unavailable`.
    #[error("{0}")]
    Unavailable(String),
    /// A timeout passed: `unavailable`, and the host records it.
    #[error("{0}")]
    TimedOut(String),
    /// A per-call limit would be passed: `other`.
    #[error("{0}")]
    Limit(String),
}

/// The timeouts of one use of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamTimeouts {
    /// TCP connect and TLS handshake together.
    pub connect: Duration,
    /// Each read.
    pub read: Duration,
    /// Each write.
    pub write: Duration,
}

impl StreamTimeouts {
    /// The plugin's timeouts in milliseconds (0: the kmsID's), each cut to
    /// the kmsID's own: `connect` for connecting, `call` for reads and
    /// writes.
    pub fn within(
        connect_ms: u32,
        read_ms: u32,
        write_ms: u32,
        connect: Duration,
        call: Duration,
    ) -> Self {
        let cut = |ms: u32, own: Duration| match ms {
            0 => own,
            ms => own.min(Duration::from_millis(ms.into())),
        };
        StreamTimeouts {
            connect: cut(connect_ms, connect),
            read: cut(read_ms, call),
            write: cut(write_ms, call),
        }
    }
}

/// Bytes sent and received on streams during one call, against the limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallBytes {
    /// Sent so far.
    pub sent: usize,
    /// Received so far.
    pub received: usize,
}

/// One open stream, owned by a plugin instance.
pub struct TlsConn {
    target: Target,
    stream: Option<Tls>,
    reused: bool,
    timeouts: StreamTimeouts,
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn")
            .field("target", &self.target.to_string())
            .field("open", &self.stream.is_some())
            .field("reused", &self.reused)
            .finish()
    }
}

/// Whether an idle stream is still usable: nothing to read (a close, an
/// alert or stray bytes all mean no) and no error.
fn quiet(s: &mut Tls) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    matches!(Pin::new(s).poll_read(&mut cx, &mut buf), Poll::Pending)
}

/// A kmsID's idle streams, per endpoint. Never shared between kmsIDs.
#[derive(Default)]
pub struct StreamPool {
    idle: Mutex<HashMap<String, Vec<Tls>>>,
}

impl std::fmt::Debug for StreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamPool")
            .field("idle", &self.idle_count())
            .finish()
    }
}

impl StreamPool {
    /// An idle stream to `key`, the most recent first; closed ones dropped.
    fn take(&self, key: &str) -> Option<Tls> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(key)?;
        while let Some(mut s) = list.pop() {
            if quiet(&mut s) {
                return Some(s);
            }
        }
        None
    }

    fn put(&self, key: String, s: Tls) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|_, l| !l.is_empty());
        let total: usize = idle.values().map(Vec::len).sum();
        let list = idle.entry(key).or_default();
        if list.len() < MAX_IDLE_PER_TARGET && total < MAX_IDLE_PER_POOL {
            list.push(s);
        }
    }

    /// Idle streams kept now, over all endpoints.
    pub fn idle_count(&self) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.values().map(Vec::len).sum()
    }
}

impl HttpPolicy {
    /// Checks a stream endpoint (`host:port`) against the allow-list's
    /// `tls://` entries. A denial is logged at debug and recorded.
    pub fn authorize_stream(&self, endpoint: &str, events: &Events) -> Result<Target, String> {
        if endpoint.contains("://") || endpoint.contains(['/', '?', '#']) {
            return Err(self.deny(
                events,
                &format!("stream endpoint {endpoint:?} must be host:port"),
            ));
        }
        self.allow.check("tls", endpoint, None).map_err(|denial| {
            self.deny(
                events,
                &format!(
                    "{denial} (add tls://{endpoint} to allowedHosts, or set the endpoint option)"
                ),
            )
        })
    }

    /// Opens a stream to `endpoint`, or takes an idle one of this kmsID.
    pub async fn open_stream(
        &self,
        endpoint: &str,
        timeouts: StreamTimeouts,
        events: &Events,
    ) -> Result<TlsConn, StreamError> {
        let target = self.authorize_stream(endpoint, events).map_err(|d| {
            StreamError::Denied(format!("stream to {endpoint} denied by the host: {d}"))
        })?;
        debug_assert_eq!(target.scheme, Scheme::Tls);
        let key = target.to_string();
        if let Some(s) = self.streams.take(&key) {
            return Ok(TlsConn {
                target,
                stream: Some(s),
                reused: true,
                timeouts,
            });
        }
        let connect = async {
            let tcp = net::connect_tcp(&target, timeouts.connect).await?;
            net::handshake_tls(&target, &self.connect, tcp, timeouts.connect).await
        };
        let stream = crate::deadline::timeout(timeouts.connect, connect)
            .await
            .map_err(|_| NetError::Timeout(key.clone()))
            .and_then(|r| r)
            .map_err(|e| {
                self.failed(&e);
                match e {
                    // TLS refused (certificate, alert, protocol): denied. A
                    // connection reset or closed during the handshake is an
                    // outage like any other.
                    NetError::Tls { ref source, .. }
                        if source
                            .get_ref()
                            .is_some_and(|e| e.downcast_ref::<rustls::Error>().is_some()) =>
                    {
                        StreamError::Denied(format!("TLS refused: {e}"))
                    }
                    NetError::ServerName(_) => StreamError::Denied(format!("TLS: {e}")),
                    NetError::Timeout(_) => {
                        let m = format!(
                            "connecting to {key} timed out after {} ms",
                            timeouts.connect.as_millis()
                        );
                        events.push(m.clone());
                        StreamError::TimedOut(m)
                    }
                    _ => StreamError::Unavailable(e.to_string()),
                }
            })?;
        Ok(TlsConn {
            target,
            stream: Some(stream),
            reused: false,
            timeouts,
        })
    }

    /// Gives `conn` back to the kmsID's pool, unless it failed or has
    /// bytes the plugin did not read.
    pub fn release_stream(&self, conn: TlsConn) {
        let key = conn.target.to_string();
        if let Some(mut s) = conn.stream
            && quiet(&mut s)
        {
            self.streams.put(key, s);
        }
    }

    /// Idle streams this kmsID keeps now.
    pub fn idle_streams(&self) -> usize {
        self.streams.idle_count()
    }
}

impl TlsConn {
    /// Whether it came from the kmsID's pool.
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// The endpoint (`tls://host:port`).
    pub fn target(&self) -> String {
        self.target.to_string()
    }

    /// Sets the timeouts of this use (a reused stream gets its new
    /// opener's).
    pub fn set_timeouts(&mut self, t: StreamTimeouts) {
        self.timeouts = t;
    }

    fn broken(&mut self) -> Result<&mut Tls, StreamError> {
        let target = self.target.to_string();
        self.stream.as_mut().ok_or_else(|| {
            StreamError::Unavailable(format!(
                "the stream to {target} failed earlier and is closed; open a new one"
            ))
        })
    }

    /// Writes all of `data` within the write timeout, counting it in
    /// `bytes` against `limit`.
    pub async fn send(
        &mut self,
        data: &[u8],
        bytes: &mut CallBytes,
        limit: usize,
        events: &Events,
    ) -> Result<(), StreamError> {
        let target = self.target.to_string();
        if bytes.sent.saturating_add(data.len()) > limit {
            let m = format!(
                "sending {} more bytes to {target} would pass the limit of {limit} bytes per call",
                data.len()
            );
            events.push(m.clone());
            self.stream = None;
            return Err(StreamError::Limit(m));
        }
        bytes.sent += data.len();
        let write_timeout = self.timeouts.write;
        let s = self.broken()?;
        let write = async {
            s.write_all(data).await?;
            s.flush().await
        };
        let r = crate::deadline::timeout(write_timeout, write).await;
        self.settle(r, "writing to", write_timeout, events)
    }

    /// Reads exactly `len` bytes within the read timeout, counting them in
    /// `bytes` against `limit` (checked before anything is read).
    pub async fn receive_exact(
        &mut self,
        len: u32,
        bytes: &mut CallBytes,
        limit: usize,
        events: &Events,
    ) -> Result<Vec<u8>, StreamError> {
        let target = self.target.to_string();
        let len = len as usize;
        if bytes.received.saturating_add(len) > limit {
            let m = format!(
                "receiving {len} more bytes from {target} would pass the limit of {limit} bytes per call (kmshostMaxResponseBytes)"
            );
            events.push(m.clone());
            self.stream = None;
            return Err(StreamError::Limit(m));
        }
        bytes.received += len;
        let read_timeout = self.timeouts.read;
        let s = self.broken()?;
        let mut buf = vec![0u8; len];
        let r = crate::deadline::timeout(read_timeout, s.read_exact(&mut buf)).await;
        self.settle(
            r.map(|r| r.map(|_| ())),
            "reading from",
            read_timeout,
            events,
        )?;
        Ok(buf)
    }

    /// The outcome of a read or write; any failure closes the stream.
    fn settle(
        &mut self,
        r: Result<std::io::Result<()>, crate::deadline::Elapsed>,
        what: &str,
        timeout: Duration,
        events: &Events,
    ) -> Result<(), StreamError> {
        let target = self.target.to_string();
        let e = match r {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                StreamError::Unavailable(format!(
                    "{target} closed the connection before all bytes arrived"
                ))
            }
            Ok(Err(e)) => StreamError::Unavailable(format!("{what} {target}: {e}")),
            Err(_) => {
                let m = format!("{what} {target} timed out after {} ms", timeout.as_millis());
                events.push(m.clone());
                StreamError::TimedOut(m)
            }
        };
        tracing::debug!(target = %target, "stream failed: {e}");
        self.stream = None;
        Err(e)
    }
}
