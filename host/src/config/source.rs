//! Reading the configuration from disk, re-read on every use so a change to
//! the mounted ConfigMap applies without a restart (as in ceph-csi).

use super::{HostDefaults, KmsTable};
use crate::kms::KmsError;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A configuration file or a mounted ConfigMap directory.
///
/// * a file: ceph-csi's `config.json`;
/// * a directory holding `config.json`: that file;
/// * any other directory: the `csi-kms-connection-details` ConfigMap
///   mounted as a volume, one file per kmsID holding its JSON.
#[derive(Debug)]
pub struct ConfigSource {
    path: PathBuf,
    defaults: HostDefaults,
    last: Mutex<Option<([u8; 32], Arc<KmsTable>)>>,
}

impl ConfigSource {
    /// A source reading `path`.
    pub fn new(path: impl Into<PathBuf>, defaults: HostDefaults) -> Self {
        ConfigSource {
            path: path.into(),
            defaults,
            last: Mutex::new(None),
        }
    }

    /// A fixed in-memory configuration (tests, the demo).
    pub fn from_text(text: &str, defaults: HostDefaults) -> Result<Self, KmsError> {
        let table = KmsTable::parse(text, &defaults)?;
        Ok(ConfigSource {
            path: PathBuf::new(),
            defaults,
            last: Mutex::new(Some(([0; 32], Arc::new(table)))),
        })
    }

    /// The host defaults.
    pub fn defaults(&self) -> &HostDefaults {
        &self.defaults
    }

    /// The current table: re-read from disk, re-parsed only if the content
    /// changed.
    pub fn load(&self) -> Result<Arc<KmsTable>, KmsError> {
        if self.path.as_os_str().is_empty() {
            let last = self.last.lock().unwrap();
            return Ok(last.as_ref().map(|(_, t)| t.clone()).unwrap_or_default());
        }
        let text = read_config(&self.path)?;
        let hash: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        let mut last = self.last.lock().unwrap();
        if let Some((h, t)) = last.as_ref()
            && *h == hash
        {
            return Ok(t.clone());
        }
        let table = Arc::new(KmsTable::parse(&text, &self.defaults)?);
        if last.is_some() {
            tracing::info!(path = %self.path.display(), "KMS configuration changed; reloaded");
        }
        *last = Some((hash, table.clone()));
        Ok(table)
    }
}

fn read_config(path: &Path) -> Result<String, KmsError> {
    let err = |e: std::io::Error| KmsError::Config(format!("reading {}: {e}", path.display()));
    if path.is_dir() {
        let inner = path.join("config.json");
        if inner.is_file() {
            return std::fs::read_to_string(&inner).map_err(err);
        }
        let mut obj = serde_json::Map::new();
        let mut names: Vec<_> = std::fs::read_dir(path)
            .map_err(err)?
            .filter_map(|e| e.ok())
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter(|e| e.path().is_file())
            .collect();
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let text = std::fs::read_to_string(e.path()).map_err(err)?;
            obj.insert(
                e.file_name().to_string_lossy().into_owned(),
                serde_json::Value::String(text),
            );
        }
        return Ok(serde_json::Value::Object(obj).to_string());
    }
    std::fs::read_to_string(path).map_err(err)
}
