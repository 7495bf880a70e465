//! The audit log: one JSON line per key operation a plugin performs —
//! when, which kmsID and plugin (name and sha256), which tenant and
//! volume, which operation, how it ended and how long it took. Never key
//! material: the line is built from identifiers and the error's class
//! only, never from a value or an error message.
//!
//! This is what a security reviewer reads to answer "who touched which
//! key, when, through what code". `kmshost csi --audit-log PATH` (or `-`
//! for stdout) turns it on.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where audit lines go.
#[derive(Clone)]
pub struct AuditLog {
    out: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditLog")
    }
}

/// One key operation, as the audit log records it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditRecord<'a> {
    /// When it ended, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// The kmsID.
    pub kms_id: &'a str,
    /// The plugin's name.
    pub plugin: &'a str,
    /// The sha256 of the plugin's component bytes, hex.
    pub plugin_sha256: String,
    /// The tenant (the PVC's namespace) the kmsID was used as, if any.
    pub tenant: Option<&'a str>,
    /// The key ID: the volume (or snapshot) whose key it is.
    pub volume: &'a str,
    /// `get`, `put`, `delete`, `wrap` or `unwrap`.
    pub operation: &'a str,
    /// `ok`, or the error's class ([`super::KmsError::class`]).
    pub result: &'a str,
    /// Milliseconds the operation took, in the sandbox and the KMS.
    pub latency_ms: f64,
}

impl AuditLog {
    /// Audit lines to `out` (a file opened for append, or stdout).
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        AuditLog {
            out: Arc::new(Mutex::new(out)),
        }
    }

    /// The audit log at `path` (appended to; `-` is stdout, which the
    /// process uses for nothing else while it serves).
    pub fn open(path: &std::path::Path) -> std::io::Result<Self> {
        if path == std::path::Path::new("-") {
            return Ok(Self::new(Box::new(std::io::stdout())));
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self::new(Box::new(f)))
    }

    /// Writes `r` as one line. A write that fails is reported in the log
    /// of the process and does not fail the operation.
    pub fn record(&self, r: &AuditRecord<'_>) {
        let mut line = match serde_json::to_vec(r) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("audit record not serialised: {e}");
                return;
            }
        };
        line.push(b'\n');
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = out.write_all(&line).and_then(|()| out.flush()) {
            tracing::error!("audit log write failed: {e}");
        }
    }
}

/// `t` as RFC 3339 UTC with milliseconds (`2026-12-07T10:05:00.123Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// The proleptic Gregorian date of day `z` after 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        let at = |s: u64, ms: u64| UNIX_EPOCH + Duration::from_millis(s * 1000 + ms);
        for (t, want) in [
            (at(0, 0), "1970-01-01T00:00:00.000Z"),
            (at(951_782_400, 5), "2000-02-29T00:00:00.005Z"),
            (at(1_796_637_900, 123), "2026-12-07T10:05:00.123Z"),
            (at(4_107_542_399, 999), "2100-02-28T23:59:59.999Z"),
        ] {
            assert_eq!(rfc3339(t), want);
        }
    }
}
