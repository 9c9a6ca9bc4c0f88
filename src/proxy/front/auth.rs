//! The middlewares that need I/O of their own, for hyper's side: a new basic-auth password
//! checked off the event loop, and forward auth's request to its service.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::middleware::{Answer, ForwardAuth, Middleware, basic::BasicAuth};
use crate::proxy::codec::headers;
use crate::proxy::forwarder::{AuthClient, Forwarder};

/// The most of a forward-auth answer's body relayed to a refused client.
const MAX_AUTH_BODY: usize = 64 * 1024;

/// Check a basic-auth credential not seen yet, on tokio's blocking threads (a bcrypt or argon2
/// check takes milliseconds); `Err`: 401.
pub async fn verify_basic(
    m: &Arc<Middleware>,
    authorization: Option<&HeaderValue>,
) -> Result<(), Answer> {
    let credential = authorization
        .and_then(|v| BasicAuth::credential(v.as_bytes()))
        .map(<[u8]>::to_vec);
    let Some(credential) = credential else {
        return Err(m.unauthorized());
    };
    let m2 = m.clone();
    let ok = tokio::task::spawn_blocking(move || {
        m2.basic.as_ref().is_some_and(|b| b.verify(&credential))
    })
    .await
    .unwrap_or(false);
    if ok { Ok(()) } else { Err(m.unauthorized()) }
}

/// Ask `f.uri` about a request (its headers, and where it was going); 2xx: the headers named by
/// `copy_headers`, to add to the request; anything else: that answer, for the client.
/// `forwarding`: the request's forwarding headers, as the backend would get them; `target`:
/// its path and query under the path rule.
pub async fn forward_auth(
    fwd: &Forwarder,
    f: &ForwardAuth,
    parts: &http::request::Parts,
    forwarding: &headers::Forwarding<'_>,
    target: &str,
) -> Result<Vec<(HeaderName, HeaderValue)>, Answer> {
    let mut ask = Request::new(Empty::<Bytes>::new());
    *ask.uri_mut() = f.uri.clone();
    let mut h = parts.headers.clone();
    headers::strip_hop_by_hop(&mut h);
    h.remove(header::CONTENT_LENGTH);
    h.remove(header::HOST);
    let set = |h: &mut HeaderMap, name: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    set(&mut h, "x-forwarded-method", parts.method.as_str());
    set(&mut h, "x-forwarded-uri", target);
    // As the backend would get them, but X-Forwarded-For names the client alone.
    headers::set_forwarded(&mut h, forwarding);
    h.insert(&headers::X_FORWARDED_FOR, forwarding.client.clone());
    if let Some(host) = parts.headers.get(header::HOST) {
        h.insert(&headers::X_FORWARDED_HOST, host.clone());
    }
    *ask.headers_mut() = h;
    let url = f.uri.to_string();
    let unreachable = |why: String| {
        tracing::warn!(url = %url, error = %why, "forward auth did not answer; the request gets 502 (check that the auth service runs and is reachable from quayside)");
        Answer::new(
            StatusCode::BAD_GATEWAY,
            format!("502 Bad Gateway: the authentication service did not answer ({why})\n"),
        )
    };
    let answer = tokio::time::timeout(fwd.timeouts.response_header, client_of(fwd).request(ask))
        .await
        .map_err(|_| unreachable("timed out".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    let (mut head, body) = answer.into_parts();
    if head.status.is_success() {
        return Ok(f
            .copy_headers
            .iter()
            .flat_map(|n| {
                head.headers
                    .get_all(n)
                    .iter()
                    .map(|v| (n.clone(), v.clone()))
                    .collect::<Vec<_>>()
            })
            .collect());
    }
    let body = Limited::new(body, MAX_AUTH_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| unreachable(e.to_string()))?;
    headers::strip_hop_by_hop(&mut head.headers);
    head.headers.remove(header::CONTENT_LENGTH);
    Err(Answer {
        status: head.status,
        headers: head
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect(),
        body,
    })
}

fn client_of(fwd: &Forwarder) -> &AuthClient {
    fwd.auth_client.get_or_init(|| {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(fwd.timeouts.connect));
        // (`https://` needs the connector to pass the scheme through.)
        connector.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_client())
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        HttpClient::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(fwd.timeouts.pool_idle)
            .build(https)
    })
}

/// TLS to an https auth service: the system's CA roots (`SSL_CERT_FILE` or
/// `/etc/ssl/certs`, which the image carries), read once per worker at its first such request.
fn tls_client() -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "a CA root could not be read; https forward auth may fail to verify its service");
    }
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!(
            "no CA roots found (set SSL_CERT_FILE to a PEM bundle); https forward auth will fail to verify its service"
        );
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .unwrap_or_else(|_| {
            // (ring supports the default versions; kept total rather than panicking.)
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        })
}
