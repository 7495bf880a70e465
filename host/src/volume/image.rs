//! [`ImageFileBackend`]: sparse image files attached with loop devices.

use super::{Backend, BlockSource, VolumeError, create_private_dir, io_err, sys};
use std::path::{Path, PathBuf};

/// Volumes as sparse files `<dir>/<id>.img`, attached with loop devices.
#[derive(Debug, Clone)]
pub struct ImageFileBackend {
    dir: PathBuf,
}

impl ImageFileBackend {
    /// A backend keeping images in `dir` (created 0700 if missing).
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, VolumeError> {
        let dir = dir.into();
        create_private_dir(&dir)?;
        Ok(ImageFileBackend { dir })
    }

    fn image(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.img"))
    }

    fn tmp(&self, id: &str) -> PathBuf {
        self.dir.join(format!(".{id}.img.partial"))
    }

    /// Copies `from` to a temporary file, then renames it to `to`: a crash
    /// leaves either nothing or a complete copy.
    fn copy(&self, from: &Path, id: &str) -> Result<(), VolumeError> {
        if !from.exists() {
            return Err(VolumeError::Missing(from.display().to_string()));
        }
        let tmp = self.tmp(id);
        let _ = std::fs::remove_file(&tmp);
        let out = std::process::Command::new("cp")
            .args(["--reflink=auto", "--sparse=always"])
            .arg(from)
            .arg(&tmp)
            .output()
            .map_err(io_err(&tmp))?;
        if !out.status.success() {
            let _ = std::fs::remove_file(&tmp);
            return Err(VolumeError::Tool {
                program: "cp".into(),
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let target = self.image(id);
        std::fs::rename(&tmp, &target).map_err(io_err(&target))
    }
}

impl Backend for ImageFileBackend {
    fn name(&self) -> &'static str {
        "image-file"
    }

    fn create(&self, id: &str, size: u64, source: BlockSource<'_>) -> Result<(), VolumeError> {
        let path = self.image(id);
        match source {
            BlockSource::Empty => {
                let tmp = self.tmp(id);
                let f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
                f.set_len(size).map_err(io_err(&tmp))?;
                f.sync_all().map_err(io_err(&tmp))?;
                std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
            }
            BlockSource::Volume(src) | BlockSource::Snapshot(src) => {
                self.copy(&self.image(src), id)?;
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                let len = f.metadata().map_err(io_err(&path))?.len();
                if size > len {
                    f.set_len(size).map_err(io_err(&path))?;
                }
            }
        }
        Ok(())
    }

    fn snapshot(&self, volume: &str, snapshot: &str) -> Result<(), VolumeError> {
        self.copy(&self.image(volume), snapshot)
    }

    fn remove(&self, id: &str) -> Result<(), VolumeError> {
        for p in [self.tmp(id), self.image(id)] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&p)(e)),
            }
        }
        Ok(())
    }

    fn exists(&self, id: &str) -> bool {
        self.image(id).exists()
    }

    fn size(&self, id: &str) -> Result<u64, VolumeError> {
        let p = self.image(id);
        Ok(std::fs::metadata(&p).map_err(io_err(&p))?.len())
    }

    fn grow(&self, id: &str, size: u64) -> Result<(), VolumeError> {
        let p = self.image(id);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .map_err(io_err(&p))?;
        if f.metadata().map_err(io_err(&p))?.len() < size {
            f.set_len(size).map_err(io_err(&p))?;
        }
        if let Some(dev) = self.attached(id)? {
            sys::loop_refresh(&dev)?;
        }
        Ok(())
    }

    fn attach(&self, id: &str) -> Result<PathBuf, VolumeError> {
        if let Some(dev) = self.attached(id)? {
            return Ok(dev);
        }
        let p = self.image(id);
        if !p.exists() {
            return Err(VolumeError::Missing(format!("volume {id}")));
        }
        sys::loop_attach(&p)
    }

    fn attached(&self, id: &str) -> Result<Option<PathBuf>, VolumeError> {
        let p = self.image(id);
        if !p.exists() {
            return Ok(None);
        }
        Ok(sys::loops_for(&p)?
            .into_iter()
            .find(|l| !l.releasing)
            .map(|l| l.path))
    }

    fn detach(&self, id: &str) -> Result<(), VolumeError> {
        let p = self.image(id);
        if !p.exists() {
            return Ok(());
        }
        // A loop device still open elsewhere (a probe, a closing mapping)
        // detaches lazily at its last close: wait until each is gone or
        // releasing (nothing of ours left on it), so a following DeleteVolume
        // or stage sees the truth.
        for _ in 0..200 {
            let held: Vec<_> = sys::loops_for(&p)?
                .into_iter()
                .filter(|l| !l.releasing)
                .collect();
            if held.is_empty() {
                return Ok(());
            }
            for l in held {
                let _ = sys::loop_detach(&l.path);
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        Err(VolumeError::Tool {
            program: "losetup".into(),
            message: format!(
                "{} is still attached after 5 s (a mapping or mount is on it)",
                p.display()
            ),
        })
    }

    fn available_bytes(&self) -> Result<u64, VolumeError> {
        Ok(sys::fs_stats(&self.dir)?.available_bytes)
    }

    fn header_path(&self, id: &str) -> Result<PathBuf, VolumeError> {
        Ok(self.image(id))
    }
}

#[cfg(test)]
mod tests {
    //! Real loop devices (root, as every image-file test needs).

    use super::*;
    use crate::volume::sys::LoopDevice;
    use std::time::{Duration, Instant};

    fn backend() -> (tempfile::TempDir, ImageFileBackend) {
        let dir = tempfile::tempdir().unwrap();
        let b = ImageFileBackend::new(dir.path().join("images")).unwrap();
        b.create("v", 16 << 20, BlockSource::Empty).unwrap();
        (dir, b)
    }

    /// Waits (bounded) for the kernel to clear the image's loop devices.
    fn cleared(b: &ImageFileBackend) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if sys::loops_for(&b.image("v")).unwrap().is_empty() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// A device another process holds open (the host's udev probing a
    /// freshly formatted volume) is detached at once and no longer counts
    /// as attached; the kernel clears it at the holder's last close.
    #[test]
    fn a_loop_held_open_elsewhere_is_releasing_once_detached() {
        let (_dir, b) = backend();
        let dev = b.attach("v").unwrap();
        let holder = std::fs::File::open(&dev).unwrap();
        let start = Instant::now();
        b.detach("v").unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "did not wait out the holder"
        );
        assert_eq!(b.attached("v").unwrap(), None);
        let loops = sys::loops_for(&b.image("v")).unwrap();
        assert_eq!(
            loops,
            vec![LoopDevice {
                path: dev.clone(),
                releasing: true
            }]
        );
        drop(holder);
        assert!(cleared(&b), "the kernel clears it at the last close");
    }

    /// Unmounts its target when dropped, so a failed assertion leaves no
    /// mount behind.
    struct Mounted(PathBuf);
    impl Drop for Mounted {
        fn drop(&mut self) {
            let _ = sys::umount(&self.0);
        }
    }

    /// A device with our filesystem mounted on it is not released by a
    /// detach: it stays attached, and the error says why.
    #[test]
    fn a_mounted_loop_stays_attached_and_detach_says_so() {
        let (dir, b) = backend();
        let dev = b.attach("v").unwrap();
        sys::mkfs("ext4", &dev).unwrap();
        let target = dir.path().join("mnt");
        std::fs::create_dir(&target).unwrap();
        sys::mount(&dev, &target, Some("ext4"), &[]).unwrap();
        let mounted = Mounted(target);
        let e = b.detach("v").unwrap_err().to_string();
        assert!(e.contains("still attached") && e.contains("mount"), "{e}");
        assert_eq!(b.attached("v").unwrap(), Some(dev));
        drop(mounted);
        b.detach("v").unwrap();
        assert!(cleared(&b));
    }
}
