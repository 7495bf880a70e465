//! Keys in and out of `kmshost kms …`: input is never changed (binary keys
//! stay exact), output is never shown unless asked for, and a key file is
//! a new 0600 file renamed into place.

use crate::types::{SecretBytes, WrappedKey};
use base64::Engine as _;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why a key could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyIoError {
    /// Reading or writing a file or a standard stream failed.
    #[error("{what}: {source}")]
    Io {
        /// The file or stream.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// No bytes were given.
    #[error("no input: pipe the value on stdin or pass --in FILE")]
    Empty,
    /// A wrapped-key blob is not base64 text.
    #[error("blob is not base64 text")]
    NotBase64,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> KeyIoError {
    let what = what.into();
    move |source| KeyIoError::Io { what, source }
}

/// Reads a key from `input` (or stdin) exactly as given: binary input is
/// never changed. With `text`, one trailing line ending (`\n` or `\r\n`)
/// is removed, as typed or piped from `echo`.
pub fn read_input(input: &Option<PathBuf>, text: bool) -> Result<SecretBytes, KeyIoError> {
    let mut buf = match input {
        Some(p) => std::fs::read(p).map_err(io(format!("reading {}", p.display())))?,
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(io("reading stdin"))?;
            buf
        }
    };
    if text {
        trim_one_line_ending(&mut buf);
    }
    if buf.is_empty() {
        return Err(KeyIoError::Empty);
    }
    Ok(SecretBytes::new(buf))
}

fn trim_one_line_ending(buf: &mut Vec<u8>) {
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
}

/// Reads a base64 wrapped-key blob from `input` (or stdin).
pub fn read_blob(input: &Option<PathBuf>) -> Result<WrappedKey, KeyIoError> {
    let blob = read_input(input, false)?;
    let text = std::str::from_utf8(blob.expose()).map_err(|_| KeyIoError::NotBase64)?;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map(WrappedKey::new)
        .map_err(|_| KeyIoError::NotBase64)
}

/// Writes a key to `out` (a 0600 file), or to stdout when `reveal`; else
/// says only its length, on stderr.
pub fn emit_secret(
    value: &SecretBytes,
    out: &Option<PathBuf>,
    reveal: bool,
) -> Result<(), KeyIoError> {
    match (out, reveal) {
        (Some(p), _) => {
            write_key_file(p, value).map_err(io(format!("writing {}", p.display())))?;
            eprintln!("wrote {} bytes to {}", value.len(), p.display());
        }
        (None, true) => {
            let mut o = std::io::stdout();
            o.write_all(value.expose())
                .and_then(|()| o.write_all(b"\n"))
                .map_err(io("writing stdout"))?;
        }
        (None, false) => {
            eprintln!(
                "ok: {} bytes (not shown: pass --reveal or --out FILE)",
                value.len()
            );
        }
    }
    Ok(())
}

/// Writes a key to `path` as a new file of mode 0600 renamed into place: an
/// existing file's mode is never kept, and a symlink at `path` is replaced,
/// never followed.
pub fn write_key_file(path: &Path, value: &SecretBytes) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut f = tempfile::Builder::new()
        .prefix(".kmshost-key")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    f.write_all(value.expose())?;
    f.as_file().sync_all()?;
    f.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_mode_drops_exactly_one_line_ending() {
        for (input, want) in [
            (&b"abc\n"[..], &b"abc"[..]),
            (b"abc\r\n", b"abc"),
            (b"abc\n\n", b"abc\n"),
            (b"abc", b"abc"),
            (b"abc\r", b"abc\r"),
            (b"\n", b""),
        ] {
            let mut v = input.to_vec();
            trim_one_line_ending(&mut v);
            assert_eq!(v, want, "{input:?}");
        }
    }

    #[test]
    fn key_files_are_new_0600_files_replacing_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        let link = dir.path().join("key");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        write_key_file(&link, &SecretBytes::new(b"k".to_vec())).unwrap();
        assert_eq!(
            std::fs::read(&victim).unwrap(),
            b"keep",
            "followed the link"
        );
        let meta = std::fs::symlink_metadata(&link).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&link).unwrap(), b"k");
    }
}
