//! Host-resource case: a plugin that makes the host hold things for it.
//! `wrap(key_id, plaintext)`, with `key_id` = `<mode>-<n>`:
//!
//! - `fields-N`: creates N `wasi:http` `fields`, each with a 4 KiB header,
//!   and keeps them all;
//! - `dropped-N`: the same, dropping each one (what a well-behaved plugin
//!   does);
//! - `requests-N`: starts N `wasi:http` GETs of the URL in `plaintext`
//!   without awaiting them and keeps them; then awaits the last one and
//!   returns its outcome (`ok <status>` or `err <code>`);
//! - `empty-N`: writes an empty buffer to stdout N times.

/// `wasi:cli/stdout`, which the SDK's world does not bind.
mod cli {
    wit_bindgen::generate!({
        inline: "package acme:hoarder; world stdio { import wasi:cli/stdout@0.2.12; }",
        path: [
            "../../wit/deps/io.wit",
            "../../wit/deps/clocks.wit",
            "../../wit/deps/random.wit",
            "../../wit/deps/filesystem.wit",
            "../../wit/deps/sockets.wit",
            "../../wit/deps/cli.wit",
        ],
        world: "acme:hoarder/stdio",
        generate_all,
    });
}
use cli::wasi::cli::stdout;
use kmshost_plugin_sdk::bindings::wasi::http::outgoing_handler;
use kmshost_plugin_sdk::bindings::wasi::http::types::{
    Fields, FutureIncomingResponse, OutgoingRequest, Scheme,
};
use kmshost_plugin_sdk::{KmsError, Options, PluginInfo, Provider, Result, export_provider};

fn get(url: &str) -> std::result::Result<FutureIncomingResponse, String> {
    let rest = url.strip_prefix("http://").ok_or("http:// URLs only")?;
    let (authority, path) = rest
        .split_once('/')
        .map(|(a, p)| (a, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let req = OutgoingRequest::new(Fields::new());
    req.set_scheme(Some(&Scheme::Http)).map_err(|_| "scheme")?;
    req.set_authority(Some(authority))
        .map_err(|_| "authority")?;
    req.set_path_with_query(Some(&path)).map_err(|_| "path")?;
    outgoing_handler::handle(req, None).map_err(|e| format!("{e:?}"))
}

fn outcome(f: &FutureIncomingResponse) -> String {
    f.subscribe().block();
    match f.get() {
        Some(Ok(Ok(resp))) => format!("ok {}", resp.status()),
        Some(Ok(Err(code))) => format!("err {code:?}"),
        other => format!("err {other:?}"),
    }
}

struct Hoarder;
impl Provider for Hoarder {
    fn info() -> PluginInfo {
        kmshost_test_guests::info("hoarder")
    }
    fn configure(_: &mut Options) -> Result<Self> {
        Ok(Hoarder)
    }
    fn wrap(&self, key_id: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let (mode, n) = key_id
            .rsplit_once('-')
            .and_then(|(m, n)| Some((m, n.parse::<usize>().ok()?)))
            .ok_or_else(|| KmsError::Other("key-id must be <mode>-<n>".into()))?;
        let value = vec![b'v'; 4096];
        match mode {
            "fields" | "dropped" => {
                let mut kept = Vec::new();
                for i in 0..n {
                    let f = Fields::new();
                    f.append(&format!("x-h{i}"), &value)
                        .map_err(|e| KmsError::Other(format!("append: {e:?}")))?;
                    if mode == "fields" {
                        kept.push(f);
                    }
                }
                std::mem::forget(kept);
                Ok(format!("{n}").into_bytes())
            }
            "requests" => {
                let url = String::from_utf8_lossy(plaintext).into_owned();
                let mut kept = Vec::new();
                for _ in 0..n {
                    kept.push(get(&url).map_err(KmsError::Other)?);
                }
                let last = kept.last().map(outcome).unwrap_or_default();
                std::mem::forget(kept);
                Ok(last.into_bytes())
            }
            "empty" => {
                let out = stdout::get_stdout();
                for _ in 0..n {
                    let _ = out.write(&[]);
                }
                Ok(b"written".to_vec())
            }
            _ => Err(KmsError::Other(format!("unknown mode {mode}"))),
        }
    }
}
export_provider!(Hoarder);
