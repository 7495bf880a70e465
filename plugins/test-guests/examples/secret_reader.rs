//! Secret-grant case: `wrap(_, "name/key")` reads key `key` of the Secret
//! `name` (which may be `namespace/name`) and returns its value.
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
    fn wrap(&self, _key_id: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let spec = String::from_utf8_lossy(plaintext);
        let (name, key) = spec
            .rsplit_once('/')
            .ok_or_else(|| KmsError::Other("key-id must be name/key".into()))?;
        secret(name, key)
    }
}
export_provider!(SecretReader);
