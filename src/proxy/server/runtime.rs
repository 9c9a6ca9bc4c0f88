//! The data plane's runtime handle: what its workers share besides the routing table, made by
//! `run` and passed down to every worker (no process globals, so two servers in one process,
//! as tests run them, count apart).

use std::sync::atomic::{AtomicU64, Ordering};

/// Per-worker slots: a worker's counters are indexed by its [`super::worker_index`].
const SLOTS: usize = 64;

#[derive(Debug)]
pub struct Runtime {
    idle: Box<[Counter]>,
    /// Parks and closes of hyper-served connections so far (the trimmer looks at how many
    /// happened since it last ran).
    parks: AtomicU64,
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
        let c = &self.idle[super::worker_index() % SLOTS];
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
