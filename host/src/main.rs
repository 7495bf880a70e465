//! The `kmshost` binary: argument parsing, dispatch, and the edge where
//! errors become one line and an exit code; the work is in the library.

use anyhow::{Context, Result};
use base64::Engine as _;
use clap::{Args, Parser, Subcommand};
use kmshost::cli::key_io::{emit_secret, read_blob, read_input};
use kmshost::host_setup::{HostSettings, build_kms};
use kmshost::kms::KeyId;
use std::path::PathBuf;

/// kmshost: a WebAssembly-plugin host for KMS providers (LUKS2 volume keys
/// from sandboxed KMS plugins).
#[derive(Parser, Debug)]
#[command(name = "kmshost", version, about, long_about = None)]
struct Cli {
    /// Log filter (e.g. `info`, `kmshost=debug`); also RUST_LOG.
    #[arg(long, global = true, env = "KMSHOST_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the main job on the embedded default plugin, step by step.
    Demo {
        /// Work directory (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Keep the work directory afterwards.
        #[arg(long)]
        keep: bool,
        /// Image size in MiB.
        #[arg(long, default_value_t = 64)]
        size_mib: u64,
        /// Compile-cache directory.
        #[arg(long, env = "KMSHOST_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
    },
    /// Key operations through a kmsID's plugin.
    Kms {
        #[command(subcommand)]
        op: KmsOp,
    },
    /// Plugin files.
    Plugin {
        #[command(subcommand)]
        op: PluginOp,
    },
    /// Run the CSI driver (Identity, Controller, Node, key rotation) on a
    /// unix socket.
    Csi {
        #[command(flatten)]
        host: HostArgs,
        #[command(flatten)]
        driver: DriverArgs,
    },
    /// Talk to a running driver as a CO would: create, stage, publish,
    /// rotate keys, delete.
    Volume {
        /// The driver's endpoint.
        #[arg(
            long,
            env = "CSI_ENDPOINT",
            default_value = "unix:///run/kmshost/csi.sock"
        )]
        endpoint: String,
        #[command(subcommand)]
        op: VolumeOp,
    },
    /// List each kmsID: plugin, allowed hosts, granted Secret names.
    Plugins {
        #[command(flatten)]
        host: HostArgs,
        /// Also configure each kmsID's plugin to validate its options.
        #[arg(long)]
        validate: bool,
    },
}

#[derive(Args, Debug, Clone)]
struct HostArgs {
    /// ceph-csi `config.json`, or a mounted ConfigMap directory.
    #[arg(long, env = "KMSHOST_CONFIG")]
    config: PathBuf,
    /// Root of mounted Secrets (`<name>/<key>` or `<namespace>/<name>/<key>`).
    #[arg(long, env = "KMSHOST_SECRETS_DIR")]
    secrets_dir: Option<PathBuf>,
    /// Directory of third-party `<type>.wasm` plugins.
    #[arg(long, env = "KMSHOST_PLUGIN_DIR")]
    plugin_dir: Option<PathBuf>,
    /// The driver's namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: Option<String>,
    /// Compile-cache directory.
    #[arg(long, env = "KMSHOST_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Service-account token file.
    #[arg(long, env = "KMSHOST_SERVICE_ACCOUNT_TOKEN")]
    service_account_token: Option<PathBuf>,
    /// A PKCS#11 module kmsIDs may use, as NAME=/path/to/module.so
    /// (repeatable; env: comma-separated). Only these are ever loaded.
    #[arg(
        long = "pkcs11-module",
        env = "KMSHOST_PKCS11_MODULES",
        value_delimiter = ','
    )]
    pkcs11_modules: Vec<String>,
    /// Append one JSON line per key operation to this file (`-`: stdout):
    /// kmsID, plugin and sha256, tenant, volume, operation, result,
    /// latency; never key material.
    #[arg(long, env = "KMSHOST_AUDIT_LOG")]
    audit_log: Option<PathBuf>,
    /// The image's read-only precompiled plugins (`kmshost plugin
    /// precompile`), used when the compile cache has no entry.
    #[arg(long, env = "KMSHOST_PRECOMPILED_DIR")]
    precompiled_dir: Option<PathBuf>,
}

impl HostArgs {
    fn settings(&self) -> HostSettings {
        HostSettings {
            config: self.config.clone(),
            secrets_dir: self.secrets_dir.clone(),
            plugin_dir: self.plugin_dir.clone(),
            namespace: self.namespace.clone(),
            cache_dir: self.cache_dir.clone(),
            service_account_token: self.service_account_token.clone(),
            pkcs11_modules: self.pkcs11_modules.clone(),
            audit_log: self.audit_log.clone(),
            precompiled_dir: self.precompiled_dir.clone(),
        }
    }
}

#[derive(Args, Debug, Clone)]
struct DriverArgs {
    /// gRPC endpoint (`unix:///path/to/csi.sock`).
    #[arg(
        long,
        env = "CSI_ENDPOINT",
        default_value = "unix:///run/kmshost/csi.sock"
    )]
    endpoint: String,
    /// Where volume images and records live.
    #[arg(long, env = "KMSHOST_DATA_DIR", default_value = "/var/lib/kmshost")]
    data_dir: PathBuf,
    /// This node's ID (default: the hostname).
    #[arg(long, env = "NODE_ID")]
    node_id: Option<String>,
    /// Default filesystem for mount access.
    #[arg(long, default_value = "ext4")]
    default_fs_type: String,
    /// Key fetches + keyslot unlocks at once (bounds memory with argon2id).
    #[arg(long)]
    max_concurrent_unlocks: Option<usize>,
    /// Seconds in-flight calls get to finish after SIGTERM (keep it under
    /// the pod's terminationGracePeriodSeconds).
    #[arg(long, default_value_t = 50)]
    shutdown_grace: u64,
    /// Serve Prometheus metrics (OpenMetrics text) at
    /// `http://ADDRESS/metrics`, e.g. `0.0.0.0:9810`; off without it.
    #[arg(long, env = "KMSHOST_METRICS_ADDRESS")]
    metrics_address: Option<std::net::SocketAddr>,
    /// Keep volumes as Ceph RBD images in the clusters of this ceph-csi
    /// cluster config (`[{"clusterID": …, "monitors": [...]}]`, usually
    /// /etc/ceph-csi-config/config.json) instead of image files.
    #[arg(long, env = "KMSHOST_RBD_CLUSTER_CONFIG")]
    rbd_cluster_config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum VolumeOp {
    /// Probe the driver.
    Probe,
    /// CreateVolume; prints the volume ID.
    Create {
        /// Name (idempotency key).
        name: String,
        /// Capacity (e.g. 1Gi, 64Mi).
        #[arg(long, default_value = "1Gi")]
        size: String,
        /// StorageClass parameter `key=value` (repeatable), e.g.
        /// `encrypted=true`, `encryptionKMSID=secret-metadata`.
        #[arg(long = "param", short = 'p')]
        params: Vec<String>,
        /// Clone this volume.
        #[arg(long, conflicts_with = "from_snapshot")]
        from_volume: Option<String>,
        /// Restore this snapshot.
        #[arg(long)]
        from_snapshot: Option<String>,
    },
    /// DeleteVolume.
    Delete {
        /// Volume ID.
        id: String,
    },
    /// ListVolumes.
    List,
    /// NodeStageVolume.
    Stage {
        /// Volume ID.
        id: String,
        /// Staging directory.
        staging: PathBuf,
        /// Block access (default: mount).
        #[arg(long)]
        block: bool,
        /// Filesystem (default: the StorageClass's).
        #[arg(long, default_value = "")]
        fs_type: String,
    },
    /// NodeUnstageVolume.
    Unstage {
        /// Volume ID.
        id: String,
        /// Staging directory.
        staging: PathBuf,
    },
    /// NodePublishVolume.
    Publish {
        /// Volume ID.
        id: String,
        /// Staging directory.
        staging: PathBuf,
        /// Target path.
        target: PathBuf,
        /// Block access.
        #[arg(long)]
        block: bool,
        /// Read-only.
        #[arg(long)]
        readonly: bool,
    },
    /// NodeUnpublishVolume.
    Unpublish {
        /// Volume ID.
        id: String,
        /// Target path.
        target: PathBuf,
    },
    /// ControllerExpandVolume, then NodeExpandVolume at `--path` if given.
    Expand {
        /// Volume ID.
        id: String,
        /// New capacity.
        size: String,
        /// Where the volume is staged or published (for the node step).
        #[arg(long)]
        path: Option<PathBuf>,
    },
    /// CreateSnapshot; prints the snapshot ID.
    Snapshot {
        /// Name.
        name: String,
        /// Source volume ID.
        volume: String,
    },
    /// DeleteSnapshot.
    DeleteSnapshot {
        /// Snapshot ID.
        id: String,
    },
    /// Rotate the volume's LUKS passphrase (csi-addons EncryptionKeyRotate).
    RotateKey {
        /// Volume ID.
        id: String,
    },
}

#[derive(Args, Debug, Clone)]
struct KeyArgs {
    #[command(flatten)]
    host: HostArgs,
    /// The kmsID (a key of config.json).
    #[arg(long)]
    kms_id: String,
    /// The key-id (volume handle).
    key_id: String,
}

#[derive(Subcommand, Debug)]
enum KmsOp {
    /// Store a key: read from stdin (or --in), never from the command line,
    /// byte for byte (see --text); `get` must return it before this succeeds.
    Put {
        #[command(flatten)]
        key: KeyArgs,
        /// Read the key from this file instead of stdin.
        #[arg(long = "in")]
        input: Option<PathBuf>,
        /// The key is text: drop one trailing line ending (as `echo` adds).
        #[arg(long)]
        text: bool,
    },
    /// Fetch a key: written to --out (mode 0600), or to stdout with --reveal.
    Get {
        #[command(flatten)]
        key: KeyArgs,
        /// Write the key to this file (mode 0600).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the key on stdout.
        #[arg(long)]
        reveal: bool,
    },
    /// Delete a key.
    Delete {
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Wrap a key read from stdin (or --in), byte for byte (see --text);
    /// prints the blob in base64 once it is verified to unwrap to the key.
    Wrap {
        #[command(flatten)]
        key: KeyArgs,
        /// Read the key from this file instead of stdin.
        #[arg(long = "in")]
        input: Option<PathBuf>,
        /// The key is text: drop one trailing line ending (as `echo` adds).
        #[arg(long)]
        text: bool,
    },
    /// Re-wrap a base64 blob (stdin or --in) under the provider's newest key
    /// version; prints the new blob in base64.
    Rewrap {
        #[command(flatten)]
        key: KeyArgs,
        /// Read the blob from this file instead of stdin.
        #[arg(long = "in")]
        input: Option<PathBuf>,
    },
    /// Unwrap a base64 blob read from stdin (or --in).
    Unwrap {
        #[command(flatten)]
        key: KeyArgs,
        /// Read the blob from this file instead of stdin.
        #[arg(long = "in")]
        input: Option<PathBuf>,
        /// Write the key to this file (mode 0600).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the key on stdout.
        #[arg(long)]
        reveal: bool,
    },
}

#[derive(Subcommand, Debug)]
enum PluginOp {
    /// Show a plugin's sha256, size, world, imports and exports.
    Inspect {
        /// The `.wasm` component.
        file: PathBuf,
    },
    /// Compile the embedded plugins (and any FILES) into a read-only
    /// precompiled directory, as a container image build does: the driver
    /// then starts without running the compiler (`--precompiled-dir`).
    Precompile {
        /// The directory to write (created 0755).
        #[arg(long)]
        out: PathBuf,
        /// More `.wasm` components to precompile (a derived image's vendor
        /// plugins).
        files: Vec<PathBuf>,
    },
    /// Make an ed25519 key pair for signing plugins (PEM files; the
    /// secret key is written 0600).
    Keygen {
        /// Where to write the secret key.
        #[arg(long)]
        secret_key: PathBuf,
        /// Where to write the public key (what admins trust).
        #[arg(long)]
        public_key: PathBuf,
    },
    /// Sign a plugin: embed a wasmsign2 ed25519 signature.
    Sign {
        /// The `.wasm` component.
        file: PathBuf,
        /// The secret key (PEM).
        #[arg(long)]
        key: PathBuf,
        /// Where to write the signed component.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Check a plugin's signature against a public key.
    Verify {
        /// The `.wasm` component.
        file: PathBuf,
        /// The trusted public key (PEM, or an `ssh-ed25519` line).
        #[arg(long)]
        key: PathBuf,
    },
    /// Write a starter plugin crate (builds and passes `plugin test`).
    New {
        /// The plugin's name: its `encryptionKMSType` and crate name.
        name: String,
        /// The directory to create (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Depend on a local SDK (a checkout's plugins/sdk, or an unpacked
        /// package) instead of the published crate.
        #[arg(long)]
        sdk_path: Option<PathBuf>,
    },
    /// Run the conformance suite against a plugin and its backend: one
    /// PASS/FAIL/SKIP line per case; exit 0 when nothing failed, 1 when a
    /// case failed.
    Test {
        /// The `.wasm` component, or an `oci://…@sha256:…` reference (its
        /// entry then needs kmshostPluginPublicKey).
        file: PathBuf,
        /// The kmsID entry to test with (a JSON object of options, as in
        /// config.json); `{}` when absent.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Root of mounted Secrets (`<name>/<key>`).
        #[arg(long)]
        secrets_dir: Option<PathBuf>,
        /// Service-account token file.
        #[arg(long)]
        service_account_token: Option<PathBuf>,
        /// Compile-cache directory.
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        report: Option<PathBuf>,
    },
}

impl Command {
    /// Whether the command serves sockets (the CSI driver, the demo's
    /// in-process driver) rather than only printing.
    fn serves(&self) -> bool {
        matches!(self, Command::Csi { .. } | Command::Demo { .. })
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if !cli.command.serves() {
        // A closed stdout (`kmshost plugins … | head`) ends a printing
        // command quietly, as for any command-line tool, instead of a panic
        // in `println!`. Never for a server: a gRPC client hanging up would
        // kill the driver (its writes to the closed socket raise SIGPIPE).
        // SAFETY: restoring a signal's default disposition has no preconditions.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cli.log.clone());
    kmshost::logging::init(&filter);
    // Test builds only: crash points from the FAILPOINTS environment
    // variable (`csi0.stage.open=pause`), for tests that kill the process
    // mid-call. Release builds have no failpoints at all.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with the cause chain; never a backtrace.
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(exit_code(&e))
        }
    }
}

/// The exit code for a failure, by its class (README: "Exit codes"):
/// 3 configuration or input, 4 not found, 5 denied, 6 unavailable — retry,
/// 7 integrity, 8 the plugin failed or was stopped, 1 anything else
/// (2 is a usage error, from the argument parser).
fn exit_code(e: &anyhow::Error) -> u8 {
    use kmshost::kms::KmsError as K;
    use tonic::Code as C;
    for cause in e.chain() {
        if let Some(k) = cause.downcast_ref::<K>() {
            return match k {
                _ if k.is_retryable() => 6,
                K::UnknownKmsId(_)
                | K::InvalidConfig { .. }
                | K::Config(_)
                | K::Id(_)
                | K::InvalidKey { .. }
                | K::PluginLoad { .. } => 3,
                K::NotFound { .. } => 4,
                K::Denied { .. } => 5,
                K::Unavailable { .. } | K::TimedOut { .. } => 6,
                K::Integrity { .. } => 7,
                K::Unsupported { .. } | K::Plugin { .. } | K::Sandbox { .. } => 8,
            };
        }
        if cause.is::<kmshost::config::ConfigError>()
            || cause.is::<kmshost::types::IdError>()
            || cause.is::<kmshost::cli::key_io::KeyIoError>()
            || cause.is::<kmshost::cli::scaffold::ScaffoldError>()
            || cause.is::<kmshost::signing::SignatureError>()
        {
            return 3;
        }
        let code = match (
            cause.downcast_ref::<tonic::Status>(),
            cause.downcast_ref::<kmshost::csi::CsiError>(),
        ) {
            (Some(s), _) => Some(s.code()),
            (_, Some(c)) => Some(c.code),
            _ => None,
        };
        if let Some(code) = code {
            return match code {
                C::InvalidArgument | C::FailedPrecondition | C::OutOfRange | C::AlreadyExists => 3,
                C::NotFound => 4,
                C::PermissionDenied | C::Unauthenticated => 5,
                C::Unavailable | C::DeadlineExceeded | C::ResourceExhausted | C::Aborted => 6,
                C::DataLoss => 7,
                _ => 1,
            };
        }
    }
    1
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo {
            dir,
            keep,
            size_mib,
            cache_dir,
        } => {
            let opts = kmshost::demo::DemoOptions {
                dir,
                keep,
                cache_dir,
                size_mib,
            };
            kmshost::demo::run(opts, &mut std::io::stdout()).await?;
        }
        Command::Plugin {
            op: PluginOp::Inspect { file },
        } => {
            let wasm =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let found = kmshost::inspect::inspect(&wasm).map_err(anyhow::Error::msg)?;
            print!("{}", found.report);
            if !found.loads {
                std::process::exit(1);
            }
        }
        Command::Plugin {
            op:
                PluginOp::Keygen {
                    secret_key,
                    public_key,
                },
        } => {
            let (sk, pk) = kmshost::signing::generate_key_pair();
            let sk = kmshost::kms::SecretBytes::new(sk.into_bytes());
            kmshost::cli::key_io::write_key_file(&secret_key, &sk)
                .with_context(|| format!("writing {}", secret_key.display()))?;
            std::fs::write(&public_key, pk)
                .with_context(|| format!("writing {}", public_key.display()))?;
            println!(
                "secret key: {} (keep it off the cluster)",
                secret_key.display()
            );
            println!(
                "public key: {} (admins set kmshostPluginPublicKey to it)",
                public_key.display()
            );
        }
        Command::Plugin {
            op: PluginOp::Precompile { out, files },
        } => {
            for (name, entry) in kmshost::host_setup::precompile(&out, &files)? {
                println!("{name}: {}", entry.display());
            }
        }
        Command::Plugin {
            op: PluginOp::Sign { file, key, out },
        } => {
            let wasm =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let sk = std::fs::read_to_string(&key)
                .with_context(|| format!("reading {}", key.display()))?;
            let signed = kmshost::signing::sign(&wasm, &sk)?;
            std::fs::write(&out, &signed).with_context(|| format!("writing {}", out.display()))?;
            use sha2::Digest;
            let sha = hex::encode(sha2::Sha256::digest(&signed));
            println!("signed: {} sha256:{sha}", out.display());
        }
        Command::Plugin {
            op: PluginOp::Verify { file, key },
        } => {
            let wasm =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let pk = std::fs::read_to_string(&key)
                .with_context(|| format!("reading {}", key.display()))?;
            kmshost::signing::TrustedKey::parse(&pk)?.verify(&wasm)?;
            println!("valid signature by {}", key.display());
        }
        Command::Plugin {
            op:
                PluginOp::New {
                    name,
                    dir,
                    sdk_path,
                },
        } => {
            use kmshost::cli::scaffold::{Sdk, new_plugin};
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let sdk = match sdk_path {
                Some(p) => Sdk::Path(std::path::absolute(&p)?),
                None => Sdk::Registry,
            };
            for f in new_plugin(&dir, &name, &sdk)? {
                println!("wrote {}", f.display());
            }
        }
        Command::Plugin {
            op:
                PluginOp::Test {
                    file,
                    config,
                    secrets_dir,
                    service_account_token,
                    cache_dir,
                    report,
                },
        } => {
            let entry = match config {
                None => serde_json::Map::new(),
                Some(p) => {
                    let text = std::fs::read_to_string(&p)
                        .with_context(|| format!("reading {}", p.display()))?;
                    serde_json::from_str(&text).with_context(|| {
                        format!(
                            "{}: the entry must be a JSON object of options",
                            p.display()
                        )
                    })?
                }
            };
            let setup = kmshost::conformance::Setup {
                plugin: file,
                entry,
                secrets_dir,
                service_account_token,
                cache_dir,
            };
            let found = kmshost::conformance::run(&setup).await?;
            print!("{}", found.text());
            if let Some(r) = report {
                std::fs::write(&r, serde_json::to_vec_pretty(&found.json())?)
                    .with_context(|| format!("writing {}", r.display()))?;
            }
            if !found.passed() {
                std::process::exit(1);
            }
        }
        Command::Csi { host, driver } => {
            let kms = std::sync::Arc::new(build_kms(&host.settings())?);
            let mut config = kmshost::csi::DriverConfig {
                default_fs_type: driver.default_fs_type,
                ..Default::default()
            };
            if let Some(n) = driver.node_id {
                config.node_id = n;
            }
            if let Some(n) = driver.max_concurrent_unlocks {
                config.max_concurrent_unlocks = n;
            }
            config.shutdown_grace = std::time::Duration::from_secs(driver.shutdown_grace);
            if let Some(addr) = driver.metrics_address {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("--metrics-address {addr}"))?;
                tracing::info!(address = %addr, "metrics at /metrics");
                tokio::spawn(kmshost::telemetry::serve(listener));
            }
            match &driver.rbd_cluster_config {
                Some(path) => {
                    let clusters = kmshost::volume::rbd::ClusterConfig::load(path)
                        .with_context(|| format!("--rbd-cluster-config {}", path.display()))?;
                    kmshost::csi::run_rbd_driver(
                        kms,
                        clusters,
                        &driver.data_dir,
                        &driver.endpoint,
                        config,
                    )
                    .await?;
                }
                None => {
                    kmshost::csi::run_image_file_driver(
                        kms,
                        &driver.data_dir,
                        &driver.endpoint,
                        config,
                    )
                    .await?;
                }
            }
        }
        Command::Volume { endpoint, op } => volume(&endpoint, op).await?,
        Command::Plugins { host, validate } => {
            let kms = build_kms(&host.settings())?;
            let described = kms.describe()?;
            let mut out = std::io::stdout().lock();
            if !kmshost::cli::report::plugins(&kms, described, validate, &mut out).await? {
                std::process::exit(1);
            }
        }
        Command::Kms { op } => kms_op(op).await?,
    }
    Ok(())
}

/// `kmshost kms …`: one facade call on a kmsID.
async fn kms_op(op: KmsOp) -> Result<()> {
    let key = match &op {
        KmsOp::Put { key, .. }
        | KmsOp::Get { key, .. }
        | KmsOp::Delete { key }
        | KmsOp::Wrap { key, .. }
        | KmsOp::Rewrap { key, .. }
        | KmsOp::Unwrap { key, .. } => key.clone(),
    };
    let kms = build_kms(&key.host.settings())?;
    let key_id = KeyId::new(key.key_id.clone())?;
    let id = key.kms_id.as_str();
    match op {
        KmsOp::Put { input, text, .. } => {
            let v = read_input(&input, text)?;
            kms.tenant(None).put_verified(id, &key_id, &v).await?;
            eprintln!("stored {} bytes for {key_id}", v.len());
        }
        KmsOp::Get { out, reveal, .. } => {
            let v = kms.get(id, &key_id).await?;
            emit_secret(&v, &out, reveal)?;
        }
        KmsOp::Delete { .. } => {
            kms.delete(id, &key_id).await?;
            eprintln!("deleted {key_id}");
        }
        KmsOp::Wrap { input, text, .. } => {
            let v = read_input(&input, text)?;
            let w = kms.tenant(None).wrap_verified(id, &key_id, &v).await?;
            println!(
                "{}",
                base64::engine::general_purpose::STANDARD.encode(w.as_bytes())
            );
        }
        KmsOp::Unwrap {
            input, out, reveal, ..
        } => {
            let blob = read_blob(&input)?;
            let v = kms.unwrap(id, &key_id, &blob).await?;
            emit_secret(&v, &out, reveal)?;
        }
        KmsOp::Rewrap { input, .. } => {
            let blob = read_blob(&input)?;
            let w = kms.rewrap(id, &key_id, &blob).await?;
            println!(
                "{}",
                base64::engine::general_purpose::STANDARD.encode(w.as_bytes())
            );
        }
    }
    Ok(())
}

async fn volume(endpoint: &str, op: VolumeOp) -> Result<()> {
    use kmshost::csi::client::{Client, Source, parameters};
    let mut c = Client::connect(endpoint).await?;
    match op {
        VolumeOp::Probe => println!("{}", c.probe().await?),
        VolumeOp::Create {
            name,
            size,
            params,
            from_volume,
            from_snapshot,
        } => {
            let source = match (from_volume, from_snapshot) {
                (Some(v), _) => Source::Volume(v),
                (_, Some(s)) => Source::Snapshot(s),
                _ => Source::None,
            };
            let id = c
                .create_volume(name, &size, parameters(&params)?, source)
                .await?;
            println!("{id}");
        }
        VolumeOp::Delete { id } => c.delete_volume(id).await?,
        VolumeOp::List => {
            for line in c.list_volumes().await? {
                println!("{line}");
            }
        }
        VolumeOp::Stage {
            id,
            staging,
            block,
            fs_type,
        } => c.stage(id, &staging, block, &fs_type).await?,
        VolumeOp::Unstage { id, staging } => c.unstage(id, &staging).await?,
        VolumeOp::Publish {
            id,
            staging,
            target,
            block,
            readonly,
        } => c.publish(id, &staging, &target, block, readonly).await?,
        VolumeOp::Unpublish { id, target } => c.unpublish(id, &target).await?,
        VolumeOp::Expand { id, size, path } => {
            let (controller, node) = c.expand(id, &size, path.as_deref()).await?;
            println!("controller: {controller} bytes");
            if let Some(n) = node {
                println!("node: {n} bytes");
            }
        }
        VolumeOp::Snapshot { name, volume } => println!("{}", c.snapshot(name, volume).await?),
        VolumeOp::DeleteSnapshot { id } => c.delete_snapshot(id).await?,
        VolumeOp::RotateKey { id } => c.rotate_key(id).await?,
    }
    Ok(())
}
