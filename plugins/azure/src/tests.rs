//! Plugin tests on the SDK mock host: what the fake Entra ID and Key Vault
//! in the host's tests cannot show as directly — the exact JWT the plugin
//! hands the host to sign, the login form, a token refused twice, and the
//! order of requests around a soft-deleted name.

use crate::Azure;
use crate::login::TOKEN_CACHE_KEY;
use kmshost_plugin_sdk::encoding::b64url_decode;
use kmshost_plugin_sdk::mock::{self, MockHost, MockRequest};
use kmshost_plugin_sdk::signing::CertificateInfo;
use kmshost_plugin_sdk::{KmsError, Provider};
use std::cell::RefCell;
use std::rc::Rc;

const TOKEN_URL: &str = "https://login.microsoftonline.com/tenant-1/oauth2/v2.0/token";
const VAULT: &str = "https://kv1.vault.azure.net";

const OPTIONS: &[(&str, &str)] = &[
    ("AZURE_VAULT_URL", "https://kv1.vault.azure.net/"),
    ("AZURE_CLIENT_ID", "client-1"),
    ("AZURE_TENANT_ID", "tenant-1"),
    ("AZURE_CERT_SECRET_NAME", "ceph-csi-azure-credentials"),
];

fn cert_info() -> CertificateInfo {
    CertificateInfo {
        x5t: "sha1-thumb".into(),
        x5t_s256: "sha256-thumb".into(),
        chain: vec![b"der".to_vec()],
    }
}

/// A host whose Key Vault answers each request with the next of `vault`
/// (status, body); the token endpoint always issues `t1`.
fn host(vault: Vec<(u16, &'static str)>) -> MockHost {
    let vault = Rc::new(RefCell::new(vault.into_iter()));
    MockHost::new()
        .on_sign("ceph-csi-azure-credentials", cert_info(), |_, _, _| {
            Ok(b"signature".to_vec())
        })
        .on_http(move |r: &MockRequest| {
            if r.url == TOKEN_URL {
                return Ok(MockHost::reply(
                    200,
                    r#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"t1"}"#,
                ));
            }
            let (status, body) = vault.borrow_mut().next().expect("an expected vault request");
            Ok(MockHost::reply(status, body))
        })
}

fn part(jwt: &str, i: usize) -> serde_json::Value {
    serde_json::from_slice(&b64url_decode("jwt", jwt.split('.').nth(i).unwrap()).unwrap()).unwrap()
}

fn form_field(body: &[u8], name: &str) -> String {
    let text = String::from_utf8(body.to_vec()).unwrap();
    text.split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn the_assertion_is_built_here_and_signed_by_the_host() {
    let h = host(vec![(200, r#"{"value":"pass-1","id":"x"}"#)]).install();
    let p: Azure = mock::configure(OPTIONS).unwrap();
    assert_eq!(p.get("pvc-1").unwrap(), b"pass-1");
    let reqs = h.requests();
    assert_eq!(reqs.len(), 2, "a login, then the get");
    let login = &reqs[0];
    assert_eq!(
        (login.method.as_str(), login.url.as_str()),
        ("POST", TOKEN_URL)
    );
    assert_eq!(form_field(&login.body, "grant_type"), "client_credentials");
    assert_eq!(form_field(&login.body, "client_id"), "client-1");
    assert_eq!(
        form_field(&login.body, "scope"),
        "https%3A%2F%2Fvault.azure.net%2F.default"
    );
    assert_eq!(
        form_field(&login.body, "client_assertion_type"),
        "urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"
    );
    // The JWT: the host signed exactly its header and claims.
    let jwt = form_field(&login.body, "client_assertion");
    let signed = h.signed();
    assert_eq!(signed.len(), 1);
    let (input, sig) = jwt.rsplit_once('.').unwrap();
    assert_eq!(signed[0], input.as_bytes());
    assert_eq!(b64url_decode("signature", sig).unwrap(), b"signature");
    let header = part(&jwt, 0);
    assert_eq!(
        header,
        serde_json::json!({"alg": "RS256", "typ": "JWT", "x5t": "sha1-thumb"})
    );
    let claims = part(&jwt, 1);
    assert_eq!(claims["aud"], TOKEN_URL);
    assert_eq!(
        (claims["iss"].as_str(), claims["sub"].as_str()),
        (Some("client-1"), Some("client-1"))
    );
    assert_eq!(claims["jti"].as_str().unwrap().len(), 36);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["nbf"].as_u64().unwrap(),
        600
    );
    // The token is cached by the host and sent to the vault.
    assert_eq!(h.cached(TOKEN_CACHE_KEY).unwrap(), b"t1");
    let get = &reqs[1];
    assert_eq!(get.url, format!("{VAULT}/secrets/pvc-1?api-version=7.4"));
    assert_eq!(get.header("authorization").unwrap(), "Bearer t1");
    // Nothing the plugin logged holds the token or the assertion.
    for line in h.logs() {
        assert!(!line.contains("t1") && !line.contains(&jwt), "{line}");
    }
}

#[test]
fn ps256_names_the_certificate_by_its_sha256_thumbprint() {
    let h = host(vec![(200, r#"{"value":"p"}"#)]).install();
    let mut opts = OPTIONS.to_vec();
    opts.push(("AZURE_ASSERTION_ALGORITHM", "PS256"));
    let p: Azure = mock::configure(&opts).unwrap();
    p.get("pvc-1").unwrap();
    let jwt = form_field(&h.requests()[0].body, "client_assertion");
    assert_eq!(
        part(&jwt, 0),
        serde_json::json!({"alg": "PS256", "typ": "JWT", "x5t#S256": "sha256-thumb"})
    );
}

const CHALLENGE: &str = r#"{"error":{"code":"Unauthorized","message":"[TokenExpired] Error validating token: 'S2S12086'."}}"#;

#[test]
fn a_refused_token_logs_in_once_more_then_is_denied() {
    let h = host(vec![(401, CHALLENGE), (200, r#"{"value":"p"}"#)]).install();
    let p: Azure = mock::configure(OPTIONS).unwrap();
    assert_eq!(p.get("pvc-1").unwrap(), b"p");
    let logins = h.requests().iter().filter(|r| r.url == TOKEN_URL).count();
    assert_eq!(logins, 2, "one re-login after the 401");
    drop(h);

    let h = host(vec![(401, CHALLENGE), (401, CHALLENGE)]).install();
    let p: Azure = mock::configure(OPTIONS).unwrap();
    let e = p.get("pvc-1").unwrap_err();
    assert!(matches!(e, KmsError::Denied(_)), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("401") && text.contains("TokenExpired"),
        "{text}"
    );
    assert!(!text.contains("t1"), "{text}");
    assert_eq!(h.requests().len(), 4, "login, get, login, get: no more");
}

#[test]
fn a_soft_deleted_name_is_recovered_then_set() {
    let h = host(vec![
        (409, r#"{"error":{"code":"Conflict","message":"Secret pvc-1 is currently in a deleted but recoverable state","innererror":{"code":"ObjectIsDeletedButRecoverable"}}}"#),
        (200, r#"{"id":"x"}"#),
        (409, r#"{"error":{"code":"Conflict","message":"being recovered","innererror":{"code":"ObjectIsBeingRecovered"}}}"#),
        (200, r#"{"value":"new","id":"x"}"#),
    ])
    .install();
    let p: Azure = mock::configure(OPTIONS).unwrap();
    p.put("pvc-1", b"new").unwrap();
    let vault: Vec<(String, String)> = h
        .requests()
        .into_iter()
        .filter(|r| r.url.starts_with(VAULT))
        .map(|r| (r.method, r.url))
        .collect();
    let set = format!("{VAULT}/secrets/pvc-1?api-version=7.4");
    let recover = format!("{VAULT}/deletedsecrets/pvc-1/recover?api-version=7.4");
    assert_eq!(
        vault,
        [
            ("PUT".to_string(), set.clone()),
            ("POST".to_string(), recover),
            ("PUT".to_string(), set.clone()),
            ("PUT".to_string(), set),
        ]
    );
    let body: serde_json::Value =
        serde_json::from_slice(&h.requests().last().unwrap().body).unwrap();
    assert_eq!(body, serde_json::json!({"value": "new"}));
}

#[test]
fn delete_is_idempotent_and_a_missing_secret_is_not_found() {
    let missing = r#"{"error":{"code":"SecretNotFound","message":"A secret with (name/id) pvc-1 was not found in this key vault."}}"#;
    let h = host(vec![(404, missing), (404, missing)]).install();
    let p: Azure = mock::configure(OPTIONS).unwrap();
    p.delete("pvc-1").unwrap();
    let e = p.get("pvc-1").unwrap_err();
    assert!(matches!(e, KmsError::NotFound(_)), "{e:?}");
    assert!(e.to_string().contains("SecretNotFound"), "{e}");
    let del = &h.requests()[1];
    assert_eq!(del.method, "DELETE");
    assert!(!del.url.contains("purge"));
}

#[test]
fn entra_refusals_are_denied_with_the_first_line_of_the_reason() {
    let h = MockHost::new()
        .on_sign("ceph-csi-azure-credentials", cert_info(), |_, _, _| Ok(b"s".to_vec()))
        .on_http(|_| {
            Ok(MockHost::reply(
                401,
                r#"{"error":"invalid_client","error_description":"AADSTS700027: Client assertion contains an invalid signature.\r\nTrace ID: abc\r\nCorrelation ID: def","error_codes":[700027]}"#,
            ))
        })
        .install();
    let p: Azure = mock::configure(OPTIONS).unwrap();
    let e = p.get("pvc-1").unwrap_err();
    assert!(matches!(e, KmsError::Denied(_)), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("invalid_client AADSTS700027"), "{text}");
    assert!(
        !text.contains("Trace ID") && !text.contains("client_assertion"),
        "{text}"
    );
    assert_eq!(h.requests().len(), 1, "a refused login is not retried");
}

#[test]
fn a_passphrase_that_is_not_text_is_refused_before_any_request() {
    let h = host(vec![]).install();
    let p: Azure = mock::configure(OPTIONS).unwrap();
    let e = p.put("pvc-1", &[0xff, 0xfe]).unwrap_err();
    assert!(e.to_string().contains("not UTF-8"), "{e}");
    let e = p.put("pvc_1", b"x").unwrap_err();
    assert!(e.to_string().contains("secret name"), "{e}");
    assert!(h.requests().is_empty());
}
