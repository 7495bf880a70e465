//! The signing capability: a client certificate and its private key, parsed
//! and held by the host, used to sign what a plugin hands it (a JWT client
//! assertion for Entra ID's certificate credentials). The key never leaves
//! this module: callers get signatures and the certificate's public parts.
//!
//! * **Input**: PEM text with the certificate (leaf first, then any chain)
//!   and its unencrypted private key (PKCS#8 `PRIVATE KEY` or PKCS#1
//!   `RSA PRIVATE KEY`), as ceph-csi's `CLIENT_CERT` Secret key holds them.
//! * **Checks**: the key is RSA (2048 to 4096 bits), and it is the
//!   certificate's key (a probe signature verifies under the certificate's
//!   public key), so a plugin never signs with a key the certificate does
//!   not vouch for.
//! * **Algorithms**: an allow-list, [`Algorithm`]: RS256 and PS256 (JWS).

use crate::types::SecretBytes;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, RsaKeyPair};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Certificates read from one PEM at most (leaf and chain).
pub const MAX_CHAIN: usize = 8;

/// The signature algorithms the host signs with (JWS names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PSS with SHA-256, MGF1 with SHA-256, a 32-byte salt.
    Ps256,
}

impl Algorithm {
    /// The JWS `alg` name.
    pub fn jws_name(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Ps256 => "PS256",
        }
    }

    fn ring(self) -> &'static dyn signature::RsaEncoding {
        match self {
            Algorithm::Rs256 => &signature::RSA_PKCS1_SHA256,
            Algorithm::Ps256 => &signature::RSA_PSS_SHA256,
        }
    }
}

/// Why a certificate cannot be used. Messages never hold key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    /// No `CERTIFICATE` block.
    #[error("no PEM certificate (-----BEGIN CERTIFICATE-----) beside the key")]
    NoCertificate,
    /// No private key block.
    #[error(
        "no unencrypted private key (-----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----) beside the certificate"
    )]
    NoKey,
    /// The private key is encrypted.
    #[error(
        "the private key is encrypted; store it unencrypted (openssl pkcs8 -nocrypt), as ceph-csi reads it"
    )]
    EncryptedKey,
    /// Not an RSA key, or not one of a usable size.
    #[error("the private key is not an RSA key of 2048 to 4096 bits: {0}")]
    NotRsa(String),
    /// The key is not the certificate's.
    #[error("the private key does not belong to the certificate (its public key differs)")]
    Mismatch,
    /// The PEM or a certificate in it cannot be read.
    #[error("cannot read the certificate: {0}")]
    Malformed(String),
    /// Signing failed.
    #[error("signing failed")]
    Sign,
}

/// A certificate with its private key, ready to sign. `Debug` shows the
/// thumbprint only.
pub struct SigningCert {
    key: RsaKeyPair,
    chain: Vec<Vec<u8>>,
    x5t: String,
    x5t_s256: String,
}

impl std::fmt::Debug for SigningCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningCert")
            .field("x5t#S256", &self.x5t_s256)
            .field("chain", &self.chain.len())
            .field("key", &"REDACTED")
            .finish()
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl SigningCert {
    /// Reads a PEM certificate (and chain) with its private key.
    pub fn from_pem(pem_text: &SecretBytes) -> Result<Self, SigningError> {
        let text = pem_text.expose();
        let chain = certificates(text)?;
        let key = private_key(text)?;
        let leaf = chain.first().ok_or(SigningError::NoCertificate)?;
        check_key_is_the_certificates(&key, leaf)?;
        let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, leaf);
        let sha256 = ring::digest::digest(&ring::digest::SHA256, leaf);
        Ok(SigningCert {
            x5t: b64url(sha1.as_ref()),
            x5t_s256: b64url(sha256.as_ref()),
            chain,
            key,
        })
    }

    /// Signs `payload` with the certificate's key.
    pub fn sign(&self, alg: Algorithm, payload: &[u8]) -> Result<Vec<u8>, SigningError> {
        let mut sig = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(alg.ring(), &SystemRandom::new(), payload, &mut sig)
            .map_err(|_| SigningError::Sign)?;
        Ok(sig)
    }

    /// JWS `x5t`: base64url (unpadded) SHA-1 of the leaf's DER.
    pub fn x5t(&self) -> &str {
        &self.x5t
    }

    /// JWS `x5t#S256`: base64url (unpadded) SHA-256 of the leaf's DER.
    pub fn x5t_s256(&self) -> &str {
        &self.x5t_s256
    }

    /// The certificates' DER, leaf first (JWS `x5c`).
    pub fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }
}

fn certificates(text: &[u8]) -> Result<Vec<Vec<u8>>, SigningError> {
    let mut chain = Vec::new();
    for c in CertificateDer::pem_slice_iter(text) {
        let c = c.map_err(|e| SigningError::Malformed(e.to_string()))?;
        if chain.len() == MAX_CHAIN {
            return Err(SigningError::Malformed(format!(
                "more than {MAX_CHAIN} certificates"
            )));
        }
        chain.push(c.as_ref().to_vec());
    }
    if chain.is_empty() {
        return Err(SigningError::NoCertificate);
    }
    Ok(chain)
}

fn private_key(text: &[u8]) -> Result<RsaKeyPair, SigningError> {
    let key = match PrivateKeyDer::from_pem_slice(text) {
        Ok(k) => k,
        Err(pem::Error::NoItemsFound) if contains(text, b"ENCRYPTED PRIVATE KEY") => {
            return Err(SigningError::EncryptedKey);
        }
        Err(pem::Error::NoItemsFound) => return Err(SigningError::NoKey),
        // The parser's own message may quote the text: name the kind only.
        Err(_) => return Err(SigningError::Malformed("the private key block".into())),
    };
    let parsed = match &key {
        PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
        PrivateKeyDer::Sec1(_) => return Err(SigningError::NotRsa("an EC key".into())),
        _ => return Err(SigningError::NotRsa("an unknown key type".into())),
    };
    let pair = parsed.map_err(|e| SigningError::NotRsa(e.to_string()))?;
    let bits = pair.public().modulus_len() * 8;
    if !(2048..=4096).contains(&bits) {
        return Err(SigningError::NotRsa(format!("{bits} bits")));
    }
    Ok(pair)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A probe signed with the key verifies under the certificate's public key.
fn check_key_is_the_certificates(key: &RsaKeyPair, leaf: &[u8]) -> Result<(), SigningError> {
    const PROBE: &[u8] = b"kmshost: does this key belong to this certificate?";
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &signature::RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        PROBE,
        &mut sig,
    )
    .map_err(|_| SigningError::Sign)?;
    let der = CertificateDer::from(leaf);
    let cert = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| SigningError::Malformed(format!("{e:?}")))?;
    cert.verify_signature(webpki::ring::RSA_PKCS1_2048_8192_SHA256, PROBE, &sig)
        .map_err(|_| SigningError::Mismatch)
}
