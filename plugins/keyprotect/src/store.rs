//! Store mode (Rook): each volume key is imported into Key Protect as a
//! standard key named after the volume, found again by that name, and
//! deleted with the volume — as Rook's `ibmkeyprotect` provider does.
//!
//! Key Protect requires a base64 payload. Rook's keys are base64 text and
//! are stored as-is; kmshost stores the standard base64 of the key's bytes
//! and marks the key with [`KMSHOST_DESCRIPTION`], so `get` returns each
//! key exactly as it was put, whoever put it.

use crate::api::{self, Action, Call};
use crate::config::KpConfig;
use kmshost_plugin_sdk::encoding::{b64_decode, b64_encode, url_encode};
use kmshost_plugin_sdk::http::Method;
use kmshost_plugin_sdk::{KmsError, Result, cache};
use zeroize::Zeroizing;

/// The description of keys kmshost imported (payload: base64 of the key).
pub const KMSHOST_DESCRIPTION: &str = "kmshost volume key";
/// Keys listed per page when looking a name up.
const PAGE: usize = 200;
/// Pages looked through at most (100,000 keys).
const MAX_PAGES: usize = 500;
const KEY_TYPE: &str = "application/vnd.ibm.kms.key+json";

/// Imports `key` for `key_id`, then deletes any older key of that name:
/// the new key exists before an old one goes.
pub fn put(cfg: &KpConfig, key_id: &str, key: &[u8]) -> Result<()> {
    let older = ids_named(cfg, key_id)?;
    let payload = Zeroizing::new(b64_encode(key));
    let body = Zeroizing::new(
        serde_json::to_vec(&serde_json::json!({
            "metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1},
            "resources": [{
                "type": KEY_TYPE,
                "name": key_id,
                "description": KMSHOST_DESCRIPTION,
                "extractable": true,
                "payload": payload.as_str(),
            }],
        }))
        .map_err(|_| KmsError::Other("cannot encode the key".into()))?,
    );
    let mut call = Call::new(
        Method::Post,
        "keys".into(),
        format!("import the key of volume {key_id}"),
        Action::Manage,
    );
    call.content_type = KEY_TYPE;
    call.body = body;
    let created: Keys = api::send(cfg, &call)?.json()?;
    let id = created
        .resources
        .first()
        .map(|k| k.id.clone())
        .filter(|id| !id.is_empty())
        .ok_or_else(|| KmsError::Other(format!("{}: no key ID in the reply", call.what)))?;
    cache::set(&id_cache_key(key_id), id.as_bytes(), 3600);
    for old in older.iter().filter(|o| **o != id) {
        delete_id(cfg, key_id, old)?;
    }
    Ok(())
}

/// The key stored for `key_id`.
pub fn get(cfg: &KpConfig, key_id: &str) -> Result<Vec<u8>> {
    if let Some(id) = cache::get(&id_cache_key(key_id)).and_then(|v| String::from_utf8(v).ok()) {
        match fetch(cfg, key_id, &id) {
            Err(KmsError::NotFound(_)) => {} // deleted since: look again
            other => return other,
        }
    }
    let found = ids_named(cfg, key_id)?;
    let id = found.last().ok_or_else(|| {
        KmsError::NotFound(format!(
            "Key Protect instance {}: no key named {key_id}",
            cfg.instance_id
        ))
    })?;
    cache::set(&id_cache_key(key_id), id.as_bytes(), 3600);
    fetch(cfg, key_id, id)
}

/// Deletes every key named `key_id`; none is fine.
pub fn delete(cfg: &KpConfig, key_id: &str) -> Result<()> {
    for id in ids_named(cfg, key_id)? {
        delete_id(cfg, key_id, &id)?;
    }
    cache::remove(&id_cache_key(key_id));
    Ok(())
}

fn id_cache_key(key_id: &str) -> String {
    format!("key-id/{key_id}")
}

#[derive(serde::Deserialize)]
struct Keys {
    #[serde(default)]
    resources: Vec<Key>,
}

#[derive(serde::Deserialize)]
struct Key {
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    payload: Option<String>,
}

impl Drop for Key {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        if let Some(p) = &mut self.payload {
            p.zeroize();
        }
    }
}

fn fetch(cfg: &KpConfig, key_id: &str, id: &str) -> Result<Vec<u8>> {
    let call = Call::new(
        Method::Get,
        format!("keys/{}", url_encode(id)),
        format!("read the key of volume {key_id} ({id})"),
        Action::Manage,
    );
    let keys: Keys = api::send(cfg, &call)?.json()?;
    let key = keys
        .resources
        .first()
        .filter(|k| k.name == key_id)
        .ok_or_else(|| KmsError::NotFound(format!("{}: not in the reply", call.what)))?;
    let payload = key.payload.as_deref().ok_or_else(|| {
        KmsError::Other(format!("{}: no payload (not a standard key?)", call.what))
    })?;
    if key.description == KMSHOST_DESCRIPTION {
        b64_decode("the key's payload", payload)
    } else {
        Ok(payload.as_bytes().to_vec()) // Rook's: the payload is the key
    }
}

/// IDs of the keys named `key_id`, oldest first (the list's order).
fn ids_named(cfg: &KpConfig, key_id: &str) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for page in 0..MAX_PAGES {
        let call = Call::new(
            Method::Get,
            format!("keys?limit={PAGE}&offset={}", page * PAGE),
            format!("list keys looking for volume {key_id}"),
            Action::Manage,
        );
        let keys: Keys = api::send(cfg, &call)?.json()?;
        let n = keys.resources.len();
        ids.extend(
            keys.resources
                .iter()
                .filter(|k| k.name == key_id)
                .map(|k| k.id.clone()),
        );
        if n < PAGE {
            return Ok(ids);
        }
    }
    Err(KmsError::Other(format!(
        "Key Protect instance {}: more than {} keys to look through for volume {key_id}",
        cfg.instance_id,
        PAGE * MAX_PAGES
    )))
}

fn delete_id(cfg: &KpConfig, key_id: &str, id: &str) -> Result<()> {
    let mut call = Call::new(
        Method::Delete,
        format!("keys/{}", url_encode(id)),
        format!("delete the key of volume {key_id} ({id})"),
        Action::Manage,
    );
    call.headers.push(("prefer", "return=minimal"));
    match api::send(cfg, &call) {
        Ok(_) | Err(KmsError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}
