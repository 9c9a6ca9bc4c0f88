//! Backend selection. A balancer is built once per routing-table snapshot from the backends'
//! weights and queried per request without locks.

pub mod wrr;

pub use wrr::SmoothWrr;

use crate::registry::Strategy;

/// The selection state of one service.
#[derive(Debug)]
pub enum Balancer {
    RoundRobin(SmoothWrr),
}

impl Balancer {
    pub fn build(strategy: Strategy, weights: &[u32]) -> Self {
        match strategy {
            Strategy::RoundRobin => Balancer::RoundRobin(SmoothWrr::new(weights)),
        }
    }

    /// Index of the backend to use, or `None` when there is none.
    #[inline]
    pub fn pick(&self) -> Option<usize> {
        match self {
            Balancer::RoundRobin(w) => w.pick(),
        }
    }
}
