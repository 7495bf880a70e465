//! Plugin signatures: ed25519 signatures embedded in the component by
//! wasmsign2 (a `signature` custom section covering every byte after it),
//! checked against the key an admin trusts for a kmsID before anything
//! compiles the plugin. Why wasmsign2 rather than cosign: the signature
//! travels inside the `.wasm`, so the same check covers a file copied into
//! the plugin directory and a layer pulled from any registry (Docker's
//! registry 2.8 has no referrers API for detached signatures), needs no
//! transparency log or network, and vendors can sign with the `wasmsign2`
//! tool or `kmshost plugin sign` (docs/plugin-guide.md, "Signing").

use std::io::Cursor;

/// Why a plugin's signature is not accepted.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// The trusted key cannot be read.
    #[error("not an ed25519 public key (PEM, DER, or an `ssh-ed25519 …` line): {0}")]
    BadKey(String),
    /// The plugin carries no signature.
    #[error("the plugin is not signed")]
    Unsigned,
    /// The plugin is signed, but not by the trusted key, or was altered.
    #[error(
        "no valid signature by the trusted key (signed by another key, or altered after signing)"
    )]
    Invalid,
    /// The bytes could not be read as a signed module or component.
    #[error("cannot read the signature: {0}")]
    Malformed(String),
}

/// A trusted ed25519 public key.
#[derive(Debug, Clone)]
pub struct TrustedKey(wasmsign2::PublicKey);

impl TrustedKey {
    /// Reads a key: PEM, an OpenSSH `ssh-ed25519 AAAA… comment` line (one
    /// line, convenient in a ConfigMap), DER or the raw 32 bytes.
    pub fn parse(text: &str) -> Result<TrustedKey, SignatureError> {
        let text = text.trim();
        wasmsign2::PublicKey::from_any(text.as_bytes())
            .map(TrustedKey)
            .map_err(|e| SignatureError::BadKey(e.to_string()))
    }

    /// Checks that `component` carries a valid signature by this key.
    pub fn verify(&self, component: &[u8]) -> Result<(), SignatureError> {
        match self.0.verify(&mut Cursor::new(component), None) {
            Ok(()) => Ok(()),
            Err(wasmsign2::WSError::NoSignatures) => Err(SignatureError::Unsigned),
            Err(wasmsign2::WSError::VerificationFailed) => Err(SignatureError::Invalid),
            Err(e) => Err(SignatureError::Malformed(e.to_string())),
        }
    }
}

/// A new key pair: (secret key PEM, public key PEM).
pub fn generate_key_pair() -> (String, String) {
    let kp = wasmsign2::KeyPair::generate();
    (kp.sk.to_pem(), kp.pk.to_pem())
}

/// Signs `component` with the secret key `secret_pem`; the signature is
/// embedded as a custom section in front of what it covers.
pub fn sign(component: &[u8], secret_pem: &str) -> Result<Vec<u8>, SignatureError> {
    let sk = wasmsign2::SecretKey::from_any(secret_pem.trim().as_bytes())
        .map_err(|e| SignatureError::BadKey(e.to_string()))?;
    let module = wasmsign2::Module::deserialize(&mut Cursor::new(component))
        .map_err(|e| SignatureError::Malformed(e.to_string()))?;
    let signed = sk
        .sign(module, None)
        .map_err(|e| SignatureError::Malformed(e.to_string()))?;
    let mut out = Vec::new();
    signed
        .serialize(&mut out)
        .map_err(|e| SignatureError::Malformed(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_components_verify_only_under_their_key() {
        let component = crate::plugins::SECRET_WASM;
        let (sk, pk) = generate_key_pair();
        let (_, other) = generate_key_pair();
        let signed = sign(component, &sk).unwrap();
        let key = TrustedKey::parse(&pk).unwrap();
        assert_eq!(key.verify(&signed), Ok(()));
        assert_eq!(key.verify(component), Err(SignatureError::Unsigned));
        assert_eq!(
            TrustedKey::parse(&other).unwrap().verify(&signed),
            Err(SignatureError::Invalid)
        );
        // One byte changed anywhere after the signature: invalid.
        let mut altered = signed.clone();
        let at = altered.len() - 100;
        altered[at] ^= 1;
        assert_eq!(key.verify(&altered), Err(SignatureError::Invalid));
        // The signed component still declares itself.
        let d = crate::manifest::read(&signed).unwrap();
        assert_eq!(d.manifest.unwrap().name, "secret");
        assert!(matches!(
            TrustedKey::parse("not a key"),
            Err(SignatureError::BadKey(_))
        ));
    }
}
