//! TLS termination with rustls: certificate/key pairs from PEM files, the one for the client's
//! SNI name chosen per handshake, reloadable at run time (SIGHUP or the admin API) without
//! touching open connections. ALPN offers h2 and http/1.1 (and `acme-tls/1` with automatic
//! HTTPS on). Certificates obtained at run time ([`Obtained`]) serve the names no configured
//! certificate covers.

use std::collections::HashMap;
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

/// The ALPN protocol of TLS-ALPN-01 challenge handshakes (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// What automatic HTTPS obtains at run time: certificates by exact name, and the answers to
/// the CA's challenges (HTTP-01 key authorizations by token, TLS-ALPN-01 certificates by
/// name). Written by the ACME task; read per handshake and per challenge request, lock-free.
#[derive(Default)]
pub struct Obtained {
    certs: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
    alpn: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
    /// HTTP-01 token → the name it is for, and its key authorization.
    http: ArcSwap<HashMap<String, (String, bytes::Bytes)>>,
}

impl std::fmt::Debug for Obtained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Obtained({} certificates)", self.certs.load().len())
    }
}

/// Change one entry of a copy-on-write map.
fn edit<V: Clone>(map: &ArcSwap<HashMap<String, V>>, key: &str, value: Option<V>) {
    map.rcu(|m| {
        let mut m = HashMap::clone(m);
        match &value {
            Some(v) => m.insert(key.to_owned(), v.clone()),
            None => m.remove(key),
        };
        m
    });
}

impl Obtained {
    pub fn set_cert(&self, name: &str, key: Option<Arc<CertifiedKey>>) {
        edit(&self.certs, name, key);
    }
    pub fn cert(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.certs.load().get(name).cloned()
    }
    pub fn set_alpn(&self, name: &str, key: Option<Arc<CertifiedKey>>) {
        edit(&self.alpn, name, key);
    }
    /// Answer (Some) or stop answering (None) HTTP-01 token `token`, asked for under `name`.
    pub fn set_http(&self, token: &str, answer: Option<(&str, bytes::Bytes)>) {
        edit(
            &self.http,
            token,
            answer.map(|(name, key_authorization)| (name.to_ascii_lowercase(), key_authorization)),
        );
    }
    /// The key authorization for an HTTP-01 token this quayside is answering, when `host` (a
    /// host name without port) is the name the challenge is for: the CA asks under that name,
    /// and nobody else needs to be told.
    pub fn http_answer(&self, token: &str, host: &str) -> Option<bytes::Bytes> {
        let map = self.http.load();
        if map.is_empty() {
            return None;
        }
        let (name, answer) = map.get(token)?;
        let host = host.strip_suffix('.').unwrap_or(host);
        name.eq_ignore_ascii_case(host).then(|| answer.clone())
    }
}

/// A certificate chain and its key, from PEM text (an obtained certificate read back).
pub fn certified_key(chain_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if chain.is_empty() {
        return Err("no certificate in the PEM text".into());
    }
    let der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| e.to_string())?;
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
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

    /// The configured pair whose certificate is valid for `name`.
    fn covering(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        let server = ServerName::try_from(name.to_owned()).ok()?;
        self.0
            .iter()
            .find(|(_, leaf)| {
                webpki::EndEntityCert::try_from(leaf)
                    .is_ok_and(|c| c.verify_is_valid_for_subject_name(&server).is_ok())
            })
            .map(|(k, _)| k)
    }

    /// A configured certificate for the name wins; then one obtained for it; then the first
    /// configured one.
    fn for_name(
        &self,
        name: Option<&str>,
        obtained: Option<&Obtained>,
    ) -> Option<Arc<CertifiedKey>> {
        if let Some(n) = name {
            if let Some(k) = self.covering(n) {
                return Some(k.clone());
            }
            if let Some(k) = obtained.and_then(|o| o.cert(&n.to_ascii_lowercase())) {
                return Some(k);
            }
        }
        self.0.first().map(|(k, _)| k.clone())
    }
}

#[derive(Debug)]
struct Resolver {
    store: ArcSwap<Store>,
    obtained: Option<Arc<Obtained>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({} pairs)", self.0.len())
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let obtained = self.obtained.as_deref();
        if let Some(o) = obtained
            && hello
                .alpn()
                .is_some_and(|mut protos| protos.any(|p| p == ACME_TLS_ALPN))
        {
            // A TLS-ALPN-01 validation: only the challenge certificate, and nothing else.
            let name = hello.server_name()?.to_ascii_lowercase();
            return o.alpn.load().get(&name).cloned();
        }
        self.store.load().for_name(hello.server_name(), obtained)
    }
}

/// The TLS side of the proxy.
pub struct Tls {
    pairs: Vec<(PathBuf, PathBuf)>,
    resolver: Arc<Resolver>,
    pub acceptor: TlsAcceptor,
}

impl Tls {
    /// The configured pairs, and with `obtained` (automatic HTTPS) the certificates obtained
    /// at run time; with those, no configured pair is needed.
    pub fn new(
        certs: &[PathBuf],
        keys: &[PathBuf],
        obtained: Option<Arc<Obtained>>,
    ) -> Result<Tls, TlsError> {
        if certs.len() != keys.len() || (certs.is_empty() && obtained.is_none()) {
            return Err(TlsError::Pairs {
                certs: certs.len(),
                keys: keys.len(),
            });
        }
        let pairs: Vec<(PathBuf, PathBuf)> =
            certs.iter().cloned().zip(keys.iter().cloned()).collect();
        let acme = obtained.is_some();
        let resolver = Arc::new(Resolver {
            store: ArcSwap::from_pointee(Store::load(&pairs)?),
            obtained,
        });
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        if acme {
            config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
        }
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

    /// The configured certificate valid for `name` (which it then serves, whatever was
    /// obtained for it): its file and leaf.
    pub fn covering(&self, name: &str) -> Option<(PathBuf, CertificateDer<'static>)> {
        let store = self.resolver.store.load();
        let key = store.covering(name)?;
        let i = store.0.iter().position(|(k, _)| Arc::ptr_eq(k, key))?;
        Some((self.pairs.get(i)?.0.clone(), store.0[i].1.clone()))
    }

    /// The configured certificates (leaf, as DER) with the file each came from.
    pub fn configured(&self) -> Vec<(PathBuf, CertificateDer<'static>)> {
        let store = self.resolver.store.load();
        self.pairs
            .iter()
            .zip(store.0.iter())
            .map(|((path, _), (_, leaf))| (path.clone(), leaf.clone()))
            .collect()
    }
}
