//! The `azure` plugin (ceph-csi's and Rook's `azure-kv`) against the fake
//! Entra ID + Key Vault (`common::azure`, strict about what it accepts):
//! secrets named after the volume, the client assertion the host signs
//! (checked by the fake against the certificate), one login per token
//! lifetime, an unregistered or broken certificate, names the service
//! refuses, soft delete and recovery, throttling and outages, missing
//! permissions, the certificate PEMs the host takes, and a CSI lifecycle.

mod common;

use common::azure::{CLIENT_ID, FakeAzure, TENANT, TestCert};
use kmshost::capability::signing::{SigningCert, SigningError};
use kmshost::kms::{KeyId, Kms, KmsError, Sealed, generate_passphrase};
use kmshost::types::SecretBytes;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::OnceLock;

fn key(s: &str) -> KeyId {
    KeyId::new(s).unwrap()
}

/// One RSA certificate per test binary (openssl takes a moment).
fn cert() -> &'static TestCert {
    static CERT: OnceLock<TestCert> = OnceLock::new();
    CERT.get_or_init(|| TestCert::rsa(2048))
}

/// ceph-csi's entry for the fake (the login endpoint is kmshost's
/// sovereign-cloud option, here pointing at the fake).
fn entry(az: &FakeAzure) -> Value {
    json!({"encryptionKMSType": "azure-kv", "AZURE_VAULT_URL": az.vault_url(),
           "AZURE_CLIENT_ID": CLIENT_ID, "AZURE_TENANT_ID": TENANT,
           "AZURE_AUTHORITY_HOST": az.authority()})
}

fn write_cert(dir: &Path, name: &str, pem: &str) {
    common::write_secret(dir, name, &[("CLIENT_CERT", pem.as_bytes())]);
}

/// A facade with kmsID `az`; the certificate registered and in ceph-csi's
/// default Secret.
fn kms_for(dir: &Path, az: &FakeAzure) -> Kms {
    az.register(cert());
    write_cert(dir, "ceph-csi-azure-credentials", &cert().client_cert());
    common::kms(&json!({"az": entry(az)}), dir, None)
}

#[tokio::test(flavor = "multi_thread")]
async fn passphrases_are_secrets_named_after_the_volume_and_delete_is_soft() {
    let az = FakeAzure::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kms = kms_for(dir.path(), &az);
    let v = key("0001-0009-rook-ceph-0000000000000002-azure-a");
    let pass = generate_passphrase();
    assert_eq!(
        kms.tenant(None).seal("az", &v, &pass).await.unwrap(),
        Sealed::Stored
    );
    let s = az
        .secret(v.as_str())
        .expect("the secret is named after the volume");
    assert_eq!(s.versions, [std::str::from_utf8(pass.expose()).unwrap()]);
    assert_eq!(kms.get("az", &v).await.unwrap(), pass);
    // Put again: a new version; get reads the latest.
    let pass2 = generate_passphrase();
    kms.put("az", &v, &pass2).await.unwrap();
    assert_eq!(az.secret(v.as_str()).unwrap().versions.len(), 2);
    assert_eq!(kms.get("az", &v).await.unwrap(), pass2);
    // What went over the wire: api-version 7.4, JSON, the bearer token.
    let put = az
        .vault_requests()
        .into_iter()
        .find(|r| r.method == "PUT")
        .unwrap();
    assert_eq!(put.path, format!("/secrets/{v}?api-version=7.4"));
    assert_eq!(put.header("content-type"), Some("application/json"));
    assert!(
        put.header("authorization")
            .unwrap()
            .starts_with("Bearer fake-entra-access-token-")
    );
    // Delete is a soft delete (never a purge), and idempotent.
    kms.delete("az", &v).await.unwrap();
    assert!(
        az.secret(v.as_str()).unwrap().deleted,
        "soft-deleted, recoverable"
    );
    kms.delete("az", &v).await.unwrap();
    let e = kms.get("az", &v).await.unwrap_err();
    assert!(matches!(e, KmsError::NotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("SecretNotFound"), "{e}");
    assert!(
        az.vault_requests()
            .iter()
            .all(|r| !r.path.contains("purge")),
        "never purged"
    );
}

/// The assertion the host signed and the fake verified against the
/// certificate: its header names the certificate by x5t, its claims are
/// what Entra ID checks, and each login uses a new jti.
#[tokio::test(flavor = "multi_thread")]
async fn the_login_assertion_is_signed_by_the_host_with_the_documented_claims() {
    let az = FakeAzure::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kms = kms_for(dir.path(), &az);
    kms.put("az", &key("pvc-claims"), &generate_passphrase())
        .await
        .unwrap();
    az.expire_tokens();
    kms.get("az", &key("pvc-claims")).await.unwrap();
    let a = az.assertions();
    assert_eq!(a.len(), 2, "{a:?}");
    for x in &a {
        assert_eq!(x.header["alg"], "RS256");
        assert_eq!(x.header["x5t"], cert().x5t().as_str());
        assert_eq!(x.claims["aud"], az.token_url().as_str());
        assert_eq!(x.claims["iss"], CLIENT_ID);
        assert_eq!(x.claims["sub"], CLIENT_ID);
        let (nbf, exp) = (
            x.claims["nbf"].as_u64().unwrap(),
            x.claims["exp"].as_u64().unwrap(),
        );
        assert_eq!(exp - nbf, 600, "ten minutes, as MSAL");
    }
    assert_ne!(a[0].claims["jti"], a[1].claims["jti"]);
    // The form: client credentials, the vault's scope, no secret.
    let login = String::from_utf8(az.entra_requests()[0].body.clone()).unwrap();
    assert!(login.contains("grant_type=client_credentials"), "{login}");
    assert!(
        login.contains("scope=https%3A%2F%2Fvault.azure.net%2F.default"),
        "{login}"
    );
    assert!(!login.contains("client_secret"), "{login}");

    // PS256 names the certificate by x5t#S256.
    let mut ps = entry(&az);
    ps["AZURE_ASSERTION_ALGORITHM"] = "PS256".into();
    let kms = common::kms(&json!({"ps": ps}), dir.path(), None);
    kms.get("ps", &key("pvc-claims")).await.unwrap();
    let last = az.assertions().pop().unwrap();
    assert_eq!(last.header["alg"], "PS256");
    assert_eq!(last.header["x5t#S256"], cert().x5t_s256().as_str());
    assert!(last.header.get("x5t").is_none(), "{}", last.header);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_login_serves_a_token_lifetime_and_a_refused_token_logs_in_once() {
    let az = FakeAzure::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kms = kms_for(dir.path(), &az);
    let v = key("pvc-token");
    let pass = generate_passphrase();
    kms.put("az", &v, &pass).await.unwrap();
    for _ in 0..20 {
        assert_eq!(kms.get("az", &v).await.unwrap(), pass);
    }
    assert_eq!(az.logins(), 1, "one login for the token's lifetime");
    assert_eq!(az.refused_tokens(), 0);
    // The vault refuses the token (401 with its challenge): one new login,
    // and the operation succeeds.
    az.expire_tokens();
    assert_eq!(kms.get("az", &v).await.unwrap(), pass);
    assert_eq!((az.logins(), az.refused_tokens()), (2, 1));
    for _ in 0..5 {
        kms.get("az", &v).await.unwrap();
    }
    assert_eq!(az.logins(), 2);
}

/// With a two-second token the host's cache drops it after one second, so
/// the next operation logs in again before the vault could refuse it. (One
/// real second: the host cache runs on the system clock.)
#[tokio::test(flavor = "multi_thread")]
async fn a_token_is_renewed_before_it_expires() {
    let az = FakeAzure::start().await;
    az.set_token_lifetime(2);
    let dir = tempfile::tempdir().unwrap();
    let kms = kms_for(dir.path(), &az);
    let v = key("pvc-short-token");
    kms.put("az", &v, &generate_passphrase()).await.unwrap();
    assert_eq!(az.logins(), 1);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    kms.get("az", &v).await.unwrap();
    assert_eq!((az.logins(), az.refused_tokens()), (2, 0));
}

/// A certificate the app registration does not know is denied with Entra
/// ID's reason; neither the assertion nor the key is ever printed.
#[tokio::test(flavor = "multi_thread")]
async fn an_unregistered_certificate_is_denied_and_nothing_secret_is_printed() {
    let az = FakeAzure::start().await;
    let dir = tempfile::tempdir().unwrap();
    let other = TestCert::rsa(2048);
    write_cert(
        dir.path(),
        "ceph-csi-azure-credentials",
        &other.client_cert(),
    );
    let kms = common::kms(&json!({"az": entry(&az)}), dir.path(), None);
    let e = kms.get("az", &key("pvc-denied")).await.unwrap_err();
    assert!(matches!(e, KmsError::Denied { .. }), "{e:?}");
    let text = format!("{e} {e:?}");
    assert!(text.contains("AADSTS700027"), "{text}");
    assert!(!e.is_retryable());
    let sent = String::from_utf8(az.entra_requests()[0].body.clone()).unwrap();
    let assertion = sent
        .split("client_assertion=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    assert!(!text.contains(assertion), "{text}");
    let key_line = other.key_pem.lines().nth(1).unwrap();
    assert!(!text.contains(key_line), "{text}");
    assert_eq!((az.logins(), az.refused_logins()), (0, 1));
    assert!(
        az.vault_requests().is_empty(),
        "no vault request without a token"
    );
}

/// A broken certificate Secret is named (its option) before any request:
/// a key that is not the certificate's, an encrypted key, a missing Secret.
#[tokio::test(flavor = "multi_thread")]
async fn a_broken_certificate_secret_names_the_option_and_sends_nothing() {
    let az = FakeAzure::start().await;
    let dir = tempfile::tempdir().unwrap();
    az.register(cert());
    let other = TestCert::rsa(2048);
    let kms = common::kms(&json!({"az": entry(&az)}), dir.path(), None);
    let cases = [
        (
            Some(format!("{}{}", cert().cert_pem, other.key_pem)),
            "does not belong",
        ),
        (
            Some(format!("{}{}", cert().cert_pem, cert().key_encrypted())),
            "encrypted",
        ),
        (None, "not found"),
    ];
    for (pem, why) in cases {
        match &pem {
            Some(p) => write_cert(dir.path(), "ceph-csi-azure-credentials", p),
            None => std::fs::remove_dir_all(dir.path().join("ceph-csi-azure-credentials")).unwrap(),
        }
        match kms.get("az", &key("pvc-broken")).await.unwrap_err() {
            KmsError::InvalidConfig {
                option, message, ..
            } => {
                assert_eq!(option, "AZURE_CERT_SECRET_NAME", "{why}");
                assert!(message.contains(why), "{why}: {message}");
                assert!(!message.contains("PRIVATE KEY"), "{message}");
            }
            e => panic!("{why}: {e:?}"),
        }
    }
    assert!(az.entra_requests().is_empty() && az.vault_requests().is_empty());
}

/// A volume ID Key Vault cannot take as a secret name is refused by the
/// plugin with the rule, before any request; the fake enforces the same
/// rule, so a name the plugin lets through is one the service takes.
#[tokio::test(flavor = "multi_thread")]
async fn a_name_the_service_refuses_is_a_clear_error_before_any_request() {
    let az = FakeAzure::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kms = kms_for(dir.path(), &az);
    let longest = "v".repeat(127);
    for bad in ["pvc_with_underscore", "pvc.with.dots", &"v".repeat(128)] {
        let e = kms
            .put("az", &key(bad), &generate_passphrase())
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("cannot be an Azure Key Vault secret name"),
            "{text}"
        );
        assert!(text.contains("kmsID az"), "{text}");
    }
    assert!(az.vault_requests().is_empty());
    kms.put("az", &key(&longest), &generate_passphrase())
        .await
        .unwrap();
    assert!(az.secret(&longest).is_some());
}

/// A volume ID whose secret a deleted volume left soft-deleted is
/// recovered, then set (the recovery takes a request or two, as on the
/// real service).
#[tokio::test(flavor = "multi_thread")]
async fn a_soft_deleted_name_is_recovered_then_set() {
    let az = FakeAzure::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kms = kms_for(dir.path(), &az);
    let v = key("pvc-reused-name");
    az.leave_soft_deleted(v.as_str(), "old-passphrase");
    az.set_recovery_lag(2);
    let pass = generate_passphrase();
    kms.put("az", &v, &pass).await.unwrap();
    let s = az.secret(v.as_str()).unwrap();
    assert!(!s.deleted);
    assert_eq!(s.versions.last().unwrap().as_bytes(), pass.expose());
    assert_eq!(kms.get("az", &v).await.unwrap(), pass);
    let recover = az
        .vault_requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect::<Vec<_>>();
    assert_eq!(recover.len(), 1);
    assert_eq!(
        recover[0].path,
        format!("/deletedsecrets/{v}/recover?api-version=7.4")
    );
    // Without the recover permission, the error says which one is missing.
    az.leave_soft_deleted("pvc-no-recover", "old");
    az.set_permissions(&["get", "set", "delete"]);
    let e = kms
        .put("az", &key("pvc-no-recover"), &pass)
        .await
        .unwrap_err();
    assert!(matches!(e, KmsError::Denied { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("recover") && text.contains("AccessDenied"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn throttling_is_retried_once_and_outages_are_unavailable() {
    let az = FakeAzure::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kms = kms_for(dir.path(), &az);
    let v = key("pvc-busy");
    let pass = generate_passphrase();
    kms.put("az", &v, &pass).await.unwrap();
    az.throttle(1);
    assert_eq!(kms.get("az", &v).await.unwrap(), pass);
    az.throttle(2);
    let e = kms.get("az", &v).await.unwrap_err();
    assert!(matches!(e, KmsError::Unavailable { .. }), "{e:?}");
    assert!(e.is_retryable() && e.to_string().contains("429"), "{e}");
    az.outage(1);
    assert_eq!(kms.get("az", &v).await.unwrap(), pass, "one 503 is retried");
    az.outage(2);
    let e = kms.get("az", &v).await.unwrap_err();
    assert!(e.is_retryable() && e.to_string().contains("503"), "{e}");
    assert_eq!(kms.get("az", &v).await.unwrap(), pass, "recovered");
}

/// An app without the secret permissions is denied with what to grant.
#[tokio::test(flavor = "multi_thread")]
async fn missing_permissions_are_denied_with_what_to_grant() {
    let az = FakeAzure::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kms = kms_for(dir.path(), &az);
    az.set_permissions(&["get"]);
    let e = kms
        .put("az", &key("pvc-ro"), &generate_passphrase())
        .await
        .unwrap_err();
    assert!(matches!(e, KmsError::Denied { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("403") && text.contains("Secrets Officer"),
        "{text}"
    );
    assert!(!e.is_retryable());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_configuration_names_the_option() {
    let az = FakeAzure::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cases = vec![];
    for (option, value) in [
        ("AZURE_VAULT_URL", None),
        ("AZURE_CLIENT_ID", None),
        ("AZURE_TENANT_ID", Some("not a tenant")),
        ("AZURE_ASSERTION_ALGORITHM", Some("HS256")),
        ("AZURE_API_VERSION", Some("latest")),
        ("AZURE_TIMEOUT_SECONDS", Some("0")),
    ] {
        let mut e = entry(&az);
        let o = e.as_object_mut().unwrap();
        match value {
            None => drop(o.remove(option)),
            Some(v) => drop(o.insert(option.into(), v.into())),
        }
        cases.push((option, e));
    }
    let config: serde_json::Map<String, Value> = cases
        .iter()
        .map(|(o, e)| (o.to_lowercase().replace('_', "-"), e.clone()))
        .collect();
    let kms = common::kms(&Value::Object(config), dir.path(), None);
    for (option, _) in &cases {
        let id = option.to_lowercase().replace('_', "-");
        match kms.validate(&id).await.unwrap_err() {
            KmsError::InvalidConfig { option: o, .. } => assert_eq!(o, *option, "{id}"),
            e => panic!("{id}: {e:?}"),
        }
    }
    assert!(az.entra_requests().is_empty() && az.vault_requests().is_empty());
}

/// What the host takes as `CLIENT_CERT`: a PEM certificate with its
/// unencrypted RSA key (PKCS#8 or PKCS#1, either order), nothing else.
#[test]
fn the_certificate_pems_the_host_signs_with() {
    let c = cert();
    let other = TestCert::rsa(2048);
    let ec = TestCert::ec();
    let pem = |s: String| SecretBytes::new(s.into_bytes());
    for good in [
        c.client_cert(),
        format!("{}{}", c.key_pem, c.cert_pem),
        format!("{}{}", c.cert_pem, c.key_pkcs1()),
        format!("{}{}{}", c.cert_pem, other.cert_pem, c.key_pem),
    ] {
        let s = SigningCert::from_pem(&pem(good)).unwrap();
        assert_eq!(s.x5t(), c.x5t());
        assert_eq!(s.x5t_s256(), c.x5t_s256());
        assert_eq!(s.chain()[0], c.der);
        let dbg = format!("{s:?}");
        assert!(
            dbg.contains("REDACTED") && !dbg.contains("PRIVATE"),
            "{dbg}"
        );
    }
    let bad = [
        (c.key_pem.clone(), SigningError::NoCertificate),
        (c.cert_pem.clone(), SigningError::NoKey),
        (
            format!("{}{}", c.cert_pem, c.key_encrypted()),
            SigningError::EncryptedKey,
        ),
        (
            format!("{}{}", c.cert_pem, other.key_pem),
            SigningError::Mismatch,
        ),
    ];
    for (text, want) in bad {
        assert_eq!(SigningCert::from_pem(&pem(text)).unwrap_err(), want);
    }
    let e = SigningCert::from_pem(&pem(ec.client_cert())).unwrap_err();
    assert!(matches!(e, SigningError::NotRsa(_)), "{e:?}");
    let small = TestCert::rsa(1024);
    let e = SigningCert::from_pem(&pem(small.client_cert())).unwrap_err();
    assert!(matches!(e, SigningError::NotRsa(_)), "{e:?}");
    // Signatures verify under the certificate (both algorithms).
    let s = SigningCert::from_pem(&pem(c.client_cert())).unwrap();
    let der = rustls::pki_types::CertificateDer::from(c.der.clone());
    let ee = webpki::EndEntityCert::try_from(&der).unwrap();
    use kmshost::capability::signing::Algorithm;
    for (alg, v) in [
        (Algorithm::Rs256, webpki::ring::RSA_PKCS1_2048_8192_SHA256),
        (
            Algorithm::Ps256,
            webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        ),
    ] {
        let sig = s.sign(alg, b"header.claims").unwrap();
        ee.verify_signature(v, b"header.claims", &sig).unwrap();
        assert!(ee.verify_signature(v, b"header.other", &sig).is_err());
    }
}

/// The CSI driver with an `azure-kv` kmsID (formatting at the first
/// NodeStage; activation needs device-mapper, which the QEMU guest has):
/// the passphrase is a Key Vault secret named after the volume, LUKS
/// rotation replaces it, and DeleteVolume soft-deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csi_lifecycle_with_an_azure_kv_kms_id() {
    use common::csi::{CsiHarness, metadata_config, mount_cap};
    use kmshost::luks;
    use kmshost::volume::KeyHolding;
    const MIB: i64 = 1 << 20;
    let az = FakeAzure::start().await;
    az.register(cert());
    let mut config = metadata_config();
    config["azure"] = entry(&az);
    let h = CsiHarness::start(&config).await;
    write_cert(
        &h.secrets,
        "ceph-csi-azure-credentials",
        &cert().client_cert(),
    );
    let id = h.create_encrypted("pvc-azure", 32 * MIB, "azure").await;
    assert_eq!(h.holding(&id), KeyHolding::Stored);
    let key1 = h.passphrase(&id).await;
    let s = az
        .secret(&id)
        .expect("the secret is named after the volume ID");
    assert_eq!(s.versions.last().unwrap().as_bytes(), key1.expose());
    let staging = h.path("staging-azure");
    let e = h.stage(&id, &staging, mount_cap("")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    luks::verify(&h.image(&id), &key1).unwrap();
    h.rotate(&id).await.unwrap();
    let key2 = h.passphrase(&id).await;
    assert_ne!(key1, key2, "rotated");
    luks::verify(&h.image(&id), &key2).unwrap();
    assert!(
        luks::verify(&h.image(&id), &key1).is_err(),
        "old slot killed"
    );
    assert_eq!(
        az.secret(&id).unwrap().versions.last().unwrap().as_bytes(),
        key2.expose()
    );
    h.delete(&id).await.unwrap();
    assert!(h.record(&id).is_none());
    assert!(
        az.secret(&id).unwrap().deleted,
        "soft-deleted with its volume"
    );
    assert_eq!(az.logins(), 1, "one login for the whole lifecycle");
    h.stop().await;
}

/// The fake is as strict as the service: an assertion it would take, then
/// that assertion with each part Entra ID checks broken, each refused with
/// its AADSTS code; and the vault refuses a request without a token with
/// the challenge, and one without `api-version`.
#[tokio::test(flavor = "multi_thread")]
async fn the_fake_refuses_what_the_service_refuses() {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
    use kmshost::capability::signing::Algorithm;
    let az = FakeAzure::start().await;
    az.register(cert());
    let signer =
        SigningCert::from_pem(&SecretBytes::new(cert().client_cert().into_bytes())).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let jwt = |header: Value, claims: Value, tamper: bool| {
        let input = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let mut sig = signer.sign(Algorithm::Rs256, input.as_bytes()).unwrap();
        if tamper {
            sig[0] ^= 1;
        }
        format!("{input}.{}", B64URL.encode(sig))
    };
    let header = json!({"alg": "RS256", "typ": "JWT", "x5t": cert().x5t()});
    let claims = |jti: &str| {
        json!({"aud": az.token_url(), "iss": CLIENT_ID, "sub": CLIENT_ID, "jti": jti,
               "nbf": now, "exp": now + 600})
    };
    let login = |assertion: String, scope: &str| {
        let body = format!(
            "grant_type=client_credentials&client_id={CLIENT_ID}&scope={scope}&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={assertion}"
        );
        let url = az.token_url();
        async move {
            let (status, body) = common::http::request(
                "POST",
                &url,
                &[("content-type", "application/x-www-form-urlencoded")],
                Some(body.into_bytes()),
            )
            .await
            .unwrap();
            (status, String::from_utf8(body).unwrap())
        }
    };
    let scope = "https%3A%2F%2Fvault.azure.net%2F.default";
    let (status, body) = login(jwt(header.clone(), claims("j-1"), false), scope).await;
    assert_eq!(status, 200, "{body}");
    let token: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(token["token_type"], "Bearer");
    let mut wrong_aud = claims("j-3");
    wrong_aud["aud"] = "https://login.microsoftonline.com/common/oauth2/v2.0/token".into();
    let mut wrong_iss = claims("j-4");
    wrong_iss["iss"] = "someone-else".into();
    let mut expired = claims("j-5");
    expired["exp"] = (now - 10).into();
    let mut unknown = header.clone();
    unknown["x5t"] = TestCert::rsa(2048).x5t().into();
    let refusals = [
        (
            jwt(header.clone(), claims("j-1"), false),
            scope,
            "AADSTS50027",
        ), // jti replayed
        (
            jwt(header.clone(), claims("j-2"), true),
            scope,
            "AADSTS700027",
        ), // signature
        (jwt(header.clone(), wrong_aud, false), scope, "AADSTS700212"),
        (jwt(header.clone(), wrong_iss, false), scope, "AADSTS700021"),
        (jwt(header.clone(), expired, false), scope, "AADSTS700024"),
        (jwt(unknown, claims("j-6"), false), scope, "AADSTS700027"),
        (
            jwt(header.clone(), claims("j-7"), false),
            "https%3A%2F%2Fgraph.microsoft.com%2F.default",
            "AADSTS70011",
        ),
    ];
    for (assertion, scope, code) in refusals {
        let (status, body) = login(assertion, scope).await;
        assert!(matches!(status, 400 | 401), "{code}: {status} {body}");
        let e: Value = serde_json::from_str(&body).unwrap();
        assert!(
            e["error_description"].as_str().unwrap().starts_with(code),
            "{code}: {body}"
        );
    }
    assert_eq!((az.logins(), az.refused_logins()), (1, 7));
    // The vault: no token → the challenge; no api-version → BadParameter.
    let url = format!("{}/secrets/x?api-version=7.4", az.vault_url());
    let (status, body) = common::http::request("GET", &url, &[], None).await.unwrap();
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    assert_eq!(az.vault_requests().len(), 1);
    let bearer = format!("Bearer {}", token["access_token"].as_str().unwrap());
    let url = format!("{}/secrets/x", az.vault_url());
    let (status, body) = common::http::request("GET", &url, &[("authorization", &bearer)], None)
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("api-version"));
}

/// Rook's `connectionDetails` (`KMS_PROVIDER: azure-kv`, the same option
/// names) reach the same plugin and the same secrets.
#[tokio::test(flavor = "multi_thread")]
async fn rook_connection_details_work_the_same() {
    let az = FakeAzure::start().await;
    let dir = tempfile::tempdir().unwrap();
    az.register(cert());
    write_cert(dir.path(), "rook-azure", &cert().client_cert());
    let mut rook = entry(&az);
    let o = rook.as_object_mut().unwrap();
    o.remove("encryptionKMSType");
    o.insert("KMS_PROVIDER".into(), "azure-kv".into());
    o.insert("AZURE_CERT_SECRET_NAME".into(), "rook-azure".into());
    let kms = common::kms(&json!({"rook": rook}), dir.path(), None);
    let v = key("rook-ceph-osd-encryption-key-set1-data-0");
    let pass = generate_passphrase();
    kms.put("rook", &v, &pass).await.unwrap();
    assert_eq!(kms.get("rook", &v).await.unwrap(), pass);
    assert!(az.secret(v.as_str()).is_some());
}
