//! The cluster config: ceph-csi's `config.json` (ConfigMap
//! `ceph-csi-config`), a JSON list of clusters, each a `clusterID` and its
//! monitors. A StorageClass names a cluster by `clusterID`; the monitors
//! come from here. No wasm, no CLI: parsing and checks only.
//!
//! ```json
//! [{"clusterID": "rook-ceph", "monitors": ["10.0.0.1:6789", "10.0.0.2:6789"]}]
//! ```
//!
//! ceph-csi's entries may carry more keys (`cephFS`, `rbd`, `nfs`,
//! `readAffinity`): they are kept out of the way, not refused, so the same
//! ConfigMap serves both drivers. A key kmshost does not know is ignored;
//! a cluster without monitors, a duplicate `clusterID`, or a monitor that
//! is not `host:port` is refused, naming the entry.

use super::super::VolumeError;
use serde::Deserialize;

/// The file ceph-csi mounts its cluster config at.
pub const DEFAULT_PATH: &str = "/etc/ceph-csi-config/config.json";

/// One Ceph cluster: its ID and monitors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// The `clusterID` StorageClasses name.
    pub id: String,
    /// Monitor addresses, `host:port` (or a messenger-v2 `v2:`/`v1:`
    /// prefixed address, or a `[v2:…,v1:…]` vector, as ceph accepts).
    pub monitors: Vec<String>,
}

impl Cluster {
    /// The monitors as one `mon_host` value.
    pub fn mon_host(&self) -> String {
        self.monitors.join(",")
    }
}

/// All clusters the driver may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterConfig {
    clusters: Vec<Cluster>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    #[serde(rename = "clusterID")]
    cluster_id: Option<String>,
    #[serde(default)]
    monitors: Vec<String>,
}

impl ClusterConfig {
    /// Parses `config.json`'s text.
    pub fn parse(text: &str) -> Result<Self, VolumeError> {
        let entries: Vec<Entry> = serde_json::from_str(text).map_err(|e| {
            VolumeError::Invalid(format!(
                "cluster config: {e} (expected [{{\"clusterID\": \"…\", \"monitors\": [\"host:port\"]}}])"
            ))
        })?;
        let mut clusters: Vec<Cluster> = Vec::with_capacity(entries.len());
        for (i, e) in entries.into_iter().enumerate() {
            let id = e.cluster_id.filter(|s| !s.is_empty()).ok_or_else(|| {
                VolumeError::Invalid(format!("cluster config entry {i}: clusterID is required"))
            })?;
            check_cluster_id(&id).map_err(|m| {
                VolumeError::Invalid(format!("cluster config entry {i}: clusterID {id:?} {m}"))
            })?;
            if clusters.iter().any(|c| c.id == id) {
                return Err(VolumeError::Invalid(format!(
                    "cluster config: clusterID {id:?} is listed twice"
                )));
            }
            if e.monitors.is_empty() {
                return Err(VolumeError::Invalid(format!(
                    "cluster config: clusterID {id:?} has no monitors"
                )));
            }
            for m in &e.monitors {
                check_monitor(m).map_err(|why| {
                    VolumeError::Invalid(format!(
                        "cluster config: clusterID {id:?}: monitor {m:?} {why}"
                    ))
                })?;
            }
            clusters.push(Cluster {
                id,
                monitors: e.monitors,
            });
        }
        Ok(ClusterConfig { clusters })
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &std::path::Path) -> Result<Self, VolumeError> {
        let text = std::fs::read_to_string(path).map_err(super::super::io_err(path))?;
        Self::parse(&text)
    }

    /// The cluster `id`, or an error naming the known ones.
    pub fn get(&self, id: &str) -> Result<&Cluster, VolumeError> {
        self.clusters.iter().find(|c| c.id == id).ok_or_else(|| {
            let known: Vec<&str> = self.clusters.iter().map(|c| c.id.as_str()).collect();
            VolumeError::Invalid(format!(
                "clusterID {id:?} is not in the cluster config (known: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })
    }

    /// All clusters, in file order.
    pub fn clusters(&self) -> &[Cluster] {
        &self.clusters
    }
}

/// A clusterID is a plain name (ceph-csi's are the Rook namespace or the
/// fsid): 1–64 of letters, digits, `-`, `_`, `.`.
pub fn check_cluster_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() || id.len() > 64 {
        return Err("must be 1-64 characters");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("may hold only letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

/// A monitor address: `host:port`, `[ipv6]:port`, with an optional
/// `v1:`/`v2:` prefix, or a bracketed vector of those. No spaces, commas
/// or anything a shell or ceph's option parser would read differently.
fn check_monitor(m: &str) -> Result<(), &'static str> {
    let inner = match m.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        Some(vector) if vector.contains(':') && vector.contains(',') => {
            for a in vector.split(',') {
                check_addr(a)?;
            }
            return Ok(());
        }
        _ => m,
    };
    check_addr(inner)
}

fn check_addr(a: &str) -> Result<(), &'static str> {
    let a = a
        .strip_prefix("v2:")
        .or_else(|| a.strip_prefix("v1:"))
        .unwrap_or(a);
    let (host, port) = a.rsplit_once(':').ok_or("is not host:port")?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
    {
        return Err("has a bad host");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err("has a bad port"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ceph_csi_config() {
        let c = ClusterConfig::parse(
            r#"[{"clusterID":"rook-ceph","monitors":["10.0.0.1:6789","10.0.0.2:6789"],
                 "cephFS":{"subvolumeGroup":"csi"},"rbd":{"radosNamespace":""}},
                {"clusterID":"b","monitors":["[v2:127.0.0.2:3300,v1:127.0.0.2:6789]"]}]"#,
        )
        .unwrap();
        let a = c.get("rook-ceph").unwrap();
        assert_eq!(a.mon_host(), "10.0.0.1:6789,10.0.0.2:6789");
        assert_eq!(c.get("b").unwrap().monitors.len(), 1);
        assert_eq!(c.clusters().len(), 2);
    }

    #[test]
    fn refuses_bad_configs_naming_the_fault() {
        let cases: &[(&str, &str)] = &[
            ("{}", "expected ["),
            (
                r#"[{"monitors":["a:1"]}]"#,
                "entry 0: clusterID is required",
            ),
            (
                r#"[{"clusterID":"","monitors":["a:1"]}]"#,
                "entry 0: clusterID is required",
            ),
            (
                r#"[{"clusterID":"a b","monitors":["a:1"]}]"#,
                "may hold only",
            ),
            (r#"[{"clusterID":"x"}]"#, "\"x\" has no monitors"),
            (
                r#"[{"clusterID":"x","monitors":[]}]"#,
                "\"x\" has no monitors",
            ),
            (
                r#"[{"clusterID":"x","monitors":["a"]}]"#,
                "monitor \"a\" is not host:port",
            ),
            (r#"[{"clusterID":"x","monitors":["a:0"]}]"#, "bad port"),
            (r#"[{"clusterID":"x","monitors":["a:99999"]}]"#, "bad port"),
            (r#"[{"clusterID":"x","monitors":["a b:1"]}]"#, "bad host"),
            (r#"[{"clusterID":"x","monitors":["a:1,b:2"]}]"#, "bad host"),
            (
                r#"[{"clusterID":"x","monitors":["--keyring=/x:1"]}]"#,
                "bad host",
            ),
            (
                r#"[{"clusterID":"x","monitors":["a:1"]},{"clusterID":"x","monitors":["b:1"]}]"#,
                "\"x\" is listed twice",
            ),
        ];
        for (text, want) in cases {
            let e = ClusterConfig::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e} (wanted {want:?})");
        }
    }

    #[test]
    fn monitor_forms_ceph_accepts() {
        for ok in [
            "10.0.0.1:6789",
            "v1:10.0.0.1:6789",
            "v2:10.0.0.1:3300",
            "[v2:10.0.0.1:3300,v1:10.0.0.1:6789]",
            "[fd00::1]:6789",
            "mon-a.rook-ceph.svc:6789",
        ] {
            assert_eq!(check_monitor(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn unknown_cluster_names_the_known_ones() {
        let c = ClusterConfig::parse(r#"[{"clusterID":"a","monitors":["h:1"]}]"#).unwrap();
        let e = c.get("b").unwrap_err().to_string();
        assert!(
            e.contains("\"b\" is not in the cluster config (known: a)"),
            "{e}"
        );
        let e = ClusterConfig::default().get("b").unwrap_err().to_string();
        assert!(e.contains("known: none"), "{e}");
    }
}
