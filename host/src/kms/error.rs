//! The host's KMS error: what went wrong, whether to retry, and which gRPC
//! status a CSI caller sees.

use super::types::{IdError, KmsId};

/// gRPC status codes used by kmshost (numeric values as in the gRPC spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum GrpcCode {
    /// 3
    InvalidArgument = 3,
    /// 5
    NotFound = 5,
    /// 7
    PermissionDenied = 7,
    /// 9
    FailedPrecondition = 9,
    /// 10
    Aborted = 10,
    /// 12
    Unimplemented = 12,
    /// 13
    Internal = 13,
    /// 14
    Unavailable = 14,
    /// 4
    DeadlineExceeded = 4,
    /// 8
    ResourceExhausted = 8,
    /// 15
    DataLoss = 15,
}

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

/// Why the sandbox stopped a plugin call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxCause {
    /// The call ran past its deadline.
    #[error("deadline of {0} ms exceeded")]
    Deadline(u64),
    /// The plugin tried to grow its memory past the cap.
    #[error("memory limit of {0} bytes exceeded")]
    Memory(usize),
    /// The plugin exhausted its stack.
    #[error("stack exhausted")]
    StackOverflow,
    /// The plugin trapped (a panic, `unreachable`, an out-of-bounds access).
    #[error("trapped: {0}")]
    Trap(String),
    /// No sandbox slot was free.
    #[error("too many concurrent plugin instances")]
    Capacity,
    /// The plugin hit a cap on what it can make the host hold (resource
    /// handles, header bytes).
    #[error("host resource limit reached: {0}")]
    HostLimit(String),
    /// The kmsID's own concurrency limit was reached and no call finished
    /// before this one's deadline.
    #[error(
        "the kmsID already runs its limit of {0} concurrent calls (kmshostMaxConcurrency) and none finished before this call's deadline"
    )]
    Busy(u32),
}

impl KmsError {
    /// Whether retrying the same call later may succeed. A wrong key or a
    /// corrupt blob (`Integrity`) is never retryable, nor is bad config.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            KmsError::Unavailable { .. }
                | KmsError::Sandbox {
                    cause: SandboxCause::Capacity
                        | SandboxCause::Busy(_)
                        | SandboxCause::Deadline(_),
                    ..
                }
        )
    }

    /// The gRPC status code a CSI call failing with this error returns.
    pub fn grpc_code(&self) -> GrpcCode {
        match self {
            KmsError::UnknownKmsId(_) | KmsError::Id(_) | KmsError::InvalidKey { .. } => {
                GrpcCode::InvalidArgument
            }
            KmsError::InvalidConfig { .. } | KmsError::Config(_) | KmsError::PluginLoad { .. } => {
                GrpcCode::FailedPrecondition
            }
            KmsError::NotFound { .. } => GrpcCode::NotFound,
            KmsError::Denied { .. } => GrpcCode::PermissionDenied,
            KmsError::Unavailable { .. } => GrpcCode::Unavailable,
            KmsError::Unsupported { .. } => GrpcCode::Unimplemented,
            KmsError::Integrity { .. } => GrpcCode::DataLoss,
            KmsError::Plugin { .. } => GrpcCode::Internal,
            KmsError::Sandbox { cause, .. } => match cause {
                SandboxCause::Deadline(_) => GrpcCode::DeadlineExceeded,
                SandboxCause::Capacity | SandboxCause::Busy(_) => GrpcCode::ResourceExhausted,
                _ => GrpcCode::Internal,
            },
        }
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
        let cases: Vec<(KmsError, bool, GrpcCode)> = vec![
            (
                KmsError::Unavailable {
                    kms_id: id(),
                    message: "5xx".into(),
                },
                true,
                GrpcCode::Unavailable,
            ),
            (
                KmsError::Integrity {
                    kms_id: id(),
                    message: "wrong key".into(),
                },
                false,
                GrpcCode::DataLoss,
            ),
            (
                KmsError::Denied {
                    kms_id: id(),
                    message: "403".into(),
                },
                false,
                GrpcCode::PermissionDenied,
            ),
            (
                KmsError::NotFound {
                    kms_id: id(),
                    message: "x".into(),
                },
                false,
                GrpcCode::NotFound,
            ),
            (
                KmsError::InvalidConfig {
                    kms_id: id(),
                    option: "o".into(),
                    message: "m".into(),
                },
                false,
                GrpcCode::FailedPrecondition,
            ),
            (
                KmsError::Sandbox {
                    kms_id: id(),
                    plugin: "p".into(),
                    cause: SandboxCause::Deadline(5),
                },
                true,
                GrpcCode::DeadlineExceeded,
            ),
            (
                KmsError::Sandbox {
                    kms_id: id(),
                    plugin: "p".into(),
                    cause: SandboxCause::Memory(1),
                },
                false,
                GrpcCode::Internal,
            ),
            (
                KmsError::UnknownKmsId("x".into()),
                false,
                GrpcCode::InvalidArgument,
            ),
        ];
        for (err, retry, code) in cases {
            assert_eq!(err.is_retryable(), retry, "{err}");
            assert_eq!(err.grpc_code(), code, "{err}");
        }
    }
}
