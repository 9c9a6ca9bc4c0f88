//! The HTTP/1.1 fast path: plain requests from HTTP/1.1 clients to HTTP/1.1 backends, relayed
//! as bytes over pooled raw backend connections, the way nginx does it.
//!
//! A plain client connection starts here. Each request head is parsed once (httparse), routed
//! and balanced like any other, and its head rewritten straight into the bytes sent upstream;
//! the backend's head is parsed once, rewritten for the client, and its body relayed as it
//! arrives (a chunked body as it is, its end found by [`parse::Chunks`]). No `http::Request`,
//! no `HeaderMap`, no body channel, no task per backend connection. An idle connection holds
//! no buffer at all between requests (it is parked from its first idle moment).
//!
//! The first request the fast path does not take in full (see [`parse`]: upgrades,
//! `Expect`, chunked or large request bodies, heads split over reads, HTTP/1.0, sticky or
//! header-hashed services, h2c backends, anything odd) goes to hyper with the bytes read so
//! far, and hyper serves the connection until it is quiet and parks; it comes back here after.
//! So every limit, error and protocol feature is hyper's as before, and the fast path only
//! ever sees requests whose meaning is plain.

pub mod parse;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::body::InFlight;
use super::forward::{Client, Forwarder};
use super::pool::{self, RACE_IDLE};
use super::{ProxyError, headers};
use crate::health::now_ms;
use crate::routing::{HashKey, Upstream};
use parse::{Framing, ResponseVerdict, Verdict};

/// The first read from a client, and the most a head the fast path takes may span.
const CLIENT_READ: usize = 8 << 10;

/// Reads from a backend.
const UPSTREAM_READ: usize = 16 << 10;

/// How a client connection left the fast path.
pub enum End {
    Closed,
    /// To hyper, with the bytes read and not yet served.
    Slow(Vec<u8>),
}

/// Idle client connections waiting here, per proxy worker (each worker counts its own, on a
/// cache line of its own).
#[repr(align(64))]
struct Counter(AtomicU64);

static IDLE: [Counter; 64] = [const { Counter(AtomicU64::new(0)) }; 64];

/// Idle connections holding no buffers in the fast path, over all workers.
pub fn idle_connections() -> u64 {
    IDLE.iter().map(|c| c.0.load(Ordering::Relaxed)).sum()
}

/// Counts one idle connection while it lives.
struct Idle(&'static AtomicU64);

impl Idle {
    fn start() -> Idle {
        let c = &IDLE[super::worker_index() % IDLE.len()].0;
        // Only this worker's thread writes its counter: no locked read-modify-write.
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        Idle(c)
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        self.0
            .store(self.0.load(Ordering::Relaxed) - 1, Ordering::Relaxed);
    }
}

/// Serve requests on `stream` while the fast path takes them. Returns when the connection is
/// done, or at the first request it leaves to hyper.
pub async fn serve(
    stream: &mut TcpStream,
    fwd: &Forwarder,
    client: &Client,
    stop: &mut watch::Receiver<bool>,
    keepalive: Duration,
) -> End {
    let mut inb: Vec<u8> = Vec::new();
    loop {
        if inb.is_empty() {
            // Idle: no buffer held while waiting.
            inb = Vec::new();
            let ready = {
                let _idle = Idle::start();
                tokio::select! {
                    biased;
                    r = stream.readable() => r.is_ok(),
                    _ = tokio::time::sleep(keepalive) => false,
                    _ = stop.wait_for(|s| *s) => false,
                }
            };
            if !ready {
                return End::Closed;
            }
            inb.reserve_exact(CLIENT_READ);
            match stream.read_buf(&mut inb).await {
                Ok(0) | Err(_) => return End::Closed,
                Ok(_) => {}
            }
        }
        // Boxed: a request's state (header slots, buffers) is not kept in an idle
        // connection's task.
        match Box::pin(one(stream, fwd, client, &inb, stop)).await {
            Step::Next(n) => {
                inb.drain(..n);
            }
            Step::Close => return End::Closed,
            Step::Slow => return End::Slow(inb),
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
}

/// What the attempts at one request need to know about it.
struct Info {
    len: usize,
    head: bool,
    idempotent: bool,
    close: bool,
}

/// Serve the request at the start of `inb`, if the fast path takes it.
async fn one(
    stream: &mut TcpStream,
    fwd: &Forwarder,
    client: &Client,
    inb: &[u8],
    stop: &watch::Receiver<bool>,
) -> Step {
    let mut slots = parse::header_slots();
    let req = match parse::request(inb, &mut slots) {
        // Over `--max-body-size`: hyper answers 413.
        Verdict::Fast(r) if r.body_len as u64 <= fwd.max_body => r,
        _ => return Step::Slow,
    };
    let info = Info {
        len: req.len(),
        head: req.method == "HEAD",
        idempotent: req.is_idempotent(),
        close: req.close,
    };
    let (service, first, key) = {
        let table = fwd.shared.table.load();
        let service = table.route(headers::host_only(req.host), req.path);
        let key = match &service.hash_key {
            None => 0,
            Some(HashKey::ClientIp) => super::forward::hash_of_ip(client.ip),
            // A header, a cookie or a sticky session: hyper's headers are needed.
            Some(_) => return Step::Slow,
        };
        if service.sticky_cookie.is_some() {
            return Step::Slow;
        }
        match service.pick(key) {
            Some(u) if u.h2c => return Step::Slow,
            Some(u) => (service.clone(), u.clone(), key),
            None => {
                let e = ProxyError::unavailable(service);
                return respond_error(stream, e, &info).await;
            }
        }
    };
    let target = parse::upstream_target(req.target, service.strip_prefix.as_deref());
    let mut out = Vec::with_capacity(req.head_len + 160 + req.body_len);
    parse::write_upstream_head(
        &mut out,
        &req,
        &target,
        client.ip_header.as_bytes(),
        client.proto.as_bytes(),
    );
    out.extend_from_slice(&inb[req.head_len..info.len]);
    fwd.budget.deposit();
    let mut tried: Vec<Arc<Upstream>> = Vec::new();
    let mut upstream = first;
    loop {
        let err = match attempt(stream, fwd, &upstream, &out, &info, stop).await {
            Ok(step) => return step,
            Err(e) => e,
        };
        fwd.note_failure(&err, &upstream);
        // The whole request is in `out`: it can always be sent again where that is safe.
        tried.push(upstream);
        match fwd.retry_on(&err, &service, key, &tried, true, info.idempotent) {
            Some(n) if !n.h2c => upstream = n,
            _ => return respond_error(stream, err, &info).await,
        }
    }
}

/// Send the request to one backend and relay its response. `Err` only while nothing has been
/// written to the client (so it can still get a 5xx, or the request go elsewhere).
async fn attempt(
    stream: &mut TcpStream,
    fwd: &Forwarder,
    upstream: &Upstream,
    out: &[u8],
    info: &Info,
    stop: &watch::Receiver<bool>,
) -> Result<Step, ProxyError> {
    let pool = fwd.pool(upstream);
    let slot = InFlight::start(&upstream.stats);
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started) + fwd.response_header_timeout;
    let timed_out = || ProxyError::ResponseTimeout {
        no: upstream.no.clone(),
        timeout: fwd.response_header_timeout,
    };
    let failed = || ProxyError::Upstream {
        no: upstream.no.clone(),
    };
    let (mut conn, mut up) = loop {
        let (mut conn, idle_for) = match pool.take_raw(fwd.pool_idle_timeout) {
            Some((c, d)) => (c, Some(d)),
            None => {
                let c = pool::connect_raw(upstream.addr, fwd.connect_timeout)
                    .await
                    .map_err(|e| super::forward::connect_error(e, upstream))?;
                (c, None)
            }
        };
        if conn.write_all(out).await.is_err() {
            // A pooled connection the backend had closed: the request did not go out.
            if idle_for.is_some() {
                continue;
            }
            return Err(failed());
        }
        let mut up = Vec::with_capacity(UPSTREAM_READ);
        match tokio::time::timeout_at(deadline, conn.read_buf(&mut up)).await {
            Err(_) => return Err(timed_out()),
            Ok(Ok(n)) if n > 0 => break (conn, up),
            // Closed before answering: on a connection that had been idle a while, the
            // idle-close race; an idempotent request goes out again on another connection.
            Ok(_) if idle_for.is_some_and(|d| d >= RACE_IDLE) && info.idempotent => continue,
            Ok(_) => return Err(failed()),
        }
    };
    let mut wrote_any = false;
    // Read the head (after any 1xx heads, which are relayed).
    loop {
        let mut slots = parse::header_slots();
        match parse::response(&up, &mut slots, info.head) {
            ResponseVerdict::Ready(r) if r.status == 101 => {
                return if wrote_any {
                    Ok(Step::Close)
                } else {
                    Err(failed())
                };
            }
            ResponseVerdict::Ready(r) if r.is_informational() => {
                let mut o = Vec::with_capacity(r.head_len + 32);
                parse::write_client_head(&mut o, &r, false);
                let n = r.head_len;
                if stream.write_all(&o).await.is_err() {
                    return Ok(Step::Close);
                }
                wrote_any = true;
                up.drain(..n);
                if !up.is_empty() {
                    continue;
                }
            }
            ResponseVerdict::Ready(r) => {
                upstream
                    .stats
                    .on_success(started.elapsed().as_secs_f64() * 1000.0, now_ms());
                let close = info.close
                    || stop.has_changed().unwrap_or(true)
                    || r.framing == Framing::UntilClose;
                let mut o = Vec::with_capacity(r.head_len + 64);
                parse::write_client_head(&mut o, &r, close);
                let (framing, reusable, head_len) = (r.framing, r.reusable, r.head_len);
                // The head goes out with what of the body came with it.
                let (relay, mut left) = first_part(&up[head_len..], framing);
                let relay = match relay {
                    Ok(r) => r,
                    Err(()) if wrote_any => return Ok(Step::Close),
                    Err(()) => return Err(failed()),
                };
                o.extend_from_slice(&up[head_len..head_len + relay.len]);
                if stream.write_all(&o).await.is_err() {
                    return Ok(Step::Close);
                }
                if relay.done {
                    let clean = relay.len == up.len() - head_len;
                    if reusable && clean {
                        pool.put_raw(conn);
                    }
                    drop(slot);
                    return Ok(if close {
                        Step::Close
                    } else {
                        Step::Next(info.len)
                    });
                }
                // The rest of the body, as it arrives.
                let ok = relay_rest(stream, &mut conn, &mut up, framing, &mut left).await;
                if ok == Some(true) && reusable {
                    pool.put_raw(conn);
                }
                drop(slot);
                return Ok(match ok {
                    Some(_) if !close => Step::Next(info.len),
                    _ => Step::Close,
                });
            }
            ResponseVerdict::Invalid if wrote_any => return Ok(Step::Close),
            ResponseVerdict::Invalid => return Err(failed()),
            ResponseVerdict::Incomplete => {}
        }
        if up.len() == up.capacity() {
            up.reserve(UPSTREAM_READ);
        }
        match tokio::time::timeout_at(deadline, conn.read_buf(&mut up)).await {
            Err(_) if !wrote_any => return Err(timed_out()),
            Ok(Ok(n)) if n > 0 => {}
            _ if wrote_any => return Ok(Step::Close),
            _ => return Err(failed()),
        }
    }
}

/// How much of a response body is still to come.
enum Left {
    Length(u64),
    Chunks(parse::Chunks),
    UntilClose,
}

/// Of the body bytes that came with the head: how many belong to this response, and whether
/// that is all of it.
struct Relay {
    len: usize,
    done: bool,
}

/// Split the body bytes that came with the head. `Err` for a broken chunked body.
fn first_part(bytes: &[u8], framing: Framing) -> (Result<Relay, ()>, Left) {
    match framing {
        Framing::Empty => (Ok(Relay { len: 0, done: true }), Left::Length(0)),
        Framing::Length(n) => {
            let len = bytes.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            let left = n - len as u64;
            (
                Ok(Relay {
                    len,
                    done: left == 0,
                }),
                Left::Length(left),
            )
        }
        Framing::Chunked => {
            let mut chunks = parse::Chunks::default();
            let relay = match chunks.feed(bytes) {
                Ok(Some(end)) => Ok(Relay {
                    len: end,
                    done: true,
                }),
                Ok(None) => Ok(Relay {
                    len: bytes.len(),
                    done: false,
                }),
                Err(_) => Err(()),
            };
            (relay, Left::Chunks(chunks))
        }
        Framing::UntilClose => (
            Ok(Relay {
                len: bytes.len(),
                done: false,
            }),
            Left::UntilClose,
        ),
    }
}

/// Relay the rest of a response body from the backend to the client as it arrives, in reads
/// of [`UPSTREAM_READ`] (memory stays bounded whatever the body's size). `Some(clean)` once
/// the body is complete (`clean`: the backend sent nothing after it, so its connection can be
/// reused); `None` if either side failed (the client's connection must close).
async fn relay_rest(
    stream: &mut TcpStream,
    conn: &mut TcpStream,
    up: &mut Vec<u8>,
    framing: Framing,
    left: &mut Left,
) -> Option<bool> {
    debug_assert!(framing != Framing::Empty);
    loop {
        up.clear();
        let n = conn.read_buf(up).await.ok()?;
        if n == 0 {
            // The backend closed: the end of an until-close body, a truncated one otherwise.
            return matches!(left, Left::UntilClose).then_some(false);
        }
        let (take, done) = match left {
            Left::Length(rest) => {
                let take = n.min(usize::try_from(*rest).unwrap_or(usize::MAX));
                *rest -= take as u64;
                (take, *rest == 0)
            }
            Left::Chunks(c) => match c.feed(up) {
                Ok(Some(end)) => (end, true),
                Ok(None) => (n, false),
                Err(_) => return None,
            },
            Left::UntilClose => (n, false),
        };
        stream.write_all(&up[..take]).await.ok()?;
        if done {
            return Some(take == n);
        }
    }
}

/// Answer with the error's status (the connection stays open unless the client asked to
/// close).
async fn respond_error(stream: &mut TcpStream, e: ProxyError, info: &Info) -> Step {
    super::forward::log_failure(&e);
    if stream.write_all(&e.to_http1(info.close)).await.is_err() || info.close {
        return Step::Close;
    }
    Step::Next(info.len)
}
