//! LUKS2 on image files (activation needs device-mapper: covered in the
//! guest-kernel test of the CSI driver; here it must fail cleanly).

use kmshost::kms::{KmsId, SecretBytes, WrappedKey, generate_passphrase};
use kmshost::luks::{self, FormatParams, KmsToken, LuksError, Pbkdf, Signature};
use std::path::{Path, PathBuf};
use std::process::Command;

fn image(dir: &Path, name: &str, mib: u64) -> PathBuf {
    let p = dir.join(name);
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(mib << 20).unwrap();
    p
}

fn fast() -> FormatParams {
    FormatParams::default()
}

#[test]
fn format_verify_and_wrong_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "v.img", 32);
    let pass = generate_passphrase();
    assert!(!luks::is_luks2(&img));
    assert_eq!(luks::format(&img, &pass, &fast()).unwrap(), 0);
    assert!(luks::is_luks2(&img));
    assert_eq!(luks::verify(&img, &pass).unwrap(), 0);
    let wrong = generate_passphrase();
    assert!(matches!(
        luks::verify(&img, &wrong),
        Err(LuksError::WrongPassphrase(_))
    ));
    // cryptsetup itself agrees on what was written.
    let dump = Command::new("cryptsetup")
        .arg("luksDump")
        .arg(&img)
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.contains("Version:       \t2") || dump.contains("Version:"),
        "{dump}"
    );
    assert!(dump.contains("aes-xts-plain64"), "{dump}");
    assert!(dump.contains("pbkdf2"), "{dump}");
}

#[test]
fn configurable_cipher_and_kdf() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "v.img", 32);
    let pass = generate_passphrase();
    let params = FormatParams {
        cipher: "aes".into(),
        cipher_mode: "xts-plain64".into(),
        key_size_bits: 256,
        pbkdf: Pbkdf::Argon2id {
            iterations: 4,
            memory_kib: 1024,
            parallel: 1,
        },
        sector_size: 4096,
        label: Some("kmshost-test".into()),
    };
    luks::format(&img, &pass, &params).unwrap();
    let dump = Command::new("cryptsetup")
        .arg("luksDump")
        .arg(&img)
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("argon2id"), "{dump}");
    assert!(dump.contains("256 bits"), "{dump}");
    assert!(dump.contains("kmshost-test"), "{dump}");
    assert!(dump.contains("4096 [bytes]"), "{dump}");
    assert_eq!(luks::verify(&img, &pass).unwrap(), 0);
    // Too-weak KDF settings are refused.
    let img2 = image(dir.path(), "w.img", 32);
    let weak = FormatParams {
        pbkdf: Pbkdf::Pbkdf2 { iterations: 10 },
        ..fast()
    };
    assert!(matches!(
        luks::format(&img2, &pass, &weak),
        Err(LuksError::Params(_))
    ));
}

#[test]
fn refuses_to_format_anything_already_there() {
    let dir = tempfile::tempdir().unwrap();
    let pass = generate_passphrase();

    // LUKS already.
    let img = image(dir.path(), "luks.img", 32);
    luks::format(&img, &pass, &fast()).unwrap();
    match luks::format(&img, &generate_passphrase(), &fast()) {
        Err(LuksError::AlreadyFormatted { found, .. }) => {
            assert_eq!(found, Signature::Known("crypto_LUKS".into()))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        luks::verify(&img, &pass).unwrap(),
        0,
        "the original volume survived"
    );

    // A filesystem made by another tool.
    let img = image(dir.path(), "ext4.img", 32);
    let ok = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&img)
        .status()
        .unwrap();
    assert!(ok.success());
    match luks::format(&img, &pass, &fast()) {
        Err(LuksError::AlreadyFormatted {
            found: Signature::Known(t),
            ..
        }) => assert_eq!(t, "ext4"),
        other => panic!("{other:?}"),
    }

    // Unrecognised data.
    let img = image(dir.path(), "data.img", 32);
    std::fs::write(&img, vec![0x5a; 4096]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    assert!(matches!(
        luks::format(&img, &pass, &fast()),
        Err(LuksError::AlreadyFormatted {
            found: Signature::Data,
            ..
        })
    ));
}

#[test]
fn keyslots_add_kill_and_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "v.img", 32);
    let a = generate_passphrase();
    luks::format(&img, &a, &fast()).unwrap();
    let b = generate_passphrase();
    let slot_b = luks::add_keyslot(&img, &a, &b, Pbkdf::MACHINE_KEY).unwrap();
    assert_eq!(luks::active_keyslots(&img).unwrap(), vec![0, slot_b]);
    assert_eq!(luks::verify(&img, &b).unwrap(), slot_b);
    luks::kill_keyslot(&img, 0).unwrap();
    assert!(matches!(
        luks::verify(&img, &a),
        Err(LuksError::WrongPassphrase(_))
    ));
    // The last keyslot is never killed.
    assert!(matches!(
        luks::kill_keyslot(&img, slot_b),
        Err(LuksError::Params(_))
    ));
    // A wrong passphrase cannot add slots.
    assert!(luks::add_keyslot(&img, &a, &generate_passphrase(), Pbkdf::MACHINE_KEY).is_err());

    let c = generate_passphrase();
    let slot_c = luks::rotate(&img, &b, &c, Pbkdf::MACHINE_KEY).unwrap();
    assert_eq!(luks::active_keyslots(&img).unwrap(), vec![slot_c]);
    assert_eq!(luks::verify(&img, &c).unwrap(), slot_c);
    assert!(luks::verify(&img, &b).is_err());
    // Rotation with a wrong old passphrase changes nothing.
    assert!(luks::rotate(&img, &b, &generate_passphrase(), Pbkdf::MACHINE_KEY).is_err());
    assert_eq!(luks::active_keyslots(&img).unwrap(), vec![slot_c]);
}

#[test]
fn token_keeps_kms_id_and_wrapped_key() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "v.img", 32);
    let pass = generate_passphrase();
    luks::format(&img, &pass, &fast()).unwrap();
    assert_eq!(luks::read_token(&img).unwrap(), None);
    let t = KmsToken {
        kms_id: KmsId::new("secrets-metadata-test").unwrap(),
        key_id: "pvc-1".into(),
        wrapped: Some(WrappedKey::new(vec![1, 2, 3, 255])),
        keyslots: vec![0],
    };
    let id = luks::write_token(&img, &t).unwrap();
    assert_eq!(luks::read_token(&img).unwrap(), Some(t.clone()));
    // Replacing keeps a single kmshost token.
    let t2 = KmsToken {
        wrapped: Some(WrappedKey::new(vec![9; 40])),
        ..t
    };
    assert_eq!(luks::write_token(&img, &t2).unwrap(), id);
    assert_eq!(luks::read_token(&img).unwrap(), Some(t2));
    // cryptsetup lists it.
    let dump = Command::new("cryptsetup")
        .arg("luksDump")
        .arg(&img)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&dump.stdout).contains("kmshost"));
    // Not LUKS: a clear error.
    let plain = image(dir.path(), "plain.img", 1);
    assert!(matches!(
        luks::read_token(&plain),
        Err(LuksError::NotLuks(_))
    ));
}

#[test]
fn activation_without_device_mapper_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "v.img", 32);
    let pass = generate_passphrase();
    luks::format(&img, &pass, &fast()).unwrap();
    let name = format!("kmshost-test-{}", std::process::id());
    match luks::activate(&img, &name, &pass, false) {
        Ok(_) => {
            // device-mapper exists here: the mapping is real; close it.
            assert!(luks::is_active(&name));
            luks::deactivate(&name).unwrap();
            assert!(!luks::is_active(&name));
        }
        Err(e) => {
            // No working device-mapper here (this container has the
            // control node but no dm module): the error says so, and
            // nothing else. The guest kernel test takes the Ok branch.
            assert!(matches!(e, LuksError::NoDeviceMapper(_)), "{e:?}");
            let text = format!("{e} {e:?}");
            assert!(
                !text.contains(std::str::from_utf8(pass.expose()).unwrap()),
                "passphrase leaked"
            );
        }
    }
    // A wrong passphrase never activates.
    assert!(luks::activate(&img, &name, &SecretBytes::new(b"wrong".to_vec()), false).is_err());
}
