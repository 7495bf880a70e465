//! Where the SDK's host calls go: the component's imports when built for
//! wasm, the [`crate::mock`] host in native unit tests. Nothing else in the
//! SDK calls an import directly.

use crate::Result;
use crate::bindings::kmshost::plugin::outbound_http;

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::*;
    use crate::bindings::kmshost::plugin::{cache, log, secrets};

    pub fn secret(name: &str, key: &str) -> Result<Vec<u8>> {
        secrets::get(name, key)
    }
    pub fn cache_get(key: &str) -> Option<Vec<u8>> {
        cache::get(key)
    }
    pub fn cache_set(key: &str, value: &[u8], ttl_seconds: u32) {
        cache::set(key, value, ttl_seconds)
    }
    pub fn cache_remove(key: &str) {
        cache::remove(key)
    }
    pub fn log(level: log::Level, message: &str) {
        log::log(level, message)
    }
    pub fn http_send(req: &outbound_http::Request) -> Result<outbound_http::Response> {
        outbound_http::send(req)
    }
    pub fn rewrap_offer(blob: &[u8]) -> Result<()> {
        crate::bindings::kmshost::plugin::rewrap::offer(blob)
    }
    pub fn hsm_encrypt(label: &str, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        crate::bindings::kmshost::plugin::hsm::encrypt(label, plaintext, aad)
    }
    pub fn hsm_decrypt(label: &str, ciphertext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        crate::bindings::kmshost::plugin::hsm::decrypt(label, ciphertext, aad)
    }

    pub fn certificate(name: &str) -> Result<crate::signing::CertificateInfo> {
        crate::bindings::kmshost::plugin::signing::certificate(name)
    }
    pub fn sign(
        name: &str,
        alg: crate::signing::Algorithm,
        payload: &[u8],
    ) -> Result<crate::signing::Signed> {
        crate::bindings::kmshost::plugin::signing::sign(name, alg, payload)
    }
    pub fn pause(ms: u64) {
        use crate::bindings::wasi::clocks::monotonic_clock;
        monotonic_clock::subscribe_duration(ms.saturating_mul(1_000_000)).block();
    }

    use crate::bindings::kmshost::plugin::tls_stream;
    pub type StreamHandle = tls_stream::Connection;
    pub fn stream_open(endpoint: &str, t: crate::tls::Timeouts) -> Result<StreamHandle> {
        tls_stream::open(
            endpoint,
            tls_stream::Timeouts {
                connect_ms: t.connect_ms,
                read_ms: t.read_ms,
                write_ms: t.write_ms,
            },
        )
    }
    pub fn stream_send(s: &StreamHandle, data: &[u8]) -> Result<()> {
        s.send(data)
    }
    pub fn stream_receive_exact(s: &StreamHandle, len: u32) -> Result<Vec<u8>> {
        s.receive_exact(len)
    }
    pub fn stream_reused(s: &StreamHandle) -> bool {
        s.reused()
    }
    pub fn stream_release(s: StreamHandle) {
        tls_stream::release(s)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::*;
    use crate::bindings::kmshost::plugin::log;
    use crate::mock;

    pub fn secret(name: &str, key: &str) -> Result<Vec<u8>> {
        mock::with(|h| h.secret_value(name, key))
    }
    pub fn cache_get(key: &str) -> Option<Vec<u8>> {
        mock::with(|h| h.cache.get(key).cloned())
    }
    pub fn cache_set(key: &str, value: &[u8], _ttl_seconds: u32) {
        mock::with(|h| h.cache.insert(key.to_string(), value.to_vec()));
    }
    pub fn cache_remove(key: &str) {
        mock::with(|h| h.cache.remove(key));
    }
    pub fn log(level: log::Level, message: &str) {
        let level = match level {
            log::Level::Trace => "trace",
            log::Level::Debug => "debug",
            log::Level::Info => "info",
            log::Level::Warn => "warn",
            log::Level::Error => "error",
        };
        mock::with(|h| h.logs.push(format!("{level}: {message}")));
    }
    pub fn http_send(req: &outbound_http::Request) -> Result<outbound_http::Response> {
        mock::with(|h| h.http(req))
    }
    pub fn rewrap_offer(blob: &[u8]) -> Result<()> {
        mock::with(|h| h.offer(blob))
    }
    pub fn hsm_encrypt(label: &str, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        mock::with(|h| h.hsm(true, label, plaintext, aad))
    }
    pub fn hsm_decrypt(label: &str, ciphertext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        mock::with(|h| h.hsm(false, label, ciphertext, aad))
    }

    pub fn certificate(name: &str) -> Result<crate::signing::CertificateInfo> {
        mock::with(|h| h.certificate(name))
    }
    pub fn sign(
        name: &str,
        alg: crate::signing::Algorithm,
        payload: &[u8],
    ) -> Result<crate::signing::Signed> {
        mock::with(|h| h.sign(name, alg, payload))
    }
    /// Native tests do not wait.
    pub fn pause(_ms: u64) {}

    /// A mock stream: its id in the mock host, closed when dropped.
    pub struct StreamHandle(usize);
    impl Drop for StreamHandle {
        fn drop(&mut self) {
            mock::try_with(|h| h.stream_close(self.0, false));
        }
    }
    pub fn stream_open(endpoint: &str, _t: crate::tls::Timeouts) -> Result<StreamHandle> {
        mock::with(|h| h.stream_open(endpoint)).map(StreamHandle)
    }
    pub fn stream_send(s: &StreamHandle, data: &[u8]) -> Result<()> {
        mock::with(|h| h.stream_send(s.0, data))
    }
    pub fn stream_receive_exact(s: &StreamHandle, len: u32) -> Result<Vec<u8>> {
        mock::with(|h| h.stream_receive(s.0, len))
    }
    pub fn stream_reused(s: &StreamHandle) -> bool {
        mock::with(|h| h.stream_reused(s.0))
    }
    pub fn stream_release(s: StreamHandle) {
        mock::with(|h| h.stream_close(s.0, true));
        std::mem::forget(s);
    }
}

pub(crate) use imp::*;
