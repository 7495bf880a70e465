//! The kmsID's options as handed to `configure`.

use crate::{KmsError, Result, invalid_config};
use std::collections::BTreeMap;

/// The options of a kmsID. Take what you understand; [`Options::finish`]
/// (called by the SDK after `configure`) rejects whatever is left, naming it.
#[derive(Debug, Clone)]
pub struct Options {
    remaining: BTreeMap<String, String>,
    kms_type: Option<String>,
}

/// The option that names the kmsID's type; always passed by the host.
pub const KMS_TYPE_OPTION: &str = "encryptionKMSType";

impl Options {
    /// Wraps the (name, value) pairs the host passed.
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        let mut remaining: BTreeMap<String, String> = pairs.into_iter().collect();
        let kms_type = remaining.remove(KMS_TYPE_OPTION);
        Options {
            remaining,
            kms_type,
        }
    }

    /// The kmsID's `encryptionKMSType` (one plugin may serve several).
    pub fn kms_type(&self) -> Option<&str> {
        self.kms_type.as_deref()
    }

    /// Takes an optional option; an empty value counts as absent.
    pub fn take(&mut self, name: &str) -> Option<String> {
        if name == KMS_TYPE_OPTION {
            return self.kms_type.clone();
        }
        self.remaining.remove(name).filter(|v| !v.is_empty())
    }

    /// Takes the first present option of several spellings (for example a
    /// ceph-csi name and its legacy alias). Every spelling is consumed.
    pub fn take_any(&mut self, names: &[&str]) -> Option<String> {
        let mut found = None;
        for n in names {
            let v = self.take(n);
            if found.is_none() {
                found = v;
            }
        }
        found
    }

    /// Takes a required option. When it is missing but a leftover option
    /// is a near spelling of it, the error names that one, the admin's
    /// typo, rather than calling the option missing.
    pub fn required(&mut self, name: &str) -> Result<String> {
        if let Some(v) = self.take(name) {
            return Ok(v);
        }
        match self.misspelling_of(name) {
            Some(typo) => Err(invalid_config(
                &typo,
                format!("is not a known option; did you mean {name}?"),
            )),
            None => Err(invalid_config(name, "is required")),
        }
    }

    /// A leftover option within a couple of edits of `name`.
    fn misspelling_of(&self, name: &str) -> Option<String> {
        let limit = (name.len() / 4).max(2);
        self.remaining
            .keys()
            .map(|k| {
                (
                    edit_distance(&k.to_ascii_lowercase(), &name.to_ascii_lowercase()),
                    k,
                )
            })
            .filter(|(d, _)| *d <= limit)
            .min()
            .map(|(_, k)| k.clone())
    }

    /// Takes an optional option, with a default.
    pub fn or(&mut self, name: &str, default: &str) -> String {
        self.take(name).unwrap_or_else(|| default.to_string())
    }

    /// Takes a boolean option (`true`/`false`, any case), with a default.
    pub fn bool(&mut self, name: &str, default: bool) -> Result<bool> {
        match self.take(name) {
            None => Ok(default),
            Some(v) => parse_bool(&v)
                .ok_or_else(|| invalid_config(name, format!("must be true or false, not {v:?}"))),
        }
    }

    /// Takes an unsigned integer option, with a default.
    pub fn u64(&mut self, name: &str, default: u64) -> Result<u64> {
        match self.take(name) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| invalid_config(name, format!("must be a whole number, not {v:?}"))),
        }
    }

    /// Fails with `invalid-config` naming the first option nobody took.
    pub fn finish(self) -> Result<()> {
        match self.remaining.into_keys().next() {
            None => Ok(()),
            Some(name) => Err(invalid_config(
                &name,
                "is not a known option of this provider",
            )),
        }
    }
}

/// Checks that option `name`'s `value` is a plain identifier, safe in a
/// URL path or a header unescaped: 1 to 256 ASCII letters, digits, `-`,
/// `_`, `.` or a byte of `also`. Otherwise `invalid-config` naming the
/// option, with `must_be` (e.g. "must be a GUID") as the message.
pub fn check_identifier(name: &str, value: &str, also: &[u8], must_be: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 256
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b) || also.contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid_config(name, must_be))
    }
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

impl From<std::string::FromUtf8Error> for KmsError {
    fn from(_: std::string::FromUtf8Error) -> Self {
        KmsError::Other("response is not UTF-8".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> Options {
        Options::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn identifiers_are_plain_and_bounded() {
        let long = "a".repeat(257);
        for (value, also, ok) in [
            ("inst-1_a.b", &b""[..], true),
            ("us-south", b"", true),
            (&long[..256], b"", true),
            (&long[..], b"", false),
            ("", b"", false),
            ("crn:v1:x", b"", false),
            ("crn:v1:x", b":", true),
            ("a/b", b":", false),
            ("a b", b"", false),
            ("a%2f", b"", false),
            ("é", b"", false),
        ] {
            match check_identifier("OPT", value, also, "must be an ID") {
                Ok(()) => assert!(ok, "{value:?} accepted"),
                Err(KmsError::InvalidConfig(c)) => {
                    assert!(!ok, "{value:?} refused");
                    assert_eq!(
                        (c.option.as_str(), c.message.as_str()),
                        ("OPT", "must be an ID")
                    );
                }
                Err(e) => panic!("{e:?}"),
            }
        }
    }

    #[test]
    fn leftovers_are_reported_by_name() {
        let mut o = opts(&[
            ("encryptionKMSType", "vault"),
            ("vaultAddress", "https://v"),
            ("vaultAdress", "typo"),
        ]);
        assert_eq!(o.kms_type(), Some("vault"));
        assert_eq!(o.required("vaultAddress").unwrap(), "https://v");
        match o.finish() {
            Err(KmsError::InvalidConfig(c)) => assert_eq!(c.option, "vaultAdress"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_misspelt_required_option_is_named_as_the_typo() {
        let mut o = opts(&[("ACME_ENDPIONT", "https://a")]);
        match o.required("ACME_ENDPOINT") {
            Err(KmsError::InvalidConfig(c)) => {
                assert_eq!(c.option, "ACME_ENDPIONT");
                assert!(
                    c.message.contains("did you mean ACME_ENDPOINT?"),
                    "{}",
                    c.message
                );
            }
            other => panic!("{other:?}"),
        }
        // Nothing near: the option itself is missing.
        let mut o = opts(&[("UNRELATED", "x")]);
        assert!(matches!(
            o.required("ACME_ENDPOINT"),
            Err(KmsError::InvalidConfig(c)) if c.option == "ACME_ENDPOINT" && c.message == "is required"
        ));
    }

    #[test]
    fn aliases_defaults_and_types() {
        let mut o = opts(&[
            ("VAULT_ADDR", "https://rook"),
            ("flag", "TRUE"),
            ("n", "42"),
            ("empty", ""),
        ]);
        assert_eq!(
            o.take_any(&["vaultAddress", "VAULT_ADDR"]).as_deref(),
            Some("https://rook")
        );
        assert!(o.bool("flag", false).unwrap());
        assert_eq!(o.u64("n", 1).unwrap(), 42);
        assert_eq!(o.or("empty", "dflt"), "dflt");
        assert!(
            matches!(o.required("missing"), Err(KmsError::InvalidConfig(c)) if c.option == "missing")
        );
        assert!(o.finish().is_ok());
        let mut bad = opts(&[("flag", "maybe"), ("n", "-1")]);
        assert!(
            matches!(bad.bool("flag", false), Err(KmsError::InvalidConfig(c)) if c.option == "flag")
        );
        assert!(matches!(bad.u64("n", 0), Err(KmsError::InvalidConfig(c)) if c.option == "n"));
    }
}
