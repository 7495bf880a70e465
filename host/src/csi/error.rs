//! [`CsiError`]: a gRPC status code and a message safe to show the CO.
//!
//! Every lower error maps to the code the CSI specification asks for:
//! a KMS outage is `Unavailable` (the CO retries), a wrong key or a device
//! carrying someone else's signature is `FailedPrecondition` (retrying the
//! same call cannot help), a call racing another on the same volume is
//! `Aborted`. Messages never contain key material: the errors they are
//! built from never carry any.

use crate::kms::{KmsError, SandboxCause};
use crate::luks::LuksError;
use crate::volume::VolumeError;
use tonic::Code;

/// A failed CSI call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct CsiError {
    /// The gRPC status code.
    pub code: Code,
    /// What went wrong, naming the volume, kmsID or parameter at fault.
    pub message: String,
}

impl CsiError {
    /// An error with `code`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        CsiError {
            code,
            message: message.into(),
        }
    }
    /// `InvalidArgument`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }
    /// `NotFound`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }
    /// `FailedPrecondition`.
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(Code::FailedPrecondition, message)
    }
    /// `Internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }
    /// Prefixes the message with `context` (a volume, a step).
    pub fn context(mut self, context: impl std::fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl From<CsiError> for tonic::Status {
    fn from(e: CsiError) -> Self {
        tonic::Status::new(e.code, e.message)
    }
}

/// The gRPC status a CSI call failing with `e` returns.
pub fn code_of(e: &KmsError) -> Code {
    match e {
        KmsError::UnknownKmsId(_) | KmsError::Id(_) | KmsError::InvalidKey { .. } => {
            Code::InvalidArgument
        }
        KmsError::InvalidConfig { .. } | KmsError::Config(_) | KmsError::PluginLoad { .. } => {
            Code::FailedPrecondition
        }
        KmsError::NotFound { .. } => Code::NotFound,
        KmsError::Denied { .. } => Code::PermissionDenied,
        KmsError::Unavailable { .. } => Code::Unavailable,
        KmsError::TimedOut { .. } => Code::DeadlineExceeded,
        KmsError::Unsupported { .. } => Code::Unimplemented,
        KmsError::Integrity { .. } => Code::DataLoss,
        KmsError::Plugin { .. } => Code::Internal,
        KmsError::Sandbox { cause, .. } => match cause {
            SandboxCause::Deadline(_) => Code::DeadlineExceeded,
            SandboxCause::Capacity | SandboxCause::Busy(_) => Code::ResourceExhausted,
            SandboxCause::Memory(_)
            | SandboxCause::StackOverflow
            | SandboxCause::Trap(_)
            | SandboxCause::HostLimit(_) => Code::Internal,
        },
    }
}

impl From<KmsError> for CsiError {
    fn from(e: KmsError) -> Self {
        CsiError::new(code_of(&e), e.to_string())
    }
}

impl From<LuksError> for CsiError {
    fn from(e: LuksError) -> Self {
        let code = match &e {
            LuksError::AlreadyFormatted { .. }
            | LuksError::WrongPassphrase(_)
            | LuksError::NotLuks(_)
            | LuksError::NoDeviceMapper(_)
            | LuksError::Token { .. } => Code::FailedPrecondition,
            LuksError::Params(_) => Code::InvalidArgument,
            LuksError::Io { .. } | LuksError::Crypt { .. } => Code::Internal,
        };
        CsiError::new(code, e.to_string())
    }
}

impl From<VolumeError> for CsiError {
    fn from(e: VolumeError) -> Self {
        let code = match &e {
            VolumeError::Missing(_) => Code::NotFound,
            VolumeError::Invalid(_) => Code::InvalidArgument,
            VolumeError::Unsupported(_) => Code::InvalidArgument,
            VolumeError::Busy(_) | VolumeError::Precondition(_) => Code::FailedPrecondition,
            VolumeError::Denied(_) => Code::PermissionDenied,
            VolumeError::Unavailable(_) => Code::Unavailable,
            VolumeError::Io { .. } | VolumeError::Tool { .. } | VolumeError::Record { .. } => {
                Code::Internal
            }
        };
        CsiError::new(code, e.to_string())
    }
}

impl From<tokio::task::JoinError> for CsiError {
    fn from(e: tokio::task::JoinError) -> Self {
        CsiError::internal(format!("worker task failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::KmsId;

    /// Each KMS failure against the code the CSI spec and the CO's retry
    /// logic expect (tonic's codes, not a copy of them). Long because it is
    /// one table row per error case.
    #[test]
    fn kms_errors_map_to_the_status_the_co_expects() {
        let id = || KmsId::new("k").unwrap();
        let m = || "m".to_string();
        let stopped = |cause| KmsError::Sandbox {
            kms_id: id(),
            plugin: "p".into(),
            cause,
        };
        let cases = [
            (KmsError::UnknownKmsId("x".into()), Code::InvalidArgument),
            (
                KmsError::InvalidKey {
                    kms_id: id(),
                    message: m(),
                },
                Code::InvalidArgument,
            ),
            (
                KmsError::InvalidConfig {
                    kms_id: id(),
                    option: "o".into(),
                    message: m(),
                },
                Code::FailedPrecondition,
            ),
            (KmsError::Config(m()), Code::FailedPrecondition),
            (
                KmsError::PluginLoad {
                    kms_id: id(),
                    message: m(),
                },
                Code::FailedPrecondition,
            ),
            (
                KmsError::NotFound {
                    kms_id: id(),
                    message: m(),
                },
                Code::NotFound,
            ),
            (
                KmsError::Denied {
                    kms_id: id(),
                    message: m(),
                },
                Code::PermissionDenied,
            ),
            (
                KmsError::Unavailable {
                    kms_id: id(),
                    message: m(),
                },
                Code::Unavailable,
            ),
            (
                KmsError::TimedOut {
                    kms_id: id(),
                    message: m(),
                },
                Code::DeadlineExceeded,
            ),
            (
                KmsError::Unsupported {
                    kms_id: id(),
                    message: m(),
                },
                Code::Unimplemented,
            ),
            (
                KmsError::Integrity {
                    kms_id: id(),
                    message: m(),
                },
                Code::DataLoss,
            ),
            (
                KmsError::Plugin {
                    kms_id: id(),
                    message: m(),
                },
                Code::Internal,
            ),
            (stopped(SandboxCause::Deadline(5)), Code::DeadlineExceeded),
            (stopped(SandboxCause::Capacity), Code::ResourceExhausted),
            (stopped(SandboxCause::Busy(2)), Code::ResourceExhausted),
            (stopped(SandboxCause::Memory(1)), Code::Internal),
            (stopped(SandboxCause::Trap("t".into())), Code::Internal),
        ];
        for (err, code) in cases {
            let text = err.to_string();
            let csi = CsiError::from(err);
            assert_eq!(csi.code, code, "{text}");
            assert_eq!(csi.message, text);
        }
    }
}
