//! The `kmshost` binary: argument parsing only; the work is in the library.

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use clap::{Args, Parser, Subcommand};
use kmshost::host_setup::{HostSettings, build_kms};
use kmshost::kms::{KeyId, SecretBytes, WrappedKey};
use std::io::{Read, Write};
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
        }
    }
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
    /// Store a key: read from stdin (or --in), never from the command line.
    Put {
        #[command(flatten)]
        key: KeyArgs,
        /// Read the key from this file instead of stdin.
        #[arg(long = "in")]
        input: Option<PathBuf>,
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
    /// Wrap a key read from stdin (or --in); prints the blob in base64.
    Wrap {
        #[command(flatten)]
        key: KeyArgs,
        /// Read the key from this file instead of stdin.
        #[arg(long = "in")]
        input: Option<PathBuf>,
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
}

fn read_input(input: &Option<PathBuf>) -> Result<SecretBytes> {
    let mut buf = Vec::new();
    match input {
        Some(p) => buf = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => {
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading stdin")?;
        }
    }
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    if buf.is_empty() {
        bail!("no input: pipe the value on stdin or pass --in FILE");
    }
    Ok(SecretBytes::new(buf))
}

fn read_blob(input: &Option<PathBuf>) -> Result<WrappedKey> {
    let blob = read_input(input)?;
    let text = std::str::from_utf8(blob.expose()).context("blob is not base64 text")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .context("blob is not base64")?;
    Ok(WrappedKey::new(raw))
}

fn emit_secret(value: &SecretBytes, out: &Option<PathBuf>, reveal: bool) -> Result<()> {
    match (out, reveal) {
        (Some(p), _) => {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(p)
                .with_context(|| format!("writing {}", p.display()))?;
            f.write_all(value.expose())?;
            eprintln!("wrote {} bytes to {}", value.len(), p.display());
        }
        (None, true) => {
            let mut o = std::io::stdout();
            o.write_all(value.expose())?;
            o.write_all(b"\n")?;
        }
        (None, false) => {
            eprintln!(
                "ok: {} bytes (not shown: pass --reveal or --out FILE)",
                value.len()
            );
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cli.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();

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
            let report = kmshost::inspect::inspect(&wasm).map_err(anyhow::Error::msg)?;
            print!("{report}");
        }
        Command::Plugins { host, validate } => {
            let kms = build_kms(&host.settings())?;
            let mut failed = false;
            for d in kms.describe()? {
                match d {
                    Ok(d) => {
                        println!("{}", d.kms_id);
                        println!("  type:            {}", d.kms_type);
                        println!("  plugin:          {}", d.plugin);
                        println!(
                            "  allowed hosts:   {}",
                            if d.allowed_hosts.is_empty() {
                                "(none)".into()
                            } else {
                                d.allowed_hosts.join(", ")
                            }
                        );
                        println!(
                            "  granted secrets: {}",
                            if d.granted_secrets.is_empty() {
                                "(none)".into()
                            } else {
                                d.granted_secrets.join(", ")
                            }
                        );
                        if validate {
                            match kms.runtime(&d.kms_id).await {
                                Ok(rt) => match rt.validate().await {
                                    Ok(()) => println!("  options:         valid"),
                                    Err(e) => {
                                        failed = true;
                                        println!("  options:         INVALID: {e}");
                                    }
                                },
                                Err(e) => {
                                    failed = true;
                                    println!("  plugin:          UNUSABLE: {e}");
                                }
                            }
                        }
                    }
                    Err(e) => {
                        failed = true;
                        println!("ERROR: {e}");
                    }
                }
            }
            if failed {
                std::process::exit(1);
            }
        }
        Command::Kms { op } => {
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
                KmsOp::Put { input, .. } => {
                    let v = read_input(&input)?;
                    kms.put(id, &key_id, &v).await?;
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
                KmsOp::Wrap { input, .. } => {
                    let v = read_input(&input)?;
                    let w = kms.wrap(id, &key_id, &v).await?;
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
        }
    }
    Ok(())
}
