//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod azure;
pub mod ceph;
pub mod csi;
pub mod http;
pub mod keyprotect;
pub mod kmip;
pub mod kube;
pub mod openbao;
pub mod registry;
pub mod softhsm;

use kmshost::config::{ConfigSource, HostDefaults};
use kmshost::kms::Kms;
use kmshost::sandbox::{Sandbox, SandboxConfig};
use kmshost::secrets::{ChainedSecrets, MountedSecrets, SecretSource, ServiceAccountToken};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A loopback port nothing listens on now (bound, then released): for a
/// server about to start there, or a peer that is down.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A compile cache shared by all tests (so each plugin compiles once).
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("compile-cache")
}

/// A sandbox using the shared compile cache.
pub fn sandbox() -> Arc<Sandbox> {
    Sandbox::new(SandboxConfig {
        cache_dir: Some(cache_dir()),
        max_instances: 32,
        ..Default::default()
    })
    .expect("sandbox")
}

/// Writes a mounted Secret `<root>/<name>/<key>`.
pub fn write_secret(root: &Path, name: &str, data: &[(&str, &[u8])]) {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    for (k, v) in data {
        std::fs::write(d.join(k), v).unwrap();
    }
}

/// A facade over an in-memory config, Secrets mounted at `secrets_root`,
/// and the service-account token file `sa_token` (if any).
pub fn kms(config: &serde_json::Value, secrets_root: &Path, sa_token: Option<&Path>) -> Kms {
    kms_with_defaults(config, secrets_root, sa_token, HostDefaults::default())
}

/// As [`kms`], with explicit host defaults.
pub fn kms_with_defaults(
    config: &serde_json::Value,
    secrets_root: &Path,
    sa_token: Option<&Path>,
    defaults: HostDefaults,
) -> Kms {
    let mut secrets = ChainedSecrets::new().with(Arc::new(MountedSecrets::new(secrets_root)));
    if let Some(t) = sa_token {
        secrets = secrets.with(Arc::new(ServiceAccountToken::new(t)));
    }
    let secrets: Arc<dyn SecretSource> = Arc::new(secrets);
    Kms::new(
        ConfigSource::from_text(&config.to_string(), defaults).expect("config"),
        sandbox(),
        secrets,
    )
}

/// `component` with a `kmshost:manifest` custom section appended: what the
/// SDK's `manifest!` writes, for tests that need a plugin declaring some
/// manifest (custom sections may follow every other section).
#[allow(dead_code)]
pub fn with_manifest(component: &[u8], manifest: &serde_json::Value) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    let name = kmshost::manifest::SECTION.as_bytes();
    let data = serde_json::to_vec(manifest).unwrap();
    let mut body = Vec::new();
    leb(name.len(), &mut body);
    body.extend_from_slice(name);
    body.extend_from_slice(&data);
    let mut out = component.to_vec();
    out.push(0);
    leb(body.len(), &mut out);
    out.extend(body);
    out
}
