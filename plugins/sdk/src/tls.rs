//! TLS byte streams to the kmsID's allowed `tls://` endpoints (the
//! contract's `tls-stream`, 0.1.1), for backends that do not speak HTTP
//! (KMIP). The host connects, verifies the server and presents the
//! kmsID's client certificate: the plugin reads and writes application
//! bytes only.
//!
//! ```ignore
//! use kmshost_plugin_sdk::tls::{Stream, Timeouts};
//! let s = Stream::open("kmip.example:5696", Timeouts::default())?;
//! s.send(&request)?;
//! let head = s.receive_exact(8)?;
//! let body = s.receive_exact(u32::from_be_bytes(head[4..8].try_into().unwrap()))?;
//! s.release(); // back to the kmsID's pool; dropping it closes it
//! ```

use crate::Result;
use crate::host;

/// Timeouts of one use of a stream, in milliseconds; 0 means the call's
/// deadline (the host cuts longer ones to it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect and TLS handshake together.
    pub connect_ms: u32,
    /// Each [`Stream::receive_exact`].
    pub read_ms: u32,
    /// Each [`Stream::send`].
    pub write_ms: u32,
}

/// An open TLS connection. Dropping it closes it; [`Stream::release`]
/// gives it back to the kmsID's pool instead.
pub struct Stream {
    inner: host::StreamHandle,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").finish_non_exhaustive()
    }
}

impl Stream {
    /// Opens a stream to `endpoint` (`host:port`), or takes an idle one of
    /// this kmsID. Fails with `denied` when the endpoint is not allowed or
    /// TLS fails, `unavailable` when it cannot be reached in time.
    pub fn open(endpoint: &str, timeouts: Timeouts) -> Result<Stream> {
        Ok(Stream {
            inner: host::stream_open(endpoint, timeouts)?,
        })
    }

    /// Writes all of `data`.
    pub fn send(&self, data: &[u8]) -> Result<()> {
        host::stream_send(&self.inner, data)
    }

    /// Reads exactly `len` bytes.
    pub fn receive_exact(&self, len: u32) -> Result<Vec<u8>> {
        host::stream_receive_exact(&self.inner, len)
    }

    /// Whether this stream came from the kmsID's pool: a request that
    /// failed on it before any reply byte may be sent again on a new one.
    pub fn reused(&self) -> bool {
        host::stream_reused(&self.inner)
    }

    /// Gives the stream back to the kmsID's pool (call it only between
    /// complete exchanges).
    pub fn release(self) {
        host::stream_release(self.inner)
    }
}
