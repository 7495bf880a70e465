//! The host's HSM capability (`capability::hsm`) against SoftHSM2 through
//! the real PKCS#11 interface: AES-GCM bound to the AAD, tampering, key
//! rotation by label, a wrong PIN (never printed), a token or key that is
//! not there, a module the host was not started with, and many threads
//! through one token's session pool.

mod common;

use common::softhsm::{MODULE, PIN, softhsm};
use kmshost::capability::hsm::{HsmError, HsmModules, HsmToken, MAX_IDLE_SESSIONS};
use kmshost::types::SecretBytes;
use std::sync::Arc;

fn modules() -> HsmModules {
    HsmModules::parse([format!("softhsm={MODULE}").as_str()]).unwrap()
}

fn token(m: &HsmModules, label: &str) -> HsmToken {
    m.token(
        "softhsm",
        label,
        SecretBytes::new(format!("{PIN}\n").into_bytes()),
    )
    .unwrap()
}

#[test]
fn aes_gcm_round_trips_bound_to_its_aad() {
    let Some(_) = softhsm("hsm gcm") else { return };
    let m = modules();
    let t = token(&m, "kmshost-a");
    let k = "key-1";
    let blob = t.encrypt(k, b"volume passphrase", b"pvc-1").unwrap();
    assert_eq!(blob.len(), 12 + 17 + 16);
    assert_ne!(
        t.encrypt(k, b"volume passphrase", b"pvc-1").unwrap(),
        blob,
        "fresh IV"
    );
    assert_eq!(
        t.decrypt(k, &blob, b"pvc-1").unwrap().expose(),
        b"volume passphrase"
    );
    for (what, b, aad) in [
        ("another volume", blob.clone(), &b"pvc-2"[..]),
        (
            "a flipped bit",
            {
                let mut b = blob.clone();
                b[20] ^= 1;
                b
            },
            &b"pvc-1"[..],
        ),
        ("a short blob", blob[..20].to_vec(), &b"pvc-1"[..]),
    ] {
        let e = t.decrypt(k, &b, aad).unwrap_err();
        assert!(matches!(e, HsmError::Integrity { .. }), "{what}: {e:?}");
        assert!(!e.is_retryable());
    }
    // Another key does not open it either.
    assert!(matches!(
        t.decrypt("key-3", &blob, b"pvc-1"),
        Err(HsmError::Integrity { .. })
    ));
}

#[test]
fn old_labels_keep_opening_what_they_sealed() {
    let Some(_) = softhsm("hsm rotation") else {
        return;
    };
    let m = modules();
    let t = token(&m, "kmshost-a");
    let (v1, v2) = ("key-1", "key-2");
    let old = t.encrypt(v1, b"k", b"pvc").unwrap();
    let new = t.encrypt(v2, b"k", b"pvc").unwrap();
    assert_eq!(t.decrypt(v1, &old, b"pvc").unwrap().expose(), b"k");
    assert_eq!(t.decrypt(v2, &new, b"pvc").unwrap().expose(), b"k");
    assert!(matches!(
        t.decrypt(v2, &old, b"pvc"),
        Err(HsmError::Integrity { .. })
    ));
}

#[test]
fn wrong_pin_missing_token_key_or_module_are_named() {
    let Some(_) = softhsm("hsm errors") else {
        return;
    };
    let m = modules();
    let wrong = m
        .token(
            "softhsm",
            "kmshost-b",
            SecretBytes::new(b"9999-wrong-pin-shown?".to_vec()),
        )
        .unwrap();
    let e = wrong.encrypt("any", b"k", b"pvc").unwrap_err();
    assert!(matches!(e, HsmError::Denied { .. }), "{e:?}");
    let text = format!("{e} {e:?} {wrong:?}");
    assert!(
        !text.contains("9999-wrong-pin-shown?") && !text.contains(PIN),
        "{text}"
    );
    assert!(text.contains("kmshost-b"), "{text}");

    let gone = token(&m, "no-such-token");
    let e = gone.encrypt("any", b"k", b"pvc").unwrap_err();
    assert!(matches!(e, HsmError::TokenNotFound { .. }), "{e:?}");

    let t = token(&m, "kmshost-a");
    let e = t.encrypt("no-such-key", b"k", b"pvc").unwrap_err();
    assert!(
        matches!(&e, HsmError::KeyNotFound { message, .. } if message.contains("no-such-key")),
        "{e:?}"
    );

    let e = m
        .token("luna", "kmshost-a", SecretBytes::new(PIN.into()))
        .unwrap_err();
    assert_eq!(e, HsmError::ModuleNotAllowed("luna".into()));
    assert!(e.to_string().contains("--pkcs11-module luna="), "{e}");
    let missing = HsmModules::parse(["missing=/usr/lib/nonexistent-pkcs11.so"]).unwrap();
    let e = missing
        .token("missing", "x", SecretBytes::new(PIN.into()))
        .unwrap_err();
    assert!(
        matches!(&e, HsmError::Module { module, .. } if module == "missing"),
        "{e:?}"
    );
    for bad in ["nopath", "a=relative.so", "=/x.so", "a b=/x.so"] {
        assert!(HsmModules::parse([bad]).is_err(), "{bad}");
    }
}

#[test]
fn many_threads_share_one_tokens_session_pool() {
    let Some(_) = softhsm("hsm concurrency") else {
        return;
    };
    let m = modules();
    let t = Arc::new(token(&m, "kmshost-a"));
    let k = "key-2".to_string();
    let handles: Vec<_> = (0..32)
        .map(|i| {
            let (t, k) = (t.clone(), k.clone());
            std::thread::spawn(move || {
                for j in 0..10 {
                    let aad = format!("pvc-{i}-{j}");
                    let b = t.encrypt(&k, aad.as_bytes(), aad.as_bytes()).unwrap();
                    assert_eq!(
                        t.decrypt(&k, &b, aad.as_bytes()).unwrap().expose(),
                        aad.as_bytes()
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let idle = t.idle_sessions();
    assert!((1..=MAX_IDLE_SESSIONS).contains(&idle), "{idle}");
}
