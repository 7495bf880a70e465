//! Network case: `wrap(key_id)` performs the request described by `key_id`
//! (JSON `{"method","url","headers":[[name,value]]}`) and returns
//! `"<status>\n<body>"`; `get(key_id)` does the same but returns only the
//! body length.
use kmshost_plugin_sdk::http::{Method, Request};
use kmshost_plugin_sdk::{KmsError, Options, PluginInfo, Provider, Result, export_provider};

#[derive(serde::Deserialize)]
struct Probe {
    #[serde(default)]
    method: Option<String>,
    url: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
}

fn send(key_id: &str) -> Result<kmshost_plugin_sdk::http::Response> {
    let probe: Probe =
        serde_json::from_str(key_id).map_err(|e| KmsError::Other(format!("bad probe: {e}")))?;
    let method = match probe.method.as_deref() {
        Some("POST") => Method::Post,
        _ => Method::Get,
    };
    let mut req = Request::new(method, probe.url);
    for (k, v) in probe.headers {
        req = req.header(&k, v);
    }
    req.send()
}

struct HttpProbe;
impl Provider for HttpProbe {
    fn info() -> PluginInfo {
        kmshost_test_guests::info("http_probe")
    }
    fn configure(options: &mut Options) -> Result<Self> {
        let _ = options.take("endpoint");
        Ok(HttpProbe)
    }
    fn wrap(&self, key_id: &str, _plaintext: &[u8]) -> Result<Vec<u8>> {
        let resp = send(key_id)?;
        let mut out = format!("{}\n", resp.status).into_bytes();
        out.extend_from_slice(&resp.body);
        Ok(out)
    }
    fn get(&self, key_id: &str) -> Result<Vec<u8>> {
        let resp = send(key_id)?;
        Ok(resp.body.len().to_string().into_bytes())
    }
}
export_provider!(HttpProbe);
