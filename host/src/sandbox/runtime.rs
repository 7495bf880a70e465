//! A plugin bound to one kmsID: creates instances under that kmsID's limits
//! and policy, keeps a few warm, runs each call under a deadline, and turns
//! traps into root causes.

use super::Limits;
use super::bindings::KmsPlugin;
use super::bindings::kmshost::plugin::types::{KmsError as WitError, PluginInfo};
use super::error::{PluginError, Reported, SandboxCause};
use super::kv_cache::KvCache;
use super::outbound::OutboundHooks;
use super::state::{HostState, KmsShared};
use super::{LoadedPlugin, Sandbox, plugin_text};
use crate::capability::http::HttpPolicy;
use crate::secrets::{Grants, SecretSource};
use crate::types::{KeyId, KmsId};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::{Store, StoreContextMut, Trap, UpdateDeadline};

/// One operation of the provider interface.
#[derive(Debug, Clone, Copy)]
pub enum Op<'a> {
    /// `get(key-id)`
    Get(&'a KeyId),
    /// `put(key-id, key)`
    Put(&'a KeyId, &'a [u8]),
    /// `delete(key-id)`
    Delete(&'a KeyId),
    /// `wrap(key-id, plaintext)`
    Wrap(&'a KeyId, &'a [u8]),
    /// `unwrap(key-id, ciphertext)`
    Unwrap(&'a KeyId, &'a [u8]),
}

impl Op<'_> {
    /// The operation's name (`get`, `put`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Get(_) => "get",
            Op::Put(..) => "put",
            Op::Delete(_) => "delete",
            Op::Wrap(..) => "wrap",
            Op::Unwrap(..) => "unwrap",
        }
    }
    /// The key-id it concerns.
    pub fn key_id(&self) -> &KeyId {
        match self {
            Op::Get(k) | Op::Put(k, _) | Op::Delete(k) | Op::Wrap(k, _) | Op::Unwrap(k, _) => k,
        }
    }
}

/// Everything needed to bind a plugin to a kmsID.
pub struct RuntimeSpec {
    /// The kmsID.
    pub kms_id: KmsId,
    /// The compiled plugin.
    pub plugin: LoadedPlugin,
    /// Options for `configure`.
    pub options: Vec<(String, String)>,
    /// Limits.
    pub limits: Limits,
    /// Granted Secrets.
    pub grants: Grants,
    /// Secret values.
    pub secrets: Arc<dyn SecretSource>,
    /// Network policy.
    pub outbound: HttpPolicy,
    /// The kmsID's concurrency limit, shared by all its tenants' runtimes
    /// (`limits.max_concurrency` permits).
    pub concurrency: Arc<tokio::sync::Semaphore>,
    /// The kmsID's HSM, if its entry names one.
    pub hsm: Option<Arc<super::hsm::HsmGrant>>,
    /// The certificates it may sign with.
    pub signing: Arc<super::signing::SigningGrant>,
}

pub(super) struct Warm {
    store: Store<HostState>,
    bindings: KmsPlugin,
    /// Host resources the instance held once configured: more after a call
    /// means it kept some (responses, bodies, fields), and it is not reused.
    baseline: usize,
}

/// A plugin bound to one kmsID's options, limits and capabilities.
pub struct PluginRuntime {
    sandbox: Arc<Sandbox>,
    plugin: LoadedPlugin,
    shared: Arc<KmsShared>,
    policy: Arc<HttpPolicy>,
    options: Vec<(String, String)>,
    limits: Limits,
    concurrency: Arc<tokio::sync::Semaphore>,
    /// This runtime's id in the host's warm pool.
    owner: u64,
    /// Set once `validate` configured an instance of this configuration.
    validated: std::sync::atomic::AtomicBool,
}

impl Drop for PluginRuntime {
    fn drop(&mut self) {
        // A runtime replaced by a new configuration leaves nothing warm.
        drop(self.sandbox.warm.forget(self.owner));
    }
}

impl std::fmt::Debug for PluginRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRuntime")
            .field("kms_id", &self.shared.kms_id)
            .field("plugin", &self.plugin.name)
            .field("limits", &self.limits)
            .finish()
    }
}

type CallResult = wasmtime::Result<Result<Option<Vec<u8>>, WitError>>;

impl PluginRuntime {
    /// Binds `spec.plugin` to `spec.kms_id`.
    pub fn new(sandbox: Arc<Sandbox>, spec: RuntimeSpec) -> Self {
        let mut limits = spec.limits;
        limits.memory_bytes = limits.memory_bytes.min(sandbox.config().max_memory_bytes);
        PluginRuntime {
            shared: Arc::new(KmsShared {
                counters: crate::telemetry::RuntimeCounters::new(
                    spec.kms_id.as_str(),
                    &spec.plugin.name,
                ),
                kms_id: spec.kms_id,
                plugin: spec.plugin.name.clone(),
                grants: spec.grants,
                secrets: spec.secrets,
                cache: Arc::new(KvCache::new()),
                hsm: spec.hsm,
                signing: spec.signing,
            }),
            plugin: spec.plugin,
            policy: Arc::new(spec.outbound),
            options: spec.options,
            limits,
            concurrency: spec.concurrency,
            owner: sandbox.warm.owner(),
            validated: Default::default(),
            sandbox,
        }
    }

    /// The kmsID.
    pub fn kms_id(&self) -> &KmsId {
        &self.shared.kms_id
    }

    /// The plugin.
    pub fn plugin(&self) -> &LoadedPlugin {
        &self.plugin
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The kmsID's outbound connections kept open and idle now.
    pub fn idle_connections(&self) -> usize {
        self.policy.idle_connections()
    }

    /// The kmsID's idle TLS streams.
    pub fn idle_streams(&self) -> usize {
        self.policy.idle_streams()
    }

    /// The runtime's metric counters.
    pub fn counters(&self) -> &crate::telemetry::RuntimeCounters {
        &self.shared.counters
    }

    /// The kmsID's host cache (tokens, derived keys).
    pub fn cache(&self) -> &KvCache {
        &self.shared.cache
    }

    /// Number of warm instances of this runtime.
    pub fn warm_instances(&self) -> usize {
        self.sandbox.warm.count(self.owner)
    }

    /// A number no other runtime of this sandbox has: a runtime rebuilt for
    /// a changed configuration gets a new one.
    pub fn id(&self) -> u64 {
        self.owner
    }

    /// The one deadline of an operation started now: instantiating,
    /// configuring and the call itself all count against it.
    fn deadline(&self) -> Instant {
        Instant::now() + self.limits.timeout
    }

    /// Arms `store` for an operation ending at `until`; returns the time
    /// left. The guest reaches an epoch deadline every tick: before `until`
    /// it yields to the executor and goes on (a spinning plugin never holds
    /// a worker thread for longer than a tick), at `until` it is
    /// interrupted.
    fn arm(store: &mut Store<HostState>, until: Instant) -> Duration {
        store.data_mut().until = Some(until);
        store.set_epoch_deadline(1);
        until.saturating_duration_since(Instant::now())
    }

    /// The epoch-deadline callback every store gets (see [`Self::arm`]).
    fn on_epoch(ctx: StoreContextMut<'_, HostState>) -> wasmtime::Result<UpdateDeadline> {
        Ok(match ctx.data().until {
            Some(until) if Instant::now() < until => {
                UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now()))
            }
            _ => UpdateDeadline::Interrupt,
        })
    }

    /// A place among the kmsID's concurrent calls, waited for until `until`.
    async fn admit(&self, until: Instant) -> Result<tokio::sync::SemaphorePermit<'_>, PluginError> {
        let left = until.saturating_duration_since(Instant::now());
        match crate::deadline::timeout(left, self.concurrency.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(self.sandbox_error(SandboxCause::Busy(self.limits.max_concurrency))),
        }
    }

    fn deadline_error(&self) -> PluginError {
        self.sandbox_error(SandboxCause::Deadline(
            self.limits.timeout.as_millis() as u64
        ))
    }

    fn sandbox_error(&self, cause: SandboxCause) -> PluginError {
        PluginError::Stopped {
            plugin: self.plugin.name.clone(),
            cause,
        }
    }

    fn classify(&self, e: &wasmtime::Error, state: &HostState) -> SandboxCause {
        if state.limiter.exceeded {
            return SandboxCause::Memory(state.limiter.max_bytes);
        }
        if let Some(trap) = e.downcast_ref::<Trap>() {
            return match trap {
                Trap::Interrupt => SandboxCause::Deadline(self.limits.timeout.as_millis() as u64),
                Trap::StackOverflow => SandboxCause::StackOverflow,
                t => SandboxCause::Trap(t.to_string()),
            };
        }
        let text = format!("{e:#}");
        if text.contains("maximum concurrent") || text.contains("concurrent limit") {
            return SandboxCause::Capacity;
        }
        if text.contains("resource table has no free keys") {
            return SandboxCause::HostLimit(format!(
                "more than {} resource handles (WASI streams, wasi:http fields, requests, bodies)",
                super::state::MAX_RESOURCES
            ));
        }
        // The chain can carry the plugin's own names (its name section).
        SandboxCause::Trap(plugin_text::sanitize_to(&text, 400))
    }

    /// The host's error for a plugin's: every string in it is the plugin's,
    /// so each is capped and escaped ([`plugin_text`]).
    fn map_wit(&self, e: WitError, denials: &[String]) -> PluginError {
        let with_host = |message: String| {
            if denials.is_empty() {
                message
            } else {
                let host = plugin_text::sanitize(&denials.join("; "));
                format!("{message} (host: {host})")
            }
        };
        let reported = |kind, m: String| PluginError::Reported {
            kind,
            message: plugin_text::sanitize(&m),
        };
        match e {
            WitError::NotFound(m) => reported(Reported::NotFound, m),
            WitError::Denied(m) => reported(Reported::Denied, with_host(m)),
            WitError::Unavailable(m) => reported(Reported::Unavailable, m),
            WitError::InvalidConfig(c) => PluginError::InvalidOption {
                option: plugin_text::sanitize_to(&c.option, 128),
                message: plugin_text::sanitize(&c.message),
            },
            WitError::Unsupported(m) => reported(Reported::Unsupported, m),
            WitError::Integrity(m) => reported(Reported::Integrity, m),
            WitError::Other(m) => reported(Reported::Other, with_host(m)),
        }
    }

    fn flush_output(&self, store: &Store<HostState>) {
        let (out, dropped) = store.data().output.take();
        if !out.is_empty() || dropped > 0 {
            tracing::debug!(
                kms_id = %self.shared.kms_id,
                plugin = %self.plugin.name,
                dropped_bytes = dropped,
                "plugin output: {}",
                plugin_text::sanitize_bytes(&out)
            );
        }
    }

    /// A fresh, configured instance. If every slot of the host is taken,
    /// the least recently used warm instance (of any runtime) gives its slot
    /// up and instantiation is tried again: idle instances never keep a call
    /// from running.
    async fn instantiate(&self, until: Instant) -> Result<Warm, PluginError> {
        loop {
            match self.instantiate_once(until).await {
                Err(PluginError::Stopped {
                    cause: SandboxCause::Capacity,
                    ..
                }) if self.sandbox.warm.evict_oldest().is_some() => continue,
                other => return other,
            }
        }
    }

    async fn instantiate_once(&self, until: Instant) -> Result<Warm, PluginError> {
        let hooks = OutboundHooks::new(self.policy.clone());
        let state = HostState::new(self.shared.clone(), hooks, self.limits.memory_bytes);
        let mut store = Store::new(self.sandbox.engine(), state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_callback(Self::on_epoch);
        let left = Self::arm(&mut store, until);
        let started = crate::deadline::timeout(left, async {
            let bindings = self.plugin.pre.instantiate_async(&mut store).await?;
            let configured = bindings
                .kmshost_plugin_provider()
                .call_configure(&mut store, &self.options)
                .await?;
            wasmtime::Result::Ok((bindings, configured))
        })
        .await;
        let (bindings, configured) = match started {
            Err(_) => return Err(self.deadline_error()),
            Ok(Err(e)) => {
                let cause = self.classify(&e, store.data());
                self.flush_output(&store);
                return Err(self.sandbox_error(cause));
            }
            Ok(Ok(v)) => v,
        };
        if let Err(e) = configured {
            self.flush_output(&store);
            return Err(self.map_wit(e, &[]));
        }
        let baseline = store.data_mut().resources();
        Ok(Warm {
            store,
            bindings,
            baseline,
        })
    }

    /// The plugin's own description (from a fresh or warm instance), its
    /// text capped and escaped.
    pub async fn info(&self) -> Result<PluginInfo, PluginError> {
        let until = self.deadline();
        let _permit = self.admit(until).await?;
        let mut w = self.take_or_instantiate(until).await?;
        let left = Self::arm(&mut w.store, until);
        let r = crate::deadline::timeout(
            left,
            w.bindings.kmshost_plugin_provider().call_info(&mut w.store),
        )
        .await;
        match r {
            Err(_) => Err(self.deadline_error()),
            Ok(Err(e)) => Err(self.sandbox_error(self.classify(&e, w.store.data()))),
            Ok(Ok(info)) => {
                self.give_back(w);
                Ok(PluginInfo {
                    name: plugin_text::sanitize_to(&info.name, 128),
                    version: plugin_text::sanitize_to(&info.version, 64),
                    capabilities: info.capabilities,
                    description: plugin_text::sanitize(&info.description),
                })
            }
        }
    }

    /// Checks the kmsID's options by configuring a fresh instance, once per
    /// configuration (a changed entry is a new runtime). The instance is
    /// dropped at once: checking holds no slot and no memory.
    pub async fn validate(&self) -> Result<(), PluginError> {
        use std::sync::atomic::Ordering;
        if self.validated.load(Ordering::Acquire) {
            return Ok(());
        }
        let until = self.deadline();
        let _permit = self.admit(until).await?;
        drop(self.instantiate(until).await?);
        self.validated.store(true, Ordering::Release);
        Ok(())
    }

    async fn take_or_instantiate(&self, until: Instant) -> Result<Warm, PluginError> {
        let warm = self.sandbox.warm.take(self.owner);
        let c = &self.shared.counters;
        let counter = if warm.is_some() {
            &c.warm_hits
        } else {
            &c.instantiations
        };
        counter.inc();
        match warm {
            Some(w) => Ok(w),
            None => self.instantiate(until).await,
        }
    }

    /// Keeps `w` warm for the next call, unless reuse is off, its memory
    /// grew past [`super::SandboxConfig::warm_max_memory_bytes`] (the
    /// `secret` plugin's 32 MiB scrypt scratch: released now, not kept for
    /// ever), or it still holds host resources (requests in flight,
    /// responses or bodies it did not drop, hoarded fields): dropping the
    /// store releases them all.
    fn give_back(&self, mut w: Warm) {
        if !self.limits.instance_reuse {
            return;
        }
        let peak = w.store.data().limiter.peak;
        if peak > self.sandbox.config().warm_max_memory_bytes {
            tracing::debug!(
                kms_id = %self.shared.kms_id,
                plugin = %self.plugin.name,
                memory_bytes = peak,
                "plugin instance released: its memory grew past the warm threshold"
            );
            return;
        }
        let held = w.store.data_mut().resources();
        let in_flight = w.store.data().hooks.in_flight();
        if held > w.baseline || in_flight > 0 {
            tracing::debug!(
                kms_id = %self.shared.kms_id,
                plugin = %self.plugin.name,
                held,
                in_flight,
                "plugin instance discarded: it holds host resources"
            );
            return;
        }
        // A runtime never needs more warm instances than calls it may run
        // at once; the host's budget bounds them all.
        let per_runtime = self.limits.max_concurrency as usize;
        drop(self.sandbox.warm.put(self.owner, w, per_runtime));
    }

    /// Runs `op` in an instance of the plugin. A plugin error leaves the
    /// instance reusable; a trap, a deadline or a memory-limit hit discards
    /// it, and the next call gets a fresh one.
    pub async fn call(&self, op: Op<'_>) -> Result<Option<Vec<u8>>, PluginError> {
        self.call_with_offer(op).await.map(|(v, _)| v)
    }

    /// [`Self::call`], and the blob the plugin offered through
    /// `rewrap.offer` during a successful `unwrap` (unchecked: the caller
    /// checks it before keeping it).
    pub async fn call_with_offer(
        &self,
        op: Op<'_>,
    ) -> Result<(Option<Vec<u8>>, Option<Vec<u8>>), PluginError> {
        let until = self.deadline();
        let _permit = self.admit(until).await?;
        let mut w = self.take_or_instantiate(until).await?;
        {
            let data = w.store.data_mut();
            data.log_records = 0;
            data.denials.clear();
            data.hooks.take_events();
            data.stream_bytes = Default::default();
            data.timed_out = false;
            data.hsm_calls = 0;
            data.signing_calls = 0;
            data.rewrap = super::state::RewrapSlot {
                open: matches!(op, Op::Unwrap(..)),
                offered: None,
            };
        }
        let left = Self::arm(&mut w.store, until);
        let result = crate::deadline::timeout(left, invoke(&mut w, op)).await;
        self.flush_output(&w.store);
        let mut denials = std::mem::take(&mut w.store.data_mut().denials);
        denials.extend(w.store.data().hooks.take_events());
        let timed_out = w.store.data().timed_out;
        let offered = std::mem::take(&mut w.store.data_mut().rewrap).offered;
        match result {
            Err(_) => Err(self.deadline_error()),
            Ok(Err(e)) => {
                let cause = self.classify(&e, w.store.data());
                tracing::debug!(kms_id = %self.shared.kms_id, plugin = %self.plugin.name, %cause, "plugin instance discarded");
                Err(self.sandbox_error(cause))
            }
            Ok(Ok(Ok(v))) => {
                self.give_back(w);
                Ok((v, offered))
            }
            Ok(Ok(Err(e))) => {
                self.give_back(w);
                match self.map_wit(e, &denials) {
                    // The plugin gave up because a host timeout passed
                    // (a stream read or write): a timeout, not an outage.
                    PluginError::Reported {
                        kind: Reported::Unavailable,
                        message,
                    } if timed_out => Err(PluginError::Reported {
                        kind: Reported::TimedOut,
                        message,
                    }),
                    other => Err(other),
                }
            }
        }
    }
}

async fn invoke(w: &mut Warm, op: Op<'_>) -> CallResult {
    let p = w.bindings.kmshost_plugin_provider();
    let s = &mut w.store;
    Ok(match op {
        Op::Get(k) => p.call_get(s, k.as_str()).await?.map(Some),
        Op::Put(k, v) => p.call_put(s, k.as_str(), v).await?.map(|()| None),
        Op::Delete(k) => p.call_delete(s, k.as_str()).await?.map(|()| None),
        Op::Wrap(k, v) => p.call_wrap(s, k.as_str(), v).await?.map(Some),
        Op::Unwrap(k, v) => p.call_unwrap(s, k.as_str(), v).await?.map(Some),
    })
}
