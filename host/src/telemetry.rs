//! Prometheus metrics: one registry per process (as Prometheus client
//! libraries keep it), filled by the layers above and served as
//! OpenMetrics text by `kmshost csi --metrics-address`.
//!
//! The room holds the metric families, [`metrics`] (the process's set),
//! [`encode`] (the exposition text) and [`serve`] (a minimal HTTP/1.1
//! responder for `GET /metrics`, so no web framework enters the process
//! that holds the keys).
//!
//! Labels are bounded and safe: kmsIDs (validated names), plugin names,
//! operation and method names, and status words — never a key, a token, a
//! Secret, or a volume ID (unbounded, and not the metrics' business: the
//! audit log has them). Every value is cut to [`label`]'s alphabet.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::OnceLock;

/// A label set: (name, value) pairs.
pub type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// Latency buckets: 0.5 ms to ~16 s, doubling (the KMS v2 apiserver
/// metrics' range).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The process's metric families.
pub struct Metrics {
    registry: Registry,
    /// `kmshost_kms_operations_latency_seconds{kms_id,plugin,method,status}`.
    pub kms_operations: Histograms,
    /// `kmshost_sandbox_instantiations_total{kms_id,plugin}`: new plugin
    /// instances.
    pub instantiations: Family<Labels, Counter>,
    /// `kmshost_sandbox_warm_hits_total{kms_id,plugin}`: calls that reused
    /// a warm instance.
    pub warm_hits: Family<Labels, Counter>,
    /// `kmshost_sandbox_stops_total{kms_id,plugin,cause}`: calls the
    /// sandbox stopped (`deadline`, `memory`, `stack`, `trap`,
    /// `capacity`, `host-limit`, `busy`).
    pub stops: Family<Labels, Counter>,
    /// `kmshost_sandbox_denials_total{kms_id,plugin,kind}`: outbound
    /// connections the allow-list refused (`http`, `stream`).
    pub denials: Family<Labels, Counter>,
    /// `kmshost_plugin_cache_requests_total{kms_id,result}`: the host cache
    /// plugins keep tokens and derived keys in (`hit`; `miss`: a login or
    /// KDF run to come; `stored`: what a plugin kept after one).
    pub cache_requests: Family<Labels, Counter>,
    /// `kmshost_csi_operations_seconds{method,code}`: CSI calls by gRPC code.
    pub csi_operations: Histograms,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("kmshost");
        let m = Metrics {
            kms_operations: Family::new_with_constructor(latency_histogram),
            instantiations: Family::default(),
            warm_hits: Family::default(),
            stops: Family::default(),
            denials: Family::default(),
            cache_requests: Family::default(),
            csi_operations: Family::new_with_constructor(latency_histogram),
            registry: Registry::default(),
        };
        registry.register(
            "kms_operations_latency_seconds",
            "KMS operations through plugins, by kmsID, plugin, method and status",
            m.kms_operations.clone(),
        );
        registry.register(
            "sandbox_instantiations",
            "Plugin instances created",
            m.instantiations.clone(),
        );
        registry.register(
            "sandbox_warm_hits",
            "Plugin calls served by a warm instance",
            m.warm_hits.clone(),
        );
        registry.register(
            "sandbox_stops",
            "Plugin calls the sandbox stopped, by cause",
            m.stops.clone(),
        );
        registry.register(
            "sandbox_denials",
            "Outbound connections the allow-list refused",
            m.denials.clone(),
        );
        registry.register(
            "plugin_cache_requests",
            "Lookups in the host cache plugins keep tokens and derived keys in",
            m.cache_requests.clone(),
        );
        registry.register(
            "csi_operations_seconds",
            "CSI calls, by method and gRPC code",
            m.csi_operations.clone(),
        );
        Metrics { registry, ..m }
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

/// One runtime's counters (one kmsID's, one plugin's), looked up once when
/// the runtime is bound: a call then increments atomics and takes none of
/// the families' locks.
#[derive(Clone, Debug)]
pub struct RuntimeCounters {
    /// Its `sandbox_warm_hits`.
    pub warm_hits: Counter,
    /// Its `sandbox_instantiations`.
    pub instantiations: Counter,
    /// Its `plugin_cache_requests{result="hit"}`.
    pub cache_hits: Counter,
    /// Its `plugin_cache_requests{result="miss"}`.
    pub cache_misses: Counter,
    /// Its `plugin_cache_requests{result="stored"}`.
    pub cache_stored: Counter,
    /// Its `kms_operations_latency_seconds{status="ok"}`, per method of
    /// [`KMS_METHODS`], each looked up at its first success (a series
    /// appears only once a method was called).
    ok_latency: [OnceLock<Histogram>; 5],
    kms_id: String,
    plugin: String,
}

/// The key operations, as the `method` label names them.
pub const KMS_METHODS: [&str; 5] = ["get", "put", "delete", "wrap", "unwrap"];

impl RuntimeCounters {
    /// The counters of `kms_id`'s runtime of `plugin` (shared by its
    /// tenants' runtimes, which carry the same labels).
    pub fn new(kms_id: &str, plugin: &str) -> Self {
        let m = metrics();
        let runtime = labels(&[("kms_id", kms_id), ("plugin", plugin)]);
        let cache = |result| {
            m.cache_requests
                .get_or_create(&labels(&[("kms_id", kms_id), ("result", result)]))
                .clone()
        };
        RuntimeCounters {
            warm_hits: m.warm_hits.get_or_create(&runtime).clone(),
            instantiations: m.instantiations.get_or_create(&runtime).clone(),
            cache_hits: cache("hit"),
            cache_misses: cache("miss"),
            cache_stored: cache("stored"),
            ok_latency: Default::default(),
            kms_id: kms_id.to_string(),
            plugin: plugin.to_string(),
        }
    }

    /// The latency histogram of successful `method` calls (one of
    /// [`KMS_METHODS`]; `None` for another), the same series
    /// `kms_operations` holds under these labels.
    pub fn ok_latency(&self, method: &str) -> Option<&Histogram> {
        let i = KMS_METHODS.iter().position(|m| *m == method)?;
        Some(self.ok_latency[i].get_or_init(|| {
            metrics()
                .kms_operations
                .get_or_create(&labels(&[
                    ("kms_id", &self.kms_id),
                    ("plugin", &self.plugin),
                    ("method", method),
                    ("status", "ok"),
                ]))
                .clone()
        }))
    }
}

/// `value` as a label value: ASCII letters, digits and `._-:/` kept, the
/// rest `_`, at most 64 characters.
pub fn label(value: &str) -> String {
    value
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-:/".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Labels from (name, value) pairs, each value through [`label`].
pub fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, label(v))).collect()
}

/// The OpenMetrics exposition of every metric.
pub fn encode() -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &metrics().registry);
    out
}

/// The content type of [`encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` on `listener` until the task is dropped. Anything
/// else is 404; a request is read up to 8 KiB and 5 s.
pub async fn serve(listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(answer(stream));
    }
}

async fn answer(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 8192];
    let mut n = 0;
    let read = async {
        while n < buf.len() {
            match stream.read(&mut buf[n..]).await {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
            if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    };
    if tokio::time::timeout(std::time::Duration::from_secs(5), read)
        .await
        .is_err()
    {
        return;
    }
    let request = String::from_utf8_lossy(&buf[..n]);
    let path = request
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("GET "))
        .and_then(|l| l.split(' ').next());
    let response = match path {
        Some("/metrics") => {
            let body = encode();
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {CONTENT_TYPE}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
        }
        _ => "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".into(),
    };
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_keep_a_safe_alphabet_and_length() {
        for (v, want) in [
            ("meta-a", "meta-a"),
            ("vault.prod_1", "vault.prod_1"),
            ("a\"b\nc}", "a_b_c_"),
            ("ünï", "_n_"),
        ] {
            assert_eq!(label(v), want);
        }
        assert_eq!(label(&"x".repeat(100)).len(), 64);
    }
}
