//! The CSI driver end to end over its unix socket with a real gRPC client:
//! unencrypted volumes run for real here (loop devices, ext4, mounts); the
//! encrypted path runs up to device-mapper (which this container lacks) —
//! formatting, keys, rotation, clones, snapshots, errors, crash recovery.
//! Real dm-crypt activation runs in `guest.rs`, inside a QEMU guest kernel.

mod common;

use common::csi::*;
use kmshost::csi::proto;
use kmshost::kms::{KeyId, generate_passphrase};
use kmshost::luks;
use kmshost::volume::{KeyHolding, VolumeState};
use tonic::Code;

include!(concat!(env!("OUT_DIR"), "/test_guests.rs"));

const ENC_A: &[(&str, &str)] = &[("encrypted", "true"), ("encryptionKMSID", "meta-a")];

/// The passphrase the KMS holds for an encrypted volume (or snapshot).
async fn kms_key(h: &CsiHarness, id: &str) -> kmshost::kms::Passphrase {
    let enc = if id.starts_with("kh-snap-") {
        h.driver
            .records()
            .snapshot(id)
            .unwrap()
            .unwrap()
            .encryption
            .unwrap()
    } else {
        h.driver
            .records()
            .volume(id)
            .unwrap()
            .unwrap()
            .encryption
            .unwrap()
    };
    kmshost::csi::keys::open(h.driver.kms(), &enc, id)
        .await
        .unwrap()
}

/// Stages an encrypted volume here: formats it on first use, then stops at
/// activation (no device-mapper in this container).
async fn format_by_staging(h: &CsiHarness, id: &str) {
    let e = h
        .stage(id, &h.path("staging-fmt"), mount_cap(""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("device-mapper"), "{}", e.message());
    assert!(luks::is_luks2(&h.image(id)), "formatted on first stage");
    assert!(!h.attached(id), "detached again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_probe_follows_the_configuration() {
    let h = CsiHarness::start(&metadata_config()).await;
    let mut id = h.client.identity.clone();
    let info = id
        .get_plugin_info(proto::GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "kmshost.csi.k8s.io");
    let caps = id
        .get_plugin_capabilities(proto::GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(caps.capabilities.len(), 2);
    let ready = |r: proto::ProbeResponse| r.ready.unwrap();
    assert!(ready(
        id.probe(proto::ProbeRequest {}).await.unwrap().into_inner()
    ));
    // A kmsID whose options its plugin refuses: not ready.
    let mut broken = metadata_config();
    broken["meta-a"]["noSuchOption"] = "x".into();
    h.set_config(&broken);
    assert!(!ready(
        id.probe(proto::ProbeRequest {}).await.unwrap().into_inner()
    ));
    // An unreadable configuration: not ready.
    std::fs::write(&h.config_path, "{ not json").unwrap();
    assert!(!ready(
        id.probe(proto::ProbeRequest {}).await.unwrap().into_inner()
    ));
    h.set_config(&metadata_config());
    assert!(ready(
        id.probe(proto::ProbeRequest {}).await.unwrap().into_inner()
    ));
    let node = h
        .client
        .node
        .clone()
        .node_get_info(proto::NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(node.node_id, "node-1");
    h.stop().await;
}

/// What the csi-addons sidecar asks before it offers key rotation: the
/// driver's name, a node service with ENCRYPTIONKEYROTATION, and a probe.
/// The answer is checked as bytes against csi-addons' field numbers
/// (`Capability.service` = 1, `.encryption_key_rotation` = 6), not only
/// through kmshost's own message types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csi_addons_identity_offers_key_rotation_on_the_node() {
    use prost::Message as _;
    let h = CsiHarness::start(&metadata_config()).await;
    let mut addons = h.client.addons.clone();
    let id = addons
        .get_identity(proto::GetIdentityRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(id.name, "kmshost.csi.k8s.io");
    assert_eq!(id.vendor_version, env!("CARGO_PKG_VERSION"));
    let caps = addons
        .get_capabilities(proto::GetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    // capabilities[0] = {service: {type: NODE_SERVICE (2)}},
    // capabilities[1] = {encryption_key_rotation: {type: ENCRYPTIONKEYROTATION (1)}}.
    let wire = [
        0x0a, 0x04, 0x0a, 0x02, 0x08, 0x02, 0x0a, 0x04, 0x32, 0x02, 0x08, 0x01,
    ];
    assert_eq!(caps.encode_to_vec(), wire);
    let probe = addons.probe(proto::ProbeRequest {}).await.unwrap();
    assert_eq!(probe.into_inner().ready, Some(true));
    h.stop().await;
}

/// SIGTERM's drain: a call in flight finishes if it can within the grace
/// period and its caller gets the answer; one that cannot does not hold
/// the process past it. The call is held at a failpoint (`pause`) until the
/// test lets it go, so nothing here depends on timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn shutdown_drains_calls_in_flight_within_the_grace_period() {
    use std::time::Duration;
    fn held_create(h: &CsiHarness, name: &str) -> tokio::task::JoinHandle<Result<(), Code>> {
        let point = h.driver.failpoint("create.record");
        fail::cfg(&point, "pause").unwrap();
        let mut c = h.client.controller.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            c.create_volume(proto::CreateVolumeRequest {
                name,
                volume_capabilities: vec![mount_cap("ext4")],
                ..Default::default()
            })
            .await
            .map(drop)
            .map_err(|s| s.code())
        })
    }
    async fn reached(h: &CsiHarness, name: &str) {
        let id = kmshost::csi::volume_id_for(name);
        for _ in 0..500 {
            if h.record(&id).is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{name} never reached create.record");
    }

    // Finishes within the grace period: answered, then the server stops.
    let h = CsiHarness::start_draining(&metadata_config(), Duration::from_secs(600)).await;
    let point = h.driver.failpoint("create.record");
    let call = held_create(&h, "pvc-drained");
    reached(&h, "pvc-drained").await;
    let stopping = tokio::spawn(h.stop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!stopping.is_finished(), "waits for the call in flight");
    fail::cfg(&point, "off").unwrap();
    assert_eq!(
        call.await.unwrap(),
        Ok(()),
        "the call in flight is answered"
    );
    tokio::time::timeout(Duration::from_secs(60), stopping)
        .await
        .expect("stops once the call is done")
        .unwrap();

    // Cannot finish: the server stops at the grace period regardless.
    let h = CsiHarness::start_draining(&metadata_config(), Duration::from_millis(300)).await;
    let point = h.driver.failpoint("create.record");
    let call = held_create(&h, "pvc-cut-short");
    reached(&h, "pvc-cut-short").await;
    tokio::time::timeout(Duration::from_secs(60), h.stop())
        .await
        .expect("the grace period bounds the drain while the call is still held");
    fail::cfg(&point, "off").unwrap();
    assert!(call.await.unwrap().is_err(), "cut short: the CO retries it");
}

/// Long by design: one scenario end to end, each step checked where it happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filesystem_lifecycle_unencrypted() {
    let h = CsiHarness::start(&metadata_config()).await;
    let v = h.create("pvc-fs", 32 * MIB, &[], None).await.unwrap();
    assert_eq!(v.capacity_bytes, 32 * MIB);
    // Idempotent by name.
    let again = h.create("pvc-fs", 32 * MIB, &[], None).await.unwrap();
    assert_eq!(again.volume_id, v.volume_id);
    let id = v.volume_id.clone();

    let ok = h
        .client
        .controller
        .clone()
        .validate_volume_capabilities(proto::ValidateVolumeCapabilitiesRequest {
            volume_id: id.clone(),
            volume_capabilities: vec![mount_cap("ext4")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ok.confirmed.is_some());
    let no = h
        .client
        .controller
        .clone()
        .validate_volume_capabilities(proto::ValidateVolumeCapabilitiesRequest {
            volume_id: id.clone(),
            volume_capabilities: vec![cap_with_mode(
                proto::volume_capability::Mode::MultiNodeMultiWriter,
            )],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(no.confirmed.is_none() && no.message.contains("MultiNodeMultiWriter"));

    let (staging, target) = (h.path("staging"), h.path("pods/p1/vol"));
    h.stage(&id, &staging, mount_cap("")).await.unwrap();
    h.stage(&id, &staging, mount_cap("")).await.unwrap(); // idempotent
    h.publish(&id, &staging, &target, mount_cap(""), false)
        .await
        .unwrap();
    std::fs::write(target.join("hello.txt"), b"kept across stages").unwrap();
    let stats = h
        .client
        .node
        .clone()
        .node_get_volume_stats(proto::NodeGetVolumeStatsRequest {
            volume_id: id.clone(),
            volume_path: target.to_string_lossy().into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.usage.len(), 2);
    assert!(stats.usage[0].total > 20 * MIB && stats.usage[0].used > 0);
    h.unpublish(&id, &target).await.unwrap();
    h.unpublish(&id, &target).await.unwrap(); // idempotent
    assert!(!target.exists());
    h.unstage(&id, &staging).await.unwrap();
    h.unstage(&id, &staging).await.unwrap(); // idempotent
    assert!(!h.attached(&id));

    // Stage again, publish read-only, read back.
    h.stage(&id, &staging, mount_cap("")).await.unwrap();
    h.publish(&id, &staging, &target, mount_cap(""), true)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(target.join("hello.txt")).unwrap(),
        b"kept across stages"
    );
    assert!(
        std::fs::write(target.join("nope"), b"x").is_err(),
        "read-only"
    );
    h.unpublish(&id, &target).await.unwrap();

    // DeleteVolume while staged is refused; nothing is lost.
    let e = h.delete(&id).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    h.unstage(&id, &staging).await.unwrap();

    // Snapshot, restore, clone: the data comes along.
    let snap = h
        .client
        .controller
        .clone()
        .create_snapshot(proto::CreateSnapshotRequest {
            source_volume_id: id.clone(),
            name: "snap-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert!(snap.ready_to_use);
    let restored = h
        .create(
            "pvc-restored",
            64 * MIB,
            &[],
            from_snapshot(&snap.snapshot_id),
        )
        .await
        .unwrap();
    let cloned = h
        .create("pvc-clone", 0, &[], from_volume(&id))
        .await
        .unwrap();
    assert_eq!(
        cloned.capacity_bytes,
        32 * MIB,
        "a clone is at least its source"
    );
    for (n, vid) in [(1, &restored.volume_id), (2, &cloned.volume_id)] {
        let s = h.path(&format!("staging-{n}"));
        h.stage(vid, &s, mount_cap("")).await.unwrap();
        assert_eq!(
            std::fs::read(s.join("hello.txt")).unwrap(),
            b"kept across stages"
        );
        h.unstage(vid, &s).await.unwrap();
    }

    // ListVolumes pages.
    let mut ctl = h.client.controller.clone();
    let p1 = ctl
        .list_volumes(proto::ListVolumesRequest {
            max_entries: 2,
            starting_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p1.entries.len(), 2);
    let p2 = ctl
        .list_volumes(proto::ListVolumesRequest {
            max_entries: 2,
            starting_token: p1.next_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p2.entries.len(), 1);
    assert!(p2.next_token.is_empty());
    let bad = ctl
        .list_volumes(proto::ListVolumesRequest {
            max_entries: 2,
            starting_token: "zz".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::Aborted);

    for vid in [&id, &restored.volume_id, &cloned.volume_id] {
        h.delete(vid).await.unwrap();
        h.delete(vid).await.unwrap(); // idempotent
        assert!(!h.image(vid).exists());
    }
    ctl.delete_snapshot(proto::DeleteSnapshotRequest {
        snapshot_id: snap.snapshot_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(!h.image(&snap.snapshot_id).exists());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_volume_publish_and_online_expansion() {
    let h = CsiHarness::start(&metadata_config()).await;
    let id = h
        .create("pvc-block", 16 * MIB, &[], None)
        .await
        .unwrap()
        .volume_id;
    let (staging, target) = (h.path("staging"), h.path("pods/p1/dev"));
    h.stage(&id, &staging, block_cap()).await.unwrap();
    h.publish(&id, &staging, &target, block_cap(), false)
        .await
        .unwrap();
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&target)
            .unwrap();
        f.seek(SeekFrom::Start(MIB as u64)).unwrap();
        f.write_all(b"raw block data").unwrap();
        f.sync_all().unwrap();
    }
    assert_eq!(
        kmshost::volume::sys::device_size(&target).unwrap(),
        16 << 20
    );
    let r = h.expand(&id, 48 * MIB).await.unwrap();
    assert_eq!(r.capacity_bytes, 48 * MIB);
    assert!(r.node_expansion_required);
    let n = h.node_expand(&id, &target).await.unwrap();
    assert_eq!(n.capacity_bytes, 48 * MIB);
    assert_eq!(
        kmshost::volume::sys::device_size(&target).unwrap(),
        48 << 20
    );
    h.unpublish(&id, &target).await.unwrap();
    h.unstage(&id, &staging).await.unwrap();
    let img = std::fs::read(h.image(&id)).unwrap();
    assert_eq!(&img[1 << 20..(1 << 20) + 14], b"raw block data");
    h.delete(&id).await.unwrap();
    h.stop().await;
}

/// Long by design: one scenario end to end, each step checked where it happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_volume_keys_formatting_rotation_clones_and_snapshots() {
    let h = CsiHarness::start(&metadata_config()).await;
    let v = h.create("pvc-enc", 32 * MIB, ENC_A, None).await.unwrap();
    let id = v.volume_id.clone();
    assert_eq!(v.volume_context["encryptionKMSID"], "meta-a");
    let rec = h.record(&id).unwrap();
    let enc = rec.encryption.clone().unwrap();
    assert!(
        matches!(enc.key, KeyHolding::Wrapped { .. }),
        "metadata wraps"
    );
    assert!(!enc.formatted, "formatting waits for the first stage");
    // The image has room for the LUKS2 header on top of the capacity.
    assert_eq!(
        std::fs::metadata(h.image(&id)).unwrap().len(),
        (32 << 20) + kmshost::csi::LUKS_OVERHEAD
    );
    assert!(blkid_type(&h.image(&id)).is_none());

    format_by_staging(&h, &id).await;
    let key = kms_key(&h, &id).await;
    luks::verify(&h.image(&id), &key).unwrap();
    let token = luks::read_token(&h.image(&id)).unwrap().unwrap();
    assert_eq!(token.kms_id.as_str(), "meta-a");
    assert_eq!(token.key_id, id);
    assert!(
        token.wrapped.is_some(),
        "the wrapped key travels with the header"
    );

    // Rotation: the old key stops working, the new one works, one keyslot.
    h.rotate(&id).await.unwrap();
    let new_key = kms_key(&h, &id).await;
    assert_ne!(new_key, key);
    assert!(matches!(
        luks::verify(&h.image(&id), &key),
        Err(luks::LuksError::WrongPassphrase(_))
    ));
    luks::verify(&h.image(&id), &new_key).unwrap();
    assert_eq!(luks::active_keyslots(&h.image(&id)).unwrap().len(), 1);

    // Snapshot: the key is re-stored under the snapshot ID.
    let snap = h
        .client
        .controller
        .clone()
        .create_snapshot(proto::CreateSnapshotRequest {
            source_volume_id: id.clone(),
            name: "enc-snap".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    let skey = kms_key(&h, &snap.snapshot_id).await;
    luks::verify(&h.image(&snap.snapshot_id), &skey).unwrap();

    // Restore into another kmsID; clone within the same one.
    let enc_b: &[(&str, &str)] = &[("encrypted", "true"), ("encryptionKMSID", "meta-b")];
    let restored = h
        .create(
            "pvc-enc-restored",
            32 * MIB,
            enc_b,
            from_snapshot(&snap.snapshot_id),
        )
        .await
        .unwrap();
    let rrec = h.record(&restored.volume_id).unwrap();
    assert_eq!(rrec.encryption.as_ref().unwrap().kms_id.as_str(), "meta-b");
    let rkey = kms_key(&h, &restored.volume_id).await;
    luks::verify(&h.image(&restored.volume_id), &rkey).unwrap();
    // The other kmsID's wrapping differs (another KEK) but unwraps to the
    // same passphrase, bound to the new volume's ID.
    assert_ne!(rrec.encryption.unwrap().key, enc.key);

    let cloned = h
        .create("pvc-enc-clone", 0, ENC_A, from_volume(&id))
        .await
        .unwrap();
    let ckey = kms_key(&h, &cloned.volume_id).await;
    luks::verify(&h.image(&cloned.volume_id), &ckey).unwrap();

    // Copies of encrypted data must stay encrypted.
    let e = h
        .create("pvc-plain-clone", 0, &[], from_volume(&id))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("encrypted"), "{}", e.message());

    for vid in [&id, &restored.volume_id, &cloned.volume_id] {
        h.delete(vid).await.unwrap();
        assert!(h.record(vid).is_none());
    }
    h.stop().await;
}

/// Long by design: one scenario end to end, each step checked where it happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_statuses_and_destroys_nothing() {
    let h = CsiHarness::start(&metadata_config()).await;
    let records = |h: &CsiHarness| std::fs::read_dir(h.path("records")).unwrap().count();

    // Unknown kmsID: InvalidArgument naming it; nothing created.
    let e = h
        .create(
            "pvc-x",
            32 * MIB,
            &[("encrypted", "true"), ("encryptionKMSID", "no-such-kms")],
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("no-such-kms"), "{}", e.message());
    assert_eq!(records(&h), 0);

    // Unknown parameter: InvalidArgument naming it.
    let e = h
        .create(
            "pvc-x",
            32 * MIB,
            &[("encrypted", "true"), ("encryptionKMSId", "meta-a")],
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("encryptionKMSId"), "{}", e.message());

    // Volume IDs with path characters.
    for bad in ["../../etc", "a/b", "kh-vol-\0"] {
        let e = h.delete(bad).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}");
        let e = h.stage(bad, &h.path("s"), mount_cap("")).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}");
    }
    // Unknown volume.
    let e = h
        .stage("kh-vol-0000", &h.path("s"), mount_cap(""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // Capacity beyond the data directory.
    let e = h.create("pvc-huge", 1 << 60, &[], None).await.unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange);
    assert!(e.message().contains("free"), "{}", e.message());
    assert_eq!(records(&h), 0);

    // Same name, other size: AlreadyExists; the volume is untouched.
    let id = h
        .create("pvc-a", 32 * MIB, &[], None)
        .await
        .unwrap()
        .volume_id;
    let e = h.create("pvc-a", 64 * MIB, &[], None).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    assert_eq!(h.record(&id).unwrap().capacity_bytes, 32 << 20);

    // An operation in progress on the volume: Aborted, nothing done.
    let guard = h.driver.locks().try_lock(&id).unwrap();
    let e = h.delete(&id).await.unwrap_err();
    assert_eq!(e.code(), Code::Aborted);
    let e = h.stage(&id, &h.path("s"), mount_cap("")).await.unwrap_err();
    assert_eq!(e.code(), Code::Aborted);
    drop(guard);
    assert!(h.image(&id).exists());

    // A device already formatted by something else is never formatted.
    let enc = h
        .create("pvc-taken", 32 * MIB, ENC_A, None)
        .await
        .unwrap()
        .volume_id;
    let st = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(h.image(&enc))
        .status()
        .unwrap();
    assert!(st.success());
    let e = h
        .stage(&enc, &h.path("s"), mount_cap(""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("refusing to format"),
        "{}",
        e.message()
    );
    assert_eq!(
        blkid_type(&h.image(&enc)).as_deref(),
        Some("ext4"),
        "untouched"
    );
    assert!(!h.attached(&enc));

    // Wrong key: the KMS hands back a key that does not open the volume.
    let w = h
        .create("pvc-wrong", 32 * MIB, ENC_A, None)
        .await
        .unwrap()
        .volume_id;
    format_by_staging(&h, &w).await;
    let other = h
        .driver
        .kms()
        .wrap(
            "meta-a",
            &KeyId::new(w.clone()).unwrap(),
            &generate_passphrase(),
        )
        .await
        .unwrap();
    let mut rec = h.record(&w).unwrap();
    rec.encryption.as_mut().unwrap().key = KeyHolding::wrapped(&other);
    h.driver.records().put_volume(&rec).unwrap();
    let e = h.stage(&w, &h.path("s"), mount_cap("")).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("wrong key"), "{}", e.message());
    assert!(luks::is_luks2(&h.image(&w)), "header intact");

    // A key-wrapping secret that changed: the unwrap fails its integrity
    // check (DataLoss, never retried), and nothing is touched.
    common::write_secret(
        &h.secrets,
        PASSPHRASE_SECRET,
        &[("encryptionPassphrase", b"someone changed it")],
    );
    let e = h.rotate(&w).await.unwrap_err();
    assert_eq!(e.code(), Code::DataLoss, "{e:?}");
    assert_eq!(luks::active_keyslots(&h.image(&w)).unwrap().len(), 1);
    h.stop().await;
}

/// Long by design: one scenario end to end, each step checked where it happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_any_step_then_a_retry_converges() {
    let h = CsiHarness::start(&metadata_config()).await;
    // CreateVolume.
    for step in ["create.record", "create.blocks", "create.key"] {
        let name = format!("pvc-{step}");
        fail::cfg(h.driver.failpoint(step), "1*return").unwrap();
        let e = h.create(&name, 32 * MIB, ENC_A, None).await.unwrap_err();
        assert_eq!(e.code(), Code::Internal, "{step}");
        let id = kmshost::csi::volume_id_for(&name);
        assert_eq!(
            h.record(&id).unwrap().state,
            VolumeState::Creating,
            "{step}"
        );
        let v = h.create(&name, 32 * MIB, ENC_A, None).await.unwrap();
        assert_eq!(v.volume_id, id);
        assert_eq!(h.record(&id).unwrap().state, VolumeState::Ready);
        format_by_staging(&h, &id).await;
        luks::verify(&h.image(&id), &kms_key(&h, &id).await).unwrap();
    }
    // Key rotation: after a crash at any step the volume still opens with
    // the key the KMS gives; the retry leaves exactly one keyslot.
    for step in ["rotate.keyslot", "rotate.store", "rotate.record"] {
        let id = kmshost::csi::volume_id_for("pvc-create.key");
        fail::cfg(h.driver.failpoint(step), "1*return").unwrap();
        assert_eq!(h.rotate(&id).await.unwrap_err().code(), Code::Internal);
        luks::verify(&h.image(&id), &kms_key(&h, &id).await).unwrap();
        h.rotate(&id).await.unwrap();
        luks::verify(&h.image(&id), &kms_key(&h, &id).await).unwrap();
        assert_eq!(
            luks::active_keyslots(&h.image(&id)).unwrap().len(),
            1,
            "{step}"
        );
    }
    // Snapshots.
    let src = kmshost::csi::volume_id_for("pvc-create.key");
    for step in ["snapshot.record", "snapshot.blocks", "snapshot.key"] {
        let name = format!("snap-{step}");
        fail::cfg(h.driver.failpoint(step), "1*return").unwrap();
        let req = proto::CreateSnapshotRequest {
            source_volume_id: src.clone(),
            name: name.clone(),
            ..Default::default()
        };
        let mut ctl = h.client.controller.clone();
        assert_eq!(
            ctl.create_snapshot(req.clone()).await.unwrap_err().code(),
            Code::Internal
        );
        let s = ctl
            .create_snapshot(req)
            .await
            .unwrap()
            .into_inner()
            .snapshot
            .unwrap();
        assert!(s.ready_to_use);
        luks::verify(&h.image(&s.snapshot_id), &kms_key(&h, &s.snapshot_id).await).unwrap();
    }
    // Unencrypted staging.
    let plain = h
        .create("pvc-plain", 32 * MIB, &[], None)
        .await
        .unwrap()
        .volume_id;
    for step in ["stage.attach", "stage.open"] {
        fail::cfg(h.driver.failpoint(step), "1*return").unwrap();
        let s = h.path("staging-plain");
        assert_eq!(
            h.stage(&plain, &s, mount_cap("")).await.unwrap_err().code(),
            Code::Internal
        );
        h.stage(&plain, &s, mount_cap("")).await.unwrap();
        std::fs::write(s.join(step), b"x").unwrap();
        h.unstage(&plain, &s).await.unwrap();
    }
    // DeleteVolume: blocks go first, the key last; a retry finishes.
    for (i, step) in ["delete.mark", "delete.blocks", "delete.key"]
        .iter()
        .enumerate()
    {
        let id = kmshost::csi::volume_id_for(&format!(
            "pvc-{}",
            ["create.record", "create.blocks", "create.key"][i]
        ));
        fail::cfg(h.driver.failpoint(step), "1*return").unwrap();
        assert_eq!(h.delete(&id).await.unwrap_err().code(), Code::Internal);
        assert_eq!(h.record(&id).unwrap().state, VolumeState::Deleting);
        h.delete(&id).await.unwrap();
        assert!(h.record(&id).is_none() && !h.image(&id).exists());
    }
    h.stop().await;
}

/// Long by design: one scenario end to end, each step checked where it happens.
#[cfg_attr(peers_missing, ignore = "needs OpenBao: scripts/test.sh installs it")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_kms_id_stores_keys_and_an_outage_never_loses_or_orphans_one() {
    let Some(bin) = common::openbao::require_bao("csi vault lifecycle") else {
        return;
    };
    let bao = common::openbao::OpenBao::start(bin).await;
    let vault = |addr: &str| {
        let mut c = metadata_config();
        c["vault-kv"] = serde_json::json!({
            "encryptionKMSType": "vault", "vaultAddress": addr,
            "vaultBackendPath": "secret/", "tokenSecretName": "vault-token"
        });
        c
    };
    let h = CsiHarness::start(&vault(&bao.addr)).await;
    common::write_secret(&h.secrets, "vault-token", &[("token", b"root")]);
    let params: &[(&str, &str)] = &[("encrypted", "true"), ("encryptionKMSID", "vault-kv")];
    let key_of = |id: &str| KeyId::new(id).unwrap();

    let id = h.create_encrypted("pvc-vault", 32 * MIB, "vault-kv").await;
    assert_eq!(
        h.holding(&id),
        KeyHolding::Stored,
        "Vault KV is a key store"
    );
    let stored = h.driver.kms().get("vault-kv", &key_of(&id)).await.unwrap();
    format_by_staging(&h, &id).await;
    luks::verify(&h.image(&id), &stored).unwrap();
    h.rotate(&id).await.unwrap();
    let rotated = h.driver.kms().get("vault-kv", &key_of(&id)).await.unwrap();
    assert_ne!(rotated, stored);
    luks::verify(&h.image(&id), &rotated).unwrap();

    // A CreateVolume that died after storing the key but before recording
    // it, then deleted instead of retried: the key does not outlive it.
    fail::cfg(h.driver.failpoint("create.key"), "1*return").unwrap();
    let e = h
        .create("pvc-vault-crash", 32 * MIB, params, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    let crashed = kmshost::csi::volume_id_for("pvc-vault-crash");
    assert_eq!(h.holding(&crashed), KeyHolding::Pending);
    assert!(
        h.driver
            .kms()
            .get("vault-kv", &key_of(&crashed))
            .await
            .is_ok()
    );
    h.delete(&crashed).await.unwrap();
    assert!(matches!(
        h.driver.kms().get("vault-kv", &key_of(&crashed)).await,
        Err(kmshost::kms::KmsError::NotFound { .. })
    ));

    // Vault unreachable: CreateVolume is Unavailable and leaves nothing.
    let dead = format!("http://127.0.0.1:{}", {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    });
    h.set_config(&vault(&dead));
    let e = h
        .create("pvc-vault-2", 32 * MIB, params, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let id2 = kmshost::csi::volume_id_for("pvc-vault-2");
    assert!(h.record(&id2).is_none() && !h.image(&id2).exists());

    // DeleteVolume during the outage fails, the record stays, the key stays.
    let e = h.delete(&id).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("key was not deleted"),
        "{}",
        e.message()
    );
    assert_eq!(h.record(&id).unwrap().state, VolumeState::Deleting);
    h.set_config(&vault(&bao.addr));
    assert_eq!(
        h.driver.kms().get("vault-kv", &key_of(&id)).await.unwrap(),
        rotated,
        "the key outlives the failed delete"
    );
    // The retry finishes: the key is destroyed in Vault, the record gone.
    h.delete(&id).await.unwrap();
    assert!(h.record(&id).is_none());
    assert!(matches!(
        h.driver.kms().get("vault-kv", &key_of(&id)).await,
        Err(kmshost::kms::KmsError::NotFound { .. })
    ));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xfs_volumes_and_a_filesystem_is_never_reformatted() {
    let h = CsiHarness::start(&metadata_config()).await;
    // mkfs.xfs needs 300 MiB; the image is sparse.
    let id = h
        .create(
            "pvc-xfs",
            320 * MIB,
            &[("csi.storage.k8s.io/fstype", "xfs")],
            None,
        )
        .await
        .unwrap()
        .volume_id;
    let s = h.path("staging");
    h.stage(&id, &s, mount_cap("")).await.unwrap();
    assert_eq!(
        kmshost::volume::sys::mount_at(&s).unwrap().unwrap().fs_type,
        "xfs",
        "the StorageClass's fstype applies"
    );
    std::fs::write(s.join("f"), b"on xfs").unwrap();
    h.unstage(&id, &s).await.unwrap();
    // Asking for ext4 on a volume that holds xfs: refused, data kept.
    let e = h.stage(&id, &s, mount_cap("ext4")).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("refusing to reformat"),
        "{}",
        e.message()
    );
    assert!(!h.attached(&id), "undone");
    h.stage(&id, &s, mount_cap("xfs")).await.unwrap();
    assert_eq!(std::fs::read(s.join("f")).unwrap(), b"on xfs");
    h.unstage(&id, &s).await.unwrap();
    h.delete(&id).await.unwrap();
    h.stop().await;
}

/// Long by design: one scenario end to end, each step checked where it happens.
#[cfg_attr(peers_missing, ignore = "needs OpenBao: scripts/test.sh installs it")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vaulttokens_tenants_get_their_own_settings_token_and_namespace() {
    use common::http::{Recorded, Reply, TestServer};
    use std::sync::Arc;
    let Some(bin) = common::openbao::require_bao("csi vaulttokens tenants") else {
        return;
    };
    let bao = common::openbao::OpenBao::start(bin).await;
    for mount in ["team-b", "team-c"] {
        bao.ok(
            "POST",
            &format!("/v1/sys/mounts/{mount}"),
            Some(serde_json::json!({"type": "kv", "options": {"version": "2"}})),
        )
        .await;
    }
    // A fake kube-apiserver serving the tenants' ConfigMaps.
    let api = TestServer::start(
        "127.0.0.1:0",
        Arc::new(|r: &Recorded| match r.path.as_str() {
            "/api/v1/namespaces/team-c/configmaps/ceph-csi-kms-config" => Reply::json(
                200,
                serde_json::json!({"kind": "ConfigMap", "data": {"vaultBackendPath": "team-c/"}}),
            ),
            "/api/v1/namespaces/team-d/configmaps/ceph-csi-kms-config" => Reply::json(
                200,
                serde_json::json!({"kind": "ConfigMap", "data": {"tokenSecretName": "stolen"}}),
            ),
            _ => Reply::json(404, serde_json::json!({"kind": "Status", "code": 404})),
        }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "driver-token").unwrap();
    let kube = Arc::new(
        kmshost::secrets::KubeApi::new(&api.url(), dir.path().join("token"), None, "ceph-csi")
            .unwrap(),
    );
    let mut config = metadata_config();
    config["vt"] = serde_json::json!({
        "encryptionKMSType": "vaulttokens", "vaultAddress": bao.addr,
        "vaultBackendPath": "secret/",
        "tenants": {"team-b": {"vaultBackendPath": "team-b/"}}
    });
    let h = CsiHarness::start_with(
        &config,
        Some(Arc::new(kmshost::secrets::KubeConfigMaps::new(kube))),
    )
    .await;
    // Each tenant's token lives in its own namespace.
    for ns in ["team-a", "team-b", "team-c", "team-d"] {
        common::write_secret(
            &h.secrets.join(ns),
            "ceph-csi-kms-token",
            &[("token", b"root")],
        );
    }
    let create = |name: &'static str, ns: &'static str| {
        let h = &h;
        async move {
            h.create(
                name,
                32 * MIB,
                &[
                    ("encrypted", "true"),
                    ("encryptionKMSID", "vt"),
                    ("csi.storage.k8s.io/pvc/namespace", ns),
                ],
                None,
            )
            .await
        }
    };
    let stored_in = |id: String| {
        let bao = &bao;
        async move {
            let mut found = Vec::new();
            for mount in ["secret", "team-b", "team-c"] {
                let (s, _) = bao
                    .api("GET", &format!("/v1/{mount}/data/{id}"), None, None)
                    .await
                    .unwrap();
                if s == 200 {
                    found.push(mount);
                }
            }
            found
        }
    };
    // team-a: the kmsID's own settings; team-b: its `tenants` entry;
    // team-c: its ConfigMap.
    let a = create("pvc-a", "team-a").await.unwrap().volume_id;
    let b = create("pvc-b", "team-b").await.unwrap().volume_id;
    let c = create("pvc-c", "team-c").await.unwrap().volume_id;
    assert_eq!(stored_in(a.clone()).await, ["secret"]);
    assert_eq!(stored_in(b.clone()).await, ["team-b"]);
    assert_eq!(stored_in(c.clone()).await, ["team-c"]);
    assert_eq!(
        h.record(&b).unwrap().encryption.unwrap().tenant.as_deref(),
        Some("team-b")
    );
    // The tenant's view is used for every later call: rotation stores the
    // new key in the tenant's mount.
    format_by_staging(&h, &b).await;
    h.rotate(&b).await.unwrap();
    assert_eq!(stored_in(b.clone()).await, ["team-b"]);
    luks::verify(&h.image(&b), &kms_key(&h, &b).await).unwrap();

    // A tenant ConfigMap may set only the allowed keys.
    let e = create("pvc-d", "team-d").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("tokenSecretName"), "{}", e.message());
    // A tenant without a token Secret gets nothing.
    let e = create("pvc-e", "team-e").await.unwrap_err();
    assert!(e.message().contains("ceph-csi-kms-token"), "{e:?}");

    for v in [&a, &b, &c] {
        h.delete(v).await.unwrap();
    }
    assert!(stored_in(b.clone()).await.is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_reads_its_passphrase_from_the_pvc_namespace() {
    let mut config = metadata_config();
    config["meta-ns"] =
        serde_json::json!({"encryptionKMSType": "metadata", "secretName": "tenant-pass"});
    let h = CsiHarness::start(&config).await;
    common::write_secret(
        &h.secrets.join("team-x"),
        "tenant-pass",
        &[("encryptionPassphrase", b"team x passphrase")],
    );
    let params = |ns: &'static str| {
        [
            ("encrypted", "true"),
            ("encryptionKMSID", "meta-ns"),
            ("csi.storage.k8s.io/pvc/namespace", ns),
        ]
    };
    let id = h
        .create("pvc-x", 32 * MIB, &params("team-x"), None)
        .await
        .unwrap()
        .volume_id;
    format_by_staging(&h, &id).await;
    luks::verify(&h.image(&id), &kms_key(&h, &id).await).unwrap();
    // Another namespace has no such Secret: refused, nothing created.
    let e = h
        .create("pvc-y", 32 * MIB, &params("team-y"), None)
        .await
        .unwrap_err();
    assert!(e.message().contains("tenant-pass"), "{e:?}");
    assert!(h.record(&kmshost::csi::volume_id_for("pvc-y")).is_none());
    h.delete(&id).await.unwrap();
    h.stop().await;
}

/// A plugin that passes sealing at CreateVolume and then hands back a
/// 1-byte key at the first NodeStage: the volume is never formatted with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_is_formatted_only_with_a_generated_key() {
    let mut config = metadata_config();
    config["liar"] = serde_json::json!({"encryptionKMSType": "test-guest",
        "kmshostPlugin": KEY_LIAR, "mode": "lie-later"});
    let h = CsiHarness::start(&config).await;
    let params = [("encrypted", "true"), ("encryptionKMSID", "liar")];
    let id = h
        .create("pvc-liar", 32 * MIB, &params, None)
        .await
        .unwrap()
        .volume_id;
    let e = h
        .stage(&id, &h.path("staging-liar"), mount_cap(""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("did not generate"), "{}", e.message());
    assert!(!luks::is_luks2(&h.image(&id)), "never formatted");
    assert!(!h.attached(&id), "detached again");
    h.delete(&id).await.unwrap();
    h.stop().await;
}

/// A plugin's 2 MiB multi-line error reaches the CO as one short status
/// message: the reply arrives, capped and escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugins_flood_of_text_is_a_short_status() {
    let mut config = metadata_config();
    config["loud"] = serde_json::json!({"encryptionKMSType": "test-guest",
        "kmshostPlugin": LOUD, "mode": "error"});
    let h = CsiHarness::start(&config).await;
    let params = [("encrypted", "true"), ("encryptionKMSID", "loud")];
    let e = h
        .create("pvc-loud", 32 * MIB, &params, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{e:?}");
    assert!(e.message().len() < 2048, "{} bytes", e.message().len());
    assert!(!e.message().contains('\n'), "{}", e.message());
    assert!(e.message().contains("forged line"), "{}", e.message());
    assert!(h.record(&kmshost::csi::volume_id_for("pvc-loud")).is_none());
    h.stop().await;
}

/// A small xfs volume is made as large as mkfs.xfs needs (so it can be
/// staged), or refused with OUT_OF_RANGE when the limit forbids that; and
/// the access modes accepted are the ones advertised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_xfs_volumes_round_up_and_accepted_modes_are_advertised() {
    let h = CsiHarness::start(&metadata_config()).await;
    let xfs = [("csi.storage.k8s.io/fstype", "xfs")];
    let v = h
        .create("pvc-small-xfs", 32 * MIB, &xfs, None)
        .await
        .unwrap();
    assert_eq!(v.capacity_bytes, kmshost::csi::XFS_MIN_CAPACITY as i64);
    let s = h.path("staging-small-xfs");
    h.stage(&v.volume_id, &s, mount_cap("")).await.unwrap();
    h.unstage(&v.volume_id, &s).await.unwrap();
    h.delete(&v.volume_id).await.unwrap();
    // A mount capability asking for xfs counts too; a limit below the
    // minimum is out of range, and nothing is created.
    let e = h
        .client
        .controller
        .clone()
        .create_volume(proto::CreateVolumeRequest {
            name: "pvc-tiny-xfs".into(),
            capacity_range: Some(proto::CapacityRange {
                required_bytes: 32 * MIB,
                limit_bytes: 100 * MIB,
            }),
            volume_capabilities: vec![mount_cap("xfs")],
            parameters: Default::default(),
            secrets: Default::default(),
            volume_content_source: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    assert!(
        h.record(&kmshost::csi::volume_id_for("pvc-tiny-xfs"))
            .is_none()
    );
    // ext4 keeps the small size.
    let v = h
        .create("pvc-small-ext4", 32 * MIB, &[], None)
        .await
        .unwrap();
    assert_eq!(v.capacity_bytes, 32 * MIB);

    use proto::controller_service_capability::RpcType as CRpc;
    use proto::node_service_capability::RpcType as NRpc;
    let c = h
        .client
        .controller
        .clone()
        .controller_get_capabilities(proto::ControllerGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(c.capabilities.iter().any(|c| {
        c.rpc
            .as_ref()
            .is_some_and(|r| r.r#type == CRpc::SingleNodeMultiWriter as i32)
    }));
    let n = h
        .client
        .node
        .clone()
        .node_get_capabilities(proto::NodeGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(n.capabilities.iter().any(|c| {
        c.rpc
            .as_ref()
            .is_some_and(|r| r.r#type == NRpc::SingleNodeMultiWriter as i32)
    }));
    h.stop().await;
}

async fn stats(h: &CsiHarness, id: &str, path: &str) -> Result<(), tonic::Status> {
    h.client
        .node
        .clone()
        .node_get_volume_stats(proto::NodeGetVolumeStatsRequest {
            volume_id: id.into(),
            volume_path: path.into(),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

async fn node_expand(h: &CsiHarness, id: &str, path: &str) -> Result<(), tonic::Status> {
    h.node_expand(id, std::path::Path::new(path))
        .await
        .map(|_| ())
}

/// The node ties every path to the volume mounted there (by device
/// number, from the mount table) and refuses each mismatch with the CSI
/// spec's code, touching nothing.
///
/// Long by design: one scenario end to end, each step checked where it happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_paths_are_tied_to_their_volumes() {
    let h = CsiHarness::start(&metadata_config()).await;
    let a = h
        .create("pvc-tie-a", 24 * MIB, &[], None)
        .await
        .unwrap()
        .volume_id;
    let b = h
        .create("pvc-tie-b", 24 * MIB, &[], None)
        .await
        .unwrap()
        .volume_id;
    let (sa, sb, tb) = (h.path("sa"), h.path("sb"), h.path("tb"));
    h.stage(&a, &sa, mount_cap("")).await.unwrap();
    std::fs::write(sa.join("a.txt"), b"volume a").unwrap();
    h.stage(&b, &sb, mount_cap("")).await.unwrap();

    // B published from A's staging path: refused, nothing at B's target.
    let e = h
        .publish(&b, &sa, &tb, mount_cap(""), false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(!tb.join("a.txt").exists());
    // B unstaged from A's staging path: refused, A still mounted.
    let e = h.unstage(&b, &sa).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(std::fs::read(sa.join("a.txt")).unwrap(), b"volume a");
    // Unpublishing B at A's staging path unmounts nothing.
    let e = h.unpublish(&b, &sa).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(sa.join("a.txt").exists());

    // Published read-only; read-write at the same target is another
    // publication: ALREADY_EXISTS. The same again is fine.
    h.publish(&b, &sb, &tb, mount_cap(""), true).await.unwrap();
    let e = h
        .publish(&b, &sb, &tb, mount_cap(""), false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    h.publish(&b, &sb, &tb, mount_cap(""), true).await.unwrap();
    // A published at B's target: ALREADY_EXISTS.
    let e = h
        .publish(&a, &sa, &tb, mount_cap(""), false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    // Unstaging B while it is published: refused, naming the target.
    let e = h.unstage(&b, &sb).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("tb"), "{}", e.message());

    // Stats and expansion: the volume first (NOT_FOUND for an unknown
    // one, whatever the path), then the path must hold it.
    let sa_s = sa.display().to_string();
    let tb_s = tb.display().to_string();
    for (id, path) in [
        ("kh-vol-unknown", "relative/path"),
        ("kh-vol-unknown", &sa_s[..]),
        (&b[..], &sa_s[..]),
    ] {
        let e = stats(&h, id, path).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "stats {id} {path}: {e:?}");
        let e = node_expand(&h, id, path).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "expand {id} {path}: {e:?}");
    }
    stats(&h, &b, &tb_s).await.unwrap();
    stats(&h, &a, &sa_s).await.unwrap();

    h.unpublish(&b, &tb).await.unwrap();
    h.unstage(&b, &sb).await.unwrap();
    h.unstage(&a, &sa).await.unwrap();

    // A block volume published (its device node bind-mounted on a file) is
    // found by device number too: unstaging it first is refused.
    let c = h
        .create("pvc-tie-c", 24 * MIB, &[], None)
        .await
        .unwrap()
        .volume_id;
    let (sc, tc) = (h.path("sc"), h.path("tc"));
    h.stage(&c, &sc, block_cap()).await.unwrap();
    h.publish(&c, &sc, &tc, block_cap(), false).await.unwrap();
    let e = h.unstage(&c, &sc).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("tc"), "{}", e.message());
    stats(&h, &c, &tc.display().to_string()).await.unwrap();
    h.unpublish(&c, &tc).await.unwrap();
    h.unstage(&c, &sc).await.unwrap();
    for v in [&a, &b, &c] {
        h.delete(v).await.unwrap();
    }
    h.stop().await;
}
