//! `kmshost plugin inspect`: what a security reviewer reads first.

use crate::sandbox::{Sandbox, SandboxConfig, plugin_text};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use wasmtime::component::{Component, types::ComponentItem};

/// What `inspect` found.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The human-readable report.
    pub report: String,
    /// Whether the host would load it (the same check as loading).
    pub loads: bool,
}

/// A human-readable report: sha256, size, imports, exports, and whether the
/// host would load it as a kms-plugin — and if not, why. Names come from
/// the component and are capped and escaped.
pub fn inspect(wasm: &[u8]) -> Result<Inspection, String> {
    let sandbox = Sandbox::new(SandboxConfig::default()).map_err(|e| e.to_string())?;
    let engine = sandbox.engine();
    let component =
        Component::new(engine, wasm).map_err(|e| format!("not a loadable component: {e:#}"))?;
    let ty = component.component_type();
    let mut out = String::new();
    let _ = writeln!(out, "sha256:  {}", hex::encode(Sha256::digest(wasm)));
    let _ = writeln!(out, "size:    {} bytes", wasm.len());
    let imports: Vec<String> = ty
        .imports(engine)
        .map(|(n, i)| describe(n, &i.ty))
        .collect();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(n, i)| describe(n, &i.ty))
        .collect();
    let world_ok = exports
        .iter()
        .any(|e| e.starts_with("kmshost:plugin/provider@0.1"));
    let _ = writeln!(
        out,
        "world:   {}",
        if world_ok {
            "kmshost:plugin/kms-plugin@0.1 (exports kmshost:plugin/provider)"
        } else {
            "NOT a kmshost plugin (does not export kmshost:plugin/provider@0.1)"
        }
    );
    let verdict = sandbox.check_links(&component);
    let _ = match &verdict {
        Ok(()) => writeln!(out, "loads:   yes"),
        Err(why) => writeln!(out, "loads:   NO, it will not load: it {why}"),
    };
    let _ = writeln!(out, "imports: ({})", imports.len());
    for i in &imports {
        let note = capability_note(i);
        let _ = writeln!(out, "  {i}{note}");
    }
    let _ = writeln!(out, "exports: ({})", exports.len());
    for e in &exports {
        let _ = writeln!(out, "  {e}");
    }
    Ok(Inspection {
        report: out,
        loads: verdict.is_ok(),
    })
}

fn describe(name: &str, item: &ComponentItem) -> String {
    let kind = match item {
        ComponentItem::ComponentFunc(_) => "func",
        ComponentItem::CoreFunc(_) => "core func",
        ComponentItem::Module(_) => "module",
        ComponentItem::Component(_) => "component",
        ComponentItem::ComponentInstance(_) => "instance",
        ComponentItem::Type(_) => "type",
        ComponentItem::Resource(_) => "resource",
    };
    format!("{} ({kind})", plugin_text::sanitize_to(name, 256))
}

fn capability_note(import: &str) -> &'static str {
    if import.starts_with("wasi:http/outgoing-handler")
        || import.starts_with("kmshost:plugin/outbound-http")
    {
        "  — network: only the kmsID's allowed hosts"
    } else if import.starts_with("kmshost:plugin/secrets") {
        "  — only Secrets granted to the kmsID"
    } else if import.starts_with("wasi:filesystem") {
        "  — no directories are preopened: no file access"
    } else if import.starts_with("wasi:sockets") {
        "  — denied: every socket operation fails"
    } else if import.starts_with("wasi:cli/environment") {
        "  — empty environment"
    } else if import.starts_with("wasi:cli/std") {
        "  — stdin empty; output captured (bounded) into the debug log"
    } else {
        ""
    }
}
