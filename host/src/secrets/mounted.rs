//! Secrets mounted as volumes: a directory per Secret, a file per key, as
//! kubelet writes them. Layout under the root: `<namespace>/<name>/<key>`,
//! or `<name>/<key>` for Secrets of the driver's own namespace.
//!
//! A lookup reads exactly one namespace: a Secret of namespace `X` is
//! `<X>/<name>` and nothing else — never the driver's `<name>` of the same
//! name, so a tenant can never be handed the driver's Secrets. Only when `X`
//! is the driver's own namespace ([`MountedSecrets::with_own_namespace`]) is
//! the top-level `<name>` the same Secret and read too.
//!
//! What was read is kept in memory while inotify reports no change in the
//! root, the namespace directory or the Secret's directory
//! ([`crate::watch`]); any change is seen on the next read, so a rotated
//! token is never served late. Without inotify every read goes to disk.

use super::{SecretData, SecretError, SecretRef, SecretSource};
use crate::types::SecretBytes;
use crate::watch::DirWatcher;
use async_trait::async_trait;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// Reads Secrets from a directory tree.
#[derive(Debug, Clone)]
pub struct MountedSecrets {
    root: PathBuf,
    own_namespace: Option<String>,
    cache: Arc<Cache>,
}

/// Secrets read, each with the watcher generation it is valid for.
#[derive(Debug, Default)]
struct Cache {
    watcher: OnceLock<Option<DirWatcher>>,
    entries: Mutex<HashMap<SecretRef, (u64, Option<SecretData>)>>,
    disk_reads: std::sync::atomic::AtomicU64,
}

impl MountedSecrets {
    /// Secrets under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        MountedSecrets {
            root: root.into(),
            own_namespace: None,
            cache: Arc::default(),
        }
    }

    /// The driver's own namespace: a Secret named with it explicitly is also
    /// found at the top level (`<name>`), where unqualified Secrets live.
    pub fn with_own_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.own_namespace = Some(namespace.into());
        self
    }

    fn watcher(&self) -> Option<&DirWatcher> {
        self.cache.watcher.get_or_init(DirWatcher::start).as_ref()
    }

    /// How many reads went to the disk rather than the cache.
    pub fn disk_reads(&self) -> u64 {
        self.cache
            .disk_reads
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reads the Secret from `dir`, where [`Self::dir_for`] found it.
    fn read_at(
        &self,
        dir: Option<&Path>,
        secret: &SecretRef,
    ) -> Result<Option<SecretData>, SecretError> {
        self.cache
            .disk_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        dir.map(|d| read_dir(d, secret)).transpose()
    }

    /// The Secret's directory, in its own namespace only: `<namespace>/<name>`
    /// (or, for the driver's own namespace, `<name>`); `None` if it does not
    /// exist or a name could leave the root.
    fn dir_for(&self, secret: &SecretRef) -> Option<PathBuf> {
        if !is_plain_name(&secret.name)
            || secret
                .namespace
                .as_deref()
                .is_some_and(|n| !is_plain_name(n))
        {
            return None;
        }
        let top = self.root.join(&secret.name);
        match &secret.namespace {
            None => top.is_dir().then_some(top),
            Some(ns) => {
                let p = self.root.join(ns).join(&secret.name);
                if p.is_dir() {
                    Some(p)
                } else if self.own_namespace.as_ref() == Some(ns) && top.is_dir() {
                    Some(top)
                } else {
                    None
                }
            }
        }
    }
}

/// Names are validated as DNS names by the config layer; checked again so a
/// reference can never walk out of the root.
fn is_plain_name(s: &str) -> bool {
    !s.is_empty() && !s.contains('/') && !s.contains('\\') && s != "." && s != ".."
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
        let Some(watcher) = self.watcher() else {
            return self.read_at(self.dir_for(secret).as_deref(), secret);
        };
        if let Some((generation, data)) = self.cache.entries.lock().unwrap().get(secret)
            && *generation == watcher.generation()
        {
            return Ok(data.clone());
        }
        // Watch every directory whose change could alter the answer before
        // reading, and note the generation in between: a change from here
        // on makes the entry stale.
        let mut watched = watcher.watch(&self.root);
        if let Some(ns) = secret.namespace.as_deref().filter(|n| is_plain_name(n)) {
            let ns_dir = self.root.join(ns);
            if ns_dir.is_dir() {
                watched &= watcher.watch(&ns_dir);
            }
        }
        let dir = self.dir_for(secret);
        if let Some(dir) = &dir {
            watched &= watcher.watch(dir);
        }
        let generation = watcher.generation();
        let data = self.read_at(dir.as_deref(), secret)?;
        if watched {
            self.cache
                .entries
                .lock()
                .unwrap()
                .insert(secret.clone(), (generation, data.clone()));
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(ns: Option<&str>, name: &str) -> SecretRef {
        SecretRef {
            namespace: ns.map(str::to_string),
            name: name.into(),
        }
    }

    async fn value(m: &MountedSecrets, r: &SecretRef, key: &str) -> Option<Vec<u8>> {
        let data = m.read(r).await.unwrap()?;
        data.get(key).map(|v| v.expose().to_vec())
    }

    #[tokio::test]
    async fn unchanged_secret_is_served_from_memory() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("vault-token")).unwrap();
        std::fs::write(root.path().join("vault-token/token"), "t1").unwrap();
        let m = MountedSecrets::new(root.path());
        let r = secret(None, "vault-token");
        for _ in 0..10 {
            assert_eq!(value(&m, &r, "token").await.as_deref(), Some(&b"t1"[..]));
        }
        assert_eq!(m.disk_reads(), 1);
    }

    #[tokio::test]
    async fn every_change_is_seen_by_the_next_read() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("vault-token");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("token"), "t1").unwrap();
        let m = MountedSecrets::new(root.path());
        let r = secret(None, "vault-token");
        assert_eq!(value(&m, &r, "token").await.as_deref(), Some(&b"t1"[..]));

        // Rewritten in place.
        std::fs::write(dir.join("token"), "t2").unwrap();
        assert_eq!(value(&m, &r, "token").await.as_deref(), Some(&b"t2"[..]));

        // kubelet's atomic writer: files are links into `..data`, which is
        // swapped to a new timestamped directory.
        std::fs::remove_file(dir.join("token")).unwrap();
        std::fs::create_dir(dir.join("..2026_01")).unwrap();
        std::fs::write(dir.join("..2026_01/token"), "t3").unwrap();
        std::os::unix::fs::symlink("..2026_01", dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/token", dir.join("token")).unwrap();
        assert_eq!(value(&m, &r, "token").await.as_deref(), Some(&b"t3"[..]));
        std::fs::create_dir(dir.join("..2026_02")).unwrap();
        std::fs::write(dir.join("..2026_02/token"), "t4").unwrap();
        std::os::unix::fs::symlink("..2026_02", dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        assert_eq!(value(&m, &r, "token").await.as_deref(), Some(&b"t4"[..]));

        // A key added, then the Secret removed.
        std::fs::write(dir.join("extra"), "x").unwrap();
        assert_eq!(value(&m, &r, "extra").await.as_deref(), Some(&b"x"[..]));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(m.read(&r).await.unwrap().is_none());

        // Created again later; a tenant's Secret of the same name is its
        // own: absent until it appears in the tenant's directory, never the
        // driver's.
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("token"), "t5").unwrap();
        assert_eq!(value(&m, &r, "token").await.as_deref(), Some(&b"t5"[..]));
        let tenant = secret(Some("tenant-a"), "vault-token");
        assert!(m.read(&tenant).await.unwrap().is_none());
        std::fs::create_dir_all(root.path().join("tenant-a/vault-token")).unwrap();
        std::fs::write(root.path().join("tenant-a/vault-token/token"), "ta").unwrap();
        assert_eq!(
            value(&m, &tenant, "token").await.as_deref(),
            Some(&b"ta"[..])
        );
    }

    #[tokio::test]
    async fn a_lookup_reads_exactly_one_namespace() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("token")).unwrap();
        std::fs::write(root.path().join("token/token"), "driver").unwrap();
        let plain = MountedSecrets::new(root.path());
        let own = MountedSecrets::new(root.path()).with_own_namespace("ceph-csi");
        for m in [&plain, &own] {
            assert!(
                m.read(&secret(Some("team-a"), "token"))
                    .await
                    .unwrap()
                    .is_none()
            );
            assert_eq!(
                value(m, &secret(None, "token"), "token").await.as_deref(),
                Some(&b"driver"[..])
            );
        }
        // The driver's namespace named explicitly is the top level too.
        let driver_ns = secret(Some("ceph-csi"), "token");
        assert_eq!(
            value(&own, &driver_ns, "token").await.as_deref(),
            Some(&b"driver"[..])
        );
        assert!(plain.read(&driver_ns).await.unwrap().is_none());
    }
}
