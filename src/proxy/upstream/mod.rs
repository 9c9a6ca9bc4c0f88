//! The backend side: the client's body on its way there ([`body`]), per-worker keepalive pools ([`pool`]), raw HTTP/1.1 exchanges on them
//! ([`raw`]), and those exchanges decoded for hyper's side ([`exchange`]); a request waiting on
//! a backend that answers nothing ([`stall`]).

pub mod body;
pub mod exchange;
pub mod pool;
pub mod raw;
pub mod stall;

use std::time::Duration;

/// What the backend side needs of the data plane's settings.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// TCP connect to a backend.
    pub connect: Duration,
    /// Idle pooled connections are closed after this.
    pub pool_idle: Duration,
    /// From sending the request to the response head.
    pub response_header: Duration,
}
