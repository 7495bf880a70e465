//! Secret-grant case: `get(key_id)` reads the Secret named `name/key` in
//! `key_id` and returns its value.
use kmshost_plugin_sdk::{
    KmsError, Options, PluginInfo, Provider, Result, export_provider, secret,
};

struct SecretReader;
impl Provider for SecretReader {
    fn info() -> PluginInfo {
        kmshost_test_guests::info("secret_reader")
    }
    fn configure(options: &mut Options) -> Result<Self> {
        let _ = options.take("tokenSecretName");
        Ok(SecretReader)
    }
    fn get(&self, key_id: &str) -> Result<Vec<u8>> {
        let (name, key) = key_id
            .split_once('/')
            .ok_or_else(|| KmsError::Other("key-id must be name/key".into()))?;
        secret(name, key)
    }
}
export_provider!(SecretReader);
