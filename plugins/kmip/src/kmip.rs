//! KMIP messages: the request envelope, the response checks, and the
//! payloads of the operations this plugin uses — DiscoverVersions,
//! Encrypt, Decrypt, Get, Register, Activate, Locate, Revoke, Destroy —
//! in their KMIP 1.x and 2.x shapes (they differ only in how attributes
//! are sent). Tag and enumeration values are the specification's.

use crate::ttlv::{Item, Value};
use kmshost_plugin_sdk::{KmsError, Result};

/// Tags used here.
#[allow(missing_docs)]
pub mod tag {
    pub const ATTRIBUTE: u32 = 0x420008;
    pub const ATTRIBUTE_NAME: u32 = 0x42000A;
    pub const ATTRIBUTE_VALUE: u32 = 0x42000B;
    pub const ATTRIBUTES: u32 = 0x420125;
    pub const BATCH_COUNT: u32 = 0x42000D;
    pub const BATCH_ITEM: u32 = 0x42000F;
    pub const BLOCK_CIPHER_MODE: u32 = 0x420011;
    pub const CRYPTOGRAPHIC_ALGORITHM: u32 = 0x420028;
    pub const CRYPTOGRAPHIC_PARAMETERS: u32 = 0x42002B;
    pub const CRYPTOGRAPHIC_USAGE_MASK: u32 = 0x42002C;
    pub const DATA: u32 = 0x4200C2;
    pub const IV_COUNTER_NONCE: u32 = 0x42003D;
    pub const KEY_BLOCK: u32 = 0x420040;
    pub const KEY_FORMAT_TYPE: u32 = 0x420042;
    pub const KEY_MATERIAL: u32 = 0x420043;
    pub const KEY_VALUE: u32 = 0x420045;
    pub const NAME: u32 = 0x420053;
    pub const NAME_TYPE: u32 = 0x420054;
    pub const NAME_VALUE: u32 = 0x420055;
    pub const OBJECT_TYPE: u32 = 0x420057;
    pub const OPERATION: u32 = 0x42005C;
    pub const PADDING_METHOD: u32 = 0x42005F;
    pub const PROTOCOL_VERSION: u32 = 0x420069;
    pub const PROTOCOL_VERSION_MAJOR: u32 = 0x42006A;
    pub const PROTOCOL_VERSION_MINOR: u32 = 0x42006B;
    pub const REQUEST_HEADER: u32 = 0x420077;
    pub const REQUEST_MESSAGE: u32 = 0x420078;
    pub const REQUEST_PAYLOAD: u32 = 0x420079;
    pub const RESPONSE_HEADER: u32 = 0x42007A;
    pub const RESPONSE_MESSAGE: u32 = 0x42007B;
    pub const RESPONSE_PAYLOAD: u32 = 0x42007C;
    pub const RESULT_MESSAGE: u32 = 0x42007D;
    pub const RESULT_REASON: u32 = 0x42007E;
    pub const RESULT_STATUS: u32 = 0x42007F;
    pub const REVOCATION_REASON: u32 = 0x420081;
    pub const REVOCATION_REASON_CODE: u32 = 0x420082;
    pub const SECRET_DATA: u32 = 0x420085;
    pub const SECRET_DATA_TYPE: u32 = 0x420086;
    pub const SYMMETRIC_KEY: u32 = 0x42008F;
    pub const TEMPLATE_ATTRIBUTE: u32 = 0x420091;
    pub const UNIQUE_BATCH_ITEM_ID: u32 = 0x420093;
    pub const UNIQUE_IDENTIFIER: u32 = 0x420094;
}

/// The operations used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Op {
    Register = 0x03,
    Locate = 0x08,
    Get = 0x0A,
    Activate = 0x12,
    Revoke = 0x13,
    Destroy = 0x14,
    DiscoverVersions = 0x1E,
    Encrypt = 0x1F,
    Decrypt = 0x20,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Register => "Register",
            Op::Locate => "Locate",
            Op::Get => "Get",
            Op::Activate => "Activate",
            Op::Revoke => "Revoke",
            Op::Destroy => "Destroy",
            Op::DiscoverVersions => "DiscoverVersions",
            Op::Encrypt => "Encrypt",
            Op::Decrypt => "Decrypt",
        }
    }
}

/// A KMIP protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub i32, pub i32);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

impl Version {
    /// Whether attributes take the 2.x shape (an `Attributes` structure).
    pub fn is_2x(self) -> bool {
        self.0 >= 2
    }

    fn item(self) -> Item {
        Item::structure(
            tag::PROTOCOL_VERSION,
            vec![
                Item::new(tag::PROTOCOL_VERSION_MAJOR, Value::Integer(self.0)),
                Item::new(tag::PROTOCOL_VERSION_MINOR, Value::Integer(self.1)),
            ],
        )
    }
}

/// The versions offered, in order of preference: 1.4 first (what ceph-csi
/// speaks, so what its users' servers were qualified with), then 2.x, then
/// older 1.x down to 1.2 (the first with Encrypt and Decrypt).
pub const OFFERED: [Version; 6] = [
    Version(1, 4),
    Version(2, 1),
    Version(2, 0),
    Version(1, 3),
    Version(1, 2),
    Version(1, 1),
];

fn text(tag: u32, s: &str) -> Item {
    Item::new(tag, Value::Text(s.to_string()))
}

fn enumeration(tag: u32, v: u32) -> Item {
    Item::new(tag, Value::Enumeration(v))
}

fn uid(u: &str) -> Item {
    text(tag::UNIQUE_IDENTIFIER, u)
}

/// A request message with one batch item.
pub fn request(version: Version, op: Op, payload: Vec<Item>, batch_id: &[u8]) -> Item {
    Item::structure(
        tag::REQUEST_MESSAGE,
        vec![
            Item::structure(
                tag::REQUEST_HEADER,
                vec![
                    version.item(),
                    Item::new(tag::BATCH_COUNT, Value::Integer(1)),
                ],
            ),
            Item::structure(
                tag::BATCH_ITEM,
                vec![
                    enumeration(tag::OPERATION, op as u32),
                    Item::new(tag::UNIQUE_BATCH_ITEM_ID, Value::Bytes(batch_id.to_vec())),
                    Item::structure(tag::REQUEST_PAYLOAD, payload),
                ],
            ),
        ],
    )
}

/// The payload of a successful response to `op` with `batch_id`, or the
/// failure it reports mapped to the contract's errors.
pub fn response_payload(msg: &Item, op: Op, batch_id: &[u8]) -> Result<Item> {
    let bad = |what: &str| KmsError::Other(format!("KMIP {} response: {what}", op.name()));
    if msg.tag != tag::RESPONSE_MESSAGE {
        return Err(bad("not a response message"));
    }
    let count = msg
        .child(tag::RESPONSE_HEADER)
        .and_then(|h| h.child(tag::BATCH_COUNT));
    if !matches!(count.map(|c| &c.value), Some(Value::Integer(1))) {
        return Err(bad("batch count is not 1"));
    }
    let items: Vec<&Item> = msg.children(tag::BATCH_ITEM).collect();
    let [item] = items[..] else {
        return Err(bad("not exactly one batch item"));
    };
    // A failure to parse the request may come back without an operation
    // or batch id; its status still says why.
    let status = match item.child(tag::RESULT_STATUS).map(|s| &s.value) {
        Some(Value::Enumeration(s)) => *s,
        _ => return Err(bad("no result status")),
    };
    if status != 0 {
        return Err(failure(op, item, status));
    }
    if item.child(tag::OPERATION).map(|o| &o.value) != Some(&Value::Enumeration(op as u32)) {
        return Err(bad("answers another operation"));
    }
    if let Some(id) = item.child(tag::UNIQUE_BATCH_ITEM_ID)
        && id.value != Value::Bytes(batch_id.to_vec())
    {
        return Err(bad("answers another batch item"));
    }
    Ok(item
        .child(tag::RESPONSE_PAYLOAD)
        .cloned()
        .unwrap_or_else(|| Item::structure(tag::RESPONSE_PAYLOAD, vec![])))
}

/// KMIP result reasons, mapped to the contract's errors.
fn failure(op: Op, item: &Item, status: u32) -> KmsError {
    let reason = match item.child(tag::RESULT_REASON).map(|r| &r.value) {
        Some(Value::Enumeration(r)) => Some(*r),
        _ => None,
    };
    let message = match item.child(tag::RESULT_MESSAGE).map(|m| &m.value) {
        Some(Value::Text(m)) => m.chars().take(200).collect::<String>(),
        _ => String::new(),
    };
    let status_name = match status {
        1 => "operation failed",
        2 => "operation pending",
        3 => "operation undone",
        _ => "unknown status",
    };
    let (kind, reason_name): (fn(String) -> KmsError, &str) = match reason {
        Some(0x01) => (KmsError::NotFound, "item not found"),
        Some(0x37) => (KmsError::NotFound, "object not found"),
        Some(0x36) => (KmsError::NotFound, "object destroyed"),
        Some(0x03) => (KmsError::Denied, "authentication not successful"),
        Some(0x0C) => (KmsError::Denied, "permission denied"),
        Some(0x39) => (KmsError::Denied, "not authorised"),
        Some(0x3A) => (KmsError::Unavailable, "server limit exceeded"),
        Some(0x44) => (KmsError::Unavailable, "protection storage unavailable"),
        Some(0x0A) => (KmsError::Integrity, "cryptographic failure"),
        Some(0x05) => (KmsError::Unsupported, "operation not supported"),
        Some(0x08) => (KmsError::Unsupported, "feature not supported"),
        Some(0x100) => (KmsError::Unavailable, "general failure"),
        Some(0x2A) => (KmsError::Unavailable, "internal server error"),
        Some(0x0B) => (KmsError::Other, "illegal operation"),
        Some(0x43) => (KmsError::Other, "wrong key lifecycle state"),
        Some(0x04) => (KmsError::Other, "invalid message"),
        Some(0x07) => (KmsError::Other, "invalid field"),
        Some(_) | None => (KmsError::Other, "reason not given"),
    };
    // Pending or undone: the server could not finish now.
    let kind: fn(String) -> KmsError = if matches!(status, 2 | 3) {
        KmsError::Unavailable
    } else {
        kind
    };
    let reason_code = reason.map(|r| format!(" ({r:#x})")).unwrap_or_default();
    kind(format!(
        "KMIP {}: {status_name}: {reason_name}{reason_code}{}",
        op.name(),
        if message.is_empty() {
            String::new()
        } else {
            format!(": {message}")
        }
    ))
}

/// The Unique Identifier of a response payload.
pub fn unique_identifier(payload: &Item, op: Op) -> Result<String> {
    match payload.child(tag::UNIQUE_IDENTIFIER).map(|u| &u.value) {
        Some(Value::Text(u)) => Ok(u.clone()),
        _ => Err(KmsError::Other(format!(
            "KMIP {} response has no unique identifier",
            op.name()
        ))),
    }
}

/// DiscoverVersions: the payload offering `versions`.
pub fn discover_versions(versions: &[Version]) -> Vec<Item> {
    versions.iter().map(|v| v.item()).collect()
}

/// The versions a DiscoverVersions response lists.
pub fn discovered(payload: &Item) -> Vec<Version> {
    payload
        .children(tag::PROTOCOL_VERSION)
        .filter_map(|v| {
            match (
                v.child(tag::PROTOCOL_VERSION_MAJOR).map(|m| &m.value),
                v.child(tag::PROTOCOL_VERSION_MINOR).map(|m| &m.value),
            ) {
                (Some(Value::Integer(a)), Some(Value::Integer(b))) => Some(Version(*a, *b)),
                _ => None,
            }
        })
        .collect()
}

/// AES-CBC with PKCS#5 padding, as ceph-csi asks for.
fn cbc_pkcs5() -> Item {
    Item::structure(
        tag::CRYPTOGRAPHIC_PARAMETERS,
        vec![
            enumeration(tag::BLOCK_CIPHER_MODE, 0x01),
            enumeration(tag::PADDING_METHOD, 0x03),
            enumeration(tag::CRYPTOGRAPHIC_ALGORITHM, 0x03),
        ],
    )
}

/// Encrypt or Decrypt `data` under key `key_uid` with `iv`.
pub fn crypt(key_uid: &str, data: &[u8], iv: &[u8]) -> Vec<Item> {
    vec![
        uid(key_uid),
        cbc_pkcs5(),
        Item::new(tag::DATA, Value::Bytes(data.to_vec())),
        Item::new(tag::IV_COUNTER_NONCE, Value::Bytes(iv.to_vec())),
    ]
}

/// The Data of an Encrypt or Decrypt response.
pub fn data(payload: &Item, op: Op) -> Result<Vec<u8>> {
    match payload.child(tag::DATA).map(|d| &d.value) {
        Some(Value::Bytes(d)) => Ok(d.clone()),
        _ => Err(KmsError::Other(format!(
            "KMIP {} response has no data",
            op.name()
        ))),
    }
}

/// Get (also Activate, Destroy: the same payload).
pub fn by_uid(key_uid: &str) -> Vec<Item> {
    vec![uid(key_uid)]
}

/// Revoke, as no longer in use (cessation of operation).
pub fn revoke(key_uid: &str) -> Vec<Item> {
    vec![
        uid(key_uid),
        Item::structure(
            tag::REVOCATION_REASON,
            vec![enumeration(tag::REVOCATION_REASON_CODE, 0x06)],
        ),
    ]
}

/// The key material of a Get response, if the object is of `object_type`
/// (symmetric key 0x02, secret data 0x07) with a raw or opaque value.
pub fn key_material(payload: &Item, object_type: u32) -> Result<Vec<u8>> {
    let bad = |what: &str| KmsError::Other(format!("KMIP Get response: {what}"));
    if payload.child(tag::OBJECT_TYPE).map(|t| &t.value) != Some(&Value::Enumeration(object_type)) {
        return Err(bad(match object_type {
            0x02 => "the object is not a symmetric key",
            _ => "the object is not secret data",
        }));
    }
    let object_tag = if object_type == 0x02 {
        tag::SYMMETRIC_KEY
    } else {
        tag::SECRET_DATA
    };
    let material = payload
        .child(object_tag)
        .and_then(|o| o.child(tag::KEY_BLOCK))
        .and_then(|b| b.child(tag::KEY_VALUE))
        .and_then(|v| v.child(tag::KEY_MATERIAL));
    match material.map(|m| &m.value) {
        Some(Value::Bytes(b)) => Ok(b.clone()),
        Some(_) => Err(bad(
            "the key material is not raw bytes (use a Raw or Opaque key format)",
        )),
        None => Err(bad("no key material")),
    }
}

/// The attributes of a registered volume key: its name, and usage masks
/// a server requires of secret data.
fn attributes(version: Version, name: &str) -> Item {
    let name_value = |tag: u32| {
        Item::structure(
            tag,
            vec![
                text(tag::NAME_VALUE, name),
                enumeration(tag::NAME_TYPE, 0x01),
            ],
        )
    };
    // Encrypt | Decrypt: what a key-encryption key is used for.
    let usage = Value::Integer(0x04 | 0x08);
    if version.is_2x() {
        return Item::structure(
            tag::ATTRIBUTES,
            vec![
                name_value(tag::NAME),
                Item::new(tag::CRYPTOGRAPHIC_USAGE_MASK, usage),
            ],
        );
    }
    let attribute = |n: &str, value: Item| {
        Item::structure(tag::ATTRIBUTE, vec![text(tag::ATTRIBUTE_NAME, n), value])
    };
    Item::structure(
        tag::TEMPLATE_ATTRIBUTE,
        vec![
            attribute("Name", name_value(tag::ATTRIBUTE_VALUE)),
            attribute(
                "Cryptographic Usage Mask",
                Item::new(tag::ATTRIBUTE_VALUE, usage),
            ),
        ],
    )
}

/// Register `secret` as Secret Data (a password, opaque bytes) named `name`.
pub fn register_secret(version: Version, name: &str, secret: &[u8]) -> Vec<Item> {
    let object = Item::structure(
        tag::SECRET_DATA,
        vec![
            enumeration(tag::SECRET_DATA_TYPE, 0x01),
            Item::structure(
                tag::KEY_BLOCK,
                vec![
                    enumeration(tag::KEY_FORMAT_TYPE, 0x02),
                    Item::structure(
                        tag::KEY_VALUE,
                        vec![Item::new(tag::KEY_MATERIAL, Value::Bytes(secret.to_vec()))],
                    ),
                ],
            ),
        ],
    );
    vec![
        enumeration(tag::OBJECT_TYPE, 0x07),
        attributes(version, name),
        object,
    ]
}

/// Locate Secret Data named `name`.
pub fn locate_by_name(version: Version, name: &str) -> Vec<Item> {
    let name_value = |tag: u32| {
        Item::structure(
            tag,
            vec![
                text(tag::NAME_VALUE, name),
                enumeration(tag::NAME_TYPE, 0x01),
            ],
        )
    };
    if version.is_2x() {
        return vec![Item::structure(
            tag::ATTRIBUTES,
            vec![enumeration(tag::OBJECT_TYPE, 0x07), name_value(tag::NAME)],
        )];
    }
    let attribute = |n: &str, value: Item| {
        Item::structure(tag::ATTRIBUTE, vec![text(tag::ATTRIBUTE_NAME, n), value])
    };
    vec![
        attribute("Object Type", enumeration(tag::ATTRIBUTE_VALUE, 0x07)),
        attribute("Name", name_value(tag::ATTRIBUTE_VALUE)),
    ]
}

/// The identifiers a Locate response lists.
pub fn located(payload: &Item) -> Vec<String> {
    payload
        .children(tag::UNIQUE_IDENTIFIER)
        .filter_map(|u| match &u.value {
            Value::Text(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}
