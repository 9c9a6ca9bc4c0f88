//! HTTP/1.1 client connections, plain or TLS: the fast path first ([`super::fast`]); when it
//! leaves a request to hyper, hyper's connection, wrapped so that an idle keepalive connection
//! holds no hyper buffers, and a client that stalls in the middle of a request head gets
//! `408 Request Timeout` (hyper itself closes such a connection without a word). Once hyper
//! has parked the connection it goes back to the fast path.
//!
//! hyper keeps an 8 KiB read buffer and an 8 KiB write buffer for as long as a connection is
//! open, idle or not: 10,000 idle keepalive clients would pin 160 MiB. So once a connection has
//! been quiet for [`PARK_AFTER`] between requests, the driver asks hyper to close it
//! gracefully, takes the stream back when hyper shuts its side down (see [`ConnIo`]), drops
//! hyper's state and hands the stream to the fast path, which waits for the next request
//! holding no buffer. To the client it is one keepalive connection throughout.
//!
//! A connection is parked only when nothing was read since the last response bytes were
//! written (no request in progress) and the client spoke HTTP/1.1 without `Connection: close`
//! (its responses are self-delimiting, so a response still streaming when the park begins
//! ends normally and the socket stays open). A client seen pipelining is never parked: the
//! start of its next request may sit in hyper's buffer, which parking would drop. Pipelining
//! is seen two ways: a second request served with no read in between, or more bytes read
//! before a response than its request had (head plus `Content-Length`, found by a look at the
//! head in the I/O layer, or head plus a chunked body, whose end the fast path's chunk scanner
//! finds as the bytes are read; a response that starts before such a body has ended leaves
//! the connection unparked). A head stalled behind a pipelined request is closed without the
//! 408.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use tokio::io::{AsyncRead, AsyncWrite};

use super::fast::Prefixed;
use super::fast::parse::Chunks;
use tokio::sync::watch;

/// Quiet time between requests after which a connection gives its hyper buffers back (checked
/// once per this interval, so a connection parks 1–2 intervals after its last byte).
pub const PARK_AFTER: Duration = Duration::from_millis(250);

/// Parks and closes so far, in this process (the trimmer looks at how many happened since it
/// last ran).
static PARKS: AtomicU64 = AtomicU64::new(0);

/// How many client connections are parked (idle, holding no hyper buffers) right now: those
/// idle on the fast path, where hyper hands its connections back once quiet (TLS ones keep
/// rustls's buffers).
pub fn parked_connections() -> u64 {
    super::fast::idle_connections()
}

/// Parks and closes in one interval that make it a busy one.
const TRIM_AFTER_PARKS: u64 = 1000;

/// Give memory freed by parked connections back to the OS. glibc's allocator keeps freed
/// chunks in its arenas (a burst of 10,000 connections leaves ~150 MiB resident after they
/// all went idle); `malloc_trim` returns the free pages. Checked every two seconds, and run
/// once a busy spell is over: after an interval with many parks (the fast path's connections
/// go idle, freeing their buffers, after every request, so those count too) comes a quiet
/// one. Never under sustained load, where the pages it frees would be faulted straight back.
pub async fn trim_freed_memory(mut stop: watch::Receiver<bool>) {
    keep_freed_memory();
    let parks = || PARKS.load(Ordering::Relaxed) + super::fast::idle_entries();
    let mut last = parks();
    let mut busy = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = parks();
        let spell = now - last;
        last = now;
        if trim_now(&mut busy, spell) {
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    }
}

/// One step of the trimmer: `spell` parks happened in the last interval; whether to trim now.
fn trim_now(busy: &mut bool, spell: u64) -> bool {
    if spell >= TRIM_AFTER_PARKS {
        *busy = true;
        return false;
    }
    std::mem::replace(busy, false)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim has no preconditions; it only walks the allocator's own state.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

/// glibc gives memory back to the OS whenever a free leaves more than 128 KiB at the top of a
/// heap, and the next allocation faults the pages in again: with request buffers coming and
/// going that was ~1.5 page faults per proxied request. Freed memory is kept (and returned by
/// [`trim_freed_memory`] once a busy spell is over instead).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only sets one of the allocator's tuning parameters.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

pub(super) const RESPONSE_408: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// What the driver, the I/O wrapper and the service share about one client connection.
#[derive(Default)]
pub struct ConnState {
    /// Reads and writes so far (the driver compares it to tell a quiet connection).
    activity: AtomicU64,
    /// Bytes were read after the last write: a request is in progress.
    pending_read: AtomicBool,
    /// The client may not be parked (HTTP/1.0, or it asked to close).
    no_park: AtomicBool,
    /// The driver asked hyper to close so the socket can be parked.
    parking: AtomicBool,
    /// hyper's header read timeout fired; with `pending_read` (part of a head arrived after
    /// the last response) the client gets 408, otherwise the idle connection just closes.
    timed_out: AtomicBool,
    /// A request head just read carries both `Content-Length` and `Transfer-Encoding`; its
    /// request line is in `conflict_line`, checked against the request the service sees as
    /// number `conflict_at` since the read that started the request in progress (0 for a head
    /// at the start of a read, 1 for the one pipelined behind it), so bytes that only looked
    /// like a head, in a body, refuse nothing.
    conflicting_framing: AtomicBool,
    conflict_line: std::sync::Mutex<Option<Vec<u8>>>,
    conflict_at: std::sync::atomic::AtomicU32,
    /// Requests the service saw since the last read that started a request: a second one
    /// means the client pipelines, and a pipelining client is never parked (the start of its
    /// next request may sit in hyper's buffer, which parking would drop).
    heads: std::sync::atomic::AtomicU32,
    /// Bytes read since the read that started the request in progress (that read included).
    read_in_request: AtomicU64,
    /// How many of those bytes the request in progress is (head plus `Content-Length`, or
    /// head plus chunked body), once known: [`HEAD_PENDING`] until its head has been read,
    /// [`BODY_PENDING`] until its chunked body has, [`END_UNKNOWN`] if it never will be. If
    /// more were read before its response, the client pipelines: the start of its next
    /// request may sit in hyper's buffer, so the connection is never parked.
    expected: AtomicU64,
    /// The start of a head that did not arrive in one read, kept to find its end.
    partial_head: std::sync::Mutex<Vec<u8>>,
    /// The chunked request body being read ([`BODY_PENDING`]), and how many bytes of the
    /// request came before the bytes fed to it next.
    chunked: std::sync::Mutex<Option<(Chunks, u64)>>,
    has_partial: AtomicBool,
}

impl ConnState {
    /// Count a read or write. Only the connection's own task writes these fields (atomics
    /// only because hyper wants a `Send` I/O type), so a plain load and store will do: no
    /// locked read-modify-write per read or write.
    fn bump(&self) {
        let n = self.activity.load(Ordering::Relaxed);
        self.activity.store(n.wrapping_add(1), Ordering::Relaxed);
    }

    /// Called by the service for each request head; `false` if it must be refused with 400
    /// (both `Content-Length` and `Transfer-Encoding`: hyper would read it as chunked, drop
    /// the length and close afterwards, which is safe, but such a request is a smuggling
    /// attempt or a broken client and is refused outright).
    pub fn on_request<B>(&self, req: &http::Request<B>) -> bool {
        let heads = self.heads.load(Ordering::Relaxed);
        self.heads.store(heads.saturating_add(1), Ordering::Relaxed);
        if heads >= 1 {
            self.no_park.store(true, Ordering::Relaxed);
        }
        let at = self.conflict_at.load(Ordering::Relaxed);
        if self.conflicting_framing.load(Ordering::Relaxed) && heads >= at {
            // This request's, or a stale one (dropped).
            self.conflicting_framing.store(false, Ordering::Relaxed);
            let line = self
                .conflict_line
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            let mut parts = line.as_deref().unwrap_or_default().split(|&b| b == b' ');
            if heads == at
                && parts.next() == Some(req.method().as_str().as_bytes())
                && parts.next() == Some(req.uri().to_string().as_bytes())
            {
                self.no_park.store(true, Ordering::Relaxed);
                return false;
            }
        }
        let close = req.version() < http::Version::HTTP_11
            || req
                .headers()
                .get_all(http::header::CONNECTION)
                .iter()
                .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        if close {
            self.no_park.store(true, Ordering::Relaxed);
        }
        true
    }
}

/// [`ConnState::expected`] while the head of the request in progress is still incomplete.
const HEAD_PENDING: u64 = u64::MAX;

/// [`ConnState::expected`] while a chunked request body is still being read (its end is found
/// by [`Chunks`], the fast path's scanner, fed the bytes as they are read).
const BODY_PENDING: u64 = u64::MAX - 1;

/// [`ConnState::expected`] when the request's end cannot be known (the connection is then
/// never parked).
const END_UNKNOWN: u64 = u64::MAX - 2;

/// Where the request in progress ends, as its head tells.
enum Ends {
    /// After this many bytes.
    At(u64),
    /// Where its chunked body ends, which starts after a head of this many bytes.
    Chunked(usize),
}

/// Longest head kept in [`ConnState::partial_head`]; a longer split head makes the connection
/// unparkable instead.
const PARTIAL_HEAD_MAX: usize = 64 << 10;

/// What a look at the start of a request head finds.
#[derive(Debug, Default, PartialEq)]
pub struct HeadScan<'a> {
    pub request_line: &'a [u8],
    /// Bytes up to and including the blank line, if it arrived.
    pub len: Option<usize>,
    /// A `Content-Length` line, and its value if it is one plain number.
    pub has_content_length: bool,
    pub content_length: Option<u64>,
    /// A `Transfer-Encoding` line.
    pub transfer_encoding: bool,
}

/// Look at the header lines of a request head (the part that arrived, if it is not complete):
/// its length and framing headers.
pub fn scan_head(bytes: &[u8]) -> Option<HeadScan<'_>> {
    let mut lines = bytes.split(|&b| b == b'\n');
    let request_line = lines.next()?;
    let mut pos = request_line.len() + 1;
    let mut scan = HeadScan {
        request_line: request_line.strip_suffix(b"\r").unwrap_or(request_line),
        ..HeadScan::default()
    };
    for line in lines {
        pos += line.len() + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            // The blank line ends the head, if its newline arrived.
            scan.len = (pos <= bytes.len()).then_some(pos);
            break;
        }
        let value = |name: &[u8]| {
            (line.len() > name.len() && line[..name.len()].eq_ignore_ascii_case(name))
                .then(|| line[name.len()..].trim_ascii())
        };
        if let Some(v) = value(b"content-length:") {
            let n = std::str::from_utf8(v).ok().and_then(|v| v.parse().ok());
            scan.content_length = if scan.has_content_length && scan.content_length != n {
                None
            } else {
                n
            };
            scan.has_content_length = true;
        }
        scan.transfer_encoding |= value(b"transfer-encoding:").is_some();
    }
    Some(scan)
}

impl ConnState {
    /// Note where the request whose head starts (or continues, with `continued`) in `bytes`
    /// ends. A head with both framings or a length that is not one number, or over
    /// [`PARTIAL_HEAD_MAX`] split over reads, makes the connection unparkable.
    fn note_head(&self, bytes: &[u8], scan: Option<&HeadScan<'_>>, continued: bool) {
        if !continued && !self.has_partial.load(Ordering::Relaxed) {
            // The common case: a whole head in one read, nothing kept from before.
            if let Some(e) = self.expected_of(scan, bytes.len()) {
                self.set_end(e, bytes);
                return;
            }
        }
        let mut kept = self.partial_head.lock().unwrap_or_else(|e| e.into_inner());
        if !continued {
            kept.clear();
        }
        kept.extend_from_slice(bytes);
        match self.expected_of(scan_head(&kept).as_ref(), kept.len()) {
            Some(e) => {
                self.set_end(e, &kept);
                *kept = Vec::new();
                self.has_partial.store(false, Ordering::Relaxed);
            }
            None => {
                self.expected.store(HEAD_PENDING, Ordering::Relaxed);
                self.has_partial.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Where the request ends if its head (`scan` of `len` bytes) tells it,
    /// `At(END_UNKNOWN)` (after marking the connection unparkable) if it never will, `None`
    /// while the head is incomplete.
    fn expected_of(&self, scan: Option<&HeadScan<'_>>, len: usize) -> Option<Ends> {
        let unparkable = || {
            self.no_park.store(true, Ordering::Relaxed);
            Some(Ends::At(END_UNKNOWN))
        };
        match scan {
            // Both framings (refused with 400), or a length that is not one number.
            Some(h)
                if h.has_content_length && (h.transfer_encoding || h.content_length.is_none()) =>
            {
                unparkable()
            }
            Some(HeadScan {
                len: Some(head),
                transfer_encoding: true,
                ..
            }) => Some(Ends::Chunked(*head)),
            // (A length so large that it reaches the markers: never parked.)
            Some(HeadScan {
                len: Some(head),
                content_length,
                ..
            }) => match (*head as u64).checked_add(content_length.unwrap_or(0)) {
                Some(end) if end < END_UNKNOWN => Some(Ends::At(end)),
                _ => unparkable(),
            },
            _ if len > PARTIAL_HEAD_MAX => unparkable(),
            _ => None,
        }
    }

    /// Note where the request ends; `request` is its bytes read so far (from its start).
    fn set_end(&self, end: Ends, request: &[u8]) {
        let head = match end {
            Ends::At(e) => {
                self.expected.store(e, Ordering::Relaxed);
                return;
            }
            Ends::Chunked(head) => head,
        };
        self.expected.store(BODY_PENDING, Ordering::Relaxed);
        *self.chunked.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Chunks::default(), head as u64));
        self.feed_body(&request[head.min(request.len())..]);
    }

    /// Bytes of the chunked request body being read.
    fn feed_body(&self, bytes: &[u8]) {
        let mut slot = self.chunked.lock().unwrap_or_else(|e| e.into_inner());
        let Some((chunks, before)) = slot.as_mut() else {
            return;
        };
        match chunks.feed(bytes) {
            Ok(Some(n)) => {
                self.expected.store(*before + n as u64, Ordering::Relaxed);
                *slot = None;
            }
            Ok(None) => *before += bytes.len() as u64,
            Err(_) => {
                // Not chunked after all: hyper answers 400; never parked.
                self.no_park.store(true, Ordering::Relaxed);
                self.expected.store(END_UNKNOWN, Ordering::Relaxed);
                *slot = None;
            }
        }
    }

    /// Bytes read from the client.
    fn on_read(&self, read: &[u8]) {
        self.bump();
        if self.pending_read.load(Ordering::Relaxed) {
            let so_far = self.read_in_request.load(Ordering::Relaxed);
            self.read_in_request
                .store(so_far + read.len() as u64, Ordering::Relaxed);
            match self.expected.load(Ordering::Relaxed) {
                HEAD_PENDING => self.note_head(read, None, true),
                BODY_PENDING => self.feed_body(read),
                _ => {}
            }
            self.check_next_head(read);
            return;
        }
        // The first bytes after a response (or on a new connection) start a request head:
        // note where the request ends and check its framing headers, and those of the heads
        // pipelined behind it in this read. (A CL+TE head split over reads, or behind a body
        // that continues in a later read, is left to hyper, which reads it as chunked and
        // then closes.)
        self.pending_read.store(true, Ordering::Relaxed);
        self.heads.store(0, Ordering::Relaxed);
        self.read_in_request
            .store(read.len() as u64, Ordering::Relaxed);
        let scan = scan_head(read);
        if let Some(h) = &scan
            && h.has_content_length
            && h.transfer_encoding
        {
            self.note_conflict(h.request_line, 0);
        }
        self.note_head(read, scan.as_ref(), false);
        self.check_next_head(read);
    }

    /// A head with both framings, as the service's request number `at` since the read that
    /// started the request in progress.
    fn note_conflict(&self, request_line: &[u8], at: u32) {
        *self.conflict_line.lock().unwrap_or_else(|e| e.into_inner()) = Some(request_line.to_vec());
        self.conflict_at.store(at, Ordering::Relaxed);
        self.conflicting_framing.store(true, Ordering::Relaxed);
    }

    /// If the request in progress ends inside `read` (the last bytes read), what follows is
    /// the next request's head: check its framing headers, and those of each request
    /// pipelined behind it in the same read (walking from head to head by their framing, so
    /// bytes in a body are never taken for a head).
    fn check_next_head(&self, read: &[u8]) {
        let end = self.expected.load(Ordering::Relaxed);
        if end >= END_UNKNOWN || self.conflicting_framing.load(Ordering::Relaxed) {
            return;
        }
        let total = self.read_in_request.load(Ordering::Relaxed);
        let start = total - read.len() as u64;
        if end < start || end >= total {
            return;
        }
        // The service has seen the request in progress (1) or not yet (0); the next request
        // is its number 1.
        let mut at = self.heads.load(Ordering::Relaxed).max(1);
        let mut rest = &read[(end - start) as usize..];
        while let Some(scan) = scan_head(rest) {
            if scan.has_content_length && scan.transfer_encoding {
                self.note_conflict(scan.request_line, at);
                return;
            }
            // Where this request ends, if all of it is in this read. (No `Content-Length`: no
            // body; one that is not a single number: unknown.)
            let Some(head) = scan.len else { return };
            let body = if scan.transfer_encoding {
                Chunks::default().feed(&rest[head..]).ok().flatten()
            } else if scan.has_content_length {
                scan.content_length.and_then(|n| usize::try_from(n).ok())
            } else {
                Some(0)
            };
            match body
                .and_then(|b| head.checked_add(b))
                .and_then(|end| rest.get(end..))
            {
                Some(after) if !after.is_empty() => rest = after,
                _ => return,
            }
            at += 1;
        }
    }

    /// Bytes written to the client: the first of them end the request in progress.
    fn on_write(&self) {
        self.bump();
        if self.pending_read.load(Ordering::Relaxed) {
            self.on_response_start();
            self.pending_read.store(false, Ordering::Relaxed);
        }
    }

    /// The first response bytes of a request: if more was read than the request itself, the
    /// rest is the start of the next one (pipelining), and the connection is never parked.
    /// Nor is it if the response starts before a chunked body has ended (where the rest of
    /// the body ends is then left to hyper alone).
    fn on_response_start(&self) {
        match self.expected.load(Ordering::Relaxed) {
            HEAD_PENDING | END_UNKNOWN => {}
            BODY_PENDING => {
                self.no_park.store(true, Ordering::Relaxed);
                *self.chunked.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
            expected => {
                if self.read_in_request.load(Ordering::Relaxed) > expected {
                    self.no_park.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Where [`ConnIo`] leaves the client stream for the driver: on a parking shutdown (instead of
/// shutting it down), or when dropped after a header timeout (for the 408).
type HandBack<S> = Arc<std::sync::Mutex<Option<S>>>;

/// The client stream (plain or TLS) as hyper sees it: counts activity, and hands the stream
/// back to the driver when hyper parks it or times out a head.
pub struct ConnIo<S> {
    /// With the bytes the fast path read and left to hyper in front.
    stream: Option<Prefixed<S>>,
    state: Arc<ConnState>,
    back: HandBack<S>,
}

impl<S> ConnIo<S> {
    fn stream(&mut self) -> io::Result<&mut Prefixed<S>> {
        self.stream
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "connection parked"))
    }
}

impl<S> Drop for ConnIo<S> {
    fn drop(&mut self) {
        if self.state.timed_out.load(Ordering::Relaxed)
            && self.state.pending_read.load(Ordering::Relaxed)
            && let Some(s) = self.stream.take()
        {
            // For the driver to answer 408 (nothing of the next response was written).
            *self.back.lock().unwrap_or_else(|e| e.into_inner()) = Some(s.into_inner());
        }
    }
}

impl<S: AsyncRead + Unpin> Read for ConnIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let n = {
            // SAFETY: the tokio ReadBuf only ever writes initialised bytes into `dst`, and we
            // advance `buf` by exactly what it reports as filled.
            let dst = unsafe { buf.as_mut() };
            let mut tbuf = tokio::io::ReadBuf::uninit(dst);
            let stream = match self.stream() {
                Ok(s) => s,
                Err(e) => return Poll::Ready(Err(e)),
            };
            match Pin::new(stream).poll_read(cx, &mut tbuf) {
                Poll::Ready(Ok(())) => tbuf.filled().len(),
                other => return other,
            }
        };
        if n > 0 {
            // SAFETY: the read above initialised the first `n` bytes of `buf`.
            let read = unsafe { std::slice::from_raw_parts(buf.as_mut().as_ptr().cast::<u8>(), n) };
            self.state.on_read(read);
        }
        // SAFETY: `n` bytes were just initialised by the read above.
        unsafe { buf.advance(n) };
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> Write for ConnIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.counted_write(|s| s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.counted_write(|s| s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(s) => Pin::new(s).poll_flush(cx),
            Err(_) => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.state.parking.load(Ordering::Relaxed) {
            // Nothing was read since the last response, so nothing is left in front.
            if let Some(s) = self.stream.take().map(Prefixed::into_inner) {
                *self.back.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
            }
            return Poll::Ready(Ok(()));
        }
        match self.stream() {
            Ok(s) => Pin::new(s).poll_shutdown(cx),
            Err(_) => Poll::Ready(Ok(())),
        }
    }
}

impl<S: Unpin> ConnIo<S> {
    /// A write to the socket, counted as activity; written bytes end the request in progress.
    fn counted_write(
        &mut self,
        write: impl FnOnce(Pin<&mut Prefixed<S>>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let stream = match self.stream() {
            Ok(s) => s,
            Err(e) => return Poll::Ready(Err(e)),
        };
        let r = write(Pin::new(stream));
        if let Poll::Ready(Ok(n)) = r
            && n > 0
        {
            self.state.on_write();
        }
        r
    }
}

/// Counts a connection's end for the trimmer.
struct CountClose;

impl Drop for CountClose {
    fn drop(&mut self) {
        PARKS.fetch_add(1, Ordering::Relaxed);
    }
}

/// Serve one HTTP/1.1 client connection (plain, or TLS after the handshake) until it ends: on
/// the fast path while it takes the requests, else with hyper until hyper parks it; answer 408
/// to a stalled request head, and on `stop` finish the request in flight and close.
#[allow(clippy::too_many_arguments)]
pub async fn drive_h1<IO, S>(
    stream: IO,
    builder: &hyper::server::conn::http1::Builder,
    make_service: impl FnOnce(Arc<ConnState>) -> S,
    mut stop: watch::Receiver<bool>,
    peer: SocketAddr,
    keepalive: Duration,
    fwd: &super::forward::Forwarder,
    client: &super::forward::Client,
) where
    IO: super::fast::ClientIo + 'static,
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<super::forward::Body>,
        >,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use tokio::io::AsyncWriteExt;
    let _closed = CountClose;
    let state = Arc::new(ConnState::default());
    let service = make_service(state.clone());
    let back: HandBack<IO> = Arc::default();
    let mut stream = stream;
    loop {
        let prefix = match super::fast::serve(&mut stream, fwd, client, &mut stop, keepalive).await
        {
            super::fast::End::Closed => {
                // A clean end (close_notify, over TLS).
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
                return;
            }
            super::fast::End::Slow(bytes) => bytes,
        };
        state.parking.store(false, Ordering::Relaxed);
        let io = ConnIo {
            stream: Some(Prefixed::new(prefix, stream)),
            state: state.clone(),
            back: back.clone(),
        };
        // On the heap, so a parked connection's task does not keep hyper's state inline.
        let mut conn = Box::pin(builder.serve_connection(io, &service).with_upgrades());
        let quiet = tokio::time::sleep(PARK_AFTER);
        let mut quiet = std::pin::pin!(quiet);
        let mut seen = state.activity.load(Ordering::Relaxed);
        let mut stopping = false;
        let result = loop {
            tokio::select! {
                r = conn.as_mut() => break r,
                _ = async { let _ = stop.wait_for(|s| *s).await; }, if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = quiet.as_mut(), if !stopping && !state.parking.load(Ordering::Relaxed) => {
                    let now = state.activity.load(Ordering::Relaxed);
                    if now != seen
                        || state.pending_read.load(Ordering::Relaxed)
                        || state.no_park.load(Ordering::Relaxed)
                    {
                        seen = now;
                        quiet.as_mut().reset(tokio::time::Instant::now() + PARK_AFTER);
                    } else {
                        state.parking.store(true, Ordering::Relaxed);
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        };
        if result.as_ref().is_err_and(|e| e.is_timeout()) {
            // The ConnIo hands the stream back as it is dropped, if part of a request head
            // had arrived, for the 408.
            state.timed_out.store(true, Ordering::Relaxed);
        }
        // Frees hyper's state and buffers (and, unless handed back, closes the stream).
        drop(conn);
        let handed = back.lock().unwrap_or_else(|e| e.into_inner()).take();
        match result {
            Ok(()) if state.parking.load(Ordering::Relaxed) && !stopping => {
                // Back to the fast path, which waits for the next request holding nothing.
                let Some(s) = handed else { return };
                stream = s;
            }
            Ok(()) => return,
            Err(e) => {
                if let Some(mut s) = handed {
                    let answer = async {
                        s.write_all(RESPONSE_408).await?;
                        s.shutdown().await
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
                }
                tracing::debug!(%peer, error = %e, "client connection ended with an error");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_trimmer_runs_once_a_busy_spell_is_over() {
        let mut busy = false;
        let steps: Vec<bool> = [0, 5000, 5000, 10, 10, 2000, 0, 0]
            .into_iter()
            .map(|spell| super::trim_now(&mut busy, spell))
            .collect();
        assert_eq!(
            steps,
            [false, false, false, true, false, false, true, false]
        );
    }

    #[test]
    fn a_head_is_measured() {
        use super::{HeadScan, scan_head};
        let h = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET";
        assert_eq!(
            scan_head(h),
            Some(HeadScan {
                request_line: b"POST /a HTTP/1.1",
                len: Some(h.len() - 8),
                has_content_length: true,
                content_length: Some(5),
                transfer_encoding: false,
            })
        );
        // Incomplete: no length yet, even with the blank line's \r in.
        assert_eq!(
            scan_head(b"GET / HTTP/1.1\r\nHost: x\r\n\r").unwrap().len,
            None
        );
        assert_eq!(scan_head(b"GET / HTTP/1.1\r\nHo").unwrap().len, None);
        // Bare LF line ends count as hyper counts them.
        assert_eq!(
            scan_head(b"GET / HTTP/1.1\nHost: x\n\n").unwrap().len,
            Some(24)
        );
        // Two different lengths: no length.
        let two = scan_head(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(two.unwrap().content_length, None);
    }

    #[test]
    fn more_bytes_than_the_request_before_its_response_is_pipelining() {
        use super::ConnState;
        use std::sync::atomic::Ordering;
        let parkable = |reads: &[&[u8]]| {
            let st = ConnState::default();
            for r in reads {
                st.on_read(r);
            }
            st.on_write();
            !st.no_park.load(Ordering::Relaxed)
        };
        let get = &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..];
        assert!(parkable(&[get]));
        // A head split over reads, and a body after its head.
        assert!(parkable(&[b"GET / HTTP/1.1\r\nHo", b"st: x\r\n", b"\r\n"]));
        assert!(parkable(&[
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n",
            b"ab",
            b"cd"
        ]));
        // The start of a second request in the same read, or in a later one before the
        // response.
        assert!(!parkable(&[b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HT"]));
        assert!(!parkable(&[get, b"GET / HT"]));
        assert!(!parkable(&[
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n",
            b"abG"
        ]));
        // A chunked body: its end is found as it is read (in the head's read, split anywhere,
        // or after a split head), and bytes after it are pipelining.
        let chunked =
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"[..];
        assert!(parkable(&[chunked]));
        for at in 1..chunked.len() {
            let (a, b) = chunked.split_at(at);
            assert!(parkable(&[a, b]), "split at {at}");
            assert!(!parkable(&[a, b, b"G"]), "split at {at}, then more");
        }
        assert!(!parkable(&[chunked, b"GET / HTTP/1.1\r\n"]));
        assert!(!parkable(&[&[chunked, &b"GET"[..]].concat()]));
        // A response before the body has ended, or a body that is not chunked after all.
        assert!(!parkable(&[&chunked[..chunked.len() - 3]]));
        assert!(!parkable(&[
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
        ]));
        // A length near the top of u64 (which the markers above use).
        assert!(!parkable(&[
            b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n"
        ]));
        // Both framings: refused (and closed) anyway.
        assert!(!parkable(&[
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ]));
        // After a request that was not pipelined, the next is judged afresh.
        let st = ConnState::default();
        st.on_read(b"GET / HTTP/1.1\r\nHo");
        st.on_read(b"st: x\r\n\r\n");
        st.on_write();
        st.on_read(get);
        st.on_write();
        assert!(!st.no_park.load(Ordering::Relaxed));
        assert!(st.partial_head.lock().unwrap().capacity() == 0);
    }

    /// If a request head (the bytes up to the blank line; the part that arrived, if it is
    /// not complete) has both a `Content-Length` and a `Transfer-Encoding` header line: its
    /// request line (what [`ConnState`] checks each head for, through [`super::scan_head`]).
    fn conflicting_framing(bytes: &[u8]) -> Option<&[u8]> {
        super::scan_head(bytes)
            .filter(|h| h.has_content_length && h.transfer_encoding)
            .map(|h| h.request_line)
    }

    #[test]
    fn framing_headers_are_found_only_in_the_head() {
        let both = b"POST /a?b HTTP/1.1\r\nHost: x\r\ncontent-length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(conflicting_framing(both), Some(&b"POST /a?b HTTP/1.1"[..]));
        assert!(
            conflicting_framing(
                b"POST / HTTP/1.1\nTRANSFER-ENCODING: chunked\nContent-Length: 1\n"
            )
            .is_some()
        );
        assert!(conflicting_framing(b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n").is_none());
        assert!(
            conflicting_framing(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").is_none()
        );
        // In the body, not the head.
        assert!(
            conflicting_framing(
                b"POST / HTTP/1.1\r\nContent-Length: 30\r\n\r\nTransfer-Encoding: chunked\r\n"
            )
            .is_none()
        );
        // A header merely named like them.
        assert!(
            conflicting_framing(
                b"GET / HTTP/1.1\r\nX-Content-Length: 1\r\nTransfer-Encodings: x\r\n\r\n"
            )
            .is_none()
        );
        // The request line is not a header.
        assert!(
            conflicting_framing(
                b"content-length: / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            .is_none()
        );
    }

    #[test]
    fn only_the_request_the_head_belongs_to_is_refused() {
        use super::ConnState;
        use std::sync::atomic::Ordering;
        let st = ConnState::default();
        // Body bytes after a 100 Continue that merely look like such a head.
        *st.conflict_line.lock().unwrap() = Some(b"POST /other HTTP/1.1".to_vec());
        st.conflicting_framing.store(true, Ordering::Relaxed);
        let req = http::Request::post("/upload").body(()).unwrap();
        assert!(st.on_request(&req));
        // The real thing.
        let st = ConnState::default();
        *st.conflict_line.lock().unwrap() = Some(b"POST /upload HTTP/1.1".to_vec());
        st.conflicting_framing.store(true, Ordering::Relaxed);
        assert!(!st.on_request(&req));
        // A head with both framings pipelined behind another request, in the same read or a
        // later one (before or after the service saw the first): the second request the
        // service sees is refused, not the first.
        let get = &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..];
        let both = &b"POST /a?b HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..];
        let first = http::Request::get("/").body(()).unwrap();
        let second = http::Request::post("/a?b").body(()).unwrap();
        for (reads, seen_between) in [
            (vec![[get, both].concat()], false),
            (vec![get.to_vec(), both.to_vec()], true),
            (vec![get.to_vec(), both.to_vec()], false),
        ] {
            let st = ConnState::default();
            st.on_read(&reads[0]);
            if seen_between {
                assert!(st.on_request(&first));
            }
            for r in &reads[1..] {
                st.on_read(r);
            }
            if !seen_between {
                assert!(st.on_request(&first));
            }
            st.on_write();
            assert!(!st.on_request(&second), "{reads:?} {seen_between}");
        }
        // Further behind in the same read, past bodyless, sized and chunked requests (and a
        // sized body that merely looks like such a head): the request it belongs to is
        // refused, and only that one.
        let chunked =
            &b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"[..];
        let fake = format!("POST /s HTTP/1.1\r\nContent-Length: {}\r\n\r\n", both.len());
        let sized = [fake.as_bytes(), both].concat();
        for before in [
            vec![get, get],
            vec![get, chunked, get],
            vec![chunked, &sized[..], get],
        ] {
            let st = ConnState::default();
            st.on_read(&[before.concat(), both.to_vec()].concat());
            // The requests before it are let through (by number: their method and path do
            // not matter here).
            for i in 0..before.len() {
                assert!(st.on_request(&first), "{i} of {before:?}");
            }
            assert!(!st.on_request(&second), "{before:?}");
        }
        // A head further behind whose request is not all there yet is left to hyper (read as
        // chunked, then closed), as is one behind a length that is not a number.
        let st = ConnState::default();
        st.on_read(&[get, &b"POST /x HTTP/1.1\r\nContent-Length: 9\r\n\r\nab"[..]].concat());
        assert!(!st.conflicting_framing.load(Ordering::Relaxed));
        // (Nor does a length near the top of u64 overflow the walk.)
        let huge = &b"POST /x HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\nab"[..];
        let st = ConnState::default();
        st.on_read(&[get, huge, both].concat());
        assert!(!st.conflicting_framing.load(Ordering::Relaxed));
        // Such bytes inside a body refuse nothing.
        let st = ConnState::default();
        let post = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", both.len());
        st.on_read(&[post.as_bytes(), both].concat());
        assert!(st.on_request(&http::Request::post("/").body(()).unwrap()));
        st.on_write();
        st.on_read(get);
        assert!(st.on_request(&second));
        // Two requests with no request-starting read between them: pipelining, never parked.
        let st = ConnState::default();
        assert!(st.on_request(&req));
        assert!(!st.no_park.load(Ordering::Relaxed));
        assert!(st.on_request(&req));
        assert!(st.no_park.load(Ordering::Relaxed));
    }
}
