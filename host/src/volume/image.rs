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
        Ok(sys::loops_for(&p)?.into_iter().next())
    }

    fn detach(&self, id: &str) -> Result<(), VolumeError> {
        let p = self.image(id);
        if !p.exists() {
            return Ok(());
        }
        // A loop device still open elsewhere (a probe, a closing mapping)
        // detaches lazily: wait until it is really gone, so a following
        // DeleteVolume or stage sees the truth.
        for _ in 0..200 {
            let devs = sys::loops_for(&p)?;
            if devs.is_empty() {
                return Ok(());
            }
            for dev in devs {
                let _ = sys::loop_detach(&dev);
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        Err(VolumeError::Tool {
            program: "losetup".into(),
            message: format!("{} is still attached after 5 s", p.display()),
        })
    }

    fn available_bytes(&self) -> Result<u64, VolumeError> {
        Ok(sys::fs_stats(&self.dir)?.available_bytes)
    }

    fn header_path(&self, id: &str) -> Result<PathBuf, VolumeError> {
        Ok(self.image(id))
    }
}
