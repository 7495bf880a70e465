//! Network case: `wrap(_, plaintext)` performs the request described by the
//! plaintext (JSON `{"method","url","headers":[[name,value]],"follow":bool,
//! "via":"kmshost"|"wasi","timeout_secs":n}`) and returns `"<status>\n<body>"`. With
//! `follow`, a 3xx answer's `location` is requested next (a plugin following
//! a redirect itself). `via` picks the transport: `kmshost:plugin/
//! outbound-http` (the default) or `wasi:http/outgoing-handler`.
use kmshost_plugin_sdk::http::{Method, Request};
use kmshost_plugin_sdk::{KmsError, Options, PluginInfo, Provider, Result, export_provider};

#[derive(serde::Deserialize)]
struct Probe {
    #[serde(default)]
    method: Option<String>,
    url: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    follow: bool,
    #[serde(default)]
    via: Option<String>,
    #[serde(default)]
    timeout_secs: Option<u64>,
}

fn send(spec: &[u8]) -> Result<kmshost_plugin_sdk::http::Response> {
    let probe: Probe =
        serde_json::from_slice(spec).map_err(|e| KmsError::Other(format!("bad probe: {e}")))?;
    let method = match probe.method.as_deref() {
        Some("POST") => Method::Post,
        _ => Method::Get,
    };
    let mut req = Request::new(method, probe.url);
    for (k, v) in probe.headers {
        req = req.header(&k, v);
    }
    if let Some(t) = probe.timeout_secs {
        req = req.timeout_secs(t);
    }
    let wasi = probe.via.as_deref() == Some("wasi");
    let send = |req: Request| if wasi { req.send_wasi() } else { req.send() };
    let resp = send(req)?;
    if probe.follow
        && (300..400).contains(&resp.status)
        && let Some(location) = resp.header("location")
    {
        return send(Request::get(location));
    }
    Ok(resp)
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
    fn wrap(&self, _key_id: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let resp = send(plaintext)?;
        let mut out = format!("{}\n", resp.status).into_bytes();
        out.extend_from_slice(&resp.body);
        Ok(out)
    }
}
export_provider!(HttpProbe);
