//! Raw HTTP/1.1 exchanges with a backend: a whole request written on a pooled connection (or
//! a new one), and the first bytes of its answer read, sending again what a pooled connection
//! lost where that is safe. The fast path relays the answer from there; [`super::exchange`]
//! decodes it for hyper's side.

use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Timeouts;
use super::pool::connect_error;
use super::pool::{self, Lost};
use super::stall::StallWatch;
use crate::proxy::ProxyError;
use crate::routing::Upstream;

/// The most one read takes in.
const READ_SIZE: usize = 16 << 10;

thread_local! {
    /// Every read of the fast path lands here first, one buffer per worker thread; a
    /// connection keeps only the bytes it got (a waiting connection holds no read buffer).
    static SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0; READ_SIZE].into_boxed_slice());
}

/// Wait for bytes on `s` and append what arrived to `buf`: 0 at the end of the stream.
pub async fn read_append<R: AsyncRead + Unpin>(
    s: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| {
        SCRATCH.with_borrow_mut(|scratch| {
            let mut rb = tokio::io::ReadBuf::new(scratch);
            std::task::ready!(std::pin::Pin::new(&mut *s).poll_read(cx, &mut rb))?;
            buf.extend_from_slice(rb.filled());
            std::task::Poll::Ready(Ok(rb.filled().len()))
        })
    })
    .await
}

/// Write `out` (a whole request) to `upstream` on a pooled raw connection, or a new one, and
/// wait until `deadline` for the first bytes of the answer: the connection and those bytes. A
/// request a pooled connection lost goes again as [`pool::Attempts`] says.
pub async fn first_answer(
    timeouts: &Timeouts,
    upstream: &Upstream,
    pool: &pool::WorkerPool,
    out: &[u8],
    idempotent: bool,
    (deadline, watch): (tokio::time::Instant, Option<&StallWatch<'_>>),
) -> Result<(TcpStream, Vec<u8>), ProxyError> {
    let failed = || ProxyError::Upstream {
        no: upstream.no.clone(),
    };
    let mut attempts = pool::Attempts::default();
    loop {
        let (mut conn, pooled) = attempts
            .checkout(
                || pool.take_raw(timeouts.pool_idle),
                // Boxed: a new connection is rare, and its state would size every exchange's.
                || Box::pin(pool::connect_raw(upstream.addr, timeouts.connect)),
            )
            .await
            .map_err(|e| connect_error(e, upstream))?;
        if conn.write_all(out).await.is_err() {
            // A pooled connection the backend had closed: the request did not go out.
            if attempts.again(pooled, Lost::NotSent, idempotent) {
                continue;
            }
            return Err(failed());
        }
        let mut up = Vec::new();
        // (Looked at before the deadline when the request could go elsewhere: a stalled
        // backend is given up on.)
        let mut until = watch.map_or(deadline, |w| w.first_look().min(deadline));
        let read = loop {
            match tokio::time::timeout_at(until, read_append(&mut conn, &mut up)).await {
                Ok(r) => break r,
                Err(_) if until >= deadline => {
                    return Err(ProxyError::ResponseTimeout {
                        no: upstream.no.clone(),
                        timeout: timeouts.response_header,
                    });
                }
                Err(_) => {
                    let w = watch.expect("looked at only with a watch");
                    until = w.look(upstream, (until, deadline))?.min(deadline);
                }
            }
        };
        match read {
            Ok(n) if n > 0 => return Ok((conn, up)),
            // Closed before answering (a backend closing a connection it has just answered
            // on, as hyper does when it did not read a request body in time, or the idle-close
            // race). The whole request is in `out`, so an idempotent one may go again.
            _ if attempts.again(pooled, Lost::Unanswered, idempotent) => {}
            _ => return Err(failed()),
        }
    }
}
