//! The serving certificate of the HTTPS `/metrics` endpoint and a TLS listener for axum.
//!
//! The certificate comes from `metrics.cert_file` / `metrics.key_file` when set (a mounted
//! Secret, e.g. issued by cert-manager, which Prometheus can verify), else a self-signed
//! one is generated in memory at start, as controller-runtime does; a ServiceMonitor then
//! scrapes with `insecureSkipVerify` (the bearer token still authenticates the scraper;
//! the certificate only protects the samples in transit).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{net::TcpListener, sync::mpsc};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        ServerConfig,
        pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject},
    },
    server::TlsStream,
};

/// A handshake that takes longer is dropped, so a stalled client holds nothing.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The serving certificate could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Only one of the two files is configured.
    #[error(
        "metrics.cert_file and metrics.key_file must be set together (or neither, for a self-signed certificate)"
    )]
    HalfConfigured,
    /// A PEM file is unreadable or holds no certificate / key.
    #[error("reading {path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Generating the self-signed certificate failed.
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The certificate and key do not fit together, or rustls refused them.
    #[error("the metrics certificate: {0}")]
    Rustls(#[from] tokio_rustls::rustls::Error),
}

/// Where the certificate came from, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// Files (a mounted Secret).
    Files(PathBuf),
    /// Generated at start.
    SelfSigned,
}

impl std::fmt::Display for CertSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertSource::Files(path) => write!(f, "{}", path.display()),
            CertSource::SelfSigned => f.write_str("self-signed, generated at start"),
        }
    }
}

fn pem_error(path: &Path) -> impl Fn(tokio_rustls::rustls::pki_types::pem::Error) -> Error + '_ {
    move |e| Error::Pem {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// The rustls configuration: from the files if both are given, else self-signed for
/// `names` (the Service's DNS names; SANs only matter to clients that verify).
pub fn server_config(
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
    names: &[String],
) -> Result<(Arc<ServerConfig>, CertSource), Error> {
    let (chain, key, source) = match (cert_file, key_file) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(pem_error(cert))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(pem_error(cert))?;
            if chain.is_empty() {
                return Err(Error::Pem {
                    path: cert.to_path_buf(),
                    reason: "no CERTIFICATE block".into(),
                });
            }
            let private = PrivateKeyDer::from_pem_file(key).map_err(pem_error(key))?;
            (chain, private, CertSource::Files(cert.to_path_buf()))
        }
        (None, None) => {
            let generated = rcgen::generate_simple_self_signed(names.to_vec())?;
            let key = PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der());
            (
                vec![generated.cert.der().clone()],
                PrivateKeyDer::Pkcs8(key),
                CertSource::SelfSigned,
            )
        }
        _ => return Err(Error::HalfConfigured),
    };
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), source))
}

/// A listener whose connections are TLS streams. Handshakes run in their own tasks, so a
/// slow or hostile client never delays the next one.
pub struct TlsListener {
    addr: SocketAddr,
    accepted: mpsc::Receiver<(TlsStream<tokio::net::TcpStream>, SocketAddr)>,
    _acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Wraps a bound `listener`.
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, accepted) = mpsc::channel(64);
        let task = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(conn) => conn,
                    Err(err) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(%err, "accepting a metrics connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(err)) => tracing::debug!(%peer, %err, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            addr,
            accepted,
            _acceptor: task,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(conn) => conn,
            // The acceptor task only ends with the runtime.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self._acceptor.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_is_made_when_no_files_are_given() {
        let (_, source) = server_config(None, None, &["localhost".into()]).expect("generated");
        assert_eq!(source, CertSource::SelfSigned);
    }

    #[test]
    fn half_a_configuration_is_refused() {
        let err = server_config(Some(Path::new("/x.crt")), None, &[]).unwrap_err();
        assert!(matches!(err, Error::HalfConfigured), "{err}");
    }

    #[test]
    fn files_are_loaded_and_bad_ones_named() {
        let dir = tempfile::tempdir().unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["x".to_string()]).unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        let (_, source) = server_config(Some(&cert), Some(&key), &[]).expect("loads");
        assert_eq!(source, CertSource::Files(cert.clone()));

        std::fs::write(&key, "not a key").unwrap();
        let err = server_config(Some(&cert), Some(&key), &[]).unwrap_err();
        assert!(err.to_string().contains("tls.key"), "{err}");
    }
}
