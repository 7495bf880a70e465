//! A **fake** Entra ID token endpoint and Azure Key Vault, in test code: no
//! emulator of either service exists in any registry this project can
//! reach. It follows the documented shapes (`../shared/ANCHORS.md`, the
//! Microsoft identity platform and Key Vault REST references) and is strict
//! about what it accepts, so a plugin that would fail against the real
//! services fails here:
//!
//! * **Entra ID** (`POST /{tenant}/oauth2/v2.0/token`): a form body with
//!   the client-credentials grant, a registered client, the vault's
//!   `.default` scope and a JWT client assertion. The assertion's header
//!   names a certificate registered on the app (`x5t`, or `x5t#S256`), its
//!   signature verifies under that certificate (RS256 or PS256), and its
//!   claims hold: `aud` = this token URL, `iss` = `sub` = the client ID, a
//!   fresh `jti`, `nbf` ≤ now < `exp`. Refusals are the real error bodies
//!   (`error`, `error_description` with the AADSTS code, `error_codes`,
//!   trace and correlation IDs).
//! * **Key Vault** (`/secrets/{name}`, `/deletedsecrets/{name}/recover`):
//!   `api-version`, a bearer token this fake issued and not yet expired
//!   (else 401 with the real `WWW-Authenticate` challenge), the app's
//!   permissions (else 403), the name rules, JSON bodies; secrets keep
//!   versions, Delete is a soft delete, a soft-deleted name answers 409
//!   `ObjectIsDeletedButRecoverable` until recovered, and a recovery takes
//!   a few requests (409 `ObjectIsBeingRecovered`) as on the real service.

use super::http::{Recorded, Reply, TestServer};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The tenant the fake knows.
pub const TENANT: &str = "4f1c2b7e-9d3a-4c65-8e21-7b9f0a6d5c13";
/// The app registration the fake knows.
pub const CLIENT_ID: &str = "a3e8d9f1-56b2-4c07-9f4e-2d1b8c7a6e50";
/// The only scope the fake issues tokens for: Key Vault's.
pub const VAULT_SCOPE: &str = "https://vault.azure.net/.default";
/// The permissions an app has by default (an access policy with secret
/// get, set, delete and recover, or the Key Vault Secrets Officer role).
pub const ALL_PERMISSIONS: [&str; 4] = ["get", "set", "delete", "recover"];

/// A certificate and its private key, made by `openssl` for the test.
#[derive(Clone)]
pub struct TestCert {
    /// The certificate's PEM.
    pub cert_pem: String,
    /// The private key's PEM (PKCS#8, unencrypted).
    pub key_pem: String,
    /// The certificate's DER.
    pub der: Vec<u8>,
}

impl TestCert {
    /// A new self-signed RSA certificate of `bits` bits.
    pub fn rsa(bits: u32) -> TestCert {
        Self::self_signed(
            &["-newkey", &format!("rsa:{bits}"), "-sha256"],
            "kmshost-azure-test",
        )
    }

    /// A new self-signed EC P-256 certificate (which Entra ID accepts but
    /// the host does not sign with).
    pub fn ec() -> TestCert {
        let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
        Self::self_signed(&key, "kmshost-azure-ec")
    }

    /// `openssl req -x509` with the `key` arguments, valid two days.
    fn self_signed(key: &[&str], cn: &str) -> TestCert {
        let dir = tempfile::tempdir().unwrap();
        let subject = format!("/CN={cn}");
        let mut args = vec!["req", "-x509", "-nodes", "-days", "2", "-subj", &subject];
        args.extend_from_slice(key);
        args.extend(["-keyout", "key.pem", "-out", "cert.pem"]);
        openssl(dir.path(), &args);
        Self::read(dir.path())
    }

    fn read(dir: &Path) -> TestCert {
        let cert_pem = std::fs::read_to_string(dir.join("cert.pem")).unwrap();
        let key_pem = std::fs::read_to_string(dir.join("key.pem")).unwrap();
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .unwrap()
            .to_vec();
        TestCert {
            cert_pem,
            key_pem,
            der,
        }
    }

    /// `CLIENT_CERT` as ceph-csi's Secret holds it: the certificate, then
    /// the key.
    pub fn client_cert(&self) -> String {
        format!("{}{}", self.cert_pem, self.key_pem)
    }

    /// The key as PKCS#1 (`RSA PRIVATE KEY`).
    pub fn key_pkcs1(&self) -> String {
        self.convert(&["rsa", "-traditional"], &[])
    }

    /// The key encrypted with a passphrase (`ENCRYPTED PRIVATE KEY`).
    pub fn key_encrypted(&self) -> String {
        self.convert(
            &["pkcs8", "-topk8", "-v2", "aes-256-cbc"],
            &["-passout", "pass:kmshost-test"],
        )
    }

    fn convert(&self, cmd: &[&str], extra: &[&str]) -> String {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("in.pem"), &self.key_pem).unwrap();
        let mut args = cmd.to_vec();
        args.extend(["-in", "in.pem", "-out", "out.pem"]);
        args.extend(extra);
        openssl(dir.path(), &args);
        std::fs::read_to_string(dir.path().join("out.pem")).unwrap()
    }

    /// base64url SHA-1 of the DER (`x5t`).
    pub fn x5t(&self) -> String {
        B64URL.encode(ring::digest::digest(
            &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            &self.der,
        ))
    }

    /// base64url SHA-256 of the DER (`x5t#S256`).
    pub fn x5t_s256(&self) -> String {
        B64URL.encode(ring::digest::digest(&ring::digest::SHA256, &self.der))
    }
}

/// Runs `openssl` in `dir`; a machine without it fails the test with the
/// way to get it (the README's bootstrap installs it).
fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("openssl is needed to make test certificates ({e}): run scripts/bootstrap.sh")
        });
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An assertion Entra ID accepted: its decoded header and claims.
#[derive(Debug, Clone)]
pub struct Assertion {
    pub header: Value,
    pub claims: Value,
}

/// A secret as the vault holds it.
#[derive(Debug, Clone, Default)]
pub struct Secret {
    /// Values, oldest first.
    pub versions: Vec<String>,
    /// Soft-deleted (recoverable, not purged).
    pub deleted: bool,
    /// Set requests still answered `ObjectIsBeingRecovered`.
    recovering: usize,
}

struct Issued {
    expires: Instant,
}

#[derive(Default)]
struct State {
    entra_url: String,
    vault_url: String,
    certs: Vec<Vec<u8>>,
    permissions: HashSet<String>,
    token_lifetime: u64,
    tokens: HashMap<String, Issued>,
    jtis: HashSet<String>,
    assertions: Vec<Assertion>,
    logins: usize,
    refused_logins: usize,
    refused_tokens: usize,
    secrets: HashMap<String, Secret>,
    recovery_lag: usize,
    throttle: usize,
    outage: usize,
    next: u64,
}

/// The running fake: Entra ID and Key Vault on two loopback ports.
pub struct FakeAzure {
    pub entra: TestServer,
    pub vault: TestServer,
    state: Arc<Mutex<State>>,
}

impl FakeAzure {
    /// Starts both services; the app has every secret permission, no
    /// certificate registered, and tokens live an hour.
    pub async fn start() -> FakeAzure {
        let state = Arc::new(Mutex::new(State {
            token_lifetime: 3599,
            permissions: ALL_PERMISSIONS.iter().map(|p| p.to_string()).collect(),
            recovery_lag: 1,
            ..Default::default()
        }));
        let entra = TestServer::with_state(&state, entra).await;
        let vault = TestServer::with_state(&state, vault).await;
        {
            let mut s = state.lock().unwrap();
            s.entra_url = entra.url();
            s.vault_url = vault.url();
        }
        FakeAzure {
            entra,
            vault,
            state,
        }
    }

    /// `AZURE_AUTHORITY_HOST`.
    pub fn authority(&self) -> String {
        self.entra.url()
    }

    /// The tenant's token URL (the assertion's `aud`).
    pub fn token_url(&self) -> String {
        format!("{}/{TENANT}/oauth2/v2.0/token", self.entra.url())
    }

    /// `AZURE_VAULT_URL`.
    pub fn vault_url(&self) -> String {
        self.vault.url()
    }

    /// Uploads `cert` to the app registration (Certificates & secrets).
    pub fn register(&self, cert: &TestCert) {
        self.state.lock().unwrap().certs.push(cert.der.clone());
    }

    /// The app's secret permissions from now on.
    pub fn set_permissions(&self, perms: &[&str]) {
        self.state.lock().unwrap().permissions = perms.iter().map(|p| p.to_string()).collect();
    }

    /// Tokens issued from now on live `secs` seconds (`expires_in`).
    pub fn set_token_lifetime(&self, secs: u64) {
        self.state.lock().unwrap().token_lifetime = secs;
    }

    /// Expires every token issued so far.
    pub fn expire_tokens(&self) {
        let mut s = self.state.lock().unwrap();
        let past = Instant::now() - Duration::from_secs(1);
        for t in s.tokens.values_mut() {
            t.expires = past;
        }
    }

    /// Tokens Entra ID issued.
    pub fn logins(&self) -> usize {
        self.state.lock().unwrap().logins
    }

    /// Token requests Entra ID refused.
    pub fn refused_logins(&self) -> usize {
        self.state.lock().unwrap().refused_logins
    }

    /// Vault requests refused for an expired or unknown token.
    pub fn refused_tokens(&self) -> usize {
        self.state.lock().unwrap().refused_tokens
    }

    /// The assertions Entra ID accepted, in order.
    pub fn assertions(&self) -> Vec<Assertion> {
        self.state.lock().unwrap().assertions.clone()
    }

    /// The secret `name`, if the vault has it (live or soft-deleted).
    pub fn secret(&self, name: &str) -> Option<Secret> {
        self.state.lock().unwrap().secrets.get(name).cloned()
    }

    /// A secret some earlier volume left soft-deleted under `name`.
    pub fn leave_soft_deleted(&self, name: &str, value: &str) {
        self.state.lock().unwrap().secrets.insert(
            name.into(),
            Secret {
                versions: vec![value.into()],
                deleted: true,
                recovering: 0,
            },
        );
    }

    /// Set requests a recovered secret answers `ObjectIsBeingRecovered`.
    pub fn set_recovery_lag(&self, n: usize) {
        self.state.lock().unwrap().recovery_lag = n;
    }

    /// The next `n` vault requests answer 429 (`Retry-After: 1`).
    pub fn throttle(&self, n: usize) {
        self.state.lock().unwrap().throttle = n;
    }

    /// The next `n` vault requests answer 503.
    pub fn outage(&self, n: usize) {
        self.state.lock().unwrap().outage = n;
    }

    /// Vault requests received so far.
    pub fn vault_requests(&self) -> Vec<Recorded> {
        self.vault.requests.lock().unwrap().clone()
    }

    /// Token requests received so far.
    pub fn entra_requests(&self) -> Vec<Recorded> {
        self.entra.requests.lock().unwrap().clone()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Entra ID's error body: the AADSTS code first in the description, then
/// the trace and correlation IDs, as the service writes it.
fn aadsts(status: u16, error: &str, code: u32, message: &str) -> Reply {
    let trace = "0e5a3c1d-7b44-4a8e-9f1c-2d3b4a5c6d00";
    let corr = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
    Reply::json(
        status,
        json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {message}\r\nTrace ID: {trace}\r\nCorrelation ID: {corr}\r\nTimestamp: 2026-12-06 12:00:00Z"
            ),
            "error_codes": [code],
            "timestamp": "2026-12-06 12:00:00Z",
            "trace_id": trace,
            "correlation_id": corr,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    )
}

/// An `application/x-www-form-urlencoded` body.
fn form(body: &[u8]) -> Option<HashMap<String, String>> {
    let text = std::str::from_utf8(body).ok()?;
    let mut out = HashMap::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=')?;
        out.insert(unescape(k)?, unescape(v)?);
    }
    Some(out)
}

fn unescape(s: &str) -> Option<String> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn entra(s: &mut State, r: &Recorded) -> Reply {
    match token_request(s, r) {
        Ok(reply) => reply,
        Err(refusal) => {
            s.refused_logins += 1;
            refusal
        }
    }
}

/// Long by design: the token endpoint's checks, in the service's order.
fn token_request(s: &mut State, r: &Recorded) -> Result<Reply, Reply> {
    let path = format!("/{TENANT}/oauth2/v2.0/token");
    if r.path != path {
        let tenant = r
            .path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or("");
        return Err(aadsts(
            400,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        ));
    }
    if r.method != "POST"
        || r.header("content-type")
            .is_none_or(|c| !c.starts_with("application/x-www-form-urlencoded"))
    {
        return Err(aadsts(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        ));
    }
    let f = form(&r.body).ok_or_else(|| {
        aadsts(
            400,
            "invalid_request",
            900144,
            "The request body must be form-encoded.",
        )
    })?;
    for p in [
        "grant_type",
        "client_id",
        "scope",
        "client_assertion_type",
        "client_assertion",
    ] {
        if f.get(p).is_none_or(String::is_empty) {
            return Err(aadsts(
                400,
                "invalid_request",
                900144,
                &format!("The request body must contain the following parameter: '{p}'."),
            ));
        }
    }
    if f["grant_type"] != "client_credentials" {
        return Err(aadsts(
            400,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        ));
    }
    if f["client_id"] != CLIENT_ID {
        return Err(aadsts(
            400,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{}' was not found in the directory '{TENANT}'.",
                f["client_id"]
            ),
        ));
    }
    if f["scope"] != VAULT_SCOPE {
        return Err(aadsts(
            400,
            "invalid_scope",
            70011,
            &format!(
                "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {} is not valid.",
                f["scope"]
            ),
        ));
    }
    if f["client_assertion_type"] != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
        return Err(aadsts(
            400,
            "invalid_request",
            50027,
            "JWT token is invalid or malformed.",
        ));
    }
    // The endpoint as the client addressed it (a guest reaches the fake
    // by another address than the host does).
    let base = match &r.host {
        Some(h) => format!("http://{h}"),
        None => s.entra_url.clone(),
    };
    let token_url = format!("{base}{path}");
    let a = check_assertion(s, &f["client_assertion"], &token_url)?;
    s.assertions.push(a);
    s.logins += 1;
    s.next += 1;
    let token = format!("fake-entra-access-token-{:016x}", s.next);
    s.tokens.insert(
        token.clone(),
        Issued {
            expires: Instant::now() + Duration::from_secs(s.token_lifetime),
        },
    );
    Ok(Reply::json(
        200,
        json!({"token_type": "Bearer", "expires_in": s.token_lifetime,
               "ext_expires_in": s.token_lifetime, "access_token": token}),
    ))
}

fn malformed() -> Reply {
    aadsts(
        400,
        "invalid_request",
        50027,
        "JWT token is invalid or malformed.",
    )
}

/// Long by design: every check Entra ID makes of a client assertion.
fn check_assertion(s: &mut State, jwt: &str, token_url: &str) -> Result<Assertion, Reply> {
    let parts: Vec<&str> = jwt.split('.').collect();
    let [h, c, sig] = parts[..] else {
        return Err(malformed());
    };
    let decode = |p: &str| -> Result<Value, Reply> {
        let bytes = B64URL.decode(p).map_err(|_| malformed())?;
        serde_json::from_slice(&bytes).map_err(|_| malformed())
    };
    let (header, claims) = (decode(h)?, decode(c)?);
    let sig = B64URL.decode(sig).map_err(|_| malformed())?;
    let alg: &dyn rustls::pki_types::SignatureVerificationAlgorithm = match header["alg"].as_str() {
        Some("RS256") => webpki::ring::RSA_PKCS1_2048_8192_SHA256,
        Some("PS256") => webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        _ => return Err(malformed()),
    };
    let thumb = |der: &[u8]| -> (String, String) {
        (
            B64URL.encode(ring::digest::digest(
                &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
                der,
            )),
            B64URL.encode(ring::digest::digest(&ring::digest::SHA256, der)),
        )
    };
    let cert = s.certs.iter().find(|der| {
        let (t1, t256) = thumb(der);
        header["x5t"].as_str() == Some(t1.as_str())
            || header["x5t#S256"].as_str() == Some(t256.as_str())
    });
    let presented = header["x5t"]
        .as_str()
        .or(header["x5t#S256"].as_str())
        .unwrap_or("");
    let Some(cert) = cert else {
        return Err(aadsts(
            401,
            "invalid_client",
            700027,
            &format!(
                "Client assertion contains an invalid signature. [Reason - The key was not found., Thumbprint of key used by client: '{presented}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{CLIENT_ID}'.]"
            ),
        ));
    };
    let der = CertificateDer::from(cert.clone());
    let ee = webpki::EndEntityCert::try_from(&der).map_err(|_| malformed())?;
    if ee
        .verify_signature(alg, format!("{h}.{c}").as_bytes(), &sig)
        .is_err()
    {
        return Err(aadsts(
            401,
            "invalid_client",
            700027,
            "Client assertion contains an invalid signature. [Reason - The provided signature value did not match the expected signature value.]",
        ));
    }
    if claims["aud"].as_str() != Some(token_url) {
        return Err(aadsts(
            401,
            "invalid_client",
            700212,
            &format!(
                "No matching federated identity record found for presented assertion audience '{}'.",
                claims["aud"]
            ),
        ));
    }
    if claims["iss"].as_str() != Some(CLIENT_ID) || claims["sub"].as_str() != Some(CLIENT_ID) {
        return Err(aadsts(
            401,
            "invalid_client",
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter.",
        ));
    }
    let (nbf, exp, t) = (claims["nbf"].as_u64(), claims["exp"].as_u64(), now());
    if !matches!((nbf, exp), (Some(n), Some(e)) if n <= t + 300 && t < e && e <= t + 86_400) {
        return Err(aadsts(
            401,
            "invalid_client",
            700024,
            "Client assertion is not within its valid time range.",
        ));
    }
    let jti = claims["jti"].as_str().unwrap_or("");
    if jti.is_empty() || !s.jtis.insert(jti.to_string()) {
        return Err(aadsts(
            400,
            "invalid_request",
            50027,
            "JWT token is invalid or malformed: the assertion's jti is missing or was used before.",
        ));
    }
    Ok(Assertion { header, claims })
}

/// Key Vault's error body.
fn kv_error(status: u16, code: &str, message: &str, inner: Option<&str>) -> Reply {
    let mut e = json!({"code": code, "message": message});
    if let Some(i) = inner {
        e["innererror"] = json!({"code": i});
    }
    Reply::json(status, json!({"error": e}))
}

/// 401 with the challenge the real vault sends.
fn challenge(s: &State, message: &str) -> Reply {
    let Reply::Full(status, mut headers, body) = kv_error(401, "Unauthorized", message, None)
    else {
        unreachable!("kv_error is a full reply")
    };
    headers.push((
        "www-authenticate".into(),
        format!(
            "Bearer authorization=\"{}/{TENANT}\", resource=\"https://vault.azure.net\"",
            s.entra_url
        ),
    ));
    Reply::Full(status, headers, body)
}

fn bundle(s: &State, name: &str, version: usize, value: Option<&str>) -> Value {
    let mut b = json!({
        "id": format!("{}/secrets/{name}/{version:032x}", s.vault_url),
        "attributes": {"enabled": true, "created": 1_765_000_000u64, "updated": 1_765_000_000u64,
                       "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90},
        "tags": {}
    });
    if let Some(v) = value {
        b["value"] = v.into();
    }
    b
}

fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 127 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Long by design: the vault's checks (version, token, throttling,
/// permissions, name), then the route.
fn vault(s: &mut State, r: &Recorded) -> Reply {
    let (path, query) = r.path.split_once('?').unwrap_or((&r.path, ""));
    let version = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("api-version="));
    match version {
        None => {
            return kv_error(
                400,
                "BadParameter",
                "The 'api-version' query parameter is missing.",
                None,
            );
        }
        Some("7.4") => {}
        Some(v) => {
            return kv_error(
                400,
                "BadParameter",
                &format!(
                    "The specified version ({v}) is not recognized. Consider using the latest supported version (7.4)."
                ),
                None,
            );
        }
    }
    let bearer = r
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "));
    let Some(bearer) = bearer else {
        return challenge(s, "AKV10000: Request is missing a Bearer or PoP token.");
    };
    let now = Instant::now();
    if s.tokens.get(bearer).is_none_or(|t| t.expires <= now) {
        s.refused_tokens += 1;
        return challenge(s, "[TokenExpired] Error validating token: 'S2S12086'.");
    }
    if s.throttle > 0 {
        s.throttle -= 1;
        let Reply::Full(st, mut h, b) = kv_error(
            429,
            "Throttled",
            "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached",
            None,
        ) else {
            unreachable!("kv_error is a full reply")
        };
        h.push(("retry-after".into(), "1".into()));
        return Reply::Full(st, h, b);
    }
    if s.outage > 0 {
        s.outage -= 1;
        return kv_error(
            503,
            "ServiceUnavailable",
            "The service is temporarily unavailable. Please retry.",
            None,
        );
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (perm, name) = match (r.method.as_str(), &segs[..]) {
        ("PUT", ["secrets", n]) => ("set", *n),
        ("GET", ["secrets", n]) | ("GET", ["secrets", n, _]) => ("get", *n),
        ("DELETE", ["secrets", n]) => ("delete", *n),
        ("POST", ["deletedsecrets", n, "recover"]) => ("recover", *n),
        _ => return kv_error(400, "BadParameter", "The request URI is not valid.", None),
    };
    if !s.permissions.contains(perm) {
        return kv_error(
            403,
            "Forbidden",
            &format!(
                "The user, group or application 'appid={CLIENT_ID};oid=0c1d2e3f-0000-4000-8000-000000000001;iss=https://sts.windows.net/{TENANT}/' does not have secrets {perm} permission on key vault 'kmshost-test;location=westeurope'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287"
            ),
            Some("AccessDenied"),
        );
    }
    if !valid_name(name) {
        return kv_error(
            400,
            "BadParameter",
            &format!("The request URI contains an invalid name: {name}"),
            None,
        );
    }
    match perm {
        "set" => set_secret(s, r, name),
        "get" => get_secret(s, name),
        "delete" => delete_secret(s, name),
        _ => recover_secret(s, name),
    }
}

fn not_found(name: &str) -> Reply {
    kv_error(
        404,
        "SecretNotFound",
        &format!(
            "A secret with (name/id) {name} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
        ),
        None,
    )
}

fn set_secret(s: &mut State, r: &Recorded, name: &str) -> Reply {
    if r.header("content-type")
        .is_none_or(|c| !c.starts_with("application/json"))
    {
        return kv_error(
            400,
            "BadParameter",
            "The request content type must be application/json.",
            None,
        );
    }
    let body: Value = match serde_json::from_slice(&r.body) {
        Ok(v) => v,
        Err(_) => {
            return kv_error(
                400,
                "BadParameter",
                "The request body is not valid JSON.",
                None,
            );
        }
    };
    let Some(value) = body["value"].as_str() else {
        return kv_error(400, "BadParameter", "Property value is required.", None);
    };
    let secret = s.secrets.entry(name.to_string()).or_default();
    if secret.deleted {
        return kv_error(
            409,
            "Conflict",
            &format!(
                "Secret {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged."
            ),
            Some("ObjectIsDeletedButRecoverable"),
        );
    }
    if secret.recovering > 0 {
        secret.recovering -= 1;
        return kv_error(
            409,
            "Conflict",
            &format!(
                "Secret {name} is currently being recovered. Please retry after a short while."
            ),
            Some("ObjectIsBeingRecovered"),
        );
    }
    secret.versions.push(value.to_string());
    let n = secret.versions.len();
    let value = value.to_string();
    Reply::json(200, bundle(s, name, n, Some(&value)))
}

fn get_secret(s: &State, name: &str) -> Reply {
    match s.secrets.get(name) {
        Some(sec) if !sec.deleted && !sec.versions.is_empty() => {
            let v = sec.versions.last().unwrap();
            Reply::json(200, bundle(s, name, sec.versions.len(), Some(v)))
        }
        _ => not_found(name),
    }
}

fn delete_secret(s: &mut State, name: &str) -> Reply {
    let Some(sec) = s
        .secrets
        .get_mut(name)
        .filter(|x| !x.deleted && !x.versions.is_empty())
    else {
        return not_found(name);
    };
    sec.deleted = true;
    let n = sec.versions.len();
    let mut b = bundle(s, name, n, None);
    b["recoveryId"] = format!("{}/deletedsecrets/{name}", s.vault_url).into();
    b["deletedDate"] = 1_765_000_100u64.into();
    b["scheduledPurgeDate"] = 1_772_776_100u64.into();
    Reply::json(200, b)
}

fn recover_secret(s: &mut State, name: &str) -> Reply {
    let lag = s.recovery_lag;
    let Some(sec) = s.secrets.get_mut(name).filter(|x| x.deleted) else {
        return kv_error(
            404,
            "SecretNotFound",
            &format!("Deleted Secret not found: {name}"),
            None,
        );
    };
    sec.deleted = false;
    sec.recovering = lag;
    let n = sec.versions.len();
    Reply::json(200, bundle(s, name, n, None))
}
