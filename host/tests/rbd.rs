//! The RBD backend on a real Ceph cluster (one per test binary, see
//! `common::ceph`): image operations, copies that carry their LUKS2 data,
//! the key reference in image metadata under ceph-csi's keys, and bad
//! input — an unknown pool, a user without caps, a wrong key — failing
//! clearly with nothing created and no key in any message; and a crashed
//! client's watch refusing DeleteVolume until it expires.
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
        let fuse = c.fuse("rbd", vol);
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
    for img in [snap, clone] {
        let fuse = c.fuse("rbd", img);
        let file = fuse.image(img);
        assert!(luks::is_luks2(&file), "{img}");
        assert_eq!(luks::verify(&file, &pass).unwrap(), 0, "{img}");
    }
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
            Err(VolumeError::Precondition(m)) => assert!(m.contains("not mapped"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    b.detach(id).unwrap();
    b.remove(id).unwrap();
}

// ---- The CSI controller on RBD -------------------------------------------

use common::csi::{CsiHarness, from_snapshot, from_volume, metadata_config};
use kmshost::csi::proto;
use kmshost::volume::rbd::RbdVolumes;
use kmshost::volume::{KeyHolding, VolumeState};
use std::collections::HashMap;
use tonic::Code;

const CLUSTER: &str = "test-cluster";

/// A driver keeping volumes in `c`, every call carrying `secrets`.
async fn rbd_driver(c: &Ceph, secrets: HashMap<String, String>) -> CsiHarness {
    let keys = tempfile::tempdir().unwrap().keep();
    let volumes = RbdVolumes::new(ClusterConfig::parse(&c.cluster_config(CLUSTER)).unwrap())
        .with_key_dir(keys)
        .with_connect_timeout(5);
    CsiHarness::start_on(&metadata_config(), Arc::new(volumes), secrets).await
}

/// The provisioner Secret of ceph-csi's StorageClasses: `userID`, `userKey`.
fn ceph_secret(user: &str, key: &str) -> HashMap<String, String> {
    HashMap::from([
        ("userID".to_string(), user.to_string()),
        ("userKey".to_string(), key.to_string()),
    ])
}

async fn provisioner(c: &Ceph) -> CsiHarness {
    let key = c.rbd_user("csi-rbd-provisioner", "rbd");
    rbd_driver(c, ceph_secret("csi-rbd-provisioner", &key)).await
}

/// An encrypted StorageClass on pool `rbd`, as a ceph-csi user writes it.
const SC: &[(&str, &str)] = &[
    ("clusterID", CLUSTER),
    ("pool", "rbd"),
    ("imageFeatures", "layering,exclusive-lock"),
    ("csi.storage.k8s.io/fstype", "ext4"),
    ("encrypted", "true"),
    ("encryptionKMSID", "meta-a"),
];

fn meta_get(c: &Ceph, image: &str, key: &str) -> Option<String> {
    let o = c.rbd_try(&["image-meta", "get", &format!("rbd/{image}"), key]);
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn blob(h: &CsiHarness, id: &str) -> String {
    match h.holding(id) {
        KeyHolding::Wrapped { blob } => blob,
        other => panic!("{id}: {other:?}"),
    }
}

fn in_pool(c: &Ceph, id: &str) -> bool {
    images(c, "rbd").iter().any(|i| i == id)
}

/// Long by design: every controller call on one set of volumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csi_controller_calls_on_rbd_images() {
    let Some(c) = cluster("csi_controller_calls_on_rbd_images") else {
        return;
    };
    let h = provisioner(&c).await;
    let luks = kmshost::csi::LUKS_OVERHEAD as i64;

    // CreateVolume: an image of capacity + LUKS header, its context
    // naming it, its key reference in its metadata.
    let v = h
        .create("pvc-rbd-a", 32 * MIB as i64, SC, None)
        .await
        .unwrap();
    let id = v.volume_id.clone();
    assert_eq!(v.volume_context["clusterID"], CLUSTER);
    assert_eq!(v.volume_context["pool"], "rbd");
    assert_eq!(v.volume_context["imageName"], id);
    let i = info(&c, &format!("rbd/{id}"));
    assert_eq!(i["size"], 32 * MIB as i64 + luks);
    assert_eq!(
        i["features"],
        serde_json::json!(["layering", "exclusive-lock"])
    );
    assert_eq!(
        meta_get(&c, &id, "rbd.csi.ceph.com/dek"),
        Some(blob(&h, &id))
    );
    assert_eq!(
        meta_get(&c, &id, "rbd.csi.ceph.com/encrypted").as_deref(),
        Some("encryptionPrepared")
    );

    // Idempotent by name; the same name with other settings is refused.
    let again = h
        .create("pvc-rbd-a", 32 * MIB as i64, SC, None)
        .await
        .unwrap();
    assert_eq!(again.volume_id, id);
    let mut other: Vec<(&str, &str)> = SC.to_vec();
    other[2] = ("imageFeatures", "layering");
    let e = h
        .create("pvc-rbd-a", 32 * MIB as i64, &other, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");

    // LUKS2 on the real RBD data with the key the KMS gives (what the
    // first NodeStage does; here through rbd-fuse).
    let pass = h.passphrase(&id).await;
    {
        let fuse = c.fuse("rbd", &id);
        luks::format(&fuse.image(&id), &pass, &FormatParams::default()).unwrap();
    }

    // ControllerExpandVolume grows the image.
    let r = h.expand(&id, 48 * MIB as i64).await.unwrap();
    let mut ctl = h.client.controller.clone();
    assert_eq!(r.capacity_bytes, 48 * MIB as i64);
    assert_eq!(
        info(&c, &format!("rbd/{id}"))["size"],
        48 * MIB as i64 + luks
    );

    // CreateSnapshot: a standalone image with the key re-sealed under the
    // snapshot's ID, recorded in its metadata.
    let snap = ctl
        .create_snapshot(proto::CreateSnapshotRequest {
            source_volume_id: id.clone(),
            name: "snap-rbd-a".into(),
            secrets: h.request_secrets.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    let sid = snap.snapshot_id.clone();
    assert!(snap.ready_to_use && in_pool(&c, &sid));
    let snap_blob = meta_get(&c, &sid, "rbd.csi.ceph.com/dek").unwrap();
    assert_ne!(
        snap_blob,
        blob(&h, &id),
        "wrapped under the snapshot's own ID"
    );

    // Restore and clone: images holding the source's LUKS data, opened by
    // the key the KMS gives for each.
    let restored = h
        .create("pvc-rbd-restored", 48 * MIB as i64, SC, from_snapshot(&sid))
        .await
        .unwrap()
        .volume_id;
    let clone = h
        .create("pvc-rbd-clone", 64 * MIB as i64, SC, from_volume(&id))
        .await
        .unwrap()
        .volume_id;
    assert_eq!(
        info(&c, &format!("rbd/{clone}"))["size"],
        64 * MIB as i64 + luks
    );
    for v in [&restored, &clone] {
        let key = h.passphrase(v).await;
        let fuse = c.fuse("rbd", v);
        assert_eq!(luks::verify(&fuse.image(v), &key).unwrap(), 0, "{v}");
    }

    // ListVolumes lists them; GetCapacity is not offered for thin pools.
    let listed: Vec<String> = ctl
        .list_volumes(proto::ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries
        .into_iter()
        .map(|e| e.volume.unwrap().volume_id)
        .collect();
    for v in [&id, &restored, &clone] {
        assert!(listed.contains(v), "{v} not in {listed:?}");
    }
    let caps = ctl
        .controller_get_capabilities(proto::ControllerGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    use proto::controller_service_capability::RpcType;
    let offered = |t: RpcType| {
        caps.capabilities
            .iter()
            .any(|c| c.rpc.as_ref().is_some_and(|r| r.r#type == t as i32))
    };
    assert!(!offered(RpcType::GetCapacity) && offered(RpcType::CloneVolume));
    let e = ctl
        .get_capacity(proto::GetCapacityRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);

    // Rotation needs the image mapped (here it cannot be): a clear
    // precondition, nothing changed.
    let e = h.rotate(&id).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("not mapped"), "{}", e.message());
    assert_eq!(h.passphrase(&id).await, pass);

    // DeleteSnapshot and DeleteVolume remove images, then records.
    ctl.delete_snapshot(proto::DeleteSnapshotRequest {
        snapshot_id: sid.clone(),
        secrets: h.request_secrets.clone(),
    })
    .await
    .unwrap();
    assert!(!in_pool(&c, &sid));
    for v in [&id, &restored, &clone] {
        h.delete(v).await.unwrap();
        assert!(!in_pool(&c, v) && h.record(v).is_none(), "{v}");
        h.delete(v).await.unwrap(); // already gone: fine
    }
    h.stop().await;
}

/// Long by design: the crash matrix of the image-file driver, on RBD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_any_step_converges_on_rbd_too() {
    let Some(c) = cluster("a_crash_after_any_step_converges_on_rbd_too") else {
        return;
    };
    let h = provisioner(&c).await;
    let names = ["crash-record", "crash-blocks", "crash-key"];
    for (step, name) in ["create.record", "create.blocks", "create.key"]
        .iter()
        .zip(names)
    {
        fail::cfg(h.driver.failpoint(step), "1*return").unwrap();
        let e = h.create(name, 16 * MIB as i64, SC, None).await.unwrap_err();
        assert_eq!(e.code(), Code::Internal, "{step}");
        let id = kmshost::csi::volume_id_for(name);
        assert_eq!(
            h.record(&id).unwrap().state,
            VolumeState::Creating,
            "{step}"
        );
        let v = h.create(name, 16 * MIB as i64, SC, None).await.unwrap();
        assert_eq!(v.volume_id, id);
        assert_eq!(h.record(&id).unwrap().state, VolumeState::Ready, "{step}");
        assert!(in_pool(&c, &id), "{step}");
        assert_eq!(meta_get(&c, &id, meta::DEK), Some(blob(&h, &id)), "{step}");
    }
    for (step, name) in ["delete.mark", "delete.blocks", "delete.key"]
        .iter()
        .zip(names)
    {
        let id = kmshost::csi::volume_id_for(name);
        fail::cfg(h.driver.failpoint(step), "1*return").unwrap();
        assert_eq!(
            h.delete(&id).await.unwrap_err().code(),
            Code::Internal,
            "{step}"
        );
        // The key is never gone while the image is there.
        let rec = h.record(&id).unwrap();
        assert_eq!(rec.state, VolumeState::Deleting, "{step}");
        assert!(rec.encryption.is_some(), "{step}");
        h.delete(&id).await.unwrap();
        assert!(h.record(&id).is_none() && !in_pool(&c, &id), "{step}");
    }
    h.stop().await;
}

/// A node that crashes with an image open leaves its watch (and the
/// exclusive lock it took by writing) on the cluster until the OSD's watch
/// timeout (30 s by default). DeleteVolume meanwhile fails with a
/// retryable FailedPrecondition that says so, and loses nothing: the
/// record, the image and its key reference stay. Once the watch expires
/// the same DeleteVolume succeeds; nobody had to break a lock by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_clients_watch_fails_delete_retryably_and_loses_nothing() {
    let Some(c) = cluster("a_crashed_clients_watch_fails_delete_retryably_and_loses_nothing")
    else {
        return;
    };
    let h = provisioner(&c).await;
    let id = h
        .create("pvc-crashed-node", 16 * MIB as i64, SC, None)
        .await
        .unwrap()
        .volume_id;
    let dek = meta_get(&c, &id, meta::DEK).expect("key reference");

    // A client opens the image and writes (taking the exclusive lock),
    // then its node stops answering.
    let mut fuse = c.fuse("rbd", &id);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(fuse.image(&id))
            .unwrap();
        f.write_all_at(&[0x5a; 4096], MIB).unwrap();
        f.sync_all().unwrap();
    }
    fuse.freeze();
    let spec = format!("rbd/{id}");
    let status: serde_json::Value =
        serde_json::from_slice(&c.rbd_admin(&["status", "--format", "json", &spec]).stdout)
            .unwrap();
    let watcher = status["watchers"][0]["address"]
        .as_str()
        .expect("the frozen client watches the image")
        .to_string();
    let lockers = c.rbd_admin(&["lock", "ls", "--format", "json", &spec]);
    assert!(
        String::from_utf8_lossy(&lockers.stdout).contains(&watcher),
        "the frozen client holds the exclusive lock"
    );

    // DeleteVolume refuses at once (rbd rm would fence the client and
    // remove the image under it), naming the watcher and what to do.
    let started = std::time::Instant::now();
    let e = h.delete(&id).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    for part in [
        id.as_str(),
        &watcher,
        "unstage it there",
        "expires in about 30 s",
    ] {
        assert!(e.message().contains(part), "{part}: {}", e.message());
    }
    let rec = h.record(&id).expect("the record stays");
    assert!(rec.encryption.is_some());
    assert!(in_pool(&c, &id));
    assert_eq!(meta_get(&c, &id, meta::DEK), Some(dek));

    // The orchestrator retries; once the watch has expired the delete goes
    // through, and Ceph fenced the dead client as it broke its lock.
    let mut refused = 1;
    loop {
        match h.delete(&id).await {
            Ok(_) => break,
            Err(e) if e.code() == Code::FailedPrecondition => {
                refused += 1;
                assert!(
                    started.elapsed() < std::time::Duration::from_secs(90),
                    "the watch did not expire: {}",
                    e.message()
                );
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(refused > 1, "refused only once: the watch was gone already");
    let blocklist = c.admin(&["osd", "blocklist", "ls"]);
    let listed = format!(
        "{}{}",
        String::from_utf8_lossy(&blocklist.stdout),
        String::from_utf8_lossy(&blocklist.stderr)
    );
    assert!(listed.contains(&watcher), "{watcher} not fenced: {listed}");
    eprintln!(
        "delete refused {refused} times, went through after {:?}",
        started.elapsed()
    );
    assert!(h.record(&id).is_none() && !in_pool(&c, &id));
    drop(fuse);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rbd_storage_classes_fail_clearly_and_record_nothing() {
    let Some(c) = cluster("bad_rbd_storage_classes_fail_clearly_and_record_nothing") else {
        return;
    };
    let h = provisioner(&c).await;
    let with = |k: &'static str, v: &'static str| {
        let mut p: Vec<(&str, &str)> = SC.iter().filter(|(n, _)| *n != k).copied().collect();
        p.push((k, v));
        p
    };
    type Params = Vec<(&'static str, &'static str)>;
    let cases: Vec<(Params, Code, &str)> = vec![
        (
            with("clusterID", "elsewhere"),
            Code::InvalidArgument,
            "parameter clusterID",
        ),
        (
            with("pool", "no-such-pool"),
            Code::InvalidArgument,
            "StorageClass parameter pool",
        ),
        (
            with("mounter", "rbd-nbd"),
            Code::InvalidArgument,
            "parameter mounter",
        ),
        (
            with("imageFeatures", "journaling"),
            Code::InvalidArgument,
            "journaling needs",
        ),
        (
            with("poool", "rbd"),
            Code::InvalidArgument,
            "parameter poool is not known",
        ),
    ];
    for (i, (params, code, want)) in cases.iter().enumerate() {
        let name = format!("pvc-bad-{i}");
        let e = h
            .create(&name, 16 * MIB as i64, params, None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), *code, "{params:?}: {e:?}");
        assert!(e.message().contains(want), "{params:?}: {}", e.message());
        let id = kmshost::csi::volume_id_for(&name);
        assert!(h.record(&id).is_none() && !in_pool(&c, &id), "{params:?}");
    }
    h.stop().await;

    // No Secret on the StorageClass; a key that is not the user's.
    let key = c.rbd_user("csi-rbd-provisioner", "rbd");
    let wrong = "AQBmQBZrAAAAABAAb2+fGq7rH3ZqRn1tXJ0s1A==";
    for (secrets, code, want) in [
        (HashMap::new(), Code::InvalidArgument, "provisioner-secret"),
        (
            ceph_secret("csi-rbd-provisioner", wrong),
            Code::Unavailable,
            "userID/userKey",
        ),
    ] {
        let h = rbd_driver(&c, secrets).await;
        let e = h
            .create("pvc-bad-user", 16 * MIB as i64, SC, None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{e:?}");
        assert!(e.message().contains(want), "{}", e.message());
        assert!(!e.message().contains(wrong) && !e.message().contains(&key));
        let id = kmshost::csi::volume_id_for("pvc-bad-user");
        assert!(h.record(&id).is_none() && !in_pool(&c, &id));
        h.stop().await;
    }

    // An image-file driver refuses RBD parameters by name.
    let h = CsiHarness::start(&metadata_config()).await;
    let e = h
        .create("pvc-file", 16 * MIB as i64, SC, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message()
            .contains("parameters clusterID, imageFeatures, pool are not known"),
        "{}",
        e.message()
    );
    h.stop().await;
}

/// A node with no record of a volume stages it from its volume context
/// (what CreateVolume returned, or a static PV's attributes): what it
/// cannot adopt fails naming the fault, and the node records nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_contexts_a_node_cannot_stage_from_fail_clearly_and_record_nothing() {
    let Some(c) =
        cluster("volume_contexts_a_node_cannot_stage_from_fail_clearly_and_record_nothing")
    else {
        return;
    };
    let h = provisioner(&c).await;
    let created = h
        .create("pvc-ctx", 16 * MIB as i64, SC, None)
        .await
        .unwrap();
    let (id, ctx) = (created.volume_id, created.volume_context);
    for k in [
        "clusterID",
        "pool",
        "imageName",
        "encrypted",
        "encryptionKMSID",
    ] {
        assert!(ctx.contains_key(k), "{k} in {ctx:?}");
    }
    let plain_sc: Vec<(&str, &str)> = SC
        .iter()
        .filter(|(k, _)| !k.starts_with("encrypt"))
        .copied()
        .collect();
    let plain = h
        .create("pvc-ctx-plain", 16 * MIB as i64, &plain_sc, None)
        .await
        .unwrap();
    let with = |base: &proto::Map, k: &str, v: Option<&str>| {
        let mut m = base.clone();
        match v {
            Some(v) => m.insert(k.to_string(), v.to_string()),
            None => m.remove(k),
        };
        m
    };
    let says_encrypted = with(
        &with(&plain.volume_context, "encrypted", Some("true")),
        "encryptionKMSID",
        Some("meta-a"),
    );
    let cases: Vec<(&str, proto::Map, Code, &str)> = vec![
        (
            &id,
            with(&ctx, "imageName", None),
            Code::NotFound,
            "does not exist",
        ),
        (
            &id,
            with(&ctx, "imageName", Some("-rf")),
            Code::InvalidArgument,
            "imageName",
        ),
        (
            &id,
            with(&ctx, "clusterID", Some("elsewhere")),
            Code::InvalidArgument,
            "clusterID",
        ),
        (
            &id,
            with(&ctx, "encrypted", Some("false")),
            Code::FailedPrecondition,
            "records an encryption state",
        ),
        (
            &plain.volume_id,
            says_encrypted,
            Code::FailedPrecondition,
            "records no encryption state",
        ),
        // Adoptable: the record would be written once mapped, and this
        // kernel has no rbd.ko, so the node is left as it was.
        (&id, ctx.clone(), Code::InvalidArgument, "rbd.ko"),
    ];
    let node = provisioner(&c).await;
    let staging = node.path("staging");
    for (vid, context, code, want) in cases {
        let e = node
            .stage_from(
                vid,
                &staging,
                common::csi::mount_cap("ext4"),
                context.clone(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{context:?}: {e:?}");
        assert!(e.message().contains(want), "{context:?}: {}", e.message());
        assert!(node.record(vid).is_none(), "{context:?}: nothing recorded");
        assert!(!h.attached(vid), "not left mapped");
    }
    node.stop().await;
    h.delete(&id).await.unwrap();
    h.delete(&plain.volume_id).await.unwrap();
    h.stop().await;
}
