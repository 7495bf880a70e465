//! The Wasm sandbox: one Wasmtime engine (pooling allocator, epoch
//! interruption), the linker that gives plugins exactly the contract's
//! imports plus capability-less WASI, the compile cache, and
//! [`PluginRuntime`] — a loaded plugin bound to one kmsID's policy.

pub mod bindings;
pub mod compile_cache;
mod error;
pub mod hsm;
pub mod kv_cache;
mod limits;
pub mod outbound;
mod runtime;
pub mod signing;
pub mod state;
mod streams;
pub mod warm;

pub use crate::plugin_text;
pub use compile_cache::CompileCache;
pub use error::{PluginError, Reported, SandboxCause};
pub use limits::{DEFAULT_MAX_CONCURRENCY, Limits};
pub use runtime::{Op, PluginRuntime, RuntimeSpec};

use sha2::{Digest, Sha256};
use state::HostState;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the engine's epoch advances: the granularity of deadlines.
pub const EPOCH_TICK: Duration = crate::deadline::TICK;

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// A read-only directory of components compiled when the image was
    /// built (`kmshost plugin precompile`), consulted after `cache_dir`
    /// (and only with it).
    pub precompiled_dir: Option<PathBuf>,
    /// Largest memory any plugin instance may have (per-kmsID caps are
    /// lower or equal).
    pub max_memory_bytes: usize,
    /// Most plugin instances alive at once (in calls and warm).
    pub max_instances: u32,
    /// Wasm stack limit per instance.
    pub max_wasm_stack: usize,
    /// Most warm (idle, reusable) instances kept over all kmsIDs and
    /// tenants; the least recently used goes first.
    pub max_warm: usize,
    /// An instance whose memory grew past this is not kept warm: its memory
    /// is released with it after the call.
    pub warm_max_memory_bytes: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            cache_dir: None,
            precompiled_dir: None,
            max_memory_bytes: 512 << 20,
            max_instances: 128,
            max_wasm_stack: 512 << 10,
            max_warm: 32,
            warm_max_memory_bytes: 8 << 20,
        }
    }
}

/// A compiled plugin component.
#[derive(Clone)]
pub struct LoadedPlugin {
    /// Plugin name (from the registration or file name).
    pub name: String,
    /// sha256 of the component bytes.
    pub sha256: [u8; 32],
    /// Size in bytes.
    pub size: usize,
    /// Whether it came from the compile cache.
    pub from_cache: bool,
    pre: bindings::KmsPluginPre<HostState>,
    component: Component,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("sha256", &hex::encode(self.sha256))
            .finish()
    }
}

impl LoadedPlugin {
    /// The compiled component.
    pub fn component(&self) -> &Component {
        &self.component
    }
}

/// The engine, linker and loaded components.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<HostState>,
    cache: Option<CompileCache>,
    loaded: Mutex<HashMap<[u8; 32], LoadedPlugin>>,
    warm: warm::WarmPool<runtime::Warm>,
    config: SandboxConfig,
    _ticker: Arc<EpochTicker>,
}

struct EpochTicker {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Why a sandbox could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Wasmtime refused the configuration.
    #[error("wasm engine: {0}")]
    Engine(String),
    /// The compile cache directory is unusable.
    #[error("compile cache: {0}")]
    Cache(#[from] std::io::Error),
    /// The precompiled directory is unusable.
    #[error("{0}")]
    Precompiled(std::io::Error),
}

impl Sandbox {
    /// Builds the engine and linker.
    pub fn new(config: SandboxConfig) -> Result<Arc<Sandbox>, SandboxError> {
        let mut c = Config::new();
        portable_target(&mut c)?;
        c.wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(config.max_wasm_stack);
        let mut pool = PoolingAllocationConfig::default();
        let n = config.max_instances;
        pool.total_component_instances(n)
            .total_core_instances(n * 8)
            .total_memories(n * 2)
            .total_tables(n * 8)
            .total_stacks(n)
            .max_memories_per_component(4)
            .max_tables_per_component(16)
            .max_core_instances_per_component(16)
            .max_memory_size(config.max_memory_bytes)
            // Reset a slot's memory with memset (only its resident pages,
            // where the kernel can say which) instead of madvise, so a fresh
            // instance does not page-fault its way back in.
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(64 << 10)
            .pagemap_scan(wasmtime::Enabled::Auto);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&c).map_err(|e| SandboxError::Engine(format!("{e:#}")))?;

        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
        use bindings::kmshost::plugin as p;
        p::types::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)
            .and_then(|_| p::secrets::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s))
            .and_then(|_| p::cache::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s))
            .and_then(|_| {
                p::outbound_http::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s)
            })
            .and_then(|_| p::log::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s))
            .and_then(|_| p::tls_stream::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s))
            .and_then(|_| p::rewrap::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s))
            .and_then(|_| p::hsm::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s))
            .and_then(|_| p::signing::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s))
            .map_err(|e| SandboxError::Engine(format!("{e:#}")))?;

        let cache = match (&config.cache_dir, &config.precompiled_dir) {
            (Some(d), Some(p)) => Some(
                CompileCache::open(d)?
                    .with_precompiled(p)
                    .map_err(SandboxError::Precompiled)?,
            ),
            (Some(d), None) => Some(CompileCache::open(d)?),
            (None, _) => None,
        };

        // The engine's epoch advances on the process's one ticking thread
        // (which also fires call deadlines) until this sandbox is dropped.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let weak = engine.weak();
        let stop2 = stop.clone();
        crate::deadline::on_tick(move || {
            if stop2.load(std::sync::atomic::Ordering::Relaxed) {
                return false;
            }
            match weak.upgrade() {
                Some(e) => {
                    e.increment_epoch();
                    true
                }
                None => false,
            }
        });

        Ok(Arc::new(Sandbox {
            engine,
            linker,
            cache,
            loaded: Mutex::new(HashMap::new()),
            warm: warm::WarmPool::new(config.max_warm),
            config,
            _ticker: Arc::new(EpochTicker { stop }),
        }))
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine-wide settings.
    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// Warm instances kept now, over all kmsIDs and tenants.
    pub fn warm_instances(&self) -> usize {
        self.warm.len()
    }

    /// Compiles (or fetches from the caches) a plugin component and checks
    /// it targets the `kms-plugin` world and imports nothing the host does
    /// not provide. `expected_sha256` pins the exact bytes.
    pub fn load(
        &self,
        name: &str,
        wasm: &[u8],
        expected_sha256: Option<[u8; 32]>,
    ) -> Result<LoadedPlugin, PluginError> {
        let load_err = PluginError::Load;
        let sha256: [u8; 32] = Sha256::digest(wasm).into();
        if let Some(want) = expected_sha256
            && want != sha256
        {
            return Err(load_err(format!(
                "plugin {name}: sha256 {} does not match the pinned kmshostPluginSHA256 {}",
                hex::encode(sha256),
                hex::encode(want)
            )));
        }
        if let Some(p) = self.loaded.lock().unwrap().get(&sha256) {
            let mut p = p.clone();
            p.name = name.to_string();
            return Ok(p);
        }
        if !is_component_binary(wasm) {
            return Err(load_err(format!(
                "plugin {name} is not a WebAssembly component"
            )));
        }
        let (component, from_cache) = match &self.cache {
            Some(cache) => cache.load_or_compile(&self.engine, wasm, &sha256),
            None => Component::new(&self.engine, wasm).map(|c| (c, false)),
        }
        .map_err(|e| load_err(format!("plugin {name} does not compile: {e:#}")))?;
        let pre = self
            .link(&component)
            .map_err(|m| load_err(format!("plugin {name} {m}")))?;
        let loaded = LoadedPlugin {
            name: name.to_string(),
            sha256,
            size: wasm.len(),
            from_cache,
            pre,
            component,
        };
        self.loaded.lock().unwrap().insert(sha256, loaded.clone());
        Ok(loaded)
    }
}

impl Sandbox {
    /// Compiles the component `wasm` into the precompiled directory `dir`
    /// (what an image build runs), after the checks a load makes: it must
    /// be a component that links against this host. Returns the entry.
    pub fn precompile(&self, name: &str, wasm: &[u8], dir: &Path) -> Result<PathBuf, PluginError> {
        let load_err = PluginError::Load;
        if !is_component_binary(wasm) {
            return Err(load_err(format!(
                "plugin {name} is not a WebAssembly component"
            )));
        }
        let component = Component::new(&self.engine, wasm)
            .map_err(|e| load_err(format!("plugin {name} does not compile: {e:#}")))?;
        self.link(&component)
            .map_err(|m| load_err(format!("plugin {name} {m}")))?;
        let sha256: [u8; 32] = Sha256::digest(wasm).into();
        compile_cache::write_precompiled(&self.engine, dir, wasm, &sha256).map_err(|e| {
            load_err(format!(
                "plugin {name}: cannot write into {}: {e:#}",
                dir.display()
            ))
        })
    }

    /// Whether `component` would load: every import is one the host
    /// provides and it exports the provider interface. Loading and
    /// `kmshost plugin inspect` use this one check; the reason names what
    /// is missing (the component's own names, capped and escaped).
    pub fn check_links(&self, component: &Component) -> Result<(), String> {
        self.link(component).map(|_| ())
    }

    fn link(&self, component: &Component) -> Result<bindings::KmsPluginPre<HostState>, String> {
        let pre = self.linker.instantiate_pre(component).map_err(|e| {
            format!(
                "imports something the host does not provide: {}",
                plugin_text::sanitize(&format!("{e:#}"))
            )
        })?;
        bindings::KmsPluginPre::new(pre).map_err(|e| {
            format!(
                "does not export kmshost:plugin/provider@0.1: {}",
                plugin_text::sanitize(&format!("{e:#}"))
            )
        })
    }
}

/// Compiles for the architecture's portable baseline, not for this CPU:
/// x86-64-v2 (SSE4.2, POPCNT, CMPXCHG16B) on x86_64, the base ISA
/// elsewhere. Naming the target turns off Cranelift's detection of the host
/// CPU's extras (AVX and later), so the engine's compatibility hash, and
/// with it every compiled entry, is the same on every node of the
/// architecture: an image's precompiled plugins load anywhere. Plugins
/// parse and marshal; the host does the heavy cryptography natively.
fn portable_target(c: &mut Config) -> Result<(), SandboxError> {
    c.target(env!("KMSHOST_TARGET"))
        .map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a preset Cranelift defines; `Engine::new` refuses flags the
    // host CPU lacks, so code compiled with them never runs where it cannot.
    unsafe {
        c.cranelift_flag_enable("x86-64-v2");
    }
    Ok(())
}

/// Cheap check of the component-model binary header (version 0x0d, layer 1).
fn is_component_binary(wasm: &[u8]) -> bool {
    wasm.len() >= 8 && wasm[..4] == *b"\0asm" && wasm[6..8] == [1, 0]
}
