//! The HTTP/1.1 fast path: plain requests from HTTP/1.1 clients to HTTP/1.1 backends, relayed
//! as bytes over pooled raw backend connections, the way nginx does it.
//!
//! Every HTTP/1.1 client connection starts here (plain, or TLS with ALPN `http/1.1`). Each
//! request head is parsed once (httparse), routed and balanced by the request plan
//! ([`crate::proxy::plan`]) as on hyper's side, and its head rewritten straight into the bytes
//! sent upstream; the backend's head is parsed once, rewritten for the client, and its body
//! relayed as it arrives (a chunked body as it is, its end found by the codec's
//! [`Remaining`]). No `http::Request`,
//! no `HeaderMap`, no body channel, no task per backend connection. An idle connection holds
//! no buffer at all between requests (it is parked from its first idle moment).
//!
//! A head or small body split over reads is gathered here (408 if it stalls). The first
//! request the fast path does not take in full (see `codec::parse`: upgrades, `Expect`, chunked or
//! large request bodies, HTTP/1.0, h2c backends, anything odd) goes to hyper with the bytes read so far; hyper serves the connection (plain or TLS)
//! until it is quiet and parks, and it comes back here after.
//! So every limit, error and protocol feature is hyper's as before, and the fast path only
//! ever sees requests whose meaning is plain.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::body::InFlight;
use crate::middleware::{Edits, Gate};
use crate::proxy::ProxyError;
use crate::proxy::codec::body::Remaining;
use crate::proxy::codec::parse::{self, Framing, ResponseVerdict, Verdict};
use crate::proxy::forwarder::{Admission, Forwarder};
use crate::proxy::plan::Client;
use crate::proxy::plan::{self, Front, Meta, Outcome, Plan};
use crate::proxy::upstream::raw::{first_answer, read_append};
use crate::proxy::upstream::stall::StallWatch;
use crate::routing::Upstream;

/// Bytes already read from a stream, put back in front of it (for hyper, when the fast path
/// leaves it a connection).
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed {
            prefix,
            at: 0,
            inner,
        }
    }

    /// The stream; prefix bytes not read yet are dropped (a parked or timed-out connection
    /// has read them all, or gives up on them).
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.at);
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A client connection: plain TCP, or TLS.
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> ClientIo for T {}

/// How a client connection left the fast path.
pub enum End {
    Closed,
    /// To hyper, with the bytes read and not yet served.
    Slow(Vec<u8>),
}

/// Serve requests on `stream` while the fast path takes them. Returns when the connection is
/// done, or at the first request it leaves to hyper.
pub async fn serve<S: ClientIo>(
    stream: &mut S,
    fwd: &Forwarder,
    client: &Client,
    stop: &mut watch::Receiver<bool>,
    keepalive: Duration,
) -> End {
    let mut inb: Vec<u8> = Vec::new();
    // When the request at the start of `inb` was first found incomplete.
    let mut started: Option<tokio::time::Instant> = None;
    loop {
        if inb.is_empty() {
            // Idle: no buffer held while waiting.
            inb = Vec::new();
            // (The read holds no buffer while it waits: see `read_append`.)
            let read = {
                let _idle = fwd.runtime.idle();
                tokio::select! {
                    biased;
                    r = read_append(stream, &mut inb) => r,
                    _ = tokio::time::sleep(keepalive) => return End::Closed,
                    _ = stop.wait_for(|s| *s) => return End::Closed,
                }
            };
            match read {
                Ok(0) | Err(_) => return End::Closed,
                Ok(_) => {}
            }
        }
        // Boxed: a request's state is not kept in an idle connection's task.
        match Box::pin(one(stream, fwd, client, &inb, stop)).await {
            Step::Next(n) => {
                inb.drain(..n);
                started = None;
            }
            Step::Close => return End::Closed,
            Step::Slow => return End::Slow(inb),
            Step::Partial => {
                // The rest of a head (or of a small body) split over reads: wait for it, as
                // long as a client may take over a head, then 408.
                let deadline = *started.get_or_insert_with(tokio::time::Instant::now) + keepalive;
                let more = tokio::select! {
                    r = tokio::time::timeout_at(deadline, read_append(stream, &mut inb)) => r,
                    _ = stop.wait_for(|s| *s) => return End::Closed,
                };
                match more {
                    Ok(Ok(n)) if n > 0 => {}
                    Err(_) => {
                        fwd.answer_408(stream, client, Front::Fast).await;
                        return End::Closed;
                    }
                    Ok(_) => return End::Closed,
                }
            }
        }
    }
}

/// What one request left to do.
enum Step {
    /// Served; the next request starts this many bytes in.
    Next(usize),
    Close,
    /// Not the fast path's; nothing was sent anywhere.
    Slow,
    /// More bytes are needed to tell.
    Partial,
}

/// What the attempts at one request need to know about it.
#[derive(Clone, Copy)]
struct Info {
    len: usize,
    head: bool,
    idempotent: bool,
    close: bool,
}

/// What [`prepare`] made of the bytes at the start of a client's buffer. (Not boxed: it lives
/// once per request on the stack, and a box would be an allocation per request.)
#[allow(clippy::large_enum_variant)]
enum Prep {
    Ready(Prepared),
    Slow,
    Partial,
}

/// A request the fast path takes, ready to go out.
struct Prepared {
    /// Head and body, as the backend gets them.
    out: Vec<u8>,
    info: Info,
    plan: Plan,
    first: Arc<Upstream>,
    seen: Seen,
}

/// Why [`prepare`] has nothing to send: the error, and the plan if the request was routed.
struct Refused {
    err: ProxyError,
    info: Info,
    plan: Option<Plan>,
    seen: Option<Seen>,
}

/// The request's id: the client's (where it is in the client's buffer) or one made here.
enum Id {
    Given(Range<u32>),
    Made([u8; 32]),
}

/// What a record says about the request, as places in the client's buffer (nothing of the
/// parse outlives [`prepare`]).
struct Seen {
    id: Id,
    /// The client's address for this request (see `--trusted-proxies`).
    ip: std::net::IpAddr,
    /// Method, host, target and user agent, when the observers want them.
    spans: Option<[Range<u32>; 4]>,
}

impl Seen {
    fn new(
        fwd: &Forwarder,
        inb: &[u8],
        req: &parse::Request<'_, '_>,
        ip: std::net::IpAddr,
    ) -> Seen {
        // Where `s`, a part of `inb`, sits in it (an empty or foreign slice: nowhere). As u32:
        // a head is far smaller, and `Seen` is moved with every request (BENCHMARKS.md,
        // "Services without middlewares, again").
        let span = |s: &[u8]| match (s.as_ptr() as usize).checked_sub(inb.as_ptr() as usize) {
            Some(start) if !s.is_empty() && start + s.len() <= inb.len() => {
                match (u32::try_from(start), u32::try_from(start + s.len())) {
                    (Ok(a), Ok(b)) => a..b,
                    _ => 0..0,
                }
            }
            _ => 0..0,
        };
        Seen {
            ip,
            id: match req.request_id {
                Some(v) => Id::Given(span(v)),
                None => Id::Made(crate::proxy::codec::headers::new_request_id(
                    plan::random_id(),
                )),
            },
            spans: fwd.details.then(|| {
                let ua = parse::header(req.headers, "user-agent").unwrap_or_default();
                [
                    span(req.method.as_bytes()),
                    span(req.host.as_bytes()),
                    span(req.target.as_bytes()),
                    span(ua),
                ]
            }),
        }
    }

    fn id<'a>(&'a self, inb: &'a [u8]) -> &'a [u8] {
        match &self.id {
            Id::Given(r) => &inb[r.start as usize..r.end as usize],
            Id::Made(m) => m,
        }
    }

    fn meta<'a>(&'a self, inb: &'a [u8], client: &Client) -> Option<Meta<'a>> {
        let [method, host, target, ua] = self.spans.as_ref()?;
        let text = |r: &Range<u32>| {
            std::str::from_utf8(&inb[r.start as usize..r.end as usize]).unwrap_or("")
        };
        Some(Meta {
            client: self.ip,
            tls: client.proto == "https",
            proto: "HTTP/1.1",
            method: text(method),
            host: text(host),
            target: text(target),
            user_agent: text(ua),
            request_id: std::str::from_utf8(self.id(inb)).unwrap_or(""),
        })
    }
}

/// A request answered before routing (a path the rule refuses, an ACME challenge). Out of
/// line, so that `prepare` stays small enough for its callees to be inlined (BENCHMARKS.md,
/// "Automatic HTTPS").
#[cold]
#[inline(never)]
fn refuse(
    fwd: &Forwarder,
    inb: &[u8],
    req: &parse::Request<'_, '_>,
    ip: std::net::IpAddr,
    info: &Info,
    err: ProxyError,
) -> Box<Refused> {
    Box::new(Refused {
        err,
        info: *info,
        seen: Some(Seen::new(fwd, inb, req, ip)),
        plan: None,
    })
}

/// `name`, the value and CRLF, as the pieces of a head line (empty ones without a value).
#[inline]
fn header_line<'a>(name: &'static [u8], v: Option<&'a http::HeaderValue>) -> [&'a [u8]; 3] {
    match v {
        Some(v) => [name, v.as_bytes(), b"\r\n"],
        None => [b"", b"", b""],
    }
}

/// A service's head-only middlewares, for a request the fast path takes so far: the plan to
/// go on with, or what the request became (`None`: hyper's; or answered). Out of line, so that
/// `prepare` stays small enough for its callees to be inlined: a service without middlewares
/// pays nothing for this code (BENCHMARKS.md, "Seams").
#[inline(never)]
fn gate(
    fwd: &Forwarder,
    client: &Client,
    inb: &[u8],
    req: &parse::Request<'_, '_>,
    (ip, forward): (std::net::IpAddr, &str),
    info: &Info,
    plan: Plan,
) -> Result<Plan, Option<Box<Refused>>> {
    let decided = {
        let Some(m) = plan.service.middleware.as_deref() else {
            return Ok(plan);
        };
        // Forward auth and compression are hyper's side's; so is checking a new password.
        let authorization = parse::header(req.headers, "authorization");
        let now = Instant::now();
        if !m.fast() || m.unverified(authorization, now) {
            return Err(None);
        }
        let tls = client.proto == "https";
        fwd.gate(m, (ip, tls), (req.host, forward), authorization, now)
    };
    match decided {
        Gate::Pass => Ok(plan),
        Gate::Verify => Err(None),
        Gate::Answer(a) => Err(Some(Box::new(Refused {
            err: ProxyError::Answered(Box::new(a)),
            info: *info,
            seen: Some(Seen::new(fwd, inb, req, ip)),
            plan: Some(plan),
        }))),
    }
}

/// 503: nothing to pick. Out of line, as [`gate`].
#[cold]
#[inline(never)]
fn unavailable(
    fwd: &Forwarder,
    inb: &[u8],
    req: &parse::Request<'_, '_>,
    ip: std::net::IpAddr,
    info: &Info,
    plan: Plan,
) -> Box<Refused> {
    Box::new(Refused {
        err: plan.unavailable(),
        info: *info,
        seen: Some(Seen::new(fwd, inb, req, ip)),
        plan: Some(plan),
    })
}

/// Parse, route and rewrite the request at the start of `inb` (no I/O, and nothing of the
/// parse kept: the header slots never live across an await).
fn prepare(fwd: &Forwarder, client: &Client, inb: &[u8]) -> Result<Prep, Box<Refused>> {
    let mut slots = parse::header_slots();
    let req = match parse::request(inb, &mut slots, fwd.max_body) {
        Verdict::Fast(r) => r,
        Verdict::Partial => return Ok(Prep::Partial),
        Verdict::Slow => return Ok(Prep::Slow),
        Verdict::Conflict => {
            let refuse = ProxyError::BadRequest("both Content-Length and Transfer-Encoding");
            let info = Info {
                len: 0,
                head: false,
                idempotent: false,
                close: true,
            };
            return Err(Box::new(Refused {
                err: refuse,
                info,
                plan: None,
                seen: None,
            }));
        }
    };
    let info = Info {
        len: req.len(),
        head: req.method == "HEAD",
        idempotent: plan::is_idempotent(req.method),
        close: req.close,
    };
    let xff = parse::headers_named(req.headers, "x-forwarded-for");
    let fields = parse::Fields(req.headers);
    let (ip, target, mut plan, first) =
        match fwd.admit(client.ip, xff, (req.target, req.host), &fields) {
            Admission::Routed(ip, target, plan, first) => (ip, target, plan, first),
            Admission::Answered(ip, err) => return Err(refuse(fwd, inb, &req, ip, &info, err)),
        };
    let forward = target.forward();
    if plan.service.middleware.is_some() {
        plan = match gate(fwd, client, inb, &req, (ip, forward), &info, plan) {
            Ok(p) => p,
            Err(None) => return Ok(Prep::Slow),
            Err(Some(refused)) => return Err(refused),
        };
    }
    let first = match first {
        Some(u) if u.h2c => return Ok(Prep::Slow),
        Some(u) => u,
        None => return Err(unavailable(fwd, inb, &req, ip, &info, plan)),
    };
    let seen = Seen::new(fwd, inb, &req, ip);
    let target = plan.target(forward);
    let mut made = None;
    let forwarding = plan::forwarding(client, ip, &fwd.trusted, &mut made);
    let edits = plan.service.middleware.as_deref().map(|m| &m.request);
    // Room for the forwarding headers and the request id: one allocation, no growth.
    let mut out = Vec::with_capacity(req.head_len + 272 + req.body_len);
    parse::write_upstream_head(&mut out, &req, &target, &forwarding, seen.id(inb), edits);
    out.extend_from_slice(&inb[req.head_len..info.len]);
    Ok(Prep::Ready(Prepared {
        out,
        info,
        plan,
        first,
        seen,
    }))
}

/// Serve the request at the start of `inb`, if the fast path takes it.
async fn one<S: ClientIo>(
    stream: &mut S,
    fwd: &Forwarder,
    client: &Client,
    inb: &[u8],
    stop: &watch::Receiver<bool>,
) -> Step {
    let Prepared {
        out,
        info,
        mut plan,
        first,
        seen,
    } = match prepare(fwd, client, inb) {
        Ok(Prep::Ready(p)) => p,
        Ok(Prep::Slow) => return Step::Slow,
        Ok(Prep::Partial) => return Step::Partial,
        Err(refused) => {
            let Refused {
                err,
                info,
                plan,
                seen,
            } = *refused;
            let meta = seen.as_ref().and_then(|s| s.meta(inb, client));
            let id = seen.as_ref().map(|s| s.id(inb));
            return respond_error(stream, fwd, err, &info, plan.as_ref(), (meta, id)).await;
        }
    };
    let meta = seen.meta(inb, client);
    fwd.forwarding();
    let mut upstream = first;
    loop {
        // The plan's changes to the response head, written as byte lines (the request id's
        // first; the cookie's and HSTS's only when there are such).
        let changes = plan.response_edits(&upstream, client.proto == "https");
        let [c0, c1, c2] = header_line(b"set-cookie: ", changes.set_cookie.as_ref());
        let [h0, h1, h2] = header_line(b"strict-transport-security: ", changes.hsts());
        let extra: [&[u8]; 9] = [
            b"x-request-id: ",
            seen.id(inb),
            b"\r\n",
            c0,
            c1,
            c2,
            h0,
            h1,
            h2,
        ];
        let extra = match (changes.set_cookie.is_some(), h1.is_empty()) {
            (_, false) => &extra[..],
            (true, true) => &extra[..6],
            (false, true) => &extra[..3],
        };
        let edits = changes.edits();
        let err = match attempt(
            stream,
            fwd,
            &mut plan,
            &upstream,
            &out,
            &info,
            stop,
            (extra, edits),
            meta,
        )
        .await
        {
            Ok(step) => return step,
            Err(e) => e,
        };
        // The whole request is in `out`: it can always be sent again where that is safe.
        match fwd.next_after(&mut plan, (&err, upstream), (true, info.idempotent)) {
            Some(n) if !n.h2c => upstream = n,
            _ => {
                let id = Some(seen.id(inb));
                return respond_error(stream, fwd, err, &info, Some(&plan), (meta, id)).await;
            }
        }
    }
}

/// A backend's response head, as the client gets it.
enum Head {
    Incomplete,
    Invalid,
    /// A 101 nobody asked for.
    Switching,
    /// A 1xx: relayed, and another head follows.
    Informational {
        bytes: Vec<u8>,
        len: usize,
    },
    Final {
        bytes: Vec<u8>,
        len: usize,
        status: u16,
        framing: Framing,
        reusable: bool,
        close: bool,
    },
}

/// Parse the response head at the start of `up` and write the client's (no I/O; the slots
/// never live across an await). `close`: the client's connection ends after this response;
/// `extra`: header lines of the proxy's own for it (a sticky session's cookie).
fn client_head(
    up: &[u8],
    info: &Info,
    close: bool,
    extra: &[&[u8]],
    edits: Option<&Edits>,
) -> Head {
    let mut slots = parse::response_slots();
    match parse::response(up, &mut slots, info.head) {
        ResponseVerdict::Incomplete => Head::Incomplete,
        ResponseVerdict::Invalid => Head::Invalid,
        ResponseVerdict::Ready(r) if r.status == 101 => Head::Switching,
        ResponseVerdict::Ready(r) if r.is_informational() => {
            let mut bytes = Vec::with_capacity(r.head_len + 96);
            parse::write_client_head(&mut bytes, &r, false, &[], None);
            Head::Informational {
                bytes,
                len: r.head_len,
            }
        }
        ResponseVerdict::Ready(r) => {
            let close = close || r.framing == Framing::UntilClose;
            let extra_len: usize = extra.iter().map(|e| e.len()).sum();
            let mut bytes =
                Vec::with_capacity(r.head_len + 32 + extra_len + (up.len() - r.head_len));
            parse::write_client_head(&mut bytes, &r, close, extra, edits);
            Head::Final {
                bytes,
                len: r.head_len,
                status: r.status,
                framing: r.framing,
                reusable: r.reusable,
                close,
            }
        }
    }
}

/// Send the request to one backend and relay its response. `Err` only while nothing has been
/// written to the client (so it can still get a 5xx, or the request go elsewhere).
#[allow(clippy::too_many_arguments)]
async fn attempt<S: ClientIo>(
    stream: &mut S,
    fwd: &Forwarder,
    plan: &mut Plan,
    upstream: &Upstream,
    out: &[u8],
    info: &Info,
    stop: &watch::Receiver<bool>,
    (extra, edits): (&[&[u8]], Option<&Edits>),
    meta: Option<Meta<'_>>,
) -> Result<Step, ProxyError> {
    let pool = fwd.pool(upstream);
    let slot = InFlight::start(&upstream.stats);
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started) + fwd.timeouts.response_header;
    let timed_out = || ProxyError::ResponseTimeout {
        no: upstream.no.clone(),
        timeout: fwd.timeouts.response_header,
    };
    let failed = || ProxyError::Upstream {
        no: upstream.no.clone(),
    };
    let watch = StallWatch::new(&plan.service, upstream, info.idempotent);
    let (mut conn, mut up) = first_answer(
        &fwd.timeouts,
        upstream,
        pool,
        out,
        info.idempotent,
        (deadline, watch.as_ref()),
    )
    .await?;
    let mut wrote_any = false;
    // Read the head (after any 1xx heads, which are relayed).
    loop {
        let close = info.close || stop.has_changed().unwrap_or(true);
        match client_head(&up, info, close, extra, edits) {
            Head::Switching | Head::Invalid if wrote_any => return Ok(Step::Close),
            Head::Switching | Head::Invalid => return Err(failed()),
            Head::Informational { bytes, len } => {
                if stream.write_all(&bytes).await.is_err() {
                    return Ok(Step::Close);
                }
                wrote_any = true;
                up.drain(..len);
                if !up.is_empty() {
                    continue;
                }
            }
            Head::Final {
                mut bytes,
                len,
                status,
                framing,
                reusable,
                close,
            } => {
                plan.answered(upstream, started.elapsed());
                // The head goes out with what of the body came with it.
                let mut left = Remaining::new(framing);
                let relay = match left.relay(&up[len..]) {
                    Ok(n) => n,
                    Err(_) if wrote_any => return Ok(Step::Close),
                    Err(_) => return Err(failed()),
                };
                bytes.extend_from_slice(&up[len..len + relay]);
                let mut sent = relay as u64;
                let ended = if stream.write_all(&bytes).await.is_err() {
                    sent = 0;
                    Err(Outcome::ClientGone)
                } else if left.is_done() {
                    Ok(relay == up.len() - len)
                } else {
                    // The rest of the body, as it arrives.
                    relay_rest(stream, &mut conn, &mut up, &mut left, &mut sent).await
                };
                if ended == Ok(true) && reusable {
                    pool.put_raw(conn);
                }
                drop(slot);
                let outcome = ended.err().unwrap_or_default();
                fwd.observe(|| {
                    plan.record(Front::Fast, (status, outcome), Some(upstream), sent, meta)
                });
                return Ok(match ended {
                    Ok(_) if !close => Step::Next(info.len),
                    _ => Step::Close,
                });
            }
            Head::Incomplete => {}
        }
        match tokio::time::timeout_at(deadline, read_append(&mut conn, &mut up)).await {
            Err(_) if !wrote_any => return Err(timed_out()),
            Ok(Ok(n)) if n > 0 => {}
            _ if wrote_any => return Ok(Step::Close),
            _ => return Err(failed()),
        }
    }
}

/// Relay the rest of a response body from the backend to the client as it arrives, in reads
/// of `upstream::raw`'s read size (memory stays bounded whatever the body's size). `Ok(clean)`
/// once the body is complete (`clean`: the backend sent nothing after it, so its connection can
/// be reused); which side cut it short otherwise (the client's connection must close).
async fn relay_rest<S: ClientIo>(
    stream: &mut S,
    conn: &mut TcpStream,
    up: &mut Vec<u8>,
    left: &mut Remaining,
    sent: &mut u64,
) -> Result<bool, Outcome> {
    loop {
        up.clear();
        let n = read_append(conn, up)
            .await
            .map_err(|_| Outcome::BackendCut)?;
        if n == 0 {
            // The backend closed: the end of an until-close body, a truncated one otherwise.
            return if left.ends_at_close() {
                Ok(false)
            } else {
                Err(Outcome::BackendCut)
            };
        }
        let take = left.relay(up).map_err(|_| Outcome::BackendCut)?;
        stream
            .write_all(&up[..take])
            .await
            .map_err(|_| Outcome::ClientGone)?;
        *sent += take as u64;
        if left.is_done() {
            return Ok(take == n);
        }
    }
}

/// Answer with the error's status (the connection stays open unless the client asked to
/// close).
async fn respond_error<S: ClientIo>(
    stream: &mut S,
    fwd: &Forwarder,
    e: ProxyError,
    info: &Info,
    plan: Option<&Plan>,
    (meta, id): (Option<Meta<'_>>, Option<&[u8]>),
) -> Step {
    fwd.refused(Front::Fast, &e, plan, meta);
    let answer = e.to_http1_with_id(info.close, id);
    let written = stream.write_all(&answer).await.is_ok();
    if !written || info.close {
        return Step::Close;
    }
    Step::Next(info.len)
}
