//! The server: worker threads, each with its own runtime, accept loop and backend pools;
//! connections spread evenly over them ([`Spread`]); each connection served by the fast path
//! first and handed to hyper when it must ([`conn`]).

pub mod conn;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::forwarder::Forwarder;
use super::front::{fast, hyper as forward};
use super::runtime::{Handshake, Runtime, set_worker_index};
use super::{ProxyConfig, tls};
use crate::routing::Shared;

/// One proxy listener and what its workers serve on it.
pub struct Listener {
    pub socket: TcpListener,
    /// TLS, for a TLS listener.
    pub tls: Option<Arc<tls::Tls>>,
    /// The [`worker_index`] of its first worker thread: each listener's workers need indexes
    /// of their own, or a plain and a TLS worker would share backend connection pools, and
    /// the connections one opened (driven by its runtime) would be used by the other, each
    /// request waking both threads.
    pub first: usize,
}

/// Serve the proxy on `config.workers` threads, each running its own current-thread runtime
/// and accepting from the same socket, until `stop` turns true; then each finishes its
/// in-flight requests (bounded by `shutdown_timeout`). Resolves when all workers are done.
/// `all_workers` counts the worker threads of every listener: how many connection pools a
/// backend may need.
pub async fn serve_workers(
    listener: Listener,
    shared: Arc<Shared>,
    runtime: Arc<Runtime>,
    config: ProxyConfig,
    stop: watch::Receiver<bool>,
    all_workers: usize,
) {
    let Listener {
        socket: listener,
        tls,
        first,
    } = listener;
    let std_listener = match listener.into_std() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot hand the proxy socket to the workers");
            return;
        }
    };
    let mut threads = Vec::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(config.max_connections.max(1)));
    let workers = config.workers.max(1);
    let all_workers = all_workers.max(first + workers);
    let (spread, mut inboxes) = Spread::new(workers);
    for i in 0..workers {
        let inbox = inboxes.remove(0);
        let spread = spread.clone();
        let listener = match std_listener.try_clone() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, worker = i, "cannot share the proxy socket with a worker");
                break;
            }
        };
        let (shared, runtime, config, stop, tls, slots) = (
            shared.clone(),
            runtime.clone(),
            config.clone(),
            stop.clone(),
            tls.clone(),
            slots.clone(),
        );
        let spawned = std::thread::Builder::new()
            // (Thread names show 15 bytes in `top -H` and /proc.)
            .name(format!(
                "{}-{i}",
                if tls.is_some() { "qs-tls" } else { "qs-proxy" }
            ))
            .spawn(move || {
                set_worker_index(first + i);
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a proxy worker runtime");
                rt.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(l) => {
                            let forwarder = Forwarder::new(shared, runtime, &config, all_workers);
                            serve(
                                l,
                                forwarder,
                                config,
                                stop,
                                tls,
                                slots,
                                Some((spread, i, inbox)),
                            )
                            .await
                        }
                        Err(e) => tracing::error!(error = %e, "proxy worker cannot use the socket"),
                    }
                });
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => tracing::error!(error = %e, "cannot start a proxy worker thread"),
        }
    }
    drop(std_listener);
    let _ = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await;
}

/// Spreads client connections evenly over the proxy workers. Workers accept from one shared
/// socket, and which one wins an accept is up to the kernel: a worker that holds more than one
/// connection above the least loaded hands a new one over to it (so 64 keepalive connections
/// end up 32 and 32, not 40 and 24 with one core saturated and the other idle).
#[derive(Clone)]
struct Spread {
    open: Arc<[std::sync::atomic::AtomicUsize]>,
    inboxes: Arc<[tokio::sync::mpsc::UnboundedSender<Handoff>]>,
}

/// A connection on its way to another worker, already counted as open there.
type Handoff = (
    std::net::TcpStream,
    SocketAddr,
    tokio::sync::OwnedSemaphorePermit,
    OpenOn,
);

impl Spread {
    fn new(workers: usize) -> (Spread, Vec<tokio::sync::mpsc::UnboundedReceiver<Handoff>>) {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..workers)
            .map(|_| tokio::sync::mpsc::unbounded_channel())
            .unzip();
        let open = (0..workers)
            .map(|_| std::sync::atomic::AtomicUsize::new(0))
            .collect();
        (
            Spread {
                open,
                inboxes: txs.into(),
            },
            rxs,
        )
    }

    /// The worker a connection accepted by worker `me` goes to, counted as open there at
    /// once: a burst of accepts must see the connections it has handed over, not the counts
    /// as they were before the other worker got round to taking them (which handed too many
    /// over: 16 h2 connections opened at once left the two workers' CPU at 256:88).
    fn claim(&self, me: usize) -> (usize, OpenOn) {
        let to = self.target(me);
        (to, OpenOn::on(self, to))
    }

    /// The worker a connection accepted by worker `me` should go to.
    fn target(&self, me: usize) -> usize {
        use std::sync::atomic::Ordering::Relaxed;
        let mine = self.open[me].load(Relaxed);
        let (least, n) = self
            .open
            .iter()
            .enumerate()
            .map(|(i, c)| (i, c.load(Relaxed)))
            .min_by_key(|&(_, n)| n)
            .unwrap_or((me, mine));
        if mine > n + 1 { least } else { me }
    }
}

/// Counts a connection as open on its worker while it lives.
struct OpenOn(Option<(Spread, usize)>);

impl OpenOn {
    fn on(spread: &Spread, worker: usize) -> OpenOn {
        spread.open[worker].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        OpenOn(Some((spread.clone(), worker)))
    }
}

impl Drop for OpenOn {
    fn drop(&mut self) {
        if let Some((b, i)) = &self.0 {
            b.open[*i].fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// What every connection of one worker shares.
struct Worker {
    forwarder: Arc<Forwarder>,
    http: Arc<Builders>,
    proto: HeaderValue,
    /// Each open connection holds a clone; `closed()` on the sender fires when the last ends.
    open: watch::Receiver<()>,
    stop: watch::Receiver<bool>,
    tls: Option<Arc<tls::Tls>>,
    handshake_timeout: Duration,
    spread: Option<(Spread, usize)>,
}

/// Serve the proxy on `listener` until `stop` turns true, then finish in-flight requests
/// (bounded by `shutdown_timeout`). `spread`: this worker's place among several, and its
/// inbox of connections handed over by the others.
async fn serve(
    listener: TcpListener,
    forwarder: Forwarder,
    config: ProxyConfig,
    mut stop: watch::Receiver<bool>,
    tls: Option<Arc<tls::Tls>>,
    slots: Arc<tokio::sync::Semaphore>,
    spread: Option<(Spread, usize, tokio::sync::mpsc::UnboundedReceiver<Handoff>)>,
) {
    let (open_tx, open_rx) = watch::channel(());
    // HTTP/1.1, and HTTP/2 (h2c with prior knowledge, or ALPN h2 over TLS), told apart by the
    // connection preface.
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(config.client_header_timeout)
        .keep_alive(true);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new());
    let (spread, mut inbox) = match spread {
        Some((b, i, rx)) => (Some((b, i)), Some(rx)),
        None => (None, None),
    };
    let worker = Arc::new(Worker {
        forwarder: Arc::new(forwarder),
        http: Arc::new(Builders { h1, h2 }),
        proto: HeaderValue::from_static(if tls.is_some() { "https" } else { "http" }),
        open: open_rx,
        stop: stop.clone(),
        tls,
        handshake_timeout: config.client_header_timeout,
        spread,
    });
    // Connections handed over by the other workers, until stopping (this task holds the
    // worker, whose `open` receiver must go for the shutdown to see the last connection end).
    if let Some(mut rx) = inbox.take() {
        let w = worker.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            loop {
                let (stream, peer, permit, counted) = tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    h = rx.recv() => match h {
                        Some(h) => h,
                        None => break,
                    },
                };
                match tokio::net::TcpStream::from_std(stream) {
                    Ok(s) => w.start(s, peer, permit, counted),
                    Err(e) => tracing::debug!(%peer, error = %e, "handed-over connection lost"),
                }
            }
        });
    }
    let mut errors = AcceptErrors::new("proxy");
    loop {
        // At the connection limit, stop accepting until one closes (the kernel's backlog
        // holds the rest), as nginx does at worker_connections.
        let permit = tokio::select! {
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    errors.succeeded();
                    a
                }
                Err(e) => {
                    drop(permit);
                    errors.failed(&e).await;
                    continue;
                }
            },
        };
        match &worker.spread {
            Some((b, me)) => match b.claim(*me) {
                (to, counted) if to != *me => {
                    worker.hand_over(b, (*me, to), (stream, peer, permit, counted))
                }
                (_, counted) => worker.start(stream, peer, permit, counted),
            },
            None => worker.start(stream, peer, permit, OpenOn(None)),
        }
    }
    drop(listener);
    drop(worker);
    // Said once for all workers by `run`.
    tracing::debug!("proxy worker stopped accepting; waiting for its in-flight requests");
    if tokio::time::timeout(config.shutdown_timeout, open_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!("shutdown timeout reached; closing the remaining client connections");
    }
}

impl Worker {
    /// Give a connection this worker (`me`) accepted to worker `to` (counted there already);
    /// if that worker has stopped, serve it here after all.
    fn hand_over(
        self: &Arc<Self>,
        b: &Spread,
        (me, to): (usize, usize),
        (stream, peer, permit, counted): (
            tokio::net::TcpStream,
            SocketAddr,
            tokio::sync::OwnedSemaphorePermit,
            OpenOn,
        ),
    ) {
        let std = match stream.into_std() {
            Ok(std) => std,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "cannot hand a connection over");
                return;
            }
        };
        if let Err(e) = b.inboxes[to].send((std, peer, permit, counted)) {
            let (std, peer, permit, _theirs) = e.0;
            if let Ok(s) = tokio::net::TcpStream::from_std(std) {
                self.start(s, peer, permit, OpenOn::on(b, me));
            }
        }
    }

    /// Serve one accepted client connection in a task of its own.
    fn start(
        self: &Arc<Self>,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        permit: tokio::sync::OwnedSemaphorePermit,
        counted: OpenOn,
    ) {
        let _ = stream.set_nodelay(true);
        let fwd = self.forwarder.clone();
        let client = super::plan::Client {
            ip: peer.ip().to_canonical(),
            ip_header: client_ip_value(peer),
            proto: self.proto.clone(),
        };
        let (fwd_h1, client_h1) = (fwd.clone(), client.clone());
        let service = service_fn(move |req| {
            let fwd = fwd.clone();
            let client = client.clone();
            // Boxed: a request's state (~4 KiB) is written once, not moved into each stream's
            // task and around the task's stages (BENCHMARKS.md, "Instructions per h2c request").
            Box::pin(
                async move { Ok::<_, std::convert::Infallible>(fwd.handle(req, &client).await) },
            )
        });
        let (stop, open, http, tls) = (
            self.stop.clone(),
            self.open.clone(),
            self.http.clone(),
            self.tls.clone(),
        );
        let handshake_timeout = self.handshake_timeout;
        // Two separate tasks: a plain connection's task must not be as large as a TLS one
        // (rustls state), which would cost every idle connection the difference.
        match tls {
            None => {
                // Sniff in a short task, then run the connection in a task of its own type,
                // so an idle HTTP/1.1 connection holds no HTTP/2 state.
                tokio::spawn(async move {
                    match sniff_h2(&stream, handshake_timeout).await {
                        Some(true) => {
                            let conn = http.h2.serve_connection(TokioIo::new(stream), service);
                            let counted = (counted, fwd_h1.runtime.connection(false, true));
                            tokio::spawn(async move {
                                let (_open, _permit, _counted) = (open, permit, counted);
                                drive(conn, stop, peer).await
                            });
                        }
                        Some(false) => {
                            drop(service);
                            let counted = (counted, fwd_h1.runtime.connection(false, false));
                            tokio::spawn(async move {
                                let (_open, _permit, _counted) = (open, permit, counted);
                                let timeout = handshake_timeout;
                                serve_h1(stream, &http, stop, peer, timeout, fwd_h1, client_h1)
                                    .await
                            });
                        }
                        None => drop((open, permit, counted)),
                    }
                });
            }
            Some(tls) => {
                tokio::spawn(async move {
                    let (_open, _permit, _counted) = (open, permit, counted);
                    let accepted =
                        tokio::time::timeout(handshake_timeout, tls.acceptor.accept(stream)).await;
                    let runtime = fwd_h1.runtime.clone();
                    match accepted {
                        Ok(Ok(s)) => {
                            runtime.handshake(Handshake::Ok);
                            let alpn = s.get_ref().1.alpn_protocol();
                            if alpn == Some(tls::ACME_TLS_ALPN) {
                                // A TLS-ALPN-01 validation ends with the handshake.
                                tracing::debug!(%peer, "TLS-ALPN-01 challenge handshake answered");
                            } else if alpn == Some(b"h2") {
                                let _conn = runtime.connection(true, true);
                                let conn = http.h2.serve_connection(TokioIo::new(s), service);
                                drive(conn, stop, peer).await
                            } else {
                                drop(service);
                                let _conn = runtime.connection(true, false);
                                let timeout = handshake_timeout;
                                serve_h1(s, &http, stop, peer, timeout, fwd_h1, client_h1).await
                            }
                        }
                        Ok(Err(e)) => {
                            runtime.handshake(Handshake::Failed);
                            tracing::debug!(%peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => {
                            runtime.handshake(Handshake::TimedOut);
                            tracing::debug!(%peer, "TLS handshake timed out")
                        }
                    }
                });
            }
        }
    }
}

/// Serve an HTTP/1.1 client connection, plain or TLS: the fast path first, hyper for what it
/// leaves (with a head the I/O layer saw carrying both `Content-Length` and
/// `Transfer-Encoding` refused), and back to the fast path once hyper has parked it.
async fn serve_h1<IO: fast::ClientIo + 'static>(
    stream: IO,
    http: &Builders,
    stop: watch::Receiver<bool>,
    peer: SocketAddr,
    keepalive: Duration,
    fwd: Arc<Forwarder>,
    client: super::plan::Client,
) {
    let make_service = |st: Arc<conn::ConnState>| {
        let (fwd, client) = (fwd.clone(), client.clone());
        service_fn(move |req| {
            let ok = st.on_request(&req);
            let fwd = fwd.clone();
            let client = client.clone();
            async move {
                Ok::<_, std::convert::Infallible>(if ok {
                    fwd.handle(req, &client).await
                } else {
                    forward::refuse_conflicting_framing()
                })
            }
        })
    };
    conn::drive_h1(
        stream,
        &http.h1,
        make_service,
        stop,
        peer,
        keepalive,
        &fwd,
        &client,
    )
    .await
}

/// The two server builders; a connection gets one or the other, so an HTTP/1.1 connection's
/// task carries no HTTP/2 state (and vice versa).
struct Builders {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

/// Whether a plain connection starts with the HTTP/2 preface (`PRI * HTTP/2.0`, h2c with prior
/// knowledge). `None` if the client sends nothing in time or goes away.
async fn sniff_h2(stream: &tokio::net::TcpStream, wait: Duration) -> Option<bool> {
    let mut buf = [0u8; 3];
    let peek = async {
        loop {
            let n = stream.peek(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            // Decide as soon as the bytes so far rule the preface in or out.
            if !b"PRI".starts_with(&buf[..n]) {
                return Some(false);
            }
            if n == 3 {
                return Some(true);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(wait, peek).await.ok().flatten()
}

/// A connection that can be asked to finish what it is doing and close.
trait Graceful: std::future::Future<Output = Result<(), hyper::Error>> {
    fn shutdown(self: std::pin::Pin<&mut Self>);
}

impl<I, S> Graceful for http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = forward::Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn shutdown(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown()
    }
}

impl<I, S> Graceful for http2::Connection<I, S, TokioExecutor>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = forward::Body>,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn shutdown(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown()
    }
}

/// Serve one client connection until it ends; on shutdown, finish the request in flight (if
/// any) and close.
async fn drive(conn: impl Graceful, mut stop: watch::Receiver<bool>, peer: SocketAddr) {
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "client connection ended with an error");
    }
}

fn client_ip_value(peer: SocketAddr) -> HeaderValue {
    HeaderValue::from_str(&peer.ip().to_canonical().to_string())
        .expect("an IP address is a valid header value")
}

/// An accept loop's failures (EMFILE, ENFILE, ENOBUFS...): the loop backs off, 50 ms doubling
/// to 1 s, and goes on serving the connections it has; the first failure is logged, and so is
/// the first accept after them, not every retry.
pub struct AcceptErrors {
    what: &'static str,
    wait: Duration,
    failed: u64,
}

impl AcceptErrors {
    const FIRST: Duration = Duration::from_millis(50);
    const MOST: Duration = Duration::from_secs(1);

    /// `what`: the listener, as the log names it.
    pub fn new(what: &'static str) -> AcceptErrors {
        AcceptErrors {
            what,
            wait: Self::FIRST,
            failed: 0,
        }
    }

    /// An accept failed with `e`: say so if it is the first, then wait.
    pub async fn failed(&mut self, e: &std::io::Error) {
        if self.failed == 0 {
            tracing::warn!(listener = self.what, error = %e, "cannot accept connections; serving the open ones and retrying with a back-off up to 1 s (raise the open-files limit, ulimit -n, if it is reached)");
        }
        self.failed += 1;
        tokio::time::sleep(self.wait).await;
        self.wait = (self.wait * 2).min(Self::MOST);
    }

    /// An accept succeeded: the back-off starts over.
    pub fn succeeded(&mut self) {
        if self.failed > 0 {
            tracing::info!(
                listener = self.what,
                failed = self.failed,
                "accepting connections again"
            );
            self.failed = 0;
            self.wait = Self::FIRST;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Spread;
    use std::sync::atomic::Ordering;

    #[test]
    fn connections_go_to_the_least_loaded_worker_once_one_is_ahead() {
        let (b, _rx) = Spread::new(3);
        let set = |v: [usize; 3]| {
            for (c, n) in b.open.iter().zip(v) {
                c.store(n, Ordering::Relaxed);
            }
        };
        set([0, 0, 0]);
        assert_eq!(b.target(0), 0);
        // One ahead is fine (accepts are uneven by one all the time).
        set([1, 0, 0]);
        assert_eq!(b.target(0), 0);
        set([2, 0, 1]);
        assert_eq!(b.target(0), 1);
        set([5, 4, 3]);
        assert_eq!(b.target(0), 2);
        assert_eq!(b.target(2), 2);
    }

    #[test]
    fn a_burst_of_accepts_on_one_worker_is_split_evenly_before_the_others_take_theirs() {
        let (b, _rx) = Spread::new(2);
        // Worker 0 accepts 16 connections in a row; worker 1 has not yet started any of those
        // handed to it. Each is counted where it goes at once.
        let claimed: Vec<_> = (0..16).map(|_| b.claim(0)).collect();
        let counts = || {
            b.open
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect::<Vec<_>>()
        };
        // (The worker that accepts may stay one connection ahead before it hands one over.)
        assert_eq!(counts(), [9, 7]);
        assert_eq!(claimed.iter().filter(|(to, _)| *to == 1).count(), 7);
        // A connection's count goes when it closes.
        drop(claimed);
        assert_eq!(counts(), [0, 0]);
    }
}
