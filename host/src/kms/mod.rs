//! The KMS facade ([`Kms`]) and its types: identifiers, redacting key
//! material, and errors that know whether to retry and which gRPC status
//! they become.

pub mod checks;
mod error;
mod facade;
mod types;

pub use error::{GrpcCode, KmsError, SandboxCause};
pub use facade::{Kms, KmsDescription, Sealed, TenantKms, generate_passphrase};
pub use types::{IdError, KeyId, KmsId, Passphrase, SecretBytes, WrappedKey};
