//! Backend health: pure state steps, and the per-backend runtime record the data plane updates.
//! It imports nothing of quayside's; the task that runs active probes is [`crate::probe`].
//!
//! - [`passive`]: consecutive connect failures or timeouts eject a backend for a cooldown that
//!   doubles on each repeated ejection; after it, one trial request decides.
//! - [`active`]: opt-in probes (`path`, `interval`, `timeout`, `rise`, `fall`) per service.
//! - [`ewma`]: the peak-EWMA latency estimate used by `p2c`.
//!
//! The steps are pure functions on small `Copy` states; [`BackendStats`] keeps them in atomics
//! (packed into one `u64` where they must change together) so the data plane never locks.

pub mod active;
pub mod ewma;
pub mod passive;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

/// Milliseconds since quayside started (a monotonic clock that fits in atomics).
pub fn now_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Runtime record of one backend. It outlives routing-table rebuilds: a table rebuilt for an
/// unrelated change keeps every backend's counters, health and latency estimate.
#[derive(Debug)]
pub struct BackendStats {
    pub in_flight: AtomicU32,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    /// Active health probes that passed and that failed.
    pub probes_passed: AtomicU64,
    pub probes_failed: AtomicU64,
    passive: AtomicU64,
    active: AtomicU32,
    ewma_bits: AtomicU64,
    ewma_at_ms: AtomicU64,
    /// When it (re)entered service, for slow start.
    pub since_ms: AtomicU64,
    /// No longer routed (drained, disabled, removed or moved): its upgraded connections
    /// (WebSocket tunnels) close after the grace period.
    retired: std::sync::atomic::AtomicBool,
    retired_notify: tokio::sync::Notify,
    /// Response heads received (a request waiting on it tells whether it answered anything
    /// meanwhile).
    answers: AtomicU64,
    /// Found answering nothing while requests waited on it and its peers answered: new
    /// requests go elsewhere until it answers again.
    stalled: std::sync::atomic::AtomicBool,
}

impl Default for BackendStats {
    fn default() -> Self {
        BackendStats {
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            probes_passed: AtomicU64::new(0),
            probes_failed: AtomicU64::new(0),
            passive: AtomicU64::new(passive::State::default().pack()),
            active: AtomicU32::new(active::State::default().pack()),
            ewma_bits: AtomicU64::new(0f64.to_bits()),
            ewma_at_ms: AtomicU64::new(0),
            since_ms: AtomicU64::new(now_ms()),
            retired: std::sync::atomic::AtomicBool::new(false),
            retired_notify: tokio::sync::Notify::new(),
            answers: AtomicU64::new(0),
            stalled: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl BackendStats {
    /// Mark the backend as routed (`false`) or not (`true`) any more.
    pub fn set_retired(&self, retired: bool) {
        let was = self.retired.swap(retired, Ordering::AcqRel);
        if retired && !was {
            self.retired_notify.notify_waiters();
        }
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Resolves once the backend is no longer routed and has stayed so for `grace`.
    pub async fn retired_for(&self, grace: std::time::Duration) {
        loop {
            let notified = self.retired_notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if !self.is_retired() {
                notified.await;
            }
            tokio::time::sleep(grace).await;
            if self.is_retired() {
                return;
            }
        }
    }
}

/// What `/api/v1/backends` shows of a backend's health.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HealthView {
    pub available: bool,
    pub passive: passive::State,
    pub active: active::State,
    pub in_flight: u32,
    pub requests: u64,
    pub failures: u64,
    pub latency_ewma_ms: f64,
    /// Found answering nothing while requests waited on it and its peers answered: it takes
    /// no requests until a check gets an answer.
    pub stalled: bool,
}

impl BackendStats {
    pub fn passive(&self) -> passive::State {
        passive::State::unpack(self.passive.load(Ordering::Relaxed))
    }

    pub fn active(&self) -> active::State {
        active::State::unpack(self.active.load(Ordering::Relaxed))
    }

    /// Whether new requests may go here now (passive ejection and active checks).
    #[inline]
    pub fn available(&self, now: u64) -> bool {
        self.active().up && passive::admits(self.passive(), now)
    }

    fn update_passive(&self, f: impl Fn(passive::State) -> passive::State) -> passive::State {
        self.update_passive_from(f).1
    }

    /// The update, with the state it was made from (one ejection is reported once, however
    /// many threads record failures at the same moment).
    fn update_passive_from(
        &self,
        f: impl Fn(passive::State) -> passive::State,
    ) -> (passive::State, passive::State) {
        let mut cur = self.passive.load(Ordering::Relaxed);
        loop {
            let before = passive::State::unpack(cur);
            let next = f(before);
            match self.passive.compare_exchange_weak(
                cur,
                next.pack(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return (before, next),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Response heads received so far.
    #[inline]
    pub fn answers(&self) -> u64 {
        self.answers.load(Ordering::Relaxed)
    }

    /// When it last answered a request ([`now_ms`] clock; 0 when never).
    #[inline]
    pub fn last_answer_ms(&self) -> u64 {
        self.ewma_at_ms.load(Ordering::Relaxed)
    }

    /// Whether it was found answering nothing while its peers answered.
    #[inline]
    pub fn stalled(&self) -> bool {
        self.stalled.load(Ordering::Relaxed)
    }

    /// Found answering nothing: new requests go elsewhere until it answers again. Returns
    /// whether this marked it (it was not marked yet).
    pub fn mark_stalled(&self) -> bool {
        !self.stalled.swap(true, Ordering::Relaxed)
    }

    /// A check got an answer: back in rotation (passive ejection ended, ramping up again).
    pub fn readmit(&self, now: u64) {
        self.update_passive(passive::on_success);
        self.stalled.store(false, Ordering::Relaxed);
        self.since_ms.store(now, Ordering::Relaxed);
    }

    /// A request got a response (any status) after `latency_ms`.
    pub fn on_success(&self, latency_ms: f64, now: u64) {
        self.answers.fetch_add(1, Ordering::Relaxed);
        if self.stalled.load(Ordering::Relaxed) {
            self.stalled.store(false, Ordering::Relaxed);
        }
        let before = self.passive();
        // The common case, a healthy backend: nothing to reset, so no read-modify-write.
        if before != passive::State::default() {
            let after = self.update_passive(passive::on_success);
            if before.ejections > 0 && after.ejections == 0 {
                // Back from an ejection: ramp up again under slow start.
                self.since_ms.store(now, Ordering::Relaxed);
            }
        }
        let prev = f64::from_bits(self.ewma_bits.load(Ordering::Relaxed));
        let at = self.ewma_at_ms.swap(now, Ordering::Relaxed);
        let next = ewma::peak_ewma(prev, at, latency_ms, now);
        self.ewma_bits.store(next.to_bits(), Ordering::Relaxed);
    }

    /// A connect failure or timeout (`unanswered`: it waited for an answer that did not come;
    /// an ejection for it is ended by a check only). Returns true when this ejected the
    /// backend.
    pub fn on_failure(&self, now: u64, unanswered: bool) -> bool {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let (before, after) = self.update_passive_from(|s| passive::on_failure(s, now, unanswered));
        after.ejected_until > before.ejected_until
    }

    /// Record an active probe result. Returns the new state.
    pub fn on_probe(&self, ok: bool, rise: u32, fall: u32) -> active::State {
        if ok {
            &self.probes_passed
        } else {
            &self.probes_failed
        }
        .fetch_add(1, Ordering::Relaxed);
        let mut cur = self.active.load(Ordering::Relaxed);
        loop {
            let next = active::step(active::State::unpack(cur), ok, rise, fall);
            match self.active.compare_exchange_weak(
                cur,
                next.pack(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    if ok {
                        // A good probe also ends a passive ejection.
                        self.update_passive(passive::on_success);
                    }
                    return next;
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Latency estimate in ms, decayed to `now`.
    pub fn ewma_ms(&self, now: u64) -> f64 {
        let v = f64::from_bits(self.ewma_bits.load(Ordering::Relaxed));
        ewma::decayed(v, self.ewma_at_ms.load(Ordering::Relaxed), now)
    }

    pub fn view(&self, now: u64) -> HealthView {
        HealthView {
            available: self.available(now),
            passive: self.passive(),
            active: self.active(),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            latency_ewma_ms: (self.ewma_ms(now) * 1000.0).round() / 1000.0,
            stalled: self.stalled(),
        }
    }
}
