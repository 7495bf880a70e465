//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod csi;
pub mod http;
pub mod openbao;

use kmshost::config::{ConfigSource, HostDefaults};
use kmshost::kms::Kms;
use kmshost::sandbox::{Sandbox, SandboxConfig};
use kmshost::secrets::{ChainedSecrets, MountedSecrets, SecretSource, ServiceAccountToken};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
