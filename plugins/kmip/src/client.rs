//! One KMIP exchange over the host's TLS stream: open (or take a pooled
//! connection), agree on a protocol version with DiscoverVersions, send one
//! request, read one framed response, give the connection back. TLS —
//! certificates, keys, verification — is the host's; this side never sees
//! it.

use crate::kmip::{self, Op, Version};
use crate::ttlv::{self, Item};
use kmshost_plugin_sdk::tls::{Stream, Timeouts};
use kmshost_plugin_sdk::{KmsError, Result, cache};

/// The largest response accepted (the host also caps bytes per call).
pub const MAX_MESSAGE: u32 = 1 << 20;

/// A KMIP server endpoint with its timeouts.
#[derive(Debug, Clone)]
pub struct Client {
    /// `host:port`.
    pub endpoint: String,
    /// Connect, read and write timeouts.
    pub timeouts: Timeouts,
}

/// A transport failure (the stream is unusable) or the server's answer.
enum Exchange {
    Broken(KmsError),
    Answered(Result<Item>),
}

impl Client {
    fn version_key(&self) -> String {
        format!("kmip-version/{}", self.endpoint)
    }

    /// Runs `op` with the payload `payload(version)` and returns the
    /// response payload. A request that fails on a pooled connection the
    /// server had closed is sent once more on a new one.
    pub fn call(&self, op: Op, payload: impl Fn(Version) -> Vec<Item>) -> Result<Item> {
        let (stream, version) = self.connect()?;
        let reused = stream.reused();
        match self.exchange(&stream, version, op, &payload(version)) {
            Exchange::Answered(r) => {
                stream.release();
                r
            }
            Exchange::Broken(e) if reused && closed_while_idle(&e) => {
                drop(stream);
                let (stream, version) = self.connect()?;
                match self.exchange(&stream, version, op, &payload(version)) {
                    Exchange::Answered(r) => {
                        stream.release();
                        r
                    }
                    Exchange::Broken(e) => Err(e),
                }
            }
            Exchange::Broken(e) => Err(e),
        }
    }

    /// A connection and the version agreed on it: a new connection asks
    /// the server (DiscoverVersions); a pooled one was asked before.
    fn connect(&self) -> Result<(Stream, Version)> {
        let stream = Stream::open(&self.endpoint, self.timeouts)?;
        let known = cache::get(&self.version_key())
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| kmip::OFFERED.iter().copied().find(|o| o.to_string() == v));
        if stream.reused()
            && let Some(v) = known
        {
            return Ok((stream, v));
        }
        let v = self.discover(&stream)?;
        cache::set(&self.version_key(), v.to_string().as_bytes(), 3600);
        Ok((stream, v))
    }

    fn discover(&self, stream: &Stream) -> Result<Version> {
        let ask = |offer: &[Version]| -> Result<Vec<Version>> {
            let payload = kmip::discover_versions(offer);
            match self.exchange(stream, kmip::OFFERED[0], Op::DiscoverVersions, &payload) {
                Exchange::Answered(r) => Ok(kmip::discovered(&r?)),
                Exchange::Broken(e) => Err(e),
            }
        };
        let agreed = ask(&kmip::OFFERED)?;
        if let Some(v) = kmip::OFFERED.iter().find(|o| agreed.contains(o)) {
            return Ok(*v);
        }
        // None in common: ask what the server speaks, to name it.
        let theirs = ask(&[]).unwrap_or_default();
        let list = |vs: &[Version]| {
            vs.iter()
                .map(Version::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(KmsError::Unsupported(format!(
            "KMIP server {} speaks protocol version(s) {}; this plugin speaks {}",
            self.endpoint,
            if theirs.is_empty() {
                "(none listed)".into()
            } else {
                list(&theirs)
            },
            list(&kmip::OFFERED)
        )))
    }

    /// One request and its response on `stream`.
    fn exchange(&self, stream: &Stream, version: Version, op: Op, payload: &[Item]) -> Exchange {
        let mut batch_id = [0u8; 8];
        if getrandom::fill(&mut batch_id).is_err() {
            return Exchange::Answered(Err(KmsError::Other("no randomness available".into())));
        }
        let request = kmip::request(version, op, payload.to_vec(), &batch_id).encode();
        if let Err(e) = stream.send(&request) {
            return Exchange::Broken(e);
        }
        let head = match stream.receive_exact(8) {
            Ok(h) => h,
            Err(e) => return Exchange::Broken(e),
        };
        let head: [u8; 8] = head.try_into().unwrap_or_default();
        let len = match ttlv::message_length(&head, kmip::tag::RESPONSE_MESSAGE, MAX_MESSAGE) {
            Ok(l) => l,
            Err(e) => {
                return Exchange::Broken(KmsError::Other(format!("{} from {}", e, self.endpoint)));
            }
        };
        let body = match stream.receive_exact(len) {
            Ok(b) => b,
            Err(e) => return Exchange::Broken(e),
        };
        let message = match ttlv::decode(&[&head[..], &body].concat()) {
            Ok(m) => m,
            Err(e) => {
                return Exchange::Broken(KmsError::Other(format!("{} from {}", e, self.endpoint)));
            }
        };
        Exchange::Answered(kmip::response_payload(&message, op, &batch_id))
    }
}

/// Whether `e` says a pooled connection was closed by the server while
/// idle (so the request never reached it): the host's words for a closed
/// or reset connection, never a timeout (a request that timed out may
/// have been carried out).
fn closed_while_idle(e: &KmsError) -> bool {
    match e {
        KmsError::Unavailable(m) => {
            !m.contains("timed out")
                && (m.contains("closed the connection")
                    || m.contains("reset")
                    || m.contains("broken pipe"))
        }
        _ => false,
    }
}
