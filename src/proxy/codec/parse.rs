//! The fast path's pure part: which requests it takes, the heads it writes on each leg, how a
//! response is framed, and where a chunked body ends. No I/O.
//!
//! The fast path is deliberately narrow. Anything it does not take in full is left to hyper,
//! unchanged: a request without exactly one `Host`, with `Transfer-Encoding`, `Expect`,
//! `Upgrade`, `TE` or `Trailer`, a `Connection` that names anything but `keep-alive`/`close`,
//! several or odd `Content-Length`s, a body over [`MAX_FAST_BODY`] or not yet all read, a
//! request target that is not a plain origin-form path, HTTP/1.0, `CONNECT`, more than
//! [`MAX_HEADERS`] headers, or any head that does not parse (hyper then answers 400/431/408
//! as it always did).

use std::mem::MaybeUninit;

use httparse::Header;

use super::headers::Forwarding;

/// Headers the fast path parses; a request with more goes to hyper.
pub const MAX_HEADERS: usize = 64;

/// The longest request body the fast path carries (held whole before it goes out).
pub const MAX_FAST_BODY: usize = 64 << 10;

/// Longest response head read from a backend.
pub const MAX_RESPONSE_HEAD: usize = 64 << 10;

/// Headers a backend's response head may have (hyper's client takes 100; a response with
/// more is a 502).
pub const MAX_RESPONSE_HEADERS: usize = 128;

/// Room for the headers of one request head.
pub type HeaderSlots<'b> = [MaybeUninit<Header<'b>>; MAX_HEADERS];

pub fn header_slots<'b>() -> HeaderSlots<'b> {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// Room for the headers of one response head.
pub type ResponseSlots<'b> = [MaybeUninit<Header<'b>>; MAX_RESPONSE_HEADERS];

pub fn response_slots<'b>() -> ResponseSlots<'b> {
    [const { MaybeUninit::uninit() }; MAX_RESPONSE_HEADERS]
}

/// A request the fast path takes.
#[derive(Debug, PartialEq)]
pub struct Request<'h, 'b> {
    pub method: &'b str,
    /// Path and query, as sent.
    pub target: &'b str,
    /// The path alone (for routing).
    pub path: &'b str,
    /// The `Host` value, as sent.
    pub host: &'b str,
    pub head_len: usize,
    pub body_len: usize,
    /// The client sent `Connection: close`.
    pub close: bool,
    /// The client's `X-Request-Id`, if it sent one that is kept (see
    /// [`super::headers::valid_request_id`]).
    pub request_id: Option<&'b [u8]>,
    pub headers: &'h [Header<'b>],
}

impl Request<'_, '_> {
    /// Head and body: where the next request starts.
    pub fn len(&self) -> usize {
        self.head_len + self.body_len
    }
}

/// What to do with the bytes at the start of a client's buffer.
#[derive(Debug, PartialEq)]
pub enum Verdict<'h, 'b> {
    Fast(Request<'h, 'b>),
    /// Leave this request (and the connection, until it goes quiet) to hyper.
    Slow,
    /// Not all here yet: the head, or the body of a request the fast path takes so far.
    Partial,
    /// Both `Content-Length` and `Transfer-Encoding`: refused with 400, and the connection
    /// closed (a smuggling attempt or a broken client; nothing after it can be trusted).
    Conflict,
}

/// The most the fast path waits to gather for one request (head and body); a longer head goes
/// to hyper (which answers 431 past its own limit).
pub const MAX_PENDING: usize = 64 << 10;

/// The headers the fast path looks at, by name.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Host,
    ContentLength,
    Connection,
    /// Hop-by-hop headers dropped on the way (`Keep-Alive`, `Proxy-*`).
    Dropped,
    /// Headers that need hyper (`Transfer-Encoding`, `Expect`, `Upgrade`, `TE`, `Trailer`).
    NeedsHyper,
    TransferEncoding,
    XForwardedFor,
    /// `X-Forwarded-Proto`, `-Host` and `X-Real-IP`, replaced.
    XForwardedOther,
    /// `Forwarded`: the client's, kept only from a trusted proxy.
    Forwarded,
    /// `X-Request-Id`: one, kept or made, goes both ways.
    RequestId,
    Other,
}

fn kind(name: &str) -> Kind {
    let is = |lower: &str| name.eq_ignore_ascii_case(lower);
    match name.len() {
        2 if is("te") => Kind::NeedsHyper,
        4 if is("host") => Kind::Host,
        6 if is("expect") => Kind::NeedsHyper,
        7 if is("upgrade") || is("trailer") => Kind::NeedsHyper,
        9 if is("x-real-ip") => Kind::XForwardedOther,
        9 if is("forwarded") => Kind::Forwarded,
        10 if is("connection") => Kind::Connection,
        10 if is("keep-alive") => Kind::Dropped,
        12 if is("x-request-id") => Kind::RequestId,
        14 if is("content-length") => Kind::ContentLength,
        15 if is("x-forwarded-for") => Kind::XForwardedFor,
        16 if is("proxy-connection") => Kind::Dropped,
        16 if is("x-forwarded-host") => Kind::XForwardedOther,
        17 if is("transfer-encoding") => Kind::TransferEncoding,
        17 if is("x-forwarded-proto") => Kind::XForwardedOther,
        18 if is("proxy-authenticate") => Kind::Dropped,
        19 if is("proxy-authorization") => Kind::Dropped,
        _ => Kind::Other,
    }
}

/// The comma-separated tokens of a header value.
fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// A `Content-Length` value: one to nineteen digits, nothing else.
fn content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// A path and query the http crate also accepts unchanged, with nothing to decode: RFC 3986's
/// unreserved and reserved characters and `%` (no fragment).
fn plain_target(t: &str) -> bool {
    use crate::proxy::codec::headers::{sub_delim, unreserved};
    t.starts_with('/')
        && t.bytes().all(|b| {
            unreserved(b)
                || sub_delim(b)
                || matches!(b, b':' | b'/' | b'?' | b'[' | b']' | b'@' | b'%')
        })
}

/// A Host value that is a plain `name[:port]` (letters, digits, `-`, `.`, `_`; a port of 1-5
/// digits), checked in one pass. Anything else, IPv6 literals included, is left to hyper's side,
/// which checks it whole and refuses what is invalid with one rule for both fronts.
fn plain_host(v: &[u8]) -> bool {
    let mut i = 0;
    while i < v.len() && (v[i].is_ascii_alphanumeric() || matches!(v[i], b'-' | b'.' | b'_')) {
        i += 1;
    }
    if i == 0 {
        return false;
    }
    match &v[i..] {
        [] => true,
        [b':', port @ ..] => (1..=5).contains(&port.len()) && port.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// Visible ASCII and spaces: what `HeaderValue::to_str` accepts.
fn visible(v: &[u8]) -> bool {
    v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
}

/// A request's parsed headers, as the request plan reads them.
pub struct Fields<'h, 'b>(pub &'h [Header<'b>]);

impl super::headers::RequestHead for Fields<'_, '_> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        header(self.0, name)
    }

    fn cookie(&self, name: &str) -> Option<&str> {
        cookie(self.0, name)
    }
}

/// The value of the first header called `name` (lower case), as `HeaderMap::get` gives it.
pub fn header<'b>(headers: &[Header<'b>], name: &str) -> Option<&'b [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// The values of every header called `name` (lower case), in order, as
/// `HeaderMap::get_all` gives them.
pub fn headers_named<'h, 'b>(
    headers: &'h [Header<'b>],
    name: &'h str,
) -> impl DoubleEndedIterator<Item = &'b [u8]> + 'h {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// The value of cookie `name` in the `Cookie` headers, read as `headers::cookie` reads a
/// `HeaderMap` (values that are not visible ASCII are skipped), so both paths agree.
pub fn cookie<'b>(headers: &[Header<'b>], name: &str) -> Option<&'b str> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("cookie") && visible(h.value))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Look at the request at the start of `buf`: the fast path's if it takes it (head and body
/// all here), hyper's otherwise. A body over `max_body` is hyper's too (it answers 413).
pub fn request<'h, 'b>(
    buf: &'b [u8],
    slots: &'h mut HeaderSlots<'b>,
    max_body: u64,
) -> Verdict<'h, 'b> {
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_PENDING => return Verdict::Partial,
        _ => return Verdict::Slow,
    };
    let (method, target) = (req.method.unwrap_or(""), req.path.unwrap_or(""));
    let mut slow = req.version != Some(1) || method == "CONNECT" || !plain_target(target);
    let headers: &'h [Header<'b>] = req.headers;
    let mut host = None;
    let mut length = None;
    let (mut has_length, mut chunked) = (false, false);
    let mut close = false;
    let mut request_id = None;
    for h in headers {
        match kind(h.name) {
            Kind::RequestId => {
                if request_id.is_none() && super::headers::valid_request_id(h.value) {
                    request_id = Some(h.value);
                }
            }
            Kind::Host if host.is_none() && plain_host(h.value) => host = Some(h.value),
            Kind::ContentLength => {
                // One plain number; anything else (a second one too) is hyper's to judge.
                length = (!has_length).then(|| content_length(h.value)).flatten();
                slow |= length.is_none();
                has_length = true;
            }
            Kind::TransferEncoding => {
                chunked = true;
                slow = true;
            }
            Kind::Connection => {
                for t in tokens(h.value) {
                    if t.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if !t.eq_ignore_ascii_case(b"keep-alive") {
                        slow = true;
                    }
                }
            }
            Kind::Host | Kind::NeedsHyper => slow = true,
            Kind::Dropped
            | Kind::XForwardedFor
            | Kind::XForwardedOther
            | Kind::Forwarded
            | Kind::Other => {}
        }
    }
    if has_length && chunked {
        return Verdict::Conflict;
    }
    if slow {
        return Verdict::Slow;
    }
    let Some(host) = host.and_then(|h| std::str::from_utf8(h).ok()) else {
        return Verdict::Slow;
    };
    let body_len = match length {
        Some(n) if n > max_body.min(MAX_FAST_BODY as u64) => return Verdict::Slow,
        Some(n) => n as usize,
        None => 0,
    };
    if buf.len() < head_len + body_len {
        return Verdict::Partial;
    }
    Verdict::Fast(Request {
        method,
        target,
        path: target.split_once('?').map_or(target, |(p, _)| p),
        host,
        head_len,
        body_len,
        close,
        request_id,
        headers,
    })
}

/// Write the request head for the backend into `out`: the client's headers without the
/// hop-by-hop ones, with the forwarding headers set as `headers::set_forwarded` sets them on
/// hyper's side (`X-Forwarded-For` appended to the client's lines joined, if kept;
/// `X-Real-IP`, `X-Forwarded-Proto` and `-Host`; `Forwarded` dropped unless kept).
/// `edits`: a service's request header edits (its middlewares). (Always inlined into its one
/// caller: LTO's own choice flips with the caller's size, at ~350 instructions a request.)
#[inline(always)]
pub fn write_upstream_head(
    out: &mut Vec<u8>,
    req: &Request<'_, '_>,
    target: &str,
    f: &Forwarding<'_>,
    request_id: &[u8],
    edits: Option<&crate::middleware::Edits>,
) {
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // (Two copies of the loop: a service without header edits tests nothing per header.)
    let xff = match edits {
        None => copy_request_headers(out, req, f.keep_forwarded, |_| false),
        Some(e) => copy_request_headers(out, req, f.keep_forwarded, |name| e.touches(name)),
    };
    if let Some(e) = edits {
        e.write(out);
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    if xff && f.keep_xff {
        forwarded_for_lines(out, req);
    }
    out.extend_from_slice(f.peer.as_bytes());
    out.extend_from_slice(b"\r\nx-real-ip: ");
    out.extend_from_slice(f.client.as_bytes());
    out.extend_from_slice(b"\r\nx-forwarded-proto: ");
    out.extend_from_slice(f.proto.as_bytes());
    out.extend_from_slice(b"\r\nx-forwarded-host: ");
    out.extend_from_slice(req.host.as_bytes());
    out.extend_from_slice(b"\r\nx-request-id: ");
    out.extend_from_slice(request_id);
    out.extend_from_slice(b"\r\n\r\n");
}

/// Every `X-Forwarded-For` line of the client's, joined, each followed by `, ` (empty ones
/// skipped). Only for a request that has one: a second pass over its headers.
#[cold]
fn forwarded_for_lines(out: &mut Vec<u8>, req: &Request<'_, '_>) {
    for h in req.headers {
        if kind(h.name) == Kind::XForwardedFor {
            let v = h.value.trim_ascii();
            if !v.is_empty() {
                out.extend_from_slice(v);
                out.extend_from_slice(b", ");
            }
        }
    }
}

/// The request's headers as the backend gets them, but for those `edited` replaces and the
/// forwarding headers (set anew; the client's `Forwarded` kept only if `keep_forwarded`).
/// Whether the client sent an `X-Forwarded-For`.
#[inline(always)]
fn copy_request_headers(
    out: &mut Vec<u8>,
    req: &Request<'_, '_>,
    keep_forwarded: bool,
    edited: impl Fn(&str) -> bool,
) -> bool {
    let mut xff = false;
    for h in req.headers {
        match kind(h.name) {
            Kind::XForwardedFor => xff = true,
            Kind::Forwarded if !keep_forwarded => {}
            Kind::Connection | Kind::Dropped | Kind::XForwardedOther | Kind::RequestId => {}
            _ if edited(h.name) => {}
            _ => {
                out.extend_from_slice(h.name.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(h.value);
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    xff
}

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Framing {
    /// No body (a 1xx, 204 or 304, or the answer to HEAD).
    Empty,
    Length(u64),
    Chunked,
    /// Until the backend closes; the client's connection closes after it too.
    UntilClose,
}

/// A backend's response head.
#[derive(Debug, PartialEq)]
pub struct Response<'h, 'b> {
    pub status: u16,
    pub reason: &'b str,
    pub head_len: usize,
    pub framing: Framing,
    /// The backend keeps the connection open after this response.
    pub reusable: bool,
    /// `Connection` names other headers, to be dropped as hop-by-hop.
    pub names_others: bool,
    pub headers: &'h [Header<'b>],
}

impl Response<'_, '_> {
    /// A 1xx other than 101: another head follows.
    pub fn is_informational(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

#[derive(Debug, PartialEq)]
pub enum ResponseVerdict<'h, 'b> {
    Ready(Response<'h, 'b>),
    Incomplete,
    Invalid,
}

/// Parse the response head at the start of `buf` (the answer to a HEAD request if `head`).
pub fn response<'h, 'b>(
    buf: &'b [u8],
    slots: &'h mut ResponseSlots<'b>,
    head: bool,
) -> ResponseVerdict<'h, 'b> {
    let mut resp = httparse::Response::new(&mut []);
    let parsed =
        httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, slots);
    let head_len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_RESPONSE_HEAD => {
            return ResponseVerdict::Incomplete;
        }
        _ => return ResponseVerdict::Invalid,
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return ResponseVerdict::Invalid;
    };
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let (mut close, mut keep_alive, mut names_others) = (false, false, false);
    for h in resp.headers.iter() {
        match kind(h.name) {
            Kind::ContentLength => match content_length(h.value) {
                Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                _ => return ResponseVerdict::Invalid,
            },
            Kind::TransferEncoding => {
                // The last coding of the last header is what delimits the body.
                chunked = tokens(h.value)
                    .last()
                    .map(|t| t.eq_ignore_ascii_case(b"chunked"));
            }
            Kind::Connection => {
                for t in tokens(h.value) {
                    if t.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if t.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive = true;
                    } else {
                        names_others = true;
                    }
                }
            }
            _ => {}
        }
    }
    // HTTP/1.0 keeps the connection only when it says keep-alive.
    let mut reusable = !close && (version == 1 || keep_alive);
    let no_body = head || (100..200).contains(&status) || status == 204 || status == 304;
    let framing = match (no_body, chunked, length) {
        (true, _, _) => Framing::Empty,
        (false, Some(true), _) => Framing::Chunked,
        (false, Some(false), _) | (false, None, None) => Framing::UntilClose,
        (false, None, Some(n)) => Framing::Length(n),
    };
    if framing == Framing::UntilClose {
        reusable = false;
    }
    ResponseVerdict::Ready(Response {
        status,
        reason: resp.reason.unwrap_or(""),
        head_len,
        framing,
        reusable,
        names_others,
        headers: resp.headers,
    })
}

/// Write the response head for the client: the backend's headers without the hop-by-hop ones
/// (`Transfer-Encoding` kept for a chunked body, which is relayed as it is), `extra` (whole
/// header lines of the proxy's own), and `Connection: close` if the client's connection ends
/// after it.
/// `edits`: headers a service's middlewares replace or remove, and the values they set.
pub fn write_client_head(
    out: &mut Vec<u8>,
    resp: &Response<'_, '_>,
    close: bool,
    extra: &[&[u8]],
    edits: Option<&crate::middleware::Edits>,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    let code = resp.status.min(999);
    out.extend_from_slice(&[
        b'0' + (code / 100) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
        b' ',
    ]);
    out.extend_from_slice(resp.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    match edits {
        None => copy_response_headers(out, resp, |_| false),
        Some(e) => copy_response_headers(out, resp, |name| e.touches(name)),
    }
    // (Most are empty: no sticky cookie, no HSTS.)
    for e in extra.iter().filter(|e| !e.is_empty()) {
        out.extend_from_slice(e);
    }
    if let Some(e) = edits {
        e.write(out);
    }
    if close || resp.framing == Framing::UntilClose {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The response's headers as the client gets them, but for those `edited` replaces (as
/// [`copy_request_headers`], one copy of the loop each).
#[inline(always)]
fn copy_response_headers(
    out: &mut Vec<u8>,
    resp: &Response<'_, '_>,
    edited: impl Fn(&str) -> bool,
) {
    let named = |name: &str| {
        resp.names_others
            && resp.headers.iter().any(|h| {
                kind(h.name) == Kind::Connection
                    && tokens(h.value).any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
            })
    };
    for h in resp.headers {
        let keep = match kind(h.name) {
            // (The request's id goes back in `extra`.)
            Kind::Connection | Kind::Dropped | Kind::NeedsHyper | Kind::RequestId => false,
            Kind::TransferEncoding => resp.framing == Framing::Chunked,
            // A chunked body's length is the chunks'; a stray Content-Length goes.
            Kind::ContentLength => resp.framing != Framing::Chunked,
            _ if edited(h.name) => false,
            _ => !named(h.name),
        };
        if keep {
            out.extend_from_slice(h.name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Finds the end of a chunked body fed to it piece by piece (the bytes themselves are relayed
/// as they are). Bare LF line ends are accepted, as hyper accepts them.
#[derive(Clone, Debug, Default)]
pub struct Chunks {
    state: ChunkState,
    /// The size being read, then the data left in the chunk.
    size: u64,
    digits: u8,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
enum ChunkState {
    #[default]
    Size,
    /// Extensions after `;`, up to the line end.
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final blank line).
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

/// A chunked body that is not one.
#[derive(Debug, PartialEq)]
pub struct BadChunk;

/// What [`Chunks::data`] found in the bytes it was given.
#[derive(Debug, PartialEq)]
pub struct Scan {
    /// Bytes of the body used up (framing and data), from the start of those given.
    pub used: usize,
    /// Chunk data within them, ending where `used` does: the next piece of the decoded body.
    pub data: Option<std::ops::Range<usize>>,
    /// The body ended with them (after its trailers, which are skipped).
    pub done: bool,
}

impl Chunks {
    /// Feed the next bytes: `Some(n)` if the body ends after the first `n` of them.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, BadChunk> {
        let s = self.scan(bytes, false)?;
        Ok(s.done.then_some(s.used))
    }

    /// Decode: read the next bytes up to the end of the first run of chunk data in them (or
    /// the end of the body, or of the bytes), and say where that data is.
    pub fn data(&mut self, bytes: &[u8]) -> Result<Scan, BadChunk> {
        self.scan(bytes, true)
    }

    fn scan(&mut self, bytes: &[u8], stop_at_data: bool) -> Result<Scan, BadChunk> {
        use ChunkState::*;
        let end = |used, done| {
            Ok(Scan {
                used,
                data: None,
                done,
            })
        };
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match self.state {
                Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if self.digits == 15 {
                            return Err(BadChunk);
                        }
                        self.digits += 1;
                        self.size =
                            self.size * 16 + u64::from((b as char).to_digit(16).unwrap_or(0));
                    }
                    b';' | b' ' | b'\t' if self.digits > 0 => self.state = Extension,
                    b'\r' if self.digits > 0 => self.state = SizeLf,
                    b'\n' if self.digits > 0 => self.end_size_line(),
                    _ => return Err(BadChunk),
                },
                Extension => match b {
                    b'\r' => self.state = SizeLf,
                    b'\n' => self.end_size_line(),
                    _ => {}
                },
                SizeLf if b == b'\n' => self.end_size_line(),
                Data => {
                    let take =
                        (bytes.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    self.size -= take as u64;
                    i += take;
                    if self.size == 0 {
                        self.state = DataCr;
                    }
                    if stop_at_data {
                        return Ok(Scan {
                            used: i,
                            data: Some(i - take..i),
                            done: false,
                        });
                    }
                    continue;
                }
                DataCr if b == b'\r' => self.state = DataLf,
                DataCr | DataLf if b == b'\n' => self.state = Size,
                TrailerStart => match b {
                    b'\r' => self.state = EndLf,
                    b'\n' => {
                        self.state = Done;
                        return end(i + 1, true);
                    }
                    _ => self.state = TrailerLine,
                },
                TrailerLine => match b {
                    b'\r' => self.state = TrailerLf,
                    b'\n' => self.state = TrailerStart,
                    _ => {}
                },
                TrailerLf if b == b'\n' => self.state = TrailerStart,
                EndLf if b == b'\n' => {
                    self.state = Done;
                    return end(i + 1, true);
                }
                _ => return Err(BadChunk),
            }
            i += 1;
        }
        end(i, false)
    }

    fn end_size_line(&mut self) {
        self.digits = 0;
        self.state = if self.size == 0 {
            ChunkState::TrailerStart
        } else {
            ChunkState::Data
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(bytes: &[u8]) -> Option<(usize, usize, bool, String, String)> {
        let mut slots = header_slots();
        match request(bytes, &mut slots, u64::MAX) {
            Verdict::Fast(r) => Some((
                r.head_len,
                r.body_len,
                r.close,
                r.host.to_owned(),
                r.path.to_owned(),
            )),
            Verdict::Slow | Verdict::Partial | Verdict::Conflict => None,
        }
    }

    fn verdict(bytes: &[u8]) -> &'static str {
        let mut slots = header_slots();
        match request(bytes, &mut slots, u64::MAX) {
            Verdict::Fast(_) => "fast",
            Verdict::Slow => "slow",
            Verdict::Partial => "partial",
            Verdict::Conflict => "conflict",
        }
    }

    #[test]
    fn plain_requests_are_taken() {
        let get = b"GET /a/b?c=d HTTP/1.1\r\nHost: x.test\r\nUser-Agent: t\r\n\r\n";
        assert_eq!(
            req(get),
            Some((get.len(), 0, false, "x.test".into(), "/a/b".into()))
        );
        let post = b"POST /p HTTP/1.1\r\nhost: h\r\ncontent-length: 5\r\nConnection: close\r\n\r\nhelloGET";
        assert_eq!(
            req(post),
            Some((post.len() - 8, 5, true, "h".into(), "/p".into()))
        );
        // Bare LF line ends, as hyper reads them.
        assert!(req(b"GET / HTTP/1.1\nHost: h\n\n").is_some());
    }

    #[test]
    fn an_incomplete_request_is_waited_for() {
        assert_eq!(verdict(b"GET / HTTP/1.1\r\nHost: h\r\n"), "partial");
        assert_eq!(verdict(b"GE"), "partial");
        assert_eq!(
            verdict(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhell"),
            "partial"
        );
        // Unless it is hyper's anyway, or too long to hold.
        assert_eq!(
            verdict(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhe"),
            "slow"
        );
        // Both framings: refused outright, whatever else the head has.
        for both in [
            &b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\nx"[..],
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\nContent-Length: 1\r\nUpgrade: x\r\n\r\n",
            b"POST / HTTP/1.0\r\nContent-Length: 1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(verdict(both), "conflict", "{}", String::from_utf8_lossy(both));
        }
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.resize(MAX_PENDING, b'a');
        assert_eq!(verdict(&long), "slow");
    }

    #[test]
    fn everything_else_is_left_to_hyper() {
        for bytes in [
            // HTTP/1.0, CONNECT, absolute form, asterisk, odd characters.
            &b"GET / HTTP/1.0\r\nHost: h\r\n\r\n"[..],
            b"CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET /a\"b HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET /a#f HTTP/1.1\r\nHost: h\r\n\r\n",
            // No Host, two Hosts.
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            // Framing hyper must judge.
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\nx",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 1\r\n\r\nx",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999\r\n\r\n",
            // Protocol switches and hop-by-hop headers named in Connection.
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: x-secret\r\nX-Secret: 1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nTE: trailers\r\n\r\n",
            // Does not parse (space before the colon, obs-fold).
            b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
        ] {
            assert_eq!(req(bytes), None, "{}", String::from_utf8_lossy(bytes));
        }
        let mut many = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(req(&many), None);
    }

    #[test]
    fn the_upstream_head_drops_hop_by_hop_and_sets_forwarded() {
        let bytes = b"GET /x?y HTTP/1.1\r\nHost: app.test:8080\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\nX-Forwarded-Proto: https\r\nAccept: */*\r\nProxy-Authorization: x\r\n\r\n";
        let mut slots = header_slots();
        let Verdict::Fast(r) = request(bytes, &mut slots, u64::MAX) else {
            panic!("taken")
        };
        let mut out = Vec::new();
        let (peer, client, proto) = (
            http::HeaderValue::from_static("10.0.0.1"),
            http::HeaderValue::from_static("2.2.2.2"),
            http::HeaderValue::from_static("http"),
        );
        let f = Forwarding {
            peer: &peer,
            client: &client,
            proto: &proto,
            keep_xff: true,
            keep_forwarded: false,
        };
        write_upstream_head(&mut out, &r, "/x?y", &f, b"id-1", None);
        // Both X-Forwarded-For lines, joined, then the peer.
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /x?y HTTP/1.1\r\nHost: app.test:8080\r\nAccept: */*\r\n\
             x-forwarded-for: 1.1.1.1, 2.2.2.2, 10.0.0.1\r\nx-real-ip: 2.2.2.2\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: app.test:8080\r\n\
             x-request-id: id-1\r\n\r\n"
        );
    }

    fn resp(bytes: &[u8], head: bool) -> Option<(u16, Framing, bool, String)> {
        let mut slots = response_slots();
        match response(bytes, &mut slots, head) {
            ResponseVerdict::Ready(r) => {
                let mut out = Vec::new();
                write_client_head(&mut out, &r, false, &[], None);
                Some((
                    r.status,
                    r.framing,
                    r.reusable,
                    String::from_utf8(out).unwrap(),
                ))
            }
            _ => None,
        }
    }

    #[test]
    fn responses_are_framed_as_rfc_9112_says() {
        let r = resp(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", false).unwrap();
        assert_eq!((r.0, r.1, r.2), (200, Framing::Length(2), true));
        assert_eq!(r.3, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n");
        let r = resp(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(r.1, Framing::Chunked);
        assert_eq!(r.3, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        let r = resp(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true).unwrap();
        assert_eq!(r.1, Framing::Empty);
        assert_eq!(
            resp(b"HTTP/1.1 204 No Content\r\n\r\n", false).unwrap().1,
            Framing::Empty
        );
        assert_eq!(
            resp(b"HTTP/1.1 304 Not Modified\r\n\r\n", false).unwrap().1,
            Framing::Empty
        );
        // Until close: the client's connection closes too; the backend's is not reused.
        let r = resp(b"HTTP/1.1 200 OK\r\n\r\n", false).unwrap();
        assert_eq!((r.1, r.2), (Framing::UntilClose, false));
        assert!(r.3.ends_with("connection: close\r\n\r\n"));
        let r = resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false).unwrap();
        assert_eq!(r.1, Framing::UntilClose);
        // Connection: close, and HTTP/1.0 without keep-alive.
        assert!(
            !resp(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                false
            )
            .unwrap()
            .2
        );
        assert!(
            !resp(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false)
                .unwrap()
                .2
        );
        assert!(
            resp(
                b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
                false
            )
            .unwrap()
            .2
        );
        // Two different lengths, or a bad one: invalid.
        assert_eq!(
            resp(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false
            ),
            None
        );
        assert_eq!(
            resp(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false),
            None
        );
        // Hop-by-hop headers go, with those Connection names.
        let r = resp(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\nX-Kept: 2\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(
            r.3,
            "HTTP/1.1 200 OK\r\nX-Kept: 2\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn a_chunked_body_ends_where_its_last_chunk_and_trailers_end() {
        let body = b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let mut c = Chunks::default();
        assert_eq!(c.feed(body), Ok(Some(body.len() - 4)));
        // Fed a byte at a time, it ends at the same place.
        let mut c = Chunks::default();
        let ends: Vec<usize> = (0..body.len())
            .filter(|&i| c.feed(&body[i..i + 1]) == Ok(Some(1)))
            .collect();
        assert_eq!(ends, vec![body.len() - 5]);
        assert_eq!(Chunks::default().feed(b"0\n\n"), Ok(Some(3)));
        assert_eq!(Chunks::default().feed(b"2\r\nab\r\n"), Ok(None));
        assert_eq!(Chunks::default().feed(b"x\r\n"), Err(BadChunk));
        assert_eq!(Chunks::default().feed(b"2\r\nabX"), Err(BadChunk));
        assert_eq!(Chunks::default().feed(b"\r\n"), Err(BadChunk));
        assert_eq!(
            Chunks::default().feed(b"ffffffffffffffff\r\n"),
            Err(BadChunk)
        );
    }

    proptest::proptest! {
        /// Any chunked body, split anywhere, ends exactly where its encoding ends.
        #[test]
        fn a_chunked_body_split_anywhere_ends_where_it_ends(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 1..300), 0..6),
            ext in proptest::bool::ANY,
            trailers in proptest::collection::vec("[a-z]{1,8}: [a-z0-9]{0,8}", 0..3),
            cuts in proptest::collection::vec(0usize..2000, 0..6),
        ) {
            let mut body = Vec::new();
            for c in &chunks {
                body.extend_from_slice(format!("{:x}", c.len()).as_bytes());
                if ext {
                    body.extend_from_slice(b";name=value");
                }
                body.extend_from_slice(b"\r\n");
                body.extend_from_slice(c);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n");
            for t in &trailers {
                body.extend_from_slice(t.as_bytes());
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"\r\n");
            let end = body.len();
            body.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % body.len()).collect();
            cuts.push(0);
            cuts.push(body.len());
            cuts.sort_unstable();
            cuts.dedup();
            let mut scanner = Chunks::default();
            let mut found = None;
            for w in cuts.windows(2) {
                if let Some(n) = scanner.feed(&body[w[0]..w[1]]).unwrap() {
                    found = Some(w[0] + n);
                    break;
                }
            }
            proptest::prop_assert_eq!(found, Some(end));
            // Decoded over the same pieces: the chunks' data, in order, ending at the end.
            let mut decoder = Chunks::default();
            let (mut data, mut done_at) = (Vec::new(), None);
            'pieces: for w in cuts.windows(2) {
                let mut at = w[0];
                while at < w[1] {
                    let s = decoder.data(&body[at..w[1]]).unwrap();
                    if let Some(d) = s.data {
                        data.extend_from_slice(&body[at + d.start..at + d.end]);
                    }
                    at += s.used;
                    if s.done {
                        done_at = Some(at);
                        break 'pieces;
                    }
                }
            }
            proptest::prop_assert_eq!(done_at, Some(end));
            proptest::prop_assert_eq!(data, chunks.concat());
        }
    }

    proptest::proptest! {
        /// The fast path reads a cookie and a header as hyper's side reads them from a
        /// `HeaderMap`, so a hash key or a sticky session picks the same backend on both.
        #[test]
        fn cookies_and_headers_read_as_from_a_header_map(
            headers in proptest::collection::vec(
                (
                    proptest::sample::select(vec!["Cookie", "cookie", "X-User", "x-user", "Other"]),
                    "[a-c =;\t\u{e9}]{0,12}",
                ),
                0..5,
            ),
            name in "[a-c]{1,2}",
        ) {
            let raw: Vec<Header<'_>> = headers
                .iter()
                .map(|(n, v)| Header { name: n, value: v.as_bytes() })
                .collect();
            let mut map = http::HeaderMap::new();
            for (n, v) in &headers {
                if let Ok(v) = http::HeaderValue::from_bytes(v.as_bytes()) {
                    map.append(http::HeaderName::from_bytes(n.as_bytes()).unwrap(), v);
                }
            }
            proptest::prop_assert_eq!(cookie(&raw, &name), crate::proxy::codec::headers::cookie(&map, &name));
            proptest::prop_assert_eq!(
                header(&raw, "x-user"),
                map.get("x-user").map(|v| v.as_bytes())
            );
        }
    }

    /// Headers as sorted (lower-case name, value) pairs, for comparing two heads.
    fn lowered(headers: &[Header<'_>]) -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<(String, Vec<u8>)> = headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
            .collect();
        v.sort();
        v
    }

    fn to_headers(map: &http::HeaderMap) -> Vec<Header<'_>> {
        map.iter()
            .map(|(k, v)| Header {
                name: k.as_str(),
                value: v.as_bytes(),
            })
            .collect()
    }

    /// A header map of `headers`, as hyper would have built it.
    fn to_map(headers: &[Header<'_>]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for h in headers {
            map.append(
                http::HeaderName::from_bytes(h.name.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(h.value).unwrap(),
            );
        }
        map
    }

    proptest::proptest! {
        /// The head the fast path sends upstream has the same headers as the hyper path's
        /// rewriting (`strip_hop_by_hop` and `set_forwarded` on a header map) of the same
        /// request.
        #[test]
        fn the_upstream_head_matches_the_hyper_paths_rewriting(
            headers in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "Accept", "User-Agent", "X-Custom", "Cookie", "Connection", "Keep-Alive",
                        "X-Forwarded-For", "x-forwarded-for", "X-Forwarded-Proto",
                        "X-Forwarded-Host", "Proxy-Authorization", "Proxy-Connection",
                        "X-Real-IP", "Forwarded",
                    ]),
                    "[a-z0-9.,]([a-z0-9., ]{0,10}[a-z0-9.,])?",
                ),
                0..8,
            ),
            host_first in proptest::bool::ANY,
            keep_xff in proptest::bool::ANY,
            keep_forwarded in proptest::bool::ANY,
        ) {
            let mut raw = String::from("GET /p?q=1 HTTP/1.1\r\n");
            if host_first {
                raw.push_str("Host: app.test\r\n");
            }
            for (name, value) in &headers {
                let value = if name.eq_ignore_ascii_case("connection") { "keep-alive" } else { value.as_str() };
                raw.push_str(&format!("{name}: {value}\r\n"));
            }
            if !host_first {
                raw.push_str("Host: app.test\r\n");
            }
            raw.push_str("\r\n");
            let mut slots = header_slots();
            let Verdict::Fast(req) = request(raw.as_bytes(), &mut slots, u64::MAX) else {
                return Err(proptest::test_runner::TestCaseError::fail("not taken"));
            };
            let mut out = Vec::new();
            let made = crate::proxy::codec::headers::new_request_id(7);
            let id = req.request_id.unwrap_or(&made);
            let (peer, client, proto) = (
                http::HeaderValue::from_static("10.0.0.1"),
                http::HeaderValue::from_static("192.0.2.1"),
                http::HeaderValue::from_static("http"),
            );
            let f = Forwarding { peer: &peer, client: &client, proto: &proto, keep_xff, keep_forwarded };
            write_upstream_head(&mut out, &req, req.target, &f, id, None);
            let mut sent_slots = header_slots();
            let mut sent = httparse::Request::new(&mut []);
            let n = sent.parse_with_uninit_headers(&out, &mut sent_slots).unwrap();
            proptest::prop_assert!(n.is_complete());
            let ours = lowered(sent.headers);

            let mut map = to_map(req.headers);
            crate::proxy::codec::headers::strip_hop_by_hop(&mut map);
            crate::proxy::codec::headers::set_forwarded(&mut map, &f);
            crate::proxy::codec::headers::settle_request_id(&mut map, || 7);
            let theirs = lowered(&to_headers(&map));
            proptest::prop_assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn plain_hosts() {
        for ok in ["a", "a.test", "A-b_c.test:8080", "127.0.0.1:1"] {
            assert!(plain_host(ok.as_bytes()), "{ok}");
        }
        for slow in [
            "",
            ":80",
            "a.test:",
            "a.test:123456",
            "a b",
            "u@a",
            "[::1]:80",
            "a/b",
            "a:8x",
        ] {
            assert!(!plain_host(slow.as_bytes()), "{slow}");
        }
    }

    proptest::proptest! {
        /// The fast path takes no Host that hyper's side would refuse.
        #[test]
        fn a_plain_host_is_a_valid_authority(v in "[a-zA-Z0-9._:@\\[\\] -]{0,12}") {
            if plain_host(v.as_bytes()) {
                proptest::prop_assert!(crate::proxy::codec::headers::valid_authority(v.as_bytes()), "{}", v);
            }
        }
    }

    proptest::proptest! {
        /// The head the fast path sends the client has the same headers as the hyper path's
        /// `strip_hop_by_hop` of the backend's response (a `Content-Length` body, so framing
        /// headers are the backend's own on both paths).
        #[test]
        fn the_client_head_matches_the_hyper_paths_rewriting(
            headers in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "Content-Type", "Set-Cookie", "X-Custom", "X-Hop", "Connection",
                        "Keep-Alive", "Proxy-Authenticate", "Trailer", "Upgrade", "TE",
                    ]),
                    "[a-z0-9.;=]{1,12}",
                    proptest::sample::select(vec!["keep-alive", "close", "x-hop", "Keep-Alive, X-Hop"]),
                ),
                0..8,
            ),
        ) {
            let mut raw = String::from("HTTP/1.1 200 OK\r\n");
            for (name, value, connection) in &headers {
                let value = if *name == "Connection" { connection } else { value.as_str() };
                raw.push_str(&format!("{name}: {value}\r\n"));
            }
            raw.push_str("Content-Length: 2\r\n\r\nok");
            let mut slots = response_slots();
            let ResponseVerdict::Ready(resp) = response(raw.as_bytes(), &mut slots, false) else {
                return Err(proptest::test_runner::TestCaseError::fail("not parsed"));
            };
            let mut out = Vec::new();
            write_client_head(&mut out, &resp, false, &[], None);
            let mut sent_slots = header_slots();
            let mut sent = httparse::Response::new(&mut []);
            httparse::ParserConfig::default()
                .parse_response_with_uninit_headers(&mut sent, &out, &mut sent_slots)
                .unwrap();
            let ours = lowered(sent.headers);

            let mut map = to_map(resp.headers);
            crate::proxy::codec::headers::strip_hop_by_hop(&mut map);
            let theirs = lowered(&to_headers(&map));
            proptest::prop_assert_eq!(ours, theirs);
        }
    }
}
