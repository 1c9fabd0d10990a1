//! TLS: the process's one rustls crypto provider, the certificate files,
//! HTTPS for the HTTP API and dashboard, and the settings Flight between
//! nodes gets from them (docs/security.md, "TLS").
//!
//! HTTPS is served by axum's own `serve` over a listener that hands it
//! finished TLS streams, so that HTTP and HTTPS share one serving path
//! (graceful shutdown, the guard, every route) and only the bytes on the
//! wire differ.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A TLS handshake not finished within this is dropped (a client that
/// opens connections and sends nothing cannot hold them).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes under way at once; a connection past it is closed at once.
const MAX_HANDSHAKES: usize = 256;

/// A certificate file or key that cannot be used, named with why.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {flag} {path}: {error}")]
    Read {
        flag: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{flag} {path} holds no PEM certificate")]
    NoCertificate { flag: &'static str, path: PathBuf },
    #[error("--tls-key {0} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey(PathBuf),
    #[error("--tls-cert and --tls-key do not make a usable pair: {0}")]
    Pair(rustls::Error),
    #[error("{0} needs --tls-cert and --tls-key")]
    Needs(&'static str),
}

/// Makes `ring` the crypto provider of every rustls user in the process
/// (tonic, reqwest, the HTTPS listener), before any of them picks one: a
/// dependency that prefers another provider cannot make rustls panic at
/// its first handshake. Calling it again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The node's certificate chain (also as PEM: the default of what peers
/// are trusted by) and key, read once at start.
pub struct NodeCertificate {
    pub cert_pem: Vec<u8>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl NodeCertificate {
    pub fn load(cert: &Path, key: &Path) -> Result<NodeCertificate, TlsError> {
        let cert_pem = read("--tls-cert", cert)?;
        let key_pem = read("--tls-key", key)?;
        let chain = certificates("--tls-cert", cert, &cert_pem)?;
        let parsed =
            PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey(key.into()))?;
        let node = NodeCertificate {
            cert_pem,
            chain,
            key: parsed,
        };
        node.https()?;
        Ok(node)
    }

    /// The HTTPS server's settings: this certificate, no client
    /// certificates (API keys authenticate clients), HTTP/2 and 1.1.
    pub fn https(&self) -> Result<Arc<ServerConfig>, TlsError> {
        self.server(&[b"h2", b"http/1.1"])
    }

    /// The Postgres door's settings: the same certificate, and the
    /// protocol name libpq 17 and later ask for.
    pub fn postgres(&self) -> Result<Arc<ServerConfig>, TlsError> {
        self.server(&[b"postgresql"])
    }

    fn server(&self, protocols: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(TlsError::Pair)?;
        config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// The certificates a node trusts for its peers' Flight service (a cluster
/// CA, or the one certificate every node shares), as PEM.
pub fn load_ca(path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = read("--tls-ca", path)?;
    certificates("--tls-ca", path, &pem)?;
    Ok(pem)
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        flag,
        path: path.into(),
        error,
    })
}

fn certificates(
    flag: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            flag,
            path: path.into(),
        });
    }
    Ok(chain)
}

/// A TCP listener whose connections come out as finished TLS streams, for
/// axum's `serve` (HTTPS) and tonic (Flight and OTLP/gRPC over TLS).
/// Handshakes run on their own tasks, each bounded in time; past
/// `MAX_HANDSHAKES` under way, a new connection is closed at once rather
/// than waited for, so silent clients cannot stop the accepting of others.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(accept_loop(tcp, acceptor, tx));
        Ok(TlsListener { ready, local })
    }

    /// The finished streams, as tonic's `serve_with_incoming` takes them.
    pub fn into_stream(
        self,
    ) -> impl futures::Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> {
        use futures::StreamExt;
        tokio_stream::wrappers::ReceiverStream::new(self.ready).map(|(stream, _)| Ok(stream))
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let accepted = tokio::select! {
            _ = tx.closed() => return,
            accepted = tcp.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait, as axum does.
                tracing::warn!(error = %e, "cannot accept an HTTPS connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(turn) = handshakes.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many TLS handshakes under way: connection closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _turn = turn;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task ended: no connection comes any more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}
