//! The plugin manifest: what a plugin declares about itself in its
//! component's `kmshost:manifest` custom section (written by the SDK's
//! `manifest!` macro), read before anything is compiled or instantiated.
//!
//! A manifest names the contract version the plugin was built against, the
//! `encryptionKMSType`s it serves with each one's capabilities, and every
//! option it takes with its kind, default and aliases. The host derives a
//! kmsID's allow-list (from `endpoint` options) and Secret grants (from
//! `secret` options) from it, checks every option before the plugin runs,
//! and routes keys by the declared capabilities.
//!
//! The manifest is untrusted input like the rest of the plugin: its size is
//! capped, unknown fields are refused, names are checked, and its text is
//! escaped wherever it is shown. Nothing here depends on the wasm runtime;
//! the reader uses `wasmparser` only.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The custom section holding the manifest (JSON, UTF-8).
pub const SECTION: &str = "kmshost:manifest";

/// The largest manifest the host reads.
pub const MAX_BYTES: usize = 64 * 1024;

/// The manifest schema this host reads.
pub const SCHEMA: u32 = 1;

/// The contract (`kmshost:plugin` WIT package) version this host provides.
/// Plugins built against any 0.1.x contract load.
pub const CONTRACT: &str = "0.1.4";

/// The WIT interface every plugin exports, without its version.
const PROVIDER_EXPORT: &str = "kmshost:plugin/provider@";

/// What is wrong with a plugin's manifest.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    /// The bytes are not a WebAssembly component.
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    /// The section is larger than [`MAX_BYTES`].
    #[error("manifest is {0} bytes; the limit is {MAX_BYTES}")]
    TooLarge(usize),
    /// More than one manifest section.
    #[error("the component holds more than one {SECTION} section")]
    Duplicate,
    /// The section is not a JSON manifest of this schema.
    #[error("manifest is not valid: {0}")]
    Malformed(String),
    /// A field of the manifest is wrong.
    #[error("manifest {at}: {message}")]
    Invalid {
        /// The field at fault (for example `options[2] (vaultAddress)`).
        at: String,
        /// What is wrong with it.
        message: String,
    },
    /// The plugin file could not be read.
    #[error("cannot read {path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        message: String,
    },
}

/// A plugin's manifest, as its vendor wrote it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    /// The manifest schema (must be [`SCHEMA`]).
    pub manifest: u32,
    /// The contract version the plugin was built against (`0.1.0`); it
    /// must match the version of the `provider` interface it exports.
    pub contract: String,
    /// The plugin's short name.
    pub name: String,
    /// One line for admins.
    #[serde(default)]
    pub description: String,
    /// The `encryptionKMSType`s served, each with what it can do.
    pub types: BTreeMap<String, TypeSpec>,
    /// Every option the plugin takes.
    #[serde(default)]
    pub options: Vec<OptionSpec>,
}

/// One served `encryptionKMSType`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TypeSpec {
    /// The operations this type implements.
    pub capabilities: Vec<Capability>,
    /// Whether the driver's service-account token is granted (to log in
    /// with it, or to call the Kubernetes API).
    #[serde(default)]
    pub service_account: bool,
}

/// Which half of the contract a type implements.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// `get`, `put`, `delete`.
    Store,
    /// `wrap`, `unwrap`.
    Wrap,
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Capability::Store => "store",
            Capability::Wrap => "wrap",
        })
    }
}

/// One option a plugin takes.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OptionSpec {
    /// The option name, exactly as admins write it.
    pub name: String,
    /// What its value is.
    pub kind: OptionKind,
    /// Other spellings (for example Rook's `VAULT_ADDR` for `vaultAddress`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The value used when the option is absent.
    #[serde(default)]
    pub default: Option<String>,
    /// A value the host supplies when the option is absent.
    #[serde(default)]
    pub default_from: Option<HostValue>,
    /// Whether the option must have a value (its own or a default).
    #[serde(default)]
    pub required: bool,
    /// The types it applies to; empty means every type of the plugin.
    #[serde(default)]
    pub types: Vec<String>,
    /// `tls-*` Secret kinds: the key inside the Secret.
    #[serde(default)]
    pub key: Option<String>,
    /// `plain`: the accepted values; empty accepts any.
    #[serde(default)]
    pub values: Vec<String>,
    /// `endpoint`: the scheme of a value written without one (`https`
    /// when absent; `tls` for a TLS stream, such as KMIP's `host:port`).
    #[serde(default)]
    pub scheme: Option<String>,
    /// `secret`: keys of that Secret holding the kmsID's TLS material. The
    /// host reads them for its TLS and withholds them from the plugin,
    /// which may read the Secret's other keys (ceph-csi's KMIP Secret
    /// holds `CA_CERT`, `CLIENT_CERT` and `CLIENT_KEY` beside
    /// `UNIQUE_IDENTIFIER`).
    #[serde(default)]
    pub tls_keys: Option<TlsKeys>,
    /// One line for admins.
    #[serde(default)]
    pub description: String,
}

/// Keys of a Secret holding TLS material (a `secret` option's `tls-keys`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsKeys {
    /// The CA bundle's key.
    #[serde(default)]
    pub ca: Option<String>,
    /// The client certificate's key.
    #[serde(default)]
    pub client_cert: Option<String>,
    /// The client private key's key.
    #[serde(default)]
    pub client_key: Option<String>,
}

impl TlsKeys {
    /// The keys named, in the order ca, client-cert, client-key.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        [&self.ca, &self.client_cert, &self.client_key]
            .into_iter()
            .flatten()
            .map(String::as_str)
    }
}

/// The schemes an endpoint option may default to.
pub const ENDPOINT_SCHEMES: [&str; 3] = ["https", "http", "tls"];

/// What an option's value is, and what the host does with it.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum OptionKind {
    /// Any text (or one of `values`); passed to the plugin.
    Plain,
    /// `true`/`false` (also `yes`/`no`, `1`/`0`).
    Boolean,
    /// A whole number.
    Number,
    /// A Go-style duration (`10s`, `1m30s`, `500ms`).
    Duration,
    /// A URL or `host[:port]` the plugin connects to: added to the
    /// kmsID's allow-list.
    Endpoint,
    /// A Secret the plugin reads (`name` or `namespace/name`): granted to
    /// the kmsID.
    Secret,
    /// The namespace of the plugin's Secrets named without one.
    SecretNamespace,
    /// A Secret with the CA bundle; read by the host, never granted.
    TlsCa,
    /// A Secret with the client certificate; read by the host.
    TlsClientCert,
    /// A Secret with the client key; read by the host, never granted.
    TlsClientKey,
    /// The TLS server name to verify.
    TlsServerName,
    /// A boolean; `false` disables certificate verification.
    TlsVerify,
    /// A boolean; `true` disables certificate verification.
    TlsSkipVerify,
    /// The name of a PKCS#11 module the host was started with
    /// (`--pkcs11-module NAME=PATH`); the host's, never passed to the
    /// plugin.
    HsmModule,
    /// The label of the token in that module; the host's.
    HsmToken,
    /// A Secret with the token's user PIN (under `key`); read by the host,
    /// never granted.
    HsmPin,
    /// HSM key labels (comma-separated) the plugin may use through the
    /// `hsm` import: granted to the kmsID, and passed to the plugin.
    HsmKey,
    /// A Secret holding a PEM certificate and its unencrypted private key
    /// (under `key`): read by the host, never granted; the plugin signs
    /// with it through the `signing` import, naming it by the option's
    /// value (which it receives).
    SigningCert,
}

impl OptionKind {
    /// Whether values of this kind are booleans.
    pub fn is_boolean(self) -> bool {
        matches!(
            self,
            OptionKind::Boolean | OptionKind::TlsVerify | OptionKind::TlsSkipVerify
        )
    }

    /// Whether this is a `tls-*` kind: the host's, never passed to the
    /// plugin.
    pub fn is_tls(self) -> bool {
        self.is_tls_secret()
            || matches!(
                self,
                OptionKind::TlsServerName | OptionKind::TlsVerify | OptionKind::TlsSkipVerify
            )
    }

    /// Whether this is an `hsm-*` kind the host consumes (module, token,
    /// PIN): never passed to the plugin.
    pub fn is_hsm_host(self) -> bool {
        matches!(
            self,
            OptionKind::HsmModule | OptionKind::HsmToken | OptionKind::HsmPin
        )
    }

    /// Whether this kind names a Secret the host reads for TLS.
    pub fn is_tls_secret(self) -> bool {
        matches!(
            self,
            OptionKind::TlsCa | OptionKind::TlsClientCert | OptionKind::TlsClientKey
        )
    }
}

/// A default the host knows and the vendor cannot.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum HostValue {
    /// The Kubernetes API address the driver uses (in-cluster).
    KubernetesApi,
    /// The driver's own namespace.
    DriverNamespace,
}

impl OptionSpec {
    /// The option's name and aliases.
    pub fn spellings(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.name.as_str()).chain(self.aliases.iter().map(String::as_str))
    }

    /// Whether it applies to `kms_type`.
    pub fn applies_to(&self, kms_type: &str) -> bool {
        self.types.is_empty() || self.types.iter().any(|t| t == kms_type)
    }
}

impl Manifest {
    /// Parses and checks a manifest's JSON text.
    pub fn parse(json: &[u8]) -> Result<Manifest, ManifestError> {
        if json.len() > MAX_BYTES {
            return Err(ManifestError::TooLarge(json.len()));
        }
        let m: Manifest =
            serde_json::from_slice(json).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        m.check()?;
        Ok(m)
    }

    /// The options that apply to `kms_type`.
    pub fn options_for<'a>(&'a self, kms_type: &'a str) -> impl Iterator<Item = &'a OptionSpec> {
        self.options.iter().filter(move |o| o.applies_to(kms_type))
    }

    /// The capabilities of `kms_type`, if the plugin serves it.
    pub fn capabilities(&self, kms_type: &str) -> Option<&[Capability]> {
        self.types.get(kms_type).map(|t| t.capabilities.as_slice())
    }

    fn check(&self) -> Result<(), ManifestError> {
        let invalid = |at: &str, message: String| ManifestError::Invalid {
            at: at.to_string(),
            message,
        };
        if self.manifest != SCHEMA {
            return Err(invalid(
                "manifest",
                format!(
                    "schema {} is not the one this kmshost reads ({SCHEMA})",
                    self.manifest
                ),
            ));
        }
        contract_supported(&self.contract).map_err(|m| invalid("contract", m))?;
        if !is_type_name(&self.name) {
            return Err(invalid(
                "name",
                format!("{:?} is not a plugin name", self.name),
            ));
        }
        check_text(&self.description).map_err(|m| invalid("description", m))?;
        if self.types.is_empty() {
            return Err(invalid("types", "must name at least one type".into()));
        }
        for (name, t) in &self.types {
            let at = format!("types.{name}");
            if !is_type_name(name) {
                return Err(invalid(&at, "is not a valid type name".into()));
            }
            let mut caps = t.capabilities.clone();
            caps.sort();
            caps.dedup();
            if caps.is_empty() || caps.len() != t.capabilities.len() {
                return Err(invalid(
                    &at,
                    "capabilities must list store and/or wrap, once each".into(),
                ));
            }
        }
        for (i, o) in self.options.iter().enumerate() {
            o.check(self)
                .map_err(|m| invalid(&format!("options[{i}] ({})", o.name), m))?;
        }
        self.no_two_spellings_meet(&invalid)
    }

    /// A spelling names one option per type.
    fn no_two_spellings_meet(
        &self,
        invalid: &impl Fn(&str, String) -> ManifestError,
    ) -> Result<(), ManifestError> {
        for t in self.types.keys() {
            let mut seen: HashMap<&str, &str> = HashMap::new();
            for o in self.options_for(t) {
                for s in o.spellings() {
                    if let Some(first) = seen.insert(s, &o.name) {
                        return Err(invalid(
                            &format!("options ({s})"),
                            format!("{s} is declared twice for type {t} (also by {first})"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

impl OptionSpec {
    fn check(&self, m: &Manifest) -> Result<(), String> {
        for s in self.spellings() {
            check_option_name(s)?;
        }
        check_text(&self.description)?;
        if let Some(t) = self.types.iter().find(|t| !m.types.contains_key(*t)) {
            return Err(format!("type {t:?} is not one the plugin serves"));
        }
        let keyed = self.kind.is_tls_secret()
            || matches!(self.kind, OptionKind::HsmPin | OptionKind::SigningCert);
        if keyed != self.key.is_some() {
            return Err(
                "key is required for tls-ca, tls-client-cert, tls-client-key, hsm-pin and signing-cert, and only for them"
                    .into(),
            );
        }
        if !self.values.is_empty() && self.kind != OptionKind::Plain {
            return Err("values are only for plain options".into());
        }
        match (&self.scheme, self.kind) {
            (Some(_), k) if k != OptionKind::Endpoint => {
                return Err("scheme is only for endpoint options".into());
            }
            (Some(s), _) if !ENDPOINT_SCHEMES.contains(&s.as_str()) => {
                return Err(format!(
                    "scheme {s:?} is not one of {}",
                    ENDPOINT_SCHEMES.join(", ")
                ));
            }
            _ => {}
        }
        if let Some(keys) = &self.tls_keys {
            if self.kind != OptionKind::Secret {
                return Err("tls-keys is only for secret options".into());
            }
            if keys.keys().next().is_none()
                || keys.client_cert.is_some() != keys.client_key.is_some()
            {
                return Err("tls-keys names ca and/or client-cert with client-key".into());
            }
            let valid = |k: &str| {
                !k.is_empty()
                    && k.len() <= 253
                    && k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            };
            if let Some(k) = keys.keys().find(|k| !valid(k)) {
                return Err(format!("tls-keys: {k:?} is not a valid Secret key"));
            }
        }
        match (&self.default, self.default_from) {
            (Some(_), Some(_)) => Err("default and default-from exclude each other".into()),
            (Some(d), None) => self.check_value(d).map_err(|e| format!("default: {e}")),
            (None, Some(HostValue::KubernetesApi)) if self.kind != OptionKind::Endpoint => {
                Err("default-from kubernetes-api is for endpoint options".into())
            }
            (None, Some(HostValue::DriverNamespace))
                if !matches!(self.kind, OptionKind::Plain | OptionKind::SecretNamespace) =>
            {
                Err(
                    "default-from driver-namespace is for plain and secret-namespace options"
                        .into(),
                )
            }
            _ => Ok(()),
        }
    }

    /// Checks a value against the option's kind (endpoints and Secret
    /// names are checked by the configuration, which knows their rules).
    pub fn check_value(&self, v: &str) -> Result<(), String> {
        let ok = match self.kind {
            k if k.is_boolean() => parse_bool(v).is_some(),
            OptionKind::Number => v.trim().parse::<u64>().is_ok(),
            OptionKind::Duration => parse_duration(v).is_some(),
            OptionKind::Plain if !self.values.is_empty() => self.values.iter().any(|x| x == v),
            OptionKind::HsmModule => is_hsm_name(v),
            OptionKind::HsmToken => is_hsm_label(v),
            OptionKind::HsmKey => v.split(',').all(|l| is_hsm_label(l.trim())),
            _ => true,
        };
        if ok {
            return Ok(());
        }
        Err(match self.kind {
            k if k.is_boolean() => format!("must be true or false, not {v:?}"),
            OptionKind::Number => format!("must be a whole number, not {v:?}"),
            OptionKind::Duration => format!("must be a duration such as 30s or 5m, not {v:?}"),
            OptionKind::HsmModule => format!(
                "must name a module the host was started with (letters, digits, '-', '_'), not {v:?}"
            ),
            OptionKind::HsmToken | OptionKind::HsmKey => format!(
                "must be labels of 1 to 32 printable characters (keys comma-separated), not {v:?}"
            ),
            _ => format!("must be one of {}, not {v:?}", self.values.join(", ")),
        })
    }
}

/// A `--pkcs11-module` name: letters, digits, `-`, `_`.
pub fn is_hsm_name(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// A PKCS#11 token or key label: 1 to 32 printable ASCII characters (a
/// token label field is 32 bytes), no commas.
pub fn is_hsm_label(v: &str) -> bool {
    !v.is_empty() && v.len() <= 32 && v.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b',')
}

/// `true`/`false`, `yes`/`no`, `1`/`0`, any case.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// A Go-style duration: one or more `<number><unit>` with units `ns`, `us`,
/// `ms`, `s`, `m`, `h` (`0` alone is also accepted).
pub fn parse_duration(v: &str) -> Option<std::time::Duration> {
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    if v == "0" {
        return Some(std::time::Duration::ZERO);
    }
    let mut rest = v;
    let mut total = std::time::Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += std::time::Duration::try_from_secs_f64(n * scale).ok()?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

fn is_type_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn check_option_name(s: &str) -> Result<(), String> {
    if s.is_empty()
        || s.len() > 128
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        return Err(format!("{s:?} is not a valid option name"));
    }
    if s.starts_with("kmshost")
        || matches!(s, "encryptionKMSType" | "KMS_PROVIDER" | "allowedHosts")
    {
        return Err(format!("{s} is the host's option, not a plugin's"));
    }
    Ok(())
}

fn check_text(s: &str) -> Result<(), String> {
    if s.len() > 1024 {
        return Err("description is longer than 1024 bytes".into());
    }
    if s.chars().any(char::is_control) {
        return Err("description holds control characters".into());
    }
    Ok(())
}

/// Checks that this host can load a plugin built against `contract`.
pub fn contract_supported(contract: &str) -> Result<(), String> {
    let parse = |s: &str| -> Option<(u64, u64, u64)> {
        let mut it = s.split('.').map(|p| p.parse::<u64>().ok());
        let v = (it.next()??, it.next()??, it.next()??);
        it.next().is_none().then_some(v)
    };
    let want = parse(contract).ok_or_else(|| format!("{contract:?} is not a version (0.1.0)"))?;
    let have = parse(CONTRACT).expect("CONTRACT is a version");
    if (want.0, want.1) != (have.0, have.1) {
        return Err(format!(
            "the plugin was built against contract {contract}; this kmshost provides {CONTRACT} (compatible: {}.{}.x)",
            have.0, have.1
        ));
    }
    Ok(())
}

/// What a component says about itself: its manifest (if it has one) and
/// the contract version of the `provider` interface it exports.
#[derive(Debug, Clone)]
pub struct Declared {
    /// The manifest, checked.
    pub manifest: Option<Arc<Manifest>>,
    /// The exported `kmshost:plugin/provider` version, if any.
    pub contract: Option<String>,
    /// sha256 of the component bytes read.
    pub sha256: [u8; 32],
}

/// Reads the manifest section and the exported contract version of a
/// component, without compiling it.
pub fn read(component: &[u8]) -> Result<Declared, ManifestError> {
    if wasmparser::Parser::is_core_wasm(component) {
        return Err(ManifestError::NotAComponent(
            "a core module; build a component (target wasm32-wasip2)".into(),
        ));
    }
    if !wasmparser::Parser::is_component(component) {
        return Err(ManifestError::NotAComponent("no component header".into()));
    }
    let mut section: Option<&[u8]> = None;
    let mut contract = None;
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        match payload.map_err(|e| ManifestError::NotAComponent(e.to_string()))? {
            wasmparser::Payload::CustomSection(c) if c.name() == SECTION => {
                if section.is_some() {
                    return Err(ManifestError::Duplicate);
                }
                section = Some(c.data());
            }
            wasmparser::Payload::ComponentExportSection(exports) => {
                for e in exports {
                    let e = e.map_err(|e| ManifestError::NotAComponent(e.to_string()))?;
                    if let Some(v) = e.name.name.strip_prefix(PROVIDER_EXPORT) {
                        contract = Some(v.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    let manifest = section.map(Manifest::parse).transpose()?;
    if let (Some(m), Some(c)) = (&manifest, &contract)
        && m.contract != *c
    {
        return Err(ManifestError::Invalid {
            at: "contract".into(),
            message: format!(
                "says {} but the component exports {PROVIDER_EXPORT}{c}",
                m.contract
            ),
        });
    }
    Ok(Declared {
        manifest: manifest.map(Arc::new),
        contract,
        sha256: sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(component))
            .into(),
    })
}

type FileKey = (PathBuf, Option<std::time::SystemTime>, u64);
type FileCache = HashMap<PathBuf, (FileKey, Result<Declared, ManifestError>)>;

/// [`read`] for a plugin file, remembered while the file is unchanged (the
/// configuration is re-read often; the file rarely changes).
pub fn read_file(path: &Path) -> Result<Declared, ManifestError> {
    static CACHE: Mutex<Option<FileCache>> = Mutex::new(None);
    let io = |e: std::io::Error| ManifestError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let key: FileKey = (path.to_path_buf(), meta.modified().ok(), meta.len());
    if let Some((k, r)) = CACHE.lock().unwrap().get_or_insert_default().get(path)
        && *k == key
    {
        return r.clone();
    }
    let result = std::fs::read(path).map_err(io).and_then(|b| read(&b));
    let mut cache = CACHE.lock().unwrap();
    let cache = cache.get_or_insert_default();
    if cache.len() > 256 {
        cache.clear();
    }
    cache.insert(path.to_path_buf(), (key, result.clone()));
    result
}

/// [`read`] for an embedded plugin, once per process.
pub fn read_embedded(name: &'static str, bytes: &'static [u8]) -> Result<Declared, ManifestError> {
    static CACHE: Mutex<Option<HashMap<&'static str, Result<Declared, ManifestError>>>> =
        Mutex::new(None);
    let mut cache = CACHE.lock().unwrap();
    cache
        .get_or_insert_default()
        .entry(name)
        .or_insert_with(|| read(bytes))
        .clone()
}

#[cfg(test)]
mod tests;
