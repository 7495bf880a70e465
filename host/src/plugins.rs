//! First-party plugins built into the binary (see `host/build.rs`).

/// The `secret` plugin: the embedded default.
pub static SECRET_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/secret.wasm"));

/// The `vault` plugin: HashiCorp Vault / OpenBao.
pub static VAULT_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/vault.wasm"));

/// The `kmip` plugin: KMIP servers over host-terminated TLS streams.
pub static KMIP_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kmip.wasm"));

/// The `keyprotect` plugin: IBM Key Protect and Hyper Protect Crypto
/// Services.
pub static KEYPROTECT_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/keyprotect.wasm"));

/// The `pkcs11` plugin: HSM root keys through the host's PKCS#11.
pub static PKCS11_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pkcs11.wasm"));

/// The `azure` plugin: Azure Key Vault secrets, client-certificate login.
pub static AZURE_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/azure.wasm"));

/// The embedded plugins, by name.
pub static EMBEDDED: &[(&str, &[u8])] = &[
    ("secret", SECRET_WASM),
    ("vault", VAULT_WASM),
    ("kmip", KMIP_WASM),
    ("keyprotect", KEYPROTECT_WASM),
    ("pkcs11", PKCS11_WASM),
    ("azure", AZURE_WASM),
];

/// The embedded plugin called `name`, if any.
pub fn embedded(name: &str) -> Option<(&'static str, &'static [u8])> {
    EMBEDDED.iter().find(|(n, _)| *n == name).copied()
}
