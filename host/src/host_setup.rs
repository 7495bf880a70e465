//! Wiring a [`Kms`] from command-line style settings: the sandbox, the
//! Secret sources (mounted directory, service-account token, Kubernetes API
//! in-cluster) and the configuration source.

use crate::config::{ConfigSource, HostDefaults};
use crate::kms::{Kms, KmsError};
use crate::sandbox::{Sandbox, SandboxConfig};
use crate::secrets::{
    ChainedSecrets, KubeApi, KubeConfigMaps, KubeSecrets, KubeServiceAccountTokens, MountedSecrets,
    ServiceAccountToken,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Default location of the service-account token.
pub const SA_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// Settings for [`build_kms`].
#[derive(Debug, Clone, Default)]
pub struct HostSettings {
    /// `config.json` or a mounted ConfigMap directory.
    pub config: PathBuf,
    /// Mounted Secrets root.
    pub secrets_dir: Option<PathBuf>,
    /// Plugin directory.
    pub plugin_dir: Option<PathBuf>,
    /// Driver namespace.
    pub namespace: Option<String>,
    /// Compile cache directory.
    pub cache_dir: Option<PathBuf>,
    /// Service-account token file.
    pub service_account_token: Option<PathBuf>,
    /// PKCS#11 modules kmsIDs may use (`NAME=PATH`).
    pub pkcs11_modules: Vec<String>,
    /// The audit log's file (`-`: stdout), if on.
    pub audit_log: Option<PathBuf>,
    /// The image's read-only precompiled plugins (`kmshost plugin
    /// precompile`), if any.
    pub precompiled_dir: Option<PathBuf>,
}

/// The default compile-cache directory: `$XDG_CACHE_HOME/kmshost` or
/// `~/.cache/kmshost`, else `/var/cache/kmshost`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(x).join("kmshost");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache").join("kmshost");
    }
    PathBuf::from("/var/cache/kmshost")
}

/// The engine settings of every host this binary builds: one function, so
/// what `precompile` compiles is what the CSI driver loads.
fn sandbox_config(cache_dir: Option<PathBuf>, precompiled_dir: Option<PathBuf>) -> SandboxConfig {
    SandboxConfig {
        cache_dir,
        precompiled_dir,
        ..Default::default()
    }
}

/// Compiles the embedded plugins and `extra` `.wasm` components into the
/// precompiled directory `out` (an image build runs this). Returns each
/// plugin's name and entry.
pub fn precompile(out: &Path, extra: &[PathBuf]) -> Result<Vec<(String, PathBuf)>, KmsError> {
    let sandbox =
        Sandbox::new(sandbox_config(None, None)).map_err(|e| KmsError::Config(e.to_string()))?;
    let compile = |name: &str, wasm: &[u8]| {
        let entry = sandbox
            .precompile(name, wasm, out)
            .map_err(|e| KmsError::Config(e.to_string()))?;
        Ok::<_, KmsError>((name.to_string(), entry))
    };
    let mut written = Vec::new();
    for (name, wasm) in crate::plugins::EMBEDDED {
        written.push(compile(name, wasm)?);
    }
    for f in extra {
        let wasm = std::fs::read(f)
            .map_err(|e| KmsError::Config(format!("reading {}: {e}", f.display())))?;
        written.push(compile(&f.display().to_string(), &wasm)?);
    }
    Ok(written)
}

/// Builds the facade.
pub fn build_kms(s: &HostSettings) -> Result<Kms, KmsError> {
    let namespace = s
        .namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "default".into());
    let kube = KubeApi::in_cluster(&namespace).ok().map(Arc::new);
    let cache_dir = s.cache_dir.clone().unwrap_or_else(default_cache_dir);
    let defaults = HostDefaults {
        plugin_dir: s.plugin_dir.clone(),
        namespace: namespace.clone(),
        kube_api_address: kube.as_ref().map(|k| k.base_url.clone()),
        plugin_cache: Some(cache_dir.clone()),
        ..Default::default()
    };
    let sandbox = Sandbox::new(sandbox_config(Some(cache_dir), s.precompiled_dir.clone()))
        .map_err(|e| match (&e, &s.precompiled_dir) {
            (crate::sandbox::SandboxError::Precompiled(_), Some(p)) => {
                KmsError::Config(format!("--precompiled-dir {}: {e}", p.display()))
            }
            _ => KmsError::Config(e.to_string()),
        })?;
    let mut secrets = ChainedSecrets::new();
    if let Some(d) = &s.secrets_dir {
        secrets = secrets.with(Arc::new(
            MountedSecrets::new(d).with_own_namespace(namespace.clone()),
        ));
    }
    secrets = secrets.with(Arc::new(ServiceAccountToken::new(
        s.service_account_token
            .clone()
            .unwrap_or_else(|| PathBuf::from(SA_TOKEN)),
    )));
    if let Some(k) = kube.clone() {
        secrets = secrets
            .with(Arc::new(KubeServiceAccountTokens::new(k.clone())))
            .with(Arc::new(KubeSecrets::new(k)));
    }
    let modules =
        crate::capability::hsm::HsmModules::parse(s.pkcs11_modules.iter().map(String::as_str))
            .map_err(KmsError::Config)?;
    let kms_facade = Kms::new(
        ConfigSource::new(&s.config, defaults),
        sandbox,
        Arc::new(secrets),
    )
    .with_hsm_modules(Arc::new(modules));
    let kms_facade = match &s.audit_log {
        Some(p) => kms_facade.with_audit(
            crate::kms::audit::AuditLog::open(p)
                .map_err(|e| KmsError::Config(format!("--audit-log {}: {e}", p.display())))?,
        ),
        None => kms_facade,
    };
    Ok(match kube {
        Some(k) => kms_facade.with_config_maps(Arc::new(KubeConfigMaps::new(k))),
        None => kms_facade,
    })
}
