//! TLS: the worker's HTTPS listener, certificate reload, worker CA verification (including a
//! CA with Vast's Key Usage quirk), the Vast CA download cache and https backends.

mod backend;
mod files;
mod reload;
mod serve;
pub mod vast_ca;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::CertificateDer;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use vespa::http_util::full;
use vespa::serve::{Tls, accept_loop_tls};
use vespa::tls::client::WorkerCa;
use vespa::tls::server::{ServerTls, TlsFiles};

/// A test certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
}

impl Ca {
    /// An ordinary root CA (Key Usage keyCertSign + cRLSign, no path length).
    pub fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ca::self_signed(params)
    }

    /// A root CA built like Vast's: `pathLenConstraint` set in Basic Constraints but no
    /// `keyCertSign` in Key Usage (what OpenSSL 3's strict mode rejects).
    pub fn vast_quirk() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        Ca::self_signed(params)
    }

    fn self_signed(mut params: CertificateParams) -> Ca {
        // Distinct subjects, so a certificate from another CA is an unknown issuer.
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("Vespa test CA {n}"));
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A leaf certificate for `name` (an IP address becomes an IP SAN), with the Key Usage
    /// of a Vast instance certificate and no Extended Key Usage.
    pub fn leaf(&self, name: &str) -> Leaf {
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            der: cert.der().clone(),
            key_pem: key.serialize_pem(),
        }
    }

    /// This CA as a [`WorkerCa`].
    pub fn worker_ca(&self) -> WorkerCa {
        WorkerCa::from_bytes(Path::new("test-ca.pem"), self.pem.as_bytes()).unwrap()
    }
}

/// A leaf certificate and its key.
pub struct Leaf {
    pub cert_pem: String,
    pub der: CertificateDer<'static>,
    pub key_pem: String,
}

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("vespa-tls-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `leaf` to `cert.pem` and `key.pem` in `dir`.
pub fn write_pair(dir: &TempDir, leaf: &Leaf) -> TlsFiles {
    let files = TlsFiles::new(dir.path("cert.pem"), dir.path("key.pem"));
    std::fs::write(&files.cert, &leaf.cert_pem).unwrap();
    std::fs::write(&files.key, &leaf.key_pem).unwrap();
    files
}

/// A TLS server with a certificate from `ca` for `name`, and the files it loaded.
pub struct Https {
    pub ca: Ca,
    pub leaf: Leaf,
    pub files: TlsFiles,
    pub tls: ServerTls,
    pub server: Server,
    pub dir: TempDir,
}

impl Https {
    pub async fn start(ca: Ca, name: &str) -> Https {
        let dir = TempDir::new();
        let leaf = ca.leaf(name);
        let files = write_pair(&dir, &leaf);
        let tls = vespa::tls::server::load(&files).unwrap();
        let server = serve(&tls).await;
        Https {
            ca,
            leaf,
            files,
            tls,
            server,
            dir,
        }
    }

    /// A connection trusting the server's own CA, offering HTTP/1.1.
    pub async fn connect(&self) -> TlsStream<TcpStream> {
        connect(self.server.addr, &self.ca.worker_ca(), &[b"http/1.1"])
            .await
            .unwrap()
    }
}

/// The status of `GET /` on a new HTTP/1.1 connection over `stream`.
pub async fn get_status(stream: TlsStream<TcpStream>) -> u16 {
    let resp = h1(stream).await.send_request(get("/")).await.unwrap();
    text(resp).await.0
}

/// A TLS server answering every request with 200 and the request's HTTP version.
pub struct Server {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn serve(tls: &ServerTls) -> Server {
    serve_with(Tls::new(tls.config())).await
}

pub async fn serve_with(tls: Tls) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(accept_loop_tls(listener, Some(tls), |req| async move {
        Response::new(full(format!("{:?}", req.version())))
    }));
    Server { addr, task }
}

/// A TLS connection to `addr` trusting `ca`, offering `alpn`, checking the name `127.0.0.1`.
pub async fn connect(
    addr: SocketAddr,
    ca: &WorkerCa,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut config = ca.client_config().unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await?;
    vespa::tls::client::connect(Arc::new(config), "127.0.0.1", tcp).await
}

/// The certificate error behind a failed handshake.
pub fn certificate_error(err: &std::io::Error) -> rustls::CertificateError {
    match err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(e)) => e.clone(),
        _ => panic!("not a certificate error: {err}"),
    }
}

/// True for a certificate refused because it does not name the address connected to.
pub fn is_wrong_name(err: &std::io::Error) -> bool {
    matches!(
        certificate_error(err),
        rustls::CertificateError::NotValidForName
            | rustls::CertificateError::NotValidForNameContext { .. }
    )
}

/// The leaf certificate the server presented.
pub fn peer_leaf(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// An HTTP/1.1 connection over `stream`.
pub async fn h1(
    stream: TlsStream<TcpStream>,
) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// An HTTP/2 connection over `stream`.
pub async fn h2(
    stream: TlsStream<TcpStream>,
) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// `GET /` for a connection-level client (absolute URI for h2, origin-form for h1).
pub fn get(uri: &str) -> Request<Empty<Bytes>> {
    Request::get(uri).body(Empty::new()).unwrap()
}

/// Status and body text of `resp`.
pub async fn text<B>(resp: Response<B>) -> (u16, String)
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}
