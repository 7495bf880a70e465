//! The CSI driver with many volume records: CreateVolume, a ListVolumes
//! page of 100 and the probe at 100, 1,000 and 10,000 records, side by side
//! with the ratio to the first point (target: flat within 10%, ratio ≤ 1.10).
//!
//! The records are real record files (copies of one a CreateVolume wrote,
//! under new IDs); the driver is started afresh over them, as after a
//! restart. Unencrypted volumes: the figures are the driver's, not a KMS's.
//! Run: `cargo bench -p kmshost --bench records`.

#[path = "support/mod.rs"]
mod support;
use support::{median, micros};

use kmshost::csi::proto::{self, volume_capability};
use kmshost::csi::{Driver, DriverConfig};
use kmshost::secrets::ChainedSecrets;
use kmshost::volume::ImageFileBackend;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn driver(dir: &Path, cache: &Path) -> Driver {
    let kms = support::facade(
        &serde_json::json!({}),
        cache,
        Arc::new(ChainedSecrets::new()),
    );
    Driver::new(
        Arc::new(kms),
        Arc::new(ImageFileBackend::new(dir.join("images")).unwrap()),
        dir.join("records"),
        DriverConfig::default(),
    )
    .unwrap()
}

fn create_request(name: &str) -> proto::CreateVolumeRequest {
    proto::CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(proto::CapacityRange {
            required_bytes: 16 << 20,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![proto::VolumeCapability {
            access_type: Some(volume_capability::AccessType::Mount(Default::default())),
            access_mode: Some(volume_capability::AccessMode {
                mode: volume_capability::Mode::SingleNodeWriter as i32,
            }),
        }],
        ..Default::default()
    }
}

struct Point {
    n: usize,
    create: Duration,
    list: Duration,
    probe: Duration,
}

/// A driver over `n` records; medians of `rounds` of each call.
async fn point(n: usize, rounds: usize, cache: &Path) -> Point {
    let dir = tempfile::tempdir().unwrap();
    // One real record, then copies of it under other IDs.
    let seed = driver(dir.path(), cache);
    let id = seed
        .create_volume(create_request("seed"))
        .await
        .unwrap()
        .volume
        .unwrap()
        .volume_id;
    let records = dir.path().join("records");
    let template = std::fs::read_to_string(records.join(format!("{id}.json"))).unwrap();
    for i in 1..n {
        let other = format!("kh-vol-{i:032x}");
        std::fs::write(
            records.join(format!("{other}.json")),
            template.replace(&id, &other),
        )
        .unwrap();
    }
    drop(seed);
    let d = driver(dir.path(), cache);
    let (mut create, mut list, mut probe) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        let t = Instant::now();
        d.create_volume(create_request(&format!("bench-{r}")))
            .await
            .unwrap();
        create.push(t.elapsed());
        let t = Instant::now();
        let page = d
            .list_volumes(proto::ListVolumesRequest {
                max_entries: 100,
                starting_token: String::new(),
            })
            .await
            .unwrap();
        list.push(t.elapsed());
        assert_eq!(page.entries.len(), 100.min(n + r + 1));
        let t = Instant::now();
        d.probe().await.unwrap();
        probe.push(t.elapsed());
    }
    Point {
        n,
        create: median(create),
        list: median(list),
        probe: median(probe),
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let points = [
            point(100, 50, cache.path()).await,
            point(1000, 50, cache.path()).await,
            point(10_000, 50, cache.path()).await,
        ];
        let base = &points[0];
        println!("records: medians of 50 calls each (µs), ratio to 100 records in brackets");
        println!(
            "{:>8} {:>20} {:>22} {:>18}",
            "records", "CreateVolume", "ListVolumes (100)", "Probe"
        );
        for p in &points {
            println!(
                "{:>8} {:>12.1} ({:.2}) {:>14.1} ({:.2}) {:>10.1} ({:.2})",
                p.n,
                micros(p.create),
                micros(p.create) / micros(base.create),
                micros(p.list),
                micros(p.list) / micros(base.list),
                micros(p.probe),
                micros(p.probe) / micros(base.probe)
            );
        }
    });
}
