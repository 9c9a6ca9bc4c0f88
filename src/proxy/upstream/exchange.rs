//! The fast path's backend leg for requests hyper serves (HTTP/2 clients, and HTTP/1.1
//! requests the fast path left to hyper): a bodiless request to an HTTP/1.1 backend is sent
//! over a raw pooled connection (the fast path's own pool), its head written straight from the
//! `http` parts, the answer's head parsed once by the fast path's parser, and the body decoded
//! as it is read, in the client stream's own task. No backend connection task and no dispatch
//! channel between two tasks, as hyper's client has; hyper still serves the client side.
//!
//! Only requests that need nothing of hyper's client come here (the forwarder decides: no
//! body, no upgrade, no `Expect`, no `TE: trailers`, not `CONNECT`), so a response's trailers
//! (which only a `TE: trailers` client may get) are read and dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Version};
use hyper::body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;

use super::Timeouts;
use super::body::UpstreamBody;
use super::pool::WorkerPool;
use super::raw::{first_answer, read_append};
use crate::proxy::ProxyError;
use crate::proxy::codec::body::Remaining;
use crate::proxy::codec::parse::{self, Framing, ResponseVerdict};
use crate::routing::Upstream;

/// The request head as the backend gets it (origin form; `Host` from the backend's address if
/// the request has none).
pub fn encode_head(req: &Request<UpstreamBody>, upstream: &Upstream) -> Vec<u8> {
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !req.headers().contains_key(http::header::HOST) {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(upstream.authority.as_str().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in req.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Send `head` (a bodiless request) to `upstream` on a pooled raw connection, or a new one,
/// and read the answer's head (1xx heads are skipped). A request lost on a pooled connection
/// goes again as `pool::Attempts` says.
/// `Err` only before any of the answer is given out.
pub async fn send(
    timeouts: &Timeouts,
    head: &[u8],
    (is_head, idempotent): (bool, bool),
    upstream: &Upstream,
    pool: &Arc<WorkerPool>,
    watch: Option<&super::stall::StallWatch<'_>>,
) -> Result<Response<RawBody>, ProxyError> {
    let deadline = tokio::time::Instant::from_std(Instant::now()) + timeouts.response_header;
    let failed = || ProxyError::Upstream {
        no: upstream.no.clone(),
    };
    let timed_out = || ProxyError::ResponseTimeout {
        no: upstream.no.clone(),
        timeout: timeouts.response_header,
    };
    let (mut conn, mut up) = first_answer(
        timeouts,
        upstream,
        pool,
        head,
        idempotent,
        (deadline, watch),
    )
    .await?;
    loop {
        if !up.is_empty() {
            let bytes = Bytes::from(std::mem::take(&mut up));
            match response_head(&bytes, is_head) {
                Head::Incomplete => up = Vec::from(bytes),
                Head::Informational(len) => {
                    up = bytes[len..].to_vec();
                    continue;
                }
                Head::Invalid => return Err(failed()),
                Head::Final(resp, len, framing, reusable) => {
                    let mut body = RawBody {
                        conn: Some(conn),
                        pending: bytes.slice(len..),
                        left: Remaining::new(framing),
                        reusable,
                        pool: pool.clone(),
                        read: BytesMut::new(),
                    };
                    body.settle();
                    return Ok(resp.map(|()| body));
                }
            }
        }
        match tokio::time::timeout_at(deadline, read_append(&mut conn, &mut up)).await {
            Err(_) => return Err(timed_out()),
            Ok(Ok(n)) if n > 0 => {}
            _ => return Err(failed()),
        }
    }
}

/// A backend's response head, parsed.
enum Head {
    Incomplete,
    /// Not a response, or a 101 nobody asked for.
    Invalid,
    /// A 1xx head of this many bytes: skipped, another follows.
    Informational(usize),
    /// The response (body still to be set), its head's length, its framing and whether the
    /// connection can be used again after it.
    Final(Response<()>, usize, Framing, bool),
}

/// Parse the response head at the start of `bytes`; header values are slices of `bytes`.
fn response_head(bytes: &Bytes, is_head: bool) -> Head {
    let mut slots = parse::response_slots();
    let r = match parse::response(bytes, &mut slots, is_head) {
        ResponseVerdict::Incomplete => return Head::Incomplete,
        ResponseVerdict::Invalid => return Head::Invalid,
        ResponseVerdict::Ready(r) => r,
    };
    if r.status == 101 {
        return Head::Invalid;
    }
    if r.is_informational() {
        return Head::Informational(r.head_len);
    }
    let Ok(status) = StatusCode::from_u16(r.status) else {
        return Head::Invalid;
    };
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    *resp.version_mut() = Version::HTTP_11;
    let headers = resp.headers_mut();
    headers.reserve(r.headers.len());
    for h in r.headers {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            return Head::Invalid;
        };
        // The body is handed on decoded: its length is the chunks'.
        if r.framing == Framing::Chunked && name == http::header::CONTENT_LENGTH {
            continue;
        }
        let Ok(value) = HeaderValue::from_maybe_shared(bytes.slice_ref(h.value)) else {
            return Head::Invalid;
        };
        headers.append(name, value);
    }
    Head::Final(resp, r.head_len, r.framing, r.reusable)
}

/// A response body read from a raw backend connection, decoded. The connection goes back to
/// its pool once the body has been read to its end with nothing after it (and the backend
/// keeps it open); a body dropped before its end closes it.
pub struct RawBody {
    conn: Option<TcpStream>,
    /// Body bytes read and not yet handed on (still chunk-framed for a chunked body).
    pending: Bytes,
    left: Remaining,
    reusable: bool,
    pool: Arc<WorkerPool>,
    /// Where the next read lands.
    read: BytesMut,
}

/// Why a response body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum RawBodyError {
    #[error("reading the response body from the backend failed: {0}")]
    Read(#[from] std::io::Error),
    #[error("the backend closed the connection before the end of the response body")]
    Truncated,
    #[error("the backend sent a broken chunked body")]
    BadChunk,
}

/// The most one read of a body takes in.
const BODY_READ: usize = 16 << 10;

impl RawBody {
    /// The next piece of the body from the bytes already read, if there is one.
    fn next_piece(&mut self) -> Result<Option<Bytes>, RawBodyError> {
        let mut piece = None;
        while piece.is_none() && !self.pending.is_empty() && !self.left.is_done() {
            let s = (self.left.decode(&self.pending)).map_err(|_| RawBodyError::BadChunk)?;
            piece = s.data.map(|d| self.pending.slice(d));
            let _ = self.pending.split_to(s.used);
        }
        self.settle();
        Ok(piece)
    }

    /// Once the body is complete: the connection back to its pool if nothing came after the
    /// body and the backend keeps it open, closed otherwise.
    fn settle(&mut self) {
        if self.left.is_done() {
            if let Some(conn) = self.conn.take()
                && self.reusable
                && self.pending.is_empty()
            {
                self.pool.put_raw(conn);
            }
            self.pending = Bytes::new();
        }
    }
}

impl Body for RawBody {
    type Data = Bytes;
    type Error = RawBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RawBodyError>>> {
        let this = &mut *self;
        loop {
            match this.next_piece() {
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Ok(Some(piece)) if !piece.is_empty() => {
                    return Poll::Ready(Some(Ok(Frame::data(piece))));
                }
                Ok(_) => {}
            }
            if this.left.is_done() {
                return Poll::Ready(None);
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(Some(Err(RawBodyError::Truncated)));
            };
            this.read.reserve(BODY_READ);
            let n = loop {
                match conn.try_read_buf(&mut this.read) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if let Err(e) = ready!(conn.poll_read_ready(cx)) {
                            this.conn = None;
                            return Poll::Ready(Some(Err(e.into())));
                        }
                    }
                    Err(e) => {
                        this.conn = None;
                        return Poll::Ready(Some(Err(e.into())));
                    }
                }
            };
            if n == 0 {
                // The backend closed: the end of an until-close body, a truncated one otherwise.
                this.conn = None;
                if this.left.ends_at_close() {
                    this.left = Remaining::Done;
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(Err(RawBodyError::Truncated)));
            }
            this.pending = this.read.split().freeze();
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left.is_done() && self.pending.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match self.left {
            Remaining::Done => SizeHint::with_exact(0),
            Remaining::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}
