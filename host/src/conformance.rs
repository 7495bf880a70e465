//! `kmshost plugin test`: the conformance suite a vendor runs against a
//! plugin and a real (or fake) backend, through the same host, limits and
//! checks that will run it in a cluster.
//!
//! Every case is one line of the report — pass, fail or skip, with what was
//! seen — and the report is also JSON for CI. The cases follow the contract
//! (wit/kms-plugin.wit) and what the host verifies before it records a key:
//! the manifest reads and matches `info`; configure refuses an unknown
//! option by name; a wrapping type round-trips, binds the key-id, hides the
//! key, draws fresh randomness per wrap and detects tampering; a key store
//! stores, replaces, answers `not-found` and deletes idempotently; a dead
//! endpoint is `unavailable` (the only error the host retries); and all of
//! it runs under the host's default limits. Keys are random; key-ids are
//! `conformance-<random>`, and what the suite stores it deletes.

use crate::host_setup::{HostSettings, build_kms};
use crate::kms::{KeyId, Kms, KmsError, Passphrase, WrappedKey, generate_passphrase};
use crate::manifest::{Capability, Manifest, OptionKind};
use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::time::Instant;

/// The kmsID the suite configures.
const KMS_ID: &str = "conformance";
/// The same entry with every endpoint pointed at a closed local port.
const DEAD_KMS_ID: &str = "conformance-unreachable";
/// ... at a backend answering with a body past the response cap.
const OVERSIZED_KMS_ID: &str = "conformance-oversized";
/// ... at a backend that accepts and never answers.
const SILENT_KMS_ID: &str = "conformance-silent";
/// The response cap of the oversized twin.
const TWIN_MAX_RESPONSE: usize = 64 << 10;
/// The deadline of the silent twin.
const TWIN_TIMEOUT_MS: u64 = 3000;

/// What the suite runs against.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The plugin component.
    pub plugin: PathBuf,
    /// The kmsID entry (its options, as in `config.json`); the suite sets
    /// `kmshostPlugin`, and `encryptionKMSType` when the manifest serves
    /// one type only and the entry names none.
    pub entry: Map<String, Value>,
    /// Mounted Secrets root (`<name>/<key>`).
    pub secrets_dir: Option<PathBuf>,
    /// A service-account token file.
    pub service_account_token: Option<PathBuf>,
    /// Compile-cache directory.
    pub cache_dir: Option<PathBuf>,
}

/// Why the suite could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    /// The plugin or a scratch file could not be read or written.
    #[error("{0}")]
    Io(String),
    /// The entry cannot be a kmsID's configuration.
    #[error("the entry: {0}")]
    Entry(String),
    /// The facade could not be built.
    #[error(transparent)]
    Kms(#[from] KmsError),
}

/// A case's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// It held.
    Pass,
    /// It did not.
    Fail,
    /// It does not apply to this plugin or type.
    Skip,
}

/// One case of the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    /// The case's name (stable, for CI).
    pub case: &'static str,
    /// Its result.
    pub verdict: Verdict,
    /// What was seen.
    pub detail: String,
    /// How long it took.
    pub millis: u128,
}

/// The whole run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The plugin file.
    pub plugin: String,
    /// The type tested.
    pub kms_type: String,
    /// Every case, in order.
    pub outcomes: Vec<Outcome>,
}

impl Report {
    /// Whether no case failed.
    pub fn passed(&self) -> bool {
        self.outcomes.iter().all(|o| o.verdict != Verdict::Fail)
    }

    /// The report as people read it: a line per case and a summary.
    pub fn text(&self) -> String {
        let mut out = format!("plugin test: {} (type {})\n", self.plugin, self.kms_type);
        for o in &self.outcomes {
            let v = match o.verdict {
                Verdict::Pass => "PASS",
                Verdict::Fail => "FAIL",
                Verdict::Skip => "SKIP",
            };
            out.push_str(&format!(
                "{v}  {:<28} {} ({} ms)\n",
                o.case, o.detail, o.millis
            ));
        }
        let count = |v| self.outcomes.iter().filter(|o| o.verdict == v).count();
        out.push_str(&format!(
            "{} passed, {} failed, {} skipped\n",
            count(Verdict::Pass),
            count(Verdict::Fail),
            count(Verdict::Skip)
        ));
        out
    }

    /// The report as JSON.
    pub fn json(&self) -> Value {
        json!({
            "plugin": self.plugin,
            "kmsType": self.kms_type,
            "passed": self.passed(),
            "outcomes": self.outcomes,
        })
    }
}

/// Runs every case against `setup`. The plugin may be a file or an
/// `oci://` reference, pulled first and then loaded exactly as a cluster
/// would (its entry must carry `kmshostPluginPublicKey`).
pub async fn run(setup: &Setup) -> Result<Report, ConformanceError> {
    let (plugin, reference) = locate(setup).await?;
    let mut suite = Suite {
        outcomes: Vec::new(),
        kms_type: String::new(),
        manifest: None,
    };
    let manifest = suite.manifest_case(&plugin);
    let source = reference.unwrap_or_else(|| plugin.display().to_string());
    let entry = entry_for(setup, &source, manifest.as_deref())?;
    suite.kms_type = kms_type_of(&entry).unwrap_or_default().to_string();
    let scratch = tempfile::tempdir().map_err(|e| ConformanceError::Io(e.to_string()))?;
    let config = scratch.path().join("config.json");
    let backends = HostileBackends::start().await?;
    let table = config_table(entry, manifest.as_deref(), &backends);
    let twins = table.contains_key(DEAD_KMS_ID);
    std::fs::write(&config, Value::Object(table).to_string())
        .map_err(|e| ConformanceError::Io(e.to_string()))?;
    let kms = build_kms(&HostSettings {
        config,
        secrets_dir: setup.secrets_dir.clone(),
        cache_dir: setup.cache_dir.clone(),
        service_account_token: setup.service_account_token.clone(),
        ..Default::default()
    })?;
    suite.manifest = manifest;
    suite.run(&kms, twins).await;
    drop(backends);
    Ok(Report {
        plugin: setup.plugin.display().to_string(),
        kms_type: suite.kms_type,
        outcomes: suite.outcomes,
    })
}

/// The plugin file to read, and the `oci://` reference it was pulled from.
async fn locate(setup: &Setup) -> Result<(PathBuf, Option<String>), ConformanceError> {
    let text = setup.plugin.display().to_string();
    if !text.starts_with("oci://") {
        let path = std::path::absolute(&setup.plugin)
            .map_err(|e| ConformanceError::Io(format!("{text}: {e}")))?;
        return Ok((path, None));
    }
    let r = crate::fetch::OciRef::parse(&text).map_err(ConformanceError::Entry)?;
    let cache = setup
        .cache_dir
        .clone()
        .unwrap_or_else(crate::host_setup::default_cache_dir);
    let path = crate::fetch::pull(&r, &cache, std::time::Duration::from_secs(60))
        .await
        .map_err(|e| ConformanceError::Io(e.to_string()))?;
    Ok((path, Some(r.to_string())))
}

/// The entry to test: the vendor's, with the plugin and (when there is
/// only one) the type filled in.
fn entry_for(
    setup: &Setup,
    plugin: &str,
    manifest: Option<&Manifest>,
) -> Result<Map<String, Value>, ConformanceError> {
    let mut entry = setup.entry.clone();
    entry.insert("kmshostPlugin".into(), Value::String(plugin.to_string()));
    if !entry.contains_key("encryptionKMSType") && !entry.contains_key("KMS_PROVIDER") {
        let only = manifest
            .filter(|m| m.types.len() == 1)
            .and_then(|m| m.types.keys().next().cloned())
            .ok_or_else(|| {
                ConformanceError::Entry(
                    "name the type to test: encryptionKMSType (the manifest serves several, or there is none)".into(),
                )
            })?;
        entry.insert("encryptionKMSType".into(), Value::String(only));
    }
    Ok(entry)
}

/// The kmsIDs the suite configures: the entry, and (when the plugin has
/// endpoints) its twins pointed at a closed port and at the hostile
/// backends, with a small response cap and deadline.
fn config_table(
    entry: Map<String, Value>,
    manifest: Option<&Manifest>,
    backends: &HostileBackends,
) -> Map<String, Value> {
    let mut table = Map::new();
    for (id, url, extra) in [
        (
            DEAD_KMS_ID,
            format!("http://127.0.0.1:{}", closed_port()),
            None,
        ),
        (
            OVERSIZED_KMS_ID,
            backends.oversized.clone(),
            Some(("kmshostMaxResponseBytes", TWIN_MAX_RESPONSE.to_string())),
        ),
        (
            SILENT_KMS_ID,
            backends.silent.clone(),
            Some(("kmshostTimeoutMs", TWIN_TIMEOUT_MS.to_string())),
        ),
    ] {
        if let Some(mut t) = twin(&entry, manifest, &url) {
            if let Some((k, v)) = extra {
                t.insert(k.into(), Value::String(v));
            }
            table.insert(id.into(), Value::Object(t));
        }
    }
    table.insert(KMS_ID.into(), Value::Object(entry));
    table
}

/// The entry with every endpoint option set to `url`, or `None` when the
/// plugin declares no endpoint.
fn twin(
    entry: &Map<String, Value>,
    manifest: Option<&Manifest>,
    url: &str,
) -> Option<Map<String, Value>> {
    let m = manifest?;
    let t = kms_type_of(entry)?;
    let mut twin = entry.clone();
    let mut any = false;
    for o in m.options_for(t).filter(|o| o.kind == OptionKind::Endpoint) {
        for s in o.spellings() {
            twin.remove(s);
        }
        // A stream endpoint (KMIP's host:port) is written without scheme.
        let value = match o.scheme.as_deref() {
            Some("tls") => url.split_once("://").map_or(url, |(_, a)| a),
            _ => url,
        };
        twin.insert(o.name.clone(), Value::String(value.to_string()));
        any = true;
    }
    any.then_some(twin)
}

/// The entry's type: `encryptionKMSType`, or Rook's `KMS_PROVIDER`.
fn kms_type_of(entry: &Map<String, Value>) -> Option<&str> {
    entry
        .get("encryptionKMSType")
        .or_else(|| entry.get("KMS_PROVIDER"))?
        .as_str()
}

/// Two local backends that misbehave: one answers every request with a
/// body larger than the twin's response cap, one accepts connections and
/// never answers. They stop when dropped.
struct HostileBackends {
    oversized: String,
    silent: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl HostileBackends {
    async fn start() -> Result<HostileBackends, ConformanceError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let io = |e: std::io::Error| ConformanceError::Io(format!("a local test backend: {e}"));
        let big = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(io)?;
        let quiet = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(io)?;
        let oversized = format!("http://{}", big.local_addr().map_err(io)?);
        let silent = format!("http://{}", quiet.local_addr().map_err(io)?);
        let body_len = TWIN_MAX_RESPONSE * 4;
        let big = tokio::spawn(async move {
            while let Ok((mut s, _)) = big.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {body_len}\r\n\r\n"
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(&vec![b'a'; body_len]).await;
                });
            }
        });
        let quiet = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = quiet.accept().await {
                held.push(s);
            }
        });
        Ok(HostileBackends {
            oversized,
            silent,
            tasks: vec![big, quiet],
        })
    }
}

impl Drop for HostileBackends {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A local port with no listener (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(9)
}

struct Suite {
    outcomes: Vec<Outcome>,
    kms_type: String,
    manifest: Option<std::sync::Arc<Manifest>>,
}

/// What a case returns: pass or skip with a detail, or a failure.
type Case = Result<(Verdict, String), String>;

fn pass(detail: impl Into<String>) -> Case {
    Ok((Verdict::Pass, detail.into()))
}

fn skip(detail: impl Into<String>) -> Case {
    Ok((Verdict::Skip, detail.into()))
}

/// A fresh key-id for this run.
fn key_id(tag: &str) -> KeyId {
    let n: u64 = rand::random();
    KeyId::new(format!("conformance-{tag}-{n:016x}")).expect("valid key-id")
}

impl Suite {
    fn record(&mut self, case: &'static str, started: Instant, result: Case) {
        let (verdict, detail) = match result {
            Ok(v) => v,
            Err(why) => (Verdict::Fail, why),
        };
        self.outcomes.push(Outcome {
            case,
            verdict,
            detail: crate::plugin_text::sanitize_to(&detail, 512),
            millis: started.elapsed().as_millis(),
        });
    }

    fn manifest_case(&mut self, plugin: &std::path::Path) -> Option<std::sync::Arc<Manifest>> {
        let t = Instant::now();
        let (result, manifest) = match crate::manifest::read_file(plugin) {
            Ok(d) => match d.manifest {
                Some(m) => (
                    pass(format!("{} for contract {}", m.name, m.contract)),
                    Some(m),
                ),
                None => (
                    Err("no kmshost:manifest section: admins would have to list endpoints and Secrets by hand (SDK: manifest!)".into()),
                    None,
                ),
            },
            Err(e) => (Err(e.to_string()), None),
        };
        self.record("manifest", t, result);
        manifest
    }

    fn capabilities(&self) -> (bool, bool) {
        match self
            .manifest
            .as_ref()
            .and_then(|m| m.capabilities(&self.kms_type))
        {
            Some(c) => (
                c.contains(&Capability::Wrap),
                c.contains(&Capability::Store),
            ),
            None => (true, true),
        }
    }

    async fn run(&mut self, kms: &Kms, has_twins: bool) {
        let t = Instant::now();
        let configured = kms.check_configured(KMS_ID, None).await;
        let ok = configured.is_ok();
        self.record(
            "configuration",
            t,
            configured
                .map(|_| (Verdict::Pass, "the entry is valid for the manifest".into()))
                .map_err(|e| e.to_string()),
        );
        if !ok {
            return;
        }
        let t = Instant::now();
        let r = self.info_case(kms).await;
        self.record("info", t, r);
        let t = Instant::now();
        let r = kms
            .validate(KMS_ID)
            .await
            .map(|_| (Verdict::Pass, "configure accepted the entry".into()))
            .map_err(|e| e.to_string());
        let configured = r.is_ok();
        self.record("configure", t, r);
        if !configured {
            return;
        }
        let t = Instant::now();
        let r = unknown_option_case(kms).await;
        self.record("unknown-option-named", t, r);
        let (wraps, stores) = self.capabilities();
        let wrapped = self.wrap_cases(kms, wraps, stores).await;
        self.store_cases(kms, stores, wrapped).await;
        self.hostile_backend_cases(kms, wraps, has_twins).await;
        let t = Instant::now();
        let r = self.limits_case();
        self.record("default-limits", t, r);
    }

    async fn info_case(&self, kms: &Kms) -> Case {
        let about = kms.plugin_about(KMS_ID).await.map_err(|e| e.to_string())?;
        let Some(m) = &self.manifest else {
            return pass(format!("{} {}", about.name, about.version));
        };
        if m.name != about.name {
            return Err(format!(
                "info() says {:?}, the manifest {:?}",
                about.name, m.name
            ));
        }
        let declared = m.capabilities(&self.kms_type).unwrap_or_default();
        match declared.iter().find(|c| !about.capabilities.contains(c)) {
            Some(c) => Err(format!(
                "the manifest declares {c} for type {}, info() does not",
                self.kms_type
            )),
            None => pass(format!("{} {}", about.name, about.version)),
        }
    }

    /// The backend misbehaves: gone, answering too much, never answering.
    /// Each is an error the host can act on, in time, never a success or a
    /// crashed plugin.
    async fn hostile_backend_cases(&mut self, kms: &Kms, wraps: bool, has_twins: bool) {
        const CASES: [&str; 3] = [
            "unreachable-is-unavailable",
            "oversized-response-is-an-error",
            "silent-backend-stops-in-time",
        ];
        if !has_twins {
            let t = Instant::now();
            for c in CASES {
                self.record(c, t, skip("the plugin declares no endpoint option"));
            }
            return;
        }
        let t = Instant::now();
        let r = dead_endpoint_case(kms, wraps).await;
        self.record(CASES[0], t, r);
        let t = Instant::now();
        let r = match one_op(kms, OVERSIZED_KMS_ID, wraps).await {
            Ok(()) => Err("succeeded on a response past the cap".into()),
            Err(e) if crashed(&e) => Err(format!("the plugin crashed: {e}")),
            Err(KmsError::Integrity { .. }) => {
                Err("reported as integrity (never retried): a cut response is not a bad key".into())
            }
            Err(e) => pass(format!("{} ({e})", class(&e))),
        };
        self.record(CASES[1], t, r);
        let t = Instant::now();
        let outcome = one_op(kms, SILENT_KMS_ID, wraps).await;
        let took = t.elapsed().as_millis();
        let r = match outcome {
            _ if took > u128::from(TWIN_TIMEOUT_MS) + 2000 => Err(format!(
                "took {took} ms under a {TWIN_TIMEOUT_MS} ms deadline"
            )),
            Ok(()) => Err("succeeded without an answer".into()),
            Err(e) if crashed(&e) => Err(format!("the plugin crashed: {e}")),
            Err(
                e @ (KmsError::Unavailable { .. }
                | KmsError::TimedOut { .. }
                | KmsError::Sandbox { .. }),
            ) => pass(format!("{} ({e})", class(&e))),
            Err(e) => Err(format!(
                "expected unavailable or the host's deadline, got {e}"
            )),
        };
        self.record(CASES[2], t, r);
    }

    /// The envelope cases; whether they ran (wrap was not skipped).
    async fn wrap_cases(&mut self, kms: &Kms, wraps: bool, stores: bool) -> bool {
        const CASES: [&str; 5] = [
            "wrap-round-trip",
            "wrap-binds-key-id",
            "wrap-hides-key",
            "wrap-is-randomized",
            "tamper-is-integrity",
        ];
        if !wraps {
            let t = Instant::now();
            for c in CASES {
                self.record(c, t, skip("the type does not declare wrap"));
            }
            return false;
        }
        let (id, key) = (key_id("wrap"), generate_passphrase());
        let t = Instant::now();
        let blob = match kms.wrap(KMS_ID, &id, &key).await {
            Ok(b) => b,
            Err(KmsError::Unsupported { .. }) if stores => {
                for c in CASES {
                    self.record(
                        c,
                        t,
                        skip("wrap answered unsupported; the type also declares store"),
                    );
                }
                return false;
            }
            Err(e) => {
                self.record(CASES[0], t, Err(format!("wrap: {e}")));
                return true;
            }
        };
        let r = round_trip(kms, &id, &key, &blob).await;
        self.record(CASES[0], t, r);
        let t = Instant::now();
        let r = expect_integrity(
            kms.unwrap(KMS_ID, &key_id("other"), &blob).await,
            "unwrap under another key-id",
        );
        self.record(CASES[1], t, r);
        let t = Instant::now();
        let hides = !blob
            .as_bytes()
            .windows(key.len())
            .any(|w| w == key.expose());
        self.record(
            CASES[2],
            t,
            if hides {
                pass("the blob does not contain the key")
            } else {
                Err("the blob contains the key in clear".into())
            },
        );
        let t = Instant::now();
        let r = randomized(kms, &id, &key, &blob).await;
        self.record(CASES[3], t, r);
        let t = Instant::now();
        let r = tampering(kms, &id, &blob).await;
        self.record(CASES[4], t, r);
        true
    }

    /// The key-store cases. An entry whose wrap cases ran and whose `put`
    /// answers unsupported uses the other half of a type declaring both
    /// (kmip in ceph-csi's mode): its store cases are skipped, as the host
    /// would never store for it.
    async fn store_cases(&mut self, kms: &Kms, stores: bool, wrapped: bool) {
        const CASES: [&str; 4] = [
            "store-round-trip",
            "store-replaces",
            "get-missing-is-not-found",
            "delete-is-idempotent",
        ];
        let t = Instant::now();
        if !stores {
            for c in CASES {
                self.record(c, t, skip("the type does not declare store"));
            }
            return;
        }
        let id = key_id("store");
        let (k1, k2) = (generate_passphrase(), generate_passphrase());
        let r = put_get(kms, &id, &k1).await;
        let unsupported = matches!(&r, Err(m) if m.contains("unsupported"));
        if unsupported && wrapped {
            for c in CASES {
                self.record(c, t, skip("put answered unsupported; the entry wraps"));
            }
            return;
        }
        self.record(CASES[0], t, r);
        if unsupported {
            return;
        }
        let t = Instant::now();
        let r = put_get(kms, &id, &k2).await;
        self.record(CASES[1], t, r);
        let t = Instant::now();
        let r = match kms.get(KMS_ID, &key_id("missing")).await {
            Err(KmsError::NotFound { .. }) => pass("not-found"),
            other => Err(format!(
                "get of a key never stored: expected not-found, got {}",
                show(&other)
            )),
        };
        self.record(CASES[2], t, r);
        let t = Instant::now();
        let r = delete_twice(kms, &id).await;
        self.record(CASES[3], t, r);
    }

    fn limits_case(&self) -> Case {
        let stopped = self.outcomes.iter().find(|o| {
            o.verdict == Verdict::Fail
                && [" stopped: ", "host resource limit", "larger than the"]
                    .iter()
                    .any(|w| o.detail.contains(w))
        });
        match stopped {
            Some(o) => Err(format!("{} ran into a host limit: {}", o.case, o.detail)),
            None => {
                pass("every case ran under the host's default memory, deadline and response limits")
            }
        }
    }
}

fn show<T>(r: &Result<T, KmsError>) -> String {
    match r {
        Ok(_) => "success".into(),
        Err(e) => e.to_string(),
    }
}

fn expect_integrity<T>(r: Result<T, KmsError>, what: &str) -> Case {
    match r {
        Err(KmsError::Integrity { .. }) => pass(format!("{what}: integrity")),
        other => Err(format!("{what}: expected integrity, got {}", show(&other))),
    }
}

async fn unknown_option_case(kms: &Kms) -> Case {
    const OPTION: &str = "conformanceUnknownOption";
    match kms.validate_with_option(KMS_ID, (OPTION, "1")).await {
        Err(KmsError::InvalidConfig { option, .. }) if option == OPTION => {
            pass(format!("invalid-config naming {OPTION}"))
        }
        other => Err(format!(
            "configure with an unknown option {OPTION}: expected invalid-config naming it, got {}",
            show(&other)
        )),
    }
}

async fn round_trip(kms: &Kms, id: &KeyId, key: &Passphrase, blob: &WrappedKey) -> Case {
    let back = kms
        .unwrap(KMS_ID, id, blob)
        .await
        .map_err(|e| format!("unwrap: {e}"))?;
    if back != *key {
        return Err("unwrap(wrap(key)) returned another key".into());
    }
    pass(format!("{}-byte blob", blob.as_bytes().len()))
}

async fn randomized(kms: &Kms, id: &KeyId, key: &Passphrase, blob: &WrappedKey) -> Case {
    let again = kms
        .wrap(KMS_ID, id, key)
        .await
        .map_err(|e| format!("second wrap: {e}"))?;
    if again.as_bytes() == blob.as_bytes() {
        return Err("two wraps of the same key gave the same blob: no fresh nonce/IV".into());
    }
    pass("two wraps of one key differ")
}

/// Flips one bit at the start, the middle and the end of the blob; each
/// altered blob must fail with `integrity`.
async fn tampering(kms: &Kms, id: &KeyId, blob: &WrappedKey) -> Case {
    let b = blob.as_bytes();
    for at in [0, b.len() / 2, b.len().saturating_sub(1)] {
        let mut t = b.to_vec();
        t[at] ^= 0x01;
        let r = kms.unwrap(KMS_ID, id, &WrappedKey::new(t)).await;
        expect_integrity(r, &format!("unwrap with byte {at} altered"))?;
    }
    pass("altered at the start, middle and end: integrity each time")
}

async fn put_get(kms: &Kms, id: &KeyId, key: &Passphrase) -> Case {
    kms.put(KMS_ID, id, key)
        .await
        .map_err(|e| format!("put: {e}"))?;
    let back = kms
        .get(KMS_ID, id)
        .await
        .map_err(|e| format!("get after put: {e}"))?;
    if back != *key {
        return Err("get after put returned another key".into());
    }
    pass("get returns what put stored")
}

async fn delete_twice(kms: &Kms, id: &KeyId) -> Case {
    kms.delete(KMS_ID, id)
        .await
        .map_err(|e| format!("delete: {e}"))?;
    kms.delete(KMS_ID, id)
        .await
        .map_err(|e| format!("second delete: {e}"))?;
    kms.delete(KMS_ID, &key_id("never"))
        .await
        .map_err(|e| format!("delete of a key never stored: {e}"))?;
    match kms.get(KMS_ID, id).await {
        Err(KmsError::NotFound { .. }) => pass("deleted twice, then not-found"),
        other => Err(format!(
            "get after delete: expected not-found, got {}",
            show(&other)
        )),
    }
}

/// One operation on a twin: wrap when the type wraps, else get.
async fn one_op(kms: &Kms, kms_id: &str, wraps: bool) -> Result<(), KmsError> {
    let id = key_id("hostile");
    if wraps {
        match kms.wrap(kms_id, &id, &generate_passphrase()).await {
            Err(KmsError::Unsupported { .. }) => {}
            r => return r.map(drop),
        }
    }
    kms.get(kms_id, &id).await.map(drop)
}

/// Whether the sandbox stopped the plugin for a trap (a panic, an abort).
fn crashed(e: &KmsError) -> bool {
    matches!(
        e,
        KmsError::Sandbox {
            cause: crate::sandbox::SandboxCause::Trap(_),
            ..
        }
    )
}

/// The error's class, as the host acts on it.
fn class(e: &KmsError) -> &'static str {
    match e {
        KmsError::Unavailable { .. } => "unavailable, retried",
        KmsError::TimedOut { .. } => "timed out, retried",
        KmsError::Sandbox { .. } => "stopped by the host",
        KmsError::Denied { .. } => "denied",
        _ => "an error",
    }
}

async fn dead_endpoint_case(kms: &Kms, wraps: bool) -> Case {
    let id = key_id("dead");
    let r = match wraps {
        true => kms
            .wrap(DEAD_KMS_ID, &id, &generate_passphrase())
            .await
            .map(drop),
        false => kms.get(DEAD_KMS_ID, &id).await.map(drop),
    };
    match r {
        Err(KmsError::Unavailable { .. }) => {
            pass("a closed port is unavailable (retried by the host)")
        }
        Err(KmsError::Unsupported { .. }) if wraps => match kms.get(DEAD_KMS_ID, &id).await {
            Err(KmsError::Unavailable { .. }) => {
                pass("a closed port is unavailable (retried by the host)")
            }
            other => Err(format!(
                "get against a closed port: expected unavailable, got {}",
                show(&other)
            )),
        },
        other => Err(format!(
            "against a closed port: expected unavailable, got {}",
            show(&other)
        )),
    }
}
