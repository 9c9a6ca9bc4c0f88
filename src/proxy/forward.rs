//! One request: route, pick, rewrite, send, classify the outcome.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Response, Uri, Version, header};
use http_body_util::{Either, Empty, Full};
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::{ProxyConfig, ProxyError, headers};
use crate::registry::Shared;
use crate::routing::Upstream;

pub type Body = Either<Incoming, Full<Bytes>>;
/// The client's body, or an empty one for a retried bodiless request.
type UpstreamBody = Either<Incoming, Empty<Bytes>>;

pub struct Forwarder {
    shared: Arc<Shared>,
    client: Client<HttpConnector, UpstreamBody>,
    response_header_timeout: Duration,
    proto: HeaderValue,
}

impl Forwarder {
    pub fn new(shared: Arc<Shared>, config: &ProxyConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .build(connector);
        Forwarder {
            shared,
            client,
            response_header_timeout: config.response_header_timeout,
            proto: HeaderValue::from_static("http"),
        }
    }

    pub async fn handle(&self, req: Request<Incoming>, client_ip: HeaderValue) -> Response<Body> {
        match self.forward(req, &client_ip).await {
            Ok(resp) => resp,
            Err(e) => {
                match &e {
                    ProxyError::NoBackend { .. } | ProxyError::BadRequest(_) => {
                        tracing::debug!(error = %e, "request not forwarded")
                    }
                    _ => tracing::warn!(error = %e, "request failed"),
                }
                e.into_response().map(Either::Right)
            }
        }
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        client_ip: &HeaderValue,
    ) -> Result<Response<Body>, ProxyError> {
        let (mut parts, body) = req.into_parts();
        let (service, first) = {
            let table = self.shared.table.load();
            let host = parts
                .uri
                .authority()
                .map(|a| a.host())
                .or_else(|| {
                    parts
                        .headers
                        .get(header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .map(headers::host_only)
                })
                .unwrap_or("");
            let service = table.route(host, parts.uri.path());
            let first = service.pick().ok_or_else(|| ProxyError::NoBackend {
                service: service.name.clone(),
            })?;
            (service.clone(), first.clone())
        };

        let pq = upstream_path(&parts.uri, service.strip_prefix.as_deref())?;
        headers::strip_hop_by_hop(&mut parts.headers);
        headers::set_forwarded(&mut parts.headers, client_ip, &self.proto);
        // A request without a body can be sent again elsewhere if the first backend never saw
        // it (or, for idempotent methods, dropped the connection before answering).
        let replay =
            (body.is_end_stream() && service.backends.len() > 1).then(|| parts.headers.clone());
        let mut body = Some(Either::Left(body));
        let mut tried: Vec<Arc<Upstream>> = Vec::new();
        let mut upstream = first;
        loop {
            let mut req = Request::new(body.take().unwrap_or(Either::Right(Empty::new())));
            *req.method_mut() = parts.method.clone();
            *req.uri_mut() = upstream_uri(&pq, &upstream)?;
            *req.version_mut() = Version::HTTP_11;
            *req.headers_mut() = match &replay {
                Some(h) if !tried.is_empty() => h.clone(),
                _ => std::mem::take(&mut parts.headers),
            };
            let err = match self.send(req, &upstream).await {
                Ok(resp) => return Ok(resp),
                Err(e) => e,
            };
            let retryable = err.never_reached_backend()
                || (is_idempotent(&parts.method) && matches!(err, ProxyError::Upstream { .. }));
            tried.push(upstream);
            let next = (replay.is_some() && retryable && tried.len() < MAX_ATTEMPTS)
                .then(|| service.pick_other(&tried))
                .flatten();
            match next {
                Some(n) => {
                    tracing::debug!(error = %err, retry_on = %n.no, "retrying on another backend");
                    upstream = n.clone();
                }
                None => return Err(err),
            }
        }
    }

    async fn send(
        &self,
        req: Request<UpstreamBody>,
        upstream: &Upstream,
    ) -> Result<Response<Body>, ProxyError> {
        let sent = self.client.request(req);
        let resp = match tokio::time::timeout(self.response_header_timeout, sent).await {
            Err(_) => {
                return Err(ProxyError::ResponseTimeout {
                    no: upstream.no.clone(),
                    timeout: self.response_header_timeout,
                });
            }
            Ok(Err(e)) => return Err(classify(&e, upstream)),
            Ok(Ok(resp)) => resp,
        };
        let (mut parts, body) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, Either::Left(body)))
    }
}

/// Attempts per request, the first included.
const MAX_ATTEMPTS: usize = 3;

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// The path and query to send upstream, with the service's prefix stripped if it says so.
fn upstream_path(original: &Uri, strip: Option<&str>) -> Result<PathAndQuery, ProxyError> {
    Ok(match (original.path_and_query(), strip) {
        (Some(pq), Some(prefix)) => {
            let rest = pq.path().strip_prefix(prefix).unwrap_or(pq.path());
            let path = if rest.starts_with('/') {
                rest.to_owned()
            } else {
                format!("/{rest}")
            };
            let s = match pq.query() {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            PathAndQuery::try_from(s).map_err(|_| ProxyError::BadRequest("invalid path"))?
        }
        (Some(pq), None) => pq.clone(),
        (None, _) => PathAndQuery::from_static("/"),
    })
}

fn upstream_uri(pq: &PathAndQuery, upstream: &Upstream) -> Result<Uri, ProxyError> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(upstream.authority.clone());
    parts.path_and_query = Some(pq.clone());
    Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest("invalid request target"))
}

fn classify(e: &hyper_util::client::legacy::Error, upstream: &Upstream) -> ProxyError {
    let no = upstream.no.clone();
    if e.is_connect() {
        let mut source = e.source();
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::TimedOut
            {
                return ProxyError::ConnectTimeout { no };
            }
            source = s.source();
        }
        tracing::debug!(error = ?e, addr = %upstream.addr, "connect failed");
        return ProxyError::Connect { no };
    }
    tracing::debug!(error = ?e, addr = %upstream.addr, "upstream failed");
    ProxyError::Upstream { no }
}
