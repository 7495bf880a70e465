//! The configuration layer's error: what is wrong with the ConfigMap, named
//! by kmsID and option. The facade maps it to [`crate::kms::KmsError`].

use crate::types::KmsId;

/// Why a kmsID (or the whole configuration) cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The kmsID is not in the configuration.
    #[error("kmsID {0} is not configured")]
    UnknownKmsId(String),
    /// One option of a kmsID is invalid; names the option at fault.
    #[error("kmsID {kms_id}: option {option}: {message}")]
    InvalidConfig {
        /// The kmsID.
        kms_id: KmsId,
        /// The option at fault.
        option: String,
        /// What is wrong.
        message: String,
    },
    /// The kmsID's plugin comes from an OCI registry and is not in the
    /// host's cache yet: the facade pulls it, then reads the entry again.
    #[error("kmsID {kms_id}: plugin {reference} is not pulled yet")]
    PluginNotPulled {
        /// The kmsID.
        kms_id: KmsId,
        /// The `oci://` reference.
        reference: String,
    },
    /// The configuration (or a kmsID's value in it) cannot be read or
    /// parsed at all; the message names the file or kmsID.
    #[error("KMS configuration: {0}")]
    Malformed(String),
}
