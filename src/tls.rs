//! Optional TLS (and mTLS) on the gRPC and HTTP listeners, with certificates reloaded when their
//! files change (cert-manager rotates them in place).
//!
//! One accept loop per listener hands TCP connections to concurrent handshakes; finished TLS
//! streams go to the server through a channel, so a slow or hostile handshake never holds up
//! others. Each handshake uses the configuration current at that moment: a rotated certificate
//! applies to new connections, existing ones keep theirs. A rotation that does not load (half
//! written files, a key that does not match) keeps the previous configuration and is logged.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// How often the files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// A handshake that takes longer is dropped: it only holds a task, never the accept loop.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for the server to take them.
const QUEUE: usize = 256;

/// Where the PEM files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by one of these CAs (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// Which file a problem is about, so configuration errors can name the variable.
#[derive(Debug, PartialEq, Eq)]
pub enum TlsError {
    Cert(String),
    Key(String),
    ClientCa(String),
}

// === impl TlsFiles ===

impl TlsFiles {
    /// Load and check every file; build the server configuration.
    pub fn server_config(&self) -> Result<ServerConfig, TlsError> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|iter| iter.collect::<Result<_, _>>())
            .map_err(|e| TlsError::Cert(format!("{}: {e}", self.cert.display())))?;
        if certs.is_empty() {
            return Err(TlsError::Cert(format!(
                "{}: no PEM certificate in the file",
                self.cert.display()
            )));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| TlsError::Key(format!("{}: {e}", self.key.display())))?;

        let builder = match &self.client_ca {
            None => ServerConfig::builder().with_no_client_auth(),
            Some(path) => {
                let mut roots = RootCertStore::empty();
                let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                    .and_then(|iter| iter.collect::<Result<_, _>>())
                    .map_err(|e| TlsError::ClientCa(format!("{}: {e}", path.display())))?;
                for ca in cas {
                    roots
                        .add(ca)
                        .map_err(|e| TlsError::ClientCa(format!("{}: {e}", path.display())))?;
                }
                if roots.is_empty() {
                    return Err(TlsError::ClientCa(format!(
                        "{}: no PEM certificate in the file",
                        path.display()
                    )));
                }
                let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                    .build()
                    .map_err(|e| TlsError::ClientCa(format!("{}: {e}", path.display())))?;
                ServerConfig::builder().with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Key(format!("does not match the certificate: {e}")))?;
        // gRPC needs h2; the HTTP listener serves both.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    fn stamps(&self) -> Vec<Option<SystemTime>> {
        let stamp = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let mut out = vec![stamp(&self.cert), stamp(&self.key)];
        if let Some(ca) = &self.client_ca {
            out.push(stamp(ca));
        }
        out
    }
}

/// TLS files and the server configuration loaded from them at start-up.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    pub files: TlsFiles,
    pub loaded: Arc<ServerConfig>,
}

impl TlsSettings {
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let loaded = Arc::new(files.server_config()?);
        Ok(TlsSettings { files, loaded })
    }
}

/// The current server configuration, swapped when the files change.
pub struct TlsReloader {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

// === impl TlsReloader ===

impl TlsReloader {
    /// Starts from the configuration loaded at start-up.
    pub fn new(settings: TlsSettings) -> Arc<Self> {
        Arc::new(TlsReloader {
            files: settings.files,
            current: RwLock::new(settings.loaded),
        })
    }

    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Poll the files until stopped; reload when any of them changes.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let mut seen = self.files.stamps();
        let mut tick = tokio::time::interval(RELOAD_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = self.files.stamps();
            if now == seen {
                continue;
            }
            match self.files.server_config() {
                Ok(config) => {
                    if let Ok(mut current) = self.current.write() {
                        *current = Arc::new(config);
                    }
                    seen = now;
                    tracing::info!("TLS certificates reloaded");
                }
                // Likely mid-rotation: keep serving the old ones and try again next tick.
                Err(error) => tracing::warn!(
                    ?error,
                    "TLS certificates changed but do not load; keeping the previous ones"
                ),
            }
        }
    }
}

/// Accept TCP connections and hand finished TLS handshakes to the server.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<TlsReloader>,
    stop: CancellationToken,
) -> mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)> {
    let (sender, receiver) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(tls.current());
            let sender = sender.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = sender.send((stream, peer)).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    receiver
}

/// A TLS listener for axum's `serve`.
pub struct TlsListener {
    pub receiver: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    pub local_addr: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.receiver.recv().await {
            Some(accepted) => accepted,
            // The accept loop stopped: shutdown is under way, never hand out another one.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}
