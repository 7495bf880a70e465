//! Host-resource case: `rewrap.offer` (contract 0.1.2), as option `mode`
//! says. Blobs are `v1` or `v2`, an 8-byte tag of the key-id, then the key
//! XOR 0x5a; unwrapping a `v1` blob offers its `v2` form.
//!
//! - `honest`: offers the `v2` blob of the same key (obeyed).
//! - `too-big`: offers a blob past the host's blob size limit.
//! - `twice`: offers the `v2` blob, then another; fails the unwrap if the
//!   host took the second.
//! - `in-wrap`: offers from `wrap` too; fails the wrap if the host took it.
//! - `liar`: offers a `v2` blob of another key.
//! - `reveal`: offers the key in clear.
use kmshost_plugin_sdk::{
    KmsError, Options, PluginInfo, Provider, Result, export_provider, offer_rewrapped,
};
use kmshost_test_guests::tag;

struct Rewrapper {
    mode: String,
}

fn blob(version: &[u8], key_id: &str, key: &[u8]) -> Vec<u8> {
    let x: Vec<u8> = key.iter().map(|b| b ^ 0x5a).collect();
    [version, &tag(key_id)[..], &x].concat()
}

impl Provider for Rewrapper {
    fn info() -> PluginInfo {
        kmshost_test_guests::info("rewrapper")
    }
    fn configure(options: &mut Options) -> Result<Self> {
        Ok(Rewrapper {
            mode: options.or("mode", "honest"),
        })
    }
    fn wrap(&self, key_id: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let b = blob(b"v1", key_id, plaintext);
        if self.mode == "in-wrap" && offer_rewrapped(&b).is_ok() {
            return Err(KmsError::Other(
                "the host took an offer outside unwrap".into(),
            ));
        }
        Ok(b)
    }
    fn unwrap(&self, key_id: &str, b: &[u8]) -> Result<Vec<u8>> {
        if b.len() < 10 || b[2..10] != tag(key_id) {
            return Err(KmsError::Integrity("blob is not for this key-id".into()));
        }
        let key: Vec<u8> = b[10..].iter().map(|x| x ^ 0x5a).collect();
        if &b[..2] != b"v1" {
            return Ok(key);
        }
        let offer = match self.mode.as_str() {
            "too-big" => vec![1; 17 << 10],
            "liar" => blob(
                b"v2",
                key_id,
                b"another-key-entirely-another-key-entirely-x",
            ),
            "reveal" => key.clone(),
            _ => blob(b"v2", key_id, &key),
        };
        let _ = offer_rewrapped(&offer);
        if self.mode == "twice" && offer_rewrapped(&blob(b"v2", key_id, b"second")).is_ok() {
            return Err(KmsError::Other("the host took a second offer".into()));
        }
        Ok(key)
    }
}

export_provider!(Rewrapper);
