//! [`Kms`]: the one facade the rest of the host calls.

use super::{KeyId, KmsError, KmsId, Passphrase, SecretBytes, WrappedKey, checks};
use crate::capability::TlsSettings;
use crate::capability::http::HttpPolicy;
use crate::capability::tls::TlsError;
use crate::config::{ConfigSource, KmsEntry, PluginSource, SecretKeyRef};
use crate::manifest::Capability;
use crate::sandbox::{Op, PluginRuntime, RuntimeSpec, Sandbox};
use crate::secrets::{ConfigMapSource, SecretError, SecretSource};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tracing::Instrument;

/// The KMS facade: `get/put/delete/wrap/unwrap(kms_id, key_id)`.
///
/// The configuration is re-read on every call; a kmsID whose entry (or
/// plugin file) changed gets a new runtime — a new cache, new warm
/// instances — while other kmsIDs are untouched.
pub struct Kms {
    config: ConfigSource,
    sandbox: Arc<Sandbox>,
    secrets: Arc<dyn SecretSource>,
    config_maps: Option<Arc<dyn ConfigMapSource>>,
    runtimes: Mutex<HashMap<RuntimeSlot, Arc<Bound>>>,
    /// Each kmsID's concurrency limit, shared by its tenants' runtimes:
    /// (configured limit, permits).
    concurrency: Mutex<HashMap<KmsId, (u32, Arc<tokio::sync::Semaphore>)>>,
    /// The PKCS#11 modules this host may load (`--pkcs11-module`).
    hsm_modules: Arc<crate::capability::hsm::HsmModules>,
    /// One line per key operation, if on.
    audit: Option<super::audit::AuditLog>,
}

/// A runtime as built for one configuration of a (kmsID, tenant), and what
/// the host has verified about it.
struct Bound {
    key: RuntimeKey,
    rt: Arc<PluginRuntime>,
    /// Set once a blob of this runtime failed to unwrap under another
    /// key-id ([`checks::binding`]).
    binding_verified: std::sync::atomic::AtomicBool,
}

/// One runtime per (kmsID, tenant).
type RuntimeSlot = (KmsId, Option<String>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct RuntimeKey {
    fingerprint: [u8; 32],
    plugin_file: Option<(std::time::SystemTime, u64)>,
}

/// What `kmshost plugins` prints for a kmsID.
#[derive(Debug, Clone)]
pub struct KmsDescription {
    /// The kmsID.
    pub kms_id: String,
    /// Its type.
    pub kms_type: String,
    /// Plugin source.
    pub plugin: String,
    /// Allowed endpoints.
    pub allowed_hosts: Vec<String>,
    /// Granted Secret names (never values).
    pub granted_secrets: Vec<String>,
    /// What the manifest declares the type can do (`None`: no manifest).
    pub capabilities: Option<Vec<Capability>>,
}

/// What the host knows of a kmsID's plugin now: the answer to "which
/// plugin runs for this kmsID, and what is it holding?".
#[derive(Debug, Clone)]
pub struct PluginReport {
    /// The kmsID.
    pub kms_id: KmsId,
    /// The plugin's name (from the registration or file name).
    pub plugin: String,
    /// sha256 of the component bytes.
    pub sha256: [u8; 32],
    /// Whether its code came from the compile cache.
    pub from_cache: bool,
    /// Its instances kept warm now.
    pub warm_instances: usize,
    /// Values it keeps in the host's cache now (never the values).
    pub cached_values: usize,
    /// Outbound connections it keeps open and idle now.
    pub idle_connections: usize,
    /// TLS streams (`tls-stream`) it keeps open and idle now.
    pub idle_streams: usize,
    /// Identifies the runtime: a changed configuration builds a new one.
    pub runtime_id: u64,
}

/// The plugin's description of itself, its text capped and escaped.
#[derive(Debug, Clone)]
pub struct PluginAbout {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// One line for admins.
    pub description: String,
    /// The operations it says it implements.
    pub capabilities: Vec<Capability>,
}

impl Kms {
    /// A facade over `config`, running plugins in `sandbox` and reading
    /// Secrets from `secrets`.
    pub fn new(
        config: ConfigSource,
        sandbox: Arc<Sandbox>,
        secrets: Arc<dyn SecretSource>,
    ) -> Self {
        Kms {
            config,
            sandbox,
            secrets,
            config_maps: None,
            runtimes: Mutex::new(HashMap::new()),
            concurrency: Mutex::new(HashMap::new()),
            hsm_modules: Default::default(),
            audit: None,
        }
    }

    /// Writes one [`audit`](super::audit) line per key operation to `log`.
    pub fn with_audit(mut self, log: super::audit::AuditLog) -> Self {
        self.audit = Some(log);
        self
    }

    /// Lets kmsIDs use the PKCS#11 modules in `modules` (the host's
    /// `--pkcs11-module` flags); without, an entry naming a module is
    /// refused with the flag to add.
    pub fn with_hsm_modules(mut self, modules: Arc<crate::capability::hsm::HsmModules>) -> Self {
        self.hsm_modules = modules;
        self
    }

    /// Reads tenant ConfigMaps (ceph-csi `vaulttokens`' `tenantConfigName`)
    /// from `source`.
    pub fn with_config_maps(mut self, source: Arc<dyn ConfigMapSource>) -> Self {
        self.config_maps = Some(source);
        self
    }

    /// The operations as `tenant` (the PVC's namespace) sees its kmsIDs:
    /// per-tenant settings, token and Secret namespace
    /// ([`crate::config::tenant`]). `None` is the kmsID as configured.
    pub fn tenant<'a>(&'a self, tenant: Option<&'a str>) -> TenantKms<'a> {
        TenantKms { kms: self, tenant }
    }

    /// Whether `kms_id` is configured and its entry, as `tenant` sees it,
    /// is valid: the check made before anything is created for it.
    pub async fn check_configured(
        &self,
        kms_id: &str,
        tenant: Option<&str>,
    ) -> Result<(), KmsError> {
        self.entry_for(kms_id, tenant).await.map(drop)
    }

    /// The entry of `kms_id` as `tenant` sees it.
    async fn entry_for(
        &self,
        kms_id: &str,
        tenant: Option<&str>,
    ) -> Result<Arc<KmsEntry>, KmsError> {
        let mut table = self.config.load_for(kms_id)?;
        if let Err(crate::config::ConfigError::PluginNotPulled {
            kms_id: id,
            reference,
        }) = table.get(kms_id)
        {
            self.pull(&id, &reference).await?;
            table = self.config.load_for(kms_id)?;
        }
        let Some(t) = tenant else {
            return Ok(table.get(kms_id)?);
        };
        let config_map = match (table.tenant_config_map(kms_id, t), &self.config_maps) {
            (Some(name), Some(src)) => match src.config_map(t, &name).await {
                Ok(m) => m,
                Err(SecretError::Unavailable { secret, message }) => {
                    return Err(KmsError::Unavailable {
                        kms_id: KmsId::new(kms_id)?,
                        message: format!("{secret}: {message}"),
                    });
                }
                Err(SecretError::Denied { secret, message }) => {
                    return Err(KmsError::Denied {
                        kms_id: KmsId::new(kms_id)?,
                        message: format!("{secret}: {message}"),
                    });
                }
                Err(SecretError::NotFound(_)) => None,
            },
            _ => None,
        };
        Ok(table.tenant_entry(kms_id, t, config_map.as_ref())?)
    }

    /// Pulls `kms_id`'s plugin from its registry into the host's cache,
    /// every byte checked against its digest; the configuration then reads
    /// the entry again (its signature and manifest are checked there).
    async fn pull(&self, kms_id: &KmsId, reference: &str) -> Result<(), KmsError> {
        let span = tracing::info_span!("kms.pull", kms_id = %kms_id, plugin = reference);
        let r = crate::fetch::OciRef::parse(reference).map_err(|m| KmsError::PluginLoad {
            kms_id: kms_id.clone(),
            message: m,
        })?;
        let cache = self
            .config
            .defaults()
            .plugin_cache
            .clone()
            .unwrap_or_default();
        match crate::fetch::pull(&r, &cache, std::time::Duration::from_secs(60))
            .instrument(span)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_retryable() => Err(KmsError::Unavailable {
                kms_id: kms_id.clone(),
                message: e.to_string(),
            }),
            Err(e) => Err(KmsError::PluginLoad {
                kms_id: kms_id.clone(),
                message: e.to_string(),
            }),
        }
    }

    /// Plugin instances kept warm now, over all kmsIDs and tenants.
    pub fn warm_instances(&self) -> usize {
        self.sandbox.warm_instances()
    }

    /// Every kmsID with its plugin, allowed hosts and granted Secret names,
    /// or its configuration error.
    pub fn describe(&self) -> Result<Vec<Result<KmsDescription, KmsError>>, KmsError> {
        let table = self.config.load()?;
        Ok(table
            .iter()
            .map(|(id, e)| match e {
                Ok(e) => Ok(KmsDescription {
                    kms_id: id.to_string(),
                    kms_type: e.kms_type.clone(),
                    plugin: e.plugin.to_string(),
                    allowed_hosts: e.allow.entries().iter().map(|h| h.to_string()).collect(),
                    granted_secrets: e.grants.iter().map(|s| s.to_string()).collect(),
                    capabilities: e.capabilities().map(<[_]>::to_vec),
                }),
                Err(e) => Err(e.clone().into()),
            })
            .collect())
    }

    /// Checks `kms_id`'s options by configuring its plugin (once per
    /// configuration; nothing is kept).
    pub async fn validate(&self, kms_id: &str) -> Result<(), KmsError> {
        let rt = self.runtime_for(kms_id, None).await?;
        rt.validate()
            .await
            .map_err(|e| KmsError::from_plugin(rt.kms_id(), e))
    }

    /// Configures `kms_id`'s plugin with one more option than the entry
    /// has, bypassing the host's own option checks: the conformance
    /// suite's probe of whether a plugin refuses, by name, an option it
    /// does not know. Nothing is kept.
    pub async fn validate_with_option(
        &self,
        kms_id: &str,
        option: (&str, &str),
    ) -> Result<(), KmsError> {
        let mut entry = (*self.entry_for(kms_id, None).await?).clone();
        entry
            .plugin_options
            .push((option.0.to_string(), option.1.to_string()));
        let rt = self.build_runtime(&entry).await?;
        rt.validate()
            .await
            .map_err(|e| KmsError::from_plugin(rt.kms_id(), e))
    }

    /// Which plugin runs for `kms_id` (as `tenant` sees it) and what it
    /// holds now.
    pub async fn plugin_report(
        &self,
        kms_id: &str,
        tenant: Option<&str>,
    ) -> Result<PluginReport, KmsError> {
        let rt = self.runtime_for(kms_id, tenant).await?;
        Ok(PluginReport {
            kms_id: rt.kms_id().clone(),
            plugin: rt.plugin().name.clone(),
            sha256: rt.plugin().sha256,
            from_cache: rt.plugin().from_cache,
            warm_instances: rt.warm_instances(),
            cached_values: rt.cache().len(),
            idle_connections: rt.idle_connections(),
            idle_streams: rt.idle_streams(),
            runtime_id: rt.id(),
        })
    }

    /// The plugin's description of itself (`info`), its text capped and
    /// escaped.
    pub async fn plugin_about(&self, kms_id: &str) -> Result<PluginAbout, KmsError> {
        let rt = self.runtime_for(kms_id, None).await?;
        let info = rt
            .info()
            .await
            .map_err(|e| KmsError::from_plugin(rt.kms_id(), e))?;
        use crate::sandbox::bindings::kmshost::plugin::types::Capabilities as C;
        let capabilities = [(C::STORE, Capability::Store), (C::WRAP, Capability::Wrap)]
            .into_iter()
            .filter(|(flag, _)| info.capabilities.contains(*flag))
            .map(|(_, c)| c)
            .collect();
        Ok(PluginAbout {
            name: info.name,
            version: info.version,
            description: info.description,
            capabilities,
        })
    }

    /// The runtime of `kms_id` as `tenant` sees it: one per (kmsID,
    /// tenant), each with its own cache and warm instances.
    async fn runtime_for(
        &self,
        kms_id: &str,
        tenant: Option<&str>,
    ) -> Result<Arc<PluginRuntime>, KmsError> {
        Ok(self.bound_for(kms_id, tenant).await?.rt.clone())
    }

    async fn bound_for(&self, kms_id: &str, tenant: Option<&str>) -> Result<Arc<Bound>, KmsError> {
        let entry = self.entry_for(kms_id, tenant).await?;
        let slot = (entry.kms_id.clone(), tenant.map(str::to_string));
        let key = RuntimeKey {
            fingerprint: entry.fingerprint,
            plugin_file: entry.plugin_state,
        };
        if let Some(b) = self.runtimes.lock().unwrap().get(&slot)
            && b.key == key
        {
            return Ok(b.clone());
        }
        let bound = Arc::new(Bound {
            key,
            rt: Arc::new(self.build_runtime(&entry).await?),
            binding_verified: Default::default(),
        });
        self.runtimes.lock().unwrap().insert(slot, bound.clone());
        Ok(bound)
    }

    async fn build_runtime(&self, entry: &KmsEntry) -> Result<PluginRuntime, KmsError> {
        let (name, bytes): (String, std::borrow::Cow<'static, [u8]>) = match &entry.plugin {
            PluginSource::Embedded(n) => {
                let (n, b) = crate::plugins::embedded(n).ok_or_else(|| KmsError::PluginLoad {
                    kms_id: entry.kms_id.clone(),
                    message: format!("embedded plugin {n} missing"),
                })?;
                (n.to_string(), b.into())
            }
            PluginSource::File(p) | PluginSource::Oci { path: p, .. } => {
                let bytes = std::fs::read(p).map_err(|e| KmsError::PluginLoad {
                    kms_id: entry.kms_id.clone(),
                    message: format!("reading {}: {e}", p.display()),
                })?;
                let name = match &entry.manifest {
                    Some(m) => m.name.clone(),
                    None => p
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                };
                (name, bytes.into())
            }
        };
        let plugin = self
            .sandbox
            .load(&name, &bytes, entry.pinned_sha256)
            .map_err(|e| KmsError::from_plugin(&entry.kms_id, e))?;
        let tls = self.tls_settings(entry).await?;
        let tls = tls.client_config().map_err(|e| {
            // Name the option the admin wrote for the material at fault.
            let at_fault = match &e {
                TlsError::Ca(_) => entry.tls.ca.as_ref(),
                TlsError::ClientCert(_) => entry.tls.client_cert.as_ref(),
                TlsError::Rustls(_) => None,
            };
            KmsError::InvalidConfig {
                kms_id: entry.kms_id.clone(),
                option: at_fault.map_or_else(|| "TLS".into(), |r| r.option.clone()),
                message: e.to_string(),
            }
        })?;
        let outbound = HttpPolicy::new(
            entry.kms_id.clone(),
            name,
            entry.allow.clone(),
            tls,
            entry.tls.server_name.clone(),
            entry.limits.timeout,
            entry.limits.max_response_bytes,
        );
        Ok(PluginRuntime::new(
            self.sandbox.clone(),
            RuntimeSpec {
                kms_id: entry.kms_id.clone(),
                plugin,
                options: entry.plugin_options.clone(),
                limits: entry.limits.clone(),
                grants: entry.grants.clone(),
                secrets: self.secrets.clone(),
                outbound,
                concurrency: self.concurrency_of(entry),
                hsm: self.hsm_of(entry).await?,
                signing: Arc::new(signing_of(entry)),
            },
        ))
    }

    /// The entry's HSM token, logged into with the PIN the host reads (at
    /// first use), and the key labels the admin granted.
    async fn hsm_of(
        &self,
        entry: &KmsEntry,
    ) -> Result<Option<Arc<crate::sandbox::hsm::HsmGrant>>, KmsError> {
        use crate::capability::hsm::HsmError;
        let Some(h) = &entry.hsm else {
            return Ok(None);
        };
        let pin = self.read_secret_key(entry, &h.pin).await?;
        let token = self
            .hsm_modules
            .token(&h.module, &h.token, pin)
            .map_err(|e| match e {
                HsmError::ModuleNotAllowed(_) => KmsError::InvalidConfig {
                    kms_id: entry.kms_id.clone(),
                    option: h.module_option.clone(),
                    message: e.to_string(),
                },
                e => KmsError::Unavailable {
                    kms_id: entry.kms_id.clone(),
                    message: e.to_string(),
                },
            })?;
        Ok(Some(Arc::new(crate::sandbox::hsm::HsmGrant {
            token: Arc::new(token),
            labels: h.keys.clone(),
        })))
    }

    /// The kmsID's permits: the same for all its tenants while its limit is
    /// unchanged.
    fn concurrency_of(&self, entry: &KmsEntry) -> Arc<tokio::sync::Semaphore> {
        let limit = entry.limits.max_concurrency;
        let mut all = self.concurrency.lock().unwrap();
        match all.get(&entry.kms_id) {
            Some((l, sem)) if *l == limit => sem.clone(),
            _ => {
                let sem = Arc::new(tokio::sync::Semaphore::new(limit as usize));
                all.insert(entry.kms_id.clone(), (limit, sem.clone()));
                sem
            }
        }
    }

    async fn read_secret_key(
        &self,
        entry: &KmsEntry,
        r: &SecretKeyRef,
    ) -> Result<SecretBytes, KmsError> {
        let err = |message: String| KmsError::InvalidConfig {
            kms_id: entry.kms_id.clone(),
            option: r.option.clone(),
            message,
        };
        match self.secrets.read(&r.secret).await {
            Ok(Some(data)) => data
                .get(&r.key)
                .cloned()
                .ok_or_else(|| err(format!("Secret {} has no key {:?}", r.secret, r.key))),
            Ok(None) => Err(err(format!("Secret {} not found", r.secret))),
            Err(SecretError::Unavailable { secret, message }) => Err(KmsError::Unavailable {
                kms_id: entry.kms_id.clone(),
                message: format!("Secret {secret}: {message}"),
            }),
            Err(e) => Err(err(e.to_string())),
        }
    }

    async fn tls_settings(&self, entry: &KmsEntry) -> Result<TlsSettings, KmsError> {
        let mut s = TlsSettings {
            server_name: entry.tls.server_name.clone(),
            insecure_skip_verify: entry.tls.insecure_skip_verify,
            ..Default::default()
        };
        if let Some(r) = &entry.tls.ca {
            s.ca_pem = Some(self.read_secret_key(entry, r).await?.expose().to_vec());
        }
        if let Some(r) = &entry.tls.client_cert {
            s.client_cert_pem = Some(self.read_secret_key(entry, r).await?.expose().to_vec());
        }
        if let Some(r) = &entry.tls.client_key {
            s.client_key_pem = Some(self.read_secret_key(entry, r).await?);
        }
        Ok(s)
    }

    async fn call(
        &self,
        kms_id: &str,
        tenant: Option<&str>,
        op: Op<'_>,
    ) -> Result<Option<Vec<u8>>, KmsError> {
        self.call_with_offer(kms_id, tenant, op)
            .await
            .map(|(v, _)| v)
    }

    /// [`Self::call`], and the blob an `unwrap` offered (`rewrap.offer`),
    /// unchecked.
    async fn call_with_offer(
        &self,
        kms_id: &str,
        tenant: Option<&str>,
        op: Op<'_>,
    ) -> Result<(Option<Vec<u8>>, Option<Vec<u8>>), KmsError> {
        let rt = self.runtime_for(kms_id, tenant).await?;
        let tenant = tenant.unwrap_or("");
        let span = match op.name() {
            "get" => {
                tracing::info_span!("kms.get", kms_id, tenant, plugin = %rt.plugin().name, volume = %op.key_id())
            }
            "put" => {
                tracing::info_span!("kms.put", kms_id, tenant, plugin = %rt.plugin().name, volume = %op.key_id())
            }
            "delete" => {
                tracing::info_span!("kms.delete", kms_id, tenant, plugin = %rt.plugin().name, volume = %op.key_id())
            }
            "wrap" => {
                tracing::info_span!("kms.wrap", kms_id, tenant, plugin = %rt.plugin().name, volume = %op.key_id())
            }
            _ => {
                tracing::info_span!("kms.unwrap", kms_id, tenant, plugin = %rt.plugin().name, volume = %op.key_id())
            }
        };
        let (operation, volume) = (op.name(), op.key_id().to_string());
        let started = std::time::Instant::now();
        let r = async {
            let r = rt
                .call_with_offer(op)
                .await
                .map_err(|e| KmsError::from_plugin(rt.kms_id(), e));
            match &r {
                Ok(_) => tracing::debug!("ok"),
                Err(e) => tracing::debug!(retryable = e.is_retryable(), "failed: {e}"),
            }
            r
        }
        .instrument(span)
        .await;
        let status = r.as_ref().map_or_else(KmsError::class, |_| "ok");
        observe(&rt, kms_id, operation, status, &r, started.elapsed());
        if let Some(log) = &self.audit {
            let plugin = rt.plugin();
            log.record(&super::audit::AuditRecord {
                time: super::audit::rfc3339(std::time::SystemTime::now()),
                kms_id,
                plugin: &plugin.name,
                plugin_sha256: hex::encode(plugin.sha256),
                tenant: (!tenant.is_empty()).then_some(tenant),
                volume: &volume,
                operation,
                result: status,
                latency_ms: started.elapsed().as_secs_f64() * 1e3,
            });
        }
        r
    }

    fn expect_bytes(kms_id: &str, v: Option<Vec<u8>>) -> Result<Vec<u8>, KmsError> {
        v.ok_or_else(|| KmsError::Config(format!("kmsID {kms_id}: plugin returned no value")))
    }

    /// Key store: the key stored for `key_id`.
    pub async fn get(&self, kms_id: &str, key_id: &KeyId) -> Result<Passphrase, KmsError> {
        self.tenant(None).get(kms_id, key_id).await
    }

    /// Key store: stores `key` for `key_id`.
    pub async fn put(
        &self,
        kms_id: &str,
        key_id: &KeyId,
        key: &Passphrase,
    ) -> Result<(), KmsError> {
        self.tenant(None).put(kms_id, key_id, key).await
    }

    /// Key store: removes the key for `key_id`.
    pub async fn delete(&self, kms_id: &str, key_id: &KeyId) -> Result<(), KmsError> {
        self.tenant(None).delete(kms_id, key_id).await
    }

    /// Envelope: wraps `key` for `key_id`.
    pub async fn wrap(
        &self,
        kms_id: &str,
        key_id: &KeyId,
        key: &Passphrase,
    ) -> Result<WrappedKey, KmsError> {
        self.tenant(None).wrap(kms_id, key_id, key).await
    }

    /// Envelope: unwraps `wrapped` for `key_id`.
    pub async fn unwrap(
        &self,
        kms_id: &str,
        key_id: &KeyId,
        wrapped: &WrappedKey,
    ) -> Result<Passphrase, KmsError> {
        self.tenant(None).unwrap(kms_id, key_id, wrapped).await
    }

    /// Envelope: re-wraps `wrapped` for `key_id` under the provider's
    /// current key version (after a KMS-side key rotation): the blob the
    /// provider handed back while unwrapping (`rewrap.offer`, checked), or
    /// else unwrap, then wrap, checking the result unwraps to the same key
    /// before returning it. The caller stores the new blob; the old one
    /// keeps working until the provider retires the old key version.
    pub async fn rewrap(
        &self,
        kms_id: &str,
        key_id: &KeyId,
        wrapped: &WrappedKey,
    ) -> Result<WrappedKey, KmsError> {
        let t = self.tenant(None);
        let (key, offered) = t.unwrap_current(kms_id, key_id, wrapped).await?;
        match offered {
            Some(blob) => Ok(blob),
            None => t.wrap_verified(kms_id, key_id, &key).await,
        }
    }
}

/// Counts a key operation in the process's metrics: its latency by status
/// (a success through the runtime's own handle, no lookup), and the
/// sandbox's stop, if it stopped the call.
fn observe<T>(
    rt: &PluginRuntime,
    kms_id: &str,
    method: &str,
    status: &str,
    r: &Result<T, KmsError>,
    took: std::time::Duration,
) {
    use crate::telemetry::{labels, metrics};
    let secs = took.as_secs_f64();
    if let (true, Some(h)) = (r.is_ok(), rt.counters().ok_latency(method)) {
        h.observe(secs);
        return;
    }
    let (m, plugin) = (metrics(), rt.plugin().name.as_str());
    m.kms_operations
        .get_or_create(&labels(&[
            ("kms_id", kms_id),
            ("plugin", plugin),
            ("method", method),
            ("status", status),
        ]))
        .observe(secs);
    if let Err(KmsError::Sandbox { cause, .. }) = r {
        m.stops
            .get_or_create(&labels(&[
                ("kms_id", kms_id),
                ("plugin", plugin),
                ("cause", cause.class()),
            ]))
            .inc();
    }
}

/// The certificates the entry's plugin may sign with; each is read from
/// its Secret at use, by the sandbox.
fn signing_of(entry: &KmsEntry) -> crate::sandbox::signing::SigningGrant {
    use crate::sandbox::signing::{CertGrant, SigningGrant};
    SigningGrant {
        certs: entry
            .signing
            .iter()
            .map(|s| {
                CertGrant::new(
                    s.name.clone(),
                    s.cert.option.clone(),
                    s.cert.secret.clone(),
                    s.cert.key.clone(),
                )
            })
            .collect(),
        ..Default::default()
    }
}

/// A new random volume passphrase: 32 random bytes (256 bits), base64url
/// encoded without padding (ceph-csi uses 20 bytes; kmshost uses more so a
/// cheap keyslot KDF costs no security).
pub fn generate_passphrase() -> Passphrase {
    use base64::Engine as _;
    use rand::RngCore;
    let mut raw = zeroize::Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(&mut raw[..]);
    SecretBytes::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(&raw[..])
            .into_bytes(),
    )
}

/// The KMS operations as one tenant (a PVC's namespace) sees its kmsIDs;
/// from [`Kms::tenant`].
#[derive(Clone, Copy)]
pub struct TenantKms<'a> {
    kms: &'a Kms,
    tenant: Option<&'a str>,
}

impl std::fmt::Debug for TenantKms<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantKms")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl TenantKms<'_> {
    /// Runs `op`, which returns a key, and checks the key's size.
    async fn call_for_key(&self, kms_id: &str, op: Op<'_>) -> Result<Passphrase, KmsError> {
        let v = self.kms.call(kms_id, self.tenant, op).await?;
        let key = SecretBytes::new(Kms::expect_bytes(kms_id, v)?);
        checks::key_out(kms_id, op.name(), key.expose())?;
        Ok(key)
    }

    /// Key store: the key stored for `key_id`.
    pub async fn get(&self, kms_id: &str, key_id: &KeyId) -> Result<Passphrase, KmsError> {
        self.call_for_key(kms_id, Op::Get(key_id)).await
    }

    /// Key store: stores `key` for `key_id`.
    pub async fn put(
        &self,
        kms_id: &str,
        key_id: &KeyId,
        key: &Passphrase,
    ) -> Result<(), KmsError> {
        checks::key_in(kms_id, key)?;
        self.kms
            .call(kms_id, self.tenant, Op::Put(key_id, key.expose()))
            .await
            .map(|_| ())
    }

    /// Key store: removes the key for `key_id`.
    pub async fn delete(&self, kms_id: &str, key_id: &KeyId) -> Result<(), KmsError> {
        self.kms
            .call(kms_id, self.tenant, Op::Delete(key_id))
            .await
            .map(|_| ())
    }

    /// Envelope: wraps `key` for `key_id`.
    pub async fn wrap(
        &self,
        kms_id: &str,
        key_id: &KeyId,
        key: &Passphrase,
    ) -> Result<WrappedKey, KmsError> {
        checks::key_in(kms_id, key)?;
        let v = self
            .kms
            .call(kms_id, self.tenant, Op::Wrap(key_id, key.expose()))
            .await?;
        Ok(WrappedKey::new(Kms::expect_bytes(kms_id, v)?))
    }

    /// Envelope: unwraps `wrapped` for `key_id`.
    pub async fn unwrap(
        &self,
        kms_id: &str,
        key_id: &KeyId,
        wrapped: &WrappedKey,
    ) -> Result<Passphrase, KmsError> {
        self.call_for_key(kms_id, Op::Unwrap(key_id, wrapped.as_bytes()))
            .await
    }

    /// Envelope: unwraps `wrapped` for `key_id`, and returns the blob the
    /// provider handed back wrapped under its current key version
    /// (`rewrap.offer`), if it did and the blob passes the checks every
    /// kept blob passes: within the size limit, hiding the key, unwrapping
    /// to the same key. An offered blob that fails them is logged and
    /// dropped; the unwrap stands.
    pub async fn unwrap_current(
        &self,
        kms_id: &str,
        key_id: &KeyId,
        wrapped: &WrappedKey,
    ) -> Result<(Passphrase, Option<WrappedKey>), KmsError> {
        let op = Op::Unwrap(key_id, wrapped.as_bytes());
        let (v, offered) = self.kms.call_with_offer(kms_id, self.tenant, op).await?;
        let key = SecretBytes::new(Kms::expect_bytes(kms_id, v)?);
        checks::key_out(kms_id, op.name(), key.expose())?;
        let Some(blob) = offered.map(WrappedKey::new) else {
            return Ok((key, None));
        };
        if blob == *wrapped {
            return Ok((key, None));
        }
        match self.check_offered(kms_id, key_id, &key, &blob).await {
            Ok(()) => Ok((key, Some(blob))),
            Err(e) => {
                tracing::warn!(kms_id, volume = %key_id, "dropped the rewrapped key the plugin offered: {e}");
                Ok((key, None))
            }
        }
    }

    async fn check_offered(
        &self,
        kms_id: &str,
        key_id: &KeyId,
        key: &Passphrase,
        blob: &WrappedKey,
    ) -> Result<(), KmsError> {
        checks::blob_out(kms_id, blob.as_bytes())?;
        checks::blob_hides_key(kms_id, key, blob)?;
        let back = self.unwrap(kms_id, key_id, blob).await?;
        checks::round_trip(kms_id, "unwrap(offered rewrap)", key, &back)
    }

    /// Hands a new volume key to `kms_id`, verified before the caller records
    /// anything: a wrapping provider's blob must hide the key and unwrap to
    /// it (and, once per kmsID configuration, must not unwrap under another
    /// key-id); a key store's `get` must return it.
    ///
    /// Which one is the manifest's word for the entry's type: `wrap` is
    /// tried when declared, and a plugin that declares both and answers
    /// `unsupported` (Vault's KV engine) stores the key instead; a plugin
    /// declaring only `store` is never asked to wrap. A plugin without a
    /// manifest is tried as if it declared both.
    pub async fn seal(
        &self,
        kms_id: &str,
        key_id: &KeyId,
        key: &Passphrase,
    ) -> Result<Sealed, KmsError> {
        let entry = self.kms.entry_for(kms_id, self.tenant).await?;
        let (wraps, stores) = match entry.capabilities() {
            None => (true, true),
            Some(c) => (
                c.contains(&Capability::Wrap),
                c.contains(&Capability::Store),
            ),
        };
        if wraps {
            match self.wrap_verified(kms_id, key_id, key).await {
                Ok(w) => return Ok(Sealed::Wrapped(w)),
                Err(KmsError::Unsupported { .. }) if stores => {}
                Err(e) => return Err(e),
            }
        }
        self.put_verified(kms_id, key_id, key).await?;
        Ok(Sealed::Stored)
    }

    /// Envelope, verified: [`Self::wrap`], then the checks of [`Self::seal`]
    /// and the blob size cap. Use this for every blob that is kept; plain
    /// [`Self::wrap`] is the unverified primitive.
    pub async fn wrap_verified(
        &self,
        kms_id: &str,
        key_id: &KeyId,
        key: &Passphrase,
    ) -> Result<WrappedKey, KmsError> {
        let blob = self.wrap(kms_id, key_id, key).await?;
        checks::blob_out(kms_id, blob.as_bytes())?;
        checks::blob_hides_key(kms_id, key, &blob)?;
        let back = self.unwrap(kms_id, key_id, &blob).await?;
        checks::round_trip(kms_id, "unwrap(wrap(key))", key, &back)?;
        self.verify_binding(kms_id, key_id, &blob).await?;
        Ok(blob)
    }

    /// Key store, verified: [`Self::put`], then `get` must return the key.
    /// If it returns another, what was stored is deleted again (best effort):
    /// the caller records nothing, so nothing else would ever delete it.
    pub async fn put_verified(
        &self,
        kms_id: &str,
        key_id: &KeyId,
        key: &Passphrase,
    ) -> Result<(), KmsError> {
        self.put(kms_id, key_id, key).await?;
        let back = self.get(kms_id, key_id).await?;
        let checked = checks::round_trip(kms_id, "get after put", key, &back);
        if checked.is_err()
            && let Err(e) = self.delete(kms_id, key_id).await
        {
            tracing::warn!(kms_id, volume = %key_id, "could not delete a key that failed its check: {e}");
        }
        checked
    }

    /// Once per runtime (kmsID configuration and tenant): `blob`, wrapped
    /// for `key_id`, must not unwrap under another key-id.
    async fn verify_binding(
        &self,
        kms_id: &str,
        key_id: &KeyId,
        blob: &WrappedKey,
    ) -> Result<(), KmsError> {
        use std::sync::atomic::Ordering;
        let bound = self.kms.bound_for(kms_id, self.tenant).await?;
        if bound.binding_verified.load(Ordering::Acquire) {
            return Ok(());
        }
        let other = if key_id.as_str() == BINDING_PROBE_ID {
            KeyId::new(format!("{BINDING_PROBE_ID}-2"))?
        } else {
            KeyId::new(BINDING_PROBE_ID)?
        };
        checks::binding(kms_id, self.unwrap(kms_id, &other, blob).await)?;
        bound.binding_verified.store(true, Ordering::Release);
        Ok(())
    }
}

/// The key-id a blob is unwrapped under to check that blobs are bound to
/// their volume.
const BINDING_PROBE_ID: &str = "kmshost-binding-check";

/// Where a sealed volume key lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sealed {
    /// Wrapped by the provider: the blob is kept with the volume.
    Wrapped(WrappedKey),
    /// Stored in the provider under the volume's key-id.
    Stored,
}
