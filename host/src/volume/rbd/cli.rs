//! Running `rbd` against one cluster as one Ceph user: the arguments every
//! call shares, the user's key handed over in a private key file (never in
//! argv or the environment, where `ps` and `/proc` show it), a deadline on
//! every call, and errors cut down to the tool's one-line reason with the
//! key scrubbed out.
//!
//! The tool runs with `-c /dev/null`: nothing from the node's own
//! `/etc/ceph` changes what kmshost talks to or as whom.

use super::super::VolumeError;
use crate::types::SecretBytes;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long one `rbd` call may take before it is killed (ceph's own
/// connect timeout is set shorter, so a dead cluster is reported by
/// ceph, with its reason).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the client waits to reach and authenticate to a monitor.
pub const CONNECT_TIMEOUT_SECS: u32 = 20;

/// A Ceph user and its key: the CSI Secret's `userID` and `userKey`.
/// `Debug` never shows the key.
#[derive(Clone)]
pub struct Credentials {
    user_id: String,
    key: SecretBytes,
}

/// The CSI Secret key holding the Ceph user's name (ceph-csi's).
pub const USER_ID: &str = "userID";
/// The CSI Secret key holding the Ceph user's key (ceph-csi's).
pub const USER_KEY: &str = "userKey";

impl Credentials {
    /// A user (`csi-rbd-provisioner`, without `client.`) and its base64
    /// cephx key.
    pub fn new(user_id: &str, key: SecretBytes) -> Result<Self, VolumeError> {
        let user_id = user_id.strip_prefix("client.").unwrap_or(user_id);
        if user_id.is_empty()
            || user_id.len() > 128
            || user_id.starts_with('-')
            || !user_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(VolumeError::Invalid(format!(
                "secret key {USER_ID}: {user_id:?} is not a Ceph user name"
            )));
        }
        let k = key.expose();
        if k.is_empty()
            || k.len() > 256
            || !k
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        {
            return Err(VolumeError::Invalid(format!(
                "secret key {USER_KEY} (user {user_id}): not a base64 cephx key"
            )));
        }
        Ok(Credentials {
            user_id: user_id.to_string(),
            key,
        })
    }

    /// From a CSI request's secrets (`userID`, `userKey`); a trailing
    /// newline on either (a Secret made with `--from-file`) is dropped.
    pub fn from_secrets(
        secrets: &std::collections::HashMap<String, String>,
    ) -> Result<Self, VolumeError> {
        let get = |k: &str| {
            secrets
                .get(k)
                .map(|v| v.trim_end_matches(['\n', '\r']).to_string())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    VolumeError::Invalid(format!(
                        "the Ceph credentials Secret has no {k} (it needs {USER_ID} and {USER_KEY})"
                    ))
                })
        };
        let id = get(USER_ID)?;
        let key = SecretBytes::new(get(USER_KEY)?.into_bytes());
        Self::new(&id, key)
    }

    /// The user name (without `client.`).
    pub fn user_id(&self) -> &str {
        &self.user_id
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, key REDACTED)", self.user_id)
    }
}

/// `rbd` bound to one cluster and user.
#[derive(Debug, Clone)]
pub struct RbdCli {
    program: PathBuf,
    cluster_id: String,
    mon_host: String,
    creds: Option<Credentials>,
    key_dir: PathBuf,
    timeout: Duration,
    connect_timeout_secs: u32,
}

/// What a failed call said, sorted by what the caller can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// ENOENT: the pool, image or snapshot does not exist.
    Missing,
    /// EEXIST.
    Exists,
    /// EBUSY, or the image has watchers: someone still uses it.
    Busy,
    /// EPERM/EACCES: the user may not do this.
    Denied,
    /// ETIMEDOUT and friends: the cluster was not reached.
    Unreachable,
    /// The kernel RBD driver is not there (`rbd device map` on a node
    /// without rbd.ko).
    NoKernel,
    /// A cluster call without credentials.
    NoCredentials,
    /// Anything else.
    Other,
}

/// A failed `rbd` call: its sorted reason and its one-line message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// What kind of failure.
    pub failure: Failure,
    /// The tool's reason, sanitized.
    pub message: String,
}

impl RbdCli {
    /// `rbd` (from `PATH`) for `cluster` as `creds`; key files are written
    /// under the system temporary directory.
    pub fn new(cluster: &super::Cluster, creds: Credentials) -> Self {
        Self::with_creds(cluster, Some(creds))
    }

    /// `rbd` for `cluster` as a user if the request named one, else for
    /// node-local calls only ([`RbdCli::run_local`]).
    pub fn with_creds(cluster: &super::Cluster, creds: Option<Credentials>) -> Self {
        RbdCli {
            program: "rbd".into(),
            cluster_id: cluster.id.clone(),
            mon_host: cluster.mon_host(),
            creds,
            key_dir: std::env::temp_dir(),
            timeout: CALL_TIMEOUT,
            connect_timeout_secs: CONNECT_TIMEOUT_SECS,
        }
    }

    /// Uses `program` instead of `rbd` from `PATH`.
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// Writes key files under `dir` (a private tmpfs in a pod).
    pub fn with_key_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.key_dir = dir.into();
        self
    }

    /// Kills a call after `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Gives up reaching a monitor after `secs` seconds (default
    /// [`CONNECT_TIMEOUT_SECS`]).
    pub fn with_connect_timeout(mut self, secs: u32) -> Self {
        self.connect_timeout_secs = secs.max(1);
        self
    }

    /// The cluster's ID (for messages).
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The user (for messages).
    pub fn user_id(&self) -> &str {
        self.creds.as_ref().map_or("(none)", Credentials::user_id)
    }

    /// Runs `rbd <args>` on the node only, without reaching the cluster
    /// (`device list`, `device unmap`): no user, no key.
    pub fn run_local<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<Vec<u8>, CallError> {
        let mut argv: Vec<OsString> = vec!["-c".into(), "/dev/null".into()];
        argv.extend(args.iter().map(|a| a.as_ref().to_os_string()));
        let (ok, stdout, stderr) = self.spawn(&argv)?;
        if ok {
            return Ok(stdout);
        }
        Err(self.failure(&stderr))
    }

    /// Runs `rbd <args>` against the cluster as the user, and returns its
    /// stdout.
    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<Vec<u8>, CallError> {
        let Some(creds) = &self.creds else {
            return Err(CallError {
                failure: Failure::NoCredentials,
                message: format!(
                    "this call carries no Ceph credentials for cluster {} (secret keys \
                     {USER_ID}, {USER_KEY})",
                    self.cluster_id
                ),
            });
        };
        let keyfile = self.keyfile(creds).map_err(|e| CallError {
            failure: Failure::Other,
            message: format!("writing the key file: {e}"),
        })?;
        let mut argv: Vec<OsString> = vec![
            "-c".into(),
            "/dev/null".into(),
            "--mon_host".into(),
            self.mon_host.clone().into(),
            "--id".into(),
            creds.user_id.clone().into(),
            "--keyfile".into(),
            keyfile.path().into(),
            "--client_mount_timeout".into(),
            self.connect_timeout_secs.to_string().into(),
            "--rados_osd_op_timeout".into(),
            "60".into(),
            "--rados_mon_op_timeout".into(),
            "60".into(),
            "--log_to_stderr=false".into(),
            "--err_to_stderr=false".into(),
        ];
        argv.extend(args.iter().map(|a| a.as_ref().to_os_string()));
        let out = self.spawn(&argv);
        drop(keyfile);
        let (status, stdout, stderr) = out?;
        if status {
            return Ok(stdout);
        }
        Err(self.failure(&stderr))
    }

    /// The key in a 0600 file that lives for one call.
    fn keyfile(&self, creds: &Credentials) -> std::io::Result<tempfile::NamedTempFile> {
        let mut f = tempfile::Builder::new()
            .prefix(".kmshost-ceph-")
            .tempfile_in(&self.key_dir)?;
        f.write_all(creds.key.expose())?;
        f.flush()?;
        Ok(f)
    }

    /// Runs the tool with a deadline: (success, stdout, stderr). The
    /// pipes are drained by two threads while this one waits, so a chatty
    /// tool never blocks on a full pipe; past the deadline it is killed.
    fn spawn(&self, argv: &[OsString]) -> Result<(bool, Vec<u8>, String), CallError> {
        let mut child = Command::new(&self.program)
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| CallError {
                failure: Failure::Other,
                message: format!("running {}: {e}", self.program.display()),
            })?;
        let drain = |pipe: Option<Box<dyn Read + Send>>, cap: u64| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(p) = pipe {
                    let _ = p.take(cap).read_to_end(&mut buf);
                }
                buf
            })
        };
        let out = drain(child.stdout.take().map(|p| Box::new(p) as _), 16 << 20);
        let err = drain(child.stderr.take().map(|p| Box::new(p) as _), 1 << 20);
        let deadline = std::time::Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Ok(s),
                Ok(None) if std::time::Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(format!(
                        "did not finish within {} s",
                        self.timeout.as_secs()
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Err(e) => break Err(format!("waiting for it: {e}")),
            }
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
        match status {
            Ok(s) => Ok((s.success(), stdout, stderr)),
            Err(why) => Err(CallError {
                failure: Failure::Unreachable,
                message: format!("rbd {why}"),
            }),
        }
    }

    /// The failure in `stderr`: its last `rbd:` line (the reason), with the
    /// key scrubbed out should ceph ever echo it.
    fn failure(&self, stderr: &str) -> CallError {
        let line = reason_line(stderr);
        let key = self
            .creds
            .as_ref()
            .map(|c| String::from_utf8_lossy(c.key.expose()).into_owned())
            .unwrap_or_default();
        let line = if key.len() >= 8 {
            line.replace(&key, "REDACTED")
        } else {
            line
        };
        let message = crate::plugin_text::sanitize_to(&line, 400);
        let failure = if stderr.contains("failed to load rbd kernel module")
            || stderr.contains("/sys/bus/rbd")
        {
            Failure::NoKernel
        } else {
            classify(&message)
        };
        CallError { failure, message }
    }
}

/// The line that says why: the last line starting with `rbd:` (ceph's
/// reason, with its errno), else the last non-empty line that does not
/// carry a key file's contents. Log-format lines (a timestamp first) are
/// never taken: they can quote the key file.
fn reason_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if let Some(l) = lines.iter().rev().find(|l| l.starts_with("rbd: ")) {
        return l.trim_start_matches("rbd: ").to_string();
    }
    lines
        .iter()
        .rev()
        .find(|l| {
            !l.starts_with(|c: char| c.is_ascii_digit()) && !l.contains("key") && !l.contains('=')
        })
        .map(|l| l.to_string())
        .unwrap_or_else(|| "failed (no reason given)".to_string())
}

/// Sorts a reason by its errno, `(N)`, and a few known phrases.
fn classify(message: &str) -> Failure {
    if message.contains("image still has watchers") || message.contains("has watchers") {
        return Failure::Busy;
    }
    if message.contains("couldn't connect to the cluster") {
        return Failure::Unreachable;
    }
    let errno = message.find('(').and_then(|i| {
        message[i + 1..]
            .split(')')
            .next()
            .and_then(|n| n.parse::<i32>().ok())
    });
    match errno {
        Some(libc::ENOENT) => Failure::Missing,
        Some(libc::EEXIST) => Failure::Exists,
        Some(libc::EBUSY) => Failure::Busy,
        Some(libc::EPERM | libc::EACCES) => Failure::Denied,
        Some(
            libc::ETIMEDOUT
            | libc::ECONNREFUSED
            | libc::EHOSTUNREACH
            | libc::ENETUNREACH
            | libc::ESHUTDOWN,
        ) => Failure::Unreachable,
        _ => Failure::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_is_the_last_rbd_line() {
        let stderr = "2026-12-07T05:10:39.833+0000 7f43 -1 --2- conn banner\n\n\
                      failed to get metadata nope of image : (2) No such file or directory\n\
                      rbd: getting metadata failed: (2) No such file or directory\n";
        assert_eq!(
            reason_line(stderr),
            "getting metadata failed: (2) No such file or directory"
        );
        assert_eq!(reason_line(""), "failed (no reason given)");
    }

    #[test]
    fn log_lines_quoting_a_key_file_are_never_the_reason() {
        let stderr = "2026-12-07T05:10:39.889 7fe5 -1 auth: failed to decode key '[client.admin]\n\
                      \tkey = AQC5PxZrcylNDRAAp+/kIDzJVfH3gmkBsiQa7Q==\n\
                      \tcaps mon = \"allow *\"\n'\n";
        let r = reason_line(stderr);
        assert!(!r.contains("AQC5"), "{r}");
    }

    #[test]
    fn failures_sorted_by_errno() {
        let cases = [
            (
                "error opening pool 'nopool': (2) No such file or directory",
                Failure::Missing,
            ),
            ("create error: (17) File exists", Failure::Exists),
            ("error: image still has watchers", Failure::Busy),
            ("delete error: (16) Device or resource busy", Failure::Busy),
            ("error: (1) Operation not permitted", Failure::Denied),
            (
                "listing images failed: (13) Permission denied",
                Failure::Denied,
            ),
            (
                "listing images failed: (110) Connection timed out",
                Failure::Unreachable,
            ),
            (
                "listing images failed: (22) Invalid argument",
                Failure::Other,
            ),
            ("couldn't connect to the cluster!", Failure::Unreachable),
            ("something odd", Failure::Other),
        ];
        for (m, want) in cases {
            assert_eq!(classify(m), want, "{m}");
        }
    }

    #[test]
    fn credentials_checked_and_redacted() {
        let key = || SecretBytes::new(b"AQC5PxZrcylNDRAAp+/kIDzJVfH3gmkBsiQa7Q==".to_vec());
        let c = Credentials::new("client.csi-rbd-provisioner", key()).unwrap();
        assert_eq!(c.user_id(), "csi-rbd-provisioner");
        assert!(!format!("{c:?}").contains("AQC5"));
        for bad in ["", "-x", "a b", "a/b"] {
            let e = Credentials::new(bad, key()).unwrap_err().to_string();
            assert!(e.contains("userID"), "{bad}: {e}");
        }
        for bad in [&b""[..], b"not base64!", b"AQ==\n--keyring=/x"] {
            let e = Credentials::new("u", SecretBytes::new(bad.to_vec()))
                .unwrap_err()
                .to_string();
            assert!(e.contains("userKey (user u)"), "{e}");
            assert!(!e.contains("keyring"), "{e}");
        }
    }

    #[test]
    fn credentials_from_a_csi_secret() {
        let mut s = std::collections::HashMap::new();
        s.insert(USER_ID.to_string(), "csi\n".to_string());
        let e = Credentials::from_secrets(&s).unwrap_err().to_string();
        assert!(e.contains("has no userKey"), "{e}");
        s.insert(USER_KEY.to_string(), "AQC5PxZrcylNDRAA==\n".to_string());
        assert_eq!(Credentials::from_secrets(&s).unwrap().user_id(), "csi");
    }
}
