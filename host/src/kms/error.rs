//! The facade's error: what went wrong with a KMS operation and whether to
//! retry. Lower layers' errors are mapped into it here, once; the front
//! doors map it to their own codes (gRPC status in [`crate::csi`]).

use crate::config::ConfigError;
pub use crate::sandbox::SandboxCause;
use crate::sandbox::{PluginError, Reported};
use crate::types::{IdError, KmsId};

/// How a plugin call ended badly.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// The kmsID is not in the configuration.
    #[error("kmsID {0} is not configured")]
    UnknownKmsId(String),
    /// The kmsID's configuration is invalid; names the option at fault.
    #[error("kmsID {kms_id}: option {option}: {message}")]
    InvalidConfig {
        /// The kmsID.
        kms_id: KmsId,
        /// The option at fault.
        option: String,
        /// What is wrong.
        message: String,
    },
    /// The configuration file itself could not be read or parsed.
    #[error("KMS configuration: {0}")]
    Config(String),
    /// An identifier was rejected.
    #[error(transparent)]
    Id(#[from] IdError),
    /// The key does not exist.
    #[error("kmsID {kms_id}: not found: {message}")]
    NotFound {
        /// The kmsID.
        kms_id: KmsId,
        /// Detail from the plugin.
        message: String,
    },
    /// Credentials or permission refused, or a capability denied by the host.
    #[error("kmsID {kms_id}: denied: {message}")]
    Denied {
        /// The kmsID.
        kms_id: KmsId,
        /// Detail.
        message: String,
    },
    /// A transient backend failure.
    #[error("kmsID {kms_id}: unavailable: {message}")]
    Unavailable {
        /// The kmsID.
        kms_id: KmsId,
        /// Detail.
        message: String,
    },
    /// The backend did not answer in time (a stream's read or write
    /// timeout, such as KMIP's `READ_TIMEOUT`).
    #[error("kmsID {kms_id}: timed out: {message}")]
    TimedOut {
        /// The kmsID.
        kms_id: KmsId,
        /// Detail.
        message: String,
    },
    /// The plugin does not offer the operation.
    #[error("kmsID {kms_id}: unsupported: {message}")]
    Unsupported {
        /// The kmsID.
        kms_id: KmsId,
        /// Detail.
        message: String,
    },
    /// A wrapped key failed authentication: wrong key, wrong volume, corrupt.
    #[error("kmsID {kms_id}: integrity: {message}")]
    Integrity {
        /// The kmsID.
        kms_id: KmsId,
        /// Detail.
        message: String,
    },
    /// A key handed to the facade is unusable (empty or too large).
    #[error("kmsID {kms_id}: invalid key: {message}")]
    InvalidKey {
        /// The kmsID.
        kms_id: KmsId,
        /// What is wrong (never the key).
        message: String,
    },
    /// Another plugin-reported failure.
    #[error("kmsID {kms_id}: {message}")]
    Plugin {
        /// The kmsID.
        kms_id: KmsId,
        /// Detail.
        message: String,
    },
    /// The sandbox stopped the plugin: deadline, memory, trap.
    #[error("kmsID {kms_id}: plugin {plugin} stopped: {cause}")]
    Sandbox {
        /// The kmsID.
        kms_id: KmsId,
        /// The plugin name.
        plugin: String,
        /// The root cause.
        cause: SandboxCause,
    },
    /// The plugin could not be loaded (missing file, not a component, hash
    /// mismatch, incompatible world).
    #[error("kmsID {kms_id}: cannot load plugin: {message}")]
    PluginLoad {
        /// The kmsID.
        kms_id: KmsId,
        /// Detail.
        message: String,
    },
}

impl From<ConfigError> for KmsError {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::UnknownKmsId(id) => KmsError::UnknownKmsId(id),
            ConfigError::InvalidConfig {
                kms_id,
                option,
                message,
            } => KmsError::InvalidConfig {
                kms_id,
                option,
                message,
            },
            ConfigError::Malformed(m) => KmsError::Config(m),
            ConfigError::PluginNotPulled { kms_id, reference } => KmsError::PluginLoad {
                kms_id,
                message: format!("plugin {reference} is not pulled yet"),
            },
        }
    }
}

impl KmsError {
    /// The facade's error for a failed load of, or call into, `kms_id`'s
    /// plugin.
    pub fn from_plugin(kms_id: &KmsId, e: PluginError) -> Self {
        let kms_id = kms_id.clone();
        match e {
            PluginError::Reported { kind, message } => match kind {
                Reported::NotFound => KmsError::NotFound { kms_id, message },
                Reported::Denied => KmsError::Denied { kms_id, message },
                Reported::Unavailable => KmsError::Unavailable { kms_id, message },
                Reported::TimedOut => KmsError::TimedOut { kms_id, message },
                Reported::Unsupported => KmsError::Unsupported { kms_id, message },
                Reported::Integrity => KmsError::Integrity { kms_id, message },
                Reported::Other => KmsError::Plugin { kms_id, message },
            },
            PluginError::InvalidOption { option, message } => KmsError::InvalidConfig {
                kms_id,
                option,
                message,
            },
            PluginError::Stopped { plugin, cause } => KmsError::Sandbox {
                kms_id,
                plugin,
                cause,
            },
            PluginError::Load(message) => KmsError::PluginLoad { kms_id, message },
        }
    }

    /// A short, stable word for the kind of failure (the audit log's
    /// `result`, the metrics' `status`): never the message, which may
    /// quote what a plugin said.
    pub fn class(&self) -> &'static str {
        match self {
            KmsError::UnknownKmsId(_) => "unknown-kms-id",
            KmsError::InvalidConfig { .. } | KmsError::Config(_) => "config",
            KmsError::Id(_) => "invalid-id",
            KmsError::NotFound { .. } => "not-found",
            KmsError::Denied { .. } => "denied",
            KmsError::Unavailable { .. } => "unavailable",
            KmsError::TimedOut { .. } => "timed-out",
            KmsError::Unsupported { .. } => "unsupported",
            KmsError::Integrity { .. } => "integrity",
            KmsError::InvalidKey { .. } => "invalid-key",
            KmsError::Plugin { .. } => "plugin-error",
            KmsError::Sandbox { cause, .. } => cause.class(),
            KmsError::PluginLoad { .. } => "plugin-load",
        }
    }

    /// Whether retrying the same call later may succeed. A wrong key or a
    /// corrupt blob (`Integrity`) is never retryable, nor is bad config.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            KmsError::Unavailable { .. }
                | KmsError::TimedOut { .. }
                | KmsError::Sandbox {
                    cause: SandboxCause::Capacity
                        | SandboxCause::Busy(_)
                        | SandboxCause::Deadline(_),
                    ..
                }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> KmsId {
        KmsId::new("k").unwrap()
    }

    #[test]
    fn only_transient_errors_are_retryable() {
        let msg = || "m".to_string();
        let cases: Vec<(KmsError, bool)> = vec![
            (
                KmsError::Unavailable {
                    kms_id: id(),
                    message: msg(),
                },
                true,
            ),
            (
                KmsError::Integrity {
                    kms_id: id(),
                    message: msg(),
                },
                false,
            ),
            (
                KmsError::Denied {
                    kms_id: id(),
                    message: msg(),
                },
                false,
            ),
            (
                KmsError::NotFound {
                    kms_id: id(),
                    message: msg(),
                },
                false,
            ),
            (
                KmsError::InvalidConfig {
                    kms_id: id(),
                    option: "o".into(),
                    message: msg(),
                },
                false,
            ),
            (KmsError::UnknownKmsId("x".into()), false),
        ];
        let stopped = |cause| KmsError::Sandbox {
            kms_id: id(),
            plugin: "p".into(),
            cause,
        };
        let mut cases = cases;
        for (cause, retry) in [
            (SandboxCause::Deadline(5), true),
            (SandboxCause::Capacity, true),
            (SandboxCause::Busy(4), true),
            (SandboxCause::Memory(1), false),
            (SandboxCause::StackOverflow, false),
            (SandboxCause::Trap("t".into()), false),
            (SandboxCause::HostLimit("h".into()), false),
        ] {
            cases.push((stopped(cause), retry));
        }
        for (err, retry) in cases {
            assert_eq!(err.is_retryable(), retry, "{err}");
        }
    }
}
