//! Plugin tests on the SDK mock host: what the fake Key Protect in the
//! host's tests cannot show — the exact IAM form, a token refused twice,
//! and the request IDs.

use crate::KeyProtect;
use crate::iam::TOKEN_CACHE_KEY;
use kmshost_plugin_sdk::mock::{self, MockHost};
use kmshost_plugin_sdk::{KmsError, Provider};
use std::cell::Cell;
use std::rc::Rc;

const OPTIONS: &[(&str, &str)] = &[
    ("IBM_KP_SERVICE_INSTANCE_ID", "inst-1"),
    ("IBM_KP_BASE_URL", "https://kp.test"),
    ("IBM_KP_TOKEN_URL", "https://iam.test/identity/token"),
];

fn host(kp_status: Rc<Cell<u16>>) -> MockHost {
    MockHost::new()
        .secret(
            "ceph-csi-kp-credentials",
            "IBM_KP_SERVICE_API_KEY",
            "key+/=1",
        )
        .secret(
            "ceph-csi-kp-credentials",
            "IBM_KP_CUSTOMER_ROOT_KEY",
            "root-1\n",
        )
        .on_http(move |r| {
            if r.url.starts_with("https://iam.test/") {
                return Ok(MockHost::reply(
                    200,
                    r#"{"access_token":"t1","token_type":"Bearer","expires_in":3600}"#,
                ));
            }
            Ok(MockHost::reply(kp_status.get(), r#"{"ciphertext":"Y3Q="}"#))
        })
}

#[test]
fn the_api_key_is_exchanged_as_a_form_and_the_token_cached() {
    let status = Rc::new(Cell::new(200));
    let h = host(status).install();
    let p: KeyProtect = mock::configure(OPTIONS).unwrap();
    p.wrap("pvc-1", b"key").unwrap();
    p.wrap("pvc-1", b"key").unwrap();
    let reqs = h.requests();
    assert_eq!(reqs.len(), 3, "one exchange, two wraps");
    assert_eq!(reqs[0].url, "https://iam.test/identity/token");
    assert_eq!(
        String::from_utf8(reqs[0].body.clone()).unwrap(),
        "grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Aapikey&apikey=key%2B%2F%3D1"
    );
    assert_eq!(h.cached(TOKEN_CACHE_KEY).unwrap(), b"t1");
    let wrap = &reqs[1];
    assert_eq!(wrap.url, "https://kp.test/api/v2/keys/root-1/actions/wrap");
    assert_eq!(wrap.header("authorization").unwrap(), "Bearer t1");
    assert_ne!(
        wrap.header("correlation-id"),
        reqs[2].header("correlation-id")
    );
}

#[test]
fn a_token_refused_after_a_new_login_is_denied() {
    let status = Rc::new(Cell::new(401));
    let h = host(status.clone()).install();
    let p: KeyProtect = mock::configure(OPTIONS).unwrap();
    let e = p.wrap("pvc-1", b"key").unwrap_err();
    assert!(matches!(e, KmsError::Denied(_)), "{e:?}");
    // Exchange, refused; forget, exchange, refused: no third try.
    let urls: Vec<String> = h.requests().iter().map(|r| r.url.clone()).collect();
    assert_eq!(urls.len(), 4, "{urls:?}");
    status.set(200);
    p.wrap("pvc-1", b"key").unwrap();
}

#[test]
fn a_rewrapped_ciphertext_is_offered_in_the_blobs_format() {
    let h = MockHost::new()
        .secret("ceph-csi-kp-credentials", "IBM_KP_SERVICE_API_KEY", "k")
        .secret(
            "ceph-csi-kp-credentials",
            "IBM_KP_CUSTOMER_ROOT_KEY",
            "root-1",
        )
        .on_http(|r| {
            if r.url.starts_with("https://iam.test/") {
                return Ok(MockHost::reply(
                    200,
                    r#"{"access_token":"t","expires_in":3600}"#,
                ));
            }
            Ok(MockHost::reply(
                200,
                r#"{"plaintext":"a2V5","ciphertext":"bmV3"}"#,
            ))
        })
        .install();
    let p: KeyProtect = mock::configure(OPTIONS).unwrap();
    let old = br#"{"kmshost":1,"ciphertext":"b2xk"}"#;
    assert_eq!(p.unwrap("pvc-1", old).unwrap(), b"key");
    assert_eq!(
        h.offered().unwrap(),
        br#"{"kmshost":1,"ciphertext":"bmV3"}"#
    );
    let body: serde_json::Value = serde_json::from_slice(&h.requests()[1].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"ciphertext": "b2xk", "aad": ["pvc-1"]})
    );
}
