//! Key-invariant case: a provider that lies about keys, as option `mode`
//! says. The host must refuse every lie before a key is recorded or a
//! volume formatted.
//!
//! - `honest`: wrap = an 8-byte tag of the key-id, then the key XOR 0x5a;
//!   unwrap checks the tag (`integrity` under another key-id).
//! - `echo`: wrap returns the plaintext unchanged (the key in clear).
//! - `unbound`: like honest, but unwrap ignores the key-id.
//! - `short`: honest wrap; unwrap returns a 1-byte key.
//! - `huge`: wrap returns a 1 MiB blob.
//! - `lie-later`: honest for the first unwrap of each key-id, then a 1-byte
//!   key (counted in the host cache): passes sealing, lies at stage.
//! - `store-liar`: no wrap; put keeps nothing; get returns another key.
use kmshost_plugin_sdk::{KmsError, Options, PluginInfo, Provider, Result, cache, export_provider};
use kmshost_test_guests::tag;

struct KeyLiar {
    mode: String,
}

fn xor(b: &[u8]) -> Vec<u8> {
    b.iter().map(|x| x ^ 0x5a).collect()
}

impl KeyLiar {
    fn honest_unwrap(&self, key_id: &str, blob: &[u8]) -> Result<Vec<u8>> {
        if blob.len() < 8 || (self.mode != "unbound" && blob[..8] != tag(key_id)) {
            return Err(KmsError::Integrity("blob is not for this key-id".into()));
        }
        Ok(xor(&blob[8..]))
    }
}

impl Provider for KeyLiar {
    fn info() -> PluginInfo {
        kmshost_test_guests::info("key_liar")
    }
    fn configure(options: &mut Options) -> Result<Self> {
        Ok(KeyLiar {
            mode: options.or("mode", "honest"),
        })
    }
    fn wrap(&self, key_id: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        match self.mode.as_str() {
            "store-liar" => Err(KmsError::Unsupported("wrap".into())),
            "echo" => Ok(plaintext.to_vec()),
            "huge" => Ok(vec![7; 1 << 20]),
            _ => Ok([&tag(key_id)[..], &xor(plaintext)].concat()),
        }
    }
    fn unwrap(&self, key_id: &str, blob: &[u8]) -> Result<Vec<u8>> {
        match self.mode.as_str() {
            "echo" => Ok(blob.to_vec()),
            "short" => Ok(b"x".to_vec()),
            "lie-later" => {
                let key = self.honest_unwrap(key_id, blob)?;
                let seen = format!("unwrapped:{key_id}");
                if cache::get(&seen).is_some() {
                    return Ok(b"x".to_vec());
                }
                cache::set(&seen, b"1", 3600);
                Ok(key)
            }
            _ => self.honest_unwrap(key_id, blob),
        }
    }
    fn put(&self, _key_id: &str, _key: &[u8]) -> Result<()> {
        Ok(())
    }
    fn get(&self, _key_id: &str) -> Result<Vec<u8>> {
        Ok(b"not-the-key-you-stored".to_vec())
    }
}
export_provider!(KeyLiar);
