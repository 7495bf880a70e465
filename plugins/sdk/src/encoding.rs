//! The encodings HTTP KMS APIs ask for: base64 (standard and URL-safe),
//! percent-encoding of path segments and query values, and form bodies
//! (`application/x-www-form-urlencoded`, e.g. OAuth token requests).
//! Decoding errors name what was being decoded, never the data.

use crate::{KmsError, Result};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// Standard base64 with padding (`+`, `/`, `=`).
pub fn b64_encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes standard base64; `what` names the field in the error.
pub fn b64_decode(what: &str, text: &str) -> Result<Vec<u8>> {
    STANDARD
        .decode(text.trim())
        .map_err(|_| KmsError::Other(format!("{what} is not valid base64")))
}

/// URL-safe base64 without padding (`-`, `_`), as JWTs and JWKs use.
pub fn b64url_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes URL-safe base64, with or without padding; `what` names the
/// field in the error.
pub fn b64url_decode(what: &str, text: &str) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(text.trim().trim_end_matches('='))
        .map_err(|_| KmsError::Other(format!("{what} is not valid base64url")))
}

/// Percent-encodes `text` for one URL path segment or query value: every
/// byte but the unreserved ones (`A-Z a-z 0-9 - . _ ~`) becomes `%XX`, so a
/// `/` or `?` in a key-id cannot change the URL's shape.
pub fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An `application/x-www-form-urlencoded` body from name/value pairs.
pub fn form_urlencoded<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    pairs
        .into_iter()
        .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A UUID v4 in its text form from 16 random bytes (version and variant
/// bits set): correlation IDs, JWT `jti`s.
pub fn uuid_v4(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_names_bad_input() {
        let data = [0u8, 0xfb, 0xff, 0x10];
        assert_eq!(b64_encode(&data), "APv/EA==");
        assert_eq!(b64url_encode(&data), "APv_EA");
        assert_eq!(b64_decode("blob", "APv/EA==").unwrap(), data);
        assert_eq!(b64url_decode("blob", "APv_EA").unwrap(), data);
        assert_eq!(b64url_decode("blob", "APv_EA==").unwrap(), data);
        match b64_decode("ciphertext", "not base64!") {
            Err(KmsError::Other(m)) => assert_eq!(m, "ciphertext is not valid base64"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn uuids_carry_version_4_and_the_rfc_variant() {
        let u = uuid_v4([0xff; 16]);
        assert_eq!(u, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert_eq!(uuid_v4([0; 16]), "00000000-0000-4000-8000-000000000000");
    }

    #[test]
    fn url_encoding_keeps_a_value_inside_its_segment() {
        assert_eq!(url_encode("pvc-1_a.b~c"), "pvc-1_a.b~c");
        assert_eq!(url_encode("a/b?c=d&e f"), "a%2Fb%3Fc%3Dd%26e%20f");
        assert_eq!(url_encode("é"), "%C3%A9");
        assert_eq!(
            form_urlencoded([
                ("grant_type", "urn:ibm:params:oauth:grant-type:apikey"),
                ("apikey", "k+y")
            ]),
            "grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Aapikey&apikey=k%2By"
        );
    }
}
