//! Secrets mounted as volumes: a directory per Secret, a file per key, as
//! kubelet writes them. Layout under the root: `<namespace>/<name>/<key>`,
//! or `<name>/<key>` for Secrets of the driver's own namespace.

use super::{SecretData, SecretError, SecretRef, SecretSource};
use crate::kms::SecretBytes;
use async_trait::async_trait;
use std::path::{Path, PathBuf};

/// Reads Secrets from a directory tree.
#[derive(Debug, Clone)]
pub struct MountedSecrets {
    root: PathBuf,
}

impl MountedSecrets {
    /// Secrets under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        MountedSecrets { root: root.into() }
    }

    fn dir_for(&self, secret: &SecretRef) -> Option<PathBuf> {
        // Names are validated as DNS names by the config layer; check again
        // so a reference can never walk out of the root.
        let ok = |s: &str| {
            !s.is_empty() && !s.contains('/') && !s.contains('\\') && s != "." && s != ".."
        };
        if !ok(&secret.name) || secret.namespace.as_deref().is_some_and(|n| !ok(n)) {
            return None;
        }
        if let Some(ns) = &secret.namespace {
            let p = self.root.join(ns).join(&secret.name);
            if p.is_dir() {
                return Some(p);
            }
        }
        let p = self.root.join(&secret.name);
        p.is_dir().then_some(p)
    }
}

fn read_dir(dir: &Path, secret: &SecretRef) -> Result<SecretData, SecretError> {
    let denied = |e: std::io::Error| SecretError::Denied {
        secret: secret.to_string(),
        message: format!("reading mounted Secret: {e}"),
    };
    let mut data = SecretData::new();
    for entry in std::fs::read_dir(dir).map_err(denied)? {
        let entry = entry.map_err(denied)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // kubelet's atomic-writer keeps `..data` and `..<timestamp>` dirs.
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_file() {
            let bytes = std::fs::read(&path).map_err(denied)?;
            data.insert(name, SecretBytes::new(bytes));
        }
    }
    Ok(data)
}

#[async_trait]
impl SecretSource for MountedSecrets {
    async fn read(&self, secret: &SecretRef) -> Result<Option<SecretData>, SecretError> {
        match self.dir_for(secret) {
            None => Ok(None),
            Some(dir) => read_dir(&dir, secret).map(Some),
        }
    }
}
