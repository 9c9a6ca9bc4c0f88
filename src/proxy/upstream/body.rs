//! The client's request body on its way to the backend: capped at the configured size, and
//! held back behind `Expect: 100-continue` until the backend asks for it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// The client's body, or an empty one for a retried bodiless request.
pub type UpstreamBody = Either<Capped, Empty<Bytes>>;

/// Holds a request body back until the backend asks for it (`Expect: 100-continue`).
///
/// hyper's server answers `100 Continue` to the client as soon as the request body is first
/// polled, and hyper's client polls it as soon as the request head is sent; so without this
/// the client would be told to send a body the backend may refuse. The gate opens when the
/// backend sends `100 Continue`, or after [`EXPECT_WAIT`] (as a client would, RFC 9110
/// §10.1.1). If the backend answers with a final status first, the body is never sent: the gate
/// is abandoned when that response is done, which ends the upstream connection.
#[derive(Default)]
pub struct Gate {
    /// 0 closed, 1 open, 2 abandoned.
    state: std::sync::atomic::AtomicU8,
    waker: std::sync::Mutex<Option<std::task::Waker>>,
}

/// How long to hold a body back while the backend says nothing.
pub const EXPECT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl Gate {
    pub fn open(&self) {
        self.set(1);
    }

    fn set(&self, to: u8) {
        if self
            .state
            .compare_exchange(0, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            && let Some(w) = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take()
        {
            w.wake();
        }
    }
}

/// Abandons the gate (if still closed) on drop.
pub struct GateGuard(pub Arc<Gate>);

impl Drop for GateGuard {
    fn drop(&mut self) {
        self.0.set(2);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the backend answered without asking for the request body")]
struct NotWanted;

/// The client's request body on its way upstream, cut off (with an error, so the backend sees an
/// incomplete request) once it exceeds the configured limit; `tripped` tells the proxy to answer
/// 413 rather than 502.
pub struct Capped {
    inner: Incoming,
    left: u64,
    /// Set when the limit was hit; `None` (no allocation) when there is no limit.
    pub tripped: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// `Expect: 100-continue`: the gate and the time to give up waiting for the backend.
    gate: Option<(Arc<Gate>, Pin<Box<tokio::time::Sleep>>)>,
}

#[derive(Debug, thiserror::Error)]
#[error("request body larger than the configured limit")]
pub struct TooLarge;

impl Capped {
    pub fn new(inner: Incoming, limit: u64) -> Self {
        Capped {
            inner,
            left: limit,
            tripped: (limit != u64::MAX).then(Arc::default),
            gate: None,
        }
    }

    /// Hold the body back behind `gate` (see [`Gate`]).
    pub fn gated(mut self, gate: Arc<Gate>) -> Self {
        self.gate = Some((gate, Box::pin(tokio::time::sleep(EXPECT_WAIT))));
        self
    }
}

impl Body for Capped {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some((gate, wait)) = &mut self.gate {
            let mut state = gate.state.load(Ordering::Acquire);
            if state == 0 {
                *gate.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
                if wait.as_mut().poll(cx).is_ready() {
                    gate.open();
                }
                state = gate.state.load(Ordering::Acquire);
            }
            match state {
                0 => return Poll::Pending,
                1 => self.gate = None,
                _ => return Poll::Ready(Some(Err(Box::new(NotWanted)))),
            }
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    let n = d.len() as u64;
                    if n > self.left {
                        if let Some(t) = &self.tripped {
                            t.store(true, Ordering::Relaxed);
                        }
                        return Poll::Ready(Some(Err(Box::new(TooLarge))));
                    }
                    self.left -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            other => other.map(|o| o.map(|r| r.map_err(|e| Box::new(e) as Self::Error))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
