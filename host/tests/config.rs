//! Configuration: ceph-csi `config.json`, the connection-details ConfigMap
//! forms, Rook `KMS_PROVIDER`, per-kmsID errors, hot reload, third-party
//! plugins and sha256 pins.

mod common;

use kmshost::config::{ConfigError, ConfigSource, HostDefaults, KmsTable, PluginSource};
use kmshost::kms::{KeyId, Kms, KmsError, generate_passphrase};
use kmshost::secrets::MountedSecrets;
use serde_json::json;
use std::sync::Arc;

include!(concat!(env!("OUT_DIR"), "/test_guests.rs"));

const CEPH_CSI_SAMPLE: &str = r#"{
    "vault-test": {
        "encryptionKMSType": "vault",
        "vaultAddress": "https://vault.example.com:8200",
        "vaultAuthPath": "/v1/auth/kubernetes/login",
        "vaultRole": "csi-kubernetes",
        "vaultPassphraseRoot": "/v1/secret",
        "vaultPassphrasePath": "ceph-csi/",
        "vaultCAVerify": "false"
    },
    "vault-tokens-test": {
        "encryptionKMSType": "vaulttokens",
        "vaultAddress": "http://vault.default.svc.cluster.local:8200",
        "vaultBackendPath": "secret/",
        "vaultTLSServerName": "vault.default.svc.cluster.local",
        "vaultCAFromSecret": "vault-ca",
        "vaultCAVerify": "true",
        "tenantConfigName": "ceph-csi-kms-config",
        "tenantTokenName": "ceph-csi-kms-token",
        "tenants": {"my-app": {"vaultAddress": "https://vault.example.com", "vaultCAVerify": "true"}}
    },
    "secrets-metadata-test": {
        "encryptionKMSType": "metadata",
        "secretName": "storage-encryption-secret",
        "secretNamespace": "ceph-csi"
    },
    "user-ns-secrets-metadata-test": {
        "encryptionKMSType": "metadata",
        "secretName": "storage-encryption-secret"
    },
    "kp-metadata-test": {
        "encryptionKMSType": "ibmkeyprotect",
        "IBM_KP_SERVICE_INSTANCE_ID": "7abef064-01dd-4237-9ea5-8b3890970be3",
        "IBM_KP_BASE_URL": "https://us-south.kms.cloud.ibm.com",
        "IBM_KP_TOKEN_URL": "https://iam.cloud.ibm.com/oidc/token",
        "IBM_KP_REGION": "us-south-2"
    },
    "azure-test": {
        "encryptionKMSType": "azure-kv",
        "AZURE_VAULT_URL": "https://vault-name.vault.azure.net",
        "AZURE_CLIENT_ID": "00000000-0000-0000-0000-000000000000",
        "AZURE_TENANT_ID": "11111111-1111-1111-1111-111111111111"
    },
    "kmip-test": {
        "encryptionKMSType": "kmip",
        "KMIP_ENDPOINT": "kmip.example.com:5696",
        "TLS_SERVER_NAME": "kmip.example.com",
        "READ_TIMEOUT": "10",
        "WRITE_TIMEOUT": "10"
    }
}"#;

#[test]
fn ceph_csi_sample_maps_types_endpoints_and_grants() {
    let t = KmsTable::parse(CEPH_CSI_SAMPLE, &HostDefaults::default()).unwrap();
    // The embedded default serves metadata.
    let m = t.get("secrets-metadata-test").unwrap();
    assert_eq!(m.plugin, PluginSource::Embedded("secret"));
    assert!(m.allow.is_empty(), "metadata needs no network");
    let g: Vec<String> = m.grants.iter().map(|s| s.to_string()).collect();
    assert_eq!(g, ["ceph-csi/storage-encryption-secret"]);
    let m = t.get("user-ns-secrets-metadata-test").unwrap();
    assert_eq!(
        m.grants.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        ["storage-encryption-secret"]
    );

    // Vault types use the embedded vault plugin.
    for id in ["vault-test", "vault-tokens-test"] {
        assert_eq!(t.get(id).unwrap().plugin, PluginSource::Embedded("vault"));
    }
    // kmip: the endpoint is a TLS-stream entry, the credentials Secret is
    // granted (the default name, as ceph-csi's), but its TLS keys are the
    // host's: it reads them, the plugin cannot; TLS_SERVER_NAME is the
    // host's too.
    let k = t.get("kmip-test").unwrap();
    assert_eq!(k.plugin, PluginSource::Embedded("kmip"));
    let allowed: Vec<String> = k.allow.entries().iter().map(|e| e.to_string()).collect();
    assert_eq!(allowed, ["tls://kmip.example.com:5696"]);
    let secret = k
        .grants
        .lookup("ceph-csi-kmip-credentials")
        .unwrap()
        .clone();
    for tls_key in ["CA_CERT", "CLIENT_CERT", "CLIENT_KEY"] {
        assert!(k.grants.is_withheld_key(&secret, tls_key), "{tls_key}");
    }
    assert!(!k.grants.is_withheld_key(&secret, "UNIQUE_IDENTIFIER"));
    assert_eq!(k.tls.client_key.as_ref().unwrap().key, "CLIENT_KEY");
    assert_eq!(k.tls.server_name.as_deref(), Some("kmip.example.com"));
    assert!(!k.plugin_options.iter().any(|(o, _)| o == "TLS_SERVER_NAME"));

    // Key Protect: the embedded plugin, both endpoints allowed, the
    // default credentials Secret granted; the region is passed on (ceph-csi
    // reads it and never uses it).
    let kp = t.get("kp-metadata-test").unwrap();
    assert_eq!(kp.plugin, PluginSource::Embedded("keyprotect"));
    let allowed: Vec<String> = kp.allow.entries().iter().map(|e| e.to_string()).collect();
    assert_eq!(
        allowed,
        [
            "https://us-south.kms.cloud.ibm.com:443",
            "https://iam.cloud.ibm.com:443"
        ]
    );
    assert_eq!(
        kp.grants.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        ["ceph-csi-kp-credentials"]
    );
    assert!(
        kp.plugin_options
            .iter()
            .any(|(o, v)| o == "IBM_KP_REGION" && v == "us-south-2")
    );

    // Azure: the embedded plugin, the vault and the login endpoint
    // allowed, ceph-csi's default certificate Secret named for signing
    // (read by the host, withheld from the plugin, never granted).
    let az = t.get("azure-test").unwrap();
    assert_eq!(az.plugin, PluginSource::Embedded("azure"));
    let allowed: Vec<String> = az.allow.entries().iter().map(|e| e.to_string()).collect();
    assert!(
        allowed
            .iter()
            .any(|e| e.contains("vault-name.vault.azure.net")),
        "{allowed:?}"
    );
    assert!(
        allowed
            .iter()
            .any(|e| e.contains("login.microsoftonline.com")),
        "{allowed:?}"
    );
    assert_eq!(az.signing.len(), 1);
    assert_eq!(az.signing[0].name, "ceph-csi-azure-credentials");
    assert_eq!(az.signing[0].cert.key, "CLIENT_CERT");
    assert!(az.grants.lookup("ceph-csi-azure-credentials").is_none());
    assert!(
        az.plugin_options
            .iter()
            .any(|(o, v)| o == "AZURE_CERT_SECRET_NAME" && v == "ceph-csi-azure-credentials")
    );
}

#[test]
fn first_party_types_from_plugin_dir_get_endpoint_allow_lists_and_grants() {
    // With a plugin directory holding vault.wasm and plugins declaring
    // ceph-csi's Key Protect and Azure options, the same sample yields the
    // allow-lists and grants their manifests declare.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vault.wasm"), kmshost::plugins::VAULT_WASM).unwrap();
    let guest = std::fs::read(TRAPPER).unwrap();
    let endpoint = |name: &str, default: Option<&str>| json!({"name": name, "kind": "endpoint", "default": default});
    let keyprotect = json!({
        "manifest": 1, "contract": "0.1.4", "name": "keyprotect",
        "types": {"ibmkeyprotect": {"capabilities": ["wrap"]}},
        "options": [
            {"name": "IBM_KP_SERVICE_INSTANCE_ID", "kind": "plain"},
            {"name": "IBM_KP_SECRET_NAME", "kind": "secret", "default": "ceph-csi-kp-credentials"},
            endpoint("IBM_KP_BASE_URL", None),
            endpoint("IBM_KP_TOKEN_URL", Some("https://iam.cloud.ibm.com/oidc/token")),
            {"name": "IBM_KP_REGION", "kind": "plain"}
        ]
    });
    let azure = json!({
        "manifest": 1, "contract": "0.1.4", "name": "azure",
        "types": {"azure-kv": {"capabilities": ["store"]}},
        "options": [
            endpoint("AZURE_VAULT_URL", None),
            {"name": "AZURE_CERT_SECRET_NAME", "kind": "signing-cert", "key": "CLIENT_CERT",
             "default": "ceph-csi-azure-credentials"},
            endpoint("AZURE_AUTHORITY_HOST", Some("https://login.microsoftonline.com")),
            {"name": "AZURE_CLIENT_ID", "kind": "plain"},
            {"name": "AZURE_TENANT_ID", "kind": "plain"}
        ]
    });
    for (name, m) in [("keyprotect", keyprotect), ("azure", azure)] {
        let bytes = common::with_manifest(&guest, &m);
        std::fs::write(dir.path().join(format!("{name}.wasm")), bytes).unwrap();
    }
    let defaults = HostDefaults {
        plugin_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let t = KmsTable::parse(CEPH_CSI_SAMPLE, &defaults).unwrap();
    let hosts = |id: &str| -> Vec<String> {
        t.get(id)
            .unwrap()
            .allow
            .entries()
            .iter()
            .map(|h| h.to_string())
            .collect()
    };
    assert_eq!(hosts("vault-test"), ["https://vault.example.com:8200"]);
    assert_eq!(
        hosts("vault-tokens-test"),
        ["http://vault.default.svc.cluster.local:8200"]
    );
    // A third-party manifest says which options name endpoints and
    // Secrets; its defaults are not granted on its word: the admin is told
    // the exact entry to add.
    let refused = |id: &str| match t.get(id).unwrap_err() {
        ConfigError::InvalidConfig {
            option, message, ..
        } => (option, message),
        e => panic!("{id}: {e}"),
    };
    let (option, message) = refused("kp-metadata-test");
    assert_eq!(option, "IBM_KP_SECRET_NAME");
    assert!(
        message.contains(r#"add "IBM_KP_SECRET_NAME": "ceph-csi-kp-credentials" to the entry"#),
        "{message}"
    );
    // A signing certificate's default is a grant too: refused the same way.
    let (option, message) = refused("azure-test");
    assert_eq!(option, "AZURE_CERT_SECRET_NAME");
    assert!(
        message
            .contains(r#"add "AZURE_CERT_SECRET_NAME": "ceph-csi-azure-credentials" to the entry"#),
        "{message}"
    );
    // Written once, in the plugin's own options, they are allowed and
    // granted: no allowedHosts, no kmshostSecrets.
    let written = json!({
        "kp": {"encryptionKMSType": "ibmkeyprotect",
               "IBM_KP_BASE_URL": "https://us-south.kms.cloud.ibm.com",
               "IBM_KP_TOKEN_URL": "https://iam.cloud.ibm.com/oidc/token",
               "IBM_KP_SECRET_NAME": "ceph-csi-kp-credentials"},
        "az": {"encryptionKMSType": "azure-kv",
               "AZURE_VAULT_URL": "https://vault-name.vault.azure.net",
               "AZURE_AUTHORITY_HOST": "https://login.microsoftonline.com",
               "AZURE_CERT_SECRET_NAME": "azure-cert"}
    });
    let t = KmsTable::parse(&written.to_string(), &defaults).unwrap();
    let hosts = |id: &str| -> Vec<String> {
        t.get(id)
            .unwrap()
            .allow
            .entries()
            .iter()
            .map(|h| h.to_string())
            .collect()
    };
    assert_eq!(
        hosts("kp"),
        [
            "https://us-south.kms.cloud.ibm.com:443",
            "https://iam.cloud.ibm.com:443"
        ]
    );
    assert_eq!(
        hosts("az"),
        [
            "https://vault-name.vault.azure.net:443",
            "https://login.microsoftonline.com:443"
        ]
    );
    let az = t.get("az").unwrap();
    assert_eq!(az.signing[0].name, "azure-cert");
    assert!(az.grants.lookup("azure-cert").is_none(), "signing only");
    let kp = t.get("kp").unwrap();
    assert_eq!(
        kp.grants.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        ["ceph-csi-kp-credentials"]
    );
    let t = KmsTable::parse(CEPH_CSI_SAMPLE, &defaults).unwrap();
    let v = t.get("vault-test").unwrap();
    assert!(v.tls.insecure_skip_verify, "vaultCAVerify=false");
    let vt = t.get("vault-tokens-test").unwrap();
    assert_eq!(
        vt.tls.server_name.as_deref(),
        Some("vault.default.svc.cluster.local")
    );
    assert_eq!(vt.tls.ca.as_ref().unwrap().secret.name, "vault-ca");
    assert_eq!(vt.tls.ca.as_ref().unwrap().key, "cert");
    // Nested objects (tenants) reach the plugin as JSON text.
    let tenants = vt
        .plugin_options
        .iter()
        .find(|(k, _)| k == "tenants")
        .unwrap();
    assert!(tenants.1.starts_with('{') && tenants.1.contains("my-app"));
}

#[test]
fn rook_connection_details_use_kms_provider() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vault.wasm"), kmshost::plugins::VAULT_WASM).unwrap();
    let defaults = HostDefaults {
        plugin_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let rook = json!({"rook-vault": {
        "KMS_PROVIDER": "vault",
        "VAULT_ADDR": "https://vault.rook.svc:8200",
        "VAULT_BACKEND_PATH": "rook",
        "VAULT_SECRET_ENGINE": "kv",
        "VAULT_AUTH_METHOD": "kubernetes",
        "VAULT_CACERT": "vault-ca-secret",
        "VAULT_SKIP_VERIFY": "false",
        "tokenSecretName": "rook-vault-token"
    }});
    let t = KmsTable::parse(&rook.to_string(), &defaults).unwrap();
    let e = t.get("rook-vault").unwrap();
    assert_eq!(e.kms_type, "vault");
    assert_eq!(
        e.allow.entries()[0].to_string(),
        "https://vault.rook.svc:8200"
    );
    let grants: Vec<String> = e.grants.iter().map(|s| s.to_string()).collect();
    assert!(
        grants.contains(&"rook-vault-token".to_string()),
        "{grants:?}"
    );
    assert!(!e.tls.insecure_skip_verify);
    assert_eq!(e.tls.ca.as_ref().unwrap().secret.name, "vault-ca-secret");
    // The plugin sees the type under the ceph-csi key and not KMS_PROVIDER.
    assert!(
        e.plugin_options
            .contains(&("encryptionKMSType".into(), "vault".into()))
    );
    assert!(!e.plugin_options.iter().any(|(k, _)| k == "KMS_PROVIDER"));
}

#[test]
fn connection_details_configmap_forms() {
    // Data values are JSON strings (the csi-kms-connection-details form).
    let cm = json!({
        "meta": "{\"encryptionKMSType\": \"metadata\", \"secretName\": \"s\"}",
        "broken": "{not json",
    });
    let t = KmsTable::parse(&cm.to_string(), &HostDefaults::default()).unwrap();
    assert_eq!(t.get("meta").unwrap().kms_type, "metadata");
    let err = t.get("broken").unwrap_err().to_string();
    assert!(
        err.contains("broken") && err.contains("not a JSON object"),
        "{err}"
    );

    // The ConfigMap mounted as a directory: one file per kmsID.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("meta"),
        r#"{"encryptionKMSType":"metadata","secretName":"s"}"#,
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("..data")).unwrap();
    let src = ConfigSource::new(dir.path(), HostDefaults::default());
    let t = src.load().unwrap();
    assert_eq!(t.get("meta").unwrap().kms_type, "metadata");
    assert!(t.get("..data").is_err());
}

#[test]
fn bad_config_names_kms_id_and_option() {
    let cases = [
        (json!({"encryptionKMSType": "metadata"}), "secretName"),
        (json!({"secretName": "x"}), "encryptionKMSType"),
        (
            json!({"encryptionKMSType": "metadata", "secretName": "Bad_Name"}),
            "secretName",
        ),
        (
            json!({"encryptionKMSType": "metadata", "secretName": "s", "kmshostMemoryLimitMiB": "lots"}),
            "kmshostMemoryLimitMiB",
        ),
        (
            json!({"encryptionKMSType": "metadata", "secretName": "s", "kmshostTimeoutMs": "0"}),
            "kmshostTimeoutMs",
        ),
        (
            json!({"encryptionKMSType": "metadata", "secretName": "s", "allowedHosts": "ftp://x"}),
            "allowedHosts",
        ),
        (
            json!({"encryptionKMSType": "metadata", "secretName": "s", "kmshostPluginSHA256": "abc"}),
            "kmshostPluginSHA256",
        ),
        (
            json!({"encryptionKMSType": "acme-hsm"}),
            "encryptionKMSType",
        ),
        (
            json!({"encryptionKMSType": "metadata", "secretName": "s", "kmshostPlugin": "/nonexistent.wasm"}),
            "kmshostPlugin",
        ),
        // A typo of a host option is the host's error, naming the typo.
        (
            json!({"encryptionKMSType": "metadata", "secretName": "s", "kmshostSecret": "x"}),
            "kmshostSecret",
        ),
    ];
    for (entry, option) in cases {
        let cfg = json!({"bad": entry.clone(), "good": {"encryptionKMSType": "metadata", "secretName": "s"}});
        let t = KmsTable::parse(&cfg.to_string(), &HostDefaults::default()).unwrap();
        match t.get("bad").unwrap_err() {
            ConfigError::InvalidConfig {
                kms_id,
                option: o,
                message,
            } => {
                assert_eq!(kms_id.as_str(), "bad");
                assert_eq!(o, option, "{entry}: {message}");
            }
            e => panic!("{entry}: {e}"),
        }
        assert!(t.get("good").is_ok(), "a bad kmsID broke a good one");
    }
    for (typo, meant) in [
        ("kmshostSecret", "kmshostSecrets"),
        ("kmshostTimeoutMS", "kmshostTimeoutMs"),
        ("kmshostMemoryLimitMB", "kmshostMemoryLimitMiB"),
        ("kmshostCaFromSecret", "kmshostCAFromSecret"),
    ] {
        let cfg = json!({"t": {"encryptionKMSType": "metadata", "secretName": "s", typo: "1"}});
        let t = KmsTable::parse(&cfg.to_string(), &HostDefaults::default()).unwrap();
        let e = t.get("t").unwrap_err().to_string();
        assert!(e.contains(&format!("did you mean {meant}?")), "{typo}: {e}");
    }
    // A file that is not JSON at all is one clear error.
    let err = KmsTable::parse("{", &HostDefaults::default()).unwrap_err();
    assert!(err.to_string().contains("not valid JSON"), "{err}");
    // Unknown kmsID.
    let t = KmsTable::parse("{}", &HostDefaults::default()).unwrap();
    assert!(matches!(t.get("nope"), Err(ConfigError::UnknownKmsId(_))));
}

#[tokio::test(flavor = "multi_thread")]
async fn config_changes_apply_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    common::write_secret(dir.path(), "kek-a", &[("encryptionPassphrase", b"aaaa")]);
    common::write_secret(dir.path(), "kek-b", &[("encryptionPassphrase", b"bbbb")]);
    let cfg = dir.path().join("config.json");
    std::fs::write(
        &cfg,
        json!({"m": {"encryptionKMSType": "metadata", "secretName": "kek-a"}}).to_string(),
    )
    .unwrap();
    let kms = Kms::new(
        ConfigSource::new(&cfg, HostDefaults::default()),
        common::sandbox(),
        Arc::new(MountedSecrets::new(dir.path())),
    );
    let v = KeyId::new("pvc-1").unwrap();
    let dek = generate_passphrase();
    let w = kms.wrap("m", &v, &dek).await.unwrap();
    let rt1 = kms.plugin_report("m", None).await.unwrap().runtime_id;
    // Same content: same runtime.
    assert_eq!(rt1, kms.plugin_report("m", None).await.unwrap().runtime_id);

    // The admin points the kmsID at another passphrase Secret.
    std::fs::write(
        &cfg,
        json!({"m": {"encryptionKMSType": "metadata", "secretName": "kek-b"}}).to_string(),
    )
    .unwrap();
    let err = kms.unwrap("m", &v, &w).await.unwrap_err();
    assert!(
        matches!(err, KmsError::Integrity { .. }),
        "new config not applied: {err}"
    );
    let rt2 = kms.plugin_report("m", None).await.unwrap().runtime_id;
    assert_ne!(rt1, rt2, "runtime not rebuilt");
    let w2 = kms.wrap("m", &v, &dek).await.unwrap();
    assert_eq!(kms.unwrap("m", &v, &w2).await.unwrap(), dek);

    // A kmsID added later works at once; a broken edit is reported.
    std::fs::write(
        &cfg,
        json!({"m": {"encryptionKMSType": "metadata", "secretName": "kek-b"},
               "n": {"encryptionKMSType": "metadata", "secretName": "kek-a"}})
        .to_string(),
    )
    .unwrap();
    assert!(kms.wrap("n", &v, &dek).await.is_ok());
    std::fs::write(&cfg, "{ oops").unwrap();
    assert!(matches!(
        kms.wrap("n", &v, &dek).await,
        Err(KmsError::Config(_))
    ));
}

/// A plugin file replaced under a running host (an admin's copy, a new
/// pull) is picked up by the next call on its kmsID: a new runtime of the
/// new bytes, checked again (a sha256 pin now refuses them). A call checks
/// only its own kmsID's plugin files, and the other kmsIDs keep their
/// runtimes.
#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_plugin_file_is_picked_up_by_its_kms_id_alone() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    for f in ["a.wasm", "b.wasm"] {
        std::fs::copy(TRAPPER, plugins.join(f)).unwrap();
    }
    let sha = |path: &str| {
        use sha2::Digest;
        <[u8; 32]>::from(sha2::Sha256::digest(std::fs::read(path).unwrap()))
    };
    let defaults = HostDefaults {
        plugin_dir: Some(plugins.clone()),
        ..Default::default()
    };
    let cfg = json!({
        "a": {"encryptionKMSType": "acme", "kmshostPlugin": "a.wasm"},
        "b": {"encryptionKMSType": "acme", "kmshostPlugin": "b.wasm"},
        "b-pinned": {"encryptionKMSType": "acme", "kmshostPlugin": "b.wasm",
                     "kmshostPluginSHA256": hex::encode(sha(TRAPPER))},
    });
    let table = KmsTable::parse(&cfg.to_string(), &defaults).unwrap();
    let kms = common::kms_with_defaults(&cfg, dir.path(), None, defaults);
    let (v, p) = (
        KeyId::new("v").unwrap(),
        kmshost::kms::SecretBytes::new(b"x".to_vec()),
    );
    for id in ["a", "b", "b-pinned"] {
        kms.wrap(id, &v, &p).await.unwrap();
    }
    let report = |id: &'static str| {
        let kms = &kms;
        async move { kms.plugin_report(id, None).await.unwrap() }
    };
    let (a1, b1) = (report("a").await, report("b").await);
    assert_eq!(b1.sha256, sha(TRAPPER));

    // b.wasm is replaced the way a pull does it: a new file renamed over.
    let tmp = plugins.join(".b.wasm.new");
    std::fs::copy(REWRAPPER, &tmp).unwrap();
    std::fs::rename(&tmp, plugins.join("b.wasm")).unwrap();
    assert!(table.entry_unchanged("a"));
    assert!(!table.entry_unchanged("b") && !table.entry_unchanged("b-pinned"));
    assert!(!table.plugins_unchanged());

    kms.wrap("a", &v, &p).await.unwrap();
    assert_eq!(
        report("a").await.runtime_id,
        a1.runtime_id,
        "a kept its runtime"
    );
    kms.wrap("b", &v, &p).await.unwrap();
    let b2 = report("b").await;
    assert_eq!(b2.sha256, sha(REWRAPPER), "b runs the new bytes");
    assert_ne!(b2.runtime_id, b1.runtime_id);
    match kms.wrap("b-pinned", &v, &p).await.unwrap_err() {
        KmsError::PluginLoad { kms_id, message } => {
            assert_eq!(kms_id.as_str(), "b-pinned");
            assert!(message.contains("kmshostPluginSHA256"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn third_party_plugin_from_plugin_dir_and_sha256_pin() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    // A vendor ships acme-hsm.wasm; the admin adds one entry.
    std::fs::copy(TRAPPER, plugins.join("acme-hsm.wasm")).unwrap();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(TRAPPER).unwrap()))
    };
    let defaults = HostDefaults {
        plugin_dir: Some(plugins.clone()),
        ..Default::default()
    };
    let cfg = json!({
        "acme": {"encryptionKMSType": "acme-hsm"},
        "pinned": {"encryptionKMSType": "acme-hsm", "kmshostPluginSHA256": sha},
        "wrong-pin": {"encryptionKMSType": "acme-hsm", "kmshostPluginSHA256": "00".repeat(32)},
    });
    let kms = common::kms_with_defaults(&cfg, dir.path(), None, defaults.clone());
    let v = KeyId::new("v").unwrap();
    let p = kmshost::kms::SecretBytes::new(b"x".to_vec());
    assert_eq!(kms.wrap("acme", &v, &p).await.unwrap().as_bytes(), b"x");
    assert!(kms.wrap("pinned", &v, &p).await.is_ok());
    match kms.wrap("wrong-pin", &v, &p).await.unwrap_err() {
        KmsError::PluginLoad { kms_id, message } => {
            assert_eq!(kms_id.as_str(), "wrong-pin");
            assert!(
                message.contains("does not match the pinned kmshostPluginSHA256"),
                "{message}"
            );
        }
        e => panic!("{e}"),
    }

    // A file that is not a component.
    std::fs::write(plugins.join("junk.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let kms = common::kms_with_defaults(
        &json!({"j": {"encryptionKMSType": "junk"}}),
        dir.path(),
        None,
        defaults,
    );
    // It is refused when the configuration is read (its manifest cannot
    // be), naming the kmsID and the option that chose it.
    match kms.wrap("j", &v, &p).await.unwrap_err() {
        KmsError::InvalidConfig {
            kms_id,
            option,
            message,
        } => {
            assert_eq!(
                (kms_id.as_str(), option.as_str()),
                ("j", "encryptionKMSType")
            );
            assert!(message.contains("not a WebAssembly component"), "{message}");
        }
        e => panic!("{e}"),
    }
}

/// The kmsIDs of the current table, and the `secretName` of `m` if any.
fn seen(src: &ConfigSource) -> (Vec<String>, Option<String>) {
    let t = src.load().unwrap();
    let ids = t.iter().map(|(id, _)| id.to_string()).collect();
    let secret = t.get("m").ok().and_then(|e| {
        e.plugin_options
            .iter()
            .find(|(k, _)| k == "secretName")
            .map(|(_, v)| v.clone())
    });
    (ids, secret)
}

fn metadata(secret: &str) -> String {
    json!({"m": {"encryptionKMSType": "metadata", "secretName": secret}}).to_string()
}

#[test]
fn unchanged_config_is_served_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    std::fs::write(&cfg, metadata("a")).unwrap();
    let src = ConfigSource::new(&cfg, HostDefaults::default());
    for _ in 0..20 {
        assert_eq!(seen(&src).1.as_deref(), Some("a"));
    }
    assert_eq!(src.disk_reads(), 1);
    // A change in the directory that is not the configuration costs one
    // read, and the same table.
    let t1 = src.load().unwrap();
    std::fs::write(dir.path().join("other"), "x").unwrap();
    let t2 = src.load().unwrap();
    assert_eq!(src.disk_reads(), 2);
    assert!(Arc::ptr_eq(&t1, &t2), "same content is not parsed again");
}

#[test]
fn every_config_change_is_seen_by_the_next_use() {
    // In place.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    std::fs::write(&cfg, metadata("a")).unwrap();
    let src = ConfigSource::new(&cfg, HostDefaults::default());
    assert_eq!(seen(&src).1.as_deref(), Some("a"));
    std::fs::write(&cfg, metadata("b")).unwrap();
    assert_eq!(seen(&src).1.as_deref(), Some("b"));

    // kubelet's ConfigMap volume: config.json -> ..data/config.json, and an
    // update swaps the `..data` link to a new timestamped directory.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let version = |name: &str, secret: &str| {
        std::fs::create_dir(d.join(name)).unwrap();
        std::fs::write(d.join(name).join("config.json"), metadata(secret)).unwrap();
    };
    version("..2026_11_22_v1", "a");
    std::os::unix::fs::symlink("..2026_11_22_v1", d.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/config.json", d.join("config.json")).unwrap();
    let src = ConfigSource::new(d, HostDefaults::default());
    assert_eq!(seen(&src).1.as_deref(), Some("a"));
    assert_eq!(seen(&src).1.as_deref(), Some("a"));
    let reads = src.disk_reads();
    version("..2026_11_22_v2", "b");
    std::os::unix::fs::symlink("..2026_11_22_v2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    std::fs::remove_dir_all(d.join("..2026_11_22_v1")).unwrap();
    assert_eq!(seen(&src).1.as_deref(), Some("b"));
    assert!(src.disk_reads() > reads);

    // An admin's link to a file in another directory, edited there.
    let elsewhere = tempfile::tempdir().unwrap();
    let real = elsewhere.path().join("kms.json");
    std::fs::write(&real, metadata("a")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("config.json");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let src = ConfigSource::new(&link, HostDefaults::default());
    assert_eq!(seen(&src).1.as_deref(), Some("a"));
    std::fs::write(&real, metadata("b")).unwrap();
    assert_eq!(seen(&src).1.as_deref(), Some("b"));

    // Rook's connection-details directory: a kmsID added as a file.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("one"),
        json!({"encryptionKMSType": "metadata", "secretName": "a"}).to_string(),
    )
    .unwrap();
    let src = ConfigSource::new(dir.path(), HostDefaults::default());
    assert_eq!(seen(&src).0, vec!["one".to_string()]);
    std::fs::write(
        dir.path().join("two"),
        json!({"encryptionKMSType": "metadata", "secretName": "b"}).to_string(),
    )
    .unwrap();
    let mut ids = seen(&src).0;
    ids.sort();
    assert_eq!(ids, vec!["one".to_string(), "two".to_string()]);
}

/// TLS material the host cannot use is the admin's error, naming the option
/// they wrote (not "TLS"), before any connection.
#[tokio::test(flavor = "multi_thread")]
async fn unusable_tls_material_names_the_option_that_named_it() {
    let dir = tempfile::tempdir().unwrap();
    common::write_secret(dir.path(), "vault-token", &[("token", b"t")]);
    common::write_secret(dir.path(), "not-a-ca", &[("cert", b"no pem here")]);
    let cfg = json!({
        "missing": {"encryptionKMSType": "vaulttokens", "vaultAddress": "https://127.0.0.1:1",
                    "tokenSecretName": "vault-token", "vaultCAFromSecret": "absent-ca"},
        "garbage": {"encryptionKMSType": "vaulttokens", "vaultAddress": "https://127.0.0.1:1",
                    "tokenSecretName": "vault-token", "vaultCAFromSecret": "not-a-ca"},
    });
    let kms = common::kms(&cfg, dir.path(), None);
    let v = KeyId::new("pvc-1").unwrap();
    for (id, why) in [
        ("missing", "absent-ca not found"),
        ("garbage", "no PEM certificate"),
    ] {
        match kms.get(id, &v).await.unwrap_err() {
            KmsError::InvalidConfig {
                option, message, ..
            } => {
                assert_eq!(option, "vaultCAFromSecret", "{id}: {message}");
                assert!(message.contains(why), "{id}: {message}");
            }
            e => panic!("{id}: {e}"),
        }
    }
}

/// Every option is checked against the plugin's manifest when the
/// configuration is read — before any plugin runs and with no network —
/// and the error names the option the admin wrote (#13, item 5).
#[test]
fn manifest_checks_every_option_before_the_plugin_runs() {
    let vault = |extra: serde_json::Value| {
        let mut o = json!({"encryptionKMSType": "vault", "vaultAddress": "https://v:8200"});
        o.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        o
    };
    let cases: Vec<(serde_json::Value, &str, &str)> = vec![
        (
            vault(json!({"vaultAdress": "https://typo"})),
            "vaultAdress",
            "did you mean vaultAddress?",
        ),
        (
            vault(json!({"zzzz": "1"})),
            "zzzz",
            "is not an option of plugin vault (type vault)",
        ),
        (
            vault(json!({"tenants": "{}"})),
            "tenants",
            "applies to type(s) vaulttokens, vaulttenantsa of plugin vault, not vault",
        ),
        (
            vault(json!({"VAULT_ADDR": "https://other:8200"})),
            "vaultAddress",
            "and VAULT_ADDR are both set, to different values",
        ),
        (
            vault(json!({"vaultDestroyKeys": "perhaps"})),
            "vaultDestroyKeys",
            "must be true or false",
        ),
        (
            vault(json!({"VAULT_SECRET_ENGINE": "kv3"})),
            "VAULT_SECRET_ENGINE",
            "must be one of kv, transit",
        ),
        (
            vault(json!({"vaultTimeoutSeconds": "soon"})),
            "vaultTimeoutSeconds",
            "must be a whole number",
        ),
        (
            json!({"encryptionKMSType": "vault"}),
            "vaultAddress",
            "is required (or VAULT_ADDR)",
        ),
        (
            json!({"encryptionKMSType": "metadata"}),
            "secretName",
            "is required",
        ),
        (
            json!({"encryptionKMSType": "metadata", "secretName": "s", "kubernetesAPIAddress": "https://k"}),
            "kubernetesAPIAddress",
            "applies to type(s) kubernetes-secret",
        ),
    ];
    for (entry, option, expect) in cases {
        let t =
            KmsTable::parse(&json!({ "k": entry }).to_string(), &HostDefaults::default()).unwrap();
        match t.get("k").unwrap_err() {
            ConfigError::InvalidConfig {
                option: got,
                message,
                ..
            } => {
                assert_eq!(got, option, "{entry}: {message}");
                assert!(message.contains(expect), "{entry}: {message}");
            }
            e => panic!("{entry}: {e}"),
        }
    }
    // The same option spelt once under each name is fine.
    let t = KmsTable::parse(
        &json!({"k": vault(json!({"VAULT_ADDR": "https://v:8200"}))}).to_string(),
        &HostDefaults::default(),
    )
    .unwrap();
    assert!(t.get("k").is_ok());
}

/// What the manifest tells the host: endpoints and Secrets written once
/// (derived into the allow-list and grants), the host's TLS options kept
/// from the plugin, defaults from the host, the types a plugin serves.
#[test]
fn manifests_derive_allow_lists_grants_and_host_defaults() {
    let defaults = HostDefaults {
        kube_api_address: Some("https://10.0.0.1:443".into()),
        namespace: "csi".into(),
        ..Default::default()
    };
    let t = KmsTable::parse(
        &json!({
            "v": {"encryptionKMSType": "vault", "vaultAddress": "https://v:8200",
                  "tokenSecretName": "tok", "vaultCAFromSecret": "ca", "vaultCAVerify": "true"},
            "k": {"encryptionKMSType": "kubernetes-secret"}
        })
        .to_string(),
        &defaults,
    )
    .unwrap();
    let v = t.get("v").unwrap();
    let names = |e: &kmshost::config::KmsEntry| -> Vec<String> {
        e.plugin_options.iter().map(|(k, _)| k.clone()).collect()
    };
    assert_eq!(v.allow.entries()[0].to_string(), "https://v:8200");
    let grants: Vec<String> = v.grants.iter().map(|s| s.to_string()).collect();
    assert!(grants.contains(&"tok".to_string()), "{grants:?}");
    assert_eq!(v.tls.ca.as_ref().unwrap().secret.name, "ca");
    for host_only in ["vaultCAFromSecret", "vaultCAVerify"] {
        assert!(
            !names(&v).contains(&host_only.to_string()),
            "{host_only} reached the plugin"
        );
    }
    let caps = v.capabilities().unwrap();
    assert!(caps.contains(&kmshost::manifest::Capability::Wrap));

    let k = t.get("k").unwrap();
    assert_eq!(k.allow.entries()[0].to_string(), "https://10.0.0.1:443");
    assert!(
        k.plugin_options
            .contains(&("secretNamespace".into(), "csi".into()))
    );
    assert_eq!(
        k.capabilities().unwrap(),
        [kmshost::manifest::Capability::Store]
    );

    // A plugin named by kmshostPlugin must serve the entry's type.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.wasm");
    std::fs::write(&path, kmshost::plugins::VAULT_WASM).unwrap();
    let t = KmsTable::parse(
        &json!({"x": {"encryptionKMSType": "acme", "kmshostPlugin": path}}).to_string(),
        &HostDefaults::default(),
    )
    .unwrap();
    match t.get("x").unwrap_err() {
        ConfigError::InvalidConfig {
            option, message, ..
        } => {
            assert_eq!(option, "kmshostPlugin");
            assert!(
                message.contains("serves type(s) vault, vaulttenantsa, vaulttokens, not \"acme\""),
                "{message}"
            );
        }
        e => panic!("{e}"),
    }

    // Without a manifest nothing is derived, and options pass unchecked.
    std::fs::copy(TRAPPER, dir.path().join("bare.wasm")).unwrap();
    let t = KmsTable::parse(
        &json!({"b": {"encryptionKMSType": "bare", "anything": "x",
                      "allowedHosts": "https://b"}})
        .to_string(),
        &HostDefaults {
            plugin_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap();
    let b = t.get("b").unwrap();
    assert!(b.capabilities().is_none());
    assert_eq!(b.allow.entries().len(), 1);
    assert!(names(&b).contains(&"anything".to_string()));
}

/// A third-party manifest cannot grant on its own word: not the driver's
/// service-account token, not a default endpoint or Secret. The admin is
/// told the exact entry that grants it.
#[test]
fn a_third_party_manifest_cannot_grant_itself() {
    let dir = tempfile::tempdir().unwrap();
    let m = json!({"manifest": 1, "contract": "0.1.4", "name": "greedy",
        "types": {"greedy": {"capabilities": ["wrap"], "service-account": true}},
        "options": [{"name": "API", "kind": "endpoint", "default-from": "kubernetes-api"}]});
    let bytes = common::with_manifest(&std::fs::read(TRAPPER).unwrap(), &m);
    std::fs::write(dir.path().join("greedy.wasm"), bytes).unwrap();
    let defaults = HostDefaults {
        plugin_dir: Some(dir.path().to_path_buf()),
        kube_api_address: Some("https://10.0.0.1:443".into()),
        ..Default::default()
    };
    let parse = |entry: serde_json::Value| {
        KmsTable::parse(&json!({ "g": entry }).to_string(), &defaults)
            .unwrap()
            .get("g")
    };
    let refused = |entry: serde_json::Value| match parse(entry).unwrap_err() {
        ConfigError::InvalidConfig {
            option, message, ..
        } => format!("{option}: {message}"),
        e => panic!("{e}"),
    };
    let e = refused(json!({"encryptionKMSType": "greedy"}));
    assert!(
        e.starts_with("API: is not set") && e.contains(r#"add "API": "https://10.0.0.1:443""#),
        "{e}"
    );
    let e = refused(json!({"encryptionKMSType": "greedy", "API": "https://10.0.0.1:443"}));
    assert!(
        e.contains("add kubernetes-service-account to kmshostSecrets"),
        "{e}"
    );
    let g = parse(
        json!({"encryptionKMSType": "greedy", "API": "https://10.0.0.1:443",
                         "kmshostSecrets": "kubernetes-service-account"}),
    )
    .unwrap();
    assert!(
        g.grants
            .lookup(kmshost::secrets::SERVICE_ACCOUNT_SECRET)
            .is_some()
    );
}
