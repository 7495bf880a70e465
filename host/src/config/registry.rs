//! What the host itself knows of plugins: which plugin serves each
//! ceph-csi/Rook `encryptionKMSType`, the host's own options, and the
//! generic TLS options every type accepts. What each plugin takes is in
//! its manifest (`crate::manifest`).

/// TLS options: which options name the Secrets with the CA bundle and the
/// client certificate (and the key inside each), the server-name override,
/// and the switches that disable verification. Built from a plugin's
/// manifest (its `tls-*` options), or [`GENERIC_TLS`].
#[derive(Debug, Clone, Default)]
pub struct TlsOptions<'a> {
    /// Options naming a Secret with the CA bundle, and the key in it.
    pub ca: Vec<(&'a str, &'a str)>,
    /// Options naming a Secret with the client certificate, and the key.
    pub client_cert: Vec<(&'a str, &'a str)>,
    /// Options naming a Secret with the client key, and the key.
    pub client_key: Vec<(&'a str, &'a str)>,
    /// Options overriding the TLS server name.
    pub server_name: Vec<&'a str>,
    /// Options that, set to `false`, disable verification.
    pub verify: Vec<&'a str>,
    /// Options that, set to `true`, disable verification.
    pub skip_verify: Vec<&'a str>,
}

/// Which plugin serves each ceph-csi/Rook `encryptionKMSType`, when it is
/// not a plugin of the type's own name. Everything else a plugin declares
/// (options, endpoints, Secrets, capabilities) is in its manifest.
pub static TYPES: &[(&[&str], &str)] = &[
    (&["metadata", "kubernetes-secret"], "secret"),
    (&["vault", "vaulttokens", "vaulttenantsa"], "vault"),
    (&["ibmkeyprotect"], "keyprotect"),
    (&["azure-kv"], "azure"),
    (&["kmip"], "kmip"),
];

/// The plugin serving `kms_type`: from [`TYPES`], else the type's own name
/// (a third-party plugin, `<type>.wasm`).
pub fn plugin_for(kms_type: &str) -> &str {
    TYPES
        .iter()
        .find(|(types, _)| types.contains(&kms_type))
        .map(|(_, p)| *p)
        .unwrap_or(kms_type)
}

/// Whether `kms_type` is one of ceph-csi's or Rook's (served first-party).
pub fn is_first_party(kms_type: &str) -> bool {
    TYPES.iter().any(|(types, _)| types.contains(&kms_type))
}

/// Options the host consumes itself; they are not passed to the plugin.
/// Besides these, every option starting with `kmshost` is the host's (an
/// unknown one is a typo), and so are a manifest's `tls-*` options.
pub const HOST_OPTIONS: &[&str] = &[
    "KMS_PROVIDER",
    "allowedHosts",
    "kmshostPlugin",
    "kmshostPluginSHA256",
    "kmshostPluginPublicKey",
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
    nearest(
        typo,
        HOST_OPTIONS
            .iter()
            .copied()
            .filter(|o| o.starts_with("kmshost")),
    )
    .unwrap_or("kmshostSecrets")
}

/// The candidate nearest to `typo`, ignoring case.
pub fn nearest<'a>(typo: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let typo = typo.to_ascii_lowercase();
    candidates.min_by_key(|c| edit_distance(&typo, &c.to_ascii_lowercase()))
}

/// A candidate close enough to `typo` to be what the admin meant.
pub fn likely_meant<'a>(typo: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let typo_lc = typo.to_ascii_lowercase();
    nearest(typo, candidates)
        .filter(|c| edit_distance(&typo_lc, &c.to_ascii_lowercase()) <= (typo.len() / 4).max(2))
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
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

/// TLS options every type accepts (kmshost's own): a CA Secret (key
/// `ca.crt`), a kubernetes.io/tls client-certificate Secret (`tls.crt`,
/// `tls.key`), a server-name override and an explicit skip-verify.
pub fn generic_tls() -> TlsOptions<'static> {
    TlsOptions {
        ca: vec![("kmshostCAFromSecret", "ca.crt")],
        client_cert: vec![("kmshostClientCertFromSecret", "tls.crt")],
        client_key: vec![("kmshostClientCertFromSecret", "tls.key")],
        server_name: vec!["kmshostTLSServerName"],
        verify: vec![],
        skip_verify: vec!["kmshostInsecureSkipVerify"],
    }
}
