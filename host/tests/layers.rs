//! The house's rule, checked: a module uses only modules below it
//! (docs/architecture.md has the sketch). Every `crate::<module>` path in
//! code — not in comments — under `src/<module>` must name a lower layer.

use std::path::Path;

/// Bottom (0) to top. A module may use only modules of a lower number.
const LAYERS: &[(&str, u8)] = &[
    ("types", 0),
    ("deadline", 1),
    ("watch", 1),
    ("plugins", 1),
    ("plugin_text", 1),
    ("telemetry", 1),
    ("capability", 2),
    ("manifest", 2),
    ("secrets", 3),
    ("signing", 3),
    ("fetch", 4),
    ("sandbox", 4),
    ("config", 5),
    ("kms", 6),
    ("luks", 7),
    ("volume", 8),
    ("csi", 9),
    ("inspect", 9),
    ("logging", 9),
    ("cli", 10),
    ("host_setup", 10),
    ("demo", 11),
    ("conformance", 11),
];

fn rank(module: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(m, _)| *m == module)
        .unwrap_or_else(|| panic!("module {module} has no layer in tests/layers.rs"))
        .1
}

/// Modules named by `crate::x` in the code of `text` (comments skipped).
fn uses(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
        // `use crate::{a, b}` names several at once.
        if let Some(i) = code.find("crate::{") {
            for part in code[i + "crate::{".len()..].split([',', '}']) {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.push(name);
                }
            }
        }
    }
    found
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn layers_only_call_downwards() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut wrong = Vec::new();
    for path in all {
        let rel = path.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs");
        if module == "main" || module == "lib" {
            continue;
        }
        let own = rank(module);
        for used in uses(&std::fs::read_to_string(&path).unwrap()) {
            if used != module && rank(&used) >= own {
                wrong.push(format!("{} uses crate::{used}", rel.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "upward or sideways uses:\n{}",
        wrong.join("\n")
    );
}

/// The checker itself finds uses in code, never in comments.
#[test]
fn uses_are_read_from_code_only() {
    let text = "use crate::kms::KmsError;\n/// see [`crate::csi`]\nlet x = crate::net::f(); // crate::demo\nuse crate::{types::KmsId, sandbox};";
    assert_eq!(uses(text), ["kms", "net", "types", "sandbox"]);
}
