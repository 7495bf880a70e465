//! Plugins from OCI registries: parsing `oci://` references, pulling the
//! plugin layer with the ORAS project's `oci-client`, checking every byte
//! against the digests, and keeping it in the host's cache by digest.
//!
//! A reference must carry the manifest's digest
//! (`oci://registry/repository[:tag]@sha256:<hex>`): a tag alone can move.
//! What is pulled is checked twice — the manifest against the reference's
//! digest, the layer against the manifest's — before it is written to
//! `<cache>/oci/sha256-<manifest hex>.wasm`; nothing unverified is ever
//! written there. The signature is checked by the configuration
//! (`crate::signing`) every time the file is read, before anything
//! compiles it. Plain HTTP is used only for loopback registries.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The layer media type of a Wasm component (oci-wasm, `oras push
/// plugin.wasm:application/wasm`).
pub const WASM_LAYER: &str = "application/wasm";

/// The largest plugin layer the host pulls.
pub const MAX_LAYER_BYTES: u64 = 64 << 20;

/// The largest manifest the host reads.
const MAX_MANIFEST_BYTES: usize = 256 << 10;

/// A parsed `oci://` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciRef {
    /// `host[:port]`.
    pub registry: String,
    /// `path/to/repo`.
    pub repository: String,
    /// The tag, if written (informational: the digest decides).
    pub tag: Option<String>,
    /// The manifest digest's hex (sha256).
    pub digest_hex: String,
}

/// Why a plugin could not be pulled.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// The registry could not be reached or timed out: worth retrying.
    #[error("registry {registry} unreachable: {message}")]
    Unreachable {
        /// The registry.
        registry: String,
        /// What failed.
        message: String,
    },
    /// The registry answered, but not with the plugin.
    #[error("{0}")]
    Registry(String),
    /// Bytes that do not match their digest: never used.
    #[error("digest mismatch: {0}")]
    Digest(String),
    /// The cache could not be written.
    #[error("plugin cache: {0}")]
    Cache(String),
}

impl FetchError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, FetchError::Unreachable { .. })
    }
}

impl OciRef {
    /// Parses `oci://registry/repository[:tag]@sha256:<64 hex>`.
    pub fn parse(s: &str) -> Result<OciRef, String> {
        let rest = s
            .strip_prefix("oci://")
            .ok_or_else(|| format!("{s:?} is not an oci:// reference"))?;
        let (name, digest) = rest.split_once('@').ok_or_else(|| {
            format!("{s:?} has no digest: pin it as oci://registry/repository:tag@sha256:<digest>")
        })?;
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| format!("{digest:?} is not a sha256:<64 hex digits> digest"))?;
        let (registry, path) = name
            .split_once('/')
            .ok_or_else(|| format!("{s:?} names no repository"))?;
        let (repository, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, Some(t.to_string())),
            _ => (path, None),
        };
        let valid_repo = !repository.is_empty()
            && repository
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b));
        let valid_registry = !registry.is_empty()
            && registry
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
        if !valid_repo || !valid_registry {
            return Err(format!("{s:?} is not a valid registry/repository"));
        }
        Ok(OciRef {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag,
            digest_hex: hex.to_ascii_lowercase(),
        })
    }

    /// Where the verified plugin is kept.
    pub fn cache_path(&self, cache_dir: &Path) -> PathBuf {
        cache_dir
            .join("oci")
            .join(format!("sha256-{}.wasm", self.digest_hex))
    }

    /// Whether the registry is on this machine (plain HTTP allowed).
    fn is_loopback(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => self.registry.as_str(),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl std::fmt::Display for OciRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "oci://{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        write!(f, "@sha256:{}", self.digest_hex)
    }
}

/// Pulls the plugin of `r` into the cache (unless it is there) and returns
/// its path. Every byte is checked against its digest before it is written.
pub async fn pull(r: &OciRef, cache_dir: &Path, timeout: Duration) -> Result<PathBuf, FetchError> {
    let path = r.cache_path(cache_dir);
    if path.is_file() {
        return Ok(path);
    }
    let bytes = tokio::time::timeout(timeout, download(r))
        .await
        .map_err(|_| FetchError::Unreachable {
            registry: r.registry.clone(),
            message: format!("no plugin within {} s", timeout.as_secs()),
        })??;
    store(&path, &bytes)?;
    tracing::info!(plugin = %r, bytes = bytes.len(), "pulled a plugin");
    Ok(path)
}

async fn download(r: &OciRef) -> Result<Vec<u8>, FetchError> {
    use oci_client::client::{ClientConfig, ClientProtocol};
    use oci_client::secrets::RegistryAuth;
    // TLS to registries goes through rustls with ring, as everywhere else.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let protocol = match r.is_loopback() {
        true => ClientProtocol::HttpsExcept(vec![r.registry.clone()]),
        false => ClientProtocol::Https,
    };
    let client = oci_client::Client::new(ClientConfig {
        protocol,
        platform_resolver: None,
        connect_timeout: Some(Duration::from_secs(10)),
        read_timeout: Some(Duration::from_secs(30)),
        ..Default::default()
    });
    let reference = oci_client::Reference::with_digest(
        r.registry.clone(),
        r.repository.clone(),
        format!("sha256:{}", r.digest_hex),
    );
    let unreachable = |e: oci_client::errors::OciDistributionError| classify(r, e);
    let (manifest, _) = client
        .pull_manifest_raw(
            &reference,
            &RegistryAuth::Anonymous,
            &[oci_client::manifest::OCI_IMAGE_MEDIA_TYPE],
        )
        .await
        .map_err(unreachable)?;
    let layer = wasm_layer(r, &manifest)?;
    let mut stream = client
        .pull_blob_stream(&reference, &layer)
        .await
        .map_err(unreachable)?;
    read_layer(r, &layer, &mut stream.stream).await
}

/// The manifest, checked against the reference's digest, and its one
/// Wasm layer.
fn wasm_layer(
    r: &OciRef,
    manifest: &[u8],
) -> Result<oci_client::manifest::OciDescriptor, FetchError> {
    if manifest.len() > MAX_MANIFEST_BYTES {
        return Err(FetchError::Registry(format!(
            "{r}: manifest of {} bytes is too large",
            manifest.len()
        )));
    }
    let got = hex::encode(Sha256::digest(manifest));
    if got != r.digest_hex {
        return Err(FetchError::Digest(format!(
            "{r}: the registry's manifest has digest sha256:{got}"
        )));
    }
    let m: oci_client::manifest::OciImageManifest = serde_json::from_slice(manifest)
        .map_err(|e| FetchError::Registry(format!("{r}: not an OCI image manifest: {e}")))?;
    let mut wasm = m.layers.into_iter().filter(|l| l.media_type == WASM_LAYER);
    match (wasm.next(), wasm.next()) {
        (Some(l), None) if l.size >= 0 && (l.size as u64) <= MAX_LAYER_BYTES => Ok(l),
        (Some(l), None) => Err(FetchError::Registry(format!(
            "{r}: the plugin layer is {} bytes; the limit is {MAX_LAYER_BYTES}",
            l.size
        ))),
        (None, _) => Err(FetchError::Registry(format!(
            "{r}: no {WASM_LAYER} layer: not a plugin (push it as plugin.wasm:{WASM_LAYER})"
        ))),
        (Some(_), Some(_)) => Err(FetchError::Registry(format!(
            "{r}: more than one {WASM_LAYER} layer"
        ))),
    }
}

/// Reads the layer, never more than it declares, and checks its digest.
async fn read_layer(
    r: &OciRef,
    layer: &oci_client::manifest::OciDescriptor,
    stream: &mut futures::stream::BoxStream<'static, Result<bytes::Bytes, std::io::Error>>,
) -> Result<Vec<u8>, FetchError> {
    use futures::StreamExt as _;
    let declared = layer.size as u64;
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| FetchError::Unreachable {
            registry: r.registry.clone(),
            message: e.to_string(),
        })?;
        if bytes.len() as u64 + chunk.len() as u64 > declared {
            return Err(FetchError::Digest(format!(
                "{r}: the layer is longer than its declared {declared} bytes"
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    let got = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    if got != layer.digest {
        return Err(FetchError::Digest(format!(
            "{r}: the plugin layer has digest {got}, the manifest says {}",
            layer.digest
        )));
    }
    Ok(bytes)
}

fn classify(r: &OciRef, e: oci_client::errors::OciDistributionError) -> FetchError {
    use oci_client::errors::OciDistributionError as E;
    match e {
        E::RequestError(e) => FetchError::Unreachable {
            registry: r.registry.clone(),
            message: e.to_string(),
        },
        other => FetchError::Registry(format!("{r}: {other}")),
    }
}

/// Writes `bytes` to `path` whole or not at all (a temporary file renamed).
fn store(path: &Path, bytes: &[u8]) -> Result<(), FetchError> {
    let cache = |e: std::io::Error| FetchError::Cache(format!("{}: {e}", path.display()));
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(cache)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(cache)?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(cache)?;
    tmp.persist(path).map_err(|e| cache(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_must_pin_a_digest() {
        let d = "a".repeat(64);
        let ok = OciRef::parse(&format!("oci://127.0.0.1:5000/acme/kms:1.0@sha256:{d}")).unwrap();
        assert_eq!(ok.registry, "127.0.0.1:5000");
        assert_eq!(ok.repository, "acme/kms");
        assert_eq!(ok.tag.as_deref(), Some("1.0"));
        assert!(ok.is_loopback());
        assert_eq!(
            ok.to_string(),
            format!("oci://127.0.0.1:5000/acme/kms:1.0@sha256:{d}")
        );
        let no_tag = OciRef::parse(&format!("oci://ghcr.io/acme/kms@sha256:{d}")).unwrap();
        assert_eq!((no_tag.tag.as_deref(), no_tag.is_loopback()), (None, false));
        let table = [
            ("oci://ghcr.io/acme/kms:1.0", "has no digest"),
            ("https://ghcr.io/acme/kms@sha256:00", "not an oci://"),
            ("oci://ghcr.io/acme/kms@sha256:12", "is not a sha256"),
            ("oci://ghcr.io/acme/kms@md5:aa", "is not a sha256"),
            ("oci://ghcr.io@sha256:", "is not a sha256"),
        ];
        for (s, want) in table {
            let e = OciRef::parse(s).unwrap_err();
            assert!(e.contains(want), "{s}: {e}");
        }
        let e = OciRef::parse(&format!("oci://ghcr.io/Acme/kms@sha256:{d}")).unwrap_err();
        assert!(e.contains("not a valid registry/repository"), "{e}");
        assert!(
            OciRef::parse(&format!("oci://localhost/x@sha256:{d}"))
                .unwrap()
                .is_loopback()
        );
    }
}
