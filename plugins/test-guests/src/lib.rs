//! Shared bits of the sandbox test guests.
use kmshost_plugin_sdk::{Capabilities, PluginInfo};

/// The info every test guest reports.
pub fn info(name: &str) -> PluginInfo {
    PluginInfo {
        name: name.into(),
        version: "0.0.0".into(),
        capabilities: Capabilities::WRAP,
        description: "kmshost sandbox test guest".into(),
    }
}

/// An 8-byte FNV-1a tag of `key_id`: what the wrapping guests put in front
/// of a blob to bind it to its key-id.
pub fn tag(key_id: &str) -> [u8; 8] {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in key_id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    h.to_le_bytes()
}
