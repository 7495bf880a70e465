//! The `vault` plugin against a real OpenBao dev server: KV v1 and v2 with
//! ceph-csi's layout, destroy vs soft delete, token and Kubernetes auth
//! (through a fake TokenReview endpoint in test code), permissions, outages.

mod common;

use base64::Engine as _;
use common::http::{Recorded, Reply, TestServer};
use common::openbao::{OpenBao, require_bao};
use kmshost::config::HostDefaults;
use kmshost::kms::{KeyId, Kms, KmsError, generate_passphrase};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;

fn key(s: &str) -> KeyId {
    KeyId::new(s).unwrap()
}

/// A kmsID `v` of `entry` against `bao`, with a token Secret `vault-token`.
fn vault_kms(dir: &Path, entry: serde_json::Value, token: &str) -> Kms {
    common::write_secret(dir, "vault-token", &[("token", token.as_bytes())]);
    common::kms(&json!({ "v": entry }), dir, None)
}

#[cfg_attr(peers_missing, ignore = "needs OpenBao: scripts/test.sh installs it")]
#[tokio::test(flavor = "multi_thread")]
async fn kv_v2_round_trip_in_ceph_csi_layout_and_destroy() {
    let Some(bin) = require_bao("kv_v2_round_trip") else {
        return;
    };
    let bao = OpenBao::start(bin).await;
    let dir = tempfile::tempdir().unwrap();
    let kms = vault_kms(
        dir.path(),
        json!({"encryptionKMSType": "vault", "vaultAddress": bao.addr, "vaultBackendPath": "secret/",
               "vaultPassphrasePath": "ceph-csi/", "tokenSecretName": "vault-token"}),
        "root",
    );
    let v = key("0001-0009-rook-ceph-0000000000000002-abcd");
    let dek = generate_passphrase();
    kms.put("v", &v, &dek).await.unwrap();
    // Stored where and how ceph-csi stores it.
    let stored = bao
        .ok("GET", &format!("/v1/secret/data/ceph-csi/{v}"), None)
        .await;
    assert_eq!(
        stored["data"]["data"]["data"]["passphrase"]
            .as_str()
            .unwrap()
            .as_bytes(),
        dek.expose(),
        "{stored}"
    );
    assert_eq!(kms.get("v", &v).await.unwrap(), dek);
    // Overwrite keeps one key, new value.
    let dek2 = generate_passphrase();
    kms.put("v", &v, &dek2).await.unwrap();
    assert_eq!(kms.get("v", &v).await.unwrap(), dek2);
    // Delete destroys every version (vaultDestroyKeys defaults to true).
    kms.delete("v", &v).await.unwrap();
    let (s, _) = bao
        .api(
            "GET",
            &format!("/v1/secret/metadata/ceph-csi/{v}"),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(s, 404, "metadata survived a destroying delete");
    assert!(matches!(
        kms.get("v", &v).await,
        Err(KmsError::NotFound { .. })
    ));
    kms.delete("v", &v).await.unwrap(); // idempotent
}

#[cfg_attr(peers_missing, ignore = "needs OpenBao: scripts/test.sh installs it")]
#[tokio::test(flavor = "multi_thread")]
async fn kv_v2_soft_delete_when_destroy_is_off() {
    let Some(bin) = require_bao("kv_v2_soft_delete") else {
        return;
    };
    let bao = OpenBao::start(bin).await;
    let dir = tempfile::tempdir().unwrap();
    let kms = vault_kms(
        dir.path(),
        json!({"encryptionKMSType": "vaulttokens", "vaultAddress": bao.addr, "vaultBackendPath": "secret/",
               "vaultDestroyKeys": "false", "tokenSecretName": "vault-token"}),
        "root",
    );
    let v = key("pvc-soft");
    kms.put("v", &v, &generate_passphrase()).await.unwrap();
    kms.delete("v", &v).await.unwrap();
    assert!(matches!(
        kms.get("v", &v).await,
        Err(KmsError::NotFound { .. })
    ));
    let meta = bao
        .ok("GET", &format!("/v1/secret/metadata/{v}"), None)
        .await;
    assert!(
        meta["data"]["versions"]["1"]["deletion_time"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{meta}"
    );
}

#[cfg_attr(peers_missing, ignore = "needs OpenBao: scripts/test.sh installs it")]
#[tokio::test(flavor = "multi_thread")]
async fn kv_v1_round_trip_with_rook_names() {
    let Some(bin) = require_bao("kv_v1_round_trip") else {
        return;
    };
    let bao = OpenBao::start(bin).await;
    bao.ok(
        "POST",
        "/v1/sys/mounts/rook",
        Some(json!({"type": "kv", "options": {"version": "1"}})),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let kms = vault_kms(
        dir.path(),
        json!({"KMS_PROVIDER": "vault", "VAULT_ADDR": bao.addr, "VAULT_BACKEND_PATH": "rook",
               "VAULT_BACKEND": "v1", "VAULT_SECRET_ENGINE": "kv", "VAULT_AUTH_METHOD": "token",
               "tokenSecretName": "vault-token"}),
        "root",
    );
    let v = key("pvc-v1");
    let dek = generate_passphrase();
    kms.put("v", &v, &dek).await.unwrap();
    let stored = bao.ok("GET", &format!("/v1/rook/{v}"), None).await;
    assert_eq!(
        stored["data"]["data"]["passphrase"]
            .as_str()
            .unwrap()
            .as_bytes(),
        dek.expose()
    );
    assert_eq!(kms.get("v", &v).await.unwrap(), dek);
    kms.delete("v", &v).await.unwrap();
    assert!(matches!(
        kms.get("v", &v).await,
        Err(KmsError::NotFound { .. })
    ));
}

#[cfg_attr(peers_missing, ignore = "needs OpenBao: scripts/test.sh installs it")]
#[tokio::test(flavor = "multi_thread")]
async fn token_without_permission_is_denied_and_never_printed() {
    let Some(bin) = require_bao("token_without_permission") else {
        return;
    };
    let bao = OpenBao::start(bin).await;
    bao.ok(
        "PUT",
        "/v1/sys/policies/acl/read-only",
        Some(json!({"policy": "path \"secret/data/*\" { capabilities = [\"read\"] }"})),
    )
    .await;
    let t = bao
        .ok(
            "POST",
            "/v1/auth/token/create",
            Some(json!({"policies": ["read-only"]})),
        )
        .await;
    let token = t["auth"]["client_token"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let kms = vault_kms(
        dir.path(),
        json!({"encryptionKMSType": "vault", "vaultAddress": bao.addr, "tokenSecretName": "vault-token"}),
        &token,
    );
    let err = kms
        .put("v", &key("pvc-1"), &generate_passphrase())
        .await
        .unwrap_err();
    assert!(matches!(err, KmsError::Denied { .. }), "{err}");
    assert!(!err.is_retryable());
    let text = format!("{err} {err:?}");
    assert!(!text.contains(&token), "token leaked: {text}");
    // A bad token altogether: denied too.
    let kms = vault_kms(
        dir.path(),
        json!({"encryptionKMSType": "vault", "vaultAddress": bao.addr, "tokenSecretName": "vault-token"}),
        "s.not-a-token",
    );
    assert!(matches!(
        kms.get("v", &key("pvc-1")).await,
        Err(KmsError::Denied { .. })
    ));
}

#[cfg_attr(peers_missing, ignore = "needs OpenBao: scripts/test.sh installs it")]
#[tokio::test(flavor = "multi_thread")]
async fn outage_is_unavailable_then_recovers() {
    let Some(bin) = require_bao("outage") else {
        return;
    };
    let mut bao = OpenBao::start(bin).await;
    let dir = tempfile::tempdir().unwrap();
    let kms = vault_kms(
        dir.path(),
        json!({"encryptionKMSType": "vault", "vaultAddress": bao.addr, "tokenSecretName": "vault-token",
               "kmshostTimeoutMs": "5000"}),
        "root",
    );
    let v = key("pvc-outage");
    kms.put("v", &v, &generate_passphrase()).await.unwrap();
    bao.stop();
    let err = kms.get("v", &v).await.unwrap_err();
    assert!(matches!(err, KmsError::Unavailable { .. }), "{err}");
    assert!(err.is_retryable());
    bao.restart().await; // dev storage is in memory: the key is gone
    assert!(matches!(
        kms.get("v", &v).await,
        Err(KmsError::NotFound { .. })
    ));
    let dek = generate_passphrase();
    kms.put("v", &v, &dek).await.unwrap();
    assert_eq!(kms.get("v", &v).await.unwrap(), dek);
}

/// A fake kube-apiserver TokenReview endpoint (test code only), following
/// `authentication.k8s.io/v1`: it authenticates `sa_jwt` as
/// system:serviceaccount:kmshost:kmshost.
fn token_review(reviewer: &'static str, sa_jwt: String) -> common::http::Handler {
    Arc::new(move |r: &Recorded| {
        if r.method != "POST" || r.path != "/apis/authentication.k8s.io/v1/tokenreviews" {
            return Reply::json(404, json!({"kind": "Status", "code": 404}));
        }
        if r.header("authorization") != Some(&format!("Bearer {reviewer}")) {
            return Reply::json(401, json!({"kind": "Status", "code": 401}));
        }
        let review: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        let ok = review["spec"]["token"].as_str() == Some(sa_jwt.as_str());
        Reply::json(
            201,
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                   "status": {"authenticated": ok,
                              "user": {"username": "system:serviceaccount:kmshost:kmshost", "uid": "uid-1",
                                       "groups": ["system:serviceaccounts", "system:serviceaccounts:kmshost"]}}}),
        )
    })
}

fn service_account_jwt() -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = b64.encode(json!({"alg": "RS256", "typ": "JWT"}).to_string());
    let claims = b64.encode(
        json!({"iss": "kubernetes/serviceaccount", "sub": "system:serviceaccount:kmshost:kmshost",
               "iat": now, "nbf": now, "exp": now + 3600,
               "kubernetes.io/serviceaccount/namespace": "kmshost",
               "kubernetes.io/serviceaccount/service-account.name": "kmshost",
               "kubernetes.io/serviceaccount/service-account.uid": "uid-1",
               "kubernetes.io/serviceaccount/secret.name": "kmshost-token"})
        .to_string(),
    );
    format!(
        "{header}.{claims}.{}",
        b64.encode(b"not-checked-by-openbao")
    )
}

/// Enables OpenBao's Kubernetes auth against `apiserver` (which reviews
/// tokens with the reviewer JWT `reviewer-jwt`) and binds the role
/// `csi-kubernetes` to the service account `namespace/sa`, with a policy
/// `policy` allowing read and write on `secret/*`.
async fn kubernetes_auth(bao: &OpenBao, apiserver: &str, namespace: &str, sa: &str, policy: &str) {
    let pki = common::http::test_pki();
    bao.ok(
        "POST",
        "/v1/sys/auth/kubernetes",
        Some(json!({"type": "kubernetes"})),
    )
    .await;
    bao.ok(
        "POST",
        "/v1/auth/kubernetes/config",
        Some(
            json!({"kubernetes_host": apiserver, "kubernetes_ca_cert": pki.ca_pem,
                    "token_reviewer_jwt": "reviewer-jwt", "disable_local_ca_jwt": true}),
        ),
    )
    .await;
    bao.ok(
        "PUT",
        &format!("/v1/sys/policies/acl/{policy}"),
        Some(json!({"policy": "path \"secret/*\" { capabilities = [\"create\", \"read\", \"update\", \"delete\"] }"})),
    )
    .await;
    bao.ok(
        "POST",
        "/v1/auth/kubernetes/role/csi-kubernetes",
        Some(json!({"bound_service_account_names": [sa], "bound_service_account_namespaces": [namespace],
                    "token_policies": [policy], "ttl": "1h"})),
    )
    .await;
}

#[cfg_attr(peers_missing, ignore = "needs OpenBao: scripts/test.sh installs it")]
#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_auth_logs_in_once_for_many_operations() {
    let Some(bin) = require_bao("kubernetes_auth") else {
        return;
    };
    let bao = OpenBao::start(bin).await;
    let jwt = service_account_jwt();
    let apiserver =
        TestServer::start("127.0.0.1:0", token_review("reviewer-jwt", jwt.clone())).await;
    kubernetes_auth(&bao, &apiserver.url(), "kmshost", "kmshost", "kmshost").await;

    let dir = tempfile::tempdir().unwrap();
    let sa_token = dir.path().join("sa-token");
    std::fs::write(&sa_token, &jwt).unwrap();
    // ceph-csi's `vault` type: Kubernetes auth with the default path and role.
    let kms = common::kms_with_defaults(
        &json!({"v": {"encryptionKMSType": "vault", "vaultAddress": bao.addr, "vaultBackendPath": "secret/"}}),
        dir.path(),
        Some(&sa_token),
        HostDefaults::default(),
    );
    let dek = generate_passphrase();
    for i in 0..100 {
        let v = key(&format!("pvc-{i}"));
        match i % 3 {
            0 => kms.put("v", &v, &dek).await.unwrap(),
            1 => assert!(kms.get("v", &key(&format!("pvc-{}", i - 1))).await.is_ok()),
            _ => kms
                .delete("v", &key(&format!("pvc-{}", i - 2)))
                .await
                .unwrap(),
        }
    }
    let reviews = apiserver.count();
    assert_eq!(reviews, 1, "100 operations caused {reviews} logins");

    // A revoked token is replaced by one new login, transparently. Every
    // token the Kubernetes auth mount issued is revoked (the host's cached
    // one among them: the test never reads it out of the host).
    let revoke_logins = async || {
        bao.ok(
            "PUT",
            "/v1/sys/leases/revoke-prefix/auth/kubernetes/login",
            None,
        )
        .await;
    };
    revoke_logins().await;
    kms.put("v", &key("pvc-after-revoke"), &dek).await.unwrap();
    assert_eq!(apiserver.count(), 2);

    // A service-account token the API server does not accept: denied.
    std::fs::write(&sa_token, service_account_jwt().replace('.', ".x")).unwrap();
    revoke_logins().await;
    let err = kms.get("v", &key("pvc-after-revoke")).await.unwrap_err();
    assert!(matches!(err, KmsError::Denied { .. }), "{err}");
}

#[cfg_attr(peers_missing, ignore = "needs OpenBao: scripts/test.sh installs it")]
#[tokio::test(flavor = "multi_thread")]
async fn tls_with_the_kms_id_ca_wrong_ca_and_skip_verify() {
    let Some(bin) = require_bao("tls") else {
        return;
    };
    let bao = OpenBao::start_tls(bin).await;
    let dir = tempfile::tempdir().unwrap();
    common::write_secret(dir.path(), "vault-ca", &[("cert", &bao.ca_pem().unwrap())]);
    let other_ca = common::http::test_pki().ca_pem;
    common::write_secret(dir.path(), "other-ca", &[("cert", other_ca.as_bytes())]);
    let entry = |extra: serde_json::Value| {
        let mut e = json!({"encryptionKMSType": "vault", "vaultAddress": bao.addr, "tokenSecretName": "vault-token"});
        for (k, v) in extra.as_object().unwrap() {
            e[k] = v.clone();
        }
        e
    };
    let v = key("pvc-tls");
    let dek = generate_passphrase();

    // The kmsID's CA (vaultCAFromSecret, key `cert`): verified, works.
    let kms = vault_kms(
        dir.path(),
        entry(json!({"vaultCAFromSecret": "vault-ca"})),
        "root",
    );
    kms.put("v", &v, &dek).await.unwrap();
    assert_eq!(kms.get("v", &v).await.unwrap(), dek);

    // Another CA (Rook's VAULT_CACERT spelling), or none: refused.
    for extra in [json!({"VAULT_CACERT": "other-ca"}), json!({})] {
        let kms = vault_kms(dir.path(), entry(extra.clone()), "root");
        let err = kms.get("v", &v).await.unwrap_err();
        assert!(
            matches!(err, KmsError::Denied { .. }) && err.to_string().contains("TLS"),
            "{extra}: {err}"
        );
        assert!(!err.is_retryable());
    }

    // Verification off, only because the admin said so.
    let kms = vault_kms(dir.path(), entry(json!({"vaultCAVerify": "false"})), "root");
    assert_eq!(kms.get("v", &v).await.unwrap(), dek);
}

#[cfg_attr(peers_missing, ignore = "needs OpenBao: scripts/test.sh installs it")]
#[tokio::test(flavor = "multi_thread")]
async fn transit_wrap_unwrap_rotate_rewrap() {
    let Some(bin) = require_bao("transit") else {
        return;
    };
    let bao = OpenBao::start(bin).await;
    bao.ok(
        "POST",
        "/v1/sys/mounts/transit",
        Some(json!({"type": "transit"})),
    )
    .await;
    bao.ok(
        "POST",
        "/v1/transit/keys/volumes",
        Some(json!({"derived": true})),
    )
    .await;
    bao.ok("POST", "/v1/transit/keys/not-derived", Some(json!({})))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let kms = vault_kms(
        dir.path(),
        json!({"encryptionKMSType": "vault", "vaultAddress": bao.addr, "tokenSecretName": "vault-token",
               "vaultTransitKey": "volumes"}),
        "root",
    );
    let v = key("pvc-transit");
    let dek = generate_passphrase();
    let w1 = kms.wrap("v", &v, &dek).await.unwrap();
    assert!(w1.as_bytes().starts_with(b"vault:v1:"), "{w1:?}");
    assert_eq!(kms.unwrap("v", &v, &w1).await.unwrap(), dek);
    // Bound to the volume.
    let err = kms.unwrap("v", &key("pvc-other"), &w1).await.unwrap_err();
    assert!(matches!(err, KmsError::Integrity { .. }), "{err}");
    assert!(!err.is_retryable());

    // A key rotation keeps old blobs working; rewrap moves them forward.
    bao.ok("POST", "/v1/transit/keys/volumes/rotate", None)
        .await;
    assert_eq!(kms.unwrap("v", &v, &w1).await.unwrap(), dek);
    let w2 = kms.rewrap("v", &v, &w1).await.unwrap();
    assert!(w2.as_bytes().starts_with(b"vault:v2:"), "{w2:?}");
    assert_eq!(kms.unwrap("v", &v, &w2).await.unwrap(), dek);
    // Once the old version is retired, only the rewrapped blob opens.
    bao.ok(
        "POST",
        "/v1/transit/keys/volumes/config",
        Some(json!({"min_decryption_version": 2})),
    )
    .await;
    assert!(kms.unwrap("v", &v, &w1).await.is_err());
    assert_eq!(kms.unwrap("v", &v, &w2).await.unwrap(), dek);

    // A key that cannot bind the volume is a configuration error.
    let kms = vault_kms(
        dir.path(),
        json!({"encryptionKMSType": "vault", "vaultAddress": bao.addr, "tokenSecretName": "vault-token",
               "vaultTransitKey": "not-derived"}),
        "root",
    );
    match kms.wrap("v", &v, &dek).await.unwrap_err() {
        KmsError::InvalidConfig {
            option, message, ..
        } => {
            assert_eq!(option, "vaultTransitKey");
            assert!(message.contains("derived=true"), "{message}");
        }
        e => panic!("{e}"),
    }
    // Without a Transit key, wrap is unsupported (the KV store still works).
    let kms = vault_kms(
        dir.path(),
        json!({"encryptionKMSType": "vault", "vaultAddress": bao.addr, "tokenSecretName": "vault-token"}),
        "root",
    );
    assert!(matches!(
        kms.wrap("v", &v, &dek).await,
        Err(KmsError::Unsupported { .. })
    ));
}

#[cfg_attr(peers_missing, ignore = "needs OpenBao: scripts/test.sh installs it")]
#[tokio::test(flavor = "multi_thread")]
async fn sealed_vault_is_unavailable_and_says_so() {
    let Some(bin) = require_bao("sealed") else {
        return;
    };
    let bao = OpenBao::start(bin).await;
    let dir = tempfile::tempdir().unwrap();
    let kms = vault_kms(
        dir.path(),
        json!({"encryptionKMSType": "vault", "vaultAddress": bao.addr, "tokenSecretName": "vault-token"}),
        "root",
    );
    let v = key("pvc-sealed");
    kms.put("v", &v, &generate_passphrase()).await.unwrap();
    bao.ok("PUT", "/v1/sys/seal", None).await;
    let err = kms.get("v", &v).await.unwrap_err();
    assert!(matches!(err, KmsError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("Vault is sealed"), "{err}");
    assert!(err.is_retryable());
}

/// A JWT for service account `ns/name` (OpenBao reads its claims; the fake
/// API server's TokenReview vouches for it).
fn tenant_jwt(ns: &str, name: &str) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = b64.encode(json!({"alg": "RS256", "typ": "JWT"}).to_string());
    let claims = b64.encode(
        json!({"iss": "kubernetes/serviceaccount", "sub": format!("system:serviceaccount:{ns}:{name}"),
               "iat": now, "nbf": now, "exp": now + 3600,
               "kubernetes.io/serviceaccount/namespace": ns,
               "kubernetes.io/serviceaccount/service-account.name": name,
               "kubernetes.io/serviceaccount/service-account.uid": format!("uid-{ns}")})
        .to_string(),
    );
    format!(
        "{header}.{claims}.{}",
        b64.encode(b"not-checked-by-openbao")
    )
}

/// Long by design: one scenario end to end, each step checked where it happens.
#[cfg_attr(peers_missing, ignore = "needs OpenBao: scripts/test.sh installs it")]
#[tokio::test(flavor = "multi_thread")]
async fn vaulttenantsa_logs_in_as_the_tenants_service_account() {
    let Some(bin) = require_bao("vaulttenantsa") else {
        return;
    };
    let bao = OpenBao::start(bin).await;
    let team_a = tenant_jwt("team-a", "ceph-csi-vault-sa");
    // A fake kube-apiserver: TokenRequest for team-a's service account, and
    // TokenReview for OpenBao.
    let issued = team_a.clone();
    let apiserver = TestServer::start(
        "127.0.0.1:0",
        Arc::new(move |r: &Recorded| {
            match (r.method.as_str(), r.path.as_str()) {
                ("POST", "/api/v1/namespaces/team-a/serviceaccounts/ceph-csi-vault-sa/token") => {
                    if r.header("authorization") != Some("Bearer driver-token") {
                        return Reply::json(401, json!({"kind": "Status", "code": 401}));
                    }
                    let req: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
                    assert_eq!(req["kind"], "TokenRequest");
                    Reply::json(201, json!({"kind": "TokenRequest", "status": {"token": issued}}))
                }
                ("POST", "/apis/authentication.k8s.io/v1/tokenreviews") => {
                    let review: serde_json::Value =
                        serde_json::from_slice(&r.body).unwrap_or_default();
                    let ok = review["spec"]["token"].as_str() == Some(issued.as_str());
                    Reply::json(
                        201,
                        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                               "status": {"authenticated": ok,
                                          "user": {"username": "system:serviceaccount:team-a:ceph-csi-vault-sa",
                                                   "uid": "uid-team-a",
                                                   "groups": ["system:serviceaccounts"]}}}),
                    )
                }
                _ => Reply::json(404, json!({"kind": "Status", "code": 404})),
            }
        }),
    )
    .await;
    kubernetes_auth(
        &bao,
        &apiserver.url(),
        "team-a",
        "ceph-csi-vault-sa",
        "team-a",
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("driver-token"), "driver-token").unwrap();
    let api = Arc::new(
        kmshost::secrets::KubeApi::new(
            &apiserver.url(),
            dir.path().join("driver-token"),
            None,
            "kmshost",
        )
        .unwrap(),
    );
    let kms = Kms::new(
        kmshost::config::ConfigSource::from_text(
            &json!({"sa": {"encryptionKMSType": "vaulttenantsa", "vaultAddress": bao.addr,
                           "vaultBackendPath": "secret/"}})
            .to_string(),
            HostDefaults::default(),
        )
        .unwrap(),
        common::sandbox(),
        Arc::new(kmshost::secrets::ChainedSecrets::new().with(Arc::new(
            kmshost::secrets::KubeServiceAccountTokens::new(api),
        ))),
    );
    let dek = generate_passphrase();
    let a = kms.tenant(Some("team-a"));
    a.put("sa", &key("pvc-team-a"), &dek).await.unwrap();
    assert_eq!(a.get("sa", &key("pvc-team-a")).await.unwrap(), dek);
    let requests = apiserver.requests.lock().unwrap().clone();
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.path.ends_with("/serviceaccounts/ceph-csi-vault-sa/token"))
            .count(),
        1,
        "one TokenRequest, one login, for both operations"
    );
    // Another tenant has no such service account: nothing is done as
    // anybody else.
    let err = kms
        .tenant(Some("team-b"))
        .put("sa", &key("pvc-team-b"), &dek)
        .await
        .unwrap_err();
    assert!(
        matches!(err, KmsError::NotFound { .. } | KmsError::Denied { .. }),
        "{err:?}"
    );
    // Without a tenant, vaulttenantsa is plain Kubernetes auth with the
    // driver's own account — which this test never granted.
    assert!(kms.get("sa", &key("pvc-team-a")).await.is_err());
}

/// Tenant ConfigMaps served from memory: a fake of the API server's
/// ConfigMap reads, for tests that need no server.
#[derive(Debug, Default)]
struct FakeTenantConfigMaps(
    std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
);

#[async_trait::async_trait]
impl kmshost::secrets::ConfigMapSource for FakeTenantConfigMaps {
    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<std::collections::BTreeMap<String, String>>, kmshost::secrets::SecretError>
    {
        Ok(self.0.get(&format!("{namespace}/{name}")).cloned())
    }
}

/// A hostile tenant points its `vaulttokens` settings at its own server and
/// has no token Secret of its own: the driver's token Secret of the same
/// name (in the driver's namespace) is never looked up for it, so the
/// tenant's server never sees it. With the tenant's own token, the same
/// server gets that one (the server is reachable: the test can fail).
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_never_receives_the_drivers_token() {
    let evil = TestServer::start(
        "127.0.0.1:0",
        Arc::new(|_: &Recorded| Reply::json(404, json!({"errors": []}))),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    common::write_secret(
        dir.path(),
        "ceph-csi-kms-token",
        &[("token", b"driver-token-never-leaves")],
    );
    let tenant_cm = [(
        "team-x/ceph-csi-kms-config".to_string(),
        [("vaultAddress".to_string(), evil.url())].into(),
    )];
    let kms = common::kms(
        &json!({"vt": {"encryptionKMSType": "vaulttokens",
                       "vaultAddress": "https://vault.internal.example:8200"}}),
        dir.path(),
        None,
    )
    .with_config_maps(Arc::new(FakeTenantConfigMaps(tenant_cm.into())));
    let team_x = kms.tenant(Some("team-x"));
    let err = team_x.get("vt", &key("pvc-1")).await.unwrap_err();
    assert!(err.to_string().contains("ceph-csi-kms-token"), "{err}");
    let seen = |token: &str| {
        evil.requests
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.header("x-vault-token") == Some(token))
    };
    assert!(!seen("driver-token-never-leaves"));

    common::write_secret(
        &dir.path().join("team-x"),
        "ceph-csi-kms-token",
        &[("token", b"team-x-token")],
    );
    let err = team_x.get("vt", &key("pvc-1")).await.unwrap_err();
    assert!(matches!(err, KmsError::NotFound { .. }), "{err}");
    assert!(seen("team-x-token"));
    assert!(!seen("driver-token-never-leaves"));
}
