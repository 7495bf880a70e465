//! Secrets read from the Kubernetes API (`GET /api/v1/namespaces/{ns}/secrets/{name}`).

use super::{SecretData, SecretError, SecretRef, SecretSource};
use crate::capability::allow_list::Target;
use crate::capability::net::{self, Connect};
use crate::capability::tls::TlsSettings;
use crate::types::SecretBytes;
use async_trait::async_trait;
use base64::Engine as _;
use http_body_util::BodyExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How to reach the Kubernetes API server.
#[derive(Clone)]
pub struct KubeApi {
    /// Base URL, e.g. `https://10.96.0.1:443`.
    pub base_url: String,
    target: Target,
    token_file: PathBuf,
    connect: Connect,
    pool: Arc<net::Pool>,
    /// The driver's own namespace (default for unqualified Secrets).
    pub namespace: String,
}

impl std::fmt::Debug for KubeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeApi")
            .field("base_url", &self.base_url)
            .field("token_file", &self.token_file)
            .field("namespace", &self.namespace)
            .finish()
    }
}

/// Why the API client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KubeSetupError {
    /// Not running in a cluster.
    #[error("not in a cluster: KUBERNETES_SERVICE_HOST is not set")]
    NotInCluster,
    /// Bad URL.
    #[error("Kubernetes API address {0:?} is not a valid http(s) URL")]
    Url(String),
    /// CA problem.
    #[error("Kubernetes API CA: {0}")]
    Tls(String),
}

impl KubeApi {
    /// The in-cluster API: address from `KUBERNETES_SERVICE_HOST`/`_PORT`,
    /// token and CA from the service-account mount.
    pub fn in_cluster(namespace: &str) -> Result<KubeApi, KubeSetupError> {
        let host =
            std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| KubeSetupError::NotInCluster)?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let ca = std::fs::read(PathBuf::from(SA_DIR).join("ca.crt")).ok();
        Self::new(
            &format!("https://{host}:{port}"),
            PathBuf::from(SA_DIR).join("token"),
            ca,
            namespace,
        )
    }

    /// An API server at `base_url`, authenticating with the token in
    /// `token_file` (re-read on every request: projected tokens rotate) and
    /// trusting `ca_pem` (or the system roots).
    pub fn new(
        base_url: &str,
        token_file: PathBuf,
        ca_pem: Option<Vec<u8>>,
        namespace: &str,
    ) -> Result<KubeApi, KubeSetupError> {
        let base_url = base_url.trim_end_matches('/').to_string();
        let target =
            Target::parse_url(&base_url).map_err(|_| KubeSetupError::Url(base_url.clone()))?;
        let tls = TlsSettings {
            ca_pem,
            ..Default::default()
        }
        .client_config()
        .map_err(|e| KubeSetupError::Tls(e.to_string()))?;
        Ok(KubeApi {
            base_url,
            target,
            token_file,
            connect: Connect {
                tls: Some(tls),
                server_name: None,
                connect_timeout: Duration::from_secs(10),
                first_byte_timeout: Duration::from_secs(30),
            },
            pool: Arc::default(),
            namespace: namespace.to_string(),
        })
    }

    /// The service-account token (re-read from its file).
    pub fn token(&self) -> std::io::Result<SecretBytes> {
        let mut t = std::fs::read(&self.token_file)?;
        while t.last().is_some_and(|b| b.is_ascii_whitespace()) {
            t.pop();
        }
        Ok(SecretBytes::new(t))
    }

    /// The TLS settings the host uses towards the API server.
    pub fn connect(&self) -> &Connect {
        &self.connect
    }

    async fn get(&self, path: &str) -> Result<(u16, Vec<u8>), String> {
        self.request(http::Method::GET, path, None).await
    }

    async fn request(
        &self,
        method: http::Method,
        path: &str,
        json_body: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>), String> {
        let token = self
            .token()
            .map_err(|e| format!("reading the service-account token: {e}"))?;
        let mut auth = b"Bearer ".to_vec();
        auth.extend_from_slice(token.expose());
        let mut auth = http::HeaderValue::from_bytes(&auth)
            .map_err(|_| "token is not a valid header".to_string())?;
        auth.set_sensitive(true);
        let mut builder = http::Request::builder()
            .method(method)
            .uri(path)
            .header(
                http::header::HOST,
                self.base_url.split("://").nth(1).unwrap_or(""),
            )
            .header(http::header::AUTHORIZATION, auth)
            .header(http::header::ACCEPT, "application/json");
        let body = match json_body {
            Some(b) => {
                builder = builder
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header(http::header::CONTENT_LENGTH, b.len());
                http_body_util::Full::new(bytes::Bytes::from(b))
                    .map_err(|never| match never {})
                    .boxed_unsync()
            }
            None => http_body_util::Empty::<bytes::Bytes>::new()
                .map_err(|never| match never {})
                .boxed_unsync(),
        };
        let req = builder.body(body).map_err(|e| e.to_string())?;
        let fetched = self
            .pool
            .fetch(&self.target, &self.connect, req, 4 << 20)
            .await
            .map_err(|e| e.to_string())?;
        let status = fetched.parts.status.as_u16();
        let body = fetched
            .body
            .ok_or_else(|| "response larger than 4 MiB".to_string())?;
        Ok((status, body))
    }
}

/// What an API-server status means for a read: `Ok(true)` found,
/// `Ok(false)` absent (404), else denied (401/403, with `rbac_hint`) or
/// unavailable.
fn api_status(status: u16, what: &str, rbac_hint: &str) -> Result<bool, SecretError> {
    match status {
        200 | 201 => Ok(true),
        404 => Ok(false),
        401 | 403 => Err(SecretError::Denied {
            secret: what.to_string(),
            message: format!("the API server refused (HTTP {status}): {rbac_hint}"),
        }),
        _ => Err(SecretError::Unavailable {
            secret: what.to_string(),
            message: format!("the API server answered HTTP {status}"),
        }),
    }
}

/// Reads Secrets through the API server.
#[derive(Debug, Clone)]
pub struct KubeSecrets {
    api: Arc<KubeApi>,
}

impl KubeSecrets {
    /// Secrets from `api`.
    pub fn new(api: Arc<KubeApi>) -> Self {
        KubeSecrets { api }
    }
}

#[async_trait]
impl SecretSource for KubeSecrets {
    async fn read(&self, secret: &SecretRef) -> Result<Option<SecretData>, SecretError> {
        let ns = secret.namespace.as_deref().unwrap_or(&self.api.namespace);
        let path = format!("/api/v1/namespaces/{ns}/secrets/{}", secret.name);
        let (status, body) =
            self.api
                .get(&path)
                .await
                .map_err(|message| SecretError::Unavailable {
                    secret: secret.to_string(),
                    message,
                })?;
        if !api_status(status, &secret.to_string(), "check the driver's RBAC")? {
            return Ok(None);
        }
        #[derive(serde::Deserialize)]
        struct Secret {
            #[serde(default)]
            data: std::collections::BTreeMap<String, String>,
        }
        let s: Secret = serde_json::from_slice(&body).map_err(|e| SecretError::Unavailable {
            secret: secret.to_string(),
            message: format!("unexpected API response: {e}"),
        })?;
        let mut data = SecretData::new();
        for (k, v) in s.data {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.as_bytes())
                .map_err(|_| SecretError::Unavailable {
                    secret: secret.to_string(),
                    message: format!("key {k} is not base64"),
                })?;
            data.insert(k, SecretBytes::new(bytes));
        }
        Ok(Some(data))
    }
}

/// Reads tenant ConfigMaps through the API server.
#[derive(Debug, Clone)]
pub struct KubeConfigMaps {
    api: Arc<KubeApi>,
}

impl KubeConfigMaps {
    /// ConfigMaps from `api`.
    pub fn new(api: Arc<KubeApi>) -> Self {
        KubeConfigMaps { api }
    }
}

#[async_trait]
impl super::ConfigMapSource for KubeConfigMaps {
    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<std::collections::BTreeMap<String, String>>, SecretError> {
        let what = format!("ConfigMap {namespace}/{name}");
        let path = format!("/api/v1/namespaces/{namespace}/configmaps/{name}");
        let (status, body) =
            self.api
                .get(&path)
                .await
                .map_err(|message| SecretError::Unavailable {
                    secret: what.clone(),
                    message,
                })?;
        if !api_status(status, &what, "check the driver's RBAC")? {
            return Ok(None);
        }
        #[derive(serde::Deserialize)]
        struct ConfigMap {
            #[serde(default)]
            data: std::collections::BTreeMap<String, String>,
        }
        let c: ConfigMap = serde_json::from_slice(&body).map_err(|e| SecretError::Unavailable {
            secret: what,
            message: format!("unexpected API response: {e}"),
        })?;
        Ok(Some(c.data))
    }
}

/// Prefix of the pseudo-Secret names [`KubeServiceAccountTokens`] serves:
/// `<prefix><service account>` in a namespace, key `token`.
pub const SERVICE_ACCOUNT_TOKEN_PREFIX: &str = "kmshost-serviceaccount-token:";

/// Short-lived tokens of tenants' service accounts (ceph-csi
/// `vaulttenantsa`), requested from the API server with the TokenRequest
/// API and served as pseudo-Secrets `<namespace>/`[`SERVICE_ACCOUNT_TOKEN_PREFIX`]`<name>`
/// (key `token`). Only per-tenant entries are granted such a name.
#[derive(Debug, Clone)]
pub struct KubeServiceAccountTokens {
    api: Arc<KubeApi>,
}

impl KubeServiceAccountTokens {
    /// Tokens from `api`.
    pub fn new(api: Arc<KubeApi>) -> Self {
        KubeServiceAccountTokens { api }
    }
}

#[async_trait]
impl SecretSource for KubeServiceAccountTokens {
    async fn read(&self, secret: &SecretRef) -> Result<Option<SecretData>, SecretError> {
        let (Some(ns), Some(sa)) = (
            secret.namespace.as_deref(),
            secret.name.strip_prefix(SERVICE_ACCOUNT_TOKEN_PREFIX),
        ) else {
            return Ok(None);
        };
        let what = format!("service account {ns}/{sa}");
        let path = format!("/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token");
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 600}
        });
        let (status, body) = self
            .api
            .request(
                http::Method::POST,
                &path,
                Some(body.to_string().into_bytes()),
            )
            .await
            .map_err(|message| SecretError::Unavailable {
                secret: what.clone(),
                message,
            })?;
        if !api_status(
            status,
            &what,
            "the driver needs create on serviceaccounts/token in this namespace",
        )? {
            return Ok(None);
        }
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| SecretError::Unavailable {
                secret: what.clone(),
                message: format!("unexpected API response: {e}"),
            })?;
        let token = v["status"]["token"]
            .as_str()
            .ok_or_else(|| SecretError::Unavailable {
                secret: what,
                message: "the TokenRequest response has no status.token".into(),
            })?;
        let mut data = SecretData::new();
        data.insert("token".into(), SecretBytes::new(token.as_bytes().to_vec()));
        Ok(Some(data))
    }
}
