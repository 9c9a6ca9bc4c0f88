//! The response body, counted as in flight at its backend until it ends or is dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::health::BackendStats;

/// Holds one in-flight slot of a backend; releases it on drop.
pub struct InFlight(Arc<BackendStats>);

impl InFlight {
    pub fn start(stats: &Arc<BackendStats>) -> Self {
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        stats.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(stats.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct Tracked {
    inner: Incoming,
    _slot: InFlight,
}

impl Tracked {
    pub fn new(inner: Incoming, slot: InFlight) -> Self {
        Tracked { inner, _slot: slot }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
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
        }
    }
}

impl Body for Capped {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
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
