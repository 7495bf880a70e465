//! `kmshost plugins`: each kmsID with its plugin, allowed hosts and granted
//! Secret names (never values), and with `--validate` whether its plugin
//! loads and accepts its options.

use crate::kms::{Kms, KmsDescription, KmsError};
use std::io::Write;

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items.join(", ")
    }
}

fn describe(out: &mut impl Write, d: &KmsDescription) -> std::io::Result<()> {
    writeln!(out, "{}", d.kms_id)?;
    writeln!(out, "  type:            {}", d.kms_type)?;
    writeln!(out, "  plugin:          {}", d.plugin)?;
    let capabilities = match &d.capabilities {
        Some(c) => c
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        None => "undeclared (no manifest: wrap is tried, then store)".into(),
    };
    writeln!(out, "  capabilities:    {capabilities}")?;
    writeln!(out, "  allowed hosts:   {}", list(&d.allowed_hosts))?;
    writeln!(out, "  granted secrets: {}", list(&d.granted_secrets))
}

/// Writes the report on `described` (from [`Kms::describe`]) to `out`;
/// whether every kmsID is usable.
pub async fn plugins(
    kms: &Kms,
    described: Vec<Result<KmsDescription, KmsError>>,
    validate: bool,
    out: &mut impl Write,
) -> std::io::Result<bool> {
    let mut usable = true;
    for d in described {
        let d = match d {
            Ok(d) => d,
            Err(e) => {
                usable = false;
                writeln!(out, "ERROR: {e}")?;
                continue;
            }
        };
        describe(out, &d)?;
        if !validate {
            continue;
        }
        match kms.validate(&d.kms_id).await {
            Ok(()) => writeln!(out, "  options:         valid")?,
            Err(e) => {
                usable = false;
                match e {
                    KmsError::PluginLoad { .. } => {
                        writeln!(out, "  plugin:          UNUSABLE: {e}")?
                    }
                    _ => writeln!(out, "  options:         INVALID: {e}")?,
                }
            }
        }
    }
    Ok(usable)
}
