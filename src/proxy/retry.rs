//! A retry budget (as in Finagle): every request deposits a fifth of a retry, every retry
//! withdraws one, so retries add at most ~20 % load in an outage instead of multiplying it.
//! A small reserve lets the first few retries through on a quiet proxy.

use std::sync::atomic::{AtomicI64, Ordering};

/// Units of 1/100 retry.
const DEPOSIT: i64 = 20;
const COST: i64 = 100;
const RESERVE: i64 = 10 * COST;
const CAP: i64 = 100 * COST;

#[derive(Debug)]
pub struct RetryBudget(AtomicI64);

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget(AtomicI64::new(RESERVE))
    }
}

impl RetryBudget {
    pub fn deposit(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b < CAP).then_some((b + DEPOSIT).min(CAP))
            });
    }

    /// Take one retry if the budget allows.
    pub fn withdraw(&self) -> bool {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b >= COST).then_some(b - COST)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_bounded_by_traffic() {
        let b = RetryBudget::default();
        // The reserve: 10 retries with no traffic.
        assert_eq!((0..20).filter(|_| b.withdraw()).count(), 10);
        // Then one retry per 5 requests.
        for _ in 0..50 {
            b.deposit();
        }
        assert_eq!((0..20).filter(|_| b.withdraw()).count(), 10);
        // Deposits are capped.
        for _ in 0..10_000 {
            b.deposit();
        }
        assert_eq!((0..1000).filter(|_| b.withdraw()).count(), 100);
    }
}
