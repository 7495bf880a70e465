//! Where secret values come from, and which kmsID may read which.
//!
//! A kmsID's options name Secrets (`IBM_KP_SECRET_NAME`, `secretName`,
//! `tokenSecretName`, …). The config layer turns those into [`Grants`]: the
//! only Secrets that kmsID's plugin can read through the `secrets` import.
//! Values are fetched by a [`SecretSource`]: Secret volumes mounted into the
//! pod ([`MountedSecrets`]) and, in-cluster, the Kubernetes API
//! ([`KubeSecrets`]); [`ChainedSecrets`] tries them in order.

mod kube;
mod mounted;

pub use kube::{
    KubeApi, KubeConfigMaps, KubeSecrets, KubeServiceAccountTokens, SERVICE_ACCOUNT_TOKEN_PREFIX,
};
pub use mounted::MountedSecrets;

use crate::types::SecretBytes;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The pseudo-Secret granting the driver's service-account token (key
/// `token`) to a plugin that talks to the Kubernetes API itself.
pub const SERVICE_ACCOUNT_SECRET: &str = "kubernetes-service-account";

/// A reference to one Kubernetes Secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretRef {
    /// Namespace; `None` means the driver's own namespace.
    pub namespace: Option<String>,
    /// Secret name.
    pub name: String,
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// The data of one Secret: key → value.
pub type SecretData = BTreeMap<String, SecretBytes>;

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The Secret does not exist in any source.
    #[error("Secret {0} not found")]
    NotFound(String),
    /// The source refused (RBAC) or is misconfigured.
    #[error("Secret {secret}: {message}")]
    Denied {
        /// Which Secret.
        secret: String,
        /// Why.
        message: String,
    },
    /// The source is temporarily unreachable.
    #[error("Secret {secret}: {message}")]
    Unavailable {
        /// Which Secret.
        secret: String,
        /// Why.
        message: String,
    },
}

/// A place Secrets are read from.
#[async_trait]
pub trait SecretSource: Send + Sync + std::fmt::Debug {
    /// Reads the whole Secret, or `Ok(None)` if this source does not have it.
    async fn read(&self, secret: &SecretRef) -> Result<Option<SecretData>, SecretError>;
}

/// Where tenant ConfigMaps (ceph-csi's `tenantConfigName` in the PVC's
/// namespace) are read from.
#[async_trait]
pub trait ConfigMapSource: Send + Sync + std::fmt::Debug {
    /// The `data` of ConfigMap `namespace/name`, or `Ok(None)` if absent.
    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<std::collections::BTreeMap<String, String>>, SecretError>;
}

/// Tries several sources in order; the first that has the Secret wins.
#[derive(Debug, Default, Clone)]
pub struct ChainedSecrets {
    sources: Vec<Arc<dyn SecretSource>>,
}

impl ChainedSecrets {
    /// No sources: every read is not-found.
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends a source.
    pub fn with(mut self, source: Arc<dyn SecretSource>) -> Self {
        self.sources.push(source);
        self
    }
}

#[async_trait]
impl SecretSource for ChainedSecrets {
    async fn read(&self, secret: &SecretRef) -> Result<Option<SecretData>, SecretError> {
        for s in &self.sources {
            if let Some(data) = s.read(secret).await? {
                return Ok(Some(data));
            }
        }
        Ok(None)
    }
}

/// The Secrets one kmsID may read, by the name its plugin asks for.
///
/// Secrets the host reads for the kmsID's TLS are *withheld*: never
/// granted, whatever option names them, so a certificate's private key never
/// reaches a plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    by_name: BTreeMap<String, SecretRef>,
    withheld: std::collections::BTreeSet<SecretRef>,
    /// Keys of granted Secrets the host keeps for itself (TLS material
    /// beside the plugin's own values, as in ceph-csi's KMIP Secret).
    withheld_keys: std::collections::BTreeSet<(SecretRef, String)>,
}

impl Grants {
    /// Grants nothing.
    pub fn none() -> Self {
        Self::default()
    }
    /// Grants `secret` under its own name (unless it is withheld).
    pub fn grant(&mut self, secret: SecretRef) {
        if !self.withheld.contains(&secret) {
            self.by_name.insert(secret.name.clone(), secret);
        }
    }
    /// Withholds `secret` for good: it is the host's (TLS material). Any
    /// grant of it, earlier or later, is dropped.
    pub fn withhold(&mut self, secret: &SecretRef) {
        self.by_name.retain(|_, s| s != secret);
        self.withheld.insert(secret.clone());
    }
    /// Withholds one key of `secret` (TLS material): the plugin may read
    /// the Secret's other keys, never this one.
    pub fn withhold_key(&mut self, secret: &SecretRef, key: &str) {
        self.withheld_keys.insert((secret.clone(), key.to_string()));
    }
    /// Whether `key` of `secret` is the host's.
    pub fn is_withheld_key(&self, secret: &SecretRef, key: &str) -> bool {
        self.withheld_keys
            .iter()
            .any(|(s, k)| s == secret && k == key)
    }
    /// Whether `name` names a Secret the host keeps for itself.
    pub fn is_withheld(&self, name: &str) -> bool {
        self.withheld.iter().any(|s| s.name == name)
    }
    /// Grants `secret` under the name `name` the plugin asks for: the
    /// Secret as the kmsID's option wrote it (`name`, or `namespace/name`,
    /// so the same name in two namespaces is two grants), or a per-tenant
    /// entry's service-account pseudo-Secret mapped to the tenant's own.
    pub fn grant_as(&mut self, name: &str, secret: SecretRef) {
        if !self.withheld.contains(&secret) {
            self.by_name.insert(name.to_string(), secret);
        }
    }
    /// The reference granted under `name`, if any.
    pub fn lookup(&self, name: &str) -> Option<&SecretRef> {
        self.by_name.get(name)
    }
    /// Every granted reference (for `kmshost plugins`; names only).
    pub fn iter(&self) -> impl Iterator<Item = &SecretRef> {
        self.by_name.values()
    }
    /// Whether nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// Serves the driver's service-account token as the pseudo-Secret
/// [`SERVICE_ACCOUNT_SECRET`] (key `token`), re-read on every access.
#[derive(Debug, Clone)]
pub struct ServiceAccountToken {
    path: std::path::PathBuf,
}

impl ServiceAccountToken {
    /// The token at `path` (in-cluster:
    /// `/var/run/secrets/kubernetes.io/serviceaccount/token`).
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        ServiceAccountToken { path: path.into() }
    }
}

#[async_trait]
impl SecretSource for ServiceAccountToken {
    async fn read(&self, secret: &SecretRef) -> Result<Option<SecretData>, SecretError> {
        if secret.name != SERVICE_ACCOUNT_SECRET || secret.namespace.is_some() {
            return Ok(None);
        }
        let mut token = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(SecretError::Denied {
                    secret: secret.to_string(),
                    message: format!("reading the service-account token: {e}"),
                });
            }
        };
        while token.last().is_some_and(|b| b.is_ascii_whitespace()) {
            token.pop();
        }
        let mut data = SecretData::new();
        data.insert("token".into(), SecretBytes::new(token));
        Ok(Some(data))
    }
}
