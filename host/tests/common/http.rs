//! A small HTTP(S) server for tests: records every request and answers
//! through a handler.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub host: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the handler answers.
pub enum Reply {
    /// A body with a content-length.
    Full(u16, Vec<(String, String)>, Vec<u8>),
    /// A chunked body (no content-length).
    Chunked(u16, Vec<Vec<u8>>),
    /// The reply, after a pause.
    Delayed(std::time::Duration, Box<Reply>),
    /// The head and a first chunk, then nothing more, ever: a server
    /// stalled mid-body.
    Stalled(u16, Vec<u8>),
}

impl Reply {
    pub fn ok(body: impl Into<Vec<u8>>) -> Reply {
        Reply::Full(200, vec![], body.into())
    }
    pub fn json(status: u16, v: serde_json::Value) -> Reply {
        Reply::Full(
            status,
            vec![("content-type".into(), "application/json".into())],
            v.to_string().into_bytes(),
        )
    }
}

pub type Handler = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// A running server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    /// TCP connections accepted.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    /// Plain HTTP on `bind` (e.g. `127.0.0.1:0`).
    pub async fn start(bind: &str, handler: Handler) -> TestServer {
        Self::start_inner(bind, handler, None).await
    }

    /// Plain HTTP on a loopback port, each request answered by
    /// `handle` with the fake's state locked (one request at a time).
    pub async fn with_state<S: Send + 'static>(
        state: &Arc<Mutex<S>>,
        handle: fn(&mut S, &Recorded) -> Reply,
    ) -> TestServer {
        let s = state.clone();
        let handler: Handler = Arc::new(move |r: &Recorded| handle(&mut s.lock().unwrap(), r));
        Self::start("127.0.0.1:0", handler).await
    }

    /// HTTPS with `tls`.
    pub async fn start_tls(
        bind: &str,
        handler: Handler,
        tls: Arc<rustls::ServerConfig>,
    ) -> TestServer {
        Self::start_inner(bind, handler, Some(tokio_rustls::TlsAcceptor::from(tls))).await
    }

    /// Long by design: one accept loop (TLS, HTTP/1.1, the handler) a test server needs whole.
    async fn start_inner(
        bind: &str,
        handler: Handler,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> TestServer {
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let reqs = requests.clone();
        let connections: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let conns = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                conns.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let handler = handler.clone();
                let reqs = reqs.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let handler = handler.clone();
                            let reqs = reqs.clone();
                            async move {
                                let method = req.method().to_string();
                                let path = req
                                    .uri()
                                    .path_and_query()
                                    .map(|p| p.to_string())
                                    .unwrap_or_default();
                                let headers: Vec<(String, String)> = req
                                    .headers()
                                    .iter()
                                    .map(|(k, v)| {
                                        (
                                            k.to_string(),
                                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                        )
                                    })
                                    .collect();
                                let host = req
                                    .headers()
                                    .get("host")
                                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes().to_vec())
                                    .unwrap_or_default();
                                let rec = Recorded {
                                    method,
                                    path,
                                    host,
                                    headers,
                                    body,
                                };
                                let mut reply = handler(&rec);
                                reqs.lock().unwrap().push(rec);
                                while let Reply::Delayed(pause, inner) = reply {
                                    tokio::time::sleep(pause).await;
                                    reply = *inner;
                                }
                                let resp = match reply {
                                    Reply::Delayed(..) => unreachable!("unwrapped above"),
                                    Reply::Stalled(status, first) => {
                                        let stream = futures::StreamExt::chain(
                                            futures::stream::iter([Ok::<_, Infallible>(
                                                Frame::data(Bytes::from(first)),
                                            )]),
                                            futures::stream::pending(),
                                        );
                                        hyper::Response::builder()
                                            .status(status)
                                            .body(StreamBody::new(stream).boxed())
                                            .unwrap()
                                    }
                                    Reply::Full(status, headers, body) => {
                                        let mut b = hyper::Response::builder().status(status);
                                        for (k, v) in headers {
                                            b = b.header(k, v);
                                        }
                                        b.body(
                                            Full::new(Bytes::from(body))
                                                .map_err(|never| match never {})
                                                .boxed(),
                                        )
                                        .unwrap()
                                    }
                                    Reply::Chunked(status, chunks) => {
                                        let stream =
                                            futures::stream::iter(chunks.into_iter().map(|c| {
                                                Ok::<_, Infallible>(Frame::data(Bytes::from(c)))
                                            }));
                                        hyper::Response::builder()
                                            .status(status)
                                            .body(StreamBody::new(stream).boxed())
                                            .unwrap()
                                    }
                                };
                                Ok::<_, Infallible>(resp)
                            }
                        },
                    );
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(s), svc)
                                    .await;
                            }
                        }
                        None => {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        }
                    }
                });
            }
        });
        TestServer {
            addr,
            requests,
            connections,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

/// A CA, a server certificate for `127.0.0.1`/`localhost`, and a client
/// certificate, all PEM; `server_mtls` requires a client certificate from
/// the CA.
pub struct TestPki {
    pub ca_pem: String,
    pub server: Arc<rustls::ServerConfig>,
    pub server_mtls: Arc<rustls::ServerConfig>,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

pub fn test_pki() -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let chain = vec![cert.der().clone()];
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain.clone(), key_der.clone_key())
        .unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(vec!["kmshost-client".to_string()]).unwrap();
    client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client = client_params.signed_by(&client_key, &issuer).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let server_mtls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key_der)
        .unwrap();
    TestPki {
        ca_pem: ca.pem(),
        server: Arc::new(server),
        server_mtls: Arc::new(server_mtls),
        client_cert_pem: client.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

/// A one-shot HTTP/1.1 request (test-side client).
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<(u16, Vec<u8>), String> {
    request_tls(method, url, headers, body, None).await
}

/// As [`request`], trusting `ca_pem` for `https://` URLs.
pub async fn request_tls(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
    ca_pem: Option<&[u8]>,
) -> Result<(u16, Vec<u8>), String> {
    let (rest, tls) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(r), _) => (r, false),
        (_, Some(r)) => (r, true),
        _ => return Err(format!("not an http(s) URL: {url}")),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| e.to_string())?;
    let stream: Box<dyn Io> = if tls {
        let mut roots = rustls::RootCertStore::empty();
        let pem = ca_pem.ok_or("https needs a CA")?;
        for c in
            <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(
                pem,
            )
        {
            roots
                .add(c.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let host = authority
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(authority)
            .to_string();
        let name = rustls::pki_types::ServerName::try_from(host).map_err(|e| e.to_string())?;
        let s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        Box::new(s)
    } else {
        Box::new(tcp)
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut b = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes()
        .to_vec();
    Ok((status, bytes))
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Io for T {}
