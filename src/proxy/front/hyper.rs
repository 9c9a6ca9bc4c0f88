//! hyper's side of one request: the plan's steps on `http` types, sent through hyper's
//! client (bodies, upgrades, h2c backends) or, when bodiless, over a raw pooled connection
//! ([`exchange`]).

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use bytes::Bytes;
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Response, Uri, Version, header};
use http_body_util::{Either, Empty, Full};
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::body::{InFlight, Pending, Tracked};
use super::compress::Upstreamed;
use super::{auth, compress};
use crate::middleware::{Answer, Gate};
use crate::proxy::ProxyError;
use crate::proxy::codec::headers;
use crate::proxy::forwarder::{Admission, Forwarder};
use crate::proxy::plan::Client;
use crate::proxy::plan::{self, Front, Plan};
use crate::proxy::upstream::body::{Capped, Gate as Held, UpstreamBody};
use crate::proxy::upstream::exchange;
use crate::proxy::upstream::pool::connect_error;
use crate::proxy::upstream::pool::{self, Checkin, Lost, WorkerPool};
use crate::proxy::upstream::stall::StallWatch;
use crate::routing::Upstream;

pub type Body = Either<Tracked, Full<Bytes>>;

/// 400 for a request with both `Content-Length` and `Transfer-Encoding`; the connection is
/// closed after it.
pub fn refuse_conflicting_framing() -> Response<Body> {
    let mut resp = ProxyError::BadRequest("both Content-Length and Transfer-Encoding")
        .into_response()
        .map(Either::Right);
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

impl Forwarder {
    pub async fn handle(&self, req: Request<Incoming>, client: &Client) -> Response<Body> {
        match self.forward(req, client).await {
            Ok(resp) => resp,
            Err((e, plan)) => {
                self.refused(Front::Hyper, &e, plan.as_ref(), None);
                let mut resp = e.into_response().map(Either::Right);
                if let Some(id) = plan.and_then(|p| p.request_id) {
                    resp.headers_mut().insert(headers::X_REQUEST_ID.clone(), id);
                }
                resp
            }
        }
    }

    async fn forward(
        &self,
        mut req: Request<Incoming>,
        client: &Client,
    ) -> Result<Response<Body>, (ProxyError, Option<Plan>)> {
        // `Connection: upgrade` + `Upgrade: X` (WebSocket and any other protocol): forward the
        // handshake, and on 101 join the two upgraded connections.
        let upgrade = headers::upgrade_protocol(req.headers())
            .map(|proto| (proto, hyper::upgrade::on(&mut req)));
        let (mut parts, body) = req.into_parts();
        let bodiless = body.is_end_stream();
        // The host routed by is the host the backend is told: one `Host`, set from an
        // absolute-form target or HTTP/2's `:authority` (otherwise the client would put the
        // backend's address there).
        headers::settle_host(parts.version, &parts.uri, &mut parts.headers)
            .map_err(|e| (ProxyError::BadRequest(e.as_str()), None))?;
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let raw_target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let xff = parts.headers.get_all(&headers::X_FORWARDED_FOR).iter();
        let admitted = self.admit(
            client.ip,
            xff.map(|v| v.as_bytes()),
            (raw_target, host),
            &parts.headers,
        );
        let (ip, target, mut plan, first) = match admitted {
            Admission::Routed(ip, target, plan, first) => (ip, target, plan, first),
            Admission::Answered(_, err) => return Err((err, None)),
        };
        let forward = target.forward();
        let request_id = headers::request_id(&parts.headers, plan::random_id);
        plan.request_id = Some(request_id.clone());
        if self.details {
            let header = |name| {
                parts
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned()
            };
            plan.details = Some(Box::new(plan::OwnedMeta {
                client: ip,
                tls: client.proto == "https",
                proto: version_name(parts.version),
                method: parts.method.clone(),
                host: header(header::HOST),
                target: parts
                    .uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_owned(),
                user_agent: header(header::USER_AGENT),
                request_id: request_id.to_str().unwrap_or("").to_owned(),
            }));
        }
        let tls = client.proto == "https";
        let mw = plan.service.middleware.clone();
        let mut made = None;
        let forwarding = plan::forwarding(client, ip, &self.trusted, &mut made);
        // Forward auth's headers for the backend, added after the request's own are settled.
        let mut from_auth = Vec::new();
        if let Some(m) = &mw {
            let authorization = parts
                .headers
                .get(header::AUTHORIZATION)
                .map(|v| v.as_bytes());
            match self.gate(m, (ip, tls), (host, forward), authorization, Instant::now()) {
                Gate::Pass => {}
                Gate::Answer(a) => return Err((answered(a), Some(plan))),
                Gate::Verify => {
                    let given = parts.headers.get(header::AUTHORIZATION);
                    if let Err(a) = auth::verify_basic(m, given).await {
                        return Err((answered(a), Some(plan)));
                    }
                }
            }
            if let Some(f) = &m.forward {
                match auth::forward_auth(self, f, &parts, &forwarding, forward).await {
                    Ok(copy) => from_auth = copy,
                    Err(a) => return Err((answered(a), Some(plan))),
                }
                // What the auth service vouches for is its answer's alone: the client's own
                // claims (and their CGI spellings) never reach the backend.
                f.strip_claims(&mut parts.headers);
            }
        }
        // Compression is decided on the response, by the request's Accept-Encoding.
        let accept = mw
            .as_ref()
            .filter(|m| m.compress)
            .and_then(|_| parts.headers.get(header::ACCEPT_ENCODING).cloned());
        let Some(first) = first else {
            return Err((plan.unavailable(), Some(plan)));
        };
        let pq = match upstream_path(&plan, &parts.uri, forward) {
            Ok(pq) => pq,
            Err(e) => return Err((e, Some(plan))),
        };
        // gRPC needs `TE: trailers` end to end; it is the one TE value HTTP/2 allows.
        let te_trailers = parts
            .headers
            .get(header::TE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
        headers::strip_hop_by_hop(&mut parts.headers);
        if te_trailers {
            parts
                .headers
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if let Some((proto, _)) = &upgrade {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, proto.clone());
        }
        headers::set_forwarded(&mut parts.headers, &forwarding);
        if let Some(m) = &mw {
            m.request.apply(&mut parts.headers);
            for (name, value) in from_auth {
                parts.headers.append(name, value);
            }
        }
        parts
            .headers
            .insert(headers::X_REQUEST_ID.clone(), request_id.clone());
        // A request without a body can be sent again elsewhere if the first backend never saw
        // it (or, for idempotent methods, dropped the connection before answering).
        let replay = (body.is_end_stream() && plan.service.backends.len() > 1)
            .then(|| parts.headers.clone());
        // Too large by its declared length: refuse before any backend sees it.
        if let Some(len) = body.size_hint().exact()
            && len > self.max_body
        {
            let limit = self.max_body;
            return Err((ProxyError::TooLarge { limit }, Some(plan)));
        }
        let mut capped = Capped::new(body, self.max_body);
        // `Expect: 100-continue` to an HTTP/1.1 backend: forwarded, and the body held back
        // until the backend asks for it (an h2c backend gets the body at once).
        let expect = match parts.headers.get(header::EXPECT) {
            None => None,
            Some(v)
                if v.as_bytes().eq_ignore_ascii_case(b"100-continue")
                    && !first.h2c
                    && !capped.is_end_stream() =>
            {
                let g = Arc::new(Held::default());
                capped = capped.gated(g.clone());
                Some(g)
            }
            Some(_) => {
                parts.headers.remove(header::EXPECT);
                None
            }
        };
        // What needs nothing of hyper's client goes over the fast path's raw connections.
        let direct = bodiless
            && upgrade.is_none()
            && !te_trailers
            && expect.is_none()
            && parts.method != Method::CONNECT;
        let idempotent = plan::is_idempotent(parts.method.as_str());
        let tripped = capped.tripped.clone();
        let mut body = Some(Either::Left(capped));
        let mut upstream = first;
        self.forwarding();
        loop {
            let mut req = Request::new(body.take().unwrap_or(Either::Right(Empty::new())));
            *req.method_mut() = parts.method.clone();
            if upstream.h2c {
                *req.uri_mut() = match upstream_uri(&pq, &upstream) {
                    Ok(uri) => uri,
                    Err(e) => return Err((e, Some(plan))),
                };
                *req.version_mut() = Version::HTTP_2;
            } else {
                // Origin form on a connection of our own.
                *req.uri_mut() = Uri::from(pq.clone());
                *req.version_mut() = Version::HTTP_11;
            }
            *req.headers_mut() = match &replay {
                Some(h) if !plan.first_attempt() => h.clone(),
                _ => std::mem::take(&mut parts.headers),
            };
            if plan.first_attempt()
                && let Some(g) = &expect
            {
                let g = g.clone();
                hyper::ext::on_informational(&mut req, move |res| {
                    if res.status() == http::StatusCode::CONTINUE {
                        g.open();
                    }
                });
            }
            let slot = InFlight::start(&upstream.stats);
            let started = Instant::now();
            // (A request that can go elsewhere gives up on a backend found stalled.)
            let replayable_here = replay.is_some() && idempotent;
            let watch = StallWatch::new(&plan.service, &upstream, replayable_here);
            let sent = self.send(req, &upstream, direct, watch.as_ref()).await;
            let err = match sent {
                Ok((resp, checkin)) => {
                    plan.answered(&upstream, started.elapsed());
                    let (mut head, incoming) = resp.into_parts();
                    if head.status == http::StatusCode::SWITCHING_PROTOCOLS
                        && let Some((_, client_side)) = upgrade
                    {
                        // (An upgrade always goes through hyper's client, which a 101 needs.)
                        let Upstreamed::Hyper(incoming) = incoming else {
                            let no = upstream.no.clone();
                            return Err((ProxyError::Upstream { no }, Some(plan)));
                        };
                        self.observe(|| {
                            let done = (101, plan::Outcome::Complete);
                            plan.record(Front::Hyper, done, Some(&upstream), 0, None)
                        });
                        return Ok(tunnel(
                            Response::from_parts(head, incoming),
                            client_side,
                            slot,
                            &upstream.no,
                            self.tunnel_grace,
                        ));
                    }
                    headers::strip_hop_by_hop(&mut head.headers);
                    head.headers
                        .insert(headers::X_REQUEST_ID.clone(), request_id.clone());
                    plan.response_edits(&upstream, tls).apply(&mut head.headers);
                    let mut incoming = incoming;
                    if mw.is_some() {
                        let size = incoming.size_hint().exact();
                        if let Some(enc) = compress::decide(
                            accept.as_ref(),
                            &parts.method,
                            head.status,
                            &head.headers,
                            size,
                        ) {
                            compress::mark(&mut head.headers, enc);
                            incoming = Upstreamed::Encoded(Box::new(compress::Encoded::new(
                                incoming, enc,
                            )));
                        }
                    }
                    let gate = if plan.first_attempt() {
                        expect.clone()
                    } else {
                        None
                    };
                    // The connection goes back to the pool when the body has been read, unless a
                    // held-back request body may still be on its way.
                    let checkin = checkin.filter(|_| gate.is_none());
                    let pending = self.observer.as_ref().map(|o| {
                        Box::new(Pending {
                            observer: o.clone(),
                            plan,
                            upstream,
                            status: head.status.as_u16(),
                        })
                    });
                    let body = Either::Left(Tracked::new(incoming, slot, gate, checkin, pending));
                    return Ok(Response::from_parts(head, body));
                }
                Err(e) => e,
            };
            drop(slot);
            if tripped
                .as_ref()
                .is_some_and(|t| t.load(std::sync::atomic::Ordering::Relaxed))
            {
                let limit = self.max_body;
                return Err((ProxyError::TooLarge { limit }, Some(plan)));
            }
            let replayable = replay.is_some();
            match self.next_after(&mut plan, (&err, upstream), (replayable, idempotent)) {
                Some(n) => upstream = n,
                None => return Err((err, Some(plan))),
            }
        }
    }

    /// Send to one backend and wait for the response head. `direct`: the request needs
    /// nothing of hyper's client (see [`exchange`]), so an HTTP/1.1 backend gets it over a raw
    /// connection.
    async fn send(
        &self,
        req: Request<UpstreamBody>,
        upstream: &Upstream,
        direct: bool,
        watch: Option<&StallWatch<'_>>,
    ) -> Result<(Response<Upstreamed>, Option<Checkin>), ProxyError> {
        let pool = self.pool(upstream);
        if direct && !upstream.h2c {
            let head = exchange::encode_head(&req, upstream);
            let method = req.method();
            let (is_head, idempotent) =
                (method == Method::HEAD, plan::is_idempotent(method.as_str()));
            drop(req);
            let resp = exchange::send(
                &self.timeouts,
                &head,
                (is_head, idempotent),
                upstream,
                pool,
                watch,
            )
            .await?;
            return Ok((resp.map(Upstreamed::Raw), None));
        }
        let answer = async {
            if upstream.h2c {
                match self.h2_client(pool).request(req).await {
                    Ok(resp) => Ok((resp.map(Upstreamed::Hyper), None)),
                    Err(e) => Err(classify(&e, upstream)),
                }
            } else {
                self.send_h1(req, pool, upstream)
                    .await
                    .map(|(r, c)| (r.map(Upstreamed::Hyper), Some(c)))
            }
        };
        match tokio::time::timeout(self.timeouts.response_header, answer).await {
            Err(_) => Err(ProxyError::ResponseTimeout {
                no: upstream.no.clone(),
                timeout: self.timeouts.response_header,
            }),
            Ok(r) => r,
        }
    }

    /// Send on a pooled HTTP/1.1 connection, or a new one, sending again what was lost as
    /// [`pool::Attempts`] says (a bodyless idempotent request may go twice: a copy of it is
    /// kept while it is on a pooled connection).
    async fn send_h1(
        &self,
        mut req: Request<UpstreamBody>,
        pool: &Arc<WorkerPool>,
        upstream: &Upstream,
    ) -> Result<(Response<Incoming>, Checkin), ProxyError> {
        if !req.headers().contains_key(header::HOST)
            && let Ok(v) = HeaderValue::from_str(upstream.authority.as_str())
        {
            req.headers_mut().insert(header::HOST, v);
        }
        let mut attempts = pool::Attempts::default();
        loop {
            let (mut tx, pooled) = attempts
                .checkout(
                    || pool.take(self.timeouts.pool_idle),
                    || pool::connect(upstream.addr, self.timeouts.connect),
                )
                .await
                .map_err(|e| connect_error(e, upstream))?;
            let copy = (pooled
                && req.body().is_end_stream()
                && plan::is_idempotent(req.method().as_str()))
            .then(|| copy_request(&req));
            match tx.try_send_request(req).await {
                Ok(resp) => {
                    return Ok((
                        resp,
                        Checkin {
                            pool: pool.clone(),
                            tx,
                        },
                    ));
                }
                Err(mut e) => {
                    let not_taken = e.take_message();
                    tracing::debug!(error = %e.error(), backend = %upstream.no, pooled, "upstream exchange failed");
                    let lost = match not_taken {
                        Some(_) => Lost::NotSent,
                        None => Lost::Unanswered,
                    };
                    // A copy was kept only of a request that may be sent twice.
                    let replayable = copy.is_some();
                    match not_taken.or(copy) {
                        Some(r) if attempts.again(pooled, lost, replayable) => req = r,
                        _ => {
                            return Err(ProxyError::Upstream {
                                no: upstream.no.clone(),
                            });
                        }
                    }
                }
            }
        }
    }
}

/// A bodyless request again, for a second attempt.
fn copy_request(req: &Request<UpstreamBody>) -> Request<UpstreamBody> {
    let mut copy = Request::new(Either::Right(Empty::new()));
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

/// Answer the client's upgrade with the backend's 101 and copy bytes both ways until either side
/// closes. The tunnel keeps its in-flight slot, and lives on whatever the routing table does.
fn tunnel(
    mut resp: Response<Incoming>,
    client_side: hyper::upgrade::OnUpgrade,
    slot: InFlight,
    no: &str,
    grace: Duration,
) -> Response<Body> {
    let backend_side = hyper::upgrade::on(&mut resp);
    let no = no.to_owned();
    tokio::spawn(async move {
        match tokio::try_join!(client_side, backend_side) {
            Ok((c, b)) => {
                let (mut c, mut b) = (TokioIo::new(c), TokioIo::new(b));
                // A routing-table change leaves the tunnel alone; once its backend is no longer
                // routed (drained, removed, moved), the tunnel gets `grace` and is then closed.
                tokio::select! {
                    r = tokio::io::copy_bidirectional(&mut c, &mut b) => if let Err(e) = r {
                        tracing::debug!(backend = %no, error = %e, "upgraded connection ended");
                    },
                    _ = slot.stats().retired_for(grace) => {
                        tracing::info!(backend = %no, ?grace, "closed an upgraded connection: its backend is no longer routed and the grace period is over");
                    }
                }
            }
            Err(e) => tracing::debug!(backend = %no, error = %e, "upgrade did not complete"),
        }
        drop(slot);
    });
    // Keep Upgrade/Connection: they are the point of a 101.
    let (head, _) = resp.into_parts();
    Response::from_parts(head, Either::Right(Full::new(Bytes::new())))
}

/// A middleware's answer, as the error the client gets.
fn answered(a: Answer) -> ProxyError {
    ProxyError::Answered(Box::new(a))
}

fn version_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// The path and query to send upstream, as the plan rewrites `forward` (the target under the
/// path rule).
fn upstream_path(plan: &Plan, original: &Uri, forward: &str) -> Result<PathAndQuery, ProxyError> {
    let Some(pq) = original.path_and_query() else {
        return Ok(PathAndQuery::from_static("/"));
    };
    match plan.target(forward) {
        std::borrow::Cow::Borrowed(t) if t == pq.as_str() => Ok(pq.clone()),
        t => PathAndQuery::try_from(t.into_owned())
            .map_err(|_| ProxyError::BadRequest("invalid path")),
    }
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
