//! Change notification for mounted directories (Linux inotify): Secrets and
//! the KMS ConfigMap. What was read once is served from memory until kubelet
//! (or anyone) changes it — without a syscall per read and without a TTL
//! that would delay a rotated token or an admin's edit.
//!
//! The contract is deliberately coarse: any event in any watched directory
//! bumps one generation counter. The kernel queues an event before the
//! changing syscall returns, and [`DirWatcher::generation`] drains the queue
//! (one non-blocking `read`) before answering, so a change is visible to the
//! very next read: read-after-write, no delay, no background thread.
//! Readers note the generation *after* their watches are in place and
//! *before* they read the files, and an entry is served only while the
//! generation is unchanged; a change during a read is never served again.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// What is watched: creation, removal, renames, writes and attribute
/// changes of the directory's entries, and of the directory itself.
const MASK: u32 = libc::IN_MODIFY
    | libc::IN_ATTRIB
    | libc::IN_CLOSE_WRITE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF;

/// Watches directories and counts changes.
#[derive(Debug)]
pub struct DirWatcher {
    fd: OwnedFd,
    generation: AtomicU64,
    /// Watched directories by watch descriptor, and the reverse.
    watches: Mutex<(HashMap<i32, PathBuf>, HashMap<PathBuf, i32>)>,
}

impl DirWatcher {
    /// A watcher; `None` when inotify is unavailable here (then callers
    /// must not cache).
    pub fn start() -> Option<DirWatcher> {
        // SAFETY: plain syscall; the returned descriptor is owned below.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if fd < 0 {
            tracing::debug!(
                "inotify unavailable ({}); mounted Secrets are read on every use",
                std::io::Error::last_os_error()
            );
            return None;
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Some(DirWatcher {
            fd,
            generation: AtomicU64::new(0),
            watches: Mutex::default(),
        })
    }

    /// The number of changes seen so far, including every change whose
    /// syscall returned before this call.
    pub fn generation(&self) -> u64 {
        // Drain under the lock: a concurrent reader that took the events
        // has bumped the counter before this one looks at it.
        let mut w = self.watches.lock().unwrap();
        self.drain(&mut w);
        self.generation.load(Ordering::SeqCst)
    }

    /// Watches `dir` (idempotent). False if the kernel refused (missing
    /// directory, watch limit), in which case nothing under it may be cached.
    pub fn watch(&self, dir: &Path) -> bool {
        let mut w = self.watches.lock().unwrap();
        // Forget watches of directories removed meanwhile first.
        self.drain(&mut w);
        if w.1.contains_key(dir) {
            return true;
        }
        let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: valid descriptor and NUL-terminated path.
        let wd = unsafe {
            libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), MASK | libc::IN_ONLYDIR)
        };
        if wd < 0 {
            tracing::debug!(
                dir = %dir.display(),
                "cannot watch ({}); not caching it",
                std::io::Error::last_os_error()
            );
            return false;
        }
        w.0.insert(wd, dir.to_path_buf());
        w.1.insert(dir.to_path_buf(), wd);
        true
    }

    /// Reads whatever events are queued, bumping the generation if there
    /// were any.
    fn drain(&self, w: &mut (HashMap<i32, PathBuf>, HashMap<PathBuf, i32>)) {
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reading into a local buffer of the given length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return;
            }
            let n = n as usize;
            let header = std::mem::size_of::<libc::inotify_event>();
            let mut off = 0;
            while off + header <= n {
                // SAFETY: the kernel wrote a whole event header at `off`;
                // read_unaligned copes with the byte buffer's alignment.
                let ev: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
                if ev.mask & libc::IN_IGNORED != 0 {
                    // The directory went away (or was unmounted): forget the
                    // watch so a later read watches it anew.
                    if let Some(p) = w.0.remove(&ev.wd) {
                        w.1.remove(&p);
                    }
                }
                off += header + ev.len as usize;
            }
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Changed since `after`: checked right away, no waiting, since a
    /// change must be visible to the next read.
    fn wait_for(w: &DirWatcher, after: u64) -> bool {
        w.generation() > after
    }

    #[test]
    fn change_in_watched_dir_is_seen() {
        let d = tempfile::tempdir().unwrap();
        let w = DirWatcher::start().expect("inotify");
        assert!(w.watch(d.path()));
        let g = w.generation();
        std::fs::write(d.path().join("token"), "a").unwrap();
        assert!(wait_for(&w, g), "a write was not noticed");
        // A kubelet-style swap: a new ..data symlink renamed into place.
        let g = w.generation();
        std::os::unix::fs::symlink("x", d.path().join("..data_tmp")).unwrap();
        std::fs::rename(d.path().join("..data_tmp"), d.path().join("..data")).unwrap();
        assert!(wait_for(&w, g), "a symlink swap was not noticed");
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
        assert!(wait_for(&w, g));
        std::fs::create_dir(&d).unwrap();
        assert!(w.watch(&d));
        let g = w.generation();
        std::fs::write(d.join("k"), "v").unwrap();
        assert!(wait_for(&w, g), "the re-created directory is not watched");
    }
}
