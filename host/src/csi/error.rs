//! [`CsiError`]: a gRPC status code and a message safe to show the CO.
//!
//! Every lower error maps to the code the CSI specification asks for:
//! a KMS outage is `Unavailable` (the CO retries), a wrong key or a device
//! carrying someone else's signature is `FailedPrecondition` (retrying the
//! same call cannot help), a call racing another on the same volume is
//! `Aborted`. Messages never contain key material: the errors they are
//! built from never carry any.

use crate::kms::KmsError;
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

impl From<KmsError> for CsiError {
    fn from(e: KmsError) -> Self {
        CsiError::new(Code::from_i32(e.grpc_code() as i32), e.to_string())
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
