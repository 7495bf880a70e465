//! Plugin tests on the SDK mock host (the host's tests run it against
//! SoftHSM2): blob shape, the AAD, old labels and the rewrap offer.

use crate::Pkcs11;
use kmshost_plugin_sdk::mock::{self, MockHost};
use kmshost_plugin_sdk::{KmsError, Provider};

/// A mock HSM: "sealed" = label ‖ 0 ‖ aad ‖ 0 ‖ data (not cryptography:
/// it lets the test see what the plugin asked for).
fn host() -> MockHost {
    MockHost::new().on_hsm(|encrypt, label, data, aad| {
        let prefix = [label.as_bytes(), b"\0", aad, b"\0"].concat();
        if encrypt {
            return Ok([&prefix[..], data].concat());
        }
        data.strip_prefix(&prefix[..])
            .map(<[u8]>::to_vec)
            .ok_or_else(|| KmsError::Integrity("mock: wrong key or aad".into()))
    })
}

const OPTIONS: &[(&str, &str)] = &[
    ("PKCS11_KEY_LABEL", "key-2"),
    ("PKCS11_OLD_KEY_LABELS", "key-1, key-0"),
];

#[test]
fn wraps_with_the_current_label_bound_to_the_volume() {
    let _h = host().install();
    let p: Pkcs11 = mock::configure(OPTIONS).unwrap();
    let blob = p.wrap("pvc-1", b"secret").unwrap();
    let v: serde_json::Value = serde_json::from_slice(&blob).unwrap();
    assert_eq!(
        (v["kmshost"].as_u64(), v["label"].as_str()),
        (Some(1), Some("key-2"))
    );
    assert_eq!(p.unwrap("pvc-1", &blob).unwrap(), b"secret");
    assert!(matches!(
        p.unwrap("pvc-2", &blob),
        Err(KmsError::Integrity(_))
    ));
}

#[test]
fn an_old_label_opens_and_offers_the_rewrapped_key() {
    let h = host().install();
    let old: Pkcs11 = mock::configure(&[("PKCS11_KEY_LABEL", "key-1")]).unwrap();
    let blob = old.wrap("pvc-1", b"secret").unwrap();
    let p: Pkcs11 = mock::configure(OPTIONS).unwrap();
    assert_eq!(p.unwrap("pvc-1", &blob).unwrap(), b"secret");
    let offered = h.offered().expect("rewrapped");
    let v: serde_json::Value = serde_json::from_slice(&offered).unwrap();
    assert_eq!(v["label"], "key-2");
    assert_eq!(p.unwrap("pvc-1", &offered).unwrap(), b"secret");
}

#[test]
fn a_label_not_configured_and_bad_options_are_named() {
    let _h = host().install();
    let stray: Pkcs11 = mock::configure(&[("PKCS11_KEY_LABEL", "key-9")]).unwrap();
    let blob = stray.wrap("pvc-1", b"k").unwrap();
    let p: Pkcs11 = mock::configure(OPTIONS).unwrap();
    match p.unwrap("pvc-1", &blob).unwrap_err() {
        KmsError::InvalidConfig(c) => {
            assert_eq!(c.option, "PKCS11_OLD_KEY_LABELS");
            assert!(c.message.contains("key-9"), "{}", c.message);
        }
        e => panic!("{e:?}"),
    }
    for (opts, option) in [
        (&[][..], "PKCS11_KEY_LABEL"),
        (&[("PKCS11_KEY_LABEL", "a,b")][..], "PKCS11_KEY_LABEL"),
        (
            &[("PKCS11_KEY_LABEL", "a"), ("PKCS11_OLD_KEY_LABELS", "a")][..],
            "PKCS11_OLD_KEY_LABELS",
        ),
    ] {
        match mock::configure::<Pkcs11>(opts).unwrap_err() {
            KmsError::InvalidConfig(c) => assert_eq!(c.option, option, "{opts:?}"),
            e => panic!("{opts:?}: {e:?}"),
        }
    }
    assert!(matches!(
        p.unwrap("pvc-1", b"not json"),
        Err(KmsError::Integrity(_))
    ));
}
