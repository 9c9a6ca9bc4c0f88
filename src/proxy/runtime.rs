//! The data plane's runtime handle: what its workers share besides the routing table, made by
//! `run` and passed down to every worker (no process globals, so two servers in one process,
//! as tests run them, count apart).

use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The proxy worker this thread is (0 outside the workers).
pub fn worker_index() -> usize {
    WORKER.with(|w| w.get())
}

/// Said once by each worker thread as it starts.
pub(in crate::proxy) fn set_worker_index(i: usize) {
    WORKER.with(|w| w.set(i));
}

/// Per-worker slots: a worker's counters are indexed by its [`worker_index`].
const SLOTS: usize = 64;

#[derive(Debug)]
pub struct Runtime {
    idle: Box<[Counter]>,
    /// Parks and closes of hyper-served connections so far (the trimmer looks at how many
    /// happened since it last ran).
    parks: AtomicU64,
    /// Client connections by listener (plain, TLS) and protocol (HTTP/1.1, HTTP/2).
    conns: [Conns; 4],
    /// TLS handshakes: completed, failed, timed out.
    handshakes: [AtomicU64; 3],
}

#[derive(Debug, Default)]
struct Conns {
    accepted: AtomicU64,
    open: AtomicU64,
}

/// How a TLS handshake ended.
#[derive(Clone, Copy, Debug)]
pub enum Handshake {
    Ok,
    Failed,
    TimedOut,
}

impl Handshake {
    pub const ALL: [(Handshake, &str); 3] = [
        (Handshake::Ok, "ok"),
        (Handshake::Failed, "failed"),
        (Handshake::TimedOut, "timeout"),
    ];
}

/// Counts one open connection while it lives.
pub(in crate::proxy) struct OpenConn(std::sync::Arc<Runtime>, usize);

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.0.conns[self.1].open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One line of [`Runtime::connections`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnCount {
    /// `http` or `https`.
    pub listener: &'static str,
    /// `http1` or `http2`.
    pub protocol: &'static str,
    pub accepted: u64,
    pub open: u64,
}

/// Idle client connections waiting on the fast path, and how many times one went idle, for
/// one worker (on a cache line of its own).
#[derive(Debug, Default)]
#[repr(align(64))]
struct Counter {
    idle: AtomicU64,
    entries: AtomicU64,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            idle: (0..SLOTS).map(|_| Counter::default()).collect(),
            parks: AtomicU64::new(0),
            conns: Default::default(),
            handshakes: Default::default(),
        }
    }
}

impl Runtime {
    /// Client connections parked (idle, holding no hyper buffers) right now: those idle on
    /// the fast path, where hyper hands its connections back once quiet (a TLS one still holds
    /// rustls's buffers).
    pub fn parked_connections(&self) -> u64 {
        self.idle
            .iter()
            .map(|c| c.idle.load(Ordering::Relaxed))
            .sum()
    }

    /// A client connection accepted on the TLS listener or not, speaking HTTP/2 or not: counted
    /// as open until the guard is dropped.
    pub(in crate::proxy) fn connection(
        self: &std::sync::Arc<Self>,
        tls: bool,
        h2: bool,
    ) -> OpenConn {
        let i = usize::from(tls) * 2 + usize::from(h2);
        self.conns[i].accepted.fetch_add(1, Ordering::Relaxed);
        self.conns[i].open.fetch_add(1, Ordering::Relaxed);
        OpenConn(self.clone(), i)
    }

    /// Connections accepted and open, per listener and protocol.
    pub fn connections(&self) -> [ConnCount; 4] {
        std::array::from_fn(|i| ConnCount {
            listener: if i >= 2 { "https" } else { "http" },
            protocol: if i % 2 == 1 { "http2" } else { "http1" },
            accepted: self.conns[i].accepted.load(Ordering::Relaxed),
            open: self.conns[i].open.load(Ordering::Relaxed),
        })
    }

    pub(in crate::proxy) fn handshake(&self, h: Handshake) {
        self.handshakes[h as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// TLS handshakes so far, by result.
    pub fn handshakes(&self, h: Handshake) -> u64 {
        self.handshakes[h as usize].load(Ordering::Relaxed)
    }

    /// Connections parked or closed so far (each time one freed its buffers).
    pub(in crate::proxy) fn parks(&self) -> u64 {
        let idle: u64 = self
            .idle
            .iter()
            .map(|c| c.entries.load(Ordering::Relaxed))
            .sum();
        idle + self.parks.load(Ordering::Relaxed)
    }

    /// A hyper-served connection was parked or closed.
    pub(in crate::proxy) fn parked(&self) {
        self.parks.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a fast-path connection as idle while the guard lives.
    pub(in crate::proxy) fn idle(&self) -> Idle<'_> {
        let c = &self.idle[worker_index() % SLOTS];
        bump(&c.idle, true);
        bump(&c.entries, true);
        Idle(c)
    }
}

/// An atomic add: a slot is shared by every thread with its worker index, which is more than
/// one when there are more workers than slots. (On a cache line of its own per index, the
/// locked add is uncontended.)
fn bump(c: &AtomicU64, up: bool) {
    if up {
        c.fetch_add(1, Ordering::Relaxed);
    } else {
        c.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts one idle connection while it lives.
pub(in crate::proxy) struct Idle<'a>(&'a Counter);

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        bump(&self.0.idle, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_sharing_a_counter_lose_no_count() {
        let c = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..200_000 {
                        bump(&c, true);
                        bump(&c, false);
                    }
                });
            }
        });
        assert_eq!(c.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn two_runtimes_count_apart() {
        let (a, b) = (Runtime::default(), Runtime::default());
        let held = a.idle();
        assert_eq!((a.parked_connections(), b.parked_connections()), (1, 0));
        drop(held);
        a.parked();
        assert_eq!((a.parked_connections(), a.parks(), b.parks()), (0, 2, 0));
    }
}
