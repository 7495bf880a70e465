//! Guest-side SDK for kmshost KMS plugins.
//!
//! A plugin implements [`Provider`] and exports it with [`export_provider!`]:
//!
//! ```ignore
//! use kmshost_plugin_sdk::{Provider, Options, PluginInfo, Capabilities, KmsError, Result};
//!
//! struct MyKms { endpoint: String }
//!
//! impl Provider for MyKms {
//!     fn info() -> PluginInfo { /* ... */ }
//!     fn configure(options: &mut Options) -> Result<Self> {
//!         Ok(MyKms { endpoint: options.required("MY_ENDPOINT")? })
//!     }
//!     fn get(&self, key_id: &str) -> Result<Vec<u8>> { /* http::Request::get(...).send() */ }
//! }
//! kmshost_plugin_sdk::export_provider!(MyKms);
//! ```
//!
//! The SDK hides the generated WIT bindings (still reachable as [`bindings`]),
//! validates options (unknown options are an error naming the option), maps
//! HTTP statuses to [`KmsError`] cases, and gives plain access to the host's
//! secrets, cache and log, and to TLS byte streams ([`tls`]) for backends
//! that do not speak HTTP.

pub mod encoding;
mod host;
pub mod http;
#[cfg(not(target_arch = "wasm32"))]
pub mod mock;
mod options;
pub mod tls;

pub use options::{Options, check_identifier};

/// The bindings generated from `wit/` (the `kms-plugin` world).
pub mod bindings {
    wit_bindgen::generate!({
        world: "kms-plugin",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "export_bindings",
        default_bindings_module: "kmshost_plugin_sdk::bindings",
        generate_all,
    });
}

pub use bindings::kmshost::plugin::types::{Capabilities, ConfigError, KmsError, PluginInfo};

/// Result of a plugin operation.
pub type Result<T> = core::result::Result<T, KmsError>;

/// A KMS provider. `configure` builds the provider from the kmsID's options;
/// the SDK keeps it for the life of the instance and routes every other call
/// to it. Operations a provider does not support keep their default, which
/// fails with `unsupported`.
pub trait Provider: Sized + 'static {
    /// Describes the plugin.
    fn info() -> PluginInfo;
    /// Builds the provider from the kmsID's options. Take every option you
    /// understand from `options`; any left over is reported as unknown.
    fn configure(options: &mut Options) -> Result<Self>;
    /// Key store: the key stored for `key_id`.
    fn get(&self, key_id: &str) -> Result<Vec<u8>> {
        let _ = key_id;
        Err(KmsError::Unsupported("get".into()))
    }
    /// Key store: store `key` for `key_id`.
    fn put(&self, key_id: &str, key: &[u8]) -> Result<()> {
        let _ = (key_id, key);
        Err(KmsError::Unsupported("put".into()))
    }
    /// Key store: remove the key for `key_id` (idempotent).
    fn delete(&self, key_id: &str) -> Result<()> {
        let _ = key_id;
        Err(KmsError::Unsupported("delete".into()))
    }
    /// Envelope: wrap `plaintext` for `key_id`, binding `key_id`.
    fn wrap(&self, key_id: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let _ = (key_id, plaintext);
        Err(KmsError::Unsupported("wrap".into()))
    }
    /// Envelope: unwrap a blob produced by `wrap` for the same `key_id`.
    fn unwrap(&self, key_id: &str, ciphertext: &[u8]) -> Result<Vec<u8>> {
        let _ = (key_id, ciphertext);
        Err(KmsError::Unsupported("unwrap".into()))
    }
}

/// Builds an `invalid-config` error naming `option`.
pub fn invalid_config(option: &str, message: impl Into<String>) -> KmsError {
    KmsError::InvalidConfig(ConfigError {
        option: option.to_string(),
        message: message.into(),
    })
}

/// Checks a service URL option (`http://` or `https://`, a host, an
/// optional path prefix; no query, fragment or spaces) and returns it
/// without a trailing `/`, ready for `format!("{base}/path")`. Whether
/// plain `http://` may be used is the host's allow-list's decision.
pub fn base_url(option: &str, url: &str) -> Result<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| invalid_config(option, "must be an https:// URL"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(invalid_config(option, "has no host"));
    }
    if url.contains(['?', '#']) || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid_config(
            option,
            "must be a plain URL (no query, fragment or spaces)",
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// The pseudo-Secret through which the host grants the driver's
/// service-account token (key `token`) to types that talk to, or log in
/// with, the Kubernetes API.
pub const SERVICE_ACCOUNT_SECRET: &str = "kubernetes-service-account";

/// Reads `key` of the Secret `name` granted to this kmsID.
pub fn secret(name: &str, key: &str) -> Result<Vec<u8>> {
    host::secret(name, key)
}

/// Reads `key` of the granted Secret `name` as UTF-8 text, trimming one
/// trailing newline (kubectl-created Secrets often carry one).
pub fn secret_string(name: &str, key: &str) -> Result<String> {
    let bytes = secret(name, key)?;
    let mut s = String::from_utf8(bytes)
        .map_err(|_| KmsError::Other(format!("secret {name}/{key} is not UTF-8")))?;
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    Ok(s)
}

/// Hands the host the key being unwrapped, wrapped again by the backend
/// under its current key version (contract 0.1.2, `rewrap.offer`): call
/// it from [`Provider::unwrap`], at most once, with a blob your `unwrap`
/// accepts for the same key-id. The host checks it and keeps it with the
/// volume in place of the old one. Outside `unwrap`, twice, or beyond the
/// host's blob size limit it fails with `denied`; a failure need not fail
/// the unwrap (the old blob still works).
pub fn offer_rewrapped(blob: &[u8]) -> Result<()> {
    host::rewrap_offer(blob)
}

/// Keys in the kmsID's HSM, used by the host (contract 0.1.3, the `hsm`
/// import): AES-GCM under the key with a granted label; the output is
/// IV (12 bytes) ‖ ciphertext ‖ tag (16 bytes). The plugin never sees the
/// module, the PIN or the key.
pub mod hsm {
    use crate::{Result, host};

    /// Seals `plaintext` under the key `label`, authenticating `aad`.
    pub fn encrypt(label: &str, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        host::hsm_encrypt(label, plaintext, aad)
    }
    /// Opens what [`encrypt`] sealed with the same `label` and `aad`.
    pub fn decrypt(label: &str, ciphertext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        host::hsm_decrypt(label, ciphertext, aad)
    }
}

/// Signatures made by the host with the private key of a certificate the
/// kmsID grants (contract 0.1.4, the `signing` import): for a JWT client
/// assertion, get the thumbprints with [`signing::certificate`], build the
/// header and claims, and have the host [`signing::sign`] them. The
/// plugin never sees the key. `name` is the value of the kmsID's
/// `signing-cert` option.
pub mod signing {
    pub use crate::bindings::kmshost::plugin::signing::{Algorithm, CertificateInfo, Signed};
    use crate::{Result, host};

    /// The certificate's thumbprints (`x5t`, `x5t#S256`) and chain.
    pub fn certificate(name: &str) -> Result<CertificateInfo> {
        host::certificate(name)
    }
    /// Signs `payload` with the certificate's key; the result names the
    /// certificate that signed (compare its thumbprint with the header's).
    pub fn sign(name: &str, algorithm: Algorithm, payload: &[u8]) -> Result<Signed> {
        host::sign(name, algorithm, payload)
    }
}

/// Waits `ms` milliseconds (a retry's back-off); returns at once in native
/// unit tests.
pub fn pause(ms: u64) {
    host::pause(ms)
}

/// The host's per-kmsID cache (see the `cache` interface).
pub mod cache {
    use crate::host;

    /// How long to keep a login token that lives `expires_in` seconds:
    /// until a minute before it expires (a tenth of its life earlier for
    /// short-lived ones; a minute when the service gives no lifetime).
    pub fn token_ttl(expires_in: u64) -> u32 {
        let ttl = match expires_in {
            0 => 60,
            s if s > 600 => s - 60,
            s => (s * 9 / 10).max(1),
        };
        ttl.min(u32::MAX as u64) as u32
    }

    /// The entry for `key`, if present and not expired.
    pub fn get(key: &str) -> Option<Vec<u8>> {
        host::cache_get(key)
    }
    /// Store `value` under `key` for `ttl_seconds`.
    pub fn set(key: &str, value: &[u8], ttl_seconds: u32) {
        host::cache_set(key, value, ttl_seconds)
    }
    /// Remove the entry for `key`.
    pub fn remove(key: &str) {
        host::cache_remove(key)
    }

    /// The login token cached under `key` (as stored by
    /// [`crate::http::Response::bearer_token`]), if present and not
    /// expired; an entry that is not UTF-8 is an error, never a token.
    pub fn token(key: &str) -> crate::Result<Option<zeroize::Zeroizing<String>>> {
        get(key)
            .map(|t| Ok(zeroize::Zeroizing::new(String::from_utf8(t)?)))
            .transpose()
    }

    /// Forgets the entry under `key` (a service refused the token it
    /// holds); returns whether there was one, so the caller logs in again
    /// once rather than for ever.
    pub fn forget(key: &str) -> bool {
        let had = get(key).is_some();
        remove(key);
        had
    }
}

/// Logging into the host's log (never log secrets).
pub mod log {
    use crate::bindings::kmshost::plugin::log::Level;
    use crate::host::log;

    /// Logs at debug level.
    pub fn debug(message: &str) {
        log(Level::Debug, message)
    }
    /// Logs at info level.
    pub fn info(message: &str) {
        log(Level::Info, message)
    }
    /// Logs at warn level.
    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }
    /// Logs at error level.
    pub fn error(message: &str) {
        log(Level::Error, message)
    }
}

#[doc(hidden)]
pub mod __private {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    thread_local! {
        static STATE: RefCell<Option<Rc<dyn std::any::Any>>> = const { RefCell::new(None) };
    }

    pub fn configure<P: Provider>(options: Vec<(String, String)>) -> Result<()> {
        let mut opts = Options::new(options);
        let provider = P::configure(&mut opts)?;
        opts.finish()?;
        STATE.with(|s| *s.borrow_mut() = Some(Rc::new(provider)));
        Ok(())
    }

    pub fn with<P: Provider, T>(f: impl FnOnce(&P) -> Result<T>) -> Result<T> {
        let state = STATE.with(|s| s.borrow().clone());
        let state = state.ok_or_else(|| KmsError::Other("plugin used before configure".into()))?;
        let p = state
            .downcast_ref::<P>()
            .ok_or_else(|| KmsError::Other("plugin state has the wrong type".into()))?;
        f(p)
    }
}

/// Embeds the plugin's manifest — a JSON file, `kmshost-plugin.json` by
/// convention — into the component as the custom section
/// [`MANIFEST_SECTION`], where the host reads it before instantiating:
///
/// ```ignore
/// kmshost_plugin_sdk::manifest!("../kmshost-plugin.json");
/// ```
///
/// The path is relative to the file that invokes the macro. The manifest
/// declares the contract version, the types served with their capabilities,
/// and every option with its kind; the host derives the kmsID's allow-list
/// and Secret grants from it (docs/plugin-guide.md, "The manifest").
#[macro_export]
macro_rules! manifest {
    ($path:literal) => {
        #[unsafe(link_section = "kmshost:manifest")]
        #[used]
        #[doc(hidden)]
        static __KMSHOST_MANIFEST: [u8; include_bytes!($path).len()] = *include_bytes!($path);
    };
}

/// The name of the custom section holding the plugin's manifest.
pub const MANIFEST_SECTION: &str = "kmshost:manifest";

/// Exports a [`Provider`] implementation as the plugin's `provider` interface.
#[macro_export]
macro_rules! export_provider {
    ($ty:ty) => {
        #[doc(hidden)]
        pub struct __KmshostExport;

        impl $crate::bindings::exports::kmshost::plugin::provider::Guest for __KmshostExport {
            fn info() -> $crate::PluginInfo {
                <$ty as $crate::Provider>::info()
            }
            fn configure(options: Vec<(String, String)>) -> $crate::Result<()> {
                $crate::__private::configure::<$ty>(options)
            }
            fn get(key_id: String) -> $crate::Result<Vec<u8>> {
                $crate::__private::with::<$ty, _>(|p| $crate::Provider::get(p, &key_id))
            }
            fn put(key_id: String, key: Vec<u8>) -> $crate::Result<()> {
                $crate::__private::with::<$ty, _>(|p| $crate::Provider::put(p, &key_id, &key))
            }
            fn delete(key_id: String) -> $crate::Result<()> {
                $crate::__private::with::<$ty, _>(|p| $crate::Provider::delete(p, &key_id))
            }
            fn wrap(key_id: String, plaintext: Vec<u8>) -> $crate::Result<Vec<u8>> {
                $crate::__private::with::<$ty, _>(|p| {
                    $crate::Provider::wrap(p, &key_id, &plaintext)
                })
            }
            fn unwrap(key_id: String, ciphertext: Vec<u8>) -> $crate::Result<Vec<u8>> {
                $crate::__private::with::<$ty, _>(|p| {
                    $crate::Provider::unwrap(p, &key_id, &ciphertext)
                })
            }
        }

        $crate::bindings::export_bindings!(__KmshostExport);
    };
}

#[cfg(test)]
mod tests {
    use crate::mock::MockHost;

    #[test]
    fn base_urls_are_checked_and_trimmed() {
        for (url, want) in [
            (
                "https://kv.vault.azure.net/",
                Ok("https://kv.vault.azure.net"),
            ),
            ("https://h:8443/prefix//", Ok("https://h:8443/prefix")),
            ("http://127.0.0.1:9", Ok("http://127.0.0.1:9")),
            ("kv.vault.azure.net", Err("must be an https:// URL")),
            ("https://", Err("has no host")),
            ("https:///x", Err("has no host")),
            ("https://h/?q=1", Err("plain URL")),
            ("https://h/a b", Err("plain URL")),
        ] {
            match (super::base_url("URL_OPT", url), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, w, "{url}"),
                (Err(crate::KmsError::InvalidConfig(e)), Err(w)) => {
                    assert_eq!(e.option, "URL_OPT");
                    assert!(e.message.contains(w), "{url}: {}", e.message);
                }
                (got, _) => panic!("{url}: {got:?}"),
            }
        }
    }

    #[test]
    fn bearer_tokens_are_cached_for_their_lifetime_and_never_printed() {
        let h = MockHost::new().install();
        let reply = |body: &str| MockHost::reply(200, body);
        let t = reply(r#"{"access_token":"tok-1","token_type":"Bearer","expires_in":3600}"#)
            .bearer_token("k", "login")
            .unwrap();
        assert_eq!(t.as_str(), "tok-1");
        assert_eq!(h.cached("k").unwrap(), b"tok-1");
        for bad in [
            r#"{"access_token":"","token_type":"Bearer"}"#,
            r#"{"access_token":"tok-2","token_type":"mac"}"#,
            r#"{"token":"tok-3"}"#,
        ] {
            let e = reply(bad).bearer_token("k2", "login to X").unwrap_err();
            let text = e.to_string();
            assert!(
                text.contains("login to X") && !text.contains("tok-"),
                "{text}"
            );
        }
        assert!(h.cached("k2").is_none());
    }

    #[test]
    fn a_cached_token_is_read_back_and_forgotten_once() {
        use crate::cache;
        let h = MockHost::new().install();
        assert!(cache::token("t").unwrap().is_none());
        assert!(!cache::forget("t"), "nothing to forget");
        cache::set("t", b"tok-1", 60);
        assert_eq!(cache::token("t").unwrap().unwrap().as_str(), "tok-1");
        assert!(cache::forget("t"));
        assert!(h.cached("t").is_none() && !cache::forget("t"));
        cache::set("t", &[0xff, 0xfe], 60);
        assert!(cache::token("t").is_err(), "not UTF-8 is not a token");
    }

    #[test]
    fn a_login_posts_the_form_and_maps_refusals() {
        use crate::KmsError;
        use crate::http::login_for_token;
        let status = std::rc::Rc::new(std::cell::Cell::new(200));
        let s = status.clone();
        let h = MockHost::new()
            .on_http(move |_| {
                Ok(MockHost::reply(
                    s.get(),
                    r#"{"access_token":"tok","token_type":"Bearer","expires_in":60,"error":"why"}"#,
                ))
            })
            .install();
        let reason = |b: &[u8]| format!("{} bytes of reason", b.len());
        let t = login_for_token("https://login.test/t", "a=1", 5, "k", "login", reason).unwrap();
        assert_eq!(
            (t.as_str(), h.cached("k").unwrap()),
            ("tok", b"tok".to_vec())
        );
        let r = &h.requests()[0];
        assert_eq!(
            (r.method.as_str(), r.body.as_slice()),
            ("POST", b"a=1".as_slice())
        );
        assert_eq!(
            r.header("content-type").unwrap(),
            "application/x-www-form-urlencoded"
        );
        for (code, denied) in [(400, true), (401, true), (403, true), (503, false)] {
            status.set(code);
            match login_for_token("https://login.test/t", "a=1", 5, "k", "login", reason) {
                Err(KmsError::Denied(m)) if denied => assert!(m.contains("bytes of reason"), "{m}"),
                Err(KmsError::Unavailable(m)) if !denied => assert!(m.contains("503"), "{m}"),
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[test]
    fn retries_wait_what_the_service_asks_within_a_bound() {
        let mut r = MockHost::reply(429, "");
        assert_eq!(r.retry_after_ms(2000), 500, "absent");
        r.headers.push(("retry-after".into(), b"1".to_vec()));
        assert_eq!(r.retry_after_ms(2000), 1000);
        r.headers[0].1 = b"30".to_vec();
        assert_eq!(r.retry_after_ms(2000), 2000, "bounded");
        r.headers[0].1 = b"Wed, 21 Oct 2026 07:28:00 GMT".to_vec();
        assert_eq!(r.retry_after_ms(2000), 500, "a date is not trusted");
    }

    #[test]
    fn tokens_are_renewed_before_they_expire() {
        for (expires_in, ttl) in [
            (3600, 3540),
            (601, 541),
            (600, 540),
            (60, 54),
            (1, 1),
            (0, 60),
        ] {
            assert_eq!(
                super::cache::token_ttl(expires_in),
                ttl,
                "expires_in {expires_in}"
            );
        }
    }
}
