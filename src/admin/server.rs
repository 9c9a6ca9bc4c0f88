//! The admin API's connections: what a client that opens many, sends nothing or sends half a
//! head can hold. Each connection gets [`Limits::head`] to show its first bytes and send a
//! request head, and [`Limits::idle`] of quiet between requests; at most
//! [`Limits::connections`] are open at once and at most [`Limits::event_streams`] of them
//! follow `/api/v1/events`. One over a cap gets a 503 and is closed; each refusal is counted
//! for `/metrics`. An accept that fails (out of file descriptors) is retried with a back-off,
//! said once, while the open connections are served on.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};

use crate::proxy::AcceptErrors;

/// How much of quayside the admin listener's clients can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// From accepting a connection (or the end of its last request) to a whole request head.
    pub head: Duration,
    /// Quiet time after which an open connection is closed.
    pub idle: Duration,
    /// Connections open at once.
    pub connections: usize,
    /// `/api/v1/events` streams open at once.
    pub event_streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            head: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            connections: 256,
            event_streams: 32,
        }
    }
}

impl Limits {
    /// The defaults, with at most a quarter of the open-files limit `fds` for connections:
    /// the admin API never takes the descriptors the proxy needs.
    pub fn for_fd_limit(fds: u64) -> Limits {
        let d = Limits::default();
        let quarter = usize::try_from(fds / 4).unwrap_or(usize::MAX).max(8);
        Limits {
            connections: d.connections.min(quarter),
            event_streams: d.event_streams.min(quarter / 2),
            ..d
        }
    }
}

/// The admin listener's load, for `/metrics`.
#[derive(Debug)]
pub struct Load {
    pub limits: Limits,
    connections: Arc<Semaphore>,
    streams: Arc<Semaphore>,
    refused_connections: AtomicU64,
    refused_streams: AtomicU64,
}

impl Load {
    pub fn new(limits: Limits) -> Arc<Load> {
        Arc::new(Load {
            limits,
            connections: Arc::new(Semaphore::new(limits.connections)),
            streams: Arc::new(Semaphore::new(limits.event_streams)),
            refused_connections: AtomicU64::new(0),
            refused_streams: AtomicU64::new(0),
        })
    }

    /// A place for one more event stream, held while it is open (`None`: at the cap; counted).
    pub fn event_stream(&self) -> Option<OwnedSemaphorePermit> {
        let p = self.streams.clone().try_acquire_owned().ok();
        if p.is_none() {
            self.refused_streams.fetch_add(1, Relaxed);
        }
        p
    }

    /// What `/metrics` shows.
    pub fn view(&self) -> crate::metrics::AdminLoad {
        let l = &self.limits;
        crate::metrics::AdminLoad {
            connections: (l.connections - self.connections.available_permits()) as u64,
            event_streams: (l.event_streams - self.streams.available_permits()) as u64,
            refused_connections: self.refused_connections.load(Relaxed),
            refused_event_streams: self.refused_streams.load(Relaxed),
        }
    }
}

/// Serve `app` on `listener` until `stop` turns true (over TLS if `tls` is given), under the
/// load's limits.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<crate::proxy::tls::Tls>>,
    load: Arc<Load>,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut errors = AcceptErrors::new("admin API");
    let refusing = Arc::new(Semaphore::new(REFUSING));
    loop {
        let (tcp, peer) = tokio::select! {
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    errors.succeeded();
                    // An IPv4 client of a dual-stack listener (`:PORT`) by its IPv4 address,
                    // as every rule and log that reads it expects.
                    (tcp, std::net::SocketAddr::new(peer.ip().to_canonical(), peer.port()))
                }
                Err(e) => {
                    errors.failed(&e).await;
                    continue;
                }
            },
        };
        let Ok(permit) = load.connections.clone().try_acquire_owned() else {
            load.refused_connections.fetch_add(1, Relaxed);
            tracing::debug!(%peer, "admin API connection refused: at its cap");
            // A few are told why; past that, closed at once (a flood holds no descriptor).
            if let (None, Ok(told)) = (&tls, refusing.clone().try_acquire_owned()) {
                tokio::spawn(refuse(tcp, load.limits.connections, told));
            }
            continue;
        };
        let app = app
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        let (tls, watcher, limits) = (tls.clone(), graceful.watcher(), load.limits);
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            let io = Quiet::new(tcp, limits);
            let service = hyper_util::service::TowerToHyperService::new(app);
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.head);
            builder.http2().timer(TokioTimer::new());
            let result = match tls {
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                    watcher.watch(conn.into_owned()).await
                }
                Some(tls) => {
                    let stream =
                        match tokio::time::timeout(limits.head, tls.acceptor.accept(io)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "admin TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "admin TLS handshake timed out");
                                return;
                            }
                        };
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "admin connection ended");
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}

/// Connections over the cap told why at once; others over it are closed without a word.
const REFUSING: usize = 64;

/// A 503 for a connection over the cap (plain HTTP only: over TLS it is just closed), after
/// its request head (a client must have sent its request before it reads an answer), read
/// for half a second at most.
async fn refuse(mut tcp: TcpStream, cap: usize, _told: OwnedSemaphorePermit) {
    use tokio::io::AsyncReadExt as _;
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        let mut head = Vec::with_capacity(1024);
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
            if tcp.read_buf(&mut head).await.unwrap_or(0) == 0 {
                break;
            }
        }
    })
    .await;
    let body = format!(
        "503 Service Unavailable: the admin API has {cap} connections open, its most; close idle ones and retry\n"
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        tcp.write_all(answer.as_bytes()).await?;
        tcp.shutdown().await
    })
    .await;
}

/// A connection that is closed once it has been quiet too long: [`Limits::head`] until its
/// first bytes arrive, [`Limits::idle`] after each read or write. (A quiet connection is
/// polled for reading, so its timer runs; one whose handler is still working is not.)
struct Quiet<S> {
    io: S,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> Quiet<S> {
    fn new(io: S, limits: Limits) -> Quiet<S> {
        Quiet {
            io,
            idle: limits.idle,
            deadline: Box::pin(tokio::time::sleep(limits.head)),
        }
    }

    fn active(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.idle);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Quiet<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                self.active();
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::ErrorKind::TimedOut.into())),
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Quiet<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.active();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_leaves_the_proxy_most_descriptors() {
        assert_eq!(Limits::for_fd_limit(1 << 20), Limits::default());
        let small = Limits::for_fd_limit(1024);
        assert_eq!((small.connections, small.event_streams), (256, 32));
        let tiny = Limits::for_fd_limit(256);
        assert_eq!((tiny.connections, tiny.event_streams), (64, 32));
        assert_eq!(Limits::for_fd_limit(0).connections, 8);
    }
}
