//! TLS-stream case: `wrap(_, "<command> <endpoint> <n> [read-ms]")` drives
//! the `tls-stream` import the way a hostile plugin would:
//!
//! * `echo E N` — open E, send N bytes, read N back, release; returns them.
//! * `hold E N` — open N streams to E and keep them all (never released).
//! * `silent E N MS` — open E with a read timeout of MS, send N bytes, and
//!   wait for one byte back.
//! * `peek E N` — open E and ask to read N bytes without sending anything.
use kmshost_plugin_sdk::tls::{Stream, Timeouts};
use kmshost_plugin_sdk::{KmsError, Options, PluginInfo, Provider, Result, export_provider};

struct StreamProbe;

fn parse(plaintext: &[u8]) -> Result<(String, String, u32, u32)> {
    let text = String::from_utf8_lossy(plaintext).into_owned();
    let mut w = text.split(' ');
    let bad = || KmsError::Other("usage: <command> <endpoint> <n> [read-ms]".into());
    let cmd = w.next().ok_or_else(bad)?.to_string();
    let endpoint = w.next().ok_or_else(bad)?.to_string();
    let n = w.next().and_then(|n| n.parse().ok()).ok_or_else(bad)?;
    let ms = w.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    Ok((cmd, endpoint, n, ms))
}

impl Provider for StreamProbe {
    fn info() -> PluginInfo {
        kmshost_test_guests::info("stream_probe")
    }
    fn configure(_options: &mut Options) -> Result<Self> {
        Ok(StreamProbe)
    }
    fn wrap(&self, _key_id: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let (cmd, endpoint, n, ms) = parse(plaintext)?;
        match cmd.as_str() {
            "echo" => {
                let s = Stream::open(&endpoint, Timeouts::default())?;
                s.send(&vec![b'x'; n as usize])?;
                let back = s.receive_exact(n)?;
                s.release();
                Ok(back)
            }
            "hold" => {
                let mut held = Vec::new();
                for _ in 0..n {
                    held.push(Stream::open(&endpoint, Timeouts::default())?);
                }
                Ok(format!("held {}", held.len()).into_bytes())
            }
            "silent" => {
                let t = Timeouts {
                    read_ms: ms,
                    ..Default::default()
                };
                let s = Stream::open(&endpoint, t)?;
                s.send(&vec![b'x'; n as usize])?;
                s.receive_exact(1)
            }
            "peek" => Stream::open(&endpoint, Timeouts::default())?.receive_exact(n),
            _ => Err(KmsError::Other(format!("unknown command {cmd}"))),
        }
    }
}
export_provider!(StreamProbe);
