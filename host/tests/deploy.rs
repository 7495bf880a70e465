//! The manifests in `deploy/`: they validate against the Kubernetes
//! schemas (`kubernetes-validate --strict`, offline), and they agree with
//! kmshost itself — the flags its containers pass are flags it accepts, the
//! StorageClasses' parameters are ones it reads, their kmsIDs and clusterIDs
//! are in the ConfigMaps beside them, and the socket and driver names match.

use kmshost::volume::Backends as _;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_kmshost");
/// The Kubernetes release the manifests are validated against: the oldest
/// one kmshost supports (in-tree sidecars' minimum).
const KUBERNETES: &str = "1.31";
/// Kinds from CRDs that ship with the snapshot controller, which
/// kubernetes-validate has no schema for.
const CRD_KINDS: &[&str] = &["VolumeSnapshotClass"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn venv_bin(name: &str) -> Option<PathBuf> {
    let p = repo().join("target/peers-venv/bin").join(name);
    if p.exists() {
        return Some(p);
    }
    if std::env::var_os("KMSHOST_REQUIRE_PEERS").is_some() {
        panic!(
            "{} is missing (scripts/bootstrap.sh installs it)",
            p.display()
        );
    }
    eprintln!("SKIPPED: {} missing (run scripts/test.sh)", p.display());
    None
}

/// The manifests (every `deploy/*.yaml` but the kustomization).
fn manifests() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("deploy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .collect();
    v.sort();
    v
}

/// Every document of `file`, as JSON (read by PyYAML, as kubectl's YAML).
fn documents(python: &Path, file: &Path) -> Vec<Value> {
    let out = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))",
        ])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn all_documents(python: &Path) -> Vec<Value> {
    manifests()
        .iter()
        .flat_map(|f| documents(python, f))
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn validate(validator: &Path, files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(validator)
        .args(["--strict", "-k", KUBERNETES])
        .args(files)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn every_manifest_validates_against_the_kubernetes_schemas() {
    let (Some(validator), Some(python)) = (venv_bin("kubernetes-validate"), venv_bin("python"))
    else {
        return;
    };
    let files = manifests();
    let (ok, text) = validate(&validator, &files);
    assert!(ok, "{text}");
    let docs = all_documents(&python);
    let passed = text
        .lines()
        .filter(|l| l.contains(" passed for resource "))
        .count();
    let crds = docs
        .iter()
        .filter(|d| CRD_KINDS.contains(&d["kind"].as_str().unwrap_or("")))
        .count();
    assert_eq!(passed + crds, docs.len(), "every document checked:\n{text}");
    for line in text.lines().filter(|l| l.starts_with("WARN")) {
        assert!(
            CRD_KINDS
                .iter()
                .any(|k| line.contains(&format!("kind {k} "))),
            "unexpected warning: {line}"
        );
    }

    // The validator is strict: a misspelt field fails it.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let node = std::fs::read_to_string(repo().join("deploy/node.yaml")).unwrap();
    std::fs::write(&bad, node.replace("mountPropagation:", "mountPropogation:")).unwrap();
    let (ok, text) = validate(&validator, &[bad]);
    assert!(!ok && text.contains("mountPropogation"), "{text}");
}

#[test]
fn the_kustomization_lists_every_manifest() {
    let Some(python) = venv_bin("python") else {
        return;
    };
    let k = documents(&python, &repo().join("deploy/kustomization.yaml"));
    let mut listed: Vec<String> = k[0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed[0], "rbac.yaml", "the namespace comes first");
    listed.sort();
    let mut files: Vec<String> = manifests()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(listed, files);
}

/// The kmshost container of `workload` (a Deployment, StatefulSet or
/// DaemonSet document).
fn kmshost_container(workload: &Value) -> &Value {
    workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "kmshost")
        .expect("a container named kmshost")
}

#[test]
fn the_workloads_pass_only_flags_kmshost_accepts() {
    let Some(python) = venv_bin("python") else {
        return;
    };
    let docs = all_documents(&python);
    let workloads: Vec<&Value> = docs
        .iter()
        .filter(|d| {
            ["StatefulSet", "Deployment", "DaemonSet"].contains(&d["kind"].as_str().unwrap())
        })
        .collect();
    assert_eq!(workloads.len(), 2, "a controller and a node plugin");
    for w in workloads {
        let c = kmshost_container(w);
        // The kubelet expands $(VAR) from the container's env: a pod IP
        // is an address, the rest some name.
        let env: HashMap<&str, &str> = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let ip = e["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP";
                (
                    e["name"].as_str().unwrap(),
                    if ip { "10.0.0.5" } else { "node-1" },
                )
            })
            .collect();
        let mut args: Vec<String> = Vec::new();
        for a in c["args"].as_array().unwrap() {
            let mut a = a.as_str().unwrap().to_string();
            while let Some(i) = a.find("$(") {
                let end = a[i..].find(')').map(|j| i + j).expect("a closed $(");
                let var = a[i + 2..end].to_string();
                let value = env
                    .get(var.as_str())
                    .unwrap_or_else(|| panic!("{a}: {var} is not in the container's env"));
                a.replace_range(i..=end, value);
            }
            args.push(a);
        }
        args.push("--help".into());
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{} {args:?}: {}",
            w["metadata"]["name"],
            String::from_utf8_lossy(&out.stderr)
        );
        // The endpoint is in the socket directory the sidecars share.
        assert!(args.contains(&"--endpoint=unix:///csi/csi.sock".to_string()));
    }
}

#[test]
fn storage_classes_name_what_the_config_maps_define() {
    let Some(python) = venv_bin("python") else {
        return;
    };
    let docs = all_documents(&python);
    let config_map = |name: &str| -> Value {
        let cm = of_kind(&docs, "ConfigMap")
            .into_iter()
            .find(|c| c["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("ConfigMap {name}"));
        serde_json::from_str(cm["data"]["config.json"].as_str().unwrap()).unwrap()
    };
    let kms = config_map("ceph-csi-encryption-kms-config");
    let clusters = config_map("ceph-csi-config");
    let clusters =
        kmshost::volume::rbd::ClusterConfig::parse(&clusters.to_string()).expect("ceph-csi-config");
    let volumes = kmshost::volume::rbd::RbdVolumes::new(clusters);

    let driver = of_kind(&docs, "CSIDriver");
    assert_eq!(driver.len(), 1);
    assert_eq!(driver[0]["metadata"]["name"], kmshost::csi::DRIVER_NAME);
    let secrets: Vec<(&str, &str)> = of_kind(&docs, "Secret")
        .iter()
        .map(|s| {
            (
                s["metadata"]["namespace"].as_str().unwrap(),
                s["metadata"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    let classes = of_kind(&docs, "StorageClass");
    assert!(!classes.is_empty());
    for sc in classes {
        let name = &sc["metadata"]["name"];
        assert_eq!(sc["provisioner"], kmshost::csi::DRIVER_NAME, "{name}");
        let p: HashMap<String, String> = serde_json::from_value(sc["parameters"].clone()).unwrap();
        kmshost::csi::params::parse_for(&p, "ext4", volumes.parameters())
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        volumes
            .placement(&p)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let kms_id = &p["encryptionKMSID"];
        assert!(
            kms.get(kms_id).is_some(),
            "{name}: kmsID {kms_id} is not in the KMS config"
        );
        for role in ["provisioner", "controller-expand", "node-stage"] {
            let key = |k: &str| p[&format!("csi.storage.k8s.io/{role}-secret-{k}")].clone();
            let (ns, n) = (key("namespace"), key("name"));
            assert!(
                secrets.contains(&(ns.as_str(), n.as_str())),
                "{name}: Secret {ns}/{n}"
            );
        }
    }

    // The registrar tells the kubelet the socket the node plugin serves.
    let node = of_kind(&docs, "DaemonSet")[0];
    let spec = &node["spec"]["template"]["spec"];
    let socket_dir = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "socket-dir")
        .unwrap()["hostPath"]["path"]
        .as_str()
        .unwrap();
    assert_eq!(
        socket_dir,
        format!("/var/lib/kubelet/plugins/{}", kmshost::csi::DRIVER_NAME)
    );
    let registrar = spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "node-driver-registrar")
        .unwrap();
    assert!(
        registrar["args"]
            .as_array()
            .unwrap()
            .contains(&Value::from(format!(
                "--kubelet-registration-path={socket_dir}/csi.sock"
            )))
    );
}
