//! The RBD backend on a real Ceph cluster (one per test binary, see
//! `common::ceph`): image operations, copies that carry their LUKS2 data,
//! the key reference in image metadata under ceph-csi's keys, and bad
//! input — an unknown pool, a user without caps, a wrong key — failing
//! clearly with nothing created and no key in any message.
//!
//! Block access in the container is through `rbd-fuse` (no kernel RBD
//! here); mapping with krbd runs in the QEMU guest.

mod common;

use common::ceph::{self, Ceph};
use kmshost::kms::{SecretBytes, generate_passphrase};
use kmshost::luks::{self, FormatParams};
use kmshost::volume::rbd::{
    ClusterConfig, Credentials, EncryptionState, ImageOptions, RbdBackend, RbdCli, meta,
};
use kmshost::volume::{Backend, BlockSource, VolumeError};
use std::sync::Arc;

const MIB: u64 = 1 << 20;

/// The shared cluster, or `None` (skipped) when Ceph is not installed.
fn cluster(test: &str) -> Option<Arc<Ceph>> {
    ceph::require_ceph(test).then(ceph::shared)
}

/// `rbd` against `c` as `user` (key `key`), key files under `key_dir`.
fn cli(c: &Ceph, user: &str, key: &str, key_dir: &std::path::Path) -> RbdCli {
    let config = ClusterConfig::parse(&c.cluster_config("test-cluster")).unwrap();
    let creds = Credentials::new(user, SecretBytes::new(key.as_bytes().to_vec())).unwrap();
    RbdCli::new(config.get("test-cluster").unwrap(), creds)
        .with_key_dir(key_dir)
        .with_connect_timeout(5)
}

/// A backend on pool `rbd` as a user with ceph-csi's RBD caps.
fn backend(c: &Ceph, features: &str) -> (RbdBackend, tempfile::TempDir) {
    let key = c.rbd_user("csi-rbd-provisioner", "rbd");
    let keys = tempfile::tempdir().unwrap();
    let b = RbdBackend::new(
        cli(c, "csi-rbd-provisioner", &key, keys.path()),
        ImageOptions::new("rbd", None, features).unwrap(),
    );
    (b, keys)
}

fn images(c: &Ceph, pool: &str) -> Vec<String> {
    let out = c.rbd_admin(&["ls", "--format", "json", pool]);
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

fn info(c: &Ceph, image: &str) -> serde_json::Value {
    serde_json::from_slice(&c.rbd_admin(&["info", "--format", "json", image]).stdout).unwrap()
}

#[test]
fn image_lifecycle_on_a_real_cluster() {
    let Some(c) = cluster("image_lifecycle_on_a_real_cluster") else {
        return;
    };
    let (b, keys) = backend(&c, "layering,exclusive-lock,object-map,fast-diff");
    let id = "kh-vol-lifecycle";
    assert!(!b.exists(id));
    b.create(id, 20 * MIB + 512, BlockSource::Empty).unwrap();
    assert!(b.exists(id));
    assert_eq!(b.size(id).unwrap(), 20 * MIB + 512);
    let i = info(&c, &format!("rbd/{id}"));
    assert_eq!(
        i["features"],
        serde_json::json!(["layering", "exclusive-lock", "object-map", "fast-diff"])
    );

    // Grows, never shrinks.
    b.grow(id, 40 * MIB).unwrap();
    assert_eq!(b.size(id).unwrap(), 40 * MIB);
    b.grow(id, 8 * MIB).unwrap();
    assert_eq!(b.size(id).unwrap(), 40 * MIB);

    // A retried create replaces the partial image of the earlier try.
    b.create(id, 24 * MIB, BlockSource::Empty).unwrap();
    assert_eq!(b.size(id).unwrap(), 24 * MIB);

    b.remove(id).unwrap();
    assert!(!b.exists(id));
    assert!(!images(&c, "rbd").contains(&id.to_string()));
    b.remove(id).unwrap(); // already gone: fine
    assert!(matches!(b.size(id), Err(VolumeError::Missing(_))));

    // Every call's key file is gone when the call returns.
    assert_eq!(std::fs::read_dir(keys.path()).unwrap().count(), 0);
}

#[test]
fn copies_are_standalone_and_carry_the_luks_data() {
    let Some(c) = cluster("copies_are_standalone_and_carry_the_luks_data") else {
        return;
    };
    let (b, _keys) = backend(&c, "");
    let (vol, snap, clone) = ("kh-vol-parent", "kh-snap-parent", "kh-vol-restored");
    b.create(vol, 32 * MIB, BlockSource::Empty).unwrap();

    // LUKS2 onto the real RBD data, through rbd-fuse.
    let pass = generate_passphrase();
    {
        let fuse = c.fuse("rbd");
        let file = fuse.image(vol);
        assert!(!luks::is_luks2(&file));
        luks::format(&file, &pass, &FormatParams::default()).unwrap();
        assert_eq!(luks::verify(&file, &pass).unwrap(), 0);
    }

    b.snapshot(vol, snap).unwrap();
    b.create(clone, 48 * MIB, BlockSource::Snapshot(snap))
        .unwrap();
    assert_eq!(b.size(snap).unwrap(), 32 * MIB);
    assert_eq!(b.size(clone).unwrap(), 48 * MIB);
    for img in [snap, clone] {
        let i = info(&c, &format!("rbd/{img}"));
        assert!(i.get("parent").is_none(), "{img} is still a child: {i}");
    }
    // No temporary snapshot is left on the parent.
    let snaps = c.rbd_admin(&[
        "snap",
        "ls",
        "--all",
        "--format",
        "json",
        &format!("rbd/{vol}"),
    ]);
    assert_eq!(String::from_utf8_lossy(&snaps.stdout).trim(), "[]");

    // The parent goes while its copies stay, and they hold its LUKS data.
    b.remove(vol).unwrap();
    let fuse = c.fuse("rbd");
    for img in [snap, clone] {
        let file = fuse.image(img);
        assert!(luks::is_luks2(&file), "{img}");
        assert_eq!(luks::verify(&file, &pass).unwrap(), 0, "{img}");
    }
    drop(fuse);
    for img in [snap, clone] {
        b.remove(img).unwrap();
    }

    // A copy of a source that does not exist is an error, and leaves nothing.
    match b.create(
        "kh-vol-orphan",
        16 * MIB,
        BlockSource::Volume("kh-vol-none"),
    ) {
        Err(VolumeError::Missing(m)) => assert!(m.contains("source kh-vol-none"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(!b.exists("kh-vol-orphan"));
}

#[test]
fn key_reference_lives_in_image_metadata_under_ceph_csi_keys() {
    let Some(c) = cluster("key_reference_lives_in_image_metadata_under_ceph_csi_keys") else {
        return;
    };
    let (b, _keys) = backend(&c, "");
    let id = "kh-vol-meta";
    b.create(id, 16 * MIB, BlockSource::Empty).unwrap();
    assert_eq!(b.encryption(id).unwrap(), Default::default());

    b.set_encryption(id, EncryptionState::Prepared, Some("d3JhcHBlZA=="))
        .unwrap();
    let spec = format!("rbd/{id}");
    let get = |k: &str| {
        let o = c.rbd_try(&["image-meta", "get", &spec, k]);
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    assert_eq!(get("rbd.csi.ceph.com/dek").as_deref(), Some("d3JhcHBlZA=="));
    assert_eq!(
        get("rbd.csi.ceph.com/encrypted").as_deref(),
        Some("encryptionPrepared")
    );
    b.set_encryption(id, EncryptionState::Encrypted, None)
        .unwrap();
    let e = b.encryption(id).unwrap();
    assert_eq!(e.state, Some(EncryptionState::Encrypted));
    assert_eq!(e.dek.as_deref(), Some("d3JhcHBlZA=="));

    // An image an older ceph-csi wrote: dotted keys.
    let old = "kh-vol-legacy";
    b.create(old, 16 * MIB, BlockSource::Empty).unwrap();
    let old_spec = format!("rbd/{old}");
    c.rbd_admin(&["image-meta", "set", &old_spec, meta::LEGACY_DEK, "b2xk"]);
    c.rbd_admin(&[
        "image-meta",
        "set",
        &old_spec,
        meta::LEGACY_ENCRYPTED,
        "encrypted",
    ]);
    let e = b.encryption(old).unwrap();
    assert_eq!(e.state, Some(EncryptionState::Encrypted));
    assert_eq!(e.dek.as_deref(), Some("b2xk"));

    b.meta_remove(id, meta::DEK).unwrap();
    b.meta_remove(id, meta::DEK).unwrap(); // absent: fine
    assert_eq!(get("rbd.csi.ceph.com/dek"), None);
    for i in [id, old] {
        b.remove(i).unwrap();
    }
}

#[test]
fn unknown_pool_is_named_and_nothing_is_created() {
    let Some(c) = cluster("unknown_pool_is_named_and_nothing_is_created") else {
        return;
    };
    let key = c.rbd_user("csi-rbd-provisioner", "rbd");
    let keys = tempfile::tempdir().unwrap();
    let b = RbdBackend::new(
        cli(&c, "csi-rbd-provisioner", &key, keys.path()),
        ImageOptions::new("no-such-pool", None, "").unwrap(),
    );
    match b.create("kh-vol-nopool", 16 * MIB, BlockSource::Empty) {
        Err(VolumeError::Invalid(m)) => {
            assert!(m.contains("no-such-pool"), "{m}");
            assert!(m.contains("does not exist in cluster test-cluster"), "{m}");
            assert!(m.contains("StorageClass parameter pool"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!images(&c, "rbd").contains(&"kh-vol-nopool".to_string()));
}

#[test]
fn user_without_caps_on_the_pool_is_denied_naming_the_caps() {
    let Some(c) = cluster("user_without_caps_on_the_pool_is_denied_naming_the_caps") else {
        return;
    };
    c.pool("other");
    // Caps on pool `other` only.
    let key = c.rbd_user("csi-other-only", "other");
    let keys = tempfile::tempdir().unwrap();
    let b = RbdBackend::new(
        cli(&c, "csi-other-only", &key, keys.path()),
        ImageOptions::new("rbd", None, "").unwrap(),
    );
    match b.create("kh-vol-denied", 16 * MIB, BlockSource::Empty) {
        Err(VolumeError::Denied(m)) => {
            assert!(m.contains("user csi-other-only"), "{m}");
            assert!(m.contains("profile rbd pool=rbd"), "{m}");
            assert!(!m.contains(&key), "{m}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!images(&c, "rbd").contains(&"kh-vol-denied".to_string()));
}

#[test]
fn wrong_key_is_unavailable_with_what_to_check_and_never_the_key() {
    let Some(c) = cluster("wrong_key_is_unavailable_with_what_to_check_and_never_the_key") else {
        return;
    };
    c.rbd_user("csi-rbd-provisioner", "rbd");
    // A well-formed cephx key that is not the user's.
    let wrong = "AQBmQBZrAAAAABAAb2+fGq7rH3ZqRn1tXJ0s1A==";
    let keys = tempfile::tempdir().unwrap();
    let b = RbdBackend::new(
        cli(&c, "csi-rbd-provisioner", wrong, keys.path()),
        ImageOptions::new("rbd", None, "").unwrap(),
    );
    match b.create("kh-vol-wrongkey", 16 * MIB, BlockSource::Empty) {
        Err(VolumeError::Unavailable(m)) => {
            assert!(m.contains("cluster test-cluster"), "{m}");
            assert!(m.contains("userID/userKey"), "{m}");
            assert!(!m.contains(wrong), "{m}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!images(&c, "rbd").contains(&"kh-vol-wrongkey".to_string()));
    assert_eq!(std::fs::read_dir(keys.path()).unwrap().count(), 0);
}

#[test]
fn mapping_needs_kernel_rbd_and_says_so() {
    let Some(c) = cluster("mapping_needs_kernel_rbd_and_says_so") else {
        return;
    };
    let (b, _keys) = backend(&c, "");
    let id = "kh-vol-map";
    b.create(id, 16 * MIB, BlockSource::Empty).unwrap();
    assert_eq!(b.attached(id).unwrap(), None);
    if std::path::Path::new("/sys/bus/rbd").exists() {
        // A kernel with rbd.ko (the guest): the image maps and unmaps.
        let dev = b.attach(id).unwrap();
        assert_eq!(b.attached(id).unwrap(), Some(dev));
        b.detach(id).unwrap();
        assert_eq!(b.attached(id).unwrap(), None);
    } else {
        match b.attach(id) {
            Err(VolumeError::Unsupported(m)) => assert!(m.contains("rbd.ko"), "{m}"),
            other => panic!("{other:?}"),
        }
        match b.header_path(id) {
            Err(VolumeError::Unsupported(m)) => assert!(m.contains("not mapped"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    b.detach(id).unwrap();
    b.remove(id).unwrap();
}
