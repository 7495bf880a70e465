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
