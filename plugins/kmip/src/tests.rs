//! The plugin against a scripted KMIP server on the SDK's mock host: what
//! a real server cannot be made to do on demand — speak no version in
//! common, or fail an operation with a chosen result reason — and the
//! mapping of each to the contract's errors. The real-server behaviour is
//! tested against PyKMIP in host/tests/kmip.rs.

use crate::kmip::{Op, Version, tag};
use crate::ttlv::{self, Item, Value};
use crate::{DEFAULT_SECRET, Kmip, UNIQUE_IDENTIFIER};
use kmshost_plugin_sdk::mock::{self, Installed, MockHost};
use kmshost_plugin_sdk::{KmsError, Provider};
use std::sync::{Arc, Mutex};

/// How the scripted server answers a request: the payload of a success, or
/// a failure's (status, reason).
type Answer = std::result::Result<Vec<Item>, (u32, Option<u32>)>;

fn version_item(v: Version) -> Item {
    Item::structure(
        tag::PROTOCOL_VERSION,
        vec![
            Item::new(tag::PROTOCOL_VERSION_MAJOR, Value::Integer(v.0)),
            Item::new(tag::PROTOCOL_VERSION_MINOR, Value::Integer(v.1)),
        ],
    )
}

/// The operation, batch id and protocol version of a request message.
fn parse_request(sent: &[u8]) -> (u32, Vec<u8>, Version) {
    let msg = ttlv::decode(sent).expect("the plugin sends valid TTLV");
    assert_eq!(msg.tag, tag::REQUEST_MESSAGE);
    let version = msg
        .child(tag::REQUEST_HEADER)
        .and_then(|h| h.child(tag::PROTOCOL_VERSION))
        .map(|v| match (&v.items()[0].value, &v.items()[1].value) {
            (Value::Integer(a), Value::Integer(b)) => Version(*a, *b),
            _ => panic!("a protocol version of two integers"),
        })
        .expect("a request header with a protocol version");
    let item = msg.child(tag::BATCH_ITEM).expect("one batch item");
    let op = match item.child(tag::OPERATION).map(|o| &o.value) {
        Some(Value::Enumeration(op)) => *op,
        other => panic!("no operation: {other:?}"),
    };
    let batch_id = match item.child(tag::UNIQUE_BATCH_ITEM_ID).map(|b| &b.value) {
        Some(Value::Bytes(b)) => b.clone(),
        other => panic!("no batch id: {other:?}"),
    };
    (op, batch_id, version)
}

/// A response message to `op` with `batch_id`.
fn response(op: u32, batch_id: Vec<u8>, answer: Answer) -> Vec<u8> {
    let mut item = vec![
        Item::new(tag::OPERATION, Value::Enumeration(op)),
        Item::new(tag::UNIQUE_BATCH_ITEM_ID, Value::Bytes(batch_id)),
    ];
    match answer {
        Ok(payload) => {
            item.push(Item::new(tag::RESULT_STATUS, Value::Enumeration(0)));
            item.push(Item::structure(tag::RESPONSE_PAYLOAD, payload));
        }
        Err((status, reason)) => {
            item.push(Item::new(tag::RESULT_STATUS, Value::Enumeration(status)));
            if let Some(r) = reason {
                item.push(Item::new(tag::RESULT_REASON, Value::Enumeration(r)));
            }
            let text = "scripted failure".to_string();
            item.push(Item::new(tag::RESULT_MESSAGE, Value::Text(text)));
        }
    }
    let header = vec![
        version_item(Version(1, 4)),
        Item::new(tag::BATCH_COUNT, Value::Integer(1)),
    ];
    Item::structure(
        tag::RESPONSE_MESSAGE,
        vec![
            Item::structure(tag::RESPONSE_HEADER, header),
            Item::structure(tag::BATCH_ITEM, item),
        ],
    )
    .encode()
}

/// Requests the scripted server saw: (operation, protocol version).
type Seen = Arc<Mutex<Vec<(u32, Version)>>>;

/// A mock host whose KMIP server speaks `versions` and answers every
/// other operation with `answer(op)`; the ceph-csi Secret names key `k1`.
fn server(versions: Vec<Version>, answer: impl Fn(u32) -> Answer + 'static) -> (Installed, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let host = MockHost::new()
        .secret(DEFAULT_SECRET, UNIQUE_IDENTIFIER, "k1")
        .on_stream(move |_endpoint, sent| {
            let (op, batch_id, version) = parse_request(sent);
            log.lock().unwrap().push((op, version));
            let a = match op == Op::DiscoverVersions as u32 {
                true => Ok(versions.iter().map(|v| version_item(*v)).collect()),
                false => answer(op),
            };
            Ok(response(op, batch_id, a))
        })
        .install();
    (host, seen)
}

fn ceph_csi() -> Kmip {
    mock::configure(&[
        ("encryptionKMSType", "kmip"),
        ("KMIP_ENDPOINT", "kmip:5696"),
    ])
    .unwrap()
}

#[test]
fn no_version_in_common_is_unsupported_naming_both_sides() {
    let (_host, seen) = server(vec![Version(3, 0)], |_| panic!("nothing past discovery"));
    let e = ceph_csi().wrap("pvc-1", &[7; 32]).unwrap_err();
    let KmsError::Unsupported(m) = &e else {
        panic!("{e:?}")
    };
    assert!(m.contains("kmip:5696"), "{m}");
    assert!(m.contains("speaks protocol version(s) 3.0"), "{m}");
    assert!(
        m.contains("this plugin speaks 1.4, 2.1, 2.0, 1.3, 1.2, 1.1"),
        "{m}"
    );
    // The offer, then the empty offer that asks what the server speaks.
    let ops: Vec<u32> = seen.lock().unwrap().iter().map(|(op, _)| *op).collect();
    assert_eq!(ops, [Op::DiscoverVersions as u32; 2]);
}

#[test]
fn the_agreed_version_is_spoken_from_then_on() {
    let (_host, seen) = server(vec![Version(2, 0)], |op| {
        assert_eq!(op, Op::Encrypt as u32);
        Ok(vec![Item::new(tag::DATA, Value::Bytes(vec![1; 48]))])
    });
    ceph_csi().wrap("pvc-1", &[7; 32]).unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1], (Op::Encrypt as u32, Version(2, 0)));
}

#[test]
fn result_reasons_map_to_the_contracts_errors() {
    type Kind = fn(&KmsError) -> bool;
    let cases: [(u32, Option<u32>, Kind, &str); 9] = [
        (
            1,
            Some(0x01),
            |e| matches!(e, KmsError::NotFound(_)),
            "item not found",
        ),
        (
            1,
            Some(0x0C),
            |e| matches!(e, KmsError::Denied(_)),
            "permission denied",
        ),
        (
            1,
            Some(0x03),
            |e| matches!(e, KmsError::Denied(_)),
            "authentication",
        ),
        (
            1,
            Some(0x3A),
            |e| matches!(e, KmsError::Unavailable(_)),
            "server limit",
        ),
        (
            1,
            Some(0x0A),
            |e| matches!(e, KmsError::Integrity(_)),
            "cryptographic",
        ),
        (
            1,
            Some(0x05),
            |e| matches!(e, KmsError::Unsupported(_)),
            "not supported",
        ),
        (
            2,
            None,
            |e| matches!(e, KmsError::Unavailable(_)),
            "operation pending",
        ),
        (
            3,
            Some(0x01),
            |e| matches!(e, KmsError::Unavailable(_)),
            "undone",
        ),
        (
            1,
            None,
            |e| matches!(e, KmsError::Other(_)),
            "reason not given",
        ),
    ];
    for (status, reason, kind, words) in cases {
        let (_host, _) = server(vec![Version(1, 4)], move |_| Err((status, reason)));
        let e = ceph_csi().wrap("pvc-1", &[7; 32]).unwrap_err();
        assert!(kind(&e), "status {status} reason {reason:?}: {e:?}");
        let m = format!("{e:?}");
        assert!(m.contains("KMIP Encrypt") && m.contains(words), "{m}");
        assert!(
            m.contains("scripted failure"),
            "the server's message is kept: {m}"
        );
    }
}
