//! `kubernetes-secret` mode: one Kubernetes Secret per volume key.
//!
//! The Secret is named `<secretNamePrefix><sha256(key-id) in hex>` (volume IDs
//! are not always valid object names), carries the key-id in the annotation
//! `kmshost.io/key-id`, and holds the key under data key `passphrase`. The
//! plugin talks to the API server through the host's restricted outbound
//! HTTP, authenticating with the service-account token the host grants as
//! Secret `kubernetes-service-account`, key `token`.

use base64::Engine as _;
use kmshost_plugin_sdk::http::Request;
use kmshost_plugin_sdk::{
    KmsError, Options, Result, SERVICE_ACCOUNT_SECRET, invalid_config, secret_string,
};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The data key of the stored volume key.
pub const DATA_KEY: &str = "passphrase";

/// Configured `kubernetes-secret` mode.
pub struct Store {
    api: String,
    namespace: String,
    prefix: String,
}

impl Store {
    /// Reads `kubernetesAPIAddress` (filled in by the host in-cluster),
    /// `secretNamespace` and `secretNamePrefix` (default `kmshost-key-`).
    pub fn configure(options: &mut Options) -> Result<Self> {
        let api = options
            .required("kubernetesAPIAddress")?
            .trim_end_matches('/')
            .to_string();
        if !(api.starts_with("https://") || api.starts_with("http://")) {
            return Err(invalid_config(
                "kubernetesAPIAddress",
                "must be an http:// or https:// URL",
            ));
        }
        let namespace = options.required("secretNamespace")?;
        if !is_dns_label(&namespace) {
            return Err(invalid_config(
                "secretNamespace",
                "is not a valid namespace name",
            ));
        }
        let prefix = options.or("secretNamePrefix", "kmshost-key-");
        if !prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            || prefix.len() > 150
        {
            return Err(invalid_config(
                "secretNamePrefix",
                "may hold only lower-case letters, digits and '-' (at most 150)",
            ));
        }
        Ok(Store {
            api,
            namespace,
            prefix,
        })
    }

    fn name(&self, key_id: &str) -> String {
        let digest = Sha256::digest(key_id.as_bytes());
        let mut s = self.prefix.clone();
        for b in digest {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    fn collection_url(&self) -> String {
        format!("{}/api/v1/namespaces/{}/secrets", self.api, self.namespace)
    }

    fn authed(&self, req: Request) -> Result<Request> {
        let token = Zeroizing::new(secret_string(SERVICE_ACCOUNT_SECRET, "token")?);
        Ok(req
            .header("authorization", format!("Bearer {}", token.as_str()))
            .header("accept", "application/json"))
    }

    /// Reads the key from its Secret.
    pub fn get(&self, key_id: &str) -> Result<Vec<u8>> {
        let name = self.name(key_id);
        let url = format!("{}/{name}", self.collection_url());
        let resp = self
            .authed(Request::get(url))?
            .send()?
            .error_for_status(&format!("reading Secret {}/{name}", self.namespace))?;
        #[derive(serde::Deserialize)]
        struct Secret {
            #[serde(default)]
            data: std::collections::BTreeMap<String, String>,
        }
        let s: Secret = resp.json()?;
        let value = s.data.get(DATA_KEY).ok_or_else(|| {
            KmsError::NotFound(format!(
                "Secret {}/{name} has no {DATA_KEY}",
                self.namespace
            ))
        })?;
        base64::engine::general_purpose::STANDARD
            .decode(value)
            .map_err(|_| {
                KmsError::Integrity(format!("Secret {}/{name} is not base64", self.namespace))
            })
    }

    /// Creates (or replaces) the key's Secret.
    pub fn put(&self, key_id: &str, key: &[u8]) -> Result<()> {
        let name = self.name(key_id);
        // Serialized from borrowed parts straight into a zeroizing buffer:
        // no intermediate JSON value keeps a copy of the key.
        #[derive(serde::Serialize)]
        struct SecretBody<'a> {
            #[serde(rename = "apiVersion")]
            api_version: &'static str,
            kind: &'static str,
            #[serde(rename = "type")]
            kind_of_data: &'static str,
            metadata: serde_json::Value,
            data: std::collections::BTreeMap<&'static str, &'a str>,
        }
        let encoded = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(key));
        let body = Zeroizing::new(
            serde_json::to_vec(&SecretBody {
                api_version: "v1",
                kind: "Secret",
                kind_of_data: "Opaque",
                metadata: serde_json::json!({
                    "name": name,
                    "namespace": self.namespace,
                    "labels": {"app.kubernetes.io/managed-by": "kmshost"},
                    "annotations": {"kmshost.io/key-id": key_id},
                }),
                data: [(DATA_KEY, encoded.as_str())].into(),
            })
            .map_err(|_| KmsError::Other("cannot encode Secret".into()))?,
        );
        let resp = self
            .authed(Request::post(self.collection_url()))?
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()?;
        if resp.status == 409 {
            // Already exists: replace it (Secrets allow unconditional update).
            let url = format!("{}/{name}", self.collection_url());
            self.authed(Request::put(url))?
                .header("content-type", "application/json")
                .body(body.to_vec())
                .send()?
                .error_for_status(&format!("replacing Secret {}/{name}", self.namespace))?;
            return Ok(());
        }
        resp.error_for_status(&format!("creating Secret {}/{name}", self.namespace))?;
        Ok(())
    }

    /// Deletes the key's Secret; a missing Secret is success.
    pub fn delete(&self, key_id: &str) -> Result<()> {
        let name = self.name(key_id);
        let url = format!("{}/{name}", self.collection_url());
        let resp = self.authed(Request::delete(url))?.send()?;
        if resp.status == 404 {
            return Ok(());
        }
        resp.error_for_status(&format!("deleting Secret {}/{name}", self.namespace))?;
        Ok(())
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}
