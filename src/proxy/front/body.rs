//! The response body, counted as in flight at its backend until it ends or is dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::compress::Upstreamed;
use crate::health::BackendStats;
use crate::proxy::plan::{Front, Observe, Outcome, Plan};
use crate::proxy::upstream::body::{Gate, GateGuard};
use crate::proxy::upstream::pool::Checkin;
use crate::routing::Upstream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
