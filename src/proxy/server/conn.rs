//! HTTP/1.1 client connections, plain or TLS: the fast path first ([`fast`]); when it
//! leaves a request to hyper, hyper's connection, wrapped so that an idle keepalive connection
//! holds no hyper buffers, and a client that stalls in the middle of a request head gets
//! `408 Request Timeout` (hyper itself closes such a connection without a word). Once hyper
//! has parked the connection it goes back to the fast path.
//!
//! hyper keeps an 8 KiB read buffer and an 8 KiB write buffer for as long as a connection is
//! open, idle or not: 10,000 idle keepalive clients would pin 160 MiB. So once a connection has
//! been quiet for `park_after` (`ProxyConfig`) between requests, the driver asks hyper to close it
//! gracefully, takes the stream back when hyper shuts its side down (see [`ConnIo`]), drops
//! hyper's state and hands the stream to the fast path, which waits for the next request
//! holding no buffer. To the client it is one keepalive connection throughout.
//!
//! A connection is parked only when nothing was read since the last response bytes were
//! written, the bytes read are exactly the requests hyper has handed to the service (nothing
//! of a next request sits in hyper's buffer, which parking would drop, and no body is still to
//! come), and the client spoke HTTP/1.1 without `Connection: close` (its responses are
//! self-delimiting, so a response still streaming when the park begins ends normally and the
//! socket stays open). Where requests end is followed in the bytes as they are read, by
//! [`crate::proxy::codec::follow`], which also finds a head with both `Content-Length` and
//! `Transfer-Encoding` (refused with 400), however the reads split it. A head stalled behind a
//! pipelined request is closed without the 408.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::proxy::codec::follow::{Follower, request_key};
use crate::proxy::forwarder::Forwarder;
use crate::proxy::front::fast::{self, Prefixed};
use crate::proxy::front::hyper::Body;
use crate::proxy::plan::Client;
use crate::proxy::runtime::Runtime;
use tokio::sync::watch;

/// Parks and closes in one interval that make it a busy one.
const TRIM_AFTER_PARKS: u64 = 1000;

/// Give memory freed by parked connections back to the OS. glibc's allocator keeps freed
/// chunks in its arenas, so a burst of connections leaves its buffers' memory resident after
/// they all went idle (BENCHMARKS.md, "Idle connections"); `malloc_trim` returns the free
/// pages. Checked every two seconds, and run
/// once a busy spell is over: after an interval with many parks (the fast path's connections
/// go idle, freeing their buffers, after every request, so those count too) comes a quiet
/// one. Never under sustained load, where the pages it frees would be faulted straight back.
pub async fn trim_freed_memory(runtime: Arc<Runtime>, mut stop: watch::Receiver<bool>) {
    keep_freed_memory();
    let parks = || runtime.parks();
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

/// Give freed memory back to the OS now (after loading a large state at start, whose file and
/// parsed copy are freed once the registry is built).
pub fn release_freed_memory() {
    trim();
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

/// The status hyper answered a request it could not parse with (it writes that answer itself,
/// and tells only through the error): 431 for a head too large, 414 for a target too long
/// (hyper's error says so only in its text), 400 for the rest.
fn refusal(e: &hyper::Error) -> Option<u16> {
    if e.is_parse_too_large() {
        Some(431)
    } else if e.is_parse() {
        Some(if e.to_string().contains("uri is too long") {
            414
        } else {
            400
        })
    } else {
        None
    }
}

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
    /// Requests the service saw since hyper took the connection over.
    seen: AtomicU32,
    /// The requests in the bytes read since hyper took the connection over. (Only the
    /// connection's own task touches it; a mutex because hyper wants a `Send` I/O type.)
    follower: std::sync::Mutex<Follower>,
}

impl ConnState {
    /// Count a read or write. Only the connection's own task writes these fields (atomics
    /// only because hyper wants a `Send` I/O type), so a plain load and store will do: no
    /// locked read-modify-write per read or write.
    fn bump(&self) {
        let n = self.activity.load(Ordering::Relaxed);
        self.activity.store(n.wrapping_add(1), Ordering::Relaxed);
    }

    fn follower(&self) -> std::sync::MutexGuard<'_, Follower> {
        self.follower.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// hyper takes the connection over, at the start of a request.
    fn begin(&self) {
        self.parking.store(false, Ordering::Relaxed);
        self.seen.store(0, Ordering::Relaxed);
        *self.follower() = Follower::default();
    }

    /// Called by the service for each request head; `false` if it must be refused with 400
    /// (both `Content-Length` and `Transfer-Encoding`: hyper would read it as chunked, drop
    /// the length and close afterwards, which is safe, but such a request is a smuggling
    /// attempt or a broken client and is refused outright). The request is found by its
    /// number on the connection; its method and target must match too (a guard, should the
    /// follower ever count otherwise than hyper).
    pub fn on_request<B>(&self, req: &http::Request<B>) -> bool {
        let n = self.seen.load(Ordering::Relaxed);
        self.seen.store(n.saturating_add(1), Ordering::Relaxed);
        let conflict = self.follower().conflict(n);
        if let Some(key) = conflict {
            let target = req.uri().to_string();
            if key == request_key(req.method().as_str().as_bytes(), target.as_bytes()) {
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

    /// Bytes read from the client.
    fn on_read(&self, read: &[u8]) {
        self.bump();
        self.pending_read.store(true, Ordering::Relaxed);
        self.follower().feed(read);
    }

    /// Bytes written to the client.
    fn on_write(&self) {
        self.bump();
        self.pending_read.store(false, Ordering::Relaxed);
    }

    /// Whether hyper may be asked to give the connection back now: nothing read since the
    /// last write, and what was read is exactly the requests the service saw (hyper's buffer
    /// holds nothing of a next request, no body is still to come), from a client that keeps
    /// its connections open.
    fn parkable(&self) -> bool {
        !self.pending_read.load(Ordering::Relaxed)
            && !self.no_park.load(Ordering::Relaxed)
            && self.follower().between(self.seen.load(Ordering::Relaxed))
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

impl<S: AsyncRead + Unpin> AsyncRead for ConnIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let stream = match self.stream() {
            Ok(s) => s,
            Err(e) => return Poll::Ready(Err(e)),
        };
        std::task::ready!(Pin::new(stream).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.state.on_read(&buf.filled()[before..]);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ConnIo<S> {
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
struct CountClose<'a>(&'a Runtime);

impl Drop for CountClose<'_> {
    fn drop(&mut self) {
        self.0.parked();
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
    fwd: &Forwarder,
    client: &Client,
) where
    IO: fast::ClientIo + 'static,
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<Body>,
        >,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use tokio::io::AsyncWriteExt;
    let _closed = CountClose(&fwd.runtime);
    let state = Arc::new(ConnState::default());
    let service = make_service(state.clone());
    let back: HandBack<IO> = Arc::default();
    let mut stream = stream;
    loop {
        let prefix = match fast::serve(&mut stream, fwd, client, &mut stop, keepalive).await {
            fast::End::Closed => {
                // A clean end (close_notify, over TLS).
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
                return;
            }
            fast::End::Slow(bytes) => bytes,
        };
        state.begin();
        let io = TokioIo::new(ConnIo {
            stream: Some(Prefixed::new(prefix, stream)),
            state: state.clone(),
            back: back.clone(),
        });
        // On the heap, so a parked connection's task does not keep hyper's state inline.
        let mut conn = Box::pin(builder.serve_connection(io, &service).with_upgrades());
        let quiet = tokio::time::sleep(fwd.park_after);
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
                    if now != seen || !state.parkable() {
                        seen = now;
                        quiet.as_mut().reset(tokio::time::Instant::now() + fwd.park_after);
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
                    fwd.answer_408(&mut s, client, crate::proxy::plan::Front::Hyper)
                        .await;
                } else if let Some(status) = refusal(&e) {
                    fwd.refused_by_hyper(client, status);
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

    use super::ConnState;

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

    /// A connection that read `reads`, whose service saw `requests` requests, and which then
    /// wrote a response: may it be parked?
    fn parkable(reads: &[&[u8]], requests: usize) -> bool {
        let st = ConnState::default();
        for r in reads {
            st.on_read(r);
        }
        for _ in 0..requests {
            assert!(st.on_request(&http::Request::get("/").body(()).unwrap()));
        }
        st.on_write();
        st.parkable()
    }

    #[test]
    fn a_connection_is_parked_only_when_hyper_holds_nothing_unseen() {
        assert!(parkable(&[GET], 1));
        assert!(parkable(
            &[b"GET / HTTP/1.1\r\nHo", b"st: x\r\n", b"\r\n"],
            1
        ));
        assert!(parkable(
            &[
                b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n",
                b"ab",
                b"cd"
            ],
            1
        ));
        // Pipelined requests, once the service has seen all of them.
        assert!(parkable(&[&[GET, GET].concat()], 2));
        assert!(!parkable(&[&[GET, GET].concat()], 1));
        // The start of a next request, a body still to come, a response before the body's
        // end (an early answer to an upload).
        assert!(!parkable(&[GET, b"GET / HT"], 1));
        assert!(!parkable(
            &[b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nab"],
            1
        ));
        // A client that closes, HTTP/1.0, or a tunnel.
        let st = ConnState::default();
        st.on_read(GET);
        let close = http::Request::get("/").header("connection", "close");
        assert!(st.on_request(&close.body(()).unwrap()));
        st.on_write();
        assert!(!st.parkable());
        let st = ConnState::default();
        st.on_read(b"GET / HTTP/1.0\r\n\r\n");
        let old = http::Request::get("/").version(http::Version::HTTP_10);
        assert!(st.on_request(&old.body(()).unwrap()));
        st.on_write();
        assert!(!st.parkable());
        assert!(!parkable(
            &[b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"],
            1
        ));
        // Not before the response, and each time hyper takes the connection over, counted
        // afresh.
        let st = ConnState::default();
        st.on_read(GET);
        assert!(st.on_request(&http::Request::get("/").body(()).unwrap()));
        assert!(!st.parkable());
        st.on_write();
        assert!(st.parkable());
        st.begin();
        st.on_read(GET);
        st.on_write();
        assert!(!st.parkable());
    }

    #[test]
    fn only_the_request_with_both_framings_is_refused() {
        let both = &b"POST /a?b HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..];
        let first = http::Request::get("/").body(()).unwrap();
        let second = http::Request::post("/a?b").body(()).unwrap();
        // Behind another request, in the same read or later ones split anywhere (before or
        // after the service saw the first): the second request is refused, not the first.
        let stream = [GET, both].concat();
        for at in 1..stream.len() {
            for seen_between in [false, true] {
                let st = ConnState::default();
                st.on_read(&stream[..at]);
                if seen_between && at >= GET.len() {
                    assert!(st.on_request(&first));
                }
                st.on_read(&stream[at..]);
                if !(seen_between && at >= GET.len()) {
                    assert!(st.on_request(&first));
                }
                assert!(!st.on_request(&second), "split at {at}");
            }
        }
        // Its request line must match too.
        let st = ConnState::default();
        st.on_read(both);
        assert!(st.on_request(&http::Request::post("/other").body(()).unwrap()));
    }
}
