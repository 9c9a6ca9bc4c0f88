//! TLS termination with rustls: certificate/key pairs from PEM files, the one for the client's
//! SNI name chosen per handshake, reloadable at run time (SIGHUP or the admin API) without
//! touching open connections. ALPN offers h2 and http/1.1.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate file {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("cannot read private key file {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("--tls-cert and --tls-key must come in pairs (got {certs} certificates, {keys} keys)")]
    Pairs { certs: usize, keys: usize },
    #[error("TLS setup failed: {0}")]
    Setup(String),
}

/// The loaded pairs, in the order given; the first is the default when SNI matches none.
struct Store(Vec<(Arc<CertifiedKey>, CertificateDer<'static>)>);

impl Store {
    fn load(pairs: &[(PathBuf, PathBuf)]) -> Result<Store, TlsError> {
        let provider = rustls::crypto::ring::default_provider();
        let mut out = Vec::new();
        for (cert, key) in pairs {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|e| TlsError::Cert {
                    path: cert.clone(),
                    reason: e.to_string(),
                })?;
            let Some(leaf) = chain.first().cloned() else {
                return Err(TlsError::Cert {
                    path: cert.clone(),
                    reason: "no certificate in the file".into(),
                });
            };
            let der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
                path: key.clone(),
                reason: e.to_string(),
            })?;
            let signing =
                provider
                    .key_provider
                    .load_private_key(der)
                    .map_err(|e| TlsError::Key {
                        path: key.clone(),
                        reason: e.to_string(),
                    })?;
            out.push((Arc::new(CertifiedKey::new(chain, signing)), leaf));
        }
        Ok(Store(out))
    }

    fn for_name(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let chosen = name.and_then(|n| {
            let server = ServerName::try_from(n.to_owned()).ok()?;
            self.0.iter().find(|(_, leaf)| {
                webpki::EndEntityCert::try_from(leaf)
                    .is_ok_and(|c| c.verify_is_valid_for_subject_name(&server).is_ok())
            })
        });
        chosen.or_else(|| self.0.first()).map(|(k, _)| k.clone())
    }
}

#[derive(Debug)]
struct Resolver {
    store: ArcSwap<Store>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({} pairs)", self.0.len())
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.store.load().for_name(hello.server_name())
    }
}

/// The TLS side of the proxy.
pub struct Tls {
    pairs: Vec<(PathBuf, PathBuf)>,
    resolver: Arc<Resolver>,
    pub acceptor: TlsAcceptor,
}

impl Tls {
    pub fn new(certs: &[PathBuf], keys: &[PathBuf]) -> Result<Tls, TlsError> {
        if certs.len() != keys.len() || certs.is_empty() {
            return Err(TlsError::Pairs {
                certs: certs.len(),
                keys: keys.len(),
            });
        }
        let pairs: Vec<(PathBuf, PathBuf)> =
            certs.iter().cloned().zip(keys.iter().cloned()).collect();
        let resolver = Arc::new(Resolver {
            store: ArcSwap::from_pointee(Store::load(&pairs)?),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            pairs,
            resolver,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Read the files again. New handshakes use the new pairs; open connections are untouched.
    /// On any error the old pairs stay.
    pub fn reload(&self) -> Result<usize, TlsError> {
        let store = Store::load(&self.pairs)?;
        let n = store.0.len();
        self.resolver.store.store(Arc::new(store));
        Ok(n)
    }
}
