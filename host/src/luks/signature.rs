//! "Never format a device that holds anything": signature probing.
//!
//! `blkid -p` (util-linux, low-level probing) is asked first when present;
//! independently, well-known magics are checked here, and any non-zero byte
//! in the first MiB counts as data. A device passes only if it is blank.

use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Command;

/// What was found on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// A known format (`crypto_LUKS`, `ext4`, `xfs`, `gpt`, …).
    Known(String),
    /// Non-zero data with no recognised signature.
    Data,
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signature::Known(t) => write!(f, "a {t} signature"),
            Signature::Data => f.write_str("data (non-zero bytes in its first MiB)"),
        }
    }
}

const MAGICS: &[(u64, &[u8], &str)] = &[
    (0, b"LUKS\xba\xbe", "crypto_LUKS"),
    (0, b"SKUL\xba\xbe", "crypto_LUKS"),
    (1080, &[0x53, 0xef], "ext2/3/4"),
    (0, b"XFSB", "xfs"),
    (0x10040, b"_BHRfS_M", "btrfs"),
    (4086, b"SWAPSPACE2", "swap"),
    (4086, b"SWAP-SPACE", "swap"),
    (512, b"EFI PART", "gpt"),
    (510, &[0x55, 0xaa], "dos"),
    (536, b"LVM2 001", "LVM2_member"),
    (0, b"hsqs", "squashfs"),
    (32769, b"CD001", "iso9660"),
];

/// Probes `path`; `Ok(None)` means blank.
pub fn probe_signature(path: &Path) -> std::io::Result<Option<Signature>> {
    if let Some(t) = blkid_type(path) {
        return Ok(Some(Signature::Known(t)));
    }
    probe_builtin(path)
}

/// The host's own check, without blkid: known magics, LUKS2's second
/// header, and any non-zero byte in the first MiB.
fn probe_builtin(path: &Path) -> std::io::Result<Option<Signature>> {
    let mut f = std::fs::File::open(path)?;
    let mut head = vec![0u8; 1 << 20];
    let mut n = 0;
    while n < head.len() {
        let r = f.read(&mut head[n..])?;
        if r == 0 {
            break;
        }
        n += r;
    }
    head.truncate(n);
    for (off, magic, name) in MAGICS {
        let off = *off as usize;
        if head.len() >= off + magic.len() && &head[off..off + magic.len()] == *magic {
            return Ok(Some(Signature::Known((*name).to_string())));
        }
    }
    // LUKS2 keeps a second header copy; check its usual offsets too.
    for off in [
        0x4000u64, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000,
    ] {
        let mut m = [0u8; 6];
        if f.seek(SeekFrom::Start(off)).is_ok()
            && f.read_exact(&mut m).is_ok()
            && (&m == b"SKUL\xba\xbe" || &m == b"LUKS\xba\xbe")
        {
            return Ok(Some(Signature::Known("crypto_LUKS".into())));
        }
    }
    if head.iter().any(|b| *b != 0) {
        return Ok(Some(Signature::Data));
    }
    Ok(None)
}

fn blkid_type(path: &Path) -> Option<String> {
    let out = Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "TYPE", "-s", "PTTYPE"])
        .arg(path)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let t = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()?
        .trim()
        .to_string();
    (!t.is_empty()).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A 5 MiB sparse file with `bytes` at `off`.
    fn file_with(dir: &Path, off: u64, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.join(format!("img-{off}-{}", hex::encode(bytes)));
        let mut f = std::fs::File::create(&p).unwrap();
        f.set_len(5 << 20).unwrap();
        f.seek(SeekFrom::Start(off)).unwrap();
        f.write_all(bytes).unwrap();
        p
    }

    #[test]
    fn every_builtin_magic_is_recognised() {
        let dir = tempfile::tempdir().unwrap();
        for (off, magic, name) in MAGICS {
            let p = file_with(dir.path(), *off, magic);
            assert_eq!(
                probe_builtin(&p).unwrap(),
                Some(Signature::Known(name.to_string())),
                "{name} at {off}"
            );
        }
    }

    #[test]
    fn luks2_second_header_beyond_the_first_mib_is_recognised() {
        let dir = tempfile::tempdir().unwrap();
        for off in [0x4000u64, 0x100000, 0x400000] {
            let p = file_with(dir.path(), off, b"SKUL\xba\xbe");
            assert_eq!(
                probe_builtin(&p).unwrap(),
                Some(Signature::Known("crypto_LUKS".into())),
                "at {off:#x}"
            );
        }
    }

    #[test]
    fn any_byte_in_the_first_mib_is_data_and_zeros_are_blank() {
        let dir = tempfile::tempdir().unwrap();
        let blank = file_with(dir.path(), 0, &[]);
        assert_eq!(probe_builtin(&blank).unwrap(), None);
        assert_eq!(probe_signature(&blank).unwrap(), None);
        let last = file_with(dir.path(), (1 << 20) - 1, &[1]);
        assert_eq!(probe_builtin(&last).unwrap(), Some(Signature::Data));
        assert_eq!(probe_signature(&last).unwrap(), Some(Signature::Data));
        // A short file (smaller than any magic's offset) is still probed.
        let short = dir.path().join("short");
        std::fs::write(&short, [0u8, 0, 7]).unwrap();
        assert_eq!(probe_builtin(&short).unwrap(), Some(Signature::Data));
    }
}
