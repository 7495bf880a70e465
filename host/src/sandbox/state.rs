//! What lives in each plugin store: the WASI context (with no capabilities),
//! the `wasi:http` context and its outbound hook, the memory limiter, and
//! the host side of the contract's imports (`secrets`, `outbound-http`,
//! `cache`, `log`).

use super::bindings::kmshost::plugin::{cache, log, outbound_http, rewrap, secrets, types};
use super::kv_cache::KvCache;
use super::outbound::OutboundHooks;
use crate::secrets::{Grants, SecretError, SecretSource};
use crate::types::{KmsId, SecretBytes};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use types::KmsError as WitError;

/// Bytes of stdout/stderr kept per instance (the rest is dropped).
pub const CAPTURE_BYTES: usize = 16 << 10;
/// Longest log message passed on from a plugin (escaped, then capped).
pub const MAX_LOG_MESSAGE: usize = super::plugin_text::MAX_PLUGIN_TEXT;
/// Log records a plugin may emit per call.
pub const MAX_LOG_RECORDS_PER_CALL: u32 = 200;
/// Host resources (WASI streams, `wasi:http` fields, requests, responses,
/// bodies, …) one instance may hold at once.
pub const MAX_RESOURCES: usize = 256;
/// Bytes of headers one `wasi:http` `fields` resource may hold.
pub const MAX_FIELDS_BYTES: usize = 16 << 10;

/// The per-kmsID pieces every store of that kmsID shares.
#[derive(Debug)]
pub struct KmsShared {
    /// The kmsID.
    pub kms_id: KmsId,
    /// The plugin name.
    pub plugin: String,
    /// The Secrets it may read.
    pub grants: Grants,
    /// Where Secret values come from.
    pub secrets: Arc<dyn SecretSource>,
    /// The kmsID's cache.
    pub cache: Arc<KvCache>,
    /// The kmsID's HSM, if its entry names one.
    pub hsm: Option<Arc<super::hsm::HsmGrant>>,
    /// The certificates it may sign with.
    pub signing: Arc<super::signing::SigningGrant>,
    /// Its metric counters.
    pub counters: crate::telemetry::RuntimeCounters,
}

/// Enforces the per-kmsID memory cap and records that it was hit.
#[derive(Debug)]
pub struct MemoryLimiter {
    /// The cap in bytes.
    pub max_bytes: usize,
    /// Set once a growth past the cap was refused.
    pub exceeded: bool,
    /// The largest size a memory of the instance grew to.
    pub peak: usize,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.exceeded = true;
            return Err(wasmtime::Error::msg(format!(
                "memory limit of {} bytes exceeded",
                self.max_bytes
            )));
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }
    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 16)
    }
}

/// stdout/stderr of a plugin: kept up to a cap, then discarded.
#[derive(Clone, Debug, Default)]
pub struct Capture {
    buf: Arc<Mutex<(Vec<u8>, usize)>>,
}

impl Capture {
    /// Takes what was captured and how many bytes were dropped.
    pub fn take(&self) -> (Vec<u8>, usize) {
        let mut g = self.buf.lock().unwrap();
        let out = std::mem::take(&mut g.0);
        let dropped = std::mem::take(&mut g.1);
        (out, dropped)
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl Capture {
    /// Keeps what fits under [`CAPTURE_BYTES`], counts the rest.
    fn keep(&self, buf: &[u8]) {
        let mut g = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        let room = CAPTURE_BYTES.saturating_sub(g.0.len());
        let keep = room.min(buf.len());
        g.0.extend_from_slice(&buf[..keep]);
        g.1 += buf.len() - keep;
    }
}

impl StdoutStream for Capture {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
    /// A synchronous stream, not Wasmtime's `AsyncWriteStream`: that one
    /// queues every write for a worker task, empty writes included (which
    /// cost no budget, so a plugin looping on them grows host memory without
    /// bound), and traces each write's bytes at debug.
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        self.keep(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always ready; what does not fit the cap is counted and dropped.
        Ok(CAPTURE_BYTES)
    }
}

#[async_trait::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.keep(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The data of one plugin store.
pub struct HostState {
    /// Shared per-kmsID pieces.
    pub shared: Arc<KmsShared>,
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    /// The outbound hook.
    pub hooks: OutboundHooks,
    /// The memory limiter.
    pub limiter: MemoryLimiter,
    /// Captured stdout and stderr, together.
    pub output: Capture,
    /// Log records emitted in the current call.
    pub log_records: u32,
    /// Capability denials seen in the current call (for error messages).
    pub denials: Vec<String>,
    /// Bytes sent and received on TLS streams in the current call.
    pub stream_bytes: crate::capability::stream::CallBytes,
    /// Whether a stream timed out in the current call (the error is then a
    /// timeout, not an outage).
    pub timed_out: bool,
    /// The deadline of the current operation: until then the guest yields
    /// to the executor on every epoch tick; at it, it is interrupted.
    pub until: Option<std::time::Instant>,
    /// `rewrap.offer` in the current call.
    pub rewrap: RewrapSlot,
    /// `hsm` calls in the current call.
    pub hsm_calls: u32,
    /// `signing` calls in the current call.
    pub signing_calls: u32,
}

/// What `rewrap.offer` may do in the current call, and what it left.
#[derive(Default)]
pub struct RewrapSlot {
    /// Whether the current call is an `unwrap` (the only one that may offer).
    pub open: bool,
    /// The blob offered, at most one per call.
    pub offered: Option<Vec<u8>>,
}

impl std::fmt::Debug for RewrapSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RewrapSlot")
            .field("open", &self.open)
            .field("offered_bytes", &self.offered.as_ref().map(Vec::len))
            .finish()
    }
}

impl HostState {
    /// A store state with no ambient capabilities: no preopened
    /// directories, no environment, no arguments, sockets and name lookup
    /// denied, stdin empty, stdout/stderr captured.
    pub fn new(shared: Arc<KmsShared>, hooks: OutboundHooks, memory_bytes: usize) -> Self {
        let output = Capture::default();
        let mut b = WasiCtx::builder();
        b.stdout(output.clone())
            .stderr(output.clone())
            .allow_blocking_current_thread(false)
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .socket_addr_check(|_, _| Box::pin(async { false }));
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(MAX_FIELDS_BYTES);
        HostState {
            shared,
            wasi: b.build(),
            table,
            http,
            hooks,
            limiter: MemoryLimiter {
                max_bytes: memory_bytes,
                exceeded: false,
                peak: 0,
            },
            output,
            log_records: 0,
            denials: Vec::new(),
            stream_bytes: Default::default(),
            timed_out: false,
            until: None,
            rewrap: RewrapSlot::default(),
            hsm_calls: 0,
            signing_calls: 0,
        }
    }

    /// The resource table (the stream glue's).
    pub(super) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// How many host resources the instance holds.
    pub fn resources(&mut self) -> usize {
        self.table.iter_mut().count()
    }

    pub(super) fn deny(&mut self, what: String) -> WitError {
        // `what` names what the plugin asked for: its text, so capped.
        let what = super::plugin_text::sanitize(&what);
        tracing::debug!(kms_id = %self.shared.kms_id, plugin = %self.shared.plugin, "denied: {what}");
        if self.denials.len() < super::outbound::Events::KEPT {
            self.denials.push(what.clone());
        }
        WitError::Denied(what)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl types::Host for HostState {}

impl secrets::Host for HostState {
    async fn get(
        &mut self,
        name: String,
        key: String,
    ) -> wasmtime::Result<Result<Vec<u8>, WitError>> {
        let Some(secret) = self.shared.grants.lookup(&name).cloned() else {
            let kms_id = self.shared.kms_id.clone();
            if self.shared.grants.is_withheld(&name) {
                return Ok(Err(self.deny(format!(
                    "Secret {name:?} holds kmsID {kms_id}'s TLS material, HSM PIN or signing key: the host reads it, plugins never do"
                ))));
            }
            return Ok(Err(self.deny(format!(
                "Secret {name:?} is not granted to kmsID {kms_id}"
            ))));
        };
        if self.shared.grants.is_withheld_key(&secret, &key) {
            let kms_id = self.shared.kms_id.clone();
            return Ok(Err(self.deny(format!(
                "key {key:?} of Secret {name:?} is kmsID {kms_id}'s TLS material: the host reads it, plugins never do"
            ))));
        }
        match self.shared.secrets.read(&secret).await {
            Ok(Some(data)) => match data.get(&key) {
                Some(v) => Ok(Ok(v.expose().to_vec())),
                None => Ok(Err(WitError::NotFound(format!(
                    "Secret {secret} has no key {key:?}"
                )))),
            },
            Ok(None) => Ok(Err(WitError::NotFound(format!(
                "Secret {secret} not found"
            )))),
            Err(SecretError::Denied { secret, message }) => {
                Ok(Err(WitError::Denied(format!("Secret {secret}: {message}"))))
            }
            Err(e) => Ok(Err(WitError::Unavailable(e.to_string()))),
        }
    }
}

impl outbound_http::Host for HostState {
    async fn send(
        &mut self,
        request: outbound_http::Request,
    ) -> wasmtime::Result<Result<outbound_http::Response, WitError>> {
        Ok(self.hooks.exchange(request).await)
    }
}

impl cache::Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        let v = self.shared.cache.get(&key);
        let c = &self.shared.counters;
        let counter = if v.is_some() {
            &c.cache_hits
        } else {
            &c.cache_misses
        };
        counter.inc();
        Ok(v.map(|v| v.expose().to_vec()))
    }
    async fn set(&mut self, key: String, value: Vec<u8>, ttl_seconds: u32) -> wasmtime::Result<()> {
        // What a plugin keeps after a login (a token) or a KDF run: the
        // host's view of the kmsID's login rate.
        self.shared.counters.cache_stored.inc();
        self.shared.cache.set(
            &key,
            SecretBytes::new(value),
            Duration::from_secs(ttl_seconds.into()),
        );
        Ok(())
    }
    async fn remove(&mut self, key: String) -> wasmtime::Result<()> {
        self.shared.cache.remove(&key);
        Ok(())
    }
}

impl rewrap::Host for HostState {
    async fn offer(&mut self, blob: Vec<u8>) -> wasmtime::Result<Result<(), WitError>> {
        let max = crate::types::WrappedKey::MAX_BYTES;
        let refused = if !self.rewrap.open {
            Some(
                "rewrap.offer outside unwrap: only an unwrap may hand back a rewrapped key"
                    .to_string(),
            )
        } else if self.rewrap.offered.is_some() {
            Some(
                "rewrap.offer called twice in one unwrap: the host keeps at most one blob"
                    .to_string(),
            )
        } else if blob.len() > max {
            Some(format!(
                "rewrap.offer of {} bytes: the host keeps blobs of at most {max} bytes",
                blob.len()
            ))
        } else {
            None
        };
        if let Some(what) = refused {
            return Ok(Err(self.deny(what)));
        }
        self.rewrap.offered = Some(blob);
        Ok(Ok(()))
    }
}

impl log::Host for HostState {
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        self.log_records += 1;
        if self.log_records > MAX_LOG_RECORDS_PER_CALL {
            return Ok(());
        }
        let message = super::plugin_text::sanitize_to(&message, MAX_LOG_MESSAGE);
        let kms_id = &self.shared.kms_id;
        let plugin = &self.shared.plugin;
        match level {
            log::Level::Trace => tracing::trace!(%kms_id, %plugin, "{message}"),
            log::Level::Debug => tracing::debug!(%kms_id, %plugin, "{message}"),
            log::Level::Info => tracing::info!(%kms_id, %plugin, "{message}"),
            log::Level::Warn => tracing::warn!(%kms_id, %plugin, "{message}"),
            log::Level::Error => tracing::error!(%kms_id, %plugin, "{message}"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plugin's stdout as the host hands it out: writes land at once
    /// (no worker task, no queue — so empty writes cannot pile up), and
    /// what passes the cap is counted, not kept.
    #[test]
    fn stdout_is_captured_synchronously_and_bounded() {
        let capture = Capture::default();
        let mut out = StdoutStream::p2_stream(&capture);
        for _ in 0..100_000 {
            out.write(bytes::Bytes::new()).unwrap();
        }
        out.write(bytes::Bytes::from_static(b"hello")).unwrap();
        assert_eq!(capture.take(), (b"hello".to_vec(), 0), "written at once");
        let big = bytes::Bytes::from(vec![b'x'; CAPTURE_BYTES + 100]);
        assert_eq!(out.check_write().unwrap(), CAPTURE_BYTES);
        out.write(big).unwrap();
        out.write(bytes::Bytes::from_static(b"more")).unwrap();
        let (kept, dropped) = capture.take();
        assert_eq!(kept.len(), CAPTURE_BYTES);
        assert_eq!(dropped, 104);
    }
}
