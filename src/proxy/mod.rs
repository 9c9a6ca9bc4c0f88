//! The data plane: forwards each request to a backend chosen from the current routing table,
//! over keepalive connection pools. Laid out by role:
//! - [`plan`]: the one request plan both fronts follow (route, pick, rewrite, retry, record);
//! - `codec`: HTTP/1.1 as bytes, pure: heads, the body decoder, the request follower;
//! - `upstream`: per-worker backend pools and raw exchanges on them;
//! - `front`: the byte-level fast path, where plain HTTP/1.1 connections start, and hyper's
//!   side (TLS, HTTP/2, upgrades, what the fast path leaves it), which sends bodiless requests
//!   over the same raw backend connections;
//! - `server`: worker threads, accept loops, spreading connections, the fast path → hyper
//!   hand-over and back;
//! - `forwarder`: what both fronts share per worker (table, settings, pools, observer).

mod codec;
mod error;
mod forwarder;
mod front;
pub mod plan;
mod retry;
mod runtime;
mod server;
pub mod tls;
mod upstream;

pub use codec::headers;
pub use error::ProxyError;
pub use runtime::{ConnCount, Handshake, Runtime, worker_index};
pub use server::conn::{release_freed_memory, trim_freed_memory};
pub use server::{AcceptErrors, Listener, serve_workers};
pub use upstream::body::UpstreamBody;
pub use upstream::pool::UpstreamClient;
pub use upstream::pool::WorkerPool;

use std::sync::Arc;
use std::time::Duration;

/// Timeouts and pool settings of the data plane.
#[derive(Clone)]
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
    /// In-flight requests get this long to finish on shutdown, and upgraded connections this
    /// long after their backend stops being routed.
    pub shutdown_timeout: Duration,
    /// Proxy worker threads, each with its own single-threaded runtime, accept loop and
    /// backend pools (like nginx's worker processes).
    pub workers: usize,
    /// Request bodies over this many bytes get 413 (none: no limit).
    pub max_body_size: Option<u64>,
    /// Client connections open at once, over all workers; more wait in the listen backlog.
    pub max_connections: usize,
    /// Quiet time between requests after which a connection hyper serves gives its buffers
    /// back and returns to the fast path (checked once per this interval, so a connection
    /// parks 1–2 intervals after its last byte).
    pub park_after: Duration,
    /// Gets one [`plan::Record`] per request, from both fronts (none: nothing is recorded).
    pub observer: Option<Arc<dyn plan::Observe>>,
    /// Proxies whose `X-Forwarded-For` names the client (`--trusted-proxies`).
    pub trusted_proxies: Arc<[crate::types::Cidr]>,
    /// Where `https_redirect` sends clients (`--https-port`).
    pub https_port: u16,
    /// Automatic HTTPS: the HTTP-01 challenges to answer (none: off).
    pub acme: Option<Arc<tls::Obtained>>,
}

impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("connect_timeout", &self.connect_timeout)
            .field("response_header_timeout", &self.response_header_timeout)
            .field("client_header_timeout", &self.client_header_timeout)
            .field("pool_idle_timeout", &self.pool_idle_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("workers", &self.workers)
            .field("max_body_size", &self.max_body_size)
            .field("max_connections", &self.max_connections)
            .field("park_after", &self.park_after)
            .field("observer", &self.observer.is_some())
            .field("trusted_proxies", &self.trusted_proxies)
            .field("https_port", &self.https_port)
            .field("acme", &self.acme.is_some())
            .finish()
    }
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
            park_after: Duration::from_millis(250),
            observer: None,
            trusted_proxies: Arc::from([]),
            https_port: 443,
            acme: None,
        }
    }
}
