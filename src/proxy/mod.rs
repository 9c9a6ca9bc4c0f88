//! The data plane: a plain hyper server that forwards each request to a backend chosen from the
//! current routing table, over a keepalive connection pool.

mod body;
mod error;
mod forward;
pub mod headers;
mod retry;
pub mod tls;

pub use error::ProxyError;
pub use forward::{UpstreamBody, UpstreamClient};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::registry::Shared;

/// Timeouts and pool settings of the data plane.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// TCP connect to a backend.
    pub connect_timeout: Duration,
    /// From sending the request to receiving the backend's response head.
    pub response_header_timeout: Duration,
    /// A client must send a request's headers within this (slowloris protection).
    pub client_header_timeout: Duration,
    /// Idle pooled backend connections are closed after this; keep it below the backends'
    /// own keepalive timeout.
    pub pool_idle_timeout: Duration,
    /// In-flight requests get this long to finish on shutdown.
    pub shutdown_timeout: Duration,
    /// Proxy worker threads, each with its own single-threaded runtime, accept loop and
    /// backend pools (like nginx's worker processes).
    pub workers: usize,
    /// Request bodies over this many bytes get 413 (none: no limit).
    pub max_body_size: Option<u64>,
    /// Client connections open at once, over all workers; more wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            connect_timeout: Duration::from_secs(5),
            response_header_timeout: Duration::from_secs(60),
            client_header_timeout: Duration::from_secs(30),
            pool_idle_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_body_size: None,
            max_connections: 50_000,
        }
    }
}

thread_local! {
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The proxy worker this thread is (0 outside the workers).
pub fn worker_index() -> usize {
    WORKER.with(|w| w.get())
}

/// Serve the proxy on `config.workers` threads, each running its own current-thread runtime
/// and accepting from the same socket, until `stop` turns true; then each finishes its
/// in-flight requests (bounded by `shutdown_timeout`). Resolves when all workers are done.
pub async fn serve_workers(
    listener: TcpListener,
    shared: Arc<Shared>,
    config: ProxyConfig,
    stop: watch::Receiver<bool>,
    tls: Option<Arc<tls::Tls>>,
) {
    let std_listener = match listener.into_std() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot hand the proxy socket to the workers");
            return;
        }
    };
    let mut threads = Vec::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(config.max_connections.max(1)));
    for i in 0..config.workers.max(1) {
        let listener = match std_listener.try_clone() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, worker = i, "cannot share the proxy socket with a worker");
                break;
            }
        };
        let (shared, config, stop, tls, slots) = (
            shared.clone(),
            config.clone(),
            stop.clone(),
            tls.clone(),
            slots.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("quayside-proxy-{i}"))
            .spawn(move || {
                WORKER.with(|w| w.set(i));
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a proxy worker runtime");
                rt.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(l) => serve(l, shared, config, stop, tls, slots).await,
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

/// Serve the proxy on `listener` until `stop` turns true, then finish in-flight requests
/// (bounded by `shutdown_timeout`).
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    config: ProxyConfig,
    mut stop: watch::Receiver<bool>,
    tls: Option<Arc<tls::Tls>>,
    slots: Arc<tokio::sync::Semaphore>,
) {
    let forwarder = Arc::new(forward::Forwarder::new(shared, &config));
    // Open connections; each holds a sender clone, so `closed()` fires when the last ends.
    let (open_tx, open_rx) = watch::channel(());
    // HTTP/1.1, and HTTP/2 (h2c with prior knowledge, or ALPN h2 over TLS), told apart by the
    // connection preface.
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.client_header_timeout)
        .keep_alive(true);
    http.http2().timer(TokioTimer::new());
    let http = Arc::new(http);
    let proto = HeaderValue::from_static(if tls.is_some() { "https" } else { "http" });
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
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "proxy accept failed; retrying in 50 ms (raise the open-files limit if this repeats)");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let fwd = forwarder.clone();
        let client = forward::Client {
            ip: peer.ip().to_canonical(),
            ip_header: client_ip_value(peer),
            proto: proto.clone(),
        };
        let service = service_fn(move |req| {
            let fwd = fwd.clone();
            let client = client.clone();
            async move { Ok::<_, std::convert::Infallible>(fwd.handle(req, &client).await) }
        });
        let (stop, open, http, tls) = (stop.clone(), open_rx.clone(), http.clone(), tls.clone());
        let handshake_timeout = config.client_header_timeout;
        tokio::spawn(async move {
            let _open = open;
            let _permit = permit;
            match tls {
                None => drive(&http, TokioIo::new(stream), service, stop, peer).await,
                Some(tls) => {
                    let accepted =
                        tokio::time::timeout(handshake_timeout, tls.acceptor.accept(stream)).await;
                    match accepted {
                        Ok(Ok(s)) => drive(&http, TokioIo::new(s), service, stop, peer).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    drop(open_rx);
    tracing::info!(
        timeout = ?config.shutdown_timeout,
        "proxy stopped accepting; waiting for in-flight requests"
    );
    if tokio::time::timeout(config.shutdown_timeout, open_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!("shutdown timeout reached; closing the remaining client connections");
    }
}

/// Serve one client connection until it ends; on shutdown, finish the request in flight (if
/// any) and close.
async fn drive<I, S>(
    http: &auto::Builder<TokioExecutor>,
    io: I,
    service: S,
    mut stop: watch::Receiver<bool>,
    peer: SocketAddr,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<forward::Body>,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let conn = http.serve_connection_with_upgrades(io, service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
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
