//! SoftHSM2, a real software HSM behind the real PKCS#11 interface: one
//! token directory per test binary, tokens initialised with
//! `softhsm2-util` before the module is first loaded.
//!
//! SoftHSM reads its configuration from `SOFTHSM2_CONF` when the module is
//! initialised, so [`softhsm`] sets it once, inside a `OnceLock`, before
//! any test of the binary touches PKCS#11 (every such test calls it first).

use std::path::PathBuf;
use std::sync::OnceLock;

/// Debian's module.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The user PIN of every test token.
pub const PIN: &str = "5281-not-a-real-pin";
/// The tokens each binary gets.
pub const TOKENS: &[&str] = &["kmshost-a", "kmshost-b"];
/// The AES-256 keys generated on each token before any test runs (SoftHSM2's
/// file store fails, CKR_GENERAL_ERROR, when a session creates token objects
/// while other sessions of the process use the token; the driver itself
/// never creates keys).
pub const KEYS: &[&str] = &["key-1", "key-2", "key-3"];

/// The token directory, with [`TOKENS`] initialised; `None` (after saying
/// why) when SoftHSM2 is not installed and peers are not required.
pub fn softhsm(test: &str) -> Option<PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let util = std::path::Path::new("/usr/bin/softhsm2-util");
        if !util.exists() || !std::path::Path::new(MODULE).exists() {
            assert!(
                std::env::var_os("KMSHOST_REQUIRE_PEERS").is_none(),
                "SoftHSM2 is required (scripts/bootstrap.sh with KMSHOST_BOOTSTRAP_PEERS=1 installs softhsm2)"
            );
            return None;
        }
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("softhsm-{}", std::process::id()));
        // A directory of this pid is a dead process's (the QEMU guest's
        // pids repeat from boot to boot): its tokens would hold that run's
        // keys too, so start empty.
        let _ = std::fs::remove_dir_all(&dir);
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        // SAFETY: run once, before any thread of this binary loads the
        // module or reads the environment for it (every PKCS#11 test waits
        // on this OnceLock first).
        unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
        for label in TOKENS {
            let out = std::process::Command::new(util)
                .args(["--init-token", "--free", "--label", label])
                .args(["--so-pin", "12345678", "--pin", PIN])
                .output()
                .unwrap();
            assert!(out.status.success(), "softhsm2-util: {}", String::from_utf8_lossy(&out.stderr));
        }
        let modules =
            kmshost::capability::hsm::HsmModules::parse([format!("softhsm={MODULE}").as_str()])
                .unwrap();
        for label in TOKENS {
            let t = modules
                .token("softhsm", label, kmshost::types::SecretBytes::new(PIN.into()))
                .unwrap();
            for k in KEYS {
                t.generate_aes(k).unwrap();
            }
        }
        Some(dir)
    })
    .clone()
    .or_else(|| {
        eprintln!("skipping {test}: SoftHSM2 is not installed");
        None
    })
}
