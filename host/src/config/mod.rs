//! KMS configuration: ceph-csi's `config.json` (a JSON object keyed by
//! kmsID), the `csi-kms-connection-details` ConfigMap form (values are JSON
//! strings, or a mounted directory with one file per kmsID), and Rook's
//! `connectionDetails` (`KMS_PROVIDER` and Rook's option names) — turned into
//! a typed table of [`KmsEntry`]s.
//!
//! One kmsID's mistake never hides another's: [`KmsTable::get`] returns that
//! kmsID's own error, naming the option at fault.

pub mod registry;
mod source;
pub mod tenant;

pub use source::ConfigSource;

use crate::capability::allow_list::{AllowList, AllowedHost};
use crate::kms::{KmsError, KmsId};
use crate::secrets::{Grants, SERVICE_ACCOUNT_SECRET, SecretRef};
use registry::{GENERIC_TLS, HOST_OPTIONS, TlsOptions};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Host-wide settings that shape every kmsID.
#[derive(Debug, Clone)]
pub struct HostDefaults {
    /// Where third-party (and first-party, when not embedded) `.wasm`
    /// plugins are looked up.
    pub plugin_dir: Option<PathBuf>,
    /// The driver's namespace (`POD_NAMESPACE`).
    pub namespace: String,
    /// The Kubernetes API address, in-cluster.
    pub kube_api_address: Option<String>,
    /// Default limits.
    pub limits: Limits,
}

impl Default for HostDefaults {
    fn default() -> Self {
        HostDefaults {
            plugin_dir: None,
            namespace: "default".into(),
            kube_api_address: None,
            limits: Limits::default(),
        }
    }
}

/// Per-kmsID sandbox limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Maximum linear memory of one plugin instance (`kmshostMemoryLimitMiB`).
    pub memory_bytes: usize,
    /// Deadline of one call, CPU and waiting included (`kmshostTimeoutMs`).
    pub timeout: Duration,
    /// Largest HTTP response body a plugin may receive
    /// (`kmshostMaxResponseBytes`).
    pub max_response_bytes: usize,
    /// Keep instances warm between calls (`kmshostInstanceReuse`).
    pub instance_reuse: bool,
    /// Most calls of one kmsID (all its tenants together) in plugin
    /// instances at once (`kmshostMaxConcurrency`); more wait, within their
    /// deadline. Below the sandbox's instance budget, so one busy kmsID
    /// never takes every slot.
    pub max_concurrency: u32,
}

/// Default of `kmshostMaxConcurrency`.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 16;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 128 << 20,
            timeout: Duration::from_secs(30),
            max_response_bytes: 1 << 20,
            instance_reuse: true,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
        }
    }
}

/// Where a kmsID's plugin comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    /// Built into the kmshost binary.
    Embedded(&'static str),
    /// A `.wasm` component file.
    File(PathBuf),
}

impl std::fmt::Display for PluginSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginSource::Embedded(n) => write!(f, "{n} (embedded)"),
            PluginSource::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A Secret key holding TLS material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretKeyRef {
    /// The Secret.
    pub secret: SecretRef,
    /// The key inside it.
    pub key: String,
}

/// Where a kmsID's TLS material comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsRefs {
    /// CA bundle.
    pub ca: Option<SecretKeyRef>,
    /// Client certificate.
    pub client_cert: Option<SecretKeyRef>,
    /// Client key.
    pub client_key: Option<SecretKeyRef>,
    /// Server-name override.
    pub server_name: Option<String>,
    /// Verification disabled by the admin.
    pub insecure_skip_verify: bool,
}

/// One kmsID, validated.
#[derive(Debug, Clone)]
pub struct KmsEntry {
    /// The kmsID.
    pub kms_id: KmsId,
    /// `encryptionKMSType` (or Rook's `KMS_PROVIDER`).
    pub kms_type: String,
    /// The plugin serving it.
    pub plugin: PluginSource,
    /// The plugin's pinned sha256 (`kmshostPluginSHA256`), if any.
    pub pinned_sha256: Option<[u8; 32]>,
    /// Options passed to the plugin's `configure`, host options removed,
    /// defaults of endpoint and Secret options filled in.
    pub plugin_options: Vec<(String, String)>,
    /// Where the plugin may connect.
    pub allow: AllowList,
    /// Which Secrets it may read.
    pub grants: Grants,
    /// TLS material for its connections.
    pub tls: TlsRefs,
    /// Sandbox limits.
    pub limits: Limits,
    /// Hash of the entry as configured: a change means a new runtime.
    pub fingerprint: [u8; 32],
}

/// The parsed configuration: each kmsID's entry, or its own error.
#[derive(Debug, Default)]
pub struct KmsTable {
    entries: BTreeMap<String, Result<Arc<KmsEntry>, Arc<KmsError>>>,
    /// Each kmsID's options as configured (for per-tenant entries).
    raw: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    defaults: Option<HostDefaults>,
}

impl KmsTable {
    /// Parses a `config.json` text.
    pub fn parse(text: &str, defaults: &HostDefaults) -> Result<KmsTable, KmsError> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| KmsError::Config(format!("config is not valid JSON: {e}")))?;
        let obj = value.as_object().ok_or_else(|| {
            KmsError::Config("config must be a JSON object keyed by kmsID".into())
        })?;
        let mut entries = BTreeMap::new();
        let mut raw = BTreeMap::new();
        for (id, v) in obj {
            if let Ok(o) = decode_object(id, v) {
                raw.insert(id.clone(), o);
            }
            entries.insert(
                id.clone(),
                parse_entry(id, v, defaults).map(Arc::new).map_err(Arc::new),
            );
        }
        Ok(KmsTable {
            entries,
            raw,
            defaults: Some(defaults.clone()),
        })
    }

    /// The entry for `kms_id`, or the reason it cannot be used.
    pub fn get(&self, kms_id: &str) -> Result<Arc<KmsEntry>, KmsError> {
        match self.entries.get(kms_id) {
            None => Err(KmsError::UnknownKmsId(kms_id.to_string())),
            Some(Ok(e)) => Ok(e.clone()),
            Some(Err(e)) => Err(clone_error(e)),
        }
    }

    /// All kmsIDs, each with its entry or error.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Result<&Arc<KmsEntry>, &KmsError>)> {
        self.entries
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_ref().map_err(|e| e.as_ref())))
    }
}

fn clone_error(e: &KmsError) -> KmsError {
    match e {
        KmsError::InvalidConfig {
            kms_id,
            option,
            message,
        } => KmsError::InvalidConfig {
            kms_id: kms_id.clone(),
            option: option.clone(),
            message: message.clone(),
        },
        KmsError::PluginLoad { kms_id, message } => KmsError::PluginLoad {
            kms_id: kms_id.clone(),
            message: message.clone(),
        },
        other => KmsError::Config(other.to_string()),
    }
}

fn option_string(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A kmsID's options object; in the ConfigMap form the value is a JSON
/// document in a string.
fn decode_object(
    id: &str,
    value: &serde_json::Value,
) -> Result<serde_json::Map<String, serde_json::Value>, KmsError> {
    let parsed;
    let value = match value {
        serde_json::Value::String(s) => {
            parsed = serde_json::from_str::<serde_json::Value>(s).map_err(|e| {
                KmsError::Config(format!("kmsID {id}: value is not a JSON object: {e}"))
            })?;
            &parsed
        }
        v => v,
    };
    value.as_object().cloned().ok_or_else(|| {
        KmsError::Config(format!(
            "kmsID {id}: value must be a JSON object of options"
        ))
    })
}

fn parse_entry(
    id: &str,
    value: &serde_json::Value,
    defaults: &HostDefaults,
) -> Result<KmsEntry, KmsError> {
    let kms_id = KmsId::new(id).map_err(|e| KmsError::Config(format!("kmsID {id:?}: {e}")))?;
    let invalid = |option: &str, message: String| KmsError::InvalidConfig {
        kms_id: kms_id.clone(),
        option: option.to_string(),
        message,
    };
    let obj = &decode_object(id, value)?;
    let mut opts: BTreeMap<String, String> = obj
        .iter()
        .map(|(k, v)| (k.clone(), option_string(v)))
        .collect();
    let fingerprint: [u8; 32] = Sha256::digest(serde_json::to_vec(obj).unwrap_or_default()).into();

    let kms_type = match (opts.get("encryptionKMSType"), opts.get("KMS_PROVIDER")) {
        (Some(t), _) if !t.is_empty() => t.clone(),
        (_, Some(t)) if !t.is_empty() => t.clone(),
        _ => {
            return Err(invalid(
                "encryptionKMSType",
                "is required (or Rook's KMS_PROVIDER)".into(),
            ));
        }
    };
    if !kms_type
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid(
            "encryptionKMSType",
            format!("{kms_type:?} is not a valid type name"),
        ));
    }
    opts.insert("encryptionKMSType".into(), kms_type.clone());
    let reg = registry::lookup(&kms_type);
    // Every `kmshost*` option is the host's: one it does not know is a typo
    // of one it does, never an option for the plugin.
    if let Some(typo) = opts
        .keys()
        .find(|k| k.starts_with("kmshost") && !HOST_OPTIONS.contains(&k.as_str()))
    {
        return Err(invalid(
            typo,
            format!(
                "is not a kmshost option (did you mean {}?)",
                registry::closest_host_option(typo)
            ),
        ));
    }

    // Limits.
    let mut limits = defaults.limits.clone();
    if let Some(v) = opts.get("kmshostMemoryLimitMiB") {
        let mib: usize = v
            .parse()
            .ok()
            .filter(|m| (1..=4096).contains(m))
            .ok_or_else(|| {
                invalid(
                    "kmshostMemoryLimitMiB",
                    format!("must be 1..=4096, not {v:?}"),
                )
            })?;
        limits.memory_bytes = mib << 20;
    }
    if let Some(v) = opts.get("kmshostTimeoutMs") {
        let ms: u64 = v
            .parse()
            .ok()
            .filter(|m| (1..=600_000).contains(m))
            .ok_or_else(|| invalid("kmshostTimeoutMs", format!("must be 1..=600000, not {v:?}")))?;
        limits.timeout = Duration::from_millis(ms);
    }
    if let Some(v) = opts.get("kmshostMaxResponseBytes") {
        limits.max_response_bytes = v
            .parse()
            .ok()
            .filter(|m| (1..=(64 << 20)).contains(m))
            .ok_or_else(|| {
                invalid(
                    "kmshostMaxResponseBytes",
                    format!("must be 1..=67108864, not {v:?}"),
                )
            })?;
    }
    if let Some(v) = opts.get("kmshostMaxConcurrency") {
        limits.max_concurrency = v
            .parse()
            .ok()
            .filter(|n| (1..=1024).contains(n))
            .ok_or_else(|| {
                invalid(
                    "kmshostMaxConcurrency",
                    format!("must be 1..=1024, not {v:?}"),
                )
            })?;
    }
    if let Some(v) = opts.get("kmshostInstanceReuse") {
        limits.instance_reuse = parse_bool(v).ok_or_else(|| {
            invalid(
                "kmshostInstanceReuse",
                format!("must be true or false, not {v:?}"),
            )
        })?;
    }

    // Plugin.
    let plugin = if let Some(path) = opts.get("kmshostPlugin").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(path);
        let p = if p.is_relative() {
            match &defaults.plugin_dir {
                Some(d) => d.join(p),
                None => p,
            }
        } else {
            p
        };
        if !p.is_file() {
            return Err(invalid(
                "kmshostPlugin",
                format!("plugin file {} does not exist", p.display()),
            ));
        }
        PluginSource::File(p)
    } else {
        let name = reg.map(|r| r.plugin).unwrap_or(kms_type.as_str());
        let file = defaults
            .plugin_dir
            .as_ref()
            .map(|d| d.join(format!("{name}.wasm")));
        match (crate::plugins::embedded(name), file) {
            (_, Some(f)) if f.is_file() => PluginSource::File(f),
            (Some((n, _)), _) => PluginSource::Embedded(n),
            (None, f) => {
                let where_ = match f {
                    Some(f) => format!("no plugin file {}", f.display()),
                    None => "no plugin directory is configured".to_string(),
                };
                let what = if reg.is_some() {
                    format!("plugin {name:?} is not built into this kmshost and there is {where_}")
                } else {
                    format!(
                        "unknown type {kms_type:?}: {where_} (third-party plugins are loaded as <type>.wasm)"
                    )
                };
                return Err(invalid("encryptionKMSType", what));
            }
        }
    };
    let pinned_sha256 = match opts.get("kmshostPluginSHA256").filter(|s| !s.is_empty()) {
        None => None,
        Some(h) => {
            let bytes = hex::decode(h.trim().to_ascii_lowercase())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| invalid("kmshostPluginSHA256", "must be 64 hex digits".into()))?;
            Some(bytes)
        }
    };

    // Endpoints → allow-list (plus explicit allowedHosts).
    let mut allow = match opts.get("allowedHosts") {
        Some(list) => {
            AllowList::parse_list(list).map_err(|e| invalid("allowedHosts", e.to_string()))?
        }
        None => AllowList::none(),
    };
    let mut injected: Vec<(String, String)> = Vec::new();
    if let Some(reg) = reg {
        for ep in reg.endpoints {
            let value = match opts.get(ep.option).filter(|v| !v.is_empty()) {
                Some(v) => Some(v.clone()),
                None => {
                    let d = if ep.option == "kubernetesAPIAddress" {
                        defaults.kube_api_address.clone()
                    } else {
                        ep.default.map(str::to_string)
                    };
                    if let Some(d) = &d {
                        injected.push((ep.option.to_string(), d.clone()));
                    }
                    d
                }
            };
            if let Some(v) = value {
                let entry = AllowedHost::parse(&v)
                    .map_err(|e| invalid(ep.option, format!("is not a usable endpoint: {e}")))?;
                allow.push(entry);
            }
        }
        if kms_type == "kubernetes-secret" && !opts.contains_key("secretNamespace") {
            injected.push(("secretNamespace".into(), defaults.namespace.clone()));
        }
    }

    // Secret grants.
    let mut grants = Grants::none();
    // `kmshostSecretNamespace`: where Secrets named without a namespace
    // live (set by the host for per-tenant entries).
    let default_ns = opts
        .get("kmshostSecretNamespace")
        .filter(|v| !v.is_empty())
        .cloned();
    let ns_for = |name: &str| -> Result<SecretRef, KmsError> {
        secret_ref(name, default_ns.clone()).map_err(|m| invalid("kmshostSecrets", m))
    };
    if let Some(reg) = reg {
        let ns = reg
            .secret_namespace_option
            .and_then(|o| opts.get(o))
            .filter(|v| !v.is_empty())
            .cloned()
            .or_else(|| default_ns.clone());
        for so in reg.secrets {
            let name = match opts.get(so.option).filter(|v| !v.is_empty()) {
                Some(v) => Some(v.clone()),
                None => {
                    if let Some(d) = so.default {
                        injected.push((so.option.to_string(), d.to_string()));
                    }
                    so.default.map(str::to_string)
                }
            };
            if let Some(name) = name {
                grants.grant(secret_ref(&name, ns.clone()).map_err(|m| invalid(so.option, m))?);
            } else if so.option == "secretName" {
                return Err(invalid("secretName", "is required".into()));
            }
        }
        if reg.service_account {
            grants.grant(SecretRef {
                namespace: None,
                name: SERVICE_ACCOUNT_SECRET.into(),
            });
        }
    }
    if let Some(list) = opts.get("kmshostSecrets") {
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            grants.grant(ns_for(name)?);
        }
    }

    // TLS: read by the host from the same namespace as every other Secret
    // of the entry (a tenant's own for per-tenant entries), and never
    // readable by the plugin, whatever else grants them.
    let tls_opts: &TlsOptions = reg.map(|r| &r.tls).unwrap_or(&GENERIC_TLS);
    let mut tls = resolve_tls(&opts, tls_opts, &kms_id, &default_ns)?;
    let generic = resolve_tls(&opts, &GENERIC_TLS, &kms_id, &default_ns)?;
    tls.ca = tls.ca.or(generic.ca);
    tls.client_cert = tls.client_cert.or(generic.client_cert);
    tls.client_key = tls.client_key.or(generic.client_key);
    tls.server_name = tls.server_name.or(generic.server_name);
    tls.insecure_skip_verify |= generic.insecure_skip_verify;
    for r in [&tls.ca, &tls.client_cert, &tls.client_key]
        .into_iter()
        .flatten()
    {
        grants.withhold(&r.secret);
    }

    let mut plugin_options: Vec<(String, String)> = opts
        .into_iter()
        .filter(|(k, _)| !HOST_OPTIONS.contains(&k.as_str()))
        .collect();
    plugin_options.extend(injected);
    plugin_options.sort();
    plugin_options.dedup_by(|a, b| a.0 == b.0);

    Ok(KmsEntry {
        kms_id,
        kms_type,
        plugin,
        pinned_sha256,
        plugin_options,
        allow,
        grants,
        tls,
        limits,
        fingerprint,
    })
}

fn resolve_tls(
    opts: &BTreeMap<String, String>,
    t: &TlsOptions,
    kms_id: &KmsId,
    namespace: &Option<String>,
) -> Result<TlsRefs, KmsError> {
    let pick = |list: &[(&str, &str)]| -> Result<Option<SecretKeyRef>, KmsError> {
        for (option, key) in list {
            if let Some(name) = opts.get(*option).filter(|v| !v.is_empty()) {
                let secret = secret_ref(name, namespace.clone()).map_err(|message| {
                    KmsError::InvalidConfig {
                        kms_id: kms_id.clone(),
                        option: option.to_string(),
                        message,
                    }
                })?;
                return Ok(Some(SecretKeyRef {
                    secret,
                    key: key.to_string(),
                }));
            }
        }
        Ok(None)
    };
    let mut skip = false;
    for o in t.verify {
        if let Some(v) = opts.get(*o) {
            skip |= !parse_bool(v).ok_or_else(|| KmsError::InvalidConfig {
                kms_id: kms_id.clone(),
                option: o.to_string(),
                message: format!("must be true or false, not {v:?}"),
            })?;
        }
    }
    for o in t.skip_verify {
        if let Some(v) = opts.get(*o) {
            skip |= parse_bool(v).ok_or_else(|| KmsError::InvalidConfig {
                kms_id: kms_id.clone(),
                option: o.to_string(),
                message: format!("must be true or false, not {v:?}"),
            })?;
        }
    }
    Ok(TlsRefs {
        ca: pick(t.ca)?,
        client_cert: pick(t.client_cert)?,
        client_key: pick(t.client_key)?,
        server_name: t
            .server_name
            .iter()
            .find_map(|o| opts.get(*o).filter(|v| !v.is_empty()).cloned()),
        insecure_skip_verify: skip,
    })
}

/// Parses `name` or `namespace/name` into a reference, validating both as
/// Kubernetes object names.
fn secret_ref(raw: &str, namespace: Option<String>) -> Result<SecretRef, String> {
    let (ns, name) = match raw.split_once('/') {
        Some((ns, name)) => (Some(ns.to_string()), name.to_string()),
        None => (namespace, raw.to_string()),
    };
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !s.starts_with(['-', '.'])
            && s != ".."
    };
    if !valid(&name) || ns.as_deref().is_some_and(|n| !valid(n)) {
        return Err(format!("{raw:?} is not a valid Secret name"));
    }
    Ok(SecretRef {
        namespace: ns,
        name,
    })
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}
