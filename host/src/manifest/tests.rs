//! The manifest reader and its checks, table-tested on hand-built
//! components (a component header and custom sections) and on the
//! embedded first-party plugins.

use super::*;

mod guests {
    include!(concat!(env!("OUT_DIR"), "/test_guests.rs"));
}

/// A component of only custom sections: `(name, data)`.
fn component(sections: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = b"\0asm\x0d\x00\x01\x00".to_vec();
    for (name, data) in sections {
        let mut body = leb(name.len());
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(data);
        out.push(0);
        out.extend(leb(body.len()));
        out.extend(body);
    }
    out
}

fn leb(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

const MINIMAL: &str = r#"{
  "manifest": 1, "contract": "0.1.4", "name": "acme",
  "types": { "acme": { "capabilities": ["wrap"] } },
  "options": [
    { "name": "ACME_URL", "kind": "endpoint", "required": true },
    { "name": "ACME_SECRET", "kind": "secret", "default": "acme-credentials" }
  ]
}"#;

/// `MINIMAL` with `field` replaced by `value` (a JSON fragment).
fn with(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
    edit(&mut v);
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn a_minimal_manifest_reads_back() {
    let d = read(&component(&[(SECTION, MINIMAL.as_bytes())])).unwrap();
    let m = d.manifest.unwrap();
    assert_eq!(m.name, "acme");
    assert_eq!(m.capabilities("acme"), Some(&[Capability::Wrap][..]));
    assert_eq!(m.capabilities("other"), None);
    assert_eq!(m.options_for("acme").count(), 2);
    assert_eq!(d.contract, None);
}

#[test]
fn a_component_without_a_manifest_has_none() {
    let d = read(&component(&[("producers", b"x")])).unwrap();
    assert!(d.manifest.is_none());
}

#[test]
fn the_embedded_plugins_declare_themselves() {
    for (name, bytes) in crate::plugins::EMBEDDED {
        let d = read(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let m = d
            .manifest
            .unwrap_or_else(|| panic!("{name} has no manifest"));
        assert_eq!(m.name, *name);
        assert_eq!(d.contract.as_deref(), Some(CONTRACT), "{name}");
    }
}

#[test]
fn bad_components_are_refused() {
    let core = b"\0asm\x01\x00\x00\x00".to_vec();
    let big = vec![b' '; MAX_BYTES + 1];
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("core module", core, "core module"),
        ("not wasm", b"hello".to_vec(), "no component header"),
        (
            "two manifests",
            component(&[(SECTION, MINIMAL.as_bytes()), (SECTION, MINIMAL.as_bytes())]),
            "more than one",
        ),
        ("too large", component(&[(SECTION, &big)]), "limit is"),
        ("not JSON", component(&[(SECTION, b"{")]), "not valid"),
    ];
    for (what, bytes, expect) in cases {
        let e = read(&bytes)
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"));
        assert!(e.to_string().contains(expect), "{what}: {e}");
    }
}

#[test]
fn a_contract_other_than_the_exported_one_is_refused() {
    let mut bytes = std::fs::read(guests::TRAPPER).unwrap();
    let m = String::from_utf8(with(|v| v["contract"] = "0.1.7".into())).unwrap();
    bytes.extend(component(&[(SECTION, m.as_bytes())])[8..].iter());
    let e = read(&bytes).unwrap_err().to_string();
    assert!(
        e.contains("says 0.1.7") && e.contains("provider@0.1.4"),
        "{e}"
    );
}

#[test]
fn invalid_manifests_name_the_field() {
    type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("manifest", Box::new(|v| v["manifest"] = 2.into())),
        ("contract", Box::new(|v| v["contract"] = "0.2.0".into())),
        ("contract", Box::new(|v| v["contract"] = "one".into())),
        ("name", Box::new(|v| v["name"] = "a b".into())),
        ("types", Box::new(|v| v["types"] = serde_json::json!({}))),
        (
            "types.acme",
            Box::new(|v| v["types"]["acme"]["capabilities"] = serde_json::json!([])),
        ),
        (
            "types.acme",
            Box::new(|v| v["types"]["acme"]["capabilities"] = serde_json::json!(["wrap", "wrap"])),
        ),
        (
            "options[0] (kmshostX)",
            Box::new(|v| v["options"][0]["name"] = "kmshostX".into()),
        ),
        (
            "options[0] (a b)",
            Box::new(|v| v["options"][0]["name"] = "a b".into()),
        ),
        (
            "options[0] (ACME_URL)",
            Box::new(|v| v["options"][0]["types"] = serde_json::json!(["other"])),
        ),
        (
            "options[0] (ACME_URL)",
            Box::new(|v| v["options"][0]["key"] = "ca.crt".into()),
        ),
        (
            "options[0] (ACME_URL)",
            Box::new(|v| {
                v["options"][0]["kind"] = "boolean".into();
                v["options"][0]["default"] = "maybe".into();
            }),
        ),
        (
            "options[0] (ACME_URL)",
            Box::new(|v| v["options"][0]["default-from"] = "driver-namespace".into()),
        ),
        (
            "options (ACME_URL)",
            Box::new(|v| v["options"][1]["aliases"] = serde_json::json!(["ACME_URL"])),
        ),
        (
            "options[0] (ACME_URL)",
            Box::new(|v| v["options"][0]["description"] = "a\u{1b}[31m".into()),
        ),
        (
            "options[0] (ACME_URL)",
            Box::new(|v| v["options"][0]["scheme"] = "ftp".into()),
        ),
        (
            "options[1] (ACME_SECRET)",
            Box::new(|v| v["options"][1]["scheme"] = "tls".into()),
        ),
        (
            "options[0] (ACME_URL)",
            Box::new(|v| v["options"][0]["tls-keys"] = serde_json::json!({"ca": "CA"})),
        ),
        (
            "options[1] (ACME_SECRET)",
            Box::new(|v| v["options"][1]["tls-keys"] = serde_json::json!({"client-cert": "C"})),
        ),
        (
            "options[1] (ACME_SECRET)",
            Box::new(|v| v["options"][1]["tls-keys"] = serde_json::json!({"ca": "a/b"})),
        ),
        (
            "options[1] (ACME_SECRET)",
            Box::new(|v| v["options"][1]["tls-keys"] = serde_json::json!({})),
        ),
    ];
    for (at, edit) in cases {
        let e = Manifest::parse(&with(edit)).unwrap_err();
        match &e {
            ManifestError::Invalid { at: got, .. } => assert_eq!(got, at, "{e}"),
            other => panic!("{at}: {other}"),
        }
    }
    let e = Manifest::parse(&with(|v| v["colour"] = "red".into())).unwrap_err();
    assert!(e.to_string().contains("unknown field `colour`"), "{e}");
}

#[test]
fn option_values_are_checked_by_kind() {
    let spec = |kind: OptionKind, values: &[&str]| OptionSpec {
        name: "X".into(),
        kind,
        aliases: vec![],
        default: None,
        default_from: None,
        required: false,
        types: vec![],
        key: None,
        values: values.iter().map(|s| s.to_string()).collect(),
        scheme: None,
        tls_keys: None,
        description: String::new(),
    };
    let table: &[(OptionKind, &[&str], &str, bool)] = &[
        (OptionKind::Boolean, &[], "TRUE", true),
        (OptionKind::Boolean, &[], "no", true),
        (OptionKind::Boolean, &[], "maybe", false),
        (OptionKind::TlsSkipVerify, &[], "1", true),
        (OptionKind::Number, &[], "42", true),
        (OptionKind::Number, &[], "-1", false),
        (OptionKind::Duration, &[], "1m30s", true),
        (OptionKind::Duration, &[], "30", false),
        (OptionKind::Plain, &["kv", "transit"], "transit", true),
        (OptionKind::Plain, &["kv", "transit"], "kv2", false),
        (OptionKind::Plain, &[], "anything", true),
    ];
    for (kind, values, v, ok) in table {
        let r = spec(*kind, values).check_value(v);
        assert_eq!(r.is_ok(), *ok, "{kind:?} {v:?}: {r:?}");
    }
}

#[test]
fn durations_read_like_go() {
    use std::time::Duration as D;
    let table = [
        ("0", Some(D::ZERO)),
        ("10s", Some(D::from_secs(10))),
        ("1m30s", Some(D::from_secs(90))),
        ("500ms", Some(D::from_millis(500))),
        ("1.5h", Some(D::from_secs(5400))),
        ("2h45m", Some(D::from_secs(9900))),
        ("10", None),
        ("s", None),
        ("10x", None),
        ("", None),
    ];
    for (text, want) in table {
        assert_eq!(parse_duration(text), want, "{text:?}");
    }
}
