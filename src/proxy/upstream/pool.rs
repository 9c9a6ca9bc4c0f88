//! Keepalive connections to one backend, one small pool per proxy worker thread.
//!
//! HTTP/1.1 backends get two stacks here: raw TCP connections for the fast path (which also
//! carries hyper's bodiless requests, see `fast::exchange`), and hyper's low-level client
//! connections for requests with a body, upgrades and the like. A checkout is a pop from a
//! short per-worker stack (an uncontended mutex, no hashing of a pool key, no task spawned
//! per request), and a connection goes back when its response body has been read to the end
//! (for hyper's, [`Checkin`], dropped by the response body). A connection that is not ready at
//! checkout (closed by the backend, or still busy with an unfinished request body) is closed
//! and the next one tried. h2c backends share one multiplexed connection through hyper-util's
//! client, which this pool also holds.
//!
//! Idle connections are closed after the pool's idle timeout (by a sweep on each worker
//! thread), and at most [`MAX_IDLE`] are kept per backend and worker (nginx's `keepalive N`):
//! more are opened when a burst needs them and closed when they come back.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::UpstreamBody;

/// An h2c backend's client.
pub type UpstreamClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    UpstreamBody,
>;

/// Idle keepalive connections kept per backend and proxy worker. Each holds hyper's buffers
/// (~16 KiB), so a burst of 10,000 concurrent requests must not leave 10,000 behind.
pub const MAX_IDLE: usize = 64;

pub type H1Sender = http1::SendRequest<UpstreamBody>;

/// A pooled connection idle this long may be closed by the backend just as a request goes out
/// on it (the idle-close race): one is checked before use on the fast path. (An idempotent
/// request lost on any pooled connection, however long idle, is sent again on a new one.)
pub const RACE_IDLE: Duration = Duration::from_millis(100);

/// One backend's connections on one proxy worker.
#[derive(Default)]
pub struct WorkerPool {
    /// Idle HTTP/1.1 connections of hyper's client.
    idle: IdleStack<H1Sender>,
    /// Idle raw HTTP/1.1 connections of the fast path (and of its exchange for hyper).
    raw: IdleStack<TcpStream>,
    /// The h2c client, for a backend that speaks HTTP/2.
    pub h2: OnceLock<UpstreamClient>,
}

/// Idle connections, the most recently used last, each with when it went idle.
struct IdleStack<C>(Mutex<Vec<(C, Instant)>>);

impl<C> Default for IdleStack<C> {
    fn default() -> Self {
        IdleStack(Mutex::new(Vec::new()))
    }
}

impl<C> IdleStack<C> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(C, Instant)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used connection that `usable` (given how long it was idle) accepts,
    /// and how long it was idle; those refused on the way are dropped (which closes them), and
    /// once one is idle for `max_idle`, so are all below it (older still).
    fn take(
        &self,
        max_idle: Duration,
        usable: impl Fn(&C, Duration) -> bool,
    ) -> Option<(C, Duration)> {
        let mut idle = self.lock();
        while let Some((c, since)) = idle.pop() {
            let idle_for = since.elapsed();
            if idle_for >= max_idle {
                idle.clear();
                return None;
            }
            if usable(&c, idle_for) {
                return Some((c, idle_for));
            }
        }
        None
    }

    /// Keep a connection whose exchange is complete. Over [`MAX_IDLE`], the oldest idle one
    /// is closed.
    fn put(&self, c: C) {
        let mut idle = self.lock();
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push((c, Instant::now()));
    }

    /// Close the connections idle for `max_idle` or more, and those `keep` refuses.
    fn sweep(&self, max_idle: Duration, keep: impl Fn(&C) -> bool) {
        self.lock()
            .retain(|(c, since)| since.elapsed() < max_idle && keep(c));
    }
}

impl WorkerPool {
    /// The most recently used idle connection that can take a request now. Closed, busy or
    /// stale ones met on the way are dropped (which closes them).
    pub fn take(&self, max_idle: Duration) -> Option<H1Sender> {
        self.idle
            .take(max_idle, |tx, _| tx.is_ready())
            .map(|(tx, _)| tx)
    }

    /// Return a connection whose exchange is complete.
    pub fn put(&self, tx: H1Sender) {
        if !tx.is_closed() {
            self.idle.put(tx);
        }
    }

    /// Close the connections idle for `max_idle` or more, and closed ones.
    pub fn sweep(&self, max_idle: Duration) {
        self.idle.sweep(max_idle, |tx| !tx.is_closed());
        self.raw.sweep(max_idle, |_| true);
    }

    /// The most recently used raw connection. One idle for `RACE_IDLE` or more is checked
    /// first (a non-blocking read): one the backend has closed, or that has unexpected bytes
    /// waiting, is dropped and the next tried.
    pub fn take_raw(&self, max_idle: Duration) -> Option<TcpStream> {
        self.raw
            .take(max_idle, |stream, idle_for| {
                idle_for < RACE_IDLE || open_and_quiet(stream)
            })
            .map(|(stream, _)| stream)
    }

    /// Return a raw connection whose exchange is complete.
    pub fn put_raw(&self, stream: TcpStream) {
        self.raw.put(stream);
    }
}

/// Why a new backend connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out")]
    TimedOut,
    #[error("connect failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP/1.1 handshake failed: {0}")]
    Handshake(#[from] hyper::Error),
}

/// An idle connection with nothing to read and no end of stream: still open.
fn open_and_quiet(stream: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(stream.try_read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Open a new TCP connection to `addr`, with TCP_NODELAY set.
pub async fn connect_raw(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::TimedOut)??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Open a new HTTP/1.1 connection to `addr` (TCP_NODELAY set), driven by a task on this
/// thread's runtime until the backend or the last sender closes it. Upgrades (101) hand the
/// socket over to [`hyper::upgrade::on`].
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<H1Sender, ConnectError> {
    let stream = connect_raw(addr, timeout).await?;
    let (tx, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(backend = %addr, error = %e, "backend connection ended with an error");
        }
    });
    Ok(tx)
}

/// How an attempt to send a request on a backend connection ended without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    /// The request did not go out: the connection was closing.
    NotSent,
    /// It went out and the connection closed before any answer came back.
    Unanswered,
}

/// One request's connections to one backend, on the fast path's raw connections and hyper's
/// alike: a pooled connection while the pool has one, else a new one. A request a pooled
/// connection did not take goes out on the next; one lost unanswered on a pooled connection
/// (the idle-close race, see [`RACE_IDLE`], or a backend closing a connection it has just
/// answered on) goes out again, once, on a new connection if it may be sent twice (a bodyless
/// idempotent request, as nginx does). Nothing lost on a new connection is sent again here
/// (retries on another backend are the forwarder's).
#[derive(Debug, Default)]
pub struct Attempts {
    fresh: bool,
}

impl Attempts {
    /// The connection for the next attempt, and whether it came from the pool.
    pub async fn checkout<C, F>(
        &self,
        pooled: impl FnOnce() -> Option<C>,
        connect: impl FnOnce() -> F,
    ) -> Result<(C, bool), ConnectError>
    where
        F: std::future::Future<Output = Result<C, ConnectError>>,
    {
        match if self.fresh { None } else { pooled() } {
            Some(c) => Ok((c, true)),
            None => Ok((connect().await?, false)),
        }
    }

    /// After an attempt on a connection (`pooled` or new) lost the request: whether to send it
    /// again; the next [`checkout`](Self::checkout) gives the connection to use.
    pub fn again(&mut self, pooled: bool, lost: Lost, replayable: bool) -> bool {
        match lost {
            _ if !pooled => false,
            Lost::NotSent => true,
            Lost::Unanswered if replayable => {
                self.fresh = true;
                true
            }
            Lost::Unanswered => false,
        }
    }
}

/// A connection on loan to one response: back to its pool once the response body has been
/// read to the end; closed if the response is abandoned half-read.
pub struct Checkin {
    pub pool: Arc<WorkerPool>,
    pub tx: H1Sender,
}

impl Checkin {
    pub fn complete(self) {
        self.pool.put(self.tx);
    }
}

/// One worker's pools, for the idle sweep: a task on the worker's runtime (started with the
/// first pool) closes their idle connections every quarter of `max_idle`.
#[derive(Default)]
pub struct Sweep(OnceLock<Arc<Mutex<Vec<Weak<WorkerPool>>>>>);

impl Sweep {
    /// A new pool, swept with the others.
    pub fn new_pool(&self, max_idle: Duration) -> Arc<WorkerPool> {
        let pool = Arc::new(WorkerPool::default());
        let list = self.0.get_or_init(|| {
            let list: Arc<Mutex<Vec<Weak<WorkerPool>>>> = Arc::default();
            let swept = Arc::downgrade(&list);
            let every = (max_idle / 4).max(Duration::from_millis(100));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    // The worker's forwarder is gone: so is every pool.
                    let Some(swept) = swept.upgrade() else { return };
                    let pools: Vec<Arc<WorkerPool>> = {
                        let mut l = swept.lock().unwrap_or_else(|e| e.into_inner());
                        l.retain(|w| w.strong_count() > 0);
                        l.iter().filter_map(Weak::upgrade).collect()
                    };
                    for p in pools {
                        p.sweep(max_idle);
                    }
                }
            });
            list
        });
        list.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(&pool));
        pool
    }
}

/// A failed connect as the error a request gets.
pub fn connect_error(
    e: ConnectError,
    upstream: &crate::routing::Upstream,
) -> crate::proxy::ProxyError {
    let no = upstream.no.clone();
    tracing::debug!(error = %e, addr = %upstream.addr, "connect failed");
    match e {
        ConnectError::TimedOut => crate::proxy::ProxyError::ConnectTimeout { no },
        ConnectError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            crate::proxy::ProxyError::ConnectTimeout { no }
        }
        _ => crate::proxy::ProxyError::Connect { no },
    }
}

#[cfg(test)]
mod tests {
    use super::{Attempts, ConnectError, Lost};

    /// Checkout from a "pool" of numbered connections; new ones are numbered from 100.
    async fn next(a: &Attempts, pool: &mut Vec<u32>, opened: &mut u32) -> (u32, bool) {
        a.checkout(
            || pool.pop(),
            || {
                *opened += 1;
                let n = 99 + *opened;
                async move { Ok::<_, ConnectError>(n) }
            },
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_request_lost_on_a_pooled_connection_goes_again_and_only_once_on_a_new_one() {
        let (mut pool, mut opened) = (vec![1, 2], 0);
        let mut a = Attempts::default();
        // Not taken by a pooled connection (it was closing): the next pooled one.
        assert_eq!(next(&a, &mut pool, &mut opened).await, (2, true));
        assert!(a.again(true, Lost::NotSent, false));
        assert_eq!(next(&a, &mut pool, &mut opened).await, (1, true));
        // Unanswered on a pooled connection, and may be sent twice: a new connection, even
        // though the pool has another.
        pool.push(3);
        assert!(a.again(true, Lost::Unanswered, true));
        assert_eq!(next(&a, &mut pool, &mut opened).await, (100, false));
        // Lost again, on that new connection: not sent a third time.
        assert!(!a.again(false, Lost::Unanswered, true));
        assert!(!a.again(false, Lost::NotSent, true));
        assert_eq!(pool, [3]);
    }

    #[test]
    fn a_request_that_may_not_be_sent_twice_is_not_sent_again_once_it_went_out() {
        let mut a = Attempts::default();
        assert!(!a.again(true, Lost::Unanswered, false));
        // One that never went out may still go on the next pooled connection.
        assert!(a.again(true, Lost::NotSent, false));
    }
}
