//! One request: route, pick, rewrite, send, classify the outcome.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::{ProxyConfig, ProxyError, headers};
use crate::registry::Shared;
use crate::routing::Upstream;

pub type Body = Either<Incoming, Full<Bytes>>;

pub struct Forwarder {
    shared: Arc<Shared>,
    client: Client<HttpConnector, Incoming>,
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
        let (upstream, strip) = {
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
            let upstream = service
                .pick()
                .ok_or_else(|| ProxyError::NoBackend {
                    service: service.name.clone(),
                })?
                .clone();
            (upstream, service.strip_prefix.clone())
        };

        parts.uri = upstream_uri(&parts.uri, &upstream, strip.as_deref())?;
        parts.version = Version::HTTP_11;
        headers::strip_hop_by_hop(&mut parts.headers);
        headers::set_forwarded(&mut parts.headers, client_ip, &self.proto);

        let sent = self.client.request(Request::from_parts(parts, body));
        let resp = match tokio::time::timeout(self.response_header_timeout, sent).await {
            Err(_) => {
                return Err(ProxyError::ResponseTimeout {
                    no: upstream.no.clone(),
                    timeout: self.response_header_timeout,
                });
            }
            Ok(Err(e)) => return Err(classify(&e, &upstream)),
            Ok(Ok(resp)) => resp,
        };
        let (mut parts, body) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, Either::Left(body)))
    }
}

fn upstream_uri(
    original: &Uri,
    upstream: &Upstream,
    strip: Option<&str>,
) -> Result<Uri, ProxyError> {
    let pq = match (original.path_and_query(), strip) {
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
    };
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(upstream.authority.clone());
    parts.path_and_query = Some(pq);
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
