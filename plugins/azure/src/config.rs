//! Options, with ceph-csi's and Rook's names (`AZURE_*`), kmshost's own
//! additions for sovereign clouds and tuning, and the Key Vault name rules.

use kmshost_plugin_sdk::bindings::kmshost::plugin::signing::Algorithm;
use kmshost_plugin_sdk::{KmsError, Options, Result, base_url, check_identifier, invalid_config};

/// ceph-csi's default Secret name.
pub const DEFAULT_SECRET: &str = "ceph-csi-azure-credentials";
/// The public cloud's login endpoint (azidentity's default authority).
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// The Key Vault REST API version ceph-csi's SDK speaks.
pub const DEFAULT_API_VERSION: &str = "7.4";
/// Seconds each request may take, unless `AZURE_TIMEOUT_SECONDS` says.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;
/// The public cloud's Key Vault scope.
pub const PUBLIC_SCOPE: &str = "https://vault.azure.net/.default";
/// Vault domains of the national clouds, and their resource.
const CLOUDS: [&str; 4] = [
    "vault.azure.net",
    "vault.azure.cn",
    "vault.usgovcloudapi.net",
    "vault.microsoftazure.de",
];
/// The longest Key Vault secret name.
pub const MAX_SECRET_NAME: usize = 127;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct AzureConfig {
    /// `https://<vault>.vault.azure.net`, without a trailing `/`.
    pub vault_url: String,
    /// The app registration's client ID (`iss` and `sub` of the assertion).
    pub client_id: String,
    /// The tenant ID.
    pub tenant_id: String,
    /// The certificate's Secret, as the host grants it for signing.
    pub cert: String,
    /// `{authority}/{tenant}/oauth2/v2.0/token`.
    pub token_url: String,
    /// The token scope.
    pub scope: String,
    /// The `api-version` query parameter.
    pub api_version: String,
    /// How the assertion is signed.
    pub algorithm: Algorithm,
    /// Per-request timeout.
    pub timeout_secs: u64,
}

impl AzureConfig {
    /// Reads the options. Uses no network and reads no Secret.
    pub fn from_options(o: &mut Options) -> Result<Self> {
        let vault_url = o.required("AZURE_VAULT_URL")?;
        let vault_url = base_url("AZURE_VAULT_URL", &vault_url)?;
        let client_id = o.required("AZURE_CLIENT_ID")?;
        check_id("AZURE_CLIENT_ID", &client_id)?;
        let tenant_id = o.required("AZURE_TENANT_ID")?;
        check_id("AZURE_TENANT_ID", &tenant_id)?;
        let cert = o.or("AZURE_CERT_SECRET_NAME", DEFAULT_SECRET);
        let authority = o.or("AZURE_AUTHORITY_HOST", DEFAULT_AUTHORITY);
        let authority = base_url("AZURE_AUTHORITY_HOST", &authority)?;
        let scope = match o.take("AZURE_VAULT_SCOPE") {
            Some(s) => check_scope(&s).map(|_| s)?,
            None => default_scope(&vault_url),
        };
        let api_version = o.or("AZURE_API_VERSION", DEFAULT_API_VERSION);
        check_api_version(&api_version)?;
        let algorithm = match o.or("AZURE_ASSERTION_ALGORITHM", "RS256").as_str() {
            "RS256" => Algorithm::Rs256,
            "PS256" => Algorithm::Ps256,
            _ => {
                return Err(invalid_config(
                    "AZURE_ASSERTION_ALGORITHM",
                    "must be RS256 or PS256",
                ));
            }
        };
        let timeout_secs = o.u64("AZURE_TIMEOUT_SECONDS", DEFAULT_TIMEOUT_SECS)?;
        if !(1..=300).contains(&timeout_secs) {
            return Err(invalid_config(
                "AZURE_TIMEOUT_SECONDS",
                "must be between 1 and 300 seconds",
            ));
        }
        Ok(AzureConfig {
            token_url: format!("{authority}/{tenant_id}/oauth2/v2.0/token"),
            vault_url,
            client_id,
            tenant_id,
            cert,
            scope,
            api_version,
            algorithm,
            timeout_secs,
        })
    }

    /// `{vault}/{path}?api-version=…`.
    pub fn vault(&self, path: &str) -> String {
        format!("{}/{path}?api-version={}", self.vault_url, self.api_version)
    }
}

/// The scope of a vault's domain: `https://vault.<cloud>/.default` for a
/// vault in a known cloud, the public cloud's otherwise.
pub fn default_scope(vault_url: &str) -> String {
    let host = vault_url
        .split_once("://")
        .map_or(vault_url, |(_, r)| r)
        .split(['/', ':'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    CLOUDS
        .iter()
        .find(|c| host.ends_with(&format!(".{c}")))
        .map_or_else(
            || PUBLIC_SCOPE.to_string(),
            |c| format!("https://{c}/.default"),
        )
}

/// Checks that `key_id` can name a Key Vault secret: 1 to 127 letters,
/// digits and `-` (ceph-csi names the secret after the volume ID).
pub fn secret_name(key_id: &str) -> Result<&str> {
    let ok = !key_id.is_empty()
        && key_id.len() <= MAX_SECRET_NAME
        && key_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(key_id)
    } else {
        Err(KmsError::Other(format!(
            "volume {key_id:?} cannot be an Azure Key Vault secret name (1 to {MAX_SECRET_NAME} letters, digits and '-'): azure-kv keeps each passphrase in a secret named after its volume ID"
        )))
    }
}

/// Client and tenant IDs: GUIDs, or a tenant's domain name.
fn check_id(option: &str, v: &str) -> Result<()> {
    check_identifier(
        option,
        v,
        b"",
        "must be an ID (a GUID, or the tenant's domain name)",
    )
}

fn check_scope(s: &str) -> Result<()> {
    let ok = s.starts_with("https://")
        && s.len() <= 512
        && s.bytes().all(|b| b.is_ascii_graphic() && b != b'&');
    if ok {
        Ok(())
    } else {
        Err(invalid_config(
            "AZURE_VAULT_SCOPE",
            "must be a scope such as https://vault.azure.net/.default",
        ))
    }
}

fn check_api_version(v: &str) -> Result<()> {
    let (num, rest) = v.split_once('-').unwrap_or((v, ""));
    let ok = matches!(num.split_once('.'), Some((a, b)) if !a.is_empty() && !b.is_empty()
            && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit()))
        && (rest.is_empty() || rest == "preview");
    if ok {
        Ok(())
    } else {
        Err(invalid_config(
            "AZURE_API_VERSION",
            "must be a Key Vault api-version such as 7.4 or 7.6-preview",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: [(&str, &str); 3] = [
        ("AZURE_VAULT_URL", "https://kv-1.vault.azure.net/"),
        ("AZURE_CLIENT_ID", "11111111-2222-3333-4444-555555555555"),
        ("AZURE_TENANT_ID", "contoso.onmicrosoft.com"),
    ];

    fn parse(extra: &[(&str, &str)], drop: &[&str]) -> Result<AzureConfig> {
        let pairs = BASE
            .iter()
            .filter(|(k, _)| !drop.contains(k))
            .chain(extra)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut o = Options::new(pairs);
        let c = AzureConfig::from_options(&mut o)?;
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
    fn defaults_are_ceph_csis_and_the_public_clouds() {
        let c = parse(&[], &[]).unwrap();
        assert_eq!(c.vault_url, "https://kv-1.vault.azure.net");
        assert_eq!(c.cert, DEFAULT_SECRET);
        assert_eq!(
            c.token_url,
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(c.scope, PUBLIC_SCOPE);
        assert_eq!(
            c.vault("secrets/pvc-1"),
            "https://kv-1.vault.azure.net/secrets/pvc-1?api-version=7.4"
        );
        assert_eq!(c.algorithm, Algorithm::Rs256);
        assert_eq!(c.timeout_secs, 10);
    }

    #[test]
    fn sovereign_clouds_take_their_scope_from_the_vault_domain() {
        for (url, scope) in [
            (
                "https://kv.vault.azure.cn",
                "https://vault.azure.cn/.default",
            ),
            (
                "https://kv.vault.usgovcloudapi.net:443",
                "https://vault.usgovcloudapi.net/.default",
            ),
            ("https://KV.VAULT.AZURE.NET", PUBLIC_SCOPE),
            ("http://127.0.0.1:8443", PUBLIC_SCOPE),
        ] {
            assert_eq!(default_scope(url), scope, "{url}");
        }
        let c = parse(
            &[
                ("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us/"),
                ("AZURE_VAULT_SCOPE", "https://vault.example.test/.default"),
                ("AZURE_ASSERTION_ALGORITHM", "PS256"),
                ("AZURE_API_VERSION", "7.6-preview"),
            ],
            &[],
        )
        .unwrap();
        assert!(
            c.token_url
                .starts_with("https://login.microsoftonline.us/contoso")
        );
        assert_eq!(c.scope, "https://vault.example.test/.default");
        assert_eq!(c.algorithm, Algorithm::Ps256);
        assert!(c.vault("x").ends_with("api-version=7.6-preview"));
    }

    /// Options set, options removed, the option the error must name.
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a str);

    #[test]
    fn bad_options_are_named() {
        let table: &[Case] = &[
            (&[], &["AZURE_VAULT_URL"], "AZURE_VAULT_URL"),
            (&[], &["AZURE_CLIENT_ID"], "AZURE_CLIENT_ID"),
            (&[], &["AZURE_TENANT_ID"], "AZURE_TENANT_ID"),
            (
                &[("AZURE_VAULT_URL", "kv.vault.azure.net")],
                &["AZURE_VAULT_URL"],
                "AZURE_VAULT_URL",
            ),
            (
                &[("AZURE_TENANT_ID", "a/b")],
                &["AZURE_TENANT_ID"],
                "AZURE_TENANT_ID",
            ),
            (
                &[("AZURE_CLIENT_ID", "x y")],
                &["AZURE_CLIENT_ID"],
                "AZURE_CLIENT_ID",
            ),
            (
                &[("AZURE_AUTHORITY_HOST", "https://x/?p=1")],
                &[],
                "AZURE_AUTHORITY_HOST",
            ),
            (
                &[("AZURE_VAULT_SCOPE", "vault.azure.net")],
                &[],
                "AZURE_VAULT_SCOPE",
            ),
            (&[("AZURE_API_VERSION", "latest")], &[], "AZURE_API_VERSION"),
            (
                &[("AZURE_ASSERTION_ALGORITHM", "HS256")],
                &[],
                "AZURE_ASSERTION_ALGORITHM",
            ),
            (
                &[("AZURE_TIMEOUT_SECONDS", "0")],
                &[],
                "AZURE_TIMEOUT_SECONDS",
            ),
            (
                &[("AZURE_CERT_SECRETNAME", "s")],
                &[],
                "AZURE_CERT_SECRETNAME",
            ),
        ];
        for (extra, drop, option) in table {
            let e = parse(extra, drop).expect_err(&format!("{extra:?} accepted"));
            assert_eq!(option_of(e), *option, "{extra:?}");
        }
    }

    #[test]
    fn volume_ids_that_cannot_name_a_secret_are_refused_clearly() {
        assert!(secret_name("0001-0009-rook-ceph-0000000000000002-b0a2").is_ok());
        assert!(secret_name("kh-vol-0123456789abcdef0123456789abcdef").is_ok());
        for bad in ["", "pvc_1", "pvc.1", "a/b", &"x".repeat(128)] {
            let e = secret_name(bad).unwrap_err();
            let KmsError::Other(m) = e else {
                panic!("{e:?}")
            };
            assert!(
                m.contains("cannot be an Azure Key Vault secret name"),
                "{m}"
            );
        }
    }
}
