//! KMS configuration: ceph-csi's `config.json` (a JSON object keyed by
//! kmsID), the `csi-kms-connection-details` ConfigMap form (values are JSON
//! strings, or a mounted directory with one file per kmsID), and Rook's
//! `connectionDetails` (`KMS_PROVIDER` and Rook's option names) — turned into
//! a typed table of [`KmsEntry`]s.
//!
//! One kmsID's mistake never hides another's: [`KmsTable::get`] returns that
//! kmsID's own error, naming the option at fault.

mod error;
pub mod registry;
mod source;
pub mod tenant;

pub use error::ConfigError;
pub use source::ConfigSource;

use crate::capability::allow_list::{AllowList, AllowedHost};
use crate::manifest::{
    Capability, Declared, HostValue, Manifest, OptionKind, OptionSpec, parse_bool,
};
use crate::secrets::{Grants, SERVICE_ACCOUNT_SECRET, SecretRef};
use crate::types::KmsId;
use registry::{HOST_OPTIONS, TlsOptions};
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
    /// Where plugins pulled from OCI registries are kept (`<dir>/oci/`);
    /// `None` refuses `oci://` plugins.
    pub plugin_cache: Option<PathBuf>,
}

impl Default for HostDefaults {
    fn default() -> Self {
        HostDefaults {
            plugin_dir: None,
            namespace: "default".into(),
            kube_api_address: None,
            limits: Limits::default(),
            plugin_cache: None,
        }
    }
}

pub use crate::sandbox::{DEFAULT_MAX_CONCURRENCY, Limits};

/// Where a kmsID's plugin comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    /// Built into the kmshost binary.
    Embedded(&'static str),
    /// A `.wasm` component file.
    File(PathBuf),
    /// A signed plugin pulled from an OCI registry, verified and kept in
    /// the host's cache at `path`.
    Oci {
        /// The `oci://` reference, digest included.
        reference: String,
        /// The verified component in the cache.
        path: PathBuf,
    },
}

impl PluginSource {
    /// The component file, unless the plugin is built in.
    pub fn file(&self) -> Option<&std::path::Path> {
        match self {
            PluginSource::Embedded(_) => None,
            PluginSource::File(p) | PluginSource::Oci { path: p, .. } => Some(p),
        }
    }
}

impl std::fmt::Display for PluginSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginSource::Embedded(n) => write!(f, "{n} (embedded)"),
            PluginSource::File(p) => write!(f, "{}", p.display()),
            PluginSource::Oci { reference, .. } => write!(f, "{reference}"),
        }
    }
}

/// A Secret key holding TLS material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretKeyRef {
    /// The option that named it (for errors: the admin's own word).
    pub option: String,
    /// The Secret.
    pub secret: SecretRef,
    /// The key inside it.
    pub key: String,
    /// The Secret is also the plugin's (a `secret` option's `tls-keys`):
    /// only this key is withheld from it, not the whole Secret.
    pub key_only: bool,
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

/// A kmsID's HSM (PKCS#11) key material, all read and used by the host: the
/// module, the token, the PIN's Secret, and the key labels the plugin may
/// name through the `hsm` import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HsmRefs {
    /// The option naming the module (for errors).
    pub module_option: String,
    /// A module the host was started with (`--pkcs11-module NAME=PATH`).
    pub module: String,
    /// The token's label.
    pub token: String,
    /// The Secret key holding the user PIN.
    pub pin: SecretKeyRef,
    /// The key labels granted to the kmsID.
    pub keys: Vec<String>,
}

/// A certificate the kmsID's plugin may sign with (a `signing-cert`
/// option): read by the host, which holds its key; withheld from the
/// plugin's `secrets.get`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningRef {
    /// The option's value as written (or its default): the name the
    /// plugin signs by.
    pub name: String,
    /// The Secret key holding the PEM certificate and private key.
    pub cert: SecretKeyRef,
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
    /// HSM keys it may use (a manifest with `hsm-*` options).
    pub hsm: Option<HsmRefs>,
    /// Certificates it may sign with (a manifest with `signing-cert`
    /// options).
    pub signing: Vec<SigningRef>,
    /// Sandbox limits.
    pub limits: Limits,
    /// Hash of the entry as configured: a change means a new runtime.
    pub fingerprint: [u8; 32],
    /// The plugin's manifest, if it has one.
    pub manifest: Option<Arc<Manifest>>,
    /// The plugin file's (modification time, size) when the entry was
    /// read; `None` for an embedded plugin.
    pub plugin_state: Option<FileState>,
}

/// A file's (modification time, size): what tells that it changed.
pub type FileState = (std::time::SystemTime, u64);

impl KmsEntry {
    /// What the plugin declares this entry's type can do; `None` for a
    /// plugin without a manifest (the host then tries `wrap` and falls
    /// back to the key store on `unsupported`).
    pub fn capabilities(&self) -> Option<&[Capability]> {
        self.manifest.as_ref()?.capabilities(&self.kms_type)
    }
}

/// The parsed configuration: each kmsID's entry, or its own error.
#[derive(Debug, Default)]
pub struct KmsTable {
    entries: BTreeMap<String, Result<Arc<KmsEntry>, ConfigError>>,
    /// Every plugin file the entries were read from (or looked for), as it
    /// was then: a change means the table must be read again.
    plugin_files: Vec<(PathBuf, Option<FileState>)>,
    /// The same, per kmsID: a call checks only its own kmsID's files.
    entry_files: BTreeMap<String, Vec<(PathBuf, Option<FileState>)>>,
    /// Each kmsID's options as configured (for per-tenant entries).
    raw: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    defaults: Option<HostDefaults>,
}

impl KmsTable {
    /// Parses a `config.json` text.
    pub fn parse(text: &str, defaults: &HostDefaults) -> Result<KmsTable, ConfigError> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| ConfigError::Malformed(format!("config is not valid JSON: {e}")))?;
        let obj = value.as_object().ok_or_else(|| {
            ConfigError::Malformed("config must be a JSON object keyed by kmsID".into())
        })?;
        let mut entries = BTreeMap::new();
        let mut raw = BTreeMap::new();
        let mut touched = Vec::new();
        let mut entry_files = BTreeMap::new();
        for (id, v) in obj {
            if let Ok(o) = decode_object(id, v) {
                raw.insert(id.clone(), o);
            }
            let mut files = Vec::new();
            let entry = parse_entry_touching(id, v, defaults, &mut files);
            entries.insert(id.clone(), entry.map(Arc::new));
            files.dedup();
            let files: Vec<_> = files
                .into_iter()
                .map(|p| (p.clone(), file_state(&p)))
                .collect();
            touched.extend(files.iter().cloned());
            entry_files.insert(id.clone(), files);
        }
        touched.sort();
        touched.dedup_by(|a, b| a.0 == b.0);
        Ok(KmsTable {
            entries,
            plugin_files: touched,
            entry_files,
            raw,
            defaults: Some(defaults.clone()),
        })
    }

    /// Whether every plugin file the table was read from is as it was
    /// (same size and modification time, still there or still absent).
    pub fn plugins_unchanged(&self) -> bool {
        self.plugin_files
            .iter()
            .all(|(p, state)| file_state(p) == *state)
    }

    /// [`Self::plugins_unchanged`] for `kms_id`'s plugin files only (a
    /// call's check: one `stat` for a file plugin, none for an embedded
    /// one, however many kmsIDs are configured).
    pub fn entry_unchanged(&self, kms_id: &str) -> bool {
        self.entry_files
            .get(kms_id)
            .is_none_or(|files| files.iter().all(|(p, state)| file_state(p) == *state))
    }

    /// The entry for `kms_id`, or the reason it cannot be used.
    pub fn get(&self, kms_id: &str) -> Result<Arc<KmsEntry>, ConfigError> {
        match self.entries.get(kms_id) {
            None => Err(ConfigError::UnknownKmsId(kms_id.to_string())),
            Some(Ok(e)) => Ok(e.clone()),
            Some(Err(e)) => Err(e.clone()),
        }
    }

    /// All kmsIDs, each with its entry or error.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Result<&Arc<KmsEntry>, &ConfigError>)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_ref()))
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
) -> Result<serde_json::Map<String, serde_json::Value>, ConfigError> {
    let parsed;
    let value = match value {
        serde_json::Value::String(s) => {
            parsed = serde_json::from_str::<serde_json::Value>(s).map_err(|e| {
                ConfigError::Malformed(format!("kmsID {id}: value is not a JSON object: {e}"))
            })?;
            &parsed
        }
        v => v,
    };
    value.as_object().cloned().ok_or_else(|| {
        ConfigError::Malformed(format!(
            "kmsID {id}: value must be a JSON object of options"
        ))
    })
}

/// One kmsID's options while they are parsed: each method reads one
/// concern and names the option at fault.
struct Parsing<'a> {
    kms_id: KmsId,
    opts: BTreeMap<String, String>,
    defaults: &'a HostDefaults,
    kms_type: String,
    /// The plugin's manifest, once read.
    manifest: Option<Arc<Manifest>>,
    /// Whether the manifest may grant on its own word (defaults of
    /// endpoint and Secret options, the service-account token): only the
    /// plugins built into kmshost. A third-party manifest says which
    /// options name endpoints and Secrets; the admin writes the values.
    manifest_trusted: bool,
    /// Options the host fills in for the plugin (defaults of endpoint and
    /// Secret options, the driver's namespace).
    injected: Vec<(String, String)>,
}

/// A file's (modification time, size), if it exists.
fn file_state(p: &std::path::Path) -> Option<FileState> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn parse_entry(
    id: &str,
    value: &serde_json::Value,
    defaults: &HostDefaults,
) -> Result<KmsEntry, ConfigError> {
    parse_entry_touching(id, value, defaults, &mut Vec::new())
}

/// [`parse_entry`], noting in `touched` the plugin files it read or
/// looked for.
fn parse_entry_touching(
    id: &str,
    value: &serde_json::Value,
    defaults: &HostDefaults,
    touched: &mut Vec<PathBuf>,
) -> Result<KmsEntry, ConfigError> {
    let kms_id =
        KmsId::new(id).map_err(|e| ConfigError::Malformed(format!("kmsID {id:?}: {e}")))?;
    let obj = &decode_object(id, value)?;
    let opts: BTreeMap<String, String> = obj
        .iter()
        .map(|(k, v)| (k.clone(), option_string(v)))
        .collect();
    let fingerprint: [u8; 32] = Sha256::digest(serde_json::to_vec(obj).unwrap_or_default()).into();
    let mut p = Parsing {
        kms_id,
        opts,
        defaults,
        kms_type: String::new(),
        manifest: None,
        manifest_trusted: false,
        injected: Vec::new(),
    };
    p.kms_type()?;
    p.no_unknown_host_options()?;
    let limits = p.limits()?;
    let plugin = p.plugin(touched)?;
    let mut pinned_sha256 = p.pinned_sha256()?;
    let verified = p.signature(&plugin)?;
    pinned_sha256 = pinned_sha256.or(verified);
    (p.manifest, p.manifest_trusted) = p.manifest(&plugin)?;
    p.options_as_declared()?;
    let allow = p.allow_list()?;
    let (mut grants, default_ns) = p.grants()?;
    let tls = p.tls(&default_ns)?;
    let hsm = p.hsm(&default_ns)?;
    if let Some(h) = &hsm {
        grants.withhold(&h.pin.secret); // the PIN is the host's
    }
    let signing = p.signing(&default_ns)?;
    for s in &signing {
        grants.withhold(&s.cert.secret); // so is the certificate's key
    }
    // TLS Secrets are read by the host, never by the plugin, whatever else
    // grants them.
    for r in [&tls.ca, &tls.client_cert, &tls.client_key]
        .into_iter()
        .flatten()
    {
        match r.key_only {
            true => grants.withhold_key(&r.secret, &r.key),
            false => grants.withhold(&r.secret),
        }
    }
    let plugin_state = plugin.file().and_then(file_state);
    Ok(KmsEntry {
        plugin_options: p.plugin_options(),
        kms_id: p.kms_id,
        kms_type: p.kms_type,
        plugin,
        pinned_sha256,
        allow,
        grants,
        tls,
        hsm,
        signing,
        limits,
        fingerprint,
        manifest: p.manifest,
        plugin_state,
    })
}

/// Parses `v` as a number in `range`, or says which range.
fn number_in<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    v: &str,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, String> {
    v.parse()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| format!("must be {}..={}, not {v:?}", range.start(), range.end()))
}

impl Parsing<'_> {
    fn invalid(&self, option: &str, message: String) -> ConfigError {
        ConfigError::InvalidConfig {
            kms_id: self.kms_id.clone(),
            option: option.to_string(),
            message,
        }
    }

    /// The option's value, if set and not empty.
    fn set(&self, option: &str) -> Option<&String> {
        self.opts.get(option).filter(|v| !v.is_empty())
    }

    /// `encryptionKMSType` (or Rook's `KMS_PROVIDER`), and its registration.
    fn kms_type(&mut self) -> Result<(), ConfigError> {
        let Some(t) = self
            .set("encryptionKMSType")
            .or_else(|| self.set("KMS_PROVIDER"))
            .cloned()
        else {
            return Err(self.invalid(
                "encryptionKMSType",
                "is required (or Rook's KMS_PROVIDER)".into(),
            ));
        };
        if !t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(self.invalid(
                "encryptionKMSType",
                format!("{t:?} is not a valid type name"),
            ));
        }
        self.opts.insert("encryptionKMSType".into(), t.clone());
        self.kms_type = t;
        Ok(())
    }

    /// Every `kmshost*` option is the host's: one it does not know is a
    /// typo of one it does, never an option for the plugin.
    fn no_unknown_host_options(&self) -> Result<(), ConfigError> {
        match self
            .opts
            .keys()
            .find(|k| k.starts_with("kmshost") && !HOST_OPTIONS.contains(&k.as_str()))
        {
            Some(typo) => Err(self.invalid(
                typo,
                format!(
                    "is not a kmshost option (did you mean {}?)",
                    registry::closest_host_option(typo)
                ),
            )),
            None => Ok(()),
        }
    }

    /// The sandbox limits: the host's defaults, with the kmsID's own.
    fn limits(&self) -> Result<Limits, ConfigError> {
        let mut limits = self.defaults.limits.clone();
        if let Some(mib) = self.number::<usize>("kmshostMemoryLimitMiB", 1..=4096)? {
            limits.memory_bytes = mib << 20;
        }
        if let Some(ms) = self.number::<u64>("kmshostTimeoutMs", 1..=600_000)? {
            limits.timeout = Duration::from_millis(ms);
        }
        if let Some(n) = self.number("kmshostMaxResponseBytes", 1..=(64 << 20))? {
            limits.max_response_bytes = n;
        }
        if let Some(n) = self.number("kmshostMaxConcurrency", 1..=1024)? {
            limits.max_concurrency = n;
        }
        if let Some(v) = self.opts.get("kmshostInstanceReuse") {
            limits.instance_reuse = parse_bool(v).ok_or_else(|| {
                self.invalid(
                    "kmshostInstanceReuse",
                    format!("must be true or false, not {v:?}"),
                )
            })?;
        }
        Ok(limits)
    }

    /// A numeric option within `range`, if set.
    fn number<T>(
        &self,
        option: &str,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<Option<T>, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display,
    {
        self.opts
            .get(option)
            .map(|v| number_in(v, range).map_err(|m| self.invalid(option, m)))
            .transpose()
    }

    /// Where the plugin comes from: `kmshostPlugin` (a file, or an
    /// `oci://` reference), else `<name>.wasm` in the plugin directory,
    /// else the embedded plugin of that name.
    fn plugin(&self, touched: &mut Vec<PathBuf>) -> Result<PluginSource, ConfigError> {
        if let Some(reference) = self
            .set("kmshostPlugin")
            .filter(|p| p.starts_with("oci://"))
        {
            let source = self.oci(reference)?;
            touched.extend(source.file().map(PathBuf::from));
            return match source.file().is_some_and(|p| p.is_file()) {
                true => Ok(source),
                false => Err(ConfigError::PluginNotPulled {
                    kms_id: self.kms_id.clone(),
                    reference: source.to_string(),
                }),
            };
        }
        let found = self.plugin_file_or_embedded()?;
        touched.extend(found.file().map(PathBuf::from));
        Ok(found)
    }

    /// An `oci://` plugin: its reference pinned by digest, a trusted key to
    /// check its signature, and where the host keeps it once pulled.
    fn oci(&self, reference: &str) -> Result<PluginSource, ConfigError> {
        let r =
            crate::fetch::OciRef::parse(reference).map_err(|m| self.invalid("kmshostPlugin", m))?;
        if self.set("kmshostPluginPublicKey").is_none() {
            return Err(self.invalid(
                "kmshostPluginPublicKey",
                "is required for an oci:// plugin: a plugin from a registry runs only signed by a key you trust".into(),
            ));
        }
        let Some(cache) = &self.defaults.plugin_cache else {
            return Err(self.invalid(
                "kmshostPlugin",
                "oci:// plugins need the host's cache directory (--cache-dir)".into(),
            ));
        };
        Ok(PluginSource::Oci {
            path: r.cache_path(cache),
            reference: r.to_string(),
        })
    }

    /// `kmshostPluginPublicKey`: the plugin must carry a valid signature by
    /// this key. Returns the sha256 of the verified bytes, which the
    /// sandbox then insists on, so what runs is what was verified.
    fn signature(&self, plugin: &PluginSource) -> Result<Option<[u8; 32]>, ConfigError> {
        let Some(key) = self.set("kmshostPluginPublicKey") else {
            return Ok(None);
        };
        let key = crate::signing::TrustedKey::parse(key)
            .map_err(|e| self.invalid("kmshostPluginPublicKey", e.to_string()))?;
        let Some(path) = plugin.file() else {
            return Ok(None); // built into kmshost: nothing to verify
        };
        let bytes = std::fs::read(path)
            .map_err(|e| self.invalid("kmshostPlugin", format!("{}: {e}", path.display())))?;
        key.verify(&bytes)
            .map_err(|e| self.invalid("kmshostPlugin", format!("plugin {plugin}: {e}")))?;
        Ok(Some(Sha256::digest(&bytes).into()))
    }

    /// `kmshostPlugin` as a file, else `<name>.wasm` in the plugin
    /// directory, else the embedded plugin of that name.
    fn plugin_file_or_embedded(&self) -> Result<PluginSource, ConfigError> {
        if let Some(path) = self.set("kmshostPlugin") {
            let p = PathBuf::from(path);
            let p = match (&self.defaults.plugin_dir, p.is_relative()) {
                (Some(d), true) => d.join(p),
                _ => p,
            };
            if !p.is_file() {
                return Err(self.invalid(
                    "kmshostPlugin",
                    format!("plugin file {} does not exist", p.display()),
                ));
            }
            return Ok(PluginSource::File(p));
        }
        let name = registry::plugin_for(&self.kms_type);
        let file = self
            .defaults
            .plugin_dir
            .as_ref()
            .map(|d| d.join(format!("{name}.wasm")));
        match (crate::plugins::embedded(name), file) {
            (_, Some(f)) if f.is_file() => Ok(PluginSource::File(f)),
            (Some((n, _)), _) => Ok(PluginSource::Embedded(n)),
            (None, f) => {
                let where_ = match f {
                    Some(f) => format!("no plugin file {}", f.display()),
                    None => "no plugin directory is configured".to_string(),
                };
                let what = if registry::is_first_party(&self.kms_type) {
                    format!("plugin {name:?} is not built into this kmshost and there is {where_}")
                } else {
                    format!(
                        "unknown type {:?}: {where_} (third-party plugins are loaded as <type>.wasm)",
                        self.kms_type
                    )
                };
                Err(self.invalid("encryptionKMSType", what))
            }
        }
    }

    /// `kmshostPluginSHA256`: the exact plugin bytes, if pinned.
    fn pinned_sha256(&self) -> Result<Option<[u8; 32]>, ConfigError> {
        let Some(h) = self.set("kmshostPluginSHA256") else {
            return Ok(None);
        };
        hex::decode(h.trim().to_ascii_lowercase())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .map(Some)
            .ok_or_else(|| self.invalid("kmshostPluginSHA256", "must be 64 hex digits".into()))
    }

    /// The allow-list: `allowedHosts`, plus the value of every endpoint
    /// option the manifest declares.
    fn allow_list(&mut self) -> Result<AllowList, ConfigError> {
        let mut allow = match self.opts.get("allowedHosts") {
            Some(list) => AllowList::parse_list(list)
                .map_err(|e| self.invalid("allowedHosts", e.to_string()))?,
            None => AllowList::none(),
        };
        for (spec, value) in self.declared_values(OptionKind::Endpoint)? {
            // A value without a scheme gets the option's (KMIP's host:port
            // is a tls:// stream endpoint).
            let scheme = self
                .declared()
                .find(|o| o.spellings().any(|s| s == spec))
                .and_then(|o| o.scheme.as_deref());
            let value = match scheme {
                Some(s) if !value.contains("://") => format!("{s}://{value}"),
                _ => value,
            };
            let entry = AllowedHost::parse(&value)
                .map_err(|e| self.invalid(&spec, format!("is not a usable endpoint: {e}")))?;
            allow.push(entry);
        }
        Ok(allow)
    }

    /// The Secrets the plugin may read: the value of every Secret option
    /// the manifest declares (in the namespace its secret-namespace option
    /// names), the service-account token if its type asks for it, and
    /// `kmshostSecrets`. Also the namespace of Secrets named without one
    /// (`kmshostSecretNamespace`, set by the host for per-tenant entries).
    fn grants(&mut self) -> Result<(Grants, Option<String>), ConfigError> {
        let mut grants = Grants::none();
        let default_ns = self.set("kmshostSecretNamespace").cloned();
        let ns = self.secret_namespace(&default_ns)?;
        for (option, name) in self.declared_values(OptionKind::Secret)? {
            let r = secret_ref(&name, ns.clone()).map_err(|m| self.invalid(&option, m))?;
            grants.grant_as(&name, r);
        }
        let service_account = self.manifest.as_ref().is_some_and(|m| {
            m.types
                .get(&self.kms_type)
                .is_some_and(|t| t.service_account)
        });
        let listed = self
            .opts
            .get("kmshostSecrets")
            .is_some_and(|l| l.split(',').any(|s| s.trim() == SERVICE_ACCOUNT_SECRET));
        if service_account && !self.manifest_trusted && !listed {
            return Err(self.invalid(
                "kmshostSecrets",
                format!(
                    "type {} asks for the driver's service-account token, which a third-party plugin gets only when the admin grants it: add {SERVICE_ACCOUNT_SECRET} to kmshostSecrets",
                    self.kms_type
                ),
            ));
        }
        if service_account || listed {
            grants.grant(SecretRef {
                namespace: None,
                name: SERVICE_ACCOUNT_SECRET.into(),
            });
        }
        if let Some(list) = self.opts.get("kmshostSecrets") {
            let names = list.split(',').map(str::trim);
            for name in names.filter(|s| !s.is_empty() && *s != SERVICE_ACCOUNT_SECRET) {
                let r = secret_ref(name, default_ns.clone())
                    .map_err(|m| self.invalid("kmshostSecrets", m))?;
                grants.grant_as(name, r);
            }
        }
        Ok((grants, default_ns))
    }

    /// The plugin's manifest: read from the component (cached), and it
    /// must serve this entry's type. Also whether it is trusted to grant:
    /// a plugin built into kmshost, or a file with exactly its bytes.
    fn manifest(
        &self,
        plugin: &PluginSource,
    ) -> Result<(Option<Arc<Manifest>>, bool), ConfigError> {
        let embedded = |name: &str| {
            crate::plugins::embedded(name)
                .map(|(n, bytes)| crate::manifest::read_embedded(n, bytes))
        };
        let read = match plugin {
            PluginSource::Embedded(name) => embedded(name).unwrap_or(Ok(Declared {
                manifest: None,
                contract: None,
                sha256: [0; 32],
            })),
            PluginSource::File(path) | PluginSource::Oci { path, .. } => {
                crate::manifest::read_file(path)
            }
        };
        let option = if self.opts.contains_key("kmshostPlugin") {
            "kmshostPlugin"
        } else {
            "encryptionKMSType"
        };
        let declared = read.map_err(|e| self.invalid(option, format!("plugin {plugin}: {e}")))?;
        if let Some(m) = &declared.manifest
            && !m.types.contains_key(&self.kms_type)
        {
            let served: Vec<&str> = m.types.keys().map(String::as_str).collect();
            return Err(self.invalid(
                option,
                format!(
                    "plugin {plugin} serves type(s) {}, not {:?}",
                    served.join(", "),
                    self.kms_type
                ),
            ));
        }
        let trusted = crate::plugins::EMBEDDED
            .iter()
            .filter_map(|(n, _)| embedded(n)?.ok())
            .any(|e| e.sha256 == declared.sha256);
        Ok((declared.manifest, trusted))
    }

    /// The manifest's options for this entry's type (none without one).
    fn declared(&self) -> impl Iterator<Item = &OptionSpec> {
        self.manifest
            .iter()
            .flat_map(|m| m.options_for(&self.kms_type))
    }

    /// Every option checked against the manifest before the plugin runs:
    /// each one set is declared for this type (else it is named, with the
    /// declared option it most likely misspells), has a value of its kind,
    /// and every required one has a value. Defaults of endpoint and Secret
    /// options, and the host's defaults, are filled in for the plugin.
    fn options_as_declared(&mut self) -> Result<(), ConfigError> {
        let Some(m) = self.manifest.clone() else {
            return Ok(());
        };
        if let Some(k) = self.opts.keys().find(|k| !self.is_declared(k)) {
            return Err(self.invalid(k, self.undeclared(&m, k)));
        }
        for o in m.options_for(&self.kms_type) {
            if let Some((spelling, v)) = self.value_of(o)? {
                o.check_value(&v).map_err(|e| self.invalid(&spelling, e))?;
                continue;
            }
            let host_default = match o.default_from {
                Some(HostValue::KubernetesApi) => self.defaults.kube_api_address.clone(),
                Some(HostValue::DriverNamespace) => Some(self.defaults.namespace.clone()),
                None => None,
            };
            let host_acts_on = matches!(
                o.kind,
                OptionKind::Endpoint | OptionKind::Secret | OptionKind::SigningCert
            );
            let grants_itself = host_acts_on
                && (o.default.is_some() || o.default_from == Some(HostValue::KubernetesApi));
            if grants_itself && !self.manifest_trusted {
                let d = o.default.clone().or(host_default).unwrap_or_default();
                return Err(self.invalid(
                    &o.name,
                    format!(
                        "is not set, and a third-party plugin's default ({d:?}) is not {} on the plugin's word: add \"{}\": {d:?} to the entry",
                        if o.kind == OptionKind::Endpoint { "allowed" } else { "granted" },
                        o.name
                    ),
                ));
            }
            match (o.default.clone(), host_default) {
                (Some(d), _) if host_acts_on => self.injected.push((o.name.clone(), d)),
                (_, Some(d)) => self.injected.push((o.name.clone(), d)),
                (None, None) if o.required => {
                    return Err(self.invalid(&o.name, required_message(o)));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether option `k` is the host's or declared for this type.
    fn is_declared(&self, k: &str) -> bool {
        HOST_OPTIONS.contains(&k)
            || k == "encryptionKMSType"
            || k.starts_with("kmshost")
            || self.declared().any(|o| o.spellings().any(|s| s == k))
    }

    /// Why option `k`, not declared for this type, is refused.
    fn undeclared(&self, m: &Manifest, k: &str) -> String {
        if let Some(o) = m.options.iter().find(|o| o.spellings().any(|s| s == k)) {
            return format!(
                "applies to type(s) {} of plugin {}, not {}",
                o.types.join(", "),
                m.name,
                self.kms_type
            );
        }
        let spellings = self.declared().flat_map(|o| o.spellings());
        match registry::likely_meant(k, spellings) {
            Some(s) => format!(
                "is not an option of plugin {} (type {}); did you mean {s}?",
                m.name, self.kms_type
            ),
            None => format!(
                "is not an option of plugin {} (type {}); `kmshost plugin inspect` lists them",
                m.name, self.kms_type
            ),
        }
    }

    /// The value of a declared option under any of its spellings; two
    /// spellings set to different values are refused.
    fn value_of(&self, o: &OptionSpec) -> Result<Option<(String, String)>, ConfigError> {
        let mut found: Option<(&str, &String)> = None;
        for s in o.spellings() {
            let Some(v) = self.set(s) else { continue };
            match found {
                Some((first, fv)) if fv != v => {
                    return Err(self.invalid(
                        first,
                        format!("and {s} are both set, to different values; set one"),
                    ));
                }
                Some(_) => {}
                None => found = Some((s, v)),
            }
        }
        Ok(found.map(|(s, v)| (s.to_string(), v.clone())))
    }

    /// The value of declared option `o`, or the default the host filled
    /// in: (the spelling that set it, or the option's name; the value).
    fn value_or_default(&self, o: &OptionSpec) -> Result<Option<(String, String)>, ConfigError> {
        if let Some(v) = self.value_of(o)? {
            return Ok(Some(v));
        }
        Ok(self
            .injected
            .iter()
            .find(|(n, _)| *n == o.name)
            .map(|(n, v)| (n.clone(), v.clone())))
    }

    /// Each declared option of `kind` with its value, or the default the
    /// host filled in: (the spelling that set it, the value).
    fn declared_values(&self, kind: OptionKind) -> Result<Vec<(String, String)>, ConfigError> {
        let mut out = Vec::new();
        for o in self.declared().filter(|o| o.kind == kind) {
            out.extend(self.value_or_default(o)?);
        }
        Ok(out)
    }

    /// The manifest's `tls-*` options, as the TLS resolver takes them.
    fn declared_tls(&self) -> TlsOptions<'_> {
        let mut t = TlsOptions::default();
        for o in self.declared() {
            let key = o.key.as_deref().unwrap_or_default();
            for s in o.spellings() {
                match o.kind {
                    OptionKind::TlsCa => t.ca.push((s, key)),
                    OptionKind::TlsClientCert => t.client_cert.push((s, key)),
                    OptionKind::TlsClientKey => t.client_key.push((s, key)),
                    OptionKind::TlsServerName => t.server_name.push(s),
                    OptionKind::TlsVerify => t.verify.push(s),
                    OptionKind::TlsSkipVerify => t.skip_verify.push(s),
                    _ => {}
                }
            }
        }
        t
    }

    /// TLS material, read by the host from the same namespace as every
    /// other Secret of the entry (a tenant's own for per-tenant entries):
    /// the provider's own options first, then the generic ones.
    fn tls(&self, default_ns: &Option<String>) -> Result<TlsRefs, ConfigError> {
        let own = self.declared_tls();
        let mut tls = resolve_tls(&self.opts, &own, &self.kms_id, default_ns)?;
        let generic = resolve_tls(
            &self.opts,
            &registry::generic_tls(),
            &self.kms_id,
            default_ns,
        )?;
        let keyed = self.keyed_tls(default_ns)?;
        tls.ca = tls.ca.or(keyed.ca).or(generic.ca);
        tls.client_cert = tls
            .client_cert
            .or(keyed.client_cert)
            .or(generic.client_cert);
        tls.client_key = tls.client_key.or(keyed.client_key).or(generic.client_key);
        tls.server_name = tls.server_name.or(generic.server_name);
        tls.insecure_skip_verify |= generic.insecure_skip_verify;
        Ok(tls)
    }

    /// TLS material under `tls-keys` of the plugin's own Secret options
    /// (the value set, or the default filled in): withheld key by key.
    fn keyed_tls(&self, default_ns: &Option<String>) -> Result<TlsRefs, ConfigError> {
        let mut tls = TlsRefs::default();
        let ns = self.secret_namespace(default_ns)?;
        for o in self.declared() {
            let Some(keys) = &o.tls_keys else { continue };
            let Some((option, name)) = self.value_or_default(o)? else {
                continue;
            };
            let secret = secret_ref(&name, ns.clone()).map_err(|m| self.invalid(&option, m))?;
            let at = |key: &Option<String>| {
                key.as_ref().map(|k| SecretKeyRef {
                    option: option.clone(),
                    secret: secret.clone(),
                    key: k.clone(),
                    key_only: true,
                })
            };
            tls.ca = tls.ca.or(at(&keys.ca));
            tls.client_cert = tls.client_cert.or(at(&keys.client_cert));
            tls.client_key = tls.client_key.or(at(&keys.client_key));
        }
        Ok(tls)
    }

    /// The HSM the manifest's `hsm-*` options name: all of module, token
    /// and PIN, or none; key labels from every `hsm-key` option.
    fn hsm(&self, default_ns: &Option<String>) -> Result<Option<HsmRefs>, ConfigError> {
        let one = |kind: OptionKind| -> Result<Option<(String, String)>, ConfigError> {
            Ok(self.declared_values(kind)?.into_iter().next())
        };
        let declared = |kind: OptionKind| self.declared().find(|o| o.kind == kind);
        let (Some(m), Some(t), Some(p)) = (
            declared(OptionKind::HsmModule),
            declared(OptionKind::HsmToken),
            declared(OptionKind::HsmPin),
        ) else {
            return Ok(None);
        };
        let missing = |o: &crate::manifest::OptionSpec| {
            self.invalid(
                &o.name,
                "is required: the HSM this kmsID's keys live in".into(),
            )
        };
        let (module_option, module) = one(OptionKind::HsmModule)?.ok_or_else(|| missing(m))?;
        let (_, token) = one(OptionKind::HsmToken)?.ok_or_else(|| missing(t))?;
        let (pin_option, pin_name) = one(OptionKind::HsmPin)?.ok_or_else(|| missing(p))?;
        let secret =
            secret_ref(&pin_name, default_ns.clone()).map_err(|e| self.invalid(&pin_option, e))?;
        let keys: Vec<String> = self
            .declared_values(OptionKind::HsmKey)?
            .iter()
            .flat_map(|(_, v)| v.split(',').map(|l| l.trim().to_string()))
            .filter(|l| !l.is_empty())
            .collect();
        Ok(Some(HsmRefs {
            module_option,
            module,
            token,
            pin: SecretKeyRef {
                option: pin_option,
                secret,
                key: p.key.clone().unwrap_or_default(),
                key_only: false,
            },
            keys,
        }))
    }

    /// Where the plugin's Secrets named without a namespace live: its
    /// `secret-namespace` option, else the entry's `kmshostSecretNamespace`.
    fn secret_namespace(&self, default_ns: &Option<String>) -> Result<Option<String>, ConfigError> {
        Ok(self
            .declared_values(OptionKind::SecretNamespace)?
            .into_iter()
            .next()
            .map(|(_, v)| v)
            .or_else(|| default_ns.clone()))
    }

    /// The certificates the manifest's `signing-cert` options name (the
    /// value set, or the default filled in), in the plugin's Secret
    /// namespace.
    fn signing(&self, default_ns: &Option<String>) -> Result<Vec<SigningRef>, ConfigError> {
        let ns = self.secret_namespace(default_ns)?;
        let mut out = Vec::new();
        for o in self
            .declared()
            .filter(|o| o.kind == OptionKind::SigningCert)
        {
            let Some((option, name)) = self.value_or_default(o)? else {
                continue;
            };
            let secret = secret_ref(&name, ns.clone()).map_err(|m| self.invalid(&option, m))?;
            out.push(SigningRef {
                name,
                cert: SecretKeyRef {
                    option,
                    secret,
                    key: o.key.clone().unwrap_or_default(),
                    key_only: false,
                },
            });
        }
        Ok(out)
    }

    /// What the plugin's `configure` receives: every option but the host's
    /// (its own and the manifest's `tls-*` and host `hsm-*` options), plus
    /// what the host filled in, sorted.
    fn plugin_options(&mut self) -> Vec<(String, String)> {
        let tls: Vec<String> = self
            .declared()
            .filter(|o| o.kind.is_tls() || o.kind.is_hsm_host())
            .flat_map(|o| o.spellings().map(str::to_string).collect::<Vec<_>>())
            .collect();
        let mut out: Vec<(String, String)> = std::mem::take(&mut self.opts)
            .into_iter()
            .filter(|(k, _)| !HOST_OPTIONS.contains(&k.as_str()) && !tls.contains(k))
            .collect();
        out.append(&mut self.injected);
        out.sort();
        out.dedup_by(|a, b| a.0 == b.0);
        out
    }
}

fn resolve_tls(
    opts: &BTreeMap<String, String>,
    t: &TlsOptions<'_>,
    kms_id: &KmsId,
    namespace: &Option<String>,
) -> Result<TlsRefs, ConfigError> {
    let pick = |list: &[(&str, &str)]| -> Result<Option<SecretKeyRef>, ConfigError> {
        for (option, key) in list.iter().copied() {
            if let Some(name) = opts.get(option).filter(|v| !v.is_empty()) {
                let secret = secret_ref(name, namespace.clone()).map_err(|message| {
                    ConfigError::InvalidConfig {
                        kms_id: kms_id.clone(),
                        option: option.to_string(),
                        message,
                    }
                })?;
                return Ok(Some(SecretKeyRef {
                    option: option.to_string(),
                    secret,
                    key: key.to_string(),
                    key_only: false,
                }));
            }
        }
        Ok(None)
    };
    let mut skip = false;
    for o in &t.verify {
        if let Some(v) = opts.get(*o) {
            skip |= !parse_bool(v).ok_or_else(|| ConfigError::InvalidConfig {
                kms_id: kms_id.clone(),
                option: o.to_string(),
                message: format!("must be true or false, not {v:?}"),
            })?;
        }
    }
    for o in &t.skip_verify {
        if let Some(v) = opts.get(*o) {
            skip |= parse_bool(v).ok_or_else(|| ConfigError::InvalidConfig {
                kms_id: kms_id.clone(),
                option: o.to_string(),
                message: format!("must be true or false, not {v:?}"),
            })?;
        }
    }
    Ok(TlsRefs {
        ca: pick(&t.ca)?,
        client_cert: pick(&t.client_cert)?,
        client_key: pick(&t.client_key)?,
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

/// "is required", naming the other spellings that would do.
fn required_message(o: &OptionSpec) -> String {
    match o.aliases.as_slice() {
        [] => "is required".into(),
        a => format!("is required (or {})", a.join(", ")),
    }
}
