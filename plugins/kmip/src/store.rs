//! Rook mode: volume keys kept on the KMIP server as Secret Data named
//! after the volume — Register (+ Activate), Locate by name + Get, Revoke +
//! Destroy — the way Rook keeps its OSD keys.

use crate::client::Client;
use crate::kmip::{self, Op};
use kmshost_plugin_sdk::{KmsError, Result};

/// The objects named `key_id`.
fn locate(c: &Client, key_id: &str) -> Result<Vec<String>> {
    let payload = c.call(Op::Locate, |v| kmip::locate_by_name(v, key_id))?;
    Ok(kmip::located(&payload))
}

/// The key stored for `key_id`.
pub fn get(c: &Client, key_id: &str) -> Result<Vec<u8>> {
    let uids = locate(c, key_id)?;
    let uid = match &uids[..] {
        [] => {
            return Err(KmsError::NotFound(format!(
                "no KMIP object is named {key_id}"
            )));
        }
        [one] => one,
        many => {
            return Err(KmsError::Other(format!(
                "{} KMIP objects are named {key_id} ({}): an earlier replacement did not finish; destroy the stale one",
                many.len(),
                many.join(", ")
            )));
        }
    };
    let payload = c.call(Op::Get, |_| kmip::by_uid(uid))?;
    kmip::key_material(&payload, 0x07)
}

/// Registers `key` for `key_id`, then removes what was stored before: the
/// new key exists before the old one goes.
pub fn put(c: &Client, key_id: &str, key: &[u8]) -> Result<()> {
    let old = locate(c, key_id)?;
    let payload = c.call(Op::Register, |v| kmip::register_secret(v, key_id, key))?;
    let uid = kmip::unique_identifier(&payload, Op::Register)?;
    c.call(Op::Activate, |_| kmip::by_uid(&uid))?;
    for o in old.iter().filter(|o| **o != uid) {
        remove(c, o)?;
    }
    Ok(())
}

/// Removes every object named `key_id`; none is not an error.
pub fn delete(c: &Client, key_id: &str) -> Result<()> {
    for uid in locate(c, key_id)? {
        remove(c, &uid)?;
    }
    Ok(())
}

/// Revoke (an active object cannot be destroyed), then Destroy. A revoke
/// the server refuses for the object's state (never activated, already
/// revoked) is not an error; an object already gone is not either.
fn remove(c: &Client, uid: &str) -> Result<()> {
    match c.call(Op::Revoke, |_| kmip::revoke(uid)) {
        Ok(_) | Err(KmsError::Other(_)) | Err(KmsError::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    match c.call(Op::Destroy, |_| kmip::by_uid(uid)) {
        Ok(_) | Err(KmsError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}
