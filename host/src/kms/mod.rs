//! The KMS facade ([`Kms`]): the one way the front doors reach a kmsID's
//! plugin, with the host's key invariants ([`checks`]) and an error that
//! knows whether to retry, and the [`audit`] log of every key operation.
//! Identifiers and key material come from
//! [`crate::types`].

pub mod audit;
pub mod checks;
mod error;
mod facade;

pub use crate::types::{IdError, KeyId, KmsId, Passphrase, SecretBytes, WrappedKey};
pub use error::{KmsError, SandboxCause};
pub use facade::{
    Kms, KmsDescription, PluginAbout, PluginReport, Sealed, TenantKms, generate_passphrase,
};
