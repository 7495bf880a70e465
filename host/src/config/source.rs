//! Reading the configuration from disk, so a change to the mounted ConfigMap
//! applies without a restart (as in ceph-csi, which re-reads it on every
//! use). Here it is read again only when inotify reports a change in its
//! directory ([`crate::watch`]); the next use after any change sees it.

use super::ConfigError;
use super::{HostDefaults, KmsTable};
use crate::watch::DirWatcher;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

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
    /// The last table read, its content hash, and the watcher generation
    /// it is valid for (`None`: not known to be current, read again).
    last: Mutex<Option<Loaded>>,
    watcher: OnceLock<Option<DirWatcher>>,
    disk_reads: AtomicU64,
    /// The text of a fixed in-memory configuration ([`Self::from_text`]),
    /// parsed again when a plugin file it names changes.
    text: Option<String>,
}

#[derive(Debug)]
struct Loaded {
    hash: [u8; 32],
    table: Arc<KmsTable>,
    generation: Option<u64>,
}

impl ConfigSource {
    /// A source reading `path`.
    pub fn new(path: impl Into<PathBuf>, defaults: HostDefaults) -> Self {
        ConfigSource {
            path: path.into(),
            defaults,
            last: Mutex::new(None),
            watcher: OnceLock::new(),
            disk_reads: AtomicU64::new(0),
            text: None,
        }
    }

    /// A fixed in-memory configuration (tests, the demo).
    pub fn from_text(text: &str, defaults: HostDefaults) -> Result<Self, ConfigError> {
        let table = KmsTable::parse(text, &defaults)?;
        let mut source = ConfigSource::new(PathBuf::new(), defaults);
        source.text = Some(text.to_string());
        *source.last.get_mut().unwrap() = Some(Loaded {
            hash: [0; 32],
            table: Arc::new(table),
            generation: None,
        });
        Ok(source)
    }

    /// The host defaults.
    pub fn defaults(&self) -> &HostDefaults {
        &self.defaults
    }

    /// The directories whose changes can change what is read: the
    /// configuration's own directory, and where its files really live when
    /// they are symlinks elsewhere (kubelet's `..data/<file>` links; an
    /// admin's link to a file in another directory).
    fn directories(&self) -> Vec<PathBuf> {
        let parent = |p: &Path| match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let (dir, files) = if self.path.is_dir() {
            let files = std::fs::read_dir(&self.path)
                .map(|it| it.filter_map(|e| e.ok()).map(|e| e.path()).collect())
                .unwrap_or_default();
            (self.path.clone(), files)
        } else {
            (parent(&self.path), vec![self.path.clone()])
        };
        // One watch per directory (inotify gives one descriptor per inode,
        // so the same directory under two names must not be watched twice).
        let mut real_dirs = vec![dir.canonicalize().unwrap_or_else(|_| dir.clone())];
        let mut dirs = vec![dir];
        for f in files {
            if let Ok(real) = f.canonicalize() {
                let d = parent(&real);
                if !real_dirs.contains(&d) {
                    real_dirs.push(d.clone());
                    dirs.push(d);
                }
            }
        }
        dirs
    }

    /// How many loads read the disk rather than the table in memory.
    pub fn disk_reads(&self) -> u64 {
        self.disk_reads.load(Ordering::Relaxed)
    }

    /// The current table: served from memory while nothing changed in the
    /// configuration's directory, else read again (and parsed again only if
    /// the content changed). Without inotify, read on every use.
    pub fn load(&self) -> Result<Arc<KmsTable>, ConfigError> {
        self.load_checking(KmsTable::plugins_unchanged)
    }

    /// [`Self::load`] for a call on `kms_id`: of the plugin files, only
    /// `kms_id`'s are checked for changes (the others are when their own
    /// kmsIDs are used, or by [`Self::load`]).
    pub fn load_for(&self, kms_id: &str) -> Result<Arc<KmsTable>, ConfigError> {
        self.load_checking(|t| t.entry_unchanged(kms_id))
    }

    /// The table, read again if the configuration changed or `unchanged`
    /// says its plugin files did.
    fn load_checking(
        &self,
        unchanged: impl Fn(&KmsTable) -> bool,
    ) -> Result<Arc<KmsTable>, ConfigError> {
        if self.path.as_os_str().is_empty() {
            let mut last = self.last.lock().unwrap();
            if let (Some(l), Some(text)) = (last.as_mut(), &self.text)
                && !unchanged(&l.table)
            {
                l.table = Arc::new(KmsTable::parse(text, &self.defaults)?);
            }
            return Ok(last.as_ref().map(|l| l.table.clone()).unwrap_or_default());
        }
        let watcher = self.watcher.get_or_init(DirWatcher::start).as_ref();
        if let Some(w) = watcher {
            let last = self.last.lock().unwrap();
            if let Some(l) = last.as_ref()
                && l.generation == Some(w.generation())
                && unchanged(&l.table)
            {
                return Ok(l.table.clone());
            }
        }
        // Watch first, then note the generation, then read: a change from
        // here on bumps the generation, so what is read is never served
        // past it.
        let generation = watcher.and_then(|w| {
            let dirs = self.directories();
            dirs.iter().all(|d| w.watch(d)).then(|| w.generation())
        });
        self.disk_reads.fetch_add(1, Ordering::Relaxed);
        let text = read_config(&self.path)?;
        let hash: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        let mut last = self.last.lock().unwrap();
        if let Some(l) = last.as_mut()
            && l.hash == hash
            && unchanged(&l.table)
        {
            l.generation = generation;
            return Ok(l.table.clone());
        }
        let table = Arc::new(KmsTable::parse(&text, &self.defaults)?);
        if last.is_some() {
            tracing::info!(path = %self.path.display(), "KMS configuration changed; reloaded");
        }
        *last = Some(Loaded {
            hash,
            table: table.clone(),
            generation,
        });
        Ok(table)
    }
}

fn read_config(path: &Path) -> Result<String, ConfigError> {
    let err =
        |e: std::io::Error| ConfigError::Malformed(format!("reading {}: {e}", path.display()));
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
