//! `quayside healthcheck`: the client side of `/readyz`, for the image's `HEALTHCHECK` (a
//! `FROM scratch` image has no curl). It asks the admin listener on loopback; when the admin
//! API is served over TLS it speaks TLS and accepts exactly the certificate the server was given
//! (`--admin-tls-cert`, read from the same flags and variables): the name in that certificate
//! is the operator's, not `127.0.0.1`, so a name check would fail while pinning the very
//! certificate is stricter.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum HealthcheckError {
    #[error("cannot read the admin TLS certificate {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("no answer from the admin API on {0} within 5s")]
    Timeout(SocketAddr),
    #[error("cannot ask the admin API on {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// Not ready: the body says why.
    #[error("{0}")]
    NotReady(String),
}

/// Ask `/readyz` at `addr` (a wildcard address is asked on loopback), over TLS pinned to the
/// certificate in `tls_cert` if given. Returns the body of a 200 answer.
pub async fn ask(
    mut addr: SocketAddr,
    tls_cert: Option<&Path>,
) -> Result<String, HealthcheckError> {
    // Every address: asked on IPv4's loopback, which `[::]` (`:PORT`) takes too, bound
    // dual-stack, and which is there where the host has no IPv6 and it fell back to 0.0.0.0.
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let connector = tls_cert.map(pinned).transpose()?;
    let io = |source| HealthcheckError::Io { addr, source };
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        match connector {
            Some(c) => {
                let name = ServerName::from(addr.ip());
                request(c.connect(name, tcp).await?).await
            }
            None => request(tcp).await,
        }
    };
    let answer = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| HealthcheckError::Timeout(addr))?
        .map_err(io)?;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b).trim();
    if answer.starts_with("HTTP/1.1 200 ") {
        Ok(body.to_owned())
    } else {
        Err(HealthcheckError::NotReady(body.to_owned()))
    }
}

async fn request<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> std::io::Result<String> {
    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    // (A TLS peer that closes without close_notify still gave its whole answer.)
    match s.read_to_end(&mut answer).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
        Err(e) => return Err(e),
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

fn pinned(path: &Path) -> Result<tokio_rustls::TlsConnector, HealthcheckError> {
    let err = |reason: String| HealthcheckError::Cert {
        path: path.display().to_string(),
        reason,
    };
    let cert = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .next()
        .ok_or_else(|| err("it holds no certificate".into()))?
        .map_err(|e| err(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { cert, provider }))
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Accepts the one certificate it holds, and signatures made with its key.
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the admin listener presents another certificate than --admin-tls-cert".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
