//! A request waiting on a backend that answers nothing: when to give up on the backend and
//! send the request elsewhere (the exchanges look at it while they wait).

use std::time::Duration;

use crate::health::now_ms;
use crate::proxy::ProxyError;
use crate::routing::{ServiceRoute, Upstream};

/// How long a request waits on a backend that answers nothing before it is looked at as
/// stalled (and at least 20 times the backend's usual latency).
pub const STALL_AFTER: Duration = Duration::from_secs(1);

/// A request waiting for a backend's first answer, and what tells whether to give up on the
/// backend: it answered nothing since the request was sent, for [`STALL_AFTER`] and 20 times
/// its usual latency (at most half the response timeout), while another backend of the service answered and can take the request.
/// Then the backend is marked stalled (new requests go elsewhere until a check gets an answer)
/// and the request, idempotent, goes elsewhere. A backend that accepts requests and answers
/// none so costs its service a second, not the response timeout; a service of long polls
/// (every backend quiet) is left alone.
pub struct StallWatch<'a> {
    service: &'a ServiceRoute,
    /// The backend's answers when the request was sent, or at the last look that found it
    /// answering: the window it must be quiet in starts there.
    answers: std::sync::atomic::AtomicU64,
    /// When that window started ([`now_ms`] clock); 0: when the request was sent.
    window_ms: std::sync::atomic::AtomicU64,
    sent: tokio::time::Instant,
}

impl<'a> StallWatch<'a> {
    /// For an attempt on `upstream` of `service`, if it can go elsewhere: idempotent
    /// (`retry`), and a service of several backends.
    #[inline]
    pub fn new(
        service: &'a ServiceRoute,
        upstream: &Upstream,
        retry: bool,
    ) -> Option<StallWatch<'a>> {
        (retry && service.backends.len() > 1).then(|| StallWatch {
            service,
            answers: std::sync::atomic::AtomicU64::new(upstream.stats.answers()),
            window_ms: std::sync::atomic::AtomicU64::new(0),
            sent: tokio::time::Instant::now(),
        })
    }

    /// When to look first.
    pub fn first_look(&self) -> tokio::time::Instant {
        self.sent + STALL_AFTER
    }

    /// Looked at `now`, waiting on `upstream` until `deadline` (the response timeout): give
    /// up on it (the error, the backend marked stalled), or look again at the returned time.
    #[cold]
    pub fn look(
        &self,
        upstream: &Upstream,
        (now, deadline): (tokio::time::Instant, tokio::time::Instant),
    ) -> Result<tokio::time::Instant, ProxyError> {
        let usual = Duration::from_secs_f64(upstream.stats.ewma_ms(now_ms()) * 20.0 / 1000.0);
        // (At most half the response timeout: the latency estimate keeps peaks, and one slow
        // answer on a busy machine must not stretch the patience past the timeout itself.)
        let half = deadline.saturating_duration_since(self.sent) / 2;
        let patience = STALL_AFTER.max(usual.min(half));
        let waited = now.saturating_duration_since(self.sent);
        if waited < patience {
            return Ok(self.sent + patience);
        }
        use std::sync::atomic::Ordering::Relaxed;
        let answers = upstream.stats.answers();
        let at = now_ms();
        let window_ms = match self.window_ms.load(Relaxed) {
            0 => at.saturating_sub(waited.as_millis() as u64),
            w => w,
        };
        // Quiet through the window (a request sent just before the backend stopped saw it
        // answer others afterwards: only a window since the last such look counts).
        let quiet = answers == self.answers.load(Relaxed);
        // A peer that answered in that window: the service is answering, this backend is not
        // (where every backend is quiet, as with long polls, nothing is wrong).
        let elsewhere = self.service.backends.iter().any(|b| {
            !std::ptr::eq(&**b, upstream)
                && crate::balance::Load::available(&**b)
                && !b.stats.stalled()
                && b.stats.last_answer_ms() >= window_ms
        });
        if !(quiet && elsewhere) {
            if !quiet {
                self.answers.store(answers, Relaxed);
                self.window_ms.store(at, Relaxed);
            }
            return Ok(now + STALL_AFTER);
        }
        if upstream.stats.mark_stalled() {
            tracing::warn!(backend = %upstream.no, service = %self.service.name, waited_ms = waited.as_millis() as u64, "backend answered nothing while its peers answered; new requests go elsewhere until it answers again, and waiting ones are sent elsewhere");
        }
        Err(ProxyError::Stalled {
            no: upstream.no.clone(),
            waited,
        })
    }
}
