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
