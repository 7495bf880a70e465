//! `kmshost plugin new NAME`: a starter plugin crate that builds and passes
//! `kmshost plugin test` unchanged — an AES-256-GCM envelope under a KEK
//! from a granted Secret, with its manifest. The files are the templates in
//! `host/templates/plugin/`; docs/plugin-guide.md shows the same code
//! (tests/vendor_kit.rs checks they agree, builds the starter and runs the
//! suite on it).

use std::path::{Path, PathBuf};

/// Where the starter takes the SDK from.
#[derive(Debug, Clone)]
pub enum Sdk {
    /// The published crate (`kmshost-plugin-sdk = "0.1"`).
    Registry,
    /// A local copy: a checkout's `plugins/sdk`, or an unpacked package.
    Path(PathBuf),
}

/// Why the starter was not written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name cannot be a type and crate name.
    #[error(
        "plugin name {0:?}: use lower-case letters, digits and '-', starting with a letter (at most 40)"
    )]
    Name(String),
    /// The directory exists and is not empty: nothing is overwritten.
    #[error("{0} exists and is not empty; nothing was written")]
    NotEmpty(PathBuf),
    /// Writing failed.
    #[error("writing {path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        message: String,
    },
}

/// The template files: (path in the crate, contents with placeholders).
const FILES: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../templates/plugin/Cargo.toml.tmpl"),
    ),
    (
        ".cargo/config.toml",
        include_str!("../../templates/plugin/.cargo/config.toml"),
    ),
    (
        "kmshost-plugin.json",
        include_str!("../../templates/plugin/kmshost-plugin.json.tmpl"),
    ),
    (
        "src/lib.rs",
        include_str!("../../templates/plugin/src/lib.rs.tmpl"),
    ),
    (
        "README.md",
        include_str!("../../templates/plugin/README.md.tmpl"),
    ),
    (
        ".gitignore",
        include_str!("../../templates/plugin/gitignore.tmpl"),
    ),
];

/// The text of template `file` for plugin `name`.
pub fn render(file: &str, name: &str, sdk: &Sdk) -> Option<String> {
    let (_, text) = FILES.iter().find(|(f, _)| *f == file)?;
    let sdk_line = match sdk {
        Sdk::Registry => "kmshost-plugin-sdk = \"0.1\"".to_string(),
        Sdk::Path(p) => format!(
            "kmshost-plugin-sdk = {{ path = {:?} }}",
            p.display().to_string()
        ),
    };
    Some(
        text.replace("{{crate_file}}", &name.replace('-', "_"))
            .replace("{{crate}}", name)
            .replace("{{name}}", name)
            .replace("{{prefix}}", &name.to_ascii_uppercase().replace('-', "_"))
            .replace("{{sdk}}", &sdk_line)
            .replace("{{contract}}", crate::manifest::CONTRACT),
    )
}

/// Writes the starter for plugin `name` into `dir` (created; it must not
/// hold anything yet). Returns the files written.
pub fn new_plugin(dir: &Path, name: &str, sdk: &Sdk) -> Result<Vec<PathBuf>, ScaffoldError> {
    let valid = name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid {
        return Err(ScaffoldError::Name(name.to_string()));
    }
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(ScaffoldError::NotEmpty(dir.to_path_buf()));
    }
    let mut written = Vec::new();
    for (file, _) in FILES {
        let path = dir.join(file);
        let io = |e: std::io::Error| ScaffoldError::Io {
            path: path.clone(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(path.parent().unwrap_or(dir)).map_err(io)?;
        let text = render(file, name, sdk).unwrap_or_default();
        std::fs::write(&path, text).map_err(io)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "Acme", "1acme", "acme_kms", "a/b", &"a".repeat(41)] {
            assert!(
                matches!(
                    new_plugin(&dir.path().join("x"), bad, &Sdk::Registry),
                    Err(ScaffoldError::Name(_))
                ),
                "{bad:?}"
            );
        }
        let target = dir.path().join("acme");
        let files = new_plugin(&target, "acme-kms", &Sdk::Registry).unwrap();
        assert_eq!(files.len(), FILES.len());
        let cargo = std::fs::read_to_string(target.join("Cargo.toml")).unwrap();
        assert!(
            cargo.contains("name = \"acme-kms\"") && cargo.contains("kmshost-plugin-sdk = \"0.1\"")
        );
        let lib = std::fs::read_to_string(target.join("src/lib.rs")).unwrap();
        assert!(
            lib.contains("\"ACME_KMS_SECRET_NAME\"") && !lib.contains("{{"),
            "{lib}"
        );
        assert!(matches!(
            new_plugin(&target, "acme-kms", &Sdk::Registry),
            Err(ScaffoldError::NotEmpty(_))
        ));
    }

    #[test]
    fn a_local_sdk_is_a_path_dependency() {
        let t = render("Cargo.toml", "x", &Sdk::Path("/opt/sdk".into())).unwrap();
        assert!(
            t.contains("kmshost-plugin-sdk = { path = \"/opt/sdk\" }"),
            "{t}"
        );
    }
}
