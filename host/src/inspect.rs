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
    let manifest = manifest_report(&mut out, wasm);
    let verdict = sandbox.check_links(&component).and(manifest);
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

/// The manifest, as an admin reads it: types, capabilities, and each
/// option with what the host does with it. An invalid manifest is the
/// reason the plugin will not load.
fn manifest_report(out: &mut String, wasm: &[u8]) -> Result<(), String> {
    let m = match crate::manifest::read(wasm) {
        Err(e) => {
            let e = plugin_text::sanitize_to(&e.to_string(), 512);
            let _ = writeln!(out, "manifest: INVALID: {e}");
            return Err(format!("has an invalid manifest: {e}"));
        }
        Ok(d) => match d.manifest {
            None => {
                let _ = writeln!(
                    out,
                    "manifest: none — the admin lists its endpoints in allowedHosts and its Secrets in kmshostSecrets; options reach it unchecked"
                );
                return Ok(());
            }
            Some(m) => m,
        },
    };
    let text = |s: &str| plugin_text::sanitize_to(s, 256);
    let _ = writeln!(
        out,
        "manifest: {} (contract {})",
        text(&m.name),
        text(&m.contract)
    );
    if !m.description.is_empty() {
        let _ = writeln!(out, "  {}", text(&m.description));
    }
    for (t, spec) in &m.types {
        let caps: Vec<String> = spec.capabilities.iter().map(|c| c.to_string()).collect();
        let sa = if spec.service_account {
            ", service-account token"
        } else {
            ""
        };
        let _ = writeln!(out, "  type {}: {}{sa}", text(t), caps.join(", "));
    }
    let _ = writeln!(out, "options: ({})", m.options.len());
    for o in &m.options {
        let _ = writeln!(out, "  {}", option_line(o));
    }
    Ok(())
}

/// One option of a manifest: spellings, kind, default, and what the host
/// does with its value.
fn option_line(o: &crate::manifest::OptionSpec) -> String {
    use crate::manifest::OptionKind as K;
    let names: Vec<String> = o
        .spellings()
        .map(|s| plugin_text::sanitize_to(s, 128))
        .collect();
    let mut line = format!("{} [{:?}]", names.join(" | "), o.kind);
    if o.required {
        line.push_str(" required");
    }
    if let Some(d) = &o.default {
        let _ = write!(line, " default {}", plugin_text::sanitize_to(d, 128));
    }
    if let Some(h) = o.default_from {
        let _ = write!(line, " default from the host ({h:?})");
    }
    if !o.types.is_empty() {
        let _ = write!(
            line,
            " (types {})",
            plugin_text::sanitize_to(&o.types.join(", "), 256)
        );
    }
    let host = match o.kind {
        K::Endpoint => " — its host is allowed",
        K::Secret => " — the Secret is granted",
        k if k.is_tls() => " — read by the host, never passed to the plugin",
        _ => "",
    };
    line + host
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
    } else if import.starts_with("kmshost:plugin/tls-stream") {
        "  — TLS byte streams: only the kmsID's allowed tls:// endpoints; TLS keys stay in the host"
    } else if import.starts_with("kmshost:plugin/signing") {
        "  — signatures by a granted certificate's key: the key and its Secret stay in the host"
    } else if import.starts_with("kmshost:plugin/hsm") {
        "  — HSM keys by label: only labels granted to the kmsID; module, PIN and keys stay in the host"
    } else if import.starts_with("kmshost:plugin/rewrap") {
        "  — only during unwrap, once, checked before the host keeps it"
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
