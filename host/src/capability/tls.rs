//! TLS for plugin traffic, done by the host: the plugin names an `https://`
//! URL; the host verifies the server with the kmsID's CA bundle (or the
//! system roots), presents the kmsID's client certificate if one is granted,
//! and the plugin never sees a private key.

use crate::types::SecretBytes;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA bundle holds no certificate or cannot be parsed.
    #[error("CA bundle: {0}")]
    Ca(String),
    /// The client certificate or key cannot be parsed.
    #[error("client certificate: {0}")]
    ClientCert(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A kmsID's TLS settings.
#[derive(Clone, Default)]
pub struct TlsSettings {
    /// PEM CA bundle to trust instead of the system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate chain.
    pub client_cert_pem: Option<Vec<u8>>,
    /// PEM private key of the client certificate.
    pub client_key_pem: Option<SecretBytes>,
    /// Name to verify the server certificate against (instead of the URL
    /// host), like `vaultTLSServerName`.
    pub server_name: Option<String>,
    /// Skip server verification (only when an admin sets
    /// `vaultCAVerify: "false"` or an equivalent).
    pub insecure_skip_verify: bool,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("ca_pem", &self.ca_pem.as_ref().map(|c| c.len()))
            .field("client_cert", &self.client_cert_pem.is_some())
            .field(
                "client_key",
                &self.client_key_pem.as_ref().map(|_| "REDACTED"),
            )
            .field("server_name", &self.server_name)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .finish()
    }
}

/// The system's root certificates, read once per process and shared by
/// every kmsID and tenant without a CA of its own (each used to read and
/// keep its own copy: ~100 KiB and a few milliseconds per runtime). A
/// changed system bundle is seen after a restart.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: std::sync::OnceLock<Arc<RootCertStore>> = std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            Arc::new(roots)
        })
        .clone()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsSettings {
    /// Builds the rustls client configuration.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let builder = if self.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
        } else {
            let roots = match &self.ca_pem {
                Some(pem) => {
                    let mut roots = RootCertStore::empty();
                    for cert in CertificateDer::pem_slice_iter(pem) {
                        let cert = cert.map_err(|e| TlsError::Ca(e.to_string()))?;
                        roots.add(cert).map_err(|e| TlsError::Ca(e.to_string()))?;
                    }
                    if roots.is_empty() {
                        return Err(TlsError::Ca("no PEM certificate found".into()));
                    }
                    Arc::new(roots)
                }
                None => system_roots(),
            };
            builder.with_root_certificates(roots)
        };
        let config = match (&self.client_cert_pem, &self.client_key_pem) {
            (Some(cert), Some(key)) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<_, _>>()
                    .map_err(|e| TlsError::ClientCert(e.to_string()))?;
                if chain.is_empty() {
                    return Err(TlsError::ClientCert("no PEM certificate found".into()));
                }
                let key = PrivateKeyDer::from_pem_slice(key.expose()).map_err(|e| match e {
                    pem::Error::NoItemsFound => {
                        TlsError::ClientCert("no PEM private key found".into())
                    }
                    // Never the key's bytes: only that it did not parse.
                    _ => TlsError::ClientCert("private key is not valid PEM".into()),
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsError::ClientCert(e.to_string()))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(TlsError::ClientCert(
                    "a client certificate needs both the certificate and its key".into(),
                ));
            }
        };
        Ok(Arc::new(config))
    }
}

/// Accepts any server certificate (still checking handshake signatures).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA, and a client certificate it signed with its key (PEM).
    fn pki() -> (String, String, String) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let client = CertificateParams::new(vec!["client".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (ca.pem(), client.pem(), key.serialize_pem())
    }

    fn with(ca: Option<&str>, cert: Option<&str>, key: Option<&str>) -> TlsSettings {
        TlsSettings {
            ca_pem: ca.map(|c| c.as_bytes().to_vec()),
            client_cert_pem: cert.map(|c| c.as_bytes().to_vec()),
            client_key_pem: key.map(|k| SecretBytes::new(k.as_bytes().to_vec())),
            ..Default::default()
        }
    }

    #[test]
    fn a_ca_bundle_and_a_client_certificate_build() {
        let (ca, cert, key) = pki();
        let config = with(Some(&ca), Some(&cert), Some(&key))
            .client_config()
            .unwrap();
        assert!(config.client_auth_cert_resolver.has_certs());
        let config = with(Some(&ca), None, None).client_config().unwrap();
        assert!(!config.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn bad_material_is_refused_naming_what_without_echoing_it() {
        let (ca, cert, key) = pki();
        let cases = [
            (
                with(Some("no pem here"), None, None),
                "CA bundle: no PEM certificate",
            ),
            (
                with(Some(&key), None, None),
                "CA bundle: no PEM certificate",
            ),
            (with(Some(&ca), Some(&cert), None), "needs both"),
            (with(Some(&ca), None, Some(&key)), "needs both"),
            (with(Some(&ca), Some("x"), Some(&key)), "no PEM certificate"),
            (
                with(Some(&ca), Some(&cert), Some(&cert)),
                "no PEM private key",
            ),
        ];
        for (settings, want) in cases {
            let err = settings.client_config().unwrap_err().to_string();
            assert!(err.contains(want), "want {want:?}: {err}");
            assert!(!err.contains("PRIVATE KEY"), "{err}");
        }
        // A key whose PEM body is corrupt: refused, and nothing of it shown.
        let corrupt = key.replace(&key[40..60], "!!!!!!!!!!!!!!!!!!!!");
        let err = with(Some(&ca), Some(&cert), Some(&corrupt))
            .client_config()
            .unwrap_err()
            .to_string();
        assert!(err.contains("client certificate"), "{err}");
        assert!(!err.contains("!!!!"), "{err}");
    }

    #[test]
    fn debug_never_shows_the_key() {
        let (ca, cert, key) = pki();
        let text = format!("{:?}", with(Some(&ca), Some(&cert), Some(&key)));
        assert!(text.contains("REDACTED"), "{text}");
        assert!(!text.contains("PRIVATE"), "{text}");
        let body = key.lines().nth(1).unwrap();
        assert!(!text.contains(body), "{text}");
    }

    #[test]
    fn system_roots_are_read_once_and_shared() {
        assert!(Arc::ptr_eq(&system_roots(), &system_roots()));
        // Without a CA of its own a kmsID trusts them.
        assert!(TlsSettings::default().client_config().is_ok());
    }
}
