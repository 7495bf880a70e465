//! Builds the plugin workspace (`plugins/`) for `wasm32-wasip2` and exposes
//! the results to the host:
//!
//! * `$OUT_DIR/{secret,vault,kmip,keyprotect,pkcs11,azure}.wasm` — the first-party plugins (`include_bytes!`);
//! * `$OUT_DIR/test_guests.rs` — one `pub const NAME: &str` path per sandbox
//!   test guest (`plugins/test-guests/examples/*.rs`), and the macro
//!   `foreach_test_guest!` that the sandbox tests use to require a test per
//!   guest (wasmtime's test-programs pattern).
//!
//! The plugin workspace has its own target directory (`target/plugins`, or
//! `$KMSHOST_PLUGIN_TARGET_DIR`) so this nested cargo never waits on the
//! outer build's lock.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The gRPC services kmshost serves, generated without protoc from the
/// hand-written messages in `src/csi/proto.rs`: (package, service, methods).
const SERVICES: &[(&str, &str, &[&str])] = &[
    (
        "csi.v1",
        "Identity",
        &["GetPluginInfo", "GetPluginCapabilities", "Probe"],
    ),
    (
        "csi.v1",
        "Controller",
        &[
            "CreateVolume",
            "DeleteVolume",
            "ValidateVolumeCapabilities",
            "ListVolumes",
            "GetCapacity",
            "ControllerGetCapabilities",
            "CreateSnapshot",
            "DeleteSnapshot",
            "ControllerExpandVolume",
        ],
    ),
    (
        "csi.v1",
        "Node",
        &[
            "NodeStageVolume",
            "NodeUnstageVolume",
            "NodePublishVolume",
            "NodeUnpublishVolume",
            "NodeGetVolumeStats",
            "NodeExpandVolume",
            "NodeGetCapabilities",
            "NodeGetInfo",
        ],
    ),
    (
        "encryptionkeyrotation",
        "EncryptionKeyRotationController",
        &["EncryptionKeyRotate"],
    ),
    // csi-addons' own Identity: its sidecar asks it before it offers the
    // rotation to the cluster. `Probe` has the same messages as CSI's.
    (
        "identity",
        "Identity",
        &["GetIdentity", "GetCapabilities", "Probe"],
    ),
];

fn snake(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn grpc_services() {
    let services: Vec<_> = SERVICES
        .iter()
        .map(|(package, name, methods)| {
            let mut b = tonic_build::manual::Service::builder()
                .name(*name)
                .package(*package);
            for m in *methods {
                b = b.method(
                    tonic_build::manual::Method::builder()
                        .name(snake(m))
                        .route_name(*m)
                        .input_type(format!("crate::csi::proto::{m}Request"))
                        .output_type(format!("crate::csi::proto::{m}Response"))
                        .codec_path("tonic_prost::ProstCodec")
                        .build(),
                );
            }
            b.build()
        })
        .collect();
    tonic_build::manual::Builder::new()
        .build_transport(false)
        .compile(&services);
}

fn main() {
    // The sandbox names its compilation target (see sandbox::portable_target).
    println!(
        "cargo:rustc-env=KMSHOST_TARGET={}",
        env::var("TARGET").unwrap()
    );
    peers_cfg();
    grpc_services();
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let plugins = root.join("plugins");
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let target_dir = env::var_os("KMSHOST_PLUGIN_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target").join("plugins"));

    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    for sub in [
        "Cargo.toml",
        "Cargo.lock",
        "sdk",
        "secret",
        "vault",
        "kmip",
        "keyprotect",
        "pkcs11",
        "azure",
        "test-guests",
    ] {
        println!("cargo:rerun-if-changed={}", plugins.join(sub).display());
    }
    println!("cargo:rerun-if-env-changed=KMSHOST_PLUGIN_TARGET_DIR");

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&plugins)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--workspace",
            "--lib",
            "--examples",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    // Do not inherit the outer build's flags or wrappers (clippy, coverage):
    // the plugins are a separate build for a separate target.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("running cargo for the plugin workspace");
    if !status.success() {
        panic!(
            "building the plugin workspace failed.\n\
             kmshost plugins are WebAssembly components: install the target with\n\
             `rustup target add wasm32-wasip2` and see the errors above."
        );
    }

    let wasm_dir = target_dir.join("wasm32-wasip2").join("release");
    for plugin in ["secret", "vault", "kmip", "keyprotect", "pkcs11", "azure"] {
        copy(
            &wasm_dir.join(format!("kmshost_plugin_{plugin}.wasm")),
            &out_dir.join(format!("{plugin}.wasm")),
        );
    }

    let mut guests: Vec<String> = std::fs::read_dir(plugins.join("test-guests").join("examples"))
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "rs").then(|| p.file_stem()?.to_str().map(str::to_string))?
        })
        .collect();
    guests.sort();
    let mut src =
        String::from("// Generated by host/build.rs: paths of the sandbox test guests.\n");
    for g in &guests {
        let path = wasm_dir.join("examples").join(format!("{g}.wasm"));
        assert!(
            path.exists(),
            "test guest {g} was not built at {}",
            path.display()
        );
        writeln!(
            src,
            "/// Path of the `{g}` test guest component.\n#[allow(dead_code)]\npub const {}: &str = {:?};",
            g.to_uppercase(),
            path.display().to_string()
        )
        .unwrap();
    }
    src.push_str("/// Calls `$mac!(name)` for every test guest.\n#[allow(unused_macros)]\nmacro_rules! foreach_test_guest {\n    ($mac:ident) => {\n");
    for g in &guests {
        writeln!(src, "        $mac!({g});").unwrap();
    }
    src.push_str("    };\n}\n");
    std::fs::write(out_dir.join("test_guests.rs"), src).unwrap();
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), to.display()));
}

/// `cfg(peers_missing)` when OpenBao or PyKMIP cannot be found and peers are not
/// required: the peer tests are then reported as *ignored*, with the
/// reason, by a plain `cargo test` (scripts/test.sh requires them, so
/// there they run or fail).
fn peers_cfg() {
    println!("cargo:rustc-check-cfg=cfg(peers_missing)");
    println!("cargo:rerun-if-env-changed=KMSHOST_BAO");
    println!("cargo:rerun-if-env-changed=KMSHOST_PYKMIP");
    println!("cargo:rerun-if-env-changed=KMSHOST_REQUIRE_PEERS");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let venv_bao = manifest.join("../target/peers-venv/bin/bao");
    if venv_bao.exists() {
        println!("cargo:rerun-if-changed={}", venv_bao.display());
    }
    // A venv installed after a plain build is seen at the next change of
    // these variables (scripts/test.sh sets both).
    let venv_kmip = manifest.join("../target/peers-venv/bin/pykmip-server");
    let found = (env::var_os("KMSHOST_BAO").is_some() || venv_bao.exists())
        && (env::var_os("KMSHOST_PYKMIP").is_some() || venv_kmip.exists());
    if !found && env::var_os("KMSHOST_REQUIRE_PEERS").is_none() {
        println!("cargo:rustc-cfg=peers_missing");
    }
}
