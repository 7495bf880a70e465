//! Options, with ceph-csi's names (`IBM_KP_*`) and Rook's aliases
//! (`IBM_BASE_URL`, `IBM_TOKEN_URL`), and what the Secret holds.

use kmshost_plugin_sdk::{
    KmsError, Options, Result, base_url, check_identifier, invalid_config, secret_string,
};
use zeroize::Zeroizing;

/// ceph-csi's default Secret name.
pub const DEFAULT_SECRET: &str = "ceph-csi-kp-credentials";
/// kp-go's `DefaultBaseURL`, which ceph-csi and Rook use when no URL is set.
pub const DEFAULT_BASE_URL: &str = "https://us-south.kms.cloud.ibm.com";
/// kp-go's `DefaultTokenURL`.
pub const DEFAULT_TOKEN_URL: &str = "https://iam.cloud.ibm.com/oidc/token";
/// Seconds each request may take, unless `IBM_KP_TIMEOUT_SECONDS` says.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;

/// Secret keys, exactly as ceph-csi reads them.
pub const API_KEY: &str = "IBM_KP_SERVICE_API_KEY";
/// The root key that wraps volume keys (ceph-csi).
pub const ROOT_KEY: &str = "IBM_KP_CUSTOMER_ROOT_KEY";
/// Read for compatibility; neither ceph-csi nor kmshost sends it.
pub const SESSION_TOKEN: &str = "IBM_KP_SESSION_TOKEN";
/// Read for compatibility; neither ceph-csi nor kmshost sends it.
pub const CRK_ARN: &str = "IBM_KP_CRK_ARN";

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct KpConfig {
    /// `IBM_KP_SERVICE_INSTANCE_ID`, sent as `bluemix-instance`.
    pub instance_id: String,
    /// The Secret with the API key and the root key.
    pub secret_name: String,
    /// `https://host[:port]` and any path prefix, without `/api/v2`.
    pub base_url: String,
    /// The IAM token endpoint.
    pub token_url: String,
    /// `x-kms-key-ring` for imported keys.
    pub key_ring: Option<String>,
    /// Per-request timeout.
    pub timeout_secs: u64,
}

impl KpConfig {
    /// Reads the options. Uses no network and reads no Secret.
    pub fn from_options(o: &mut Options) -> Result<Self> {
        let instance_id = o.required("IBM_KP_SERVICE_INSTANCE_ID")?;
        check_token("IBM_KP_SERVICE_INSTANCE_ID", &instance_id)?;
        let secret_name = o.or("IBM_KP_SECRET_NAME", DEFAULT_SECRET);
        let base_option = "IBM_KP_BASE_URL";
        let base_url = o
            .take_any(&[base_option, "IBM_BASE_URL"])
            .unwrap_or_else(|| DEFAULT_BASE_URL.into());
        let base_url = service_url(base_option, &base_url)?;
        let token_url = o
            .take_any(&["IBM_KP_TOKEN_URL", "IBM_TOKEN_URL"])
            .unwrap_or_else(|| DEFAULT_TOKEN_URL.into());
        kmshost_plugin_sdk::base_url("IBM_KP_TOKEN_URL", &token_url)?;
        // ceph-csi reads the region and never uses it (its own sample sets
        // "us-south-2" beside a us-south URL): the URL alone decides.
        if let Some(region) = o.take("IBM_KP_REGION") {
            check_token("IBM_KP_REGION", &region)?;
        }
        let key_ring = o.take("IBM_KP_KEY_RING");
        if let Some(r) = &key_ring {
            check_token("IBM_KP_KEY_RING", r)?;
        }
        let timeout_secs = o.u64("IBM_KP_TIMEOUT_SECONDS", DEFAULT_TIMEOUT_SECS)?;
        if !(1..=300).contains(&timeout_secs) {
            return Err(invalid_config(
                "IBM_KP_TIMEOUT_SECONDS",
                "must be between 1 and 300 seconds",
            ));
        }
        Ok(KpConfig {
            instance_id,
            secret_name,
            base_url,
            token_url,
            key_ring,
            timeout_secs,
        })
    }

    /// `{base}/api/v2/{path}`.
    pub fn api(&self, path: &str) -> String {
        format!("{}/api/v2/{path}", self.base_url)
    }

    /// The API key from the Secret.
    pub fn api_key(&self) -> Result<Zeroizing<String>> {
        self.secret_key(API_KEY)?
            .ok_or_else(|| self.missing(API_KEY, "the IBM Cloud API key Key Protect logs in with"))
    }

    /// The root key's ID (ceph-csi), or `None` when the Secret has none
    /// (Rook: keys are then stored as imported standard keys).
    pub fn root_key(&self) -> Result<Option<String>> {
        let Some(k) = self.secret_key(ROOT_KEY)? else {
            return Ok(None);
        };
        let k = k.trim().to_string();
        check_token(ROOT_KEY, &k).map_err(|_| {
            invalid_config(
                "IBM_KP_SECRET_NAME",
                format!(
                    "Secret {}: {ROOT_KEY} is not a key ID (letters, digits, '-', '_')",
                    self.secret_name
                ),
            )
        })?;
        Ok(Some(k))
    }

    /// `key` of the Secret; `None` when the Secret has no such key.
    fn secret_key(&self, key: &str) -> Result<Option<Zeroizing<String>>> {
        match secret_string(&self.secret_name, key) {
            Ok(v) if v.trim().is_empty() => Ok(None),
            Ok(v) => Ok(Some(Zeroizing::new(v))),
            Err(KmsError::NotFound(m)) if m.contains("has no key") => Ok(None),
            // The Secret itself is missing: the option naming it is at fault.
            Err(KmsError::NotFound(m)) => Err(invalid_config("IBM_KP_SECRET_NAME", m)),
            Err(e) => Err(e),
        }
    }

    fn missing(&self, key: &str, what: &str) -> KmsError {
        invalid_config(
            "IBM_KP_SECRET_NAME",
            format!("Secret {} has no {key}: {what}", self.secret_name),
        )
    }
}

/// A service URL without a trailing `/` or `/api/v2` (kp-go appends it).
fn service_url(option: &str, url: &str) -> Result<String> {
    let u = base_url(option, url)?;
    let u = u.strip_suffix("/api/v2").unwrap_or(&u);
    Ok(u.trim_end_matches('/').to_string())
}

/// IDs that go into URLs and headers: letters, digits, `-`, `_`, `.`, `:`.
fn check_token(option: &str, v: &str) -> Result<()> {
    check_identifier(
        option,
        v,
        b":",
        "must be an ID of letters, digits, '-', '_', '.' or ':'",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<KpConfig> {
        let mut o = Options::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let c = KpConfig::from_options(&mut o)?;
        o.finish()?;
        Ok(c)
    }

    fn option_of(e: KmsError) -> String {
        match e {
            KmsError::InvalidConfig(c) => c.option,
            other => panic!("not invalid-config: {other:?}"),
        }
    }

    #[test]
    fn defaults_are_ceph_csis() {
        let c = parse(&[("IBM_KP_SERVICE_INSTANCE_ID", "inst-1")]).unwrap();
        assert_eq!(c.secret_name, DEFAULT_SECRET);
        assert_eq!(c.base_url, DEFAULT_BASE_URL);
        assert_eq!(c.token_url, DEFAULT_TOKEN_URL);
        assert_eq!(
            c.api("keys/k1/actions/wrap"),
            "https://us-south.kms.cloud.ibm.com/api/v2/keys/k1/actions/wrap"
        );
        assert_eq!(c.timeout_secs, 10);
    }

    #[test]
    fn urls_rooks_aliases_and_hpcs() {
        let c = parse(&[
            ("IBM_KP_SERVICE_INSTANCE_ID", "inst-1"),
            (
                "IBM_BASE_URL",
                "https://api.us-east.hs-crypto.cloud.ibm.com:8992/api/v2/",
            ),
            ("IBM_TOKEN_URL", "https://iam.example.test/identity/token"),
        ])
        .unwrap();
        assert_eq!(
            c.base_url,
            "https://api.us-east.hs-crypto.cloud.ibm.com:8992"
        );
        assert_eq!(c.token_url, "https://iam.example.test/identity/token");
    }

    #[test]
    fn bad_options_are_named() {
        let table: &[(&[(&str, &str)], &str)] = &[
            (&[], "IBM_KP_SERVICE_INSTANCE_ID"),
            (
                &[("IBM_KP_SERVICE_INSTANCE_ID", "a/b")],
                "IBM_KP_SERVICE_INSTANCE_ID",
            ),
            (
                &[
                    ("IBM_KP_SERVICE_INSTANCE_ID", "i"),
                    ("IBM_KP_BASE_URL", "ftp://x"),
                ],
                "IBM_KP_BASE_URL",
            ),
            (
                &[
                    ("IBM_KP_SERVICE_INSTANCE_ID", "i"),
                    ("IBM_KP_TOKEN_URL", "https://x/?a=b"),
                ],
                "IBM_KP_TOKEN_URL",
            ),
            (
                &[
                    ("IBM_KP_SERVICE_INSTANCE_ID", "i"),
                    ("IBM_KP_REGION", "eu de"),
                ],
                "IBM_KP_REGION",
            ),
            (
                &[
                    ("IBM_KP_SERVICE_INSTANCE_ID", "i"),
                    ("IBM_KP_TIMEOUT_SECONDS", "0"),
                ],
                "IBM_KP_TIMEOUT_SECONDS",
            ),
            (
                &[
                    ("IBM_KP_SERVICE_INSTANCE_ID", "i"),
                    ("IBM_KP_KEY_RING", "a b"),
                ],
                "IBM_KP_KEY_RING",
            ),
            (
                &[
                    ("IBM_KP_SERVICE_INSTANCE_ID", "i"),
                    ("IBM_KP_SECRT_NAME", "s"),
                ],
                "IBM_KP_SECRT_NAME",
            ),
        ];
        for (pairs, option) in table {
            let e = parse(pairs).expect_err(&format!("{pairs:?} accepted"));
            assert_eq!(option_of(e), *option, "{pairs:?}");
        }
    }
}
