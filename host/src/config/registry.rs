//! The registration table: which plugin serves each `encryptionKMSType`,
//! which options name its endpoints, and which options name Secrets it may
//! read. Option names are exactly ceph-csi's and Rook's.
//!
//! A type not in this table is a third-party plugin: `<type>.wasm` in the
//! plugin directory, with endpoints only from `allowedHosts` and Secrets
//! only from `kmshostSecrets`.

/// An option naming a Secret the plugin may read.
#[derive(Debug, Clone, Copy)]
pub struct SecretOption {
    /// Option name (e.g. `IBM_KP_SECRET_NAME`).
    pub option: &'static str,
    /// Secret name used when the option is absent.
    pub default: Option<&'static str>,
}

/// An option naming an endpoint the plugin may reach.
#[derive(Debug, Clone, Copy)]
pub struct EndpointOption {
    /// Option name (e.g. `vaultAddress`).
    pub option: &'static str,
    /// Endpoint used when the option is absent.
    pub default: Option<&'static str>,
}

/// TLS options of a provider: which Secret option holds the CA and client
/// certificate, and the keys inside those Secrets.
#[derive(Debug, Clone, Copy)]
pub struct TlsOptions {
    /// Options naming a Secret with the CA bundle, and the key in it.
    pub ca: &'static [(&'static str, &'static str)],
    /// Options naming a Secret with the client certificate, and the key.
    pub client_cert: &'static [(&'static str, &'static str)],
    /// Options naming a Secret with the client key, and the key.
    pub client_key: &'static [(&'static str, &'static str)],
    /// Options overriding the TLS server name.
    pub server_name: &'static [&'static str],
    /// Options that, set to `false`, disable verification.
    pub verify: &'static [&'static str],
    /// Options that, set to `true`, disable verification.
    pub skip_verify: &'static [&'static str],
}

const NO_TLS: TlsOptions = TlsOptions {
    ca: &[],
    client_cert: &[],
    client_key: &[],
    server_name: &[],
    verify: &[],
    skip_verify: &[],
};

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct Registration {
    /// `encryptionKMSType` values served.
    pub types: &'static [&'static str],
    /// Plugin name: embedded, or `<plugin>.wasm` in the plugin directory.
    pub plugin: &'static str,
    /// Endpoint options (their hosts form the allow-list).
    pub endpoints: &'static [EndpointOption],
    /// Secret-naming options (granted to the kmsID).
    pub secrets: &'static [SecretOption],
    /// Whether the driver's service-account token is granted (as
    /// [`crate::secrets::SERVICE_ACCOUNT_SECRET`]).
    pub service_account: bool,
    /// The option giving the namespace of the Secrets, if any.
    pub secret_namespace_option: Option<&'static str>,
    /// TLS options.
    pub tls: TlsOptions,
}

/// The first-party providers.
pub static REGISTRY: &[Registration] = &[
    Registration {
        types: &["metadata"],
        plugin: "secret",
        endpoints: &[],
        secrets: &[SecretOption {
            option: "secretName",
            default: None,
        }],
        service_account: false,
        secret_namespace_option: Some("secretNamespace"),
        tls: NO_TLS,
    },
    Registration {
        types: &["kubernetes-secret"],
        plugin: "secret",
        endpoints: &[EndpointOption {
            option: "kubernetesAPIAddress",
            default: None,
        }],
        secrets: &[],
        service_account: true,
        secret_namespace_option: None,
        tls: TlsOptions {
            ca: &[("kubernetesCAFromSecret", "ca.crt")],
            client_cert: &[],
            client_key: &[],
            server_name: &[],
            verify: &[],
            skip_verify: &[],
        },
    },
    Registration {
        types: &["vault", "vaulttokens", "vaulttenantsa"],
        plugin: "vault",
        endpoints: &[
            EndpointOption {
                option: "vaultAddress",
                default: None,
            },
            EndpointOption {
                option: "VAULT_ADDR",
                default: None,
            },
        ],
        secrets: &[
            // The TLS Secrets (CA, client certificate and key) are the
            // host's: see `tls` below. They are never granted.
            SecretOption {
                option: "tokenSecretName",
                default: None,
            },
        ],
        service_account: true,
        secret_namespace_option: None,
        tls: TlsOptions {
            ca: &[("vaultCAFromSecret", "cert"), ("VAULT_CACERT", "cert")],
            client_cert: &[
                ("vaultClientCertFromSecret", "cert"),
                ("VAULT_CLIENT_CERT", "cert"),
            ],
            client_key: &[
                ("vaultClientCertKeyFromSecret", "key"),
                ("VAULT_CLIENT_KEY", "key"),
            ],
            server_name: &["vaultTLSServerName", "VAULT_TLS_SERVER_NAME"],
            verify: &["vaultCAVerify"],
            skip_verify: &["VAULT_SKIP_VERIFY"],
        },
    },
    Registration {
        types: &["ibmkeyprotect"],
        plugin: "keyprotect",
        endpoints: &[
            EndpointOption {
                option: "IBM_KP_BASE_URL",
                default: None,
            },
            EndpointOption {
                option: "IBM_BASE_URL",
                default: None,
            },
            EndpointOption {
                option: "IBM_KP_TOKEN_URL",
                default: Some("https://iam.cloud.ibm.com/oidc/token"),
            },
            EndpointOption {
                option: "IBM_TOKEN_URL",
                default: None,
            },
        ],
        secrets: &[SecretOption {
            option: "IBM_KP_SECRET_NAME",
            default: Some("ceph-csi-kp-credentials"),
        }],
        service_account: false,
        secret_namespace_option: None,
        tls: NO_TLS,
    },
    Registration {
        types: &["azure-kv"],
        plugin: "azure",
        endpoints: &[
            EndpointOption {
                option: "AZURE_VAULT_URL",
                default: None,
            },
            EndpointOption {
                option: "AZURE_AUTHORITY_HOST",
                default: Some("https://login.microsoftonline.com"),
            },
        ],
        secrets: &[SecretOption {
            option: "AZURE_CERT_SECRET_NAME",
            default: Some("ceph-csi-azure-credentials"),
        }],
        service_account: false,
        secret_namespace_option: None,
        tls: NO_TLS,
    },
    Registration {
        types: &["kmip"],
        plugin: "kmip",
        endpoints: &[EndpointOption {
            option: "KMIP_ENDPOINT",
            default: None,
        }],
        secrets: &[SecretOption {
            option: "KMIP_SECRET_NAME",
            default: Some("ceph-csi-kmip-credentials"),
        }],
        service_account: false,
        secret_namespace_option: None,
        tls: NO_TLS,
    },
];

/// The registration serving `kms_type`, if first-party.
pub fn lookup(kms_type: &str) -> Option<&'static Registration> {
    REGISTRY.iter().find(|r| r.types.contains(&kms_type))
}

/// Options the host consumes itself; they are not passed to the plugin.
pub const HOST_OPTIONS: &[&str] = &[
    "KMS_PROVIDER",
    "allowedHosts",
    "kmshostPlugin",
    "kmshostPluginSHA256",
    "kmshostSecrets",
    "kmshostSecretNamespace",
    "kmshostMemoryLimitMiB",
    "kmshostTimeoutMs",
    "kmshostMaxResponseBytes",
    "kmshostInstanceReuse",
    "kmshostMaxConcurrency",
    "kmshostCAFromSecret",
    "kmshostClientCertFromSecret",
    "kmshostTLSServerName",
    "kmshostInsecureSkipVerify",
];

/// The host option nearest to `typo` (fewest single-character edits), to
/// name in the error an admin sees.
pub fn closest_host_option(typo: &str) -> &'static str {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    }
    HOST_OPTIONS
        .iter()
        .filter(|o| o.starts_with("kmshost"))
        .min_by_key(|o| distance(&typo.to_ascii_lowercase(), &o.to_ascii_lowercase()))
        .copied()
        .unwrap_or("kmshostSecrets")
}

/// TLS options every type accepts (kmshost's own): a CA Secret (key
/// `ca.crt`), a kubernetes.io/tls client-certificate Secret (`tls.crt`,
/// `tls.key`), a server-name override and an explicit skip-verify.
pub const GENERIC_TLS: TlsOptions = TlsOptions {
    ca: &[("kmshostCAFromSecret", "ca.crt")],
    client_cert: &[("kmshostClientCertFromSecret", "tls.crt")],
    client_key: &[("kmshostClientCertFromSecret", "tls.key")],
    server_name: &["kmshostTLSServerName"],
    verify: &[],
    skip_verify: &["kmshostInsecureSkipVerify"],
};
