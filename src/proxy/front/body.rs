//! The response body, counted as in flight at its backend until it ends or is dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::health::BackendStats;
use crate::proxy::plan::{Front, Observe, Outcome, Plan};
use crate::proxy::upstream::exchange::RawBody;
use crate::proxy::upstream::pool::Checkin;
use crate::routing::Upstream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A backend's response body: from hyper's client, or read off a raw connection by the fast
/// path's exchange.
pub enum Upstreamed {
    Hyper(Incoming),
    Raw(RawBody),
    /// Either, encoded by the service's `compress`.
    Encoded(Box<super::compress::Encoded>),
}

impl Body for Upstreamed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Upstreamed::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Upstreamed::Raw(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Upstreamed::Encoded(b) => Pin::new(&mut **b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Upstreamed::Hyper(b) => b.is_end_stream(),
            Upstreamed::Raw(b) => b.is_end_stream(),
            Upstreamed::Encoded(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Upstreamed::Hyper(b) => b.size_hint(),
            Upstreamed::Raw(b) => b.size_hint(),
            Upstreamed::Encoded(b) => b.size_hint(),
        }
    }
}

/// Holds one in-flight slot of a backend; releases it on drop.
pub struct InFlight(Arc<BackendStats>);

impl InFlight {
    pub fn start(stats: &Arc<BackendStats>) -> Self {
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        stats.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(stats.clone())
    }

    pub fn stats(&self) -> &Arc<BackendStats> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request's [`Record`](crate::proxy::plan::Record), handed to the observer when its response body
/// is done with.
pub struct Pending {
    pub observer: Arc<dyn Observe>,
    pub plan: Plan,
    pub upstream: Arc<Upstream>,
    pub status: u16,
}

pub struct Tracked {
    inner: Upstreamed,
    /// Boxed: only while an observer is installed.
    pending: Option<Box<Pending>>,
    /// Body bytes relayed so far.
    sent: u64,
    _slot: InFlight,
    /// The request body's `Expect: 100-continue` gate, if the backend answered without asking
    /// for the body: abandoned once this response is done with.
    _gate: Option<GateGuard>,
    /// The pooled connection this body arrives on: back to its pool if the body was read to
    /// the end, closed if not.
    checkin: Option<Checkin>,
    /// The body said it was over.
    ended: bool,
    /// The backend's body failed before its end.
    cut: bool,
    /// That failure, held back for one poll so that hyper writes out what was relayed before
    /// it: hyper's server ends the connection on a body error without flushing its buffer, and
    /// the client would get nothing of a response whose head and first bytes had arrived.
    held: Option<BoxError>,
}

impl Tracked {
    pub fn new(
        inner: Upstreamed,
        slot: InFlight,
        gate: Option<Arc<Gate>>,
        checkin: Option<Checkin>,
        pending: Option<Box<Pending>>,
    ) -> Self {
        Tracked {
            inner,
            pending,
            sent: 0,
            _slot: slot,
            _gate: gate.map(GateGuard),
            checkin,
            ended: false,
            cut: false,
            held: None,
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(c) = self.checkin.take()
            && (self.ended || self.inner.is_end_stream())
        {
            c.complete();
        }
        if let Some(p) = self.pending.take() {
            // Dropped before its end without a failure of the backend's: the client went away.
            let outcome = match (self.cut, self.ended || self.inner.is_end_stream()) {
                (true, _) => Outcome::BackendCut,
                (false, true) => Outcome::Complete,
                (false, false) => Outcome::ClientGone,
            };
            let record = p.plan.record(
                Front::Hyper,
                (p.status, outcome),
                Some(&p.upstream),
                self.sent,
                None,
            );
            p.observer.request(&record);
        }
    }
}

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
struct GateGuard(Arc<Gate>);

impl Drop for GateGuard {
    fn drop(&mut self) {
        self.0.set(2);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the backend answered without asking for the request body")]
struct NotWanted;

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(e) = self.held.take() {
            return Poll::Ready(Some(Err(e)));
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match polled {
            Poll::Ready(None) => self.ended = true,
            Poll::Ready(Some(Ok(ref frame))) => {
                self.sent += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            Poll::Ready(Some(Err(e))) => {
                self.cut = true;
                // Pending with a wake-up: hyper flushes, then polls again for the error.
                self.held = Some(e);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

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
