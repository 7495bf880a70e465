//! Options, with ceph-csi's names and Rook's/legacy aliases.

use kmshost_plugin_sdk::{Options, Result, invalid_config};

/// KV secrets-engine version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvVersion {
    /// KV v1: `<mount>/<path>`.
    V1,
    /// KV v2: `<mount>/data/<path>`, `<mount>/metadata/<path>`.
    V2,
}

/// How the plugin logs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// A token from a Secret (`tokenSecretName`, key `token`).
    Token {
        /// The Secret name.
        secret: String,
    },
    /// Kubernetes auth with the driver's service-account token.
    Kubernetes {
        /// Login path, e.g. `/v1/auth/kubernetes/login`.
        login_path: String,
        /// Vault role.
        role: String,
    },
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct VaultConfig {
    /// `https://vault:8200`, no trailing slash.
    pub address: String,
    /// The KV mount, e.g. `secret` (no slashes at either end).
    pub mount: String,
    /// `vaultPassphrasePath`: a prefix under the mount (no slashes at the ends).
    pub prefix: String,
    /// KV version.
    pub kv: KvVersion,
    /// `X-Vault-Namespace` for KV operations.
    pub namespace: Option<String>,
    /// `X-Vault-Namespace` for login.
    pub auth_namespace: Option<String>,
    /// Destroy all versions on delete (KV v2).
    pub destroy_keys: bool,
    /// Authentication.
    pub auth: Auth,
    /// Request timeout in seconds.
    pub timeout_secs: u64,
    /// The Transit mount (`vaultTransitPath`, default `transit`).
    pub transit_mount: String,
    /// The Transit key for wrap/unwrap (`vaultTransitKey`).
    pub transit_key: Option<String>,
}

fn trim_slashes(s: &str) -> String {
    s.trim_matches('/').to_string()
}

impl VaultConfig {
    /// Reads the options.
    pub fn from_options(o: &mut Options) -> Result<Self> {
        let kms_type = o.kms_type().unwrap_or("vault").to_string();
        let address = address(o)?;
        let kv = kv_version(o)?;
        let (transit_mount, transit_key) = transit(o)?;
        let (mount, prefix) = kv_paths(o)?;
        let namespace = o.take_any(&["vaultNamespace", "VAULT_NAMESPACE"]);
        let auth_namespace = o
            .take_any(&["vaultAuthNamespace", "VAULT_AUTH_NAMESPACE"])
            .or_else(|| namespace.clone());
        let destroy_keys = destroy_keys(o)?;
        let auth = auth(o)?;
        drop_host_options(o, &kms_type);
        let timeout_secs = o.u64("vaultTimeoutSeconds", 10)?;
        Ok(VaultConfig {
            address,
            mount,
            prefix,
            kv,
            namespace,
            auth_namespace,
            destroy_keys,
            auth,
            timeout_secs,
            transit_mount,
            transit_key,
        })
    }
}

/// `vaultAddress` (Rook's `VAULT_ADDR`): an http(s) URL, no trailing slash.
fn address(o: &mut Options) -> Result<String> {
    let address = o
        .take_any(&["vaultAddress", "VAULT_ADDR"])
        .ok_or_else(|| invalid_config("vaultAddress", "is required (or Rook's VAULT_ADDR)"))?;
    if !(address.starts_with("https://") || address.starts_with("http://")) {
        return Err(invalid_config(
            "vaultAddress",
            "must be an http:// or https:// URL",
        ));
    }
    Ok(address.trim_end_matches('/').to_string())
}

/// `vaultBackend` (Rook's `VAULT_BACKEND`): KV version 2 unless `kv`/`v1`.
fn kv_version(o: &mut Options) -> Result<KvVersion> {
    match o.take_any(&["vaultBackend", "VAULT_BACKEND"]).as_deref() {
        None | Some("kv-v2") | Some("v2") => Ok(KvVersion::V2),
        Some("kv") | Some("v1") => Ok(KvVersion::V1),
        Some(other) => Err(invalid_config(
            "vaultBackend",
            format!("must be kv or kv-v2, not {other:?}"),
        )),
    }
}

/// Rook's `VAULT_SECRET_ENGINE` (kv, the key store, or transit) with the
/// Transit mount and key: `(vaultTransitPath, vaultTransitKey)`.
fn transit(o: &mut Options) -> Result<(String, Option<String>)> {
    let engine = o.take("VAULT_SECRET_ENGINE");
    let transit_key = o.take_any(&["vaultTransitKey", "VAULT_TRANSIT_KEY"]);
    match engine.as_deref() {
        None | Some("kv") => {}
        Some("transit") if transit_key.is_some() => {}
        Some("transit") => {
            return Err(invalid_config(
                "vaultTransitKey",
                "is required with VAULT_SECRET_ENGINE=transit",
            ));
        }
        Some(other) => {
            return Err(invalid_config(
                "VAULT_SECRET_ENGINE",
                format!("must be kv or transit, not {other:?}"),
            ));
        }
    }
    let transit_mount = trim_slashes(&o.or("vaultTransitPath", "transit"));
    if transit_mount.is_empty() || transit_mount.contains("..") {
        return Err(invalid_config(
            "vaultTransitPath",
            "must name a Transit mount",
        ));
    }
    if let Some(k) = &transit_key
        && (k.is_empty() || k.contains('/') || k.contains(".."))
    {
        return Err(invalid_config(
            "vaultTransitKey",
            "must be a Transit key name",
        ));
    }
    Ok((transit_mount, transit_key))
}

/// The KV mount and key prefix: `vaultBackendPath` (vaulttokens), or
/// `vaultPassphraseRoot` (vault, whose old examples wrote "/v1/secret"),
/// and `vaultPassphrasePath`.
fn kv_paths(o: &mut Options) -> Result<(String, String)> {
    let backend_path = o.take_any(&["vaultBackendPath", "VAULT_BACKEND_PATH"]);
    let root = o.take("vaultPassphraseRoot");
    let mount = match (backend_path, root) {
        (Some(p), _) => trim_slashes(&p),
        (None, Some(r)) => trim_slashes(r.strip_prefix("/v1/").unwrap_or(&r)),
        (None, None) => "secret".to_string(),
    };
    if mount.is_empty() || mount.contains("..") {
        return Err(invalid_config("vaultBackendPath", "must name a KV mount"));
    }
    let prefix = trim_slashes(&o.or("vaultPassphrasePath", ""));
    if prefix.contains("..") {
        return Err(invalid_config(
            "vaultPassphrasePath",
            "must not contain '..'",
        ));
    }
    Ok((mount, prefix))
}

/// `vaultDestroyKeys` (Rook's `VAULT_DESTROY_KEYS`), true by default.
fn destroy_keys(o: &mut Options) -> Result<bool> {
    let Some(v) = o.take_any(&["vaultDestroyKeys", "VAULT_DESTROY_KEYS"]) else {
        return Ok(true);
    };
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(invalid_config(
            "vaultDestroyKeys",
            format!("must be true or false, not {v:?}"),
        )),
    }
}

/// How to log in: a token Secret, or Kubernetes auth with a role.
fn auth(o: &mut Options) -> Result<Auth> {
    let method = o.take("VAULT_AUTH_METHOD");
    let token_secret = o.take("tokenSecretName");
    let login_path = o.take("vaultAuthPath");
    let role = o.take_any(&["vaultRole", "VAULT_AUTH_KUBERNETES_ROLE"]);
    let mount_path = o.take("VAULT_AUTH_KUBERNETES_MOUNT_PATH");
    match (method.as_deref(), token_secret) {
        (Some("token") | None, Some(secret)) => Ok(Auth::Token { secret }),
        (Some("token"), None) => Err(invalid_config(
            "tokenSecretName",
            "is required with VAULT_AUTH_METHOD=token",
        )),
        (Some("kubernetes") | None, None) | (Some("kubernetes"), Some(_)) => Ok(Auth::Kubernetes {
            login_path: match (login_path, mount_path) {
                (Some(p), _) => format!("/{}", trim_slashes(&p)),
                (None, Some(m)) => format!("/v1/auth/{}/login", trim_slashes(&m)),
                (None, None) => "/v1/auth/kubernetes/login".to_string(),
            },
            role: role.unwrap_or_else(|| "csi-kubernetes".to_string()),
        }),
        (Some(other), _) => Err(invalid_config(
            "VAULT_AUTH_METHOD",
            format!("must be token or kubernetes, not {other:?}"),
        )),
    }
}

/// Options the host handled: TLS (the host terminates it) and per-tenant
/// settings (the host resolves them, config/tenant.rs; the plugin sees the
/// tenant's options and token Secret).
fn drop_host_options(o: &mut Options, kms_type: &str) {
    for tls in [
        "vaultCAFromSecret",
        "vaultCAVerify",
        "vaultTLSServerName",
        "vaultClientCertFromSecret",
        "vaultClientCertKeyFromSecret",
        "VAULT_CACERT",
        "VAULT_CLIENT_CERT",
        "VAULT_CLIENT_KEY",
        "VAULT_SKIP_VERIFY",
        "VAULT_TLS_SERVER_NAME",
    ] {
        let _ = o.take(tls);
    }
    if kms_type == "vaulttokens" || kms_type == "vaulttenantsa" {
        for t in [
            "tenantConfigName",
            "tenantTokenName",
            "tenants",
            "tenantSAName",
        ] {
            let _ = o.take(t);
        }
    }
}
