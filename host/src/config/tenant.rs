//! Per-tenant entries: a kmsID seen from one tenant (the PVC's namespace).
//!
//! - `vaulttokens` (ceph-csi): the tenant's settings come from the kmsID's
//!   `tenants.<namespace>` object, or else from the ConfigMap
//!   `tenantConfigName` (default `ceph-csi-kms-config`) in the tenant's
//!   namespace — either may set only [`VAULT_TENANT_KEYS`]; anything else is
//!   refused, naming the key. The Vault token is the `token` key of the
//!   Secret `tenantTokenName` (default `ceph-csi-kms-token`) in the tenant's
//!   namespace, and every Secret the entry names (the CA too) is read there.
//! - `metadata` (ceph-csi): `secretNamespace` defaults to the PVC's
//!   namespace.
//! - `vaulttenantsa` (ceph-csi): the same settings (plus `tenantSAName`,
//!   `vaultAuthPath`, `vaultRole`), and Kubernetes auth as the tenant's
//!   service account `tenantSAName` (default `ceph-csi-vault-sa`): the
//!   plugin's service-account token is that account's, requested by the host
//!   with the TokenRequest API — never the driver's own.
//! - Every other type ignores the tenant.

use super::ConfigError;
use super::{HostDefaults, KmsEntry, KmsTable, parse_entry};
use crate::secrets::{SERVICE_ACCOUNT_SECRET, SERVICE_ACCOUNT_TOKEN_PREFIX, SecretRef};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The options a tenant may set for `vaulttokens` (ceph-csi's list).
pub const VAULT_TENANT_KEYS: &[&str] = &[
    "vaultAddress",
    "vaultBackend",
    "vaultBackendPath",
    "vaultAuthNamespace",
    "vaultNamespace",
    "vaultDestroyKeys",
    "vaultTLSServerName",
    "vaultCAFromSecret",
    "vaultCAVerify",
];

/// The options a tenant may set for `vaulttenantsa` on top of
/// [`VAULT_TENANT_KEYS`]: the service account and Kubernetes-auth settings.
pub const VAULT_TENANT_SA_EXTRA_KEYS: &[&str] = &["tenantSAName", "vaultAuthPath", "vaultRole"];

/// Default tenant service account (`tenantSAName`).
pub const DEFAULT_TENANT_SA: &str = "ceph-csi-vault-sa";

/// Default name of the tenant ConfigMap (`tenantConfigName`).
pub const DEFAULT_TENANT_CONFIG: &str = "ceph-csi-kms-config";
/// Default name of the tenant token Secret (`tenantTokenName`).
pub const DEFAULT_TENANT_TOKEN: &str = "ceph-csi-kms-token";

/// Checks a tenant (a Kubernetes namespace name: a DNS label).
pub fn check_tenant(tenant: &str) -> Result<(), ConfigError> {
    let ok = !tenant.is_empty()
        && tenant.len() <= 63
        && tenant
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !tenant.starts_with('-')
        && !tenant.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Malformed(format!(
            "tenant {tenant:?} is not a valid namespace name"
        )))
    }
}

fn string(v: &serde_json::Value) -> String {
    super::option_string(v)
}

impl KmsTable {
    /// For a kmsID whose tenant settings may live in a ConfigMap in the
    /// tenant's namespace: that ConfigMap's name (when the kmsID's own
    /// `tenants` object has no entry for `tenant`).
    pub fn tenant_config_map(&self, kms_id: &str, tenant: &str) -> Option<String> {
        let raw = self.raw.get(kms_id)?;
        let kms_type = raw.get("encryptionKMSType").map(string)?;
        if kms_type != "vaulttokens" && kms_type != "vaulttenantsa" {
            return None;
        }
        if raw
            .get("tenants")
            .and_then(|t| t.as_object())
            .is_some_and(|t| t.contains_key(tenant))
        {
            return None;
        }
        Some(
            raw.get("tenantConfigName")
                .map(string)
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| DEFAULT_TENANT_CONFIG.into()),
        )
    }

    /// The entry of `kms_id` as `tenant` sees it; `tenant_config` is the
    /// data of the ConfigMap [`KmsTable::tenant_config_map`] named, if it
    /// exists.
    pub fn tenant_entry(
        &self,
        kms_id: &str,
        tenant: &str,
        tenant_config: Option<&BTreeMap<String, String>>,
    ) -> Result<Arc<KmsEntry>, ConfigError> {
        let base = self.get(kms_id)?;
        check_tenant(tenant)?;
        let (Some(raw), Some(defaults)) = (self.raw.get(kms_id), self.defaults.as_ref()) else {
            return Ok(base);
        };
        let mut obj = raw.clone();
        match base.kms_type.as_str() {
            "metadata" => {
                if obj
                    .get("secretNamespace")
                    .map(string)
                    .is_some_and(|s| !s.is_empty())
                {
                    return Ok(base);
                }
                obj.insert("secretNamespace".into(), tenant.into());
            }
            "vaulttokens" | "vaulttenantsa" => {
                let sa_mode = base.kms_type == "vaulttenantsa";
                apply_tenant_overrides(&base, &mut obj, tenant, tenant_config, sa_mode)?;
                obj.insert("kmshostSecretNamespace".into(), tenant.into());
                if sa_mode {
                    return tenant_sa_entry(kms_id, obj, tenant, defaults);
                }
                let token = option_or(&obj, "tenantTokenName", DEFAULT_TENANT_TOKEN);
                obj.insert("tokenSecretName".into(), token.into());
            }
            _ => return Ok(base),
        }
        parse_entry(kms_id, &serde_json::Value::Object(obj), defaults).map(Arc::new)
    }
}

type Options = serde_json::Map<String, serde_json::Value>;

/// The option's value, or `default` when absent or empty.
fn option_or(obj: &Options, option: &str, default: &str) -> String {
    obj.get(option)
        .map(string)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default.into())
}

/// A tenant's own settings over the kmsID's: from `tenants.<tenant>` in the
/// entry, else from the tenant's ConfigMap. Only the keys a tenant may set
/// are taken; any other is refused, naming where it was set.
fn apply_tenant_overrides(
    base: &KmsEntry,
    obj: &mut Options,
    tenant: &str,
    tenant_config: Option<&BTreeMap<String, String>>,
    sa_mode: bool,
) -> Result<(), ConfigError> {
    let extra: &[&str] = if sa_mode {
        VAULT_TENANT_SA_EXTRA_KEYS
    } else {
        &[]
    };
    let allowed: Vec<&str> = VAULT_TENANT_KEYS.iter().chain(extra).copied().collect();
    let invalid = |option: String, message: &str| ConfigError::InvalidConfig {
        kms_id: base.kms_id.clone(),
        option,
        message: message.into(),
    };
    let tenants = obj.remove("tenants");
    let (source, overrides): (String, Vec<(String, String)>) =
        match tenants.as_ref().and_then(|t| t.get(tenant)) {
            Some(v) => {
                let o = v
                    .as_object()
                    .ok_or_else(|| invalid(format!("tenants.{tenant}"), "must be an object"))?;
                (
                    format!("tenants.{tenant}"),
                    o.iter().map(|(k, v)| (k.clone(), string(v))).collect(),
                )
            }
            None => (
                format!(
                    "{tenant}/{}",
                    option_or(obj, "tenantConfigName", DEFAULT_TENANT_CONFIG)
                ),
                tenant_config
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default(),
            ),
        };
    for (k, v) in overrides {
        if !allowed.contains(&k.as_str()) {
            tracing::debug!(kms_id = %base.kms_id, tenant, key = %k, "refused tenant setting");
            return Err(invalid(
                format!("{source}.{k}"),
                &format!(
                    "may not be set per tenant (allowed: {})",
                    allowed.join(", ")
                ),
            ));
        }
        obj.insert(k, v.into());
    }
    Ok(())
}

/// `vaulttenantsa`: the entry logs in with the tenant's own service
/// account token, never the driver's.
fn tenant_sa_entry(
    kms_id: &str,
    obj: Options,
    tenant: &str,
    defaults: &HostDefaults,
) -> Result<Arc<KmsEntry>, ConfigError> {
    let sa = option_or(&obj, "tenantSAName", DEFAULT_TENANT_SA);
    let mut entry = parse_entry(kms_id, &serde_json::Value::Object(obj), defaults)?;
    entry.grants.grant_as(
        SERVICE_ACCOUNT_SECRET,
        SecretRef {
            namespace: Some(tenant.to_string()),
            name: format!("{SERVICE_ACCOUNT_TOKEN_PREFIX}{sa}"),
        },
    );
    Ok(Arc::new(entry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HostDefaults;

    fn table(v: serde_json::Value) -> KmsTable {
        KmsTable::parse(&v.to_string(), &HostDefaults::default()).unwrap()
    }

    #[test]
    fn vaulttokens_tenant_settings_and_token_come_from_the_tenant() {
        let t = table(serde_json::json!({
            "vt": {
                "encryptionKMSType": "vaulttokens",
                "vaultAddress": "https://vault.example:8200",
                "vaultBackendPath": "secret/",
                "tenants": {"team-a": {"vaultAddress": "https://vault-a.example:8200"}},
            }
        }));
        assert_eq!(t.tenant_config_map("vt", "team-a"), None);
        let a = t.tenant_entry("vt", "team-a", None).unwrap();
        let opt = |e: &KmsEntry, k: &str| {
            e.plugin_options
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            opt(&a, "vaultAddress").as_deref(),
            Some("https://vault-a.example:8200")
        );
        assert_eq!(
            opt(&a, "tokenSecretName").as_deref(),
            Some("ceph-csi-kms-token")
        );
        let grant = a.grants.lookup("ceph-csi-kms-token").unwrap();
        assert_eq!(grant.namespace.as_deref(), Some("team-a"));
        assert!(
            a.allow
                .entries()
                .iter()
                .any(|h| h.to_string().contains("vault-a.example"))
        );
        assert!(opt(&a, "tenants").is_none());

        // Without a `tenants` entry: the tenant ConfigMap.
        assert_eq!(
            t.tenant_config_map("vt", "team-b").as_deref(),
            Some("ceph-csi-kms-config")
        );
        let cm: BTreeMap<String, String> =
            [("vaultBackendPath".to_string(), "team-b/".to_string())].into();
        let b = t.tenant_entry("vt", "team-b", Some(&cm)).unwrap();
        assert_eq!(opt(&b, "vaultBackendPath").as_deref(), Some("team-b/"));
        assert_ne!(a.fingerprint, b.fingerprint);

        // A tenant may not set anything else.
        let bad: BTreeMap<String, String> =
            [("tokenSecretName".to_string(), "admin-token".to_string())].into();
        match t.tenant_entry("vt", "team-b", Some(&bad)) {
            Err(ConfigError::InvalidConfig { option, .. }) => {
                assert_eq!(option, "team-b/ceph-csi-kms-config.tokenSecretName")
            }
            other => panic!("{other:?}"),
        }
        // The service-account settings are `vaulttenantsa`'s only.
        let sa: BTreeMap<String, String> = [("vaultRole".to_string(), "admin".to_string())].into();
        assert!(matches!(
            t.tenant_entry("vt", "team-b", Some(&sa)),
            Err(ConfigError::InvalidConfig { .. })
        ));
        assert!(t.tenant_entry("vt", "../x", None).is_err());
    }

    #[test]
    fn tls_secrets_are_the_hosts_and_a_tenants_come_from_its_namespace() {
        let t = table(serde_json::json!({
            "v": {
                "encryptionKMSType": "vault",
                "vaultAddress": "https://vault.example:8200",
                "vaultCAFromSecret": "vault-ca",
                "vaultClientCertFromSecret": "vault-client",
                "vaultClientCertKeyFromSecret": "vault-client-key",
                "kmshostSecrets": "vault-client-key,other",
            },
            "vt": {
                "encryptionKMSType": "vaulttokens",
                "vaultAddress": "https://vault.example:8200",
                "vaultCAFromSecret": "vault-ca",
            },
        }));
        let v = t.get("v").unwrap();
        for name in ["vault-ca", "vault-client", "vault-client-key"] {
            assert!(v.grants.lookup(name).is_none(), "{name} granted");
            assert!(v.grants.is_withheld(name), "{name}");
        }
        assert!(v.grants.lookup("other").is_some());
        assert_eq!(
            v.tls.client_key.as_ref().unwrap().secret.name,
            "vault-client-key"
        );
        assert_eq!(v.tls.ca.as_ref().unwrap().secret.namespace, None);

        // A tenant's CA (its own or its ConfigMap's) is read in its namespace.
        let a = t.tenant_entry("vt", "team-a", None).unwrap();
        let ca = &a.tls.ca.as_ref().unwrap().secret;
        assert_eq!(
            (ca.namespace.as_deref(), ca.name.as_str()),
            (Some("team-a"), "vault-ca")
        );
        let cm: BTreeMap<String, String> =
            [("vaultCAFromSecret".to_string(), "team-ca".to_string())].into();
        let b = t.tenant_entry("vt", "team-b", Some(&cm)).unwrap();
        let ca = &b.tls.ca.as_ref().unwrap().secret;
        assert_eq!(
            (ca.namespace.as_deref(), ca.name.as_str()),
            (Some("team-b"), "team-ca")
        );
        assert!(b.grants.lookup("team-ca").is_none());
    }

    #[test]
    fn metadata_secret_namespace_defaults_to_the_tenant() {
        let t = table(serde_json::json!({
            "m": {"encryptionKMSType": "metadata", "secretName": "pass"},
            "fixed": {"encryptionKMSType": "metadata", "secretName": "pass", "secretNamespace": "ops"},
            "sa": {"encryptionKMSType": "vaulttenantsa", "vaultAddress": "https://v:8200"},
        }));
        let m = t.tenant_entry("m", "team-a", None).unwrap();
        assert_eq!(
            m.grants.lookup("pass").unwrap().namespace.as_deref(),
            Some("team-a")
        );
        let f = t.tenant_entry("fixed", "team-a", None).unwrap();
        assert_eq!(
            f.grants.lookup("pass").unwrap().namespace.as_deref(),
            Some("ops")
        );
        let sa = t.tenant_entry("sa", "team-a", None).unwrap();
        let g = sa.grants.lookup(SERVICE_ACCOUNT_SECRET).unwrap();
        assert_eq!(g.namespace.as_deref(), Some("team-a"));
        assert_eq!(
            g.name,
            format!("{SERVICE_ACCOUNT_TOKEN_PREFIX}ceph-csi-vault-sa")
        );
        let cm: BTreeMap<String, String> =
            [("tenantSAName".to_string(), "team-sa".to_string())].into();
        let sa2 = t.tenant_entry("sa", "team-b", Some(&cm)).unwrap();
        assert!(
            sa2.grants
                .lookup(SERVICE_ACCOUNT_SECRET)
                .unwrap()
                .name
                .ends_with(":team-sa")
        );
        // The driver's own account is never the tenant's.
        let base = t.get("sa").unwrap();
        assert_eq!(
            base.grants
                .lookup(SERVICE_ACCOUNT_SECRET)
                .unwrap()
                .namespace,
            None
        );
    }
}
