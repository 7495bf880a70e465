//! The node's operating-system tools: loop devices, filesystems, mounts.
//!
//! Everything here runs a well-known program (`losetup`, `mount`, `umount`,
//! `mkfs.*`, `blkid`, `resize2fs`, `xfs_growfs`) with explicit arguments, or
//! reads `/proc/self/mountinfo`. Failures carry the program's own message.

use super::VolumeError;
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(program: &str, args: &[&str]) -> Result<String, VolumeError> {
    tracing::debug!(program, ?args, "exec");
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| VolumeError::Tool {
            program: program.into(),
            message: format!("cannot run: {e}"),
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(VolumeError::Tool {
            program: program.into(),
            message: format!("{} ({})", stderr.trim(), out.status),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A loop device backed by an image file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopDevice {
    /// Its device node, `/dev/loopN`.
    pub path: PathBuf,
    /// Detached already, waiting for another process to close it: the
    /// kernel clears a loop device that is detached while open (say, by the
    /// host's udev probing it) at its last close. Nothing of ours is on it
    /// (no mapping, no mount), so it no longer counts as attached.
    pub releasing: bool,
}

/// The loop devices backed by `file`.
pub fn loops_for(file: &Path) -> Result<Vec<LoopDevice>, VolumeError> {
    let file = file.to_string_lossy();
    let out = run(
        "losetup",
        &[
            "--noheadings",
            "--raw",
            "--output",
            "NAME,AUTOCLEAR",
            "-j",
            &file,
        ],
    )?;
    let mut loops = Vec::new();
    for line in out.lines() {
        let mut cols = line.split_whitespace();
        let (Some(name), autoclear) = (cols.next(), cols.next()) else {
            continue;
        };
        let path = PathBuf::from(name);
        let releasing = autoclear == Some("1") && !in_use(&path)?;
        loops.push(LoopDevice { path, releasing });
    }
    Ok(loops)
}

/// Whether a block device holds something: a device-mapper table on it
/// (its `holders`), or a mount of it.
fn in_use(dev: &Path) -> Result<bool, VolumeError> {
    let name = dev.file_name().unwrap_or_default();
    let holders = Path::new("/sys/block").join(name).join("holders");
    let held = std::fs::read_dir(&holders).is_ok_and(|mut d| d.next().is_some());
    Ok(held || !mounts_of(dev)?.is_empty())
}

/// Attaches `file` to a free loop device (direct I/O where supported).
pub fn loop_attach(file: &Path) -> Result<PathBuf, VolumeError> {
    let f = file.to_string_lossy();
    // Direct I/O avoids double caching; file systems without O_DIRECT
    // (tmpfs) refuse it, so fall back to buffered.
    let out = run("losetup", &["--find", "--show", "--direct-io=on", &f])
        .or_else(|_| run("losetup", &["--find", "--show", &f]))?;
    Ok(PathBuf::from(out.trim()))
}

/// Detaches a loop device.
pub fn loop_detach(dev: &Path) -> Result<(), VolumeError> {
    run("losetup", &["--detach", &dev.to_string_lossy()]).map(|_| ())
}

/// Makes a loop device re-read the size of its backing file.
pub fn loop_refresh(dev: &Path) -> Result<(), VolumeError> {
    run("losetup", &["--set-capacity", &dev.to_string_lossy()]).map(|_| ())
}

/// The filesystem (or other) type `blkid` sees on `dev`, if any.
pub fn probe_type(dev: &Path) -> Result<Option<String>, VolumeError> {
    let out = Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "TYPE"])
        .arg(dev)
        .output()
        .map_err(|e| VolumeError::Tool {
            program: "blkid".into(),
            message: format!("cannot run: {e}"),
        })?;
    // blkid exits 2 when nothing was found.
    match out.status.code() {
        Some(0) => {
            let t = String::from_utf8_lossy(&out.stdout).trim().to_string();
            Ok((!t.is_empty()).then_some(t))
        }
        Some(2) => Ok(None),
        _ => Err(VolumeError::Tool {
            program: "blkid".into(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }),
    }
}

/// Creates a filesystem of `fs_type` (ext4 or xfs) on `dev`.
pub fn mkfs(fs_type: &str, dev: &Path) -> Result<(), VolumeError> {
    let dev = dev.to_string_lossy();
    match fs_type {
        "ext4" => run(
            "mkfs.ext4",
            &["-q", "-F", "-E", "lazy_itable_init=1,nodiscard", &dev],
        ),
        "xfs" => run("mkfs.xfs", &["-q", "-K", &dev]),
        other => {
            return Err(VolumeError::Unsupported(format!(
                "filesystem {other:?} (ext4 and xfs are supported)"
            )));
        }
    }
    .map(|_| ())
}

/// Grows the filesystem on `dev` (mounted at `mount_point`) to fill it.
pub fn grow_fs(fs_type: &str, dev: &Path, mount_point: &Path) -> Result<(), VolumeError> {
    match fs_type {
        "ext4" => run("resize2fs", &[&dev.to_string_lossy()]),
        "xfs" => run("xfs_growfs", &[&mount_point.to_string_lossy()]),
        other => return Err(VolumeError::Unsupported(format!("filesystem {other:?}"))),
    }
    .map(|_| ())
}

/// Mounts `source` at `target` with `fs_type` and `options`.
pub fn mount(
    source: &Path,
    target: &Path,
    fs_type: Option<&str>,
    options: &[String],
) -> Result<(), VolumeError> {
    let mut args: Vec<String> = Vec::new();
    if let Some(t) = fs_type {
        args.push("-t".into());
        args.push(t.into());
    }
    if !options.is_empty() {
        args.push("-o".into());
        args.push(options.join(","));
    }
    args.push(source.to_string_lossy().into_owned());
    args.push(target.to_string_lossy().into_owned());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run("mount", &refs).map(|_| ())
}

/// Unmounts `target`.
pub fn umount(target: &Path) -> Result<(), VolumeError> {
    run("umount", &[&target.to_string_lossy()]).map(|_| ())
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Mount point.
    pub target: PathBuf,
    /// Filesystem type.
    pub fs_type: String,
    /// Mount source (device).
    pub source: String,
    /// Per-mount options (`rw`/`ro`, ...).
    pub options: String,
    /// The mounted filesystem's device number (`major:minor`): for a
    /// filesystem on a block device, that device's `st_rdev`.
    pub dev: u64,
}

impl MountEntry {
    /// Whether the mount is read-only.
    pub fn read_only(&self) -> bool {
        self.options.split(',').any(|o| o == "ro")
    }
}

/// The device number (`st_rdev`) of the device node `path`.
pub fn device_number(path: &Path) -> Option<u64> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::metadata(path).ok()?;
    m.file_type().is_block_device().then(|| m.rdev())
}

fn parse_dev(s: &str) -> Option<u64> {
    let (major, minor) = s.split_once(':')?;
    Some(libc::makedev(major.parse().ok()?, minor.parse().ok()?))
}

fn unescape(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            Some(MountEntry {
                target: PathBuf::from(unescape(left.get(4)?)),
                options: left.get(5)?.to_string(),
                fs_type: right.first()?.to_string(),
                source: unescape(right.get(1)?),
                dev: parse_dev(left.get(2)?)?,
            })
        })
        .collect()
}

/// The mount at exactly `target`, if any (the last one wins, as in the
/// kernel's view).
pub fn mount_at(target: &Path) -> Result<Option<MountEntry>, VolumeError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| VolumeError::Io {
        path: "/proc/self/mountinfo".into(),
        source: e,
    })?;
    let target = std::fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf());
    Ok(parse_mountinfo(&text)
        .into_iter()
        .rfind(|m| m.target == target))
}

/// Every mount point of the filesystem on `device` (its staging mount and
/// the bind mounts of it), and of the device node itself when bind-mounted
/// (a published block volume).
pub fn mounts_of(device: &Path) -> Result<Vec<PathBuf>, VolumeError> {
    let Some(dev) = device_number(device) else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| VolumeError::Io {
        path: "/proc/self/mountinfo".into(),
        source: e,
    })?;
    // Only a device-node filesystem can hold a bind-mounted block device:
    // other mount points are never stat'ed (a hung NFS mount would block).
    Ok(parse_mountinfo(&text)
        .into_iter()
        .filter(|m| {
            m.dev == dev
                || (matches!(m.fs_type.as_str(), "devtmpfs" | "tmpfs")
                    && device_number(&m.target) == Some(dev))
        })
        .map(|m| m.target)
        .collect())
}

/// Free and total bytes and inodes of the filesystem holding `path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsStats {
    /// Total bytes.
    pub total_bytes: u64,
    /// Bytes available to unprivileged users.
    pub available_bytes: u64,
    /// Used bytes.
    pub used_bytes: u64,
    /// Total inodes.
    pub total_inodes: u64,
    /// Free inodes.
    pub free_inodes: u64,
}

/// `statvfs(path)`.
pub fn fs_stats(path: &Path) -> Result<FsStats, VolumeError> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| VolumeError::Invalid(format!("{} contains a NUL byte", path.display())))?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    if rc != 0 {
        return Err(VolumeError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    let frsize = s.f_frsize as u64;
    let total = s.f_blocks as u64 * frsize;
    let free = s.f_bfree as u64 * frsize;
    Ok(FsStats {
        total_bytes: total,
        available_bytes: s.f_bavail as u64 * frsize,
        used_bytes: total.saturating_sub(free),
        total_inodes: s.f_files as u64,
        free_inodes: s.f_ffree as u64,
    })
}

/// The size in bytes of a block device or file.
pub fn device_size(dev: &Path) -> Result<u64, VolumeError> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(dev).map_err(|e| VolumeError::Io {
        path: dev.to_path_buf(),
        source: e,
    })?;
    f.seek(SeekFrom::End(0)).map_err(|e| VolumeError::Io {
        path: dev.to_path_buf(),
        source: e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_is_parsed_with_escapes() {
        let text = "36 35 98:0 /mnt1 /mnt/a\\040b rw,noatime master:1 - ext4 /dev/loop3 rw,errors=continue\n\
                    37 35 98:0 / /var/lib/x ro shared:2 - xfs /dev/mapper/luks-v1 ro\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].target, PathBuf::from("/mnt/a b"));
        assert_eq!(m[0].fs_type, "ext4");
        assert_eq!(m[0].source, "/dev/loop3");
        assert_eq!(m[1].options, "ro");
        assert_eq!(m[1].source, "/dev/mapper/luks-v1");
        assert_eq!(m[0].dev, libc::makedev(98, 0));
        assert!(!m[0].read_only() && m[1].read_only());
    }
}
