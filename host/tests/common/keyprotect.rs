//! A **fake** IBM Cloud IAM and Key Protect, in test code: no emulator of
//! either service exists in any registry this project can reach. It follows
//! the documented shapes (`../shared/ANCHORS.md`, the Key Protect API
//! reference) and is strict about what it accepts, so a plugin that would
//! fail against the real service fails here:
//!
//! * IAM (`POST /identity/token`): a form body with the API-key grant type,
//!   `accept: application/json`; tokens expire.
//! * Key Protect (`/api/v2/...`): a valid, unexpired bearer token, the
//!   `bluemix-instance` header naming this instance, `accept:
//!   application/json`, the right content type for each body, the key ring
//!   when one is required; the real error envelope
//!   (`application/vnd.ibm.kms.error+json`) on every refusal.
//! * Root keys wrap with AES-256-GCM, the `aad` list authenticated; rotation
//!   adds a version, and unwrapping a ciphertext of an older version answers
//!   with it rewrapped under the newest (`ciphertext` in the reply), as the
//!   service does. Deleted keys answer 410, disabled ones 409.
//! * Standard keys (Rook's imported keys): create with the collection
//!   envelope, list (paged, no payloads), get (with payload), delete
//!   (`Prefer: return=minimal` → 204).

use super::http::{Recorded, Reply, TestServer};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The instance every request must name.
pub const INSTANCE: &str = "7abef064-01dd-4237-9ea5-8b3890970be3";
/// The API key IAM accepts.
pub const API_KEY: &str = "fake-iam-api-key-0123456789";

const KEY_TYPE: &str = "application/vnd.ibm.kms.key+json";
const ERROR_TYPE: &str = "application/vnd.ibm.kms.error+json";

/// A root key's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Usable.
    Active,
    /// Disabled (suspended): key actions answer 409.
    Disabled,
    /// Deleted: key actions answer 410.
    Deleted,
}

struct RootKey {
    versions: Vec<(String, [u8; 32])>,
    state: KeyState,
}

/// A standard (imported) key.
#[derive(Debug, Clone)]
pub struct StandardKey {
    pub id: String,
    pub name: String,
    pub description: String,
    pub payload: String,
}

#[derive(Default)]
struct State {
    token_lifetime: u64,
    tokens: HashMap<String, Instant>,
    exchanges: usize,
    root_keys: HashMap<String, RootKey>,
    standard: Vec<StandardKey>,
    throttle: usize,
    outage: usize,
    refused_tokens: usize,
    next: u64,
}

impl State {
    fn id(&mut self) -> String {
        self.next += 1;
        format!("{:08x}-0000-4000-8000-{:012x}", self.next, self.next)
    }
}

/// The running fake.
pub struct FakeKeyProtect {
    pub server: TestServer,
    state: Arc<Mutex<State>>,
}

impl FakeKeyProtect {
    /// Starts the fake on loopback; tokens live an hour.
    pub async fn start() -> FakeKeyProtect {
        let state = Arc::new(Mutex::new(State {
            token_lifetime: 3600,
            ..Default::default()
        }));
        let server = TestServer::with_state(&state, handle).await;
        FakeKeyProtect { server, state }
    }

    /// The service URL (`IBM_KP_BASE_URL`).
    pub fn base_url(&self) -> String {
        self.server.url()
    }

    /// The IAM token URL (`IBM_KP_TOKEN_URL`).
    pub fn token_url(&self) -> String {
        format!("{}/identity/token", self.server.url())
    }

    /// Creates a root key; returns its ID.
    pub fn create_root_key(&self) -> String {
        let mut s = self.state.lock().unwrap();
        let id = s.id();
        let version = s.id();
        s.root_keys.insert(
            id.clone(),
            RootKey {
                versions: vec![(version, random_key())],
                state: KeyState::Active,
            },
        );
        id
    }

    /// Rotates root key `id`: a new version wraps from now on.
    pub fn rotate(&self, id: &str) {
        let mut s = self.state.lock().unwrap();
        let version = s.id();
        s.root_keys
            .get_mut(id)
            .unwrap()
            .versions
            .push((version, random_key()));
    }

    /// Sets root key `id`'s state.
    pub fn set_state(&self, id: &str, state: KeyState) {
        self.state
            .lock()
            .unwrap()
            .root_keys
            .get_mut(id)
            .unwrap()
            .state = state;
    }

    /// Tokens issued from now on live `secs` seconds (`expires_in`).
    pub fn set_token_lifetime(&self, secs: u64) {
        self.state.lock().unwrap().token_lifetime = secs;
    }

    /// Expires every token issued so far (as if their hour had passed).
    pub fn expire_tokens(&self) {
        let mut s = self.state.lock().unwrap();
        let past = Instant::now() - Duration::from_secs(1);
        for t in s.tokens.values_mut() {
            *t = past;
        }
    }

    /// API-key exchanges IAM answered.
    pub fn exchanges(&self) -> usize {
        self.state.lock().unwrap().exchanges
    }

    /// Requests refused for an expired or unknown token.
    pub fn refused_tokens(&self) -> usize {
        self.state.lock().unwrap().refused_tokens
    }

    /// The next `n` Key Protect requests answer 429.
    pub fn throttle(&self, n: usize) {
        self.state.lock().unwrap().throttle = n;
    }

    /// The next `n` Key Protect requests answer 503.
    pub fn outage(&self, n: usize) {
        self.state.lock().unwrap().outage = n;
    }

    /// The standard keys now.
    pub fn standard_keys(&self) -> Vec<StandardKey> {
        self.state.lock().unwrap().standard.clone()
    }

    /// Imports a standard key as Rook does (its payload is the key text).
    pub fn import_as_rook(&self, name: &str, payload: &str) {
        let mut s = self.state.lock().unwrap();
        let id = s.id();
        s.standard.push(StandardKey {
            id,
            name: name.into(),
            description: String::new(),
            payload: payload.into(),
        });
    }

    /// Wraps `plaintext` (base64 text, as the API takes it) with root key
    /// `id` and `aad`, as ceph-csi's client would: the service's ciphertext.
    pub fn wrap_direct(&self, id: &str, plaintext: &str, aad: &[&str]) -> String {
        let s = self.state.lock().unwrap();
        let k = &s.root_keys[id];
        let (v, key) = k.versions.last().unwrap();
        seal(id, v, key, plaintext.as_bytes(), &aad_bytes(aad))
    }

    /// Key Protect requests (not IAM) received so far.
    pub fn kp_requests(&self) -> Vec<Recorded> {
        self.server
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path.starts_with("/api/v2/"))
            .cloned()
            .collect()
    }
}

fn random_key() -> [u8; 32] {
    let mut k = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut k);
    k
}

fn aad_bytes(aad: &[&str]) -> Vec<u8> {
    serde_json::to_vec(aad).unwrap()
}

/// The fake's ciphertext: base64 of JSON naming the key and version, with
/// the AES-GCM nonce and sealed bytes.
fn seal(key_id: &str, version: &str, key: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> String {
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap());
    let mut nonce = [0u8; 12];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut nonce);
    let mut data = plaintext.to_vec();
    k.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut data,
    )
    .unwrap();
    let inner = json!({"key": key_id, "version": version, "iv": B64.encode(nonce), "sealed": B64.encode(&data)});
    B64.encode(inner.to_string())
}

fn error(status: u16, code: &str, message: &str) -> Reply {
    Reply::json(
        status,
        json!({
            "metadata": {"collectionType": ERROR_TYPE, "collectionTotal": 1},
            "resources": [{
                "errorMsg": format!("{}: {message}", reason_phrase(status)),
                "reasons": [{"code": code, "message": message, "status": status,
                             "moreInfo": "https://cloud.ibm.com/apidocs/key-protect"}]
            }]
        }),
    )
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        410 => "Gone",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        _ => "Service Unavailable",
    }
}

fn handle(s: &mut State, r: &Recorded) -> Reply {
    if r.path == "/identity/token" {
        return iam(s, r);
    }
    // The fake's own control route, not part of the API: a test in the
    // QEMU guest rotates a root key through it.
    if let (Some(id), "POST") = (r.path.strip_prefix("/fake/rotate/"), r.method.as_str()) {
        let version = s.id();
        return match s.root_keys.get_mut(id) {
            Some(k) => {
                k.versions.push((version, random_key()));
                Reply::json(200, json!({"rotated": id}))
            }
            None => error(404, "KEY_NOT_FOUND_ERR", "Key does not exist"),
        };
    }
    let Some(rest) = r.path.strip_prefix("/api/v2/") else {
        return error(404, "NOT_FOUND", "no such path");
    };
    if let Some(refused) = check_headers(s, r) {
        return refused;
    }
    if s.outage > 0 {
        s.outage -= 1;
        return error(503, "SERVICE_UNAVAILABLE_ERR", "the service is unavailable");
    }
    if s.throttle > 0 {
        s.throttle -= 1;
        let mut reply = error(429, "TOO_MANY_REQUESTS_ERR", "rate limit exceeded");
        if let Reply::Full(_, h, _) = &mut reply {
            h.push(("retry-after".into(), "0".into()));
        }
        return reply;
    }
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let parts: Vec<&str> = path.split('/').collect();
    match (r.method.as_str(), parts.as_slice()) {
        ("POST", ["keys", id, "actions", action]) => key_action(s, r, id, action),
        ("POST", ["keys"]) => create(s, r),
        ("GET", ["keys"]) => list(s, query),
        ("GET", ["keys", id]) => get(s, id),
        ("DELETE", ["keys", id]) => delete(s, r, id),
        _ => error(404, "NOT_FOUND", "no such route"),
    }
}

fn iam(s: &mut State, r: &Recorded) -> Reply {
    let form = r.header("content-type") == Some("application/x-www-form-urlencoded");
    if r.method != "POST" || !form || r.header("accept") != Some("application/json") {
        return Reply::json(
            400,
            json!({"errorCode": "BXNIM0109E", "errorMessage": "Property missing or empty: the request is not a form post accepting JSON"}),
        );
    }
    let body = String::from_utf8_lossy(&r.body);
    let pairs: HashMap<String, String> = body
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (form_decode(k), form_decode(v)))
        .collect();
    let field = |k: &str| pairs.get(k).map(String::as_str);
    if field("grant_type") != Some("urn:ibm:params:oauth:grant-type:apikey") {
        return Reply::json(
            400,
            json!({"errorCode": "BXNIM0103E", "errorMessage": "Unsupported grant type"}),
        );
    }
    if field("apikey") != Some(API_KEY) {
        return Reply::json(
            400,
            json!({"errorCode": "BXNIM0415E", "errorMessage": "Provided API key could not be found."}),
        );
    }
    s.exchanges += 1;
    let token = format!("fake-iam-token-{}", s.id());
    let lifetime = s.token_lifetime;
    s.tokens.insert(
        token.clone(),
        Instant::now() + Duration::from_secs(lifetime),
    );
    Reply::json(
        200,
        json!({"access_token": token, "refresh_token": "not_supported", "token_type": "Bearer",
               "expires_in": lifetime, "expiration": 0, "scope": "ibm openid"}),
    )
}

/// `application/x-www-form-urlencoded` decoding of one name or value.
fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(x) => {
                    out.push(x);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn check_headers(s: &mut State, r: &Recorded) -> Option<Reply> {
    let token = r
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "));
    let valid = token
        .and_then(|t| s.tokens.get(t))
        .is_some_and(|exp| Instant::now() < *exp);
    if !valid {
        s.refused_tokens += 1;
        return Some(error(
            401,
            "UNAUTHORIZED_ERR",
            "The user is not authorized: the token is missing, invalid or expired",
        ));
    }
    if r.header("bluemix-instance") != Some(INSTANCE) {
        return Some(error(
            400,
            "BAD_INSTANCE_HEADER_ERR",
            "bluemix-instance does not name this instance",
        ));
    }
    if r.header("accept") != Some("application/json") {
        return Some(error(
            400,
            "BAD_ACCEPT_ERR",
            "accept must be application/json",
        ));
    }
    if r.method == "POST" {
        let ct = r.header("content-type").unwrap_or("");
        let ok = ct == "application/json"
            || ct == KEY_TYPE
            || ct.starts_with("application/vnd.ibm.kms.key_action");
        if !ok {
            return Some(error(
                415,
                "BAD_CONTENT_TYPE_ERR",
                "unsupported content type",
            ));
        }
    }
    None
}

fn body_json(r: &Recorded) -> Result<Value, Reply> {
    serde_json::from_slice(&r.body)
        .map_err(|_| error(400, "BAD_BODY_ERR", "the request body is not JSON"))
}

fn aad_of(v: &Value) -> Result<Vec<u8>, Reply> {
    match v.get("aad") {
        None => Ok(aad_bytes(&[])),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            let strs: Vec<&str> = a.iter().filter_map(Value::as_str).collect();
            Ok(aad_bytes(&strs))
        }
        Some(_) => Err(error(400, "BAD_BODY_ERR", "aad must be a list of strings")),
    }
}

fn key_action(s: &mut State, r: &Recorded, id: &str, action: &str) -> Reply {
    let want = format!("application/vnd.ibm.kms.key_action_{action}+json");
    let ct = r.header("content-type").unwrap_or("");
    if ct != want && ct != "application/json" {
        return error(
            415,
            "BAD_CONTENT_TYPE_ERR",
            "wrong content type for this action",
        );
    }
    let v = match body_json(r) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let aad = match aad_of(&v) {
        Ok(a) => a,
        Err(e) => return e,
    };
    let Some(k) = s.root_keys.get(id) else {
        return error(404, "KEY_NOT_FOUND_ERR", "Key does not exist");
    };
    match k.state {
        KeyState::Deleted => return error(410, "KEY_DELETED_ERR", "The key has been deleted"),
        KeyState::Disabled => {
            return error(
                409,
                "KEY_ACTION_INVALID_STATE_ERR",
                "The key is not in a valid state for this action",
            );
        }
        KeyState::Active => {}
    }
    match action {
        "wrap" => wrap(id, k, &v, &aad),
        "unwrap" => unwrap(id, k, &v, &aad),
        _ => error(400, "BAD_ACTION_ERR", "unsupported action"),
    }
}

fn wrap(id: &str, k: &RootKey, v: &Value, aad: &[u8]) -> Reply {
    let Some(pt) = v.get("plaintext").and_then(Value::as_str) else {
        return error(400, "BAD_BODY_ERR", "plaintext is required");
    };
    if B64.decode(pt).is_err() || pt.is_empty() {
        return error(400, "BAD_PLAINTEXT_ERR", "plaintext must be base64 encoded");
    }
    let (ver, key) = k.versions.last().unwrap();
    let ct = seal(id, ver, key, pt.as_bytes(), aad);
    Reply::json(200, json!({"ciphertext": ct, "keyVersion": {"id": ver}}))
}

fn unwrap(id: &str, k: &RootKey, v: &Value, aad: &[u8]) -> Reply {
    let invalid = || {
        error(
            400,
            "UNPROCESSABLE_CIPHERTEXT_ERR",
            "The provided ciphertext is invalid or corrupted",
        )
    };
    let Some(ct) = v.get("ciphertext").and_then(Value::as_str) else {
        return error(400, "BAD_BODY_ERR", "ciphertext is required");
    };
    let Some(inner) = B64
        .decode(ct)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    else {
        return invalid();
    };
    let field = |n: &str| {
        inner
            .get(n)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let Some(pos) = k
        .versions
        .iter()
        .position(|(ver, _)| *ver == field("version"))
    else {
        return invalid();
    };
    if field("key") != id {
        return invalid();
    }
    let (Ok(nonce), Ok(mut sealed)) = (B64.decode(field("iv")), B64.decode(field("sealed"))) else {
        return invalid();
    };
    let Ok(nonce) = <[u8; 12]>::try_from(nonce.as_slice()) else {
        return invalid();
    };
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &k.versions[pos].1).unwrap());
    let Ok(pt) = key.open_in_place(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut sealed,
    ) else {
        return invalid();
    };
    let pt = String::from_utf8(pt.to_vec()).unwrap();
    let (latest, latest_key) = k.versions.last().unwrap();
    let mut reply = json!({"plaintext": pt, "keyVersion": {"id": k.versions[pos].0}});
    if pos + 1 < k.versions.len() {
        reply["ciphertext"] = seal(id, latest, latest_key, pt.as_bytes(), aad).into();
        reply["rewrappedKeyVersion"] = json!({"id": latest});
    }
    Reply::json(200, reply)
}

fn key_resource(k: &StandardKey, payload: bool) -> Value {
    let mut v = json!({
        "type": KEY_TYPE, "id": k.id, "name": k.name, "description": k.description,
        "state": 1, "extractable": true, "crn": format!("crn:v1:bluemix:public:kms:us-south:a/0:{INSTANCE}:key:{}", k.id),
    });
    if payload {
        v["payload"] = k.payload.clone().into();
    }
    v
}

fn collection(resources: Vec<Value>) -> Value {
    json!({"metadata": {"collectionType": KEY_TYPE, "collectionTotal": resources.len()}, "resources": resources})
}

fn create(s: &mut State, r: &Recorded) -> Reply {
    if r.header("content-type") != Some(KEY_TYPE)
        && r.header("content-type") != Some("application/json")
    {
        return error(
            415,
            "BAD_CONTENT_TYPE_ERR",
            "keys are created with application/vnd.ibm.kms.key+json",
        );
    }
    let v = match body_json(r) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let meta_ok =
        v["metadata"]["collectionType"] == KEY_TYPE && v["metadata"]["collectionTotal"] == 1;
    let res = &v["resources"];
    if !meta_ok || res.as_array().map(Vec::len) != Some(1) {
        return error(
            400,
            "BAD_BODY_ERR",
            "the body must be a collection of one key",
        );
    }
    let k = &res[0];
    let name = k["name"].as_str().unwrap_or_default();
    let payload = k["payload"].as_str().unwrap_or_default();
    if k["type"] != KEY_TYPE || name.is_empty() || k["extractable"] != true {
        return error(
            400,
            "BAD_BODY_ERR",
            "a standard key needs type, name and extractable: true",
        );
    }
    if payload.is_empty() || B64.decode(payload).is_err() {
        return error(400, "BAD_PAYLOAD_ERR", "payload must be base64 encoded");
    }
    let id = s.id();
    let key = StandardKey {
        id,
        name: name.into(),
        description: k["description"].as_str().unwrap_or_default().into(),
        payload: payload.into(),
    };
    let out = key_resource(&key, false);
    s.standard.push(key);
    Reply::json(201, collection(vec![out]))
}

fn list(s: &State, query: &str) -> Reply {
    let q: HashMap<&str, &str> = query.split('&').filter_map(|p| p.split_once('=')).collect();
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(200);
    let offset: usize = q.get("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
    if !(1..=5000).contains(&limit) {
        return error(400, "BAD_QUERY_ERR", "limit must be 1 to 5000");
    }
    let page = s
        .standard
        .iter()
        .skip(offset)
        .take(limit)
        .map(|k| key_resource(k, false))
        .collect();
    Reply::json(200, collection(page))
}

fn get(s: &State, id: &str) -> Reply {
    match s.standard.iter().find(|k| k.id == id) {
        Some(k) => Reply::json(200, collection(vec![key_resource(k, true)])),
        None => error(404, "KEY_NOT_FOUND_ERR", "Key does not exist"),
    }
}

fn delete(s: &mut State, r: &Recorded, id: &str) -> Reply {
    let Some(i) = s.standard.iter().position(|k| k.id == id) else {
        return error(404, "KEY_NOT_FOUND_ERR", "Key does not exist");
    };
    let k = s.standard.remove(i);
    match r.header("prefer") {
        Some("return=minimal") => Reply::Full(204, vec![], vec![]),
        _ => Reply::json(200, collection(vec![key_resource(&k, false)])),
    }
}
