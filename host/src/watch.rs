//! Change notification for mounted directories (Linux inotify): Secrets and
//! the KMS ConfigMap. What was read once is served from memory until kubelet
//! (or anyone) changes it — without a syscall per read and without a TTL
//! that would delay a rotated token or an admin's edit.
//!
//! The kernel interface is the `inotify` crate's. The contract is
//! deliberately coarse: any event in any watched directory
//! bumps one generation counter. The kernel queues an event before the
//! changing syscall returns, and [`DirWatcher::generation`] drains the queue
//! (one non-blocking `read`) before answering, so a change is visible to the
//! very next read: read-after-write, no delay, no background thread.
//! Readers note the generation *after* their watches are in place and
//! *before* they read the files, and an entry is served only while the
//! generation is unchanged; a change during a read is never served again.

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// What is watched: creation, removal, renames, writes and attribute
/// changes of the directory's entries, and of the directory itself.
fn mask() -> WatchMask {
    WatchMask::MODIFY
        | WatchMask::ATTRIB
        | WatchMask::CLOSE_WRITE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
}

/// The inotify instance and the watched directories, both ways.
struct Watched {
    inotify: Inotify,
    by_wd: HashMap<WatchDescriptor, PathBuf>,
    by_dir: HashMap<PathBuf, WatchDescriptor>,
}

/// Watches directories and counts changes.
pub struct DirWatcher {
    generation: AtomicU64,
    watched: Mutex<Watched>,
}

impl std::fmt::Debug for DirWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirWatcher")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl DirWatcher {
    /// A watcher; `None` when inotify is unavailable here (then callers
    /// must not cache).
    pub fn start() -> Option<DirWatcher> {
        // Non-blocking and close-on-exec, as the crate opens it.
        let inotify = match Inotify::init() {
            Ok(i) => i,
            Err(e) => {
                tracing::debug!("inotify unavailable ({e}); mounted Secrets are read on every use");
                return None;
            }
        };
        Some(DirWatcher {
            generation: AtomicU64::new(0),
            watched: Mutex::new(Watched {
                inotify,
                by_wd: HashMap::new(),
                by_dir: HashMap::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Watched> {
        self.watched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The number of changes seen so far, including every change whose
    /// syscall returned before this call.
    pub fn generation(&self) -> u64 {
        // Drain under the lock: a concurrent reader that took the events
        // has bumped the counter before this one looks at it.
        let mut w = self.lock();
        self.drain(&mut w);
        self.generation.load(Ordering::SeqCst)
    }

    /// Watches `dir` (idempotent). False if the kernel refused (missing
    /// directory, watch limit), in which case nothing under it may be cached.
    pub fn watch(&self, dir: &Path) -> bool {
        let mut w = self.lock();
        // Forget watches of directories removed meanwhile first.
        self.drain(&mut w);
        if w.by_dir.contains_key(dir) {
            return true;
        }
        match w.inotify.watches().add(dir, mask()) {
            Ok(wd) => {
                w.by_wd.insert(wd.clone(), dir.to_path_buf());
                w.by_dir.insert(dir.to_path_buf(), wd);
                true
            }
            Err(e) => {
                tracing::debug!(dir = %dir.display(), "cannot watch ({e}); not caching it");
                false
            }
        }
    }

    /// Reads whatever events are queued (without blocking), bumping the
    /// generation if there were any.
    fn drain(&self, w: &mut Watched) {
        let mut buf = [0u8; 4096];
        loop {
            let gone: Vec<WatchDescriptor> = match w.inotify.read_events(&mut buf) {
                Ok(events) => events
                    .filter(|e| e.mask.contains(EventMask::IGNORED))
                    .map(|e| e.wd)
                    .collect(),
                // Nothing queued (WouldBlock), or nothing readable.
                Err(_) => return,
            };
            // A directory that went away (or was unmounted): forget its
            // watch so a later read watches it anew.
            for wd in gone {
                if let Some(p) = w.by_wd.remove(&wd) {
                    w.by_dir.remove(&p);
                }
            }
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Changed since `after`: checked right away, never waiting, since a
    /// change must be visible to the very next read.
    fn changed_since(w: &DirWatcher, after: u64) -> bool {
        w.generation() > after
    }

    #[test]
    fn change_in_watched_dir_is_seen() {
        let d = tempfile::tempdir().unwrap();
        let w = DirWatcher::start().expect("inotify");
        assert!(w.watch(d.path()));
        let g = w.generation();
        std::fs::write(d.path().join("token"), "a").unwrap();
        assert!(changed_since(&w, g), "a write was not noticed");
        // A kubelet-style swap: a new ..data symlink renamed into place.
        let g = w.generation();
        std::os::unix::fs::symlink("x", d.path().join("..data_tmp")).unwrap();
        std::fs::rename(d.path().join("..data_tmp"), d.path().join("..data")).unwrap();
        assert!(changed_since(&w, g), "a symlink swap was not noticed");
    }

    #[test]
    fn unwatched_dir_and_missing_dir() {
        let d = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let w = DirWatcher::start().expect("inotify");
        assert!(w.watch(d.path()));
        assert!(!w.watch(&d.path().join("missing")));
        let g = w.generation();
        std::fs::write(other.path().join("token"), "a").unwrap();
        assert_eq!(w.generation(), g, "an unwatched directory counted");
    }

    #[test]
    fn removed_dir_can_be_watched_again() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("s");
        std::fs::create_dir(&d).unwrap();
        let w = DirWatcher::start().expect("inotify");
        assert!(w.watch(&d));
        let g = w.generation();
        std::fs::remove_dir(&d).unwrap();
        assert!(changed_since(&w, g));
        std::fs::create_dir(&d).unwrap();
        assert!(w.watch(&d));
        let g = w.generation();
        std::fs::write(d.join("k"), "v").unwrap();
        assert!(
            changed_since(&w, g),
            "the re-created directory is not watched"
        );
    }
}
